"""uvicorn with bounded connections: a request must arrive in time, and open sockets are capped.

uvicorn has no timeout before a request's headers are complete, so clients that send half a
header (slowloris) hold their sockets forever and the process runs out of file descriptors.
:func:`guarded_protocol` subclasses uvicorn's httptools protocol with a header deadline and a
body deadline (408 + close), a cap on the bytes of the request line and headers (431), and answers
a connection past ``max_connections`` with 503 and closes it at once. Requests in flight are capped in the app (service/errors.py).
"""

from __future__ import annotations

import asyncio
import logging
import resource

from starlette.types import ASGIApp
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from .config import Limits

log = logging.getLogger(__name__)


def _raw_response(status: str, detail: str, retry_after: int | None = None) -> bytes:
    body = ('{"error": "%s", "detail": "%s"}' % (status.split(" ", 1)[1].lower().replace(" ", "_"), detail)).encode()
    head = [f"HTTP/1.1 {status}", "content-type: application/json", f"content-length: {len(body)}",
            "connection: close"]
    if retry_after is not None:
        head.append(f"retry-after: {retry_after}")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


def guarded_protocol(limits: Limits) -> type[HttpToolsProtocol]:
    """uvicorn's httptools protocol with the header/body deadlines and the connection cap of ``limits``."""
    header_s, body_s, cap = limits.header_timeout_s, limits.body_timeout_s, limits.max_connections
    max_head = limits.max_header_bytes
    full = _raw_response("503 Service Unavailable", f"more than {cap} open connections; retry shortly",
                         limits.retry_after_s)
    late = _raw_response("408 Request Timeout", "the request did not arrive in time")
    too_long = _raw_response("431 Request Header Fields Too Large", f"request line and headers exceed {max_head} bytes")

    class GuardedHttpToolsProtocol(HttpToolsProtocol):
        _deadline: asyncio.TimerHandle | None = None
        _refused = False
        _head_bytes = 0
        _head_open = True
        _completed = False

        # the base narrows BaseTransport to Transport too (uvicorn ignores [override] the same way)
        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            if len(self.server_state.connections) >= cap:
                self._refused = True
                transport.write(full)
                transport.close()
                return
            super().connection_made(transport)
            self._arm(header_s, headers=True)

        def data_received(self, data: bytes) -> None:
            if self._refused:
                return
            self._completed = False
            super().data_received(data)
            if self._completed:  # this chunk ended a request (its body may be large): not head bytes
                self._head_bytes = 0
            elif self._head_open and not self.transport.is_closing():
                # the parser keeps an unfinished head in memory: within the header deadline a fast
                # sender could still send megabytes of it
                self._head_bytes += len(data)
                if self._head_bytes > max_head:
                    self.transport.write(too_long)
                    self.transport.close()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            if not self._refused:
                super().connection_lost(exc)

        def on_message_begin(self) -> None:
            super().on_message_begin()
            if self._deadline is None:  # the next request on a kept-alive connection
                self._arm(header_s, headers=True)

        def on_headers_complete(self) -> None:
            self._head_open, self._head_bytes = False, 0
            self._disarm()
            super().on_headers_complete()
            if not self.transport.is_closing():
                self._arm(body_s, headers=False)

        def on_message_complete(self) -> None:
            self._head_open = self._completed = True  # whatever comes next on this connection is a new head
            self._disarm()
            super().on_message_complete()

        def _arm(self, seconds: float, *, headers: bool) -> None:
            self._disarm()
            self._deadline = self.loop.call_later(seconds, self._expired, headers)

        def _disarm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _expired(self, headers: bool) -> None:
            self._deadline = None
            if self.transport.is_closing():
                return
            if headers and (self.cycle is None or self.cycle.response_complete):
                self.transport.write(late)  # no response is under way: say why before closing
            self.transport.close()  # a request stuck in its body sees http.disconnect (a 499)

    return GuardedHttpToolsProtocol


def raise_fd_limit(want: int) -> int:
    """Raise the soft limit on open files toward ``want`` (at most the hard limit); returns the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = want if hard == resource.RLIM_INFINITY else min(want, hard)
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    return soft


def run(app: ASGIApp, *, host: str, port: int, limits: Limits, log_level: str = "info") -> None:
    """Serve ``app`` on uvicorn with ``limits``: the connection cap must fit in the process's fd limit."""
    import uvicorn

    fds = raise_fd_limit(limits.max_connections + 256)
    if fds < limits.max_connections + 64:
        log.warning("open-file limit %d is too low for --max-connections %d: capping connections at %d",
                    fds, limits.max_connections, fds - 64)
        limits.max_connections = max(16, fds - 64)
    config = uvicorn.Config(
        app, host=host, port=port, log_level=log_level.lower(), workers=1, timeout_graceful_shutdown=10,
        http=guarded_protocol(limits), timeout_keep_alive=int(max(1, limits.keep_alive_s)),
        backlog=min(4096, limits.max_connections),
    )
    uvicorn.Server(config).run()
