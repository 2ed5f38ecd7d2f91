import os
import signal
import socket
import subprocess
import sys
import time

import httpx


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve(port: int, model: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "diffusion_core.cli", "serve", "--port", str(port), "--model", model]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env={**os.environ})


def test_unmask_serve_answers_and_stops_on_ctrl_c(tiny_checkpoint):
    port = _free_port()
    proc = _serve(port, str(tiny_checkpoint))
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/ready").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        r = httpx.post(f"http://127.0.0.1:{port}/generate", json={"inputs": "the", "parameters": {"max_new_tokens": 4}})
        assert r.status_code == 200
    finally:
        proc.send_signal(signal.SIGINT)
        output, _ = proc.communicate(timeout=20)
    assert proc.returncode == 0
    assert f"http://127.0.0.1:{port}" in output
    assert "serving tiny on cpu in float32 (asked for)" in output, "the log says what is served, in which dtype"


def test_busy_port_is_a_one_line_error(tiny_checkpoint):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        proc = _serve(busy.getsockname()[1], str(tiny_checkpoint))
        output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 2
    assert "is busy; set --port or UNMASK_PORT" in output and "Traceback" not in output
