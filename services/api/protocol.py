"""uvicorn's HTTP/1.1 protocol with a deadline on every request's head.

uvicorn closes a keep-alive connection that stays idle, but not one that sends a request line and
headers a byte at a time: a thousand such clients would hold a thousand sockets for as long as
they like. Here each request's head (request line and headers) must arrive within
`header_timeout_s` of the connection opening, or of the previous response; otherwise the
connection is closed.
"""

import asyncio
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol


def with_head_deadline(timeout_s: float) -> type[H11Protocol]:
    """An H11Protocol class whose connections close when a request's head is not in within timeout_s."""

    class HeadDeadline(H11Protocol):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.head_deadline: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self.conn.their_state is not h11.IDLE:  # the head is in: the route's own limits take over
                self._disarm()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():
                self._arm()  # the next request on this connection has its own deadline

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _arm(self) -> None:
            self._disarm()
            self.head_deadline = self.loop.call_later(timeout_s, self._late)

        def _disarm(self) -> None:
            if self.head_deadline is not None:
                self.head_deadline.cancel()
                self.head_deadline = None

        def _late(self) -> None:
            self.head_deadline = None
            if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
                self.transport.close()

    return HeadDeadline
