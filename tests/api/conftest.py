"""An app on the tiny checkpoint, through TestClient (lifespan runs) or a real uvicorn on loopback."""

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import uvicorn
from fastapi.testclient import TestClient

from services.api.config import Settings
from services.api.main import create_app


def wait_ready(client: TestClient, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if client.get("/ready").status_code == 200:
            return
        time.sleep(0.05)
    raise AssertionError(f"not ready: {client.get('/ready').json()}")


@pytest.fixture
def make_client(tiny_checkpoint):
    @contextmanager
    def build(**overrides) -> Iterator[TestClient]:
        settings = Settings(**{"model": str(tiny_checkpoint), "device": "cpu", **overrides})
        with TestClient(create_app(settings)) as client:
            if "model" not in overrides:
                wait_ready(client)
            yield client

    return build


@pytest.fixture
def client(make_client) -> Iterator[TestClient]:
    with make_client() as c:
        yield c


@contextmanager
def live_server(settings: Settings) -> Iterator[tuple[str, object]]:
    """A real uvicorn on a free loopback port, in a thread; yields (base URL, app)."""
    app = create_app(settings)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", ws="websockets-sansio"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    base = f"http://127.0.0.1:{port}"
    import httpx

    while time.monotonic() < deadline and httpx.get(base + "/ready").status_code != 200:
        time.sleep(0.05)
    try:
        yield base, app
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture
def server(tiny_checkpoint):
    @contextmanager
    def build(**overrides):
        with live_server(Settings(model=str(tiny_checkpoint), device="cpu", **overrides)) as pair:
            yield pair

    return build
