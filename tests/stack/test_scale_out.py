"""The scale-out layout of docs/deploy.md, on one machine: two API replicas and two workers sharing one Redis
and one checkpoint store, each a real `unmask` process."""

import os
import signal
import time

import httpx
from redis import Redis
from rq.job import Job

from diffusion_core import jobs
from diffusion_core.store import Store
from services.stack.redis_server import free_port
from tests.conftest import stack_env
from tests.processes import Processes, leftovers, wait_for, wait_http
from tests.trainer.test_worker import AUTH, CORPUS, SMALL, finished, job_status

RELOAD_POLL_S = 0.5


def submit(base: str, hyperparameters: dict) -> dict:
    body = {"model": "tiny", "training_texts": CORPUS.split("\n\n"), "hyperparameters": hyperparameters}
    response = httpx.post(f"{base}/v1/fine_tuning/jobs", json=body, headers=AUTH)
    assert response.status_code == 200, response.text
    return response.json()


def serving(base: str) -> str | None:
    return httpx.get(base + "/info").json()["model"]["checkpoint"]


def worker_pid(redis: Redis, rq_id: str) -> int:
    """The pid of the worker that took an RQ job (its name ends in the pid)."""
    name = wait_for(lambda: Job.fetch(rq_id, connection=redis, serializer=jobs.SERIALIZER).worker_name)
    return int(name.split("-")[-2])  # unmask-HOST-PID-RANDOM


def test_two_replicas_and_two_workers_share_one_redis_and_one_store(tmp_path, redis_url, tiny_checkpoint):
    state = tmp_path / "state"
    procs = Processes(tmp_path / "logs", stack_env(redis_url, state, tiny_checkpoint, RELOAD_POLL_S))
    replicas = {name: f"http://127.0.0.1:{port}" for name, port in (("a", free_port()), ("b", free_port()))}
    try:
        for name, base in replicas.items():
            procs.spawn(f"api-{name}", "serve", "--port", base.rsplit(":", 1)[1])
        workers = {procs.spawn(name, "worker").pid: name for name in ("worker-1", "worker-2")}
        for base in replicas.values():
            wait_http(base + "/ready")
        redis, store = Redis.from_url(redis_url), Store(state, Redis.from_url(redis_url))
        a, b = replicas["a"], replicas["b"]

        job = submit(a, SMALL)
        assert worker_pid(redis, job["id"]) in workers
        done = finished(b, job["id"])  # the job record is the same on both replicas
        assert done["status"] == "succeeded"
        seen = time.monotonic()
        version = store.version(done["fine_tuned_model"])["version"]
        wait_for(lambda: serving(a) == version and serving(b) == version, timeout=30, every=0.1)
        took = time.monotonic() - seen
        assert took < RELOAD_POLL_S + 10, f"both replicas serve the new version {took:.1f} s after it was published"

        second = submit(b, {**SMALL, "max_steps": 400})
        victim = worker_pid(redis, second["id"])
        wait_for(lambda: (job_status(a, second["id"]).get("progress") or {}).get("step", 0) >= 20, every=0.05)
        os.killpg(victim, signal.SIGKILL)  # the worker and its work horse: a host lost mid-job
        procs.started.pop(workers[victim]).wait(timeout=10)
        failed = finished(a, second["id"])
        assert failed["status"] == "failed" and failed["error"]["code"] == "abandoned"
        resumed = httpx.post(f"{a}/v1/fine_tuning/jobs/{second['id']}/resume", headers=AUTH)
        assert resumed.status_code == 200 and resumed.json()["attempt"] == 2
        survivor = next(pid for pid in workers if pid != victim)
        assert worker_pid(redis, f"{second['id']}-2") == survivor
        done = finished(b, second["id"])
        assert done["status"] == "succeeded", procs.log(workers[survivor])[-3000:]
        events = httpx.get(f"{b}/v1/fine_tuning/jobs/{second['id']}/events", params={"limit": 1000}).json()["data"]
        in_order = list(reversed(events))
        restart = next(i for i, e in enumerate(in_order) if e["message"].startswith("Job resumed"))
        assert next(e["data"]["step"] for e in in_order[restart:] if e["data"]) > 10, "continued from a snapshot"
        version = store.version(done["fine_tuned_model"])["version"]
        wait_for(lambda: serving(a) == version and serving(b) == version, timeout=30, every=0.1)
    finally:
        procs.stop_all()
    assert leftovers(str(state)) == []
