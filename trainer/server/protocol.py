"""How `trainer serve` runs uvicorn: h11 with a limit on the request head's size and a
deadline for it, so that a slow or stalled client cannot hold connections forever.

uvicorn (0.54) arms its keep-alive timer only after a response: a connection that sends
half a request line, or one byte every few seconds, is never closed. `HeadTimeoutH11`
closes a connection whose request line and headers are not complete within
`header_timeout_s` of the connection (or of the request's first byte). The body has its
own deadline in middleware.BodySizeLimit.
"""

from __future__ import annotations

import asyncio
import logging

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

# Request line plus headers; uvicorn's h11 default is 16 KiB. The API needs far less.
MAX_HEAD_BYTES = 16 * 1024


class HeadTimeoutH11(H11Protocol):
    header_timeout_s = 10.0
    _head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self._arm_head_timer()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.conn.their_state is h11.IDLE:  # the request's head is still incomplete
            self._arm_head_timer()
        else:
            self._cancel_head_timer()

    def connection_lost(self, exc) -> None:
        self._cancel_head_timer()
        super().connection_lost(exc)

    def _arm_head_timer(self) -> None:
        if self._head_timer is None and not self.transport.is_closing():
            self._head_timer = self.loop.call_later(self.header_timeout_s, self._head_timed_out)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            # No request yet, so HTTP has no response to give (h11 would refuse a 408 here).
            self.logger.info("closed a connection whose request head did not arrive within %.0f s",
                             self.header_timeout_s)
            self.transport.close()


class QueryFreeAccessLog(logging.Filter):
    """uvicorn's access line with the path only: a query string may carry a token someone put
    there (`?token=...`), and logs are kept and shared longer than requests."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) == 5 and isinstance(args[2], str):
            record.args = (args[0], args[1], args[2].split("?", 1)[0], *args[3:])
        return True


def drop_query_strings() -> None:
    logger = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, QueryFreeAccessLog) for f in logger.filters):
        logger.addFilter(QueryFreeAccessLog())


def uvicorn_options(settings) -> dict:
    """Keyword arguments of uvicorn.run / uvicorn.Config for these settings."""
    protocol = type("HeadTimeoutH11", (HeadTimeoutH11,), {"header_timeout_s": settings.header_timeout_s})
    return {"http": protocol, "timeout_keep_alive": settings.keep_alive_s,
            "h11_max_incomplete_event_size": MAX_HEAD_BYTES, "server_header": False, "proxy_headers": False}
