"""Creating and cancelling fine-tune jobs: validate, record, enqueue for the worker by name."""

import json
import time
from typing import Any

from redis import Redis
from rq import Queue
from rq.exceptions import NoSuchJobError
from rq.job import Job

from diffusion_core import jobs
from diffusion_core.errors import InputError
from diffusion_core.store import Store

from .config import Settings
from .defaults import FAILURE_TTL_S, RESULT_TTL_S
from .errors import ApiError
from .registry import ModelRegistry
from .schemas import FineTuneRequest


def _base(body: FineTuneRequest, registry: ModelRegistry, store: Store) -> dict[str, Any]:
    """What to fine-tune from: the model this server was started with, or a retained version."""
    if body.model in (registry.base_name, registry.base_version):
        return {"source": registry.source, "version": None, "root": registry.base_name}
    record = store.version(body.model)
    if record is None:
        known = [registry.base_name] + [r["model"] for r in store.versions()]
        raise ApiError(404, f"unknown model {body.model!r}; fine-tune one of: {', '.join(known)}", "model")
    return {"source": None, "version": record["version"], "root": record.get("root", record["base"])}


def _file(store: Store, file_id: str, param: str) -> dict[str, Any]:
    record = store.file(file_id)
    if record is None:
        raise ApiError(404, f"no file {file_id!r}", param)
    if record["purpose"] != "fine-tune":
        raise ApiError(422, f"file {file_id} has purpose {record['purpose']!r}, not 'fine-tune'", param)
    return record


def create(body: FineTuneRequest, settings: Settings, registry: ModelRegistry, store: Store) -> dict[str, Any]:
    """Validate the request, write the job record and enqueue it; returns the job object."""
    if (body.training_file is None) == (body.training_texts is None):
        raise ApiError(422, "give exactly one of training_file or training_texts", "training_file")
    base = _base(body, registry, store)
    if body.training_texts is not None:
        content = "\n".join(json.dumps({"text": t}) for t in body.training_texts).encode()
        try:
            training = store.add_file(content, "training_texts.jsonl", "fine-tune")
        except InputError as exc:
            raise ApiError(422, str(exc).replace("training_texts.jsonl", "training_texts"), "training_texts") from None
    else:
        training = _file(store, body.training_file or "", "training_file")
    if body.validation_file is not None:
        _file(store, body.validation_file, "validation_file")
    entry = registry.get(body.model)
    hyperparameters = body.hyperparameters.resolved(entry.positions if entry else 128)
    if hyperparameters["n_devices"] > settings.max_job_devices:
        message = f"n_devices {hyperparameters['n_devices']} exceeds this deployment's {settings.max_job_devices}"
        raise ApiError(422, message, "hyperparameters.n_devices")
    if entry is not None and hyperparameters["max_length"] > entry.positions:
        message = f"max_length {hyperparameters['max_length']} exceeds the model's {entry.positions} positions"
        raise ApiError(422, message, "hyperparameters.max_length")
    job_id = jobs.new_id()
    record = {
        "id": job_id,
        "object": "fine_tuning.job",
        "model": body.model,
        "created_at": int(time.time()),
        "finished_at": None,
        "fine_tuned_model": None,
        "organization_id": "unmask",
        "result_files": [],
        "status": "validating_files",
        "training_file": training["id"],
        "validation_file": body.validation_file,
        "hyperparameters": hyperparameters,
        "trained_tokens": None,
        "error": None,
        "seed": body.seed if body.seed is not None else int(time.time()) % (2**31),
        "suffix": body.suffix,
        "metadata": body.metadata,
        "estimated_finish": None,
        "integrations": [],
        "progress": None,
        "version": None,
        "attempt": 1,
        "base": base,
    }
    jobs.create(store.redis, record)
    _enqueue(store.redis, record, settings)
    jobs.transition(store.redis, job_id, "queued", ("validating_files",))
    documents = training["documents"]
    jobs.add_event(store.redis, job_id, f"Validated training file: {training['id']} ({documents} documents)")
    jobs.add_event(store.redis, job_id, "Job enqueued; waiting for a worker")
    return fetch(store.redis, job_id)


def _rq_id(record: dict[str, Any]) -> str:
    attempt = record.get("attempt", 1)
    return record["id"] if attempt == 1 else f"{record['id']}-{attempt}"


def _enqueue(redis: Redis, record: dict[str, Any], settings: Settings) -> None:
    Queue(jobs.QUEUE, connection=redis, serializer=jobs.SERIALIZER).enqueue_call(
        jobs.TASK,
        args=(record["id"],),
        job_id=_rq_id(record),
        timeout=settings.job_timeout_s,
        result_ttl=RESULT_TTL_S,
        failure_ttl=FAILURE_TTL_S,
        description=f"fine-tune {record['model']} on {record['training_file']}",
    )


def resume(redis: Redis, job_id: str, settings: Settings) -> dict[str, Any]:
    """Queue a job its worker abandoned again; it continues from its last snapshot."""
    jobs.reap(redis)  # a write: settle a job whose worker just died before deciding
    record = fetch(redis, job_id)
    if record["status"] != "failed" or (record["error"] or {}).get("code") != "abandoned":
        raise ApiError(409, "only a job abandoned by its worker can be resumed", "fine_tuning_job_id")
    attempt = record.get("attempt", 1) + 1
    if not jobs.transition(redis, job_id, "queued", ("failed",), error=None, finished_at=None, attempt=attempt):
        raise ApiError(409, f"job {job_id} changed state; look again", "fine_tuning_job_id")
    _enqueue(redis, {**record, "attempt": attempt}, settings)
    jobs.add_event(redis, job_id, f"Job resumed (attempt {attempt}); training continues from its last snapshot")
    return fetch(redis, job_id)


def fetch(redis: Redis, job_id: str) -> dict[str, Any]:
    record = jobs.get(redis, job_id)
    if record is None:
        raise ApiError(404, f"no fine-tuning job {job_id!r}", "fine_tuning_job_id")
    return public(record)


FIELDS = (
    "id", "object", "model", "created_at", "finished_at", "fine_tuned_model", "organization_id", "result_files",
    "status", "validation_file", "training_file", "hyperparameters", "trained_tokens", "error", "seed", "suffix",
    "metadata", "estimated_finish", "integrations", "progress", "version", "attempt",
)  # fmt: skip


def public(record: dict[str, Any]) -> dict[str, Any]:
    """The job object as clients see it, in a stable order (the worker's base resolution stays inside)."""
    return {k: record.get(k) for k in FIELDS}


def cancel(redis: Redis, job_id: str) -> dict[str, Any]:
    """Queued: cancelled now. Running: the worker stops within a few steps and publishes nothing."""
    record = fetch(redis, job_id)
    if record["status"] in jobs.TERMINAL:
        raise ApiError(409, f"job {job_id} already {record['status']}", "fine_tuning_job_id")
    jobs.request_cancel(redis, job_id)
    if jobs.transition(redis, job_id, "cancelled", jobs.PENDING):
        jobs.add_event(redis, job_id, "The job was cancelled before it started")
        try:
            Job.fetch(_rq_id(record), connection=redis, serializer=jobs.SERIALIZER).cancel()
        except NoSuchJobError:
            pass
    else:
        jobs.add_event(redis, job_id, "Cancellation requested; the worker stops at the next step")
    return fetch(redis, job_id)
