"""`unmask up` as a user runs it: a private Redis, the API and a worker from an empty state folder."""

import signal
import socket
import subprocess
import time

import httpx

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
