"""`unmask up`: a private Redis, the API and the workers as child processes, supervised together.

Children run in their own sessions, so a Ctrl-C reaches only this process, which then stops
them in order: workers first (a running job is stopped and can be resumed later), then the
API, then Redis. Their output is printed with a prefix per part. A part that dies is started
again after a growing pause; only Ctrl-C (or the API crashing again and again) stops the stack.
Everything `up` writes is private to its user: the state folder is 0700, its files 0600.
"""

import fcntl
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

import httpx

from diffusion_core.errors import ConfigError
from services.settings import shown_url

from .config import StackSettings
from .defaults import (
    API_MAX_CRASHES,
    BACKOFF_S,
    OUTPUT_DRAIN_S,
    READY_POLL_S,
    READY_REQUEST_S,
    READY_TIMEOUT_S,
    STABLE_S,
    STOP_TIMEOUT_S,
    WATCH_EVERY_S,
    WORKER_STOP_S,
)
from .redis_server import RedisServer, write_private


def _print(prefix: str, line: str) -> None:
    sys.stdout.write(f"{prefix:<9}| {line}")
    sys.stdout.flush()


def _pump(prefix: str, stream: IO[str]) -> None:
    for line in stream:
        _print(prefix, line)


class Child:
    """One part of the stack: a process in its own session whose output is prefixed."""

    def __init__(self, name: str, args: list[str], env: dict[str, str]) -> None:
        self.name, self.args, self.env = name, args, env
        self.start()

    def start(self) -> None:
        self.process = subprocess.Popen(
            self.args,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            start_new_session=True,
        )
        self.started = time.monotonic()
        assert self.process.stdout is not None
        self._pump = threading.Thread(target=_pump, args=(self.name, self.process.stdout), daemon=True)
        self._pump.start()

    def exit_code(self) -> int | None:
        return self.process.poll()

    def stop(self, signals: tuple[int, ...] = (signal.SIGTERM,), wait_s: float = STOP_TIMEOUT_S) -> None:
        """Send each signal in turn, waiting up to wait_s after each; then kill the whole group."""
        for sig in signals:
            if self.process.poll() is not None:
                break
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout=wait_s)
            except subprocess.TimeoutExpired:
                pass
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        self._pump.join(timeout=OUTPUT_DRAIN_S)


@contextmanager
def _lock(state: Path) -> Iterator[None]:
    """One `unmask up` per state folder: a second one stops with a clear error instead of sharing it."""
    state.mkdir(parents=True, exist_ok=True)
    handle = (state / "up.lock").open("a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        owner = handle.read().strip() or "?"
        message = f"another `unmask up` (pid {owner}) is using {state}; stop it or set UNMASK_STATE_DIR"
        raise ConfigError(message) from None
    handle.seek(0)
    handle.truncate()
    handle.write(str(os.getpid()))
    handle.flush()
    try:
        yield
    finally:
        fcntl.flock(handle, fcntl.LOCK_UN)
        handle.close()


def secret(path: Path, length: int = 16) -> str:
    """The secret kept at path, else a new one written there: created 0600, never readable by others."""
    if path.is_file() and len(path.read_text().strip()) >= length:
        return path.read_text().strip()
    value = secrets.token_urlsafe(24)
    write_private(path, value + "\n")
    return value


def api_key(settings: StackSettings) -> str:
    """The configured key, else the one generated on the first run (kept in the state folder)."""
    return settings.api_key or secret(settings.state_dir / "api_key")


def _wait_ready(url: str, children: list[Child]) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        for child in children:
            if child.process.poll() is not None:
                raise ConfigError(f"{child.name} exited with status {child.process.returncode} while starting")
        try:
            if httpx.get(url + "/ready", timeout=READY_REQUEST_S).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(READY_POLL_S)
    raise ConfigError(f"the API was not ready within {READY_TIMEOUT_S:.0f} s")


def up(settings: StackSettings) -> int:
    """Run the stack until Ctrl-C (or SIGTERM, or a part dying); returns the exit status."""
    from services.settings import check_port

    check_port(settings.host, settings.port)
    os.umask(0o077)  # the state folder, Redis's data, uploads and checkpoints: this user's only
    state = settings.state_dir.resolve()
    state.mkdir(parents=True, exist_ok=True)
    state.chmod(0o700)
    with _lock(state):
        key = api_key(settings)
        password = None if settings.redis_url else secret(state / "redis_password")
        redis = None if settings.redis_url else RedisServer(state / "redis", password=password)
        stopping = threading.Event()
        previous = {sig: signal.signal(sig, lambda *_: stopping.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
        children: list[Child] = []
        try:
            redis_url = settings.redis_url or redis.start()  # type: ignore[union-attr]
            if redis is not None:
                _print("redis", f"private redis-server on {shown_url(redis_url)} (data in {state / 'redis'})\n")
            env = {
                **os.environ,
                "REDIS_URL": redis_url,
                "UNMASK_STATE_DIR": str(state),
                "UNMASK_API_KEY": key,
                "PYTHONUNBUFFERED": "1",
            }
            if settings.model:
                env["UNMASK_MODEL"] = settings.model
            cli = [sys.executable, "-m", "diffusion_core.cli"]
            serve = [*cli, "serve", "--host", settings.host, "--port", str(settings.port)]
            children.append(Child("api", serve, env))
            for n in range(settings.workers):
                children.append(Child("worker" if settings.workers == 1 else f"worker{n + 1}", [*cli, "worker"], env))
            url = f"http://{settings.host}:{settings.port}"
            _wait_ready(url, children)
            shown = "(from UNMASK_API_KEY)" if settings.api_key else f"{key}  (kept in {state / 'api_key'})"
            print(f"\n  unmask is up: {url}\n  API key:      {shown}\n  state folder: {state}\n", flush=True)
            parts: list[Child | RedisServer] = [*children, *([redis] if redis is not None else [])]
            return _watch(parts, stopping)
        finally:
            for child in reversed(children):  # workers, then the API
                if child.name.startswith("worker"):  # RQ: the second signal stops a running job at once
                    child.stop((signal.SIGTERM, signal.SIGTERM), wait_s=WORKER_STOP_S)
                else:
                    child.stop()
            if redis is not None:
                redis.stop()
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def _watch(parts: list["Child | RedisServer"], stopping: threading.Event) -> int:
    """Restart any part that dies, after a pause that grows while it keeps dying; 1 if the API will not stay up."""
    crashes = {part.name: 0 for part in parts}
    due: dict[str, float] = {}  # part name -> when to start it again
    while not stopping.wait(WATCH_EVERY_S):
        now = time.monotonic()
        for part in parts:
            if part.name in due:
                if now >= due[part.name]:
                    del due[part.name]
                    _print(part.name, "starting again\n")
                    _restart(part)
                continue
            code = part.exit_code()
            if code is None:
                continue
            crashes[part.name] = 1 if now - part.started > STABLE_S else crashes[part.name] + 1
            if part.name == "api" and crashes["api"] >= API_MAX_CRASHES:
                _print("api", f"exited with status {code}, {API_MAX_CRASHES} times in a row; stopping everything\n")
                return 1
            pause = BACKOFF_S[min(crashes[part.name], len(BACKOFF_S)) - 1]
            _print(part.name, f"exited with status {code}; starting it again in {pause:.0f} s\n")
            due[part.name] = now + pause
    print("\nstopping ...", flush=True)
    return 0


def _restart(part: "Child | RedisServer") -> None:
    try:
        part.start()
    except ConfigError as exc:  # e.g. Redis's port was taken meanwhile: try again on the next round
        _print(part.name, f"could not start: {exc}\n")
        part.started = time.monotonic()
