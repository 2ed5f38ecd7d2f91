"""`unmask up` as a user runs it: a private Redis, the API and a worker from an empty state folder."""

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import httpx
import pytest
import redis

from services.stack.redis_server import free_port
from tests.processes import Processes, leftovers, wait_for, wait_http

CORPUS = ["the quick brown fox jumps over the lazy dog.", "a journey of a thousand miles begins with a step."] * 8


def test_up_runs_everything_and_ctrl_c_stops_every_part(tmp_path, tiny_checkpoint):
    state = tmp_path / "state"
    port = free_port()
    procs = Processes(tmp_path / "logs", {"UNMASK_MODEL": str(tiny_checkpoint), "UNMASK_DEVICE": "cpu"})
    up = procs.spawn("up", "up", "--port", str(port), "--state-dir", str(state))
    base = f"http://127.0.0.1:{port}"
    try:
        wait_http(base + "/ready", timeout=120)
        key = (state / "api_key").read_text().strip()
        wait_for(lambda: key in procs.log("up"), timeout=10)
        log = procs.log("up")
        assert f"unmask is up: {base}" in log and "api      |" in log and "worker   |" in log
        assert len(key) >= 16 and (state / "api_key").stat().st_mode & 0o777 == 0o600
        assert (state / "redis" / "redis.log").is_file()

        assert httpx.post(base + "/generate", json={"inputs": "the", "parameters": {"max_new_tokens": 4}}).is_success
        assert httpx.get(base + "/").text.startswith("<!doctype html>")
        auth = {"Authorization": f"Bearer {key}"}
        body = {"model": "tiny", "training_texts": CORPUS, "hyperparameters": {"max_steps": 10, "batch_size": 4}}
        job = httpx.post(base + "/v1/fine_tuning/jobs", json=body, headers=auth).json()
        done = wait_for(
            lambda: (j := httpx.get(f"{base}/v1/fine_tuning/jobs/{job['id']}").json())["status"] == "succeeded" and j,
            timeout=120,
        )
        wait_for(lambda: httpx.get(base + "/info").json()["model"]["id"] == done["fine_tuned_model"], timeout=30)

        second = subprocess.run(
            [up.args[0], "-m", "diffusion_core.cli", "up", "--port", str(free_port()), "--state-dir", str(state)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert second.returncode == 2 and "another `unmask up`" in second.stderr

        started = time.monotonic()
        assert procs.stop("up", signal.SIGINT, timeout=10) == 0
        assert time.monotonic() - started < 10
        assert leftovers(str(state)) == []
    finally:
        procs.stop_all()


def test_a_busy_port_is_a_clear_error(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        procs = Processes(tmp_path / "logs", {})
        proc = procs.spawn("up", "up", "--port", str(port), "--state-dir", str(tmp_path / "state"))
        assert proc.wait(timeout=60) == 2
    log = procs.log("up")
    assert f"port {port} on 127.0.0.1 is busy" in log and "Traceback" not in log


def _children(parent: int) -> dict[str, int]:
    """pid of each part `unmask up` started, by what it runs."""
    found = {}
    for proc in Path("/proc").iterdir():
        try:
            if not proc.name.isdigit() or int((proc / "stat").read_text().split(") ")[1].split()[1]) != parent:
                continue
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, IndexError):
            continue
        for part in ("redis-server", " worker", " serve"):
            if part in cmdline:
                found[part.strip()] = int(proc.name)
    return found


def test_up_brings_back_a_killed_worker_and_redis_while_generation_goes_on(tmp_path, tiny_checkpoint):
    state = tmp_path / "state"
    port = free_port()
    key = "a-key-from-the-environment-0123"
    env = {
        "UNMASK_MODEL": str(tiny_checkpoint),
        "UNMASK_DEVICE": "cpu",
        "UNMASK_HEARTBEAT_TTL_S": "6",
        "UNMASK_API_KEY": key,
    }
    procs = Processes(tmp_path / "logs", env)
    up = procs.spawn("up", "up", "--port", str(port), "--state-dir", str(state))
    base = f"http://127.0.0.1:{port}"
    gen = {"inputs": "the", "parameters": {"max_new_tokens": 4, "steps": 2}}
    try:
        wait_http(base + "/ready", timeout=120)
        assert state.stat().st_mode & 0o777 == 0o700
        password = state / "redis_password"
        assert password.stat().st_mode & 0o777 == 0o600
        assert all(f.stat().st_mode & 0o077 == 0 for f in (state / "redis").rglob("*") if f.is_file())
        with pytest.raises(redis.exceptions.AuthenticationError):
            redis.Redis(port=_redis_port(up.pid), socket_timeout=2).ping()
        wait_for(lambda: "unmask is up" in procs.log("up"), timeout=10)
        assert key not in procs.log("up") and "API key:      (from UNMASK_API_KEY)" in procs.log("up")
        auth = {"Authorization": f"Bearer {key}"}
        body = {"model": "tiny", "training_texts": CORPUS, "hyperparameters": {"max_steps": 1_000_000, "batch_size": 4}}
        job = httpx.post(base + "/v1/fine_tuning/jobs", json=body, headers=auth).json()
        wait_for(lambda: httpx.get(f"{base}/v1/fine_tuning/jobs/{job['id']}").json()["status"] == "running", 60)
        for part in ("worker", "redis-server"):
            before = _children(up.pid)[part]
            os.kill(before, signal.SIGKILL)
            killed = time.monotonic()
            assert httpx.post(base + "/generate", json=gen, timeout=30).is_success
            wait_for(lambda p=part, b=before: _children(up.pid).get(p, b) != b, timeout=10)
            assert time.monotonic() - killed < 10
            assert httpx.post(base + "/generate", json=gen, timeout=30).is_success
        log = procs.log("up")
        assert "worker   | exited with status -9; starting it again" in log
        assert "redis    | exited with status -9; starting it again" in log
        assert password.read_text().strip() not in log, "the Redis password never reaches a log"
        final = wait_for(
            lambda: (j := httpx.get(f"{base}/v1/fine_tuning/jobs/{job['id']}").json())["status"] == "failed" and j,
            timeout=60,
        )
        assert final["error"]["code"] == "abandoned"
        listed = wait_for(lambda: (r := httpx.get(base + "/v1/checkpoints")).is_success and r.json(), timeout=20)
        assert [c["version"] for c in listed["data"]] == ["base"], "nothing partial is published"
        assert procs.stop("up", signal.SIGINT, timeout=20) == 0
        assert leftovers(str(state)) == []
    finally:
        procs.stop_all()


def _redis_port(parent: int) -> int:
    """The private Redis's port: redis-server titles itself `redis-server 127.0.0.1:PORT`."""
    title = Path(f"/proc/{_children(parent)['redis-server']}/cmdline").read_bytes().split(b"\0")[0]
    return int(title.rsplit(b":", 1)[1].split()[0])
