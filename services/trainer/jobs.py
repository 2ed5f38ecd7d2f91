"""The fine-tune job, as RQ runs it in a forked work horse: train, publish, report.

Torch is imported here, inside the horse, never in the worker's parent process. Progress goes
to the job record, its events and `job.meta`; a beat every few seconds proves the horse alive.
"""

import logging
import os
import shutil
import threading
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from redis import Redis
from redis.exceptions import RedisError
from rq import get_current_job

from diffusion_core import jobs
from diffusion_core.errors import UnmaskError
from diffusion_core.store import Store, new_version

from .config import WorkerSettings
from .defaults import BEAT_STOP_S, BEATS_PER_TTL, CANCEL_POLL_S

log = logging.getLogger("unmask.trainer")
ERROR_CODES = {
    "InputError": "invalid_training_data",
    "ConfigError": "invalid_hyperparameters",
    "CheckpointError": "invalid_base_model",
    "TokenizerError": "invalid_base_model",
    "Diverged": "training_diverged",
}
HYPERPARAMETERS = (
    "max_length", "batch_size", "grad_accum", "n_devices", "gradient_checkpointing", "learning_rate", "levels",
    "prefix_max", "warmup_steps", "max_steps",
)  # fmt: skip


class _Reaped(Exception):
    """The job was failed (abandoned) while this horse still ran it: publish nothing."""


class Watch:
    """Beats while the job runs; answers should_stop() for a cancel or a dead parent worker."""

    def __init__(self, redis: Redis, job_id: str, ttl_s: int) -> None:
        self.redis, self.job_id, self.ttl_s = redis, job_id, ttl_s
        self.parent = os.getppid()
        self.orphaned = False
        self._checked = 0.0
        self._cancel = False
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="unmask-heartbeat", daemon=True)

    def __enter__(self) -> "Watch":
        jobs.beat(self.redis, self.job_id, self.ttl_s)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join(timeout=BEAT_STOP_S)

    def _beat(self) -> None:
        while not self._done.wait(self.ttl_s / BEATS_PER_TTL):
            try:
                jobs.beat(self.redis, self.job_id, self.ttl_s)
            except RedisError as error:  # Redis may be restarting; training goes on
                log.warning("heartbeat for %s failed: %s", self.job_id, error)

    def should_stop(self) -> bool:
        if os.getppid() != self.parent:
            self.orphaned = True
            return True
        now = time.monotonic()
        if now - self._checked >= CANCEL_POLL_S:
            self._checked = now
            try:
                self._cancel = jobs.cancel_requested(self.redis, self.job_id)
            except RedisError:
                pass
        return self._cancel


def fine_tune(job_id: str) -> dict[str, Any]:
    """Run one queued fine-tune job to a published checkpoint, or to a clear failure."""
    settings = WorkerSettings()
    rq_job = get_current_job()
    assert rq_job is not None, "fine_tune runs inside an RQ worker"
    redis = rq_job.connection
    store = Store(settings.state_dir, redis)
    import diffusion_core.training  # noqa: F401  (torch loads here, before the job counts as running)

    record = jobs.get(redis, job_id)
    staging = store.staging(job_id)
    version = new_version()
    with Watch(redis, job_id, settings.heartbeat_ttl_s) as watch:
        if record is None or not jobs.transition(redis, job_id, "running", jobs.PENDING):
            return {"skipped": job_id}
        jobs.add_event(redis, job_id, "Fine-tuning job started")
        try:
            path = _train(record, store, settings, staging, rq_job, watch)
            if jobs.get(redis, job_id)["status"] != "running":  # type: ignore[index]
                raise _Reaped()
            published = store.publish(path, version, _version_record(record, path), settings.keep_versions)
        except _Reaped:
            shutil.rmtree(staging.parent, ignore_errors=True)
            return {"reaped": job_id}
        except Exception as exc:
            return _fail(redis, job_id, exc, watch, staging)
    shutil.rmtree(staging.parent, ignore_errors=True)
    jobs.transition(redis, job_id, "succeeded", ("running",), fine_tuned_model=published["model"], version=version)
    jobs.add_event(redis, job_id, f"New checkpoint {version} published as {published['model']}")
    jobs.add_event(redis, job_id, "The job has successfully completed")
    return {"version": version, "fine_tuned_model": published["model"]}


def _train(
    record: dict[str, Any], store: Store, settings: WorkerSettings, staging: Path, rq_job: Any, watch: Watch
) -> Path:
    from diffusion_core.runtime import keep_freed_memory, quiet_transformers
    from diffusion_core.training import train

    quiet_transformers()
    keep_freed_memory()
    config = job_config(record, store, settings, staging)  # built here first: a bad job fails before any rank starts
    if record["hyperparameters"].get("n_devices", 1) > 1:
        from .ranks import run_ranks

        return run_ranks(record, rq_job.id, settings, staging, watch)

    def on_progress(p: Any) -> None:
        report(rq_job.connection, record["id"], p, rq_job)

    return train(config, on_progress=on_progress, should_stop=watch.should_stop, show_progress=False)


def job_config(record: dict[str, Any], store: Store, settings: WorkerSettings, staging: Path) -> Any:
    """The job's TrainConfig, the same in the work horse and in every rank of a multi-device job."""
    from diffusion_core.config import DEFAULT_LEVELS, TrainConfig

    hp = record["hyperparameters"]
    training = store.file(record["training_file"])
    validation = store.file(record["validation_file"]) if record.get("validation_file") else None
    if training is None:
        raise UnmaskError(f"training file {record['training_file']} no longer exists", "training_file")
    return TrainConfig(
        data=(str(store.file_path(training)),),
        eval_data=(str(store.file_path(validation)),) if validation else (),
        output=str(staging),
        base=_base_source(record, store),
        max_length=hp["max_length"],
        batch_size=hp["batch_size"],
        grad_accum=hp.get("grad_accum", 1),  # records from before these existed
        gradient_checkpointing=hp.get("gradient_checkpointing", False),
        learning_rate=hp["learning_rate"],
        warmup_steps=hp["warmup_steps"],
        max_steps=hp["max_steps"] or 0,
        epochs=hp["n_epochs"],
        levels=tuple(hp["levels"] or DEFAULT_LEVELS),  # records from before levels were resolved at creation
        prefix_max=hp["prefix_max"],
        seed=record["seed"],
        device=settings.device,
        save_every=settings.snapshot_every,
        resume=True,
    )


def _base_source(record: dict[str, Any], store: Store) -> str:
    base = record["base"]
    if base.get("version"):
        return str(store.path(base["version"]))
    if base.get("source"):
        return str(base["source"])
    from diffusion_core.starter import STARTER_DIFFUSION

    return str(STARTER_DIFFUSION)


def report(redis: Redis, job_id: str, p: Any, rq_job: Any) -> None:
    """Progress to the record, the event list and job.meta; a Redis hiccup never stops training."""
    progress = asdict(p)
    levels = ", ".join(f"{k} {v:.3f}" for k, v in p.level_losses.items())
    try:
        jobs.update(
            redis, job_id, progress=progress, trained_tokens=p.tokens, estimated_finish=int(time.time() + p.eta_s)
        )
        jobs.add_event(redis, job_id, f"Step {p.step}/{p.total_steps}: loss {p.loss:.3f} ({levels})", progress)
        rq_job.meta["progress"] = progress
        rq_job.save_meta()
    except RedisError as error:
        log.warning("progress for %s not recorded: %s", job_id, error)


def _fail(redis: Redis, job_id: str, exc: Exception, watch: Watch, staging: Path) -> dict[str, Any]:
    from diffusion_core.training import TrainingCancelled

    if isinstance(exc, TrainingCancelled) and not watch.orphaned:
        shutil.rmtree(staging.parent, ignore_errors=True)
        jobs.transition(redis, job_id, "cancelled", ("running",))
        jobs.add_event(redis, job_id, "The job was cancelled; no checkpoint was published")
        return {"cancelled": job_id}
    if watch.orphaned:
        error = {"code": "abandoned", "message": "the worker process died; the job stopped", "param": None}
    elif isinstance(exc, UnmaskError):
        code = ERROR_CODES.get(type(exc).__name__, "invalid_job")
        error = {"code": code, "message": str(exc), "param": _param(exc.param)}
    else:
        log.exception("fine-tune job %s failed", job_id)
        error = {"code": "internal_error", "message": f"{type(exc).__name__}: {exc}", "param": None}
    if error["code"] != "abandoned":
        shutil.rmtree(staging.parent, ignore_errors=True)
    jobs.transition(redis, job_id, "failed", ("running",), error=error)
    jobs.add_event(redis, job_id, f"The job failed: {error['message']}", level="error")
    return {"failed": job_id, "error": error}


def _param(name: str | None) -> str | None:
    """A core parameter name as the job request spells it."""
    return f"hyperparameters.{name}" if name in HYPERPARAMETERS else name


def _version_record(record: dict[str, Any], path: Path) -> dict[str, Any]:
    from diffusion_core.manifest import read_metadata

    metadata = read_metadata(path)
    return {
        "model": f"ft:{record['base']['root']}:{record.get('suffix') or 'unmask'}:{record['id'][6:14]}",
        "created_at": int(time.time()),
        "job_id": record["id"],
        "base": record["model"],
        "root": record["base"]["root"],
        "metrics": metadata.get("metrics", {}),
        "training": metadata.get("training", {}),
    }
