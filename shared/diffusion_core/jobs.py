"""Fine-tune jobs in Redis: the record (OpenAI's fine_tuning.job shape), its events, cancel and liveness.

The API writes a job and enqueues TASK on QUEUE by name (it never imports the trainer); the
worker runs it, moving the status along and appending events. Status changes go through
`transition`, an atomic compare-and-set, so a cancel and a finishing worker cannot both win.
No torch: the worker's parent process imports this.
"""

import json
import secrets
import time
from typing import Any

from redis import Redis

QUEUE = "unmask-fine-tune"
TASK = "services.trainer.jobs.fine_tune"  # what the worker runs, by import path

SERIALIZER = "rq.serializers.JSONSerializer"  # on both sides: a queue entry is never unpickled (RQ's default would)


JOBS = "unmask:jobs"  # sorted set: job id scored by created_at
PENDING = ("validating_files", "queued")
ACTIVE = (*PENDING, "running")
TERMINAL = ("succeeded", "failed", "cancelled")

_TRANSITION = """
local current = redis.call('HGET', KEYS[1], 'status')
for _, allowed in ipairs(cjson.decode(ARGV[1])) do
  if current == allowed then
    for i = 2, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
    return 1
  end
end
return 0
"""


def _key(job_id: str, part: str = "") -> str:
    return f"unmask:job:{job_id}{':' + part if part else ''}"


def new_id() -> str:
    return f"ftjob-{secrets.token_hex(12)}"


def create(redis: Redis, record: dict[str, Any]) -> None:
    pipe = redis.pipeline()
    pipe.hset(_key(record["id"]), mapping={k: json.dumps(v) for k, v in record.items()})
    pipe.zadd(JOBS, {record["id"]: record["created_at"]})
    pipe.execute()


def get(redis: Redis, job_id: str) -> dict[str, Any] | None:
    raw = redis.hgetall(_key(job_id))
    if not raw:
        return None
    return {k.decode(): json.loads(v) for k, v in raw.items()}  # type: ignore[union-attr]


def listing(redis: Redis, after: str | None, limit: int) -> tuple[list[dict[str, Any]], bool]:
    """Jobs newest first, starting after the job id `after`; (page, has_more)."""
    ids = [i.decode() for i in redis.zrevrange(JOBS, 0, -1)]  # type: ignore[union-attr]
    if after is not None:
        ids = ids[ids.index(after) + 1 :] if after in ids else []
    page = [job for job in (get(redis, i) for i in ids[:limit]) if job is not None]
    return page, len(ids) > limit


def update(redis: Redis, job_id: str, **fields: Any) -> None:
    redis.hset(_key(job_id), mapping={k: json.dumps(v) for k, v in fields.items()})


def transition(redis: Redis, job_id: str, status: str, allowed_from: tuple[str, ...], **fields: Any) -> bool:
    """Set status (and fields) only if the job is in one of `allowed_from`; False otherwise."""
    values = {"status": status, **fields}
    if status in TERMINAL:
        values.setdefault("finished_at", int(time.time()))
    argv = [json.dumps([json.dumps(s) for s in allowed_from])]
    for k, v in values.items():
        argv += [k, json.dumps(v)]
    return bool(redis.eval(_TRANSITION, 1, _key(job_id), *argv))


def add_event(redis: Redis, job_id: str, message: str, data: dict[str, Any] | None = None, level: str = "info") -> None:
    event = {
        "id": f"ftevent-{secrets.token_hex(12)}",
        "object": "fine_tuning.job.event",
        "created_at": int(time.time()),
        "level": level,
        "message": message,
        "data": data or {},
        "type": "metrics" if data and "step" in data else "message",
    }
    redis.rpush(_key(job_id, "events"), json.dumps(event))


def events(redis: Redis, job_id: str, start: int = 0) -> list[dict[str, Any]]:
    """Events in the order they happened, from index `start`."""
    return [json.loads(e) for e in redis.lrange(_key(job_id, "events"), start, -1)]  # type: ignore[union-attr]


def request_cancel(redis: Redis, job_id: str) -> None:
    redis.set(_key(job_id, "cancel"), 1, ex=7 * 24 * 3600)


def cancel_requested(redis: Redis, job_id: str) -> bool:
    return bool(redis.exists(_key(job_id, "cancel")))


def beat(redis: Redis, job_id: str, ttl_s: int) -> None:
    """The worker is alive and on this job; lapses after ttl_s without another beat."""
    redis.set(_key(job_id, "alive"), 1, ex=ttl_s)


def reap(redis: Redis) -> list[str]:
    """Fail running jobs whose worker stopped beating (killed, lost its host); returns their ids."""
    reaped = []
    for job_id in [i.decode() for i in redis.zrevrange(JOBS, 0, 200)]:  # type: ignore[union-attr]
        job = get(redis, job_id)
        if job is None or job["status"] != "running" or redis.exists(_key(job_id, "alive")):
            continue
        message = "the worker running this job stopped (killed or lost); no checkpoint was published"
        error = {"code": "abandoned", "message": message, "param": None}
        if transition(redis, job_id, "failed", ("running",), error=error):
            add_event(redis, job_id, message, level="error")
            reaped.append(job_id)
    return reaped
