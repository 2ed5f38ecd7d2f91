"""The FastAPI application: `uvicorn services.api.main:create_app --factory` or `unmask serve`."""

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from diffusion_core.model import keep_freed_memory, quiet_transformers

from . import errors
from .config import Settings
from .engine import Engine
from .metrics import Metrics
from .middleware import PayloadLimit
from .registry import ModelRegistry
from .routes import generate, health, openai

log = logging.getLogger("unmask.api")


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app; the model loads in the background once the server starts (see /ready)."""
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        quiet_transformers()
        keep_freed_memory()
        metrics = Metrics()
        registry = ModelRegistry(settings.model, settings.device)
        engine = Engine(
            metrics, settings.max_concurrent_requests, settings.max_queue, settings.batching, settings.autocast
        )
        app.state.settings, app.state.metrics, app.state.registry, app.state.engine = (
            settings,
            metrics,
            registry,
            engine,
        )
        engine.start()
        loading = asyncio.create_task(asyncio.to_thread(_load, registry))
        try:
            yield
        finally:
            loading.cancel()
            engine.stop()

    app = FastAPI(
        title="unmask", version="0.1.0", lifespan=lifespan, description="Text generation by masked-LM diffusion."
    )
    errors.install(app)

    app.add_middleware(PayloadLimit, max_bytes=settings.max_payload_bytes)
    for router in (generate.router, openai.router, health.router):
        app.include_router(router)
    return app


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
