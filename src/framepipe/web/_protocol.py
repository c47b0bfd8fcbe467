"""The HTTP/1.1 protocol the web view serves with: uvicorn's h11 protocol, with a deadline.

uvicorn closes a kept-alive connection that stays idle, but not one that never
sends a request, nor one that sends its headers a byte at a time: such
connections would hold their place forever, and enough of them lock every
viewer out. Here every request must arrive whole (request line and headers)
within ``request_timeout`` seconds of the connection opening, or of the
previous response; otherwise the connection is closed. Streams that are being
answered are not affected. None of this touches the pipeline: the server runs
in its own thread and event loop.
"""

from __future__ import annotations

import asyncio
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

#: Seconds a client has to send a whole request (line and headers).
REQUEST_TIMEOUT = 10.0


class DeadlineH11Protocol(H11Protocol):
    """``H11Protocol`` that closes connections whose next request does not come in time."""

    request_timeout = REQUEST_TIMEOUT

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE:  # a whole request came: it is answered
            self._disarm()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing() and self.conn.their_state is h11.IDLE:
            self._arm()  # the next request on this connection has the same deadline

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(self.request_timeout, self._expired)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expired(self) -> None:
        self._deadline = None
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self.transport.close()
