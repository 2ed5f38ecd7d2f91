"""Dependencies shared by the routes, as Annotated aliases."""

import hmac
from typing import Annotated

from fastapi import Depends, Header
from fastapi.routing import APIRoute
from redis import Redis
from starlette.requests import HTTPConnection

from diffusion_core.store import Store

from .config import Settings
from .engine import Engine
from .errors import ApiError
from .metrics import Metrics
from .registry import ModelRegistry


def get_settings(request: HTTPConnection) -> Settings:
    return request.app.state.settings


def get_registry(request: HTTPConnection) -> ModelRegistry:
    return request.app.state.registry


def get_engine(request: HTTPConnection) -> Engine:
    return request.app.state.engine


def get_metrics(request: HTTPConnection) -> Metrics:
    return request.app.state.metrics


def get_store(request: HTTPConnection) -> Store:
    """The shared store; 503 when this server runs without Redis."""
    store = request.app.state.store
    if store is None:
        raise ApiError(503, "fine-tuning needs Redis: set REDIS_URL (`unmask up` starts a private one)")
    return store


def get_optional_store(request: HTTPConnection) -> Store | None:
    return request.app.state.store


def get_redis(store: Annotated[Store, Depends(get_store)]) -> Redis:
    return store.redis


SettingsDep = Annotated[Settings, Depends(get_settings)]
RegistryDep = Annotated[ModelRegistry, Depends(get_registry)]
EngineDep = Annotated[Engine, Depends(get_engine)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]
StoreDep = Annotated[Store, Depends(get_store)]
OptionalStoreDep = Annotated[Store | None, Depends(get_optional_store)]
RedisDep = Annotated[Redis, Depends(get_redis)]


def require_api_key(settings: SettingsDep, authorization: Annotated[str | None, Header()] = None) -> None:
    """Write routes: `Authorization: Bearer <key>`, compared in constant time."""
    scheme, _, given = (authorization or "").partition(" ")
    expected = settings.api_key
    if expected is None or scheme.lower() != "bearer" or not hmac.compare_digest(given.encode(), expected.encode()):
        raise ApiError(401, "a valid API key is required: send 'Authorization: Bearer <key>'", "authorization")


ApiKeyDep = Depends(require_api_key)


def needs_key(route: APIRoute) -> bool:
    """Whether a route is a write route (it depends on the API key): the one place that says so is the route."""
    return any(d.call is require_api_key for d in route.dependant.dependencies)
