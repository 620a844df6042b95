"""The FastAPI app factory: wires the routers (service/routers/), the dependencies' :class:`Service`
(service/deps.py), the error handlers and guard middleware (service/errors.py) and the lifespan.

Searches, encoding and writes run on thread pools off the event loop; every bad input is a 4xx
JSON ``{"error", "detail"}``. ``lsr serve`` runs it on uvicorn with the connection limits of
service/server.py.
"""

from __future__ import annotations

import os
from contextlib import asynccontextmanager
from typing import AsyncIterator

from fastapi import FastAPI

from .collection import CollectionStore
from .config import Settings
from .deps import Service
from .errors import GuardMiddleware, install_error_handlers
from .routers import collections, documents, encode, ops, search, ui


def create_app(settings: Settings | None = None, *, store: CollectionStore | None = None) -> FastAPI:
    """The app for ``settings``; ``store`` is an already opened (locked) data folder, else opened at start."""
    svc = Service(settings or Settings(), store)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        svc.start()
        yield
        svc.stop()

    app = FastAPI(
        title="lsr search service",
        version="1",
        description="Learned sparse retrieval over durable collections (Seismic segments + a write-ahead log).",
        lifespan=lifespan,
        openapi_url=None,  # served by the ops router, behind the read key when reads need one
        docs_url=None,
        redoc_url=None,
    )
    app.state.service = svc
    lim = svc.limits
    m = svc.metrics
    app.add_middleware(GuardMiddleware, max_body=lim.max_body_bytes, max_in_flight=lim.max_in_flight,
                       retry_after=lim.retry_after_s, requests=m.requests, latency=m.latency,
                       in_flight=m.in_flight, shed=m.shed)
    install_error_handlers(app, svc.redact)
    for module in (ops, collections, documents, search, encode, ui):
        app.include_router(module.router)
    if svc.settings.cors_origins:  # browsers on other origins are refused unless named here
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=list(svc.settings.cors_origins), allow_methods=["*"],
                           allow_headers=["content-type", "x-api-key", "authorization"], max_age=600)
    if os.environ.get("LSR_TEST_ROUTES") == "1":
        app.include_router(ops.test_router)
    return app
