"""Hot reload: a checkpoint published into the store is served without a restart, or refused safely."""

import json
import shutil
import time

import pytest
import torch
from redis import Redis

from diffusion_core import GenerationConfig, checkpoint, generate
from diffusion_core.manifest import MANIFEST, sha256, write_manifest
from diffusion_core.model import fresh_masked_lm
from diffusion_core.store import VERSIONS, Store, new_version
from tests.processes import wait_for

KEY = "k" * 32
AUTH = {"Authorization": f"Bearer {KEY}"}
GREEDY = {"max_new_tokens": 8, "steps": 4, "sampling": "greedy", "seed": 0}


@pytest.fixture(scope="module")
def other_checkpoint(tmp_path_factory, tokenizer):
    """A second model with different weights, so its text differs from the base's."""
    torch.manual_seed(1)
    model = fresh_masked_lm("roberta-tiny", tokenizer, max_length=64).eval()
    return checkpoint.save(model, tokenizer, tmp_path_factory.mktemp("other") / "other", {"format": 1})


def publish(store: Store, source, name: str) -> str:
    """What the worker does at the end of a job."""
    version = new_version()
    staged = store.staging("ftjob-test")
    shutil.rmtree(staged.parent, ignore_errors=True)
    staged.parent.mkdir(parents=True)
    shutil.copytree(source, staged)
    record = {"model": name, "created_at": int(time.time()), "job_id": None, "base": "tiny", "root": "tiny"}
    store.publish(staged, version, {**record, "metrics": {}}, keep=3)
    return version


def text(client, **params) -> str:
    response = client.post("/generate", json={"inputs": "the quick", "parameters": {**GREEDY, **params}})
    assert response.status_code == 200, response.text
    return response.json()["generated_text"]


@pytest.fixture
def setup(make_client, redis_url, tmp_path):
    store = Store(tmp_path / "state", Redis.from_url(redis_url))
    with make_client(redis_url=redis_url, state_dir=store.root, api_key=KEY, reload_poll_s=0.2) as client:
        yield client, store


def test_a_published_version_is_served_without_a_restart(setup, other_checkpoint, tokenizer):
    client, store = setup
    before = text(client)
    version = publish(store, other_checkpoint, "ft:tiny:other:1")
    wait_for(lambda: client.get("/info").json()["model"]["checkpoint"] == version)
    info = client.get("/info").json()
    assert info["model"]["id"] == "ft:tiny:other:1" and info["reload_error"] is None
    after = text(client)
    model, tok = checkpoint.load(other_checkpoint, torch.device("cpu"))
    expected = generate(model, tok, "the quick", GenerationConfig(**GREEDY)).texts[0]
    assert after == expected != before
    assert text(client, model="tiny") == before  # the base stays nameable
    models = [m["id"] for m in client.get("/v1/models").json()["data"]]
    assert models == ["tiny", "ft:tiny:other:1"]


def test_a_tampered_checkpoint_is_refused_and_the_old_model_serves_on(setup, other_checkpoint):
    client, store = setup
    before = text(client)
    good = publish(store, other_checkpoint, "ft:tiny:good:1")
    wait_for(lambda: client.get("/info").json()["model"]["checkpoint"] == good)
    serving = text(client)
    version = new_version()
    final = store.path(version)
    shutil.copytree(other_checkpoint, final)  # published as the worker does, then tampered with
    record = {"model": "ft:tiny:bad:1", "created_at": 1, "version": version, "base": "tiny", "job_id": None}
    store.redis.hset(VERSIONS, version, json.dumps({**record, "manifest_sha256": sha256(final / MANIFEST)}))
    weights = bytearray((final / "model.safetensors").read_bytes())
    weights[-100:] = bytes(100)
    (final / "model.safetensors").write_bytes(bytes(weights))
    store.activate(version)
    error = wait_for(lambda: client.get("/info").json()["reload_error"])
    assert error["version"] == version and "sha256" in error["message"]
    time.sleep(1.0)  # five more polls of the pointer, which still names the refused version
    refusals = [line for line in client.get("/metrics").text.splitlines() if 'result="refused"' in line]
    assert refusals and all(line.endswith(" 1.0") for line in refusals if "_total" in line), refusals
    assert client.get("/info").json()["model"]["checkpoint"] == good
    assert text(client) == serving != before
    listing = client.get("/v1/checkpoints").json()
    assert (
        listing["current"] == version and listing["serving"] == good and listing["reload_error"]["version"] == version
    )
    refused = client.post(f"/v1/checkpoints/{version}/activate", headers=AUTH)
    assert refused.status_code == 409 and "model.safetensors" in refused.json()["error"]["message"]
    fixed = publish(store, other_checkpoint, "ft:tiny:fixed:1")
    wait_for(lambda: client.get("/info").json()["model"]["checkpoint"] == fixed)
    assert client.get("/info").json()["reload_error"] is None, "a version served since clears the refusal"
    shutil.copy(other_checkpoint / "model.safetensors", final / "model.safetensors")  # repaired by hand
    assert client.post(f"/v1/checkpoints/{version}/activate", headers=AUTH).status_code == 200
    wait_for(lambda: client.get("/info").json()["model"]["checkpoint"] == version, timeout=20)  # tried again


def test_a_checkpoint_whose_manifest_was_rewritten_after_publish_is_refused(setup, other_checkpoint):
    """Tampering that rewrites the manifest to match new weights passes the manifest's own check; the
    manifest's hash recorded at publish is what catches it."""
    client, store = setup
    version = new_version()
    final = store.path(version)
    shutil.copytree(other_checkpoint, final)  # published as the worker does ...
    record = {"model": "ft:tiny:swapped:1", "created_at": 1, "version": version, "base": "tiny", "job_id": None}
    store.redis.hset(VERSIONS, version, json.dumps({**record, "manifest_sha256": sha256(final / MANIFEST)}))
    weights = bytearray((final / "model.safetensors").read_bytes())
    weights[-100:] = bytes(100)
    (final / "model.safetensors").write_bytes(bytes(weights))
    write_manifest(final)  # ... then other weights, and a manifest that agrees with them
    store.activate(version)
    error = wait_for(lambda: client.get("/info").json()["reload_error"])
    assert error["version"] == version and "recorded at publish" in error["message"]
    assert client.get("/info").json()["model"]["checkpoint"] == "base"


def test_activate_rolls_back_and_forward(setup, other_checkpoint):
    client, store = setup
    before = text(client)
    version = publish(store, other_checkpoint, "ft:tiny:other:2")
    wait_for(lambda: client.get("/info").json()["model"]["checkpoint"] == version)
    assert client.post("/v1/checkpoints/base/activate").status_code == 401
    rolled = client.post("/v1/checkpoints/base/activate", headers=AUTH)
    assert rolled.status_code == 200 and rolled.json()["serving"] == "base"
    assert text(client) == before
    forward = client.post(f"/v1/checkpoints/{version}/activate", headers=AUTH).json()
    assert forward["serving"] == version and text(client) != before
    assert [c["current"] for c in forward["data"]] == [False, True]
    assert client.post("/v1/checkpoints/ft-ffffffffffff/activate", headers=AUTH).status_code == 404


def test_a_restarted_api_serves_the_current_version(make_client, redis_url, tmp_path, other_checkpoint):
    store = Store(tmp_path / "state", Redis.from_url(redis_url))
    version = publish(store, other_checkpoint, "ft:tiny:other:3")
    with make_client(redis_url=redis_url, state_dir=store.root, reload_poll_s=0.2) as client:
        wait_for(lambda: client.get("/info").json()["model"]["checkpoint"] == version)


def test_generation_goes_on_while_redis_is_down_and_job_routes_recover(make_client, tmp_path):
    from services.stack.redis_server import RedisServer

    server = RedisServer(tmp_path / "redis")
    server.start()
    try:
        with make_client(redis_url=server.url, state_dir=tmp_path / "state", reload_poll_s=0.2) as client:
            assert client.get("/v1/fine_tuning/jobs").status_code == 200
            server.stop()
            down = client.get("/v1/fine_tuning/jobs")
            assert down.status_code == 503 and "Redis" in down.json()["error"]["message"]
            assert client.get("/v1/checkpoints").status_code == 503
            assert client.get("/v1/models").status_code == 200
            for _ in range(3):
                text(client)
            server.start()
            wait_for(lambda: client.get("/v1/fine_tuning/jobs").status_code == 200)
            assert text(client)
    finally:
        server.stop()
