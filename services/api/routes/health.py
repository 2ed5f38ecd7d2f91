"""Liveness, readiness, service description and Prometheus metrics."""

from typing import Any

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from diffusion_core.config import parameters

from ..deps import EngineDep, MetricsDep, RegistryDep, SettingsDep
from ..errors import ApiError, public_reload_error

router = APIRouter(tags=["health"])


@router.get("/health")
async def health() -> dict[str, str]:
    """The process is up (it may still be loading its model)."""
    return {"status": "ok"}


@router.get("/ready")
async def ready(registry: RegistryDep) -> dict[str, str]:
    """200 once a model is loaded and serving; 503 before."""
    if registry.current is None:
        raise ApiError(503, f"model failed to load: {registry.error}" if registry.error else "model is loading")
    return {"status": "ready", "model": registry.current.name, "version": registry.current.version}


@router.get("/info")
async def info(settings: SettingsDep, registry: RegistryDep, engine: EngineDep) -> dict[str, Any]:
    """The model served, every limit this server enforces, and the generation parameters (name, type,
    default, bounds, choices, help) from which the viewer builds its form."""
    entry = registry.current
    limits = settings.model_dump(
        include={
            "max_input_tokens",
            "max_new_tokens",
            "max_steps",
            "max_samples",
            "max_concurrent_requests",
            "max_queue",
            "max_payload_bytes",
            "max_upload_bytes",
            "job_timeout_s",
            "max_job_devices",
            "ws_request_timeout_s",
            "header_timeout_s",
        }
    )
    model = None
    if entry is not None:
        model = {
            "id": entry.name,
            "version": entry.version,
            "source": entry.source,
            "device": str(entry.device),
            "dtype": entry.dtype.name,
            "dtype_reason": entry.dtype.reason,
            "max_positions": entry.positions,
            "checkpoint": registry.serving,
            "chat": bool(getattr(entry.tokenizer, "chat_template", None)),
        }
    return {
        "model": model,
        "model_error": registry.error,
        "reload_error": public_reload_error(registry, settings.state_dir),
        "fine_tuning": settings.redis_url is not None,
        "autoregressive": {
            "id": registry.twin.name if registry.twin else None,
            "loaded": registry.twin is not None,
            "dtype": registry.twin.dtype.name if registry.twin else None,
            "error": registry.twin_error,
        },
        "limits": limits,
        "parameters": parameters(),
        "batching": settings.batching,
        "engine": {"active": len(engine.active), "waiting": len(engine.waiting), **vars(engine.stats)},
    }


@router.get("/metrics", response_class=Response, responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}})
async def metrics(m: MetricsDep) -> Response:
    return Response(generate_latest(m.registry), media_type=CONTENT_TYPE_LATEST)
