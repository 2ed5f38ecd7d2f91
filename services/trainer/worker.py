"""The RQ worker process: one queue, a forked work horse per job, abandoned jobs reaped at start."""

import logging
import os
import secrets
import socket
from typing import Any

from redis import Redis
from rq import Queue, Worker
from rq.job import Job

from diffusion_core import jobs

from .config import WorkerSettings

log = logging.getLogger("unmask.trainer")


class FineTuneJob(Job):
    """The one job this worker runs: an entry that names any other function is refused, never imported."""

    def perform(self) -> Any:
        if self.func_name != jobs.TASK:
            raise ValueError(f"refusing queue entry {self.id}: it names {self.func_name!r}, not {jobs.TASK}")
        return super().perform()


def worker_name() -> str:
    """Host, pid and a random part: in a container the pid is always 1 and the host name survives a
    restart, so host and pid alone would collide with the previous run's registration (RQ refuses a
    second live worker of one name until the first one's key expires, minutes later)."""
    return f"{_this_host()}{os.getpid()}-{secrets.token_hex(3)}"


def _this_host() -> str:
    """The start of the names of this host's workers."""
    return f"unmask-{socket.gethostname()}-"


def registered(settings: WorkerSettings) -> list[str]:
    """This host's workers that Redis knows of (a dead one drops out when its registration expires)."""
    redis = Redis.from_url(settings.redis_url, socket_connect_timeout=3, socket_timeout=3)
    return [w.name for w in Worker.all(connection=redis, serializer=jobs.SERIALIZER) if w.name.startswith(_this_host())]


def run(settings: WorkerSettings, burst: bool = False) -> None:
    """Work the fine-tune queue until SIGINT/SIGTERM (or until empty, with burst)."""
    redis = Redis.from_url(settings.redis_url)
    redis.ping()
    for job_id in jobs.reap(redis):
        log.warning("job %s was abandoned by a previous worker; marked failed", job_id)
    queue = Queue(jobs.QUEUE, connection=redis, serializer=jobs.SERIALIZER)
    worker = Worker([queue], connection=redis, name=worker_name(), serializer=jobs.SERIALIZER, job_class=FineTuneJob)
    log.info("worker %s on %s (state in %s)", worker.name, jobs.QUEUE, settings.state_dir)
    worker.work(burst=burst, with_scheduler=False, logging_level="INFO")
