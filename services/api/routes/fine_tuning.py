"""OpenAI's fine-tuning API: create, list, get, cancel, events; plus a live SSE progress stream."""

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse
from redis.exceptions import RedisError

from diffusion_core import jobs

from .. import fine_tune
from ..defaults import JOB_STREAM_POLL_S
from ..deps import ApiKeyDep, RedisDep, RegistryDep, SettingsDep, StoreDep
from ..errors import ApiError
from ..schemas import FineTuneRequest

router = APIRouter(prefix="/v1/fine_tuning/jobs", tags=["fine-tuning"])


@router.post("", dependencies=[ApiKeyDep])
async def create_job(
    body: FineTuneRequest, settings: SettingsDep, registry: RegistryDep, store: StoreDep
) -> dict[str, Any]:
    return await asyncio.to_thread(fine_tune.create, body, settings, registry, store)


@router.get("")
async def list_jobs(
    redis: RedisDep, after: str | None = None, limit: Annotated[int, Query(ge=1, le=100)] = 20
) -> dict[str, Any]:
    page, more = jobs.listing(redis, after, limit)
    return {"object": "list", "data": [fine_tune.public(j) for j in page], "has_more": more}


@router.get("/{job_id}")
async def get_job(job_id: str, redis: RedisDep) -> dict[str, Any]:
    return fine_tune.fetch(redis, job_id)


@router.post("/{job_id}/cancel", dependencies=[ApiKeyDep])
async def cancel_job(job_id: str, redis: RedisDep) -> dict[str, Any]:
    return fine_tune.cancel(redis, job_id)


@router.post("/{job_id}/resume", dependencies=[ApiKeyDep])
async def resume_job(job_id: str, redis: RedisDep, settings: SettingsDep) -> dict[str, Any]:
    """Re-queue a job whose worker died; it picks up from its last snapshot."""
    return fine_tune.resume(redis, job_id, settings)


@router.get("/{job_id}/events")
async def list_events(
    job_id: str, redis: RedisDep, after: str | None = None, limit: Annotated[int, Query(ge=1, le=1000)] = 20
) -> dict[str, Any]:
    """Newest first, like OpenAI; `after` is an event id (page towards older events)."""
    fine_tune.fetch(redis, job_id)
    newest_first = list(reversed(jobs.events(redis, job_id)))
    if after is not None:
        ids = [e["id"] for e in newest_first]
        if after not in ids:
            raise ApiError(404, f"no event {after!r} in job {job_id}", "after")
        newest_first = newest_first[ids.index(after) + 1 :]
    return {"object": "list", "data": newest_first[:limit], "has_more": len(newest_first) > limit}


@router.get("/{job_id}/stream", responses={200: {"content": {"text/event-stream": {}}, "description": "progress"}})
async def stream_job(job_id: str, request: Request, redis: RedisDep) -> StreamingResponse:
    """Server-sent events: `event` for each job event in order, `job` when the job object changes;
    the stream ends after the job reaches succeeded, failed or cancelled."""
    fine_tune.fetch(redis, job_id)

    async def updates() -> AsyncIterator[str]:
        seen, last = 0, None
        while not await request.is_disconnected():
            try:
                job = await asyncio.to_thread(fine_tune.fetch, redis, job_id)
                new = await asyncio.to_thread(jobs.events, redis, job_id, seen)
            except RedisError:
                error = ApiError(503, "the job store (Redis) is unreachable; reconnect to resume")
                yield f"event: error\ndata: {json.dumps(error.body())}\n\n"
                return
            for event in new:
                seen += 1
                yield f"event: event\ndata: {json.dumps(event)}\n\n"
            if job != last:
                last = job
                yield f"event: job\ndata: {json.dumps(job)}\n\n"
            if job["status"] in jobs.TERMINAL:
                return
            await asyncio.sleep(JOB_STREAM_POLL_S)

    return StreamingResponse(updates(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
