"""Pure ASGI middleware (BaseHTTPMiddleware would hide client disconnects from the routes)."""

from fastapi.routing import APIRoute
from starlette.responses import JSONResponse
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .errors import TYPES, ApiError


class HostGuard:
    """Answer only to the Host names the server is meant to have (DNS rebinding: a page on evil.example
    whose name was made to point at this machine sends `Host: evil.example`). HTTP gets a 400 naming the
    setting; a WebSocket handshake is refused (403) before it is accepted."""

    def __init__(self, app: ASGIApp, hosts: list[str]) -> None:
        self.app, self.hosts = app, hosts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or "*" in self.hosts:
            await self.app(scope, receive, send)
            return
        host = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"host"), "")
        if not host or hostname(host) in self.hosts:  # browsers always name a host; HTTP/1.0 clients may not
            await self.app(scope, receive, send)
            return
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        message = f"this server does not answer to host {host[:100]!r}; add it to UNMASK_ALLOWED_HOSTS"
        await JSONResponse(ApiError(400, message).body(), status_code=400)(scope, receive, send)


def hostname(host: str) -> str:
    """A Host header's name without its port, lower case: "[::1]:8000" -> "::1"."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


class BodyGuard:
    """Before a body is read: the key of a write route (401), then the body's size as it arrives (413,
    declared or chunked); every error status is counted by type."""

    def __init__(
        self, app: ASGIApp, max_bytes: int, overrides: dict[str, int] | None = None, keyed: tuple[APIRoute, ...] = ()
    ) -> None:
        self.app, self.max_bytes, self.overrides = app, max_bytes, overrides or {}
        self.keyed = keyed  # the routes that depend on the API key (deps.needs_key)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.overrides.get(scope["path"].rstrip("/"), self.max_bytes)
        error = self._key_error(scope) or self._declared_error(scope, limit)
        if error is not None:
            await self._refuse(scope, receive, send, error)
            return
        received, over = 0, False

        async def counted() -> Message:
            nonlocal received, over
            if over:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:  # stop reading: the route sees a client that left
                    over = True
                    return {"type": "http.disconnect"}
            return message

        async def send_counting(message: Message) -> None:
            if over:
                return  # whatever the route says about the cut body, the answer is 413
            if message["type"] == "http.response.start" and message["status"] >= 400:
                self._count(scope, message["status"])
            await send(message)

        try:
            await self.app(scope, counted, send_counting)
        except Exception:
            if not over:
                raise
        if over:
            await self._refuse(scope, receive, send, _too_large(limit))

    def _key_error(self, scope: Scope) -> ApiError | None:
        """401 for a write route without the key, decided from the headers alone."""
        from .deps import require_api_key

        for route in self.keyed:
            if route.matches(scope)[0] == Match.FULL:
                headers = dict(scope["headers"])
                authorization = headers.get(b"authorization", b"").decode("latin-1") or None
                try:
                    require_api_key(scope["app"].state.settings, authorization)
                except ApiError as error:
                    return error
                return None
        return None

    @staticmethod
    def _declared_error(scope: Scope, limit: int) -> ApiError | None:
        size = dict(scope["headers"]).get(b"content-length", b"")
        return _too_large(limit) if size.isdigit() and int(size) > limit else None

    async def _refuse(self, scope: Scope, receive: Receive, send: Send, error: ApiError) -> None:
        """Answer and hang up: the rest of the body is never read, so the client should stop sending it
        (and whatever it sends next is not taken for a new request)."""
        headers = {**error.headers, "Connection": "close"}
        await JSONResponse(error.body(), status_code=error.status, headers=headers)(scope, receive, send)
        self._count(scope, error.status)

    @staticmethod
    def _count(scope: Scope, status: int) -> None:
        metrics = getattr(scope["app"].state, "metrics", None)
        if metrics is not None:
            metrics.errors.labels(TYPES.get(status, "internal_error")).inc()


def _too_large(limit: int) -> ApiError:
    return ApiError(413, f"request body is larger than {limit} bytes")
