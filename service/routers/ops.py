"""Operations: liveness, readiness, Prometheus metrics, and the API docs (behind the read key when reads need one)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from .. import schemas as S
from ..deps import Svc, read_key

router = APIRouter(tags=["health"])


@router.get("/health", response_model=S.Health, response_model_exclude_none=True)
async def health() -> S.Health:
    """Liveness: the process answers."""
    return S.Health(status="ok")


@router.get("/ready", response_model=S.Health, response_model_exclude_none=True, responses={503: {"model": S.Health}})
async def ready(svc: Svc) -> S.Health | JSONResponse:
    """Readiness: 503 while loading; 200 `ready` once every collection is open, the default model and the
    collections' models are loaded (`models`) and one warm-up query per collection has run, or 200 `degraded`
    with the `failed` collections and why (the others serve)."""
    st = svc.store
    if svc.load_error:
        return JSONResponse({"status": "failed", "phase": svc.load_error}, status_code=503)
    if st is None or not st.ready:
        return JSONResponse({"status": "loading", "phase": svc.phase}, status_code=503)
    failed = dict(st.failed)
    models = svc.models.loaded()
    if failed:
        return S.Health(status="degraded", collections=len(st.collections), failed=failed, models=models)
    return S.Health(status="ready", collections=len(st.collections), models=models)


@router.get("/metrics", response_class=Response, dependencies=[Depends(read_key)])
async def metrics(svc: Svc) -> Response:
    """Prometheus metrics: requests (499: client hung up), latency, shed requests; per collection documents,
    bytes, log bytes, segments, merge failures; failed collections; whether torch is loaded."""
    data = await svc.run(svc.search_pool, generate_latest, svc.metrics.registry)
    return Response(data, media_type=CONTENT_TYPE_LATEST)


@router.get("/openapi.json", include_in_schema=False, dependencies=[Depends(read_key)])
async def openapi(request: Request) -> JSONResponse:
    return JSONResponse(request.app.openapi())


@router.get("/docs", include_in_schema=False, dependencies=[Depends(read_key)])
async def docs(request: Request) -> HTMLResponse:
    return get_swagger_ui_html(openapi_url="/openapi.json", title=request.app.title + " - docs")


# Mounted only when $LSR_TEST_ROUTES=1: proves that the fuzz test's "no 5xx" check fires.
test_router = APIRouter(tags=["test"])


@test_router.post("/v1/test/crash")
async def crash(req: S.EncodeRequest) -> None:
    """Always fails with a 500 (test servers only)."""
    raise RuntimeError("test route: deliberate crash")
