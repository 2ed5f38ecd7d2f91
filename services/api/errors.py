"""One error shape for every failure: {"error": {"message", "type", "param"}}."""

import logging
import re
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from redis.exceptions import RedisError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from diffusion_core import ConfigError, InputError

log = logging.getLogger("unmask.api")

TYPES = {
    400: "invalid_request",
    401: "authentication_error",
    404: "not_found",
    409: "conflict",
    405: "invalid_request",
    408: "timeout",
    413: "payload_too_large",
    422: "validation_error",
    429: "overloaded",
    503: "not_ready",
}


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None


class ErrorBody(BaseModel):
    """Every error response: {"error": {"message", "type", "param"}}."""

    error: ErrorDetail


# Documented on every route: what any of them may answer besides its success.
RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": description}
    for status, description in (
        (400, "malformed request"),
        (404, "unknown model, file, job or route"),
        (413, "request body or work over a limit (the limit is named)"),
        (422, "a field is invalid (named in `param`)"),
        (429, "at capacity; retry after `Retry-After` seconds"),
        (503, "model loading, or the job store (Redis) unreachable"),
    )
}


class ApiError(Exception):
    def __init__(self, status: int, message: str, param: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.headers = status, message, param, headers or {}

    @property
    def type(self) -> str:
        return TYPES.get(self.status, "internal_error")

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param}}


def redact(text: str, state_dir: Path) -> str:
    """The state folder's absolute path is the operator's business, not a caller's: shown relative."""
    for form in {str(state_dir.resolve()), str(state_dir)}:
        if form not in (".", ""):
            text = text.replace(form, "<state>")
    return text


def public_reload_error(registry: Any, state_dir: Path) -> dict[str, Any] | None:
    """A refused hot reload as callers see it (the message redacted)."""
    error = registry.reload_error
    return None if error is None else {**error, "message": redact(error["message"], state_dir)}


def from_core(exc: ConfigError | InputError, prefix: str = "parameters") -> ApiError:
    """A core validation error as a 422 naming the parameter at fault."""
    param = exc.param if exc.param in (None, "inputs") else f"{prefix}.{exc.param}"
    return ApiError(422, str(exc), param)


# Names pydantic adds to a location for each branch of a union (n_epochs: "auto" | int -> "literal['auto']", "int").
_UNION_BRANCH = re.compile(r"^(literal\[.*\]|int|float|str|bool|list\[.*\]|constrained-\w+|function-\w+\[.*\])$")


def _loc(loc: tuple) -> str:
    parts = [p for p in loc if p not in ("body", "query", "path")]
    return ".".join(str(p) for p in parts if not (isinstance(p, str) and _UNION_BRANCH.match(p)))


def _most_telling(errors: list[dict]) -> dict:
    """The first error, or for a union field the branch that says more than "wrong type" (the int
    branch's "greater than or equal to 1" rather than the literal's "should be 'auto'")."""
    first = errors[0]
    same = [e for e in errors if _loc(tuple(e["loc"])) == _loc(tuple(first["loc"]))]
    telling = [e for e in same if e["type"] != "literal_error" and not e["type"].endswith("_type")]
    return telling[0] if telling else first


def _methods(request: Request) -> list[str]:
    """The methods the API answers on this request's path."""
    asked = ({**request.scope, "method": method} for method in ("DELETE", "GET", "PATCH", "POST", "PUT"))
    return [s["method"] for s in asked if any(r.matches(s)[0] is Match.FULL for r in request.app.router.routes)]


def install(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api(request: Request, exc: ApiError) -> JSONResponse:
        body = exc.body()
        body["error"]["message"] = redact(exc.message, request.app.state.settings.state_dir)
        return JSONResponse(body, status_code=exc.status, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = _most_telling(list(exc.errors())) if exc.errors() else {"loc": (), "msg": "invalid request"}
        param = _loc(tuple(first.get("loc", ())))
        message = f"{param}: {first['msg']}" if param else str(first["msg"])
        return JSONResponse(ApiError(422, message, param or None).body(), status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        headers = dict(exc.headers or {})
        if exc.status_code == 405:  # every method of the path, not only the first route's
            headers["Allow"] = ", ".join(_methods(request))
        body = ApiError(exc.status_code, str(exc.detail)).body()
        return JSONResponse(body, status_code=exc.status_code, headers=headers)

    @app.exception_handler(RedisError)
    async def _redis(request: Request, exc: RedisError) -> JSONResponse:
        log.warning("Redis error on %s %s: %s", request.method, request.url.path, exc)
        error = ApiError(503, "the job store (Redis) is unreachable; generation still works, retry shortly")
        return JSONResponse(error.body(), status_code=503, headers={"Retry-After": "2"})

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return JSONResponse(
            {"error": {"message": "internal error", "type": "internal_error", "param": None}}, status_code=500
        )
