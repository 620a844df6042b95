"""Errors and middleware of the HTTP edge: every failure is a JSON ``{"error", "detail"}``.

:func:`install_error_handlers` maps lsr's exceptions to status codes; :class:`GuardMiddleware`
caps request bodies and requests in flight (503 + Retry-After past the cap) and records each
request in the Prometheus metrics (a client that hung up is a 499, not a 500).
"""

from __future__ import annotations

import json
import logging
import time
from typing import Callable

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.requests import Request
from prometheus_client import Counter, Gauge, Histogram
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from lsr.index.sparse import SparseBatchError

from .collection import CollectionError, CollectionFailed, StorageFull
from .encoders import EncoderBusy, ModelUnavailable

log = logging.getLogger(__name__)

# Never shed these: an overloaded server must still say it is alive and be scraped.
UNSHED = frozenset({"/health", "/ready", "/metrics"})


class ApiError(Exception):
    """A request error with its status, a machine-readable kind and a message for the client."""

    def __init__(self, status: int, error: str, detail: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status, self.error, self.detail, self.headers = status, error, detail, headers


def error_response(status: int, error: str, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": error, "detail": detail}, status_code=status, headers=headers)


def install_error_handlers(app: FastAPI, redact: Callable[[str], str] = lambda s: s) -> None:
    """Map exceptions to JSON errors; ``redact`` strips server paths from messages."""

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status, exc.error, redact(exc.detail), exc.headers)

    @app.exception_handler(CollectionError)
    async def _col_error(request: Request, exc: CollectionError) -> JSONResponse:
        # the status is the exception's own (CollectionFailed 503, StorageFull 507); only the kind is named here
        if isinstance(exc, CollectionFailed):
            kind = "collection_failed"
        elif isinstance(exc, StorageFull):
            kind = "storage_full"
        else:
            kind = {404: "not_found", 409: "conflict"}.get(exc.status, "invalid")
        return error_response(exc.status, kind, redact(str(exc)))

    @app.exception_handler(SparseBatchError)
    async def _sparse_error(request: Request, exc: SparseBatchError) -> JSONResponse:
        return error_response(422, "invalid_vector", redact(str(exc)))

    @app.exception_handler(ModelUnavailable)
    async def _model_error(request: Request, exc: ModelUnavailable) -> JSONResponse:
        return error_response(422, "model_unavailable", redact(str(exc)))

    @app.exception_handler(EncoderBusy)
    async def _busy(request: Request, exc: EncoderBusy) -> JSONResponse:
        return error_response(503, "overloaded", str(exc), {"retry-after": "1"})

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        parts: list[str] = []
        for e in exc.errors()[:10]:
            loc = ".".join(str(x) for x in e.get("loc", ()))
            msg = str(e.get("msg")).encode("utf-8", "backslashreplace").decode()
            parts.append(f"{loc}: {msg}")
        return error_response(422, "validation_error", "; ".join(parts) or "invalid request")

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        kind = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return error_response(exc.status_code, kind, str(exc.detail))

    @app.exception_handler(Exception)
    async def _crash(request: Request, exc: Exception) -> JSONResponse:
        log.error("unhandled error on %s %s (status 500)", request.method, request.url.path, exc_info=exc)
        return error_response(500, "internal", f"internal error ({type(exc).__name__}); this is a bug")


class GuardMiddleware:
    """Body-size limit, load shedding and per-route metrics, as plain ASGI (cheaper than BaseHTTPMiddleware)."""

    def __init__(self, app: ASGIApp, *, max_body: int, max_in_flight: int, retry_after: int, requests: Counter,
                 latency: Histogram, in_flight: Gauge, shed: Counter) -> None:
        self.app = app
        self.max_body = max_body
        self.max_in_flight = max_in_flight
        self.retry_after = str(retry_after)
        self.requests, self.latency, self.in_flight_gauge, self.shed = requests, latency, in_flight, shed
        self.in_flight = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        t0 = time.perf_counter()
        status_box = [0]
        hung_up = [False]

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                status_box[0] = message["status"]
            await send(message)

        async def receive_wrapper() -> Message:
            message = await receive()
            if message["type"] == "http.disconnect":
                hung_up[0] = True
            return message

        counted = scope["path"] not in UNSHED
        try:
            if counted and self.in_flight >= self.max_in_flight:
                self.shed.inc()
                await self._reply(send_wrapper, 503, "overloaded",
                                  f"more than {self.max_in_flight} requests in flight; retry shortly",
                                  [(b"retry-after", self.retry_after.encode())])
                return
            if counted:
                self.in_flight += 1
                self.in_flight_gauge.set(self.in_flight)
            try:
                await self._handle(scope, receive_wrapper, send_wrapper)
            finally:
                if counted:
                    self.in_flight -= 1
                    self.in_flight_gauge.set(self.in_flight)
        finally:
            route = scope.get("route")
            label = getattr(route, "path", None) or "unmatched"
            status = status_box[0] or (499 if hung_up[0] else 500)
            self.requests.labels(scope["method"], label, str(status)).inc()
            self.latency.labels(scope["method"], label).observe(time.perf_counter() - t0)

    async def _handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    too_big = int(value) > self.max_body
                except ValueError:
                    too_big = False
                if too_big:
                    return await self._too_big(send)
        if scope["method"] not in ("POST", "PUT", "PATCH", "DELETE"):
            return await self.app(scope, receive, send)
        chunks: list[bytes] = []
        total, more = 0, True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return  # counted as 499
            body = message.get("body", b"")
            total += len(body)
            if total > self.max_body:
                return await self._too_big(send)
            chunks.append(body)
            more = message.get("more_body", False)
        whole = b"".join(chunks)
        sent = [False]

        async def replay() -> Message:
            if not sent[0]:
                sent[0] = True
                return {"type": "http.request", "body": whole, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _too_big(self, send: Send) -> None:
        await self._reply(send, 413, "body_too_large", f"request body exceeds {self.max_body} bytes")

    @staticmethod
    async def _reply(send: Send, status: int, error: str, detail: str,
                     headers: list[tuple[bytes, bytes]] | None = None) -> None:
        body = json.dumps({"error": error, "detail": detail}).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                *(headers or [])]})
        await send({"type": "http.response.body", "body": body})

