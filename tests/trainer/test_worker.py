"""Redis, the API and an RQ worker as real processes: fine-tune, publish, hot reload, and the faults."""

import json
import os
import signal
import time
from pathlib import Path

import httpx
import openai

from diffusion_core.manifest import read_metadata
from services.trainer.defaults import CANCEL_POLL_S
from tests.conftest import STACK_KEY as KEY
from tests.processes import leftovers, wait_for

AUTH = {"Authorization": f"Bearer {KEY}"}
CORPUS = "\n\n".join(
    [
        "the quick brown fox jumps over the lazy dog.",
        "a journey of a thousand miles begins with a single step.",
        "all that glitters is not gold, said the old man.",
        "she sells sea shells by the sea shore every morning.",
    ]
    * 10
)
SMALL = {"max_steps": 12, "batch_size": 4, "max_length": 32}
ENDLESS = {"max_steps": 1_000_000, "batch_size": 4, "max_length": 32}


def job_status(base: str, job_id: str) -> dict:
    return httpx.get(f"{base}/v1/fine_tuning/jobs/{job_id}").json()


def finished(base: str, job_id: str) -> dict:
    return wait_for(lambda: (j := job_status(base, job_id))["status"] in ("succeeded", "failed", "cancelled") and j)


def generate(base: str, **params) -> httpx.Response:
    body = {"inputs": "the quick", "parameters": {"max_new_tokens": 6, "steps": 3, "sampling": "greedy", **params}}
    return httpx.post(base + "/generate", json=body, timeout=30)


def test_fine_tune_end_to_end_with_the_openai_client(stack, tmp_path):
    base, store, procs = stack
    client = openai.OpenAI(base_url=base + "/v1", api_key=KEY)
    data = tmp_path / "corpus.txt"
    data.write_text(CORPUS)
    file = client.files.create(file=data.open("rb"), purpose="fine-tune")
    asked = {**SMALL, "learning_rate": 3e-4, "levels": [0.3, 0.7], "prefix_max": 5}
    job = client.fine_tuning.jobs.create(model="tiny", training_file=file.id, hyperparameters=asked, suffix="fox")
    assert job.status == "queued"
    before = generate(base).json()["generated_text"]
    maps = Path(f"/proc/{procs.started['worker'].pid}/maps").read_text()
    assert "libtorch" not in maps  # torch loads in the forked work horse only

    with httpx.stream("GET", f"{base}/v1/fine_tuning/jobs/{job.id}/stream", timeout=120) as stream:
        messages = [json.loads(line[6:]) for line in stream.iter_lines() if line.startswith("data: ")]
    progress = [m["data"] for m in messages if m.get("object") == "fine_tuning.job.event" and m["data"]]
    assert progress and progress[-1]["step"] == 12 and progress[-1]["total_steps"] == 12
    assert progress[-1]["level_losses"] and progress[-1]["eta_s"] == 0
    done = client.fine_tuning.jobs.retrieve(job.id)
    assert done.status == "succeeded", procs.log("worker")[-3000:]
    assert done.fine_tuned_model.startswith("ft:tiny:fox:") and done.trained_tokens > 0
    events = client.fine_tuning.jobs.list_events(job.id, limit=100).data
    assert events[0].message == "The job has successfully completed"

    version = store.version(done.fine_tuned_model)["version"]
    wait_for(lambda: httpx.get(base + "/info").json()["model"]["checkpoint"] == version, timeout=30)
    assert httpx.get(base + "/info").json()["model"]["id"] == done.fine_tuned_model
    assert [m.id for m in client.models.list().data] == ["tiny", done.fine_tuned_model]
    tuned = generate(base)
    assert tuned.status_code == 200
    assert generate(base, model=done.fine_tuned_model).json()["generated_text"] == tuned.json()["generated_text"]
    assert (store.checkpoints_dir / version / "training_log.json").is_file()
    trained = read_metadata(store.checkpoints_dir / version)  # what the worker trained with: the job's own
    assert trained["diffusion"]["levels"] == [0.3, 0.7] and trained["diffusion"]["prefix_max"] == 5
    assert trained["training"]["learning_rate"] == 3e-4 and trained["training"]["steps"] == 12
    listed = httpx.get(base + "/v1/checkpoints").json()["data"]
    held_out = next(c for c in listed if c["version"] == version)["metrics"]["held_out_loss"]
    assert set(held_out) == {"0.15", "0.50", "0.90"} and all(loss > 0 for loss in held_out.values())
    assert not store.staging(job.id).parent.exists()

    rolled = httpx.post(f"{base}/v1/checkpoints/base/activate", headers=AUTH, timeout=60).json()
    assert rolled["serving"] == "base" and generate(base).json()["generated_text"] == before


def test_a_killed_worker_loses_nothing_and_its_job_resumes_from_a_snapshot(stack, tmp_path):
    base, store, procs = stack
    body = {"model": "tiny", "training_texts": CORPUS.split("\n\n"), "hyperparameters": {**SMALL, "max_steps": 400}}
    job = httpx.post(f"{base}/v1/fine_tuning/jobs", json=body, headers=AUTH).json()
    wait_for(lambda: (job_status(base, job["id"]).get("progress") or {}).get("step", 0) >= 20, every=0.05)
    victims = [pid for pid in leftovers(str(store.root)) if pid != procs.started["api"].pid]
    assert len(victims) == 2  # the worker and its work horse
    for pid in victims:
        os.kill(pid, signal.SIGKILL)
    procs.started.pop("worker").wait(timeout=10)
    killed_at = job_status(base, job["id"])["progress"]["step"]
    assert killed_at < 400

    failed = finished(base, job["id"])
    assert failed["status"] == "failed" and failed["error"]["code"] == "abandoned"
    assert store.versions() == [] and store.current() is None
    published = [p for p in store.checkpoints_dir.glob("*") if not p.name.startswith(".")]
    assert published == []
    assert generate(base).status_code == 200

    procs.spawn("worker2", "worker")
    again = httpx.post(f"{base}/v1/fine_tuning/jobs", json=body, headers=AUTH).json()
    assert finished(base, again["id"])["status"] == "succeeded", procs.log("worker2")[-3000:]

    resumed = httpx.post(f"{base}/v1/fine_tuning/jobs/{job['id']}/resume", headers=AUTH).json()
    assert resumed["status"] == "queued" and resumed["error"] is None
    assert finished(base, job["id"])["status"] == "succeeded", procs.log("worker2")[-3000:]
    events = httpx.get(f"{base}/v1/fine_tuning/jobs/{job['id']}/events", params={"limit": 1000}).json()["data"]
    in_order = list(reversed(events))
    resumed_at = next(i for i, e in enumerate(in_order) if e["message"].startswith("Job resumed"))
    first_step = next(e["data"]["step"] for e in in_order[resumed_at:] if e["data"])
    assert first_step > 10  # the second attempt started from a snapshot (step 10 or later), not from step 0
    assert httpx.post(f"{base}/v1/fine_tuning/jobs/{job['id']}/resume", headers=AUTH).status_code == 409


def test_cancel_stops_a_running_job_and_bad_data_fails_it_clearly(stack):
    base, store, procs = stack
    body = {"model": "tiny", "training_texts": CORPUS.split("\n\n"), "hyperparameters": ENDLESS}
    job = httpx.post(f"{base}/v1/fine_tuning/jobs", json=body, headers=AUTH).json()
    wait_for(lambda: (job_status(base, job["id"]).get("progress") or {}).get("step", 0) >= 10)
    asked = time.monotonic()
    httpx.post(f"{base}/v1/fine_tuning/jobs/{job['id']}/cancel", headers=AUTH)
    cancelled = wait_for(lambda: (j := job_status(base, job["id"]))["status"] == "cancelled" and j, every=0.05)
    took = time.monotonic() - asked
    assert took < CANCEL_POLL_S + 3, f"a running job took {took:.1f} s to stop after the cancel"
    assert cancelled["progress"]["step"] < 10_000 and cancelled["finished_at"]
    assert store.versions() == [] and not store.staging(job["id"]).parent.exists()

    file = store.add_file(CORPUS.encode(), "corpus.txt", "fine-tune")
    lost = httpx.post(
        f"{base}/v1/fine_tuning/jobs", json={"model": "tiny", "training_file": file["id"]}, headers=AUTH
    ).json()
    store.delete_file(file["id"])  # gone before the worker starts it
    failed = finished(base, lost["id"])
    assert failed["status"] == "failed" and "no longer exists" in failed["error"]["message"]
    assert failed["error"]["param"] == "training_file"

    ok = httpx.post(f"{base}/v1/fine_tuning/jobs", json={**body, "hyperparameters": SMALL}, headers=AUTH).json()
    assert finished(base, ok["id"])["status"] == "succeeded"  # the worker survived both


def test_the_worker_runs_fine_tune_jobs_only_and_never_unpickles_a_queue_entry(stack, redis_url):
    from redis import Redis
    from rq import Queue

    from diffusion_core import jobs

    base, _, procs = stack
    redis = Redis.from_url(redis_url)
    other = Queue(jobs.QUEUE, connection=redis, serializer=jobs.SERIALIZER).enqueue("os.getpid")
    wait_for(lambda: other.get_status(refresh=True) == "failed", timeout=60)
    assert "refusing queue entry" in (other.latest_result().exc_string or "")
    pickled = Queue(jobs.QUEUE, connection=redis).enqueue("os.getpid")  # RQ's default serializer: pickle
    wait_for(lambda: pickled.get_status(refresh=True) != "queued" or "Traceback" in procs.log("worker"), timeout=60)
    assert pickled.get_status(refresh=True) != "finished", "a pickled entry must never run"
    upload = httpx.post(
        base + "/v1/files", headers=AUTH, files={"file": ("c.txt", CORPUS.encode())}, data={"purpose": "fine-tune"}
    ).json()
    job = httpx.post(
        base + "/v1/fine_tuning/jobs",
        headers=AUTH,
        json={"model": "tiny", "training_file": upload["id"], "hyperparameters": SMALL},
    ).json()
    assert finished(base, job["id"])["status"] == "succeeded", "the worker still runs real jobs"


def test_a_worker_restarted_in_its_container_registers_beside_its_stale_record(redis_url, monkeypatch):
    """In a container the pid is 1 and the host name survives `docker compose restart`: the new worker
    must not be refused because the killed one's registration has not expired yet."""
    from redis import Redis
    from rq import Queue, Worker

    from diffusion_core import jobs
    from services.trainer import worker as trainer

    monkeypatch.setattr(trainer.os, "getpid", lambda: 1)
    monkeypatch.setattr(trainer.socket, "gethostname", lambda: "3f2a9c1b7e44")
    redis = Redis.from_url(redis_url)
    queue = Queue(jobs.QUEUE, connection=redis, serializer=jobs.SERIALIZER)
    killed = Worker([queue], connection=redis, name=trainer.worker_name(), serializer=jobs.SERIALIZER)
    killed.register_birth()  # and never its death: the container was restarted under it
    restarted = Worker([queue], connection=redis, name=trainer.worker_name(), serializer=jobs.SERIALIZER)
    try:
        restarted.register_birth()
        assert restarted.name != killed.name and restarted.name.startswith("unmask-3f2a9c1b7e44-1-")
    finally:
        for w in (killed, restarted):
            w.register_death()


def test_the_health_check_says_whether_this_hosts_worker_is_registered(redis_url, monkeypatch, capsys):
    """`unmask worker --check` is the compose trainer's health check: 0 while a worker of this host is
    registered (its registration lapses when it dies), 1 without one, and a clear error without Redis."""
    from redis import Redis
    from rq import Queue, Worker

    from diffusion_core import jobs
    from diffusion_core.cli import main
    from services.trainer import worker as trainer

    monkeypatch.setenv("REDIS_URL", redis_url)
    assert main(["worker", "--check"]) == 1 and "no worker" in capsys.readouterr().out
    redis = Redis.from_url(redis_url)
    queue = Queue(jobs.QUEUE, connection=redis, serializer=jobs.SERIALIZER)
    elsewhere = Worker([queue], connection=redis, name="unmask-otherhost-7-abc123", serializer=jobs.SERIALIZER)
    here = Worker([queue], connection=redis, name=trainer.worker_name(), serializer=jobs.SERIALIZER)
    elsewhere.register_birth()
    assert main(["worker", "--check"]) == 1, "another host's worker is not this container's"
    here.register_birth()
    try:
        assert main(["worker", "--check"]) == 0 and here.name in capsys.readouterr().out
    finally:
        for w in (elsewhere, here):
            w.register_death()
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:1/0")
    assert main(["worker", "--check"]) != 0 and "cannot reach Redis" in capsys.readouterr().err


def test_a_job_that_fails_on_a_hyperparameter_names_it_as_the_request_does(redis_url, tmp_path):
    """The core names its own field (max_length); the job's error names the request's
    (hyperparameters.max_length), with the error code of a bad hyperparameter."""
    from redis import Redis

    from diffusion_core import jobs
    from diffusion_core.errors import ConfigError, InputError
    from services.trainer.jobs import Watch, _fail

    redis = Redis.from_url(redis_url)
    for exc, param, code in (
        (ConfigError("max_length 512 exceeds the model's 64 positions", "max_length"), "hyperparameters.max_length",
         "invalid_hyperparameters"),
        (InputError("no text in the training file", "training_file"), "training_file", "invalid_training_data"),
    ):  # fmt: skip
        job_id = jobs.new_id()
        jobs.create(redis, {"id": job_id, "status": "running", "created_at": int(time.time())})
        _fail(redis, job_id, exc, Watch(redis, job_id, 30), tmp_path / job_id / "staging")
        error = jobs.get(redis, job_id)["error"]
        assert jobs.get(redis, job_id)["status"] == "failed" and (error["param"], error["code"]) == (param, code)
