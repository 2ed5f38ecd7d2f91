"""Pure ASGI middleware (BaseHTTPMiddleware would hide client disconnects from the routes)."""

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .errors import TYPES, ApiError


class PayloadLimit:
    """413 for a declared body larger than the limit; every error status counted by type."""

    def __init__(self, app: ASGIApp, max_bytes: int, overrides: dict[str, int] | None = None) -> None:
        self.app, self.max_bytes, self.overrides = app, max_bytes, overrides or {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        size = dict(scope["headers"]).get(b"content-length", b"")
        limit = self.overrides.get(scope["path"].rstrip("/"), self.max_bytes)
        if size.isdigit() and int(size) > limit:
            error = ApiError(413, f"request body is larger than {limit} bytes")
            await JSONResponse(error.body(), status_code=413)(scope, receive, send)
            self._count(scope, 413)
            return

        async def send_counting(message: Message) -> None:
            if message["type"] == "http.response.start" and message["status"] >= 400:
                self._count(scope, message["status"])
            await send(message)

        await self.app(scope, receive, send_counting)

    @staticmethod
    def _count(scope: Scope, status: int) -> None:
        metrics = getattr(scope["app"].state, "metrics", None)
        if metrics is not None:
            metrics.errors.labels(TYPES.get(status, "internal_error")).inc()
