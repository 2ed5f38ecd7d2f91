"""The shared store and the job protocol, against a real Redis."""

import json
import shutil
import time

import pytest
from redis import Redis

from diffusion_core import jobs
from diffusion_core.errors import CheckpointError, InputError
from diffusion_core.store import BASE, EVENTS, Store, new_version


@pytest.fixture
def store(redis_url, tmp_path) -> Store:
    return Store(tmp_path / "state", Redis.from_url(redis_url))


def _stage(store: Store, tiny_checkpoint, job_id: str):
    staged = store.staging(job_id)
    staged.parent.mkdir(parents=True)
    shutil.copytree(tiny_checkpoint, staged)
    return staged


def _record(model: str) -> dict:
    return {"model": model, "created_at": 0, "job_id": None, "base": "tiny", "root": "tiny", "metrics": {}}


def test_publish_moves_the_checkpoint_points_at_it_and_announces_it(store, tiny_checkpoint):
    events = store.redis.pubsub(ignore_subscribe_messages=True)
    events.subscribe(EVENTS)
    version = new_version()
    record = store.publish(_stage(store, tiny_checkpoint, "ftjob-a"), version, _record("ft:tiny:a:1"), keep=3)
    assert (store.checkpoints_dir / version / "model.safetensors").is_file()
    assert not store.staging("ftjob-a").exists()
    assert store.current() == version
    assert store.version("ft:tiny:a:1")["manifest_sha256"] == record["manifest_sha256"]
    deadline, message = time.monotonic() + 2, None
    while message is None and time.monotonic() < deadline:
        message = events.get_message(timeout=0.5)
    assert json.loads(message["data"]) == {"type": "checkpoint.activated", "version": version}


def test_publish_refuses_a_staged_checkpoint_that_fails_its_manifest(store, tiny_checkpoint):
    staged = _stage(store, tiny_checkpoint, "ftjob-b")
    (staged / "model.safetensors").write_bytes(b"not the weights")
    with pytest.raises(CheckpointError, match="model.safetensors"):
        store.publish(staged, new_version(), _record("ft:tiny:b:1"), keep=3)
    assert store.versions() == [] and store.current() is None


def test_prune_keeps_the_newest_and_never_the_current(store, tiny_checkpoint):
    versions = []
    for n in range(4):
        version = new_version()
        store.publish(_stage(store, tiny_checkpoint, f"ftjob-{n}"), version, {**_record(f"m{n}"), "created_at": n}, 9)
        versions.append(version)
    store.activate(versions[0])  # roll back to the oldest
    deleted = store.prune(keep=2)
    assert set(deleted) == {versions[1]}
    assert {r["version"] for r in store.versions()} == {versions[0], versions[2], versions[3]}
    assert not (store.checkpoints_dir / versions[1]).exists()


def test_names_that_would_become_paths_are_refused(store):
    with pytest.raises(CheckpointError):
        store.path("../../etc")
    with pytest.raises(CheckpointError):
        store.activate("ft-000000000000")
    assert store.file("../secrets") is None
    store.activate(BASE)
    assert store.current() == BASE


@pytest.mark.parametrize(
    ("name", "content", "problem"),
    [
        ("empty.txt", b"\n\n  \n", "holds no text"),
        ("blob.txt", b"\x00\x01\x02binary", "binary"),
        ("latin.txt", "caf\xe9".encode("latin-1"), "not UTF-8"),
        ("data.csv", b"a,b\n", "unsupported file type"),
        ("rows.jsonl", b'{"text": "fine"}\n{"prompt": "no text field"}\n', "rows.jsonl:2"),
        ("rows.jsonl", b'{"text": "fine"}\nnot json\n', "invalid JSON"),
    ],
)
def test_bad_training_files_are_rejected_with_the_problem_named(store, name, content, problem):
    with pytest.raises(InputError, match=problem):
        store.add_file(content, name, "fine-tune")
    assert store.files() == []
    assert not store.files_dir.exists() or list(store.files_dir.iterdir()) == []


def test_a_stored_file_round_trips(store):
    record = store.add_file(b'{"text": "one"}\n{"text": "two"}\n', "data.jsonl", "fine-tune")
    assert record["documents"] == 2 and record["bytes"] == 32
    assert store.file_path(record).read_bytes() == b'{"text": "one"}\n{"text": "two"}\n'
    assert store.files() == [record]
    assert store.delete_file(record["id"]) and store.file(record["id"]) is None
    assert not store.file_path(record).exists()


def _job(redis: Redis, status: str) -> str:
    job_id = jobs.new_id()
    jobs.create(redis, {"id": job_id, "status": status, "created_at": 1})
    return job_id


def _race(redis: Redis, job_id: str) -> dict[str, bool]:
    """A finish and a cancel of one job, released at the same moment from two threads."""
    import threading

    gate, won = threading.Barrier(2), {}
    moves = {
        "succeeded": lambda: jobs.transition(redis, job_id, "succeeded", ("running",), fine_tuned_model="m"),
        "cancelled": lambda: jobs.transition(redis, job_id, "cancelled", jobs.ACTIVE),
    }

    def attempt(status: str) -> None:
        gate.wait()
        won[status] = moves[status]()

    threads = [threading.Thread(target=attempt, args=(status,)) for status in moves]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return won


def test_only_one_of_a_cancel_and_a_finish_wins(store):
    """Two clients finishing and cancelling at once: exactly one transition happens, and the record
    shows the winner's status and fields only."""
    for _ in range(40):
        job_id = _job(store.redis, "running")
        won = _race(store.redis, job_id)
        assert sum(won.values()) == 1, won
        job = jobs.get(store.redis, job_id)
        winner = next(status for status, ok in won.items() if ok)
        assert job["status"] == winner and job["finished_at"]
        assert (job.get("fine_tuned_model") == "m") == (winner == "succeeded")


def test_a_running_job_without_a_heartbeat_is_reaped_as_abandoned(store):
    silent, beating, queued = _job(store.redis, "running"), _job(store.redis, "running"), _job(store.redis, "queued")
    jobs.beat(store.redis, beating, ttl_s=30)
    assert jobs.reap(store.redis) == [silent]
    assert jobs.get(store.redis, silent)["error"]["code"] == "abandoned"
    assert jobs.get(store.redis, beating)["status"] == "running"
    assert jobs.get(store.redis, queued)["status"] == "queued"


def test_job_listing_pages_newest_first(store):
    ids = []
    for n in range(5):
        job_id = jobs.new_id()
        jobs.create(store.redis, {"id": job_id, "status": "queued", "created_at": n})
        ids.append(job_id)
    page, more = jobs.listing(store.redis, None, 2)
    assert [j["id"] for j in page] == [ids[4], ids[3]] and more
    page, more = jobs.listing(store.redis, ids[3], 10)
    assert [j["id"] for j in page] == [ids[2], ids[1], ids[0]] and not more


def test_an_upload_while_redis_is_down_leaves_no_file_behind(tmp_path):
    from redis.exceptions import ConnectionError as RedisConnectionError

    from services.stack.redis_server import free_port

    down = Store(tmp_path / "state", Redis(port=free_port(), socket_connect_timeout=0.5))
    with pytest.raises(RedisConnectionError):
        down.add_file(b"some training text.\n\nmore of it.\n", "corpus.txt", "fine-tune")
    assert list(down.files_dir.iterdir()) == [], "a file no record names could never be listed or deleted"
