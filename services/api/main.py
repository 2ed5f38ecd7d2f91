"""The FastAPI application: `uvicorn services.api.main:create_app --factory` or `unmask serve`."""

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from fastapi.routing import APIRoute
from fastapi.staticfiles import StaticFiles
from redis import Redis
from redis.exceptions import RedisError
from starlette.routing import Match, Mount
from starlette.types import Scope

from diffusion_core import jobs
from diffusion_core.runtime import keep_freed_memory, quiet_transformers
from diffusion_core.store import Store

from . import errors
from .config import Settings
from .defaults import REAP_EVERY_S, REDIS_CONNECT_TIMEOUT_S, REDIS_HEALTH_CHECK_S, REDIS_SOCKET_TIMEOUT_S
from .deps import needs_key
from .engine import Engine
from .metrics import Metrics
from .middleware import BodyGuard, HostGuard
from .registry import ModelRegistry, twin_source
from .reloader import Reloader
from .routes import autoregressive, checkpoints, files, fine_tuning, generate, health, openai, render

log = logging.getLogger("unmask.api")
WEB = Path(__file__).resolve().parents[2] / "web"  # the static viewer, served at /


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app; the model loads in the background once the server starts (see /ready)."""
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        quiet_transformers()
        keep_freed_memory()
        metrics = Metrics()
        redis = _redis(settings.redis_url)
        store = Store(settings.state_dir, redis) if redis is not None else None
        twin = twin_source(settings.ar_model, settings.model)
        registry = ModelRegistry(
            settings.model, settings.device, store, settings.max_loaded_models, twin, dtype=settings.dtype
        )
        engine = Engine(
            metrics, settings.max_concurrent_requests, settings.max_queue, settings.batching, settings.autocast
        )
        reloader = Reloader(registry, store, redis, settings.reload_poll_s, metrics) if store and redis else None
        app.state.settings, app.state.metrics, app.state.registry, app.state.engine = (
            settings,
            metrics,
            registry,
            engine,
        )
        app.state.redis, app.state.store, app.state.reloader = redis, store, reloader
        engine.start()
        loading = asyncio.create_task(asyncio.to_thread(_load, registry))
        reaping = asyncio.create_task(_reap_forever(redis)) if redis is not None else None
        if reloader is not None:
            reloader.start()
        try:
            yield
        finally:
            loading.cancel()
            if reaping is not None:
                reaping.cancel()
            if reloader is not None:
                reloader.stop()
            engine.stop()
            if redis is not None:
                redis.close()

    app = FastAPI(
        title="unmask", version="0.1.0", lifespan=lifespan, description="Text generation by masked-LM diffusion."
    )
    errors.install(app)

    uploads = {
        path: settings.max_upload_bytes for path in ("/v1/files", "/v1/fine_tuning/jobs", "/render/gif", "/render/html")
    }
    routers = (generate, autoregressive, render, openai, files, fine_tuning, checkpoints, health)
    keyed = tuple(r for m in routers for r in m.router.routes if isinstance(r, APIRoute) and needs_key(r))
    app.add_middleware(BodyGuard, max_bytes=settings.max_payload_bytes, overrides=uploads, keyed=keyed)
    app.add_middleware(HostGuard, hosts=settings.hosts())  # added last: runs first
    for module in routers:
        app.include_router(module.router, responses=errors.RESPONSES)
    web = settings.web_dir or WEB
    if web.is_dir():
        app.router.routes.append(_Viewer("/", StaticFiles(directory=web, html=True), name="web"))
    else:
        log.warning("no viewer at %s; the API serves without it", web)
    return app


class _Viewer(Mount):
    """The static viewer answers reads of its own files only: a wrong method on an API path (GET
    /generate, PUT /v1/files) is that path's 405, with Allow."""

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        if scope["type"] == "http" and (scope["method"] not in ("GET", "HEAD") or _api_path(scope)):
            return Match.NONE, {}
        return super().matches(scope)


def _api_path(scope: Scope) -> bool:
    routes = (r for r in scope["app"].router.routes if not isinstance(r, _Viewer))
    return any(r.matches(scope)[0] is not Match.NONE for r in routes)


async def _reap_forever(redis: Redis) -> None:
    """Fail running jobs whose worker stopped beating, on a timer (reads never write).

    RQ notices a dead worker only when another worker cleans its registries, which may be never on
    a one-worker machine; the trainer's own heartbeat key lets any API replica tell within seconds."""
    while True:
        await asyncio.sleep(REAP_EVERY_S)
        try:
            for job_id in await asyncio.to_thread(jobs.reap, redis):
                log.warning("fine-tune job %s was abandoned by its worker; marked failed", job_id)
        except RedisError:
            pass  # an outage is logged once by the reloader


def _load(registry: ModelRegistry) -> None:
    try:
        registry.load()
        log.info(
            "serving %s (version %s)",
            registry.current.name if registry.current else "?",
            registry.current.version if registry.current else "?",
        )
    except Exception:
        log.exception("model failed to load; /ready answers 503 with the reason")


def _redis(url: str | None) -> Redis | None:
    """A client for REDIS_URL (connections are made lazily: Redis may come up after the API)."""
    if url is None:
        return None
    return Redis.from_url(
        url,
        socket_timeout=REDIS_SOCKET_TIMEOUT_S,
        socket_connect_timeout=REDIS_CONNECT_TIMEOUT_S,
        health_check_interval=REDIS_HEALTH_CHECK_S,
    )
