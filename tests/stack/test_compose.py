"""docker-compose.yml: what a deployment relies on. `docker compose config` runs where the plugin exists;
every service's command is one the end-to-end tests run (`unmask serve`, `unmask worker`)."""

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]


def load(name: str) -> dict:
    return yaml.safe_load((ROOT / name).read_text())


def test_services_start_in_order_and_report_health():
    from diffusion_core.cli import build_parser

    compose = load("docker-compose.yml")
    services = compose["services"]
    assert set(services) == {"redis", "api", "trainer"}
    redis = services["redis"]
    password = "${REDIS_PASSWORD:?set REDIS_PASSWORD in .env}"
    assert redis["command"][-2:] == ["--requirepass", password] and redis["environment"]["REDISCLI_AUTH"] == password
    assert redis["healthcheck"]["test"] == ["CMD-SHELL", "redis-cli ping | grep -q PONG"]
    for name in ("api", "trainer"):
        assert services[name]["depends_on"]["redis"]["condition"] == "service_healthy"
        assert services[name]["environment"]["REDIS_URL"] == f"redis://:{password}@redis:6379/0"
    health = services["api"]["healthcheck"]
    assert "/ready" in " ".join(health["test"]) and health["start_period"]
    check = services["trainer"]["healthcheck"]["test"]
    assert check[0] == "CMD" and build_parser().parse_args(check[2:]).check, "the trainer's own health check"


def test_checkpoints_are_shared_read_write_for_the_trainer_and_read_only_for_the_api():
    compose = load("docker-compose.yml")
    api, trainer = compose["services"]["api"]["volumes"], compose["services"]["trainer"]["volumes"]
    assert "checkpoints:/state/checkpoints:ro" in api and "checkpoints:/state/checkpoints" in trainer
    assert "files:/state/files" in api and "files:/state/files:ro" in trainer
    assert {"checkpoints", "files", "redis-data"} <= set(compose["volumes"])


def test_every_command_parses_with_the_installed_cli():
    """Each service's command line is one `unmask` accepts: its subcommand and flags exist and their
    values parse (the parser runs with the command's own arguments; nothing is started)."""
    from diffusion_core.cli import COMMANDS, build_parser

    services = load("docker-compose.yml")["services"]
    for name in ("api", "trainer"):
        command = services[name]["command"]
        assert command[0] == "unmask", name
        args = build_parser().parse_args(command[1:])
        assert args.command in COMMANDS, name
    assert build_parser().parse_args(services["api"]["command"][1:]).port == 8000


def test_the_gpu_override_reserves_an_nvidia_device_for_the_trainer():
    devices = load("docker-compose.gpu.yml")["services"]["trainer"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]


def test_every_variable_compose_reads_is_in_the_env_example():
    import re

    used = set(re.findall(r"\$\{([A-Z_]+)", (ROOT / "docker-compose.yml").read_text()))
    example = {line.split("=")[0] for line in (ROOT / ".env.example").read_text().splitlines() if "=" in line}
    assert used <= example, used - example


def test_the_image_installs_pinned_versions_of_every_dependency():
    """A rebuilt image gets the versions the tests ran with, not whatever the index serves that day."""
    import tomllib

    from services.stack.pins import SKIP, _needed

    pins = dict(line.split("==") for line in (ROOT / "constraints.txt").read_text().splitlines() if "==" in line)
    wanted = set(_needed(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]))
    assert wanted - set(pins) == {n for n in wanted if SKIP.match(n)} == {"torch"}, wanted - set(pins)
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "pip install -c constraints.txt -e ." in dockerfile and "constraints.txt" in dockerfile.split("COPY")[1]
    assert '"torch==$TORCH_VERSION"' in dockerfile


def test_docker_compose_config_accepts_the_file(tmp_path):
    docker = shutil.which("docker")
    probe = subprocess.run([docker, "compose", "version"], capture_output=True) if docker else None
    if probe is None or probe.returncode != 0:
        pytest.skip("the docker compose plugin is not installed here; the structural tests above still ran")
    env = tmp_path / ".env"
    env.write_text((ROOT / ".env.example").read_text())
    args = [docker, "compose", "--env-file", str(env), "-f", "docker-compose.yml", "-f", "docker-compose.gpu.yml"]
    result = subprocess.run([*args, "config", "-q"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
