"""Real processes for end-to-end tests: started in their own sessions, logged to files, never left behind."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx


def with_marker(pid: int, marker: str) -> bool:
    """The process's environment or command line mentions marker (e.g. a test's state folder)."""
    try:
        proc = Path(f"/proc/{pid}")
        return marker.encode() in (proc / "environ").read_bytes() + (proc / "cmdline").read_bytes()
    except OSError:
        return False


def leftovers(marker: str) -> list[int]:
    """Processes (this test's, found by their environment or command line) still alive."""
    pids = [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit() and int(p.name) != os.getpid()]
    alive = []
    for pid in pids:
        if with_marker(pid, marker):
            state = Path(f"/proc/{pid}/stat").read_text().split(") ")[-1][:1] if Path(f"/proc/{pid}").exists() else "X"
            if state not in ("Z", "X"):
                alive.append(pid)
    return alive


class Processes:
    def __init__(self, logs: Path, env: dict[str, str]) -> None:
        self.logs, self.env = logs, env
        self.started: dict[str, subprocess.Popen] = {}
        logs.mkdir(parents=True, exist_ok=True)

    def spawn(self, name: str, *args: str, **env: str) -> subprocess.Popen:
        log = (self.logs / f"{name}.log").open("ab")
        proc = subprocess.Popen(
            [sys.executable, "-m", "diffusion_core.cli", *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **self.env, **env},
            start_new_session=True,
        )
        self.started[name] = proc
        return proc

    def log(self, name: str) -> str:
        return (self.logs / f"{name}.log").read_text(errors="replace")

    def stop(self, name: str, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        proc = self.started.pop(name)
        if proc.poll() is None:
            proc.send_signal(sig)
        try:
            return proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise AssertionError(f"{name} did not stop within {timeout} s:\n{self.log(name)[-3000:]}") from None

    def stop_all(self) -> None:
        for name in list(self.started):
            try:
                self.stop(name, timeout=15)
            except AssertionError:
                pass


def wait_http(url: str, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"{url} not answering 200 within {timeout} s")


def wait_for(predicate, timeout: float = 120.0, every: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError("condition not met in time")
