"""Fine-tune jobs on several devices: the worker runs them under torchrun (two gloo ranks on this CPU),
reports them like one-device jobs, and leaves no rank behind on a cancel or when it is killed."""

import os
import signal
import time
from pathlib import Path

import httpx

from services.trainer.defaults import CANCEL_POLL_S
from tests.processes import leftovers, wait_for
from tests.trainer.test_worker import AUTH, CORPUS, ENDLESS, SMALL, finished, job_status

TWO = {"n_devices": 2}


def submit(base: str, hyperparameters: dict) -> dict:
    body = {"model": "tiny", "training_texts": CORPUS.split("\n\n"), "hyperparameters": hyperparameters}
    response = httpx.post(f"{base}/v1/fine_tuning/jobs", json=body, headers=AUTH)
    assert response.status_code == 200, response.text
    return response.json()


def children(pid: int) -> list[int]:
    """Processes whose parent is pid."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(") ", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def ranks_running(state: str, keep: set[int]) -> list[int]:
    return [pid for pid in leftovers(state) if pid not in keep]


def test_a_job_on_two_devices_trains_on_two_ranks_and_reports_like_one(stack):
    base, store, procs = stack
    job = submit(base, {**SMALL, **TWO, "batch_size": 2, "grad_accum": 2})
    done = finished(base, job["id"])
    assert done["status"] == "succeeded", procs.log("worker")[-3000:]
    training = store.version(done["fine_tuned_model"])["training"]
    assert (training["ranks"], training["batch_size"], training["grad_accum"], training["effective_batch"]) == (
        2, 2, 2, 8,
    )  # fmt: skip
    assert done["progress"]["step"] == 12 and done["trained_tokens"] > 0
    events = httpx.get(f"{base}/v1/fine_tuning/jobs/{job['id']}/events", params={"limit": 100}).json()["data"]
    steps = [e["data"]["step"] for e in events if e["data"]]
    assert sorted(steps) == sorted(set(steps)), "rank 0 alone reports progress"
    wait_for(lambda: httpx.get(base + "/info").json()["model"]["id"] == done["fine_tuned_model"], timeout=30)
    keep = {procs.started["api"].pid, procs.started["worker"].pid}
    assert ranks_running(str(store.root), keep) == []


def test_a_cancel_and_a_killed_worker_end_every_rank_and_publish_nothing(stack):
    base, store, procs = stack
    state = str(store.root)
    job = submit(base, {**ENDLESS, **TWO})
    wait_for(lambda: (job_status(base, job["id"]).get("progress") or {}).get("step", 0) >= 10, every=0.1)
    worker, api = procs.started["worker"].pid, procs.started["api"].pid
    assert len(ranks_running(state, {api, worker})) >= 4  # the horse, torchrun and two ranks
    asked = time.monotonic()
    httpx.post(f"{base}/v1/fine_tuning/jobs/{job['id']}/cancel", headers=AUTH)
    cancelled = wait_for(lambda: (j := job_status(base, job["id"]))["status"] == "cancelled" and j, every=0.1)
    assert time.monotonic() - asked < CANCEL_POLL_S + 10
    assert cancelled["progress"]["step"] < 1_000_000
    wait_for(lambda: ranks_running(state, {api, worker}) == [], timeout=30)
    assert store.versions() == [] and not store.staging(job["id"]).parent.exists()

    second = submit(base, {**ENDLESS, **TWO})
    wait_for(lambda: (job_status(base, second["id"]).get("progress") or {}).get("step", 0) >= 10, every=0.1)
    for pid in [worker, *children(worker)]:  # the worker and its work horse die at once, as on a lost host
        os.kill(pid, signal.SIGKILL)
    procs.started.pop("worker").wait(timeout=10)
    # torchrun and both ranks follow: torchrun on its parent's death, the ranks on torchrun's; a rank that
    # does not stop on SIGTERM gets torchrun's SIGKILL 30 s later and 30 s more to go (seen once under load)
    wait_for(lambda: ranks_running(state, {api}) == [], timeout=100)
    failed = finished(base, second["id"])
    assert failed["status"] == "failed" and failed["error"]["code"] == "abandoned"
    assert store.versions() == []


def test_a_job_asking_for_more_devices_than_the_host_has_fails_clearly(stack):
    base, store, procs = stack
    cores = len(os.sched_getaffinity(0))
    job = submit(base, {**SMALL, "n_devices": cores + 1})
    failed = finished(base, job["id"])
    assert failed["status"] == "failed", failed
    assert failed["error"]["code"] == "invalid_hyperparameters"
    assert failed["error"]["param"] == "hyperparameters.n_devices"
    assert f"this worker's host has {cores} CPU cores" in failed["error"]["message"]
    body = {"model": "tiny", "training_texts": ["a b c"], "hyperparameters": {"n_devices": 9}}
    refused = httpx.post(f"{base}/v1/fine_tuning/jobs", json=body, headers=AUTH)
    assert refused.status_code == 422 and refused.json()["error"]["param"] == "hyperparameters.n_devices"
