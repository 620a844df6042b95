"""The FastAPI app: collections, documents, search, encode, health, readiness and metrics.

Searches, encoding and writes run on thread pools off the event loop; every bad input is a 4xx
JSON ``{"error", "detail"}``. Build it with :func:`create_app` (``lsr-serve`` does).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Any, Callable

import numpy as np
from fastapi import Depends, FastAPI, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from starlette.exceptions import HTTPException as StarletteHTTPException

from lsr.index.sparse import SparseBatch, SparseBatchError

from . import schemas as S
from .collection import Collection, CollectionError, CollectionStore, DocIn, MergePolicy
from .config import Settings
from .encoders import ModelRegistry, ModelUnavailable

log = logging.getLogger(__name__)

ERRORS = {
    400: {"model": S.Error, "description": "bad request"},
    401: {"model": S.Error, "description": "API key missing"},
    403: {"model": S.Error, "description": "API key wrong"},
    404: {"model": S.Error, "description": "not found"},
    413: {"model": S.Error, "description": "request body too large"},
    422: {"model": S.Error, "description": "invalid input"},
}
NamePath = Path(..., description="collection name", max_length=200)


class ApiError(Exception):
    def __init__(self, status: int, error: str, detail: str):
        self.status, self.error, self.detail = status, error, detail


def _json(content) -> Response:
    return Response(json.dumps(content, ensure_ascii=False, allow_nan=False), media_type="application/json")


def _err(status: int, error: str, detail: str) -> JSONResponse:
    return JSONResponse({"error": error, "detail": detail}, status_code=status)


# ---------------------------------------------------------------------------- ASGI middleware
class GuardMiddleware:
    """Body-size limit and per-route Prometheus metrics, as plain ASGI (cheaper than BaseHTTPMiddleware)."""

    def __init__(self, app, *, max_body: int, requests: Counter, latency: Histogram):
        self.app = app
        self.max_body = max_body
        self.requests = requests
        self.latency = latency

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        t0 = time.perf_counter()
        status_box = [500]

        async def send_wrapper(message):
            if message["type"] == "http.response.start":
                status_box[0] = message["status"]
            await send(message)

        try:
            too_big = False
            for name, value in scope.get("headers", []):
                if name == b"content-length":
                    try:
                        too_big = int(value) > self.max_body
                    except ValueError:
                        too_big = False
            if too_big:
                await self._reject(send_wrapper)
                return
            if scope["method"] in ("POST", "PUT", "PATCH", "DELETE"):
                chunks, total, more = [], 0, True
                while more:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        return
                    body = message.get("body", b"")
                    total += len(body)
                    if total > self.max_body:
                        await self._reject(send_wrapper)
                        return
                    chunks.append(body)
                    more = message.get("more_body", False)
                whole = b"".join(chunks)
                sent = [False]

                async def replay():
                    if not sent[0]:
                        sent[0] = True
                        return {"type": "http.request", "body": whole, "more_body": False}
                    return await receive()

                await self.app(scope, replay, send_wrapper)
            else:
                await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            label = getattr(route, "path", None) or "unmatched"
            self.requests.labels(scope["method"], label, str(status_box[0])).inc()
            self.latency.labels(scope["method"], label).observe(time.perf_counter() - t0)

    async def _reject(self, send):
        body = json.dumps({"error": "body_too_large", "detail": f"request body exceeds {self.max_body} bytes"}).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


class CollectionMetrics:
    """Prometheus collector reading documents and bytes per collection at scrape time."""

    def __init__(self, store_ref: Callable[[], CollectionStore | None]):
        self.store_ref = store_ref

    def collect(self):
        docs = GaugeMetricFamily("lsr_collection_documents", "live documents per collection", labels=["collection"])
        fresh = GaugeMetricFamily("lsr_collection_fresh_documents", "documents not yet merged", labels=["collection"])
        size = GaugeMetricFamily("lsr_collection_bytes", "bytes on disk per collection", labels=["collection"])
        segs = GaugeMetricFamily("lsr_collection_segments", "sealed segments per collection", labels=["collection"])
        store = self.store_ref()
        if store is not None:
            for name, col in list(store.collections.items()):
                st = col.stats()
                docs.add_metric([name], st["documents"])
                fresh.add_metric([name], st["fresh_documents"])
                size.add_metric([name], st["bytes"])
                segs.add_metric([name], len(st["segments"]))
        yield docs
        yield fresh
        yield size
        yield segs


# ---------------------------------------------------------------------------- app
def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    limits = settings.limits
    models = ModelRegistry(settings.model, allow_load=settings.load_models)
    state: dict[str, Any] = {"store": None}
    search_pool = ThreadPoolExecutor(max_workers=max(1, settings.threads), thread_name_prefix="lsr-search")
    write_pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="lsr-write")
    vocab_cache: dict[str, tuple[list[str] | None, dict[str, int] | None]] = {}

    registry = CollectorRegistry()
    requests_total = Counter("lsr_requests", "HTTP requests", ["method", "route", "status"], registry=registry)
    latency = Histogram(
        "lsr_request_duration_seconds", "request latency", ["method", "route"], registry=registry,
        buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
    )
    registry.register(CollectionMetrics(lambda: state["store"]))

    def _load():
        try:
            store = CollectionStore(
                settings.data_dir,
                MergePolicy(min_docs=settings.merge_min_docs, idle_s=settings.merge_idle_s),
            )
            state["store"] = store
            store.load_all(verify=settings.verify_on_load, mark_ready=False)
            state["phase"] = "compiling search kernels (first start after install: a minute or two)"
            _warm_up()  # /ready waits for it: a ready server answers its first query at full speed
            store.ready = True
            store.start_merger(settings.merge_interval_s)
            if settings.load_models and settings.preload_models:  # encoders text queries will need
                for name in sorted({c.config.get("model") for c in store.collections.values()} - {None}):
                    try:
                        models.encoder(name)
                    except ModelUnavailable as exc:
                        log.warning("%s", exc)
        except Exception as exc:
            log.exception("cannot open the data folder %s", settings.data_dir)
            state["load_error"] = str(exc)

    def _warm_up():
        # Compile (or load from Numba's cache) the Seismic kernels now rather than on a user's first query.
        try:
            from lsr.service.segment import _seismic

            seismic = _seismic()
            if seismic is None:
                return
            rng = np.random.default_rng(0)
            rows = [{int(t): 1.0 for t in rng.choice(64, 4, replace=False)} for _ in range(32)]
            docs = SparseBatch.from_dicts(rows, dim=64)
            idx = seismic.build(docs, None)
            idx.search(docs[:1], k=3, threads=1)
            idx.search(docs[:4], k=3, threads=settings.threads)
        except Exception:
            log.warning("Seismic warm-up failed", exc_info=True)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        log.info("lsr service settings: %s", settings.describe())
        loader = threading.Thread(target=_load, name="lsr-load", daemon=True)
        loader.start()
        yield
        loader.join(timeout=60)
        if state["store"] is not None:
            state["store"].close()
        search_pool.shutdown(wait=False)
        write_pool.shutdown(wait=False)

    app = FastAPI(
        title="lsr search service",
        version="1",
        description="Learned sparse retrieval over durable collections (Seismic segments + a write-ahead log).",
        lifespan=lifespan,
    )
    app.add_middleware(GuardMiddleware, max_body=limits.max_body_bytes, requests=requests_total, latency=latency)

    # ------------------------------------------------------------------ errors
    @app.exception_handler(ApiError)
    async def _api_error(request, exc: ApiError):
        return _err(exc.status, exc.error, exc.detail)

    @app.exception_handler(CollectionError)
    async def _col_error(request, exc: CollectionError):
        kind = {404: "not_found", 409: "conflict"}.get(exc.status, "invalid")
        return _err(exc.status, kind, str(exc))

    @app.exception_handler(SparseBatchError)
    async def _sparse_error(request, exc):
        return _err(422, "invalid_vector", str(exc))

    @app.exception_handler(ModelUnavailable)
    async def _model_error(request, exc):
        return _err(422, "model_unavailable", str(exc))

    @app.exception_handler(RequestValidationError)
    async def _validation(request, exc: RequestValidationError):
        parts = []
        for e in exc.errors()[:10]:
            loc = ".".join(str(x) for x in e.get("loc", ()))
            parts.append(f"{loc}: {e.get('msg')}")
        return _err(422, "validation_error", "; ".join(parts) or "invalid request")

    @app.exception_handler(StarletteHTTPException)
    async def _http(request, exc: StarletteHTTPException):
        kind = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return _err(exc.status_code, kind, str(exc.detail))

    @app.exception_handler(Exception)
    async def _crash(request, exc):
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return _err(500, "internal", f"internal error ({type(exc).__name__}); this is a bug")

    # ------------------------------------------------------------------ dependencies
    def _check_key(request: Request) -> None:
        key = request.headers.get("x-api-key")
        if key is None:
            auth = request.headers.get("authorization", "")
            if auth.lower().startswith("bearer "):
                key = auth[7:].strip()
        if not key:
            raise ApiError(401, "unauthorized", "missing API key: send it in the X-API-Key header")
        ok = False
        for k in settings.api_keys:  # compare against every key, constant time each
            ok |= hmac.compare_digest(key.encode("utf-8", "surrogatepass"), k.encode())
        if not ok:
            raise ApiError(403, "forbidden", "wrong API key")

    # async: a sync dependency would cost a worker-thread hop per request
    async def write_key(request: Request) -> None:
        _check_key(request)

    async def read_key(request: Request) -> None:
        if settings.read_requires_key:
            _check_key(request)

    def store() -> CollectionStore:
        st = state["store"]
        if st is None or not st.ready:
            raise ApiError(422 if "load_error" in state else 409, "not_ready",
                           state.get("load_error") or f"not ready yet ({state.get('phase', 'loading collections')}); "
                                                      "retry when GET /ready says ready")
        return st

    async def run(pool, fn, *args, **kwargs):
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(pool, lambda: fn(*args, **kwargs))

    # ------------------------------------------------------------------ helpers
    def col_vocab(col: Collection) -> tuple[list[str] | None, dict[str, int] | None]:
        hit = vocab_cache.get(col.name)
        if hit is not None:
            return hit
        model = col.config.get("model")
        if model is None:
            out = (None, None)
        else:
            vocab = models.vocab(model)
            out = (vocab, {t: i for i, t in enumerate(vocab)})
        vocab_cache[col.name] = out
        return out

    def to_vector(col: Collection, item, what: str) -> tuple[np.ndarray, np.ndarray] | None:
        if item.vector is not None and item.vector_ids is not None:
            raise ApiError(422, "invalid", f"{what}: give either vector or vector_ids, not both")
        pairs: dict[int, float] = {}
        if item.vector is not None:
            vocab, lookup = col_vocab(col)
            for tok, w in item.vector.items():
                if lookup is not None:
                    tid = lookup.get(tok)
                    if tid is None:
                        raise ApiError(422, "invalid_vector", f"{what}: token {tok!r} is not in the collection's vocabulary")
                else:
                    try:
                        tid = int(tok)
                    except ValueError:
                        raise ApiError(
                            422, "invalid_vector",
                            f"{what}: token {tok!r} given but collection {col.name!r} has no model vocabulary; "
                            "use term ids",
                        ) from None
                pairs[tid] = pairs.get(tid, 0.0) + float(w)
        elif item.vector_ids is not None:
            pairs = item.vector_ids  # pydantic gave int keys and finite float weights
        else:
            return None
        n = len(pairs)
        if n > limits.max_terms:
            raise ApiError(422, "invalid_vector", f"{what}: {n} terms exceed the limit of {limits.max_terms}")
        ids = np.fromiter(pairs.keys(), np.int64, n)
        w = np.fromiter(pairs.values(), np.float64, n)
        if n and (ids.min() < 0 or ids.max() >= col.dim):
            bad = int(ids[(ids < 0) | (ids >= col.dim)][0])
            raise ApiError(422, "invalid_vector", f"{what}: term id {bad} outside the vocabulary [0, {col.dim})")
        if not np.isfinite(w).all():
            raise ApiError(422, "invalid_vector", f"{what}: weights must be finite")
        keep = w > 0
        ids, w = ids[keep], w[keep]
        order = np.argsort(ids, kind="stable")
        return ids[order].astype(np.int32), w[order].astype(np.float32)

    def check_batch(n: int, limit: int, what: str) -> None:
        if n > limit:
            raise ApiError(422, "batch_too_large", f"{n} {what} exceed the batch limit of {limit}")

    def check_text(text: str | None, what: str) -> None:
        if text is not None and len(text) > limits.max_text_chars:
            raise ApiError(422, "text_too_long", f"{what}: text has {len(text)} characters, limit {limits.max_text_chars}")

    def need_model(col: Collection, what: str) -> str:
        model = col.config.get("model")
        if model is None:
            raise ApiError(422, "no_model", f"{what}: collection {col.name!r} has no model; send vector or vector_ids")
        return model

    def queries_batch(col: Collection, queries: list) -> SparseBatch:
        vecs: list = [None] * len(queries)
        texts, where = [], []
        for i, q in enumerate(queries):
            what = f"queries[{i}]" if len(queries) > 1 else "query"
            check_text(q.text, what)
            v = to_vector(col, q, what)
            if v is not None and q.text is not None:
                raise ApiError(422, "invalid", f"{what}: give text or a vector, not both")
            if v is None:
                if q.text is None:
                    raise ApiError(422, "invalid", f"{what}: give text, vector or vector_ids")
                texts.append(q.text)
                where.append(i)
            vecs[i] = v
        if texts:
            model = need_model(col, "query")
            enc = models.encode(model, texts, queries=True)
            enc.check_dim(col.dim, "encoded queries")
            for j, i in enumerate(where):
                idx, val = enc.row(j)
                vecs[i] = (idx.astype(np.int32), val.astype(np.float32))
        lens = [v[0].size for v in vecs]
        indptr = np.concatenate([[0], np.cumsum(lens)]).astype(np.int64)
        ind = np.concatenate([v[0] for v in vecs]).astype(np.int32) if sum(lens) else np.zeros(0, np.int32)
        val = np.concatenate([v[1] for v in vecs]).astype(np.float32) if sum(lens) else np.zeros(0, np.float32)
        return SparseBatch(indptr, ind, val, col.dim)

    def do_search(col: Collection, queries: list, knobs: S.Knobs, threads: int) -> list[dict]:
        t0 = time.perf_counter()
        if knobs.k > limits.max_k:
            raise ApiError(422, "invalid", f"k={knobs.k} exceeds the limit of {limits.max_k}")
        qb = queries_batch(col, queries)
        view, results = col.search(qb, knobs.k, {"query_cut": knobs.query_cut, "heap_factor": knobs.heap_factor},
                                   threads)
        vocab = col_vocab(col)[0] if knobs.explain else None
        took = (time.perf_counter() - t0) * 1000
        out = []
        for qi, cands in enumerate(results):
            hits = []
            q_idx, q_val = qb.row(qi)
            for c in cands:
                doc = view.document(c, text=knobs.include_text)
                # plain dicts: the response is serialised once, not re-validated (latency)
                hit = {"id": c.id, "score": c.score, "metadata": doc.get("metadata"),
                       "text": doc.get("text") if knobs.include_text else None}
                if knobs.explain:
                    d_idx, d_val = view.vector(c)
                    common, qi_pos, di_pos = np.intersect1d(q_idx, d_idx, assume_unique=True, return_indices=True)
                    contrib = q_val[qi_pos].astype(np.float64) * d_val[di_pos].astype(np.float64)
                    order = np.argsort(-contrib, kind="stable")
                    terms = [
                        {"term": vocab[int(common[j])] if vocab is not None else str(int(common[j])),
                         "term_id": int(common[j]), "query_weight": float(q_val[qi_pos[j]]),
                         "doc_weight": float(d_val[di_pos[j]]), "contribution": float(contrib[j])}
                        for j in order
                    ]
                    exact = float(contrib.sum())
                    hit["explanation"] = {"score": exact, "terms": terms}
                    hit["score"] = exact  # exact re-score from the stored vectors: contributions sum to it
                hits.append(hit)
            if knobs.explain:
                hits.sort(key=lambda h: (-h["score"], h["id"]))
            out.append({"hits": hits, "took_ms": took})
        return out

    def info(col: Collection) -> S.CollectionInfo:
        st = col.stats()
        return S.CollectionInfo(
            name=col.name, model=col.config.get("model"), dim=col.dim, index=col.config.get("index") or {},
            documents=st["documents"], fresh_documents=st["fresh_documents"],
            segments=[S.SegmentInfo(**{k: v for k, v in s.items()}) for s in st["segments"]],
            bytes=st["bytes"], created_at=col.manifest.get("created_at", 0.0),
        )

    # ------------------------------------------------------------------ routes: health
    @app.get("/health", response_model=S.Health, tags=["health"])
    async def health():
        """Liveness: the process answers."""
        return S.Health(status="ok")

    @app.get("/ready", response_model=S.Health, tags=["health"], responses={503: {"model": S.Health}})
    async def ready():
        """Readiness: 200 once every collection is loaded, 503 before."""
        st = state["store"]
        if st is None or not st.ready:
            return JSONResponse({"status": "loading", "phase": state.get("phase", "loading collections")},
                                status_code=503)
        return S.Health(status="ready", collections=len(st.collections))

    @app.get("/metrics", tags=["health"], response_class=Response)
    async def metrics():
        """Prometheus metrics: requests and latency per route, documents and bytes per collection."""
        data = await run(search_pool, generate_latest, registry)
        return Response(data, media_type=CONTENT_TYPE_LATEST)

    # ------------------------------------------------------------------ routes: collections
    @app.get("/v1/collections", response_model=S.CollectionList, tags=["collections"], responses=ERRORS,
             dependencies=[Depends(read_key)])
    async def list_collections():
        st = store()
        return S.CollectionList(collections=[info(c) for c in list(st.collections.values())])

    @app.post("/v1/collections", response_model=S.CollectionInfo, status_code=201, tags=["collections"],
              responses={**ERRORS, 409: {"model": S.Error, "description": "exists"}},
              dependencies=[Depends(write_key)])
    async def create_collection(req: S.CollectionCreate):
        """Create a collection. `model` omitted: the server's default model; `model: null`: vectors only."""
        st = store()
        model = req.model if "model" in req.model_fields_set else settings.model
        dim = req.dim
        if model is not None:
            vocab = await run(write_pool, models.vocab, model)
            if dim is not None and dim != len(vocab):
                raise ApiError(422, "invalid", f"dim={dim} but model {model!r} has a vocabulary of {len(vocab)}")
            dim = len(vocab)
        elif dim is None:
            raise ApiError(422, "invalid", "a collection without a model needs dim (the vocabulary size)")
        config = {"model": model, "dim": dim, "index": req.index.model_dump(exclude_none=True)}
        col = await run(write_pool, st.create, req.name, config)
        vocab_cache.pop(col.name, None)
        return info(col)

    @app.get("/v1/collections/{name}", response_model=S.CollectionInfo, tags=["collections"], responses=ERRORS,
             dependencies=[Depends(read_key)])
    async def describe_collection(name: str = NamePath):
        return info(store().get(name))

    @app.delete("/v1/collections/{name}", response_model=S.Deleted, tags=["collections"], responses=ERRORS,
                dependencies=[Depends(write_key)])
    async def delete_collection(name: str = NamePath):
        st = store()
        st.get(name)
        await run(write_pool, st.delete, name)
        vocab_cache.pop(name, None)
        return S.Deleted(deleted=name)

    @app.post("/v1/collections/{name}/merge", response_model=S.MergeResult, tags=["collections"], responses=ERRORS,
              dependencies=[Depends(write_key)])
    async def merge_collection(name: str = NamePath, compact: bool = Query(False)):
        """Fold fresh documents into a new Seismic segment now (and all segments into one with compact)."""
        col = store().get(name)
        merged = await run(write_pool, col.merge, force=True, compact=compact or None)
        return S.MergeResult(merged=merged, collection=info(col))

    # ------------------------------------------------------------------ routes: documents
    @app.post("/v1/collections/{name}/documents", response_model=S.UpsertResult, tags=["documents"],
              responses=ERRORS, dependencies=[Depends(write_key)])
    async def upsert_documents(req: S.DocumentsUpsert, name: str = NamePath):
        """Add or replace documents (by id). Acknowledged once the write is fsynced in the log."""
        col = store().get(name)
        check_batch(len(req.documents), limits.max_batch_documents, "documents")
        docs: list[DocIn] = []
        to_encode: list[int] = []
        seen: dict[str, int] = {}
        for i, d in enumerate(req.documents):
            what = f"documents[{i}]"
            check_text(d.text, what)
            doc_id = str(d.id)
            if doc_id in seen:
                raise ApiError(422, "duplicate_id", f"{what}: id {doc_id!r} repeats documents[{seen[doc_id]}]")
            seen[doc_id] = i
            if d.metadata is not None:
                try:
                    size = len(json.dumps(d.metadata, ensure_ascii=False, allow_nan=False))
                except ValueError:
                    raise ApiError(422, "invalid_metadata", f"{what}: metadata must be plain JSON") from None
                if size > limits.max_metadata_bytes:
                    raise ApiError(422, "metadata_too_large", f"{what}: metadata is {size} bytes, limit "
                                                              f"{limits.max_metadata_bytes}")
            v = to_vector(col, d, what)
            if v is None:
                if d.text is None:
                    raise ApiError(422, "invalid", f"{what}: give text, vector or vector_ids")
                to_encode.append(i)
                v = (np.zeros(0, np.int32), np.zeros(0, np.float32))
            docs.append(DocIn(doc_id, v[0], v[1], d.text, d.metadata))
        if to_encode:
            model = need_model(col, "documents")
            enc = await run(search_pool, models.encode, model, [req.documents[i].text for i in to_encode],
                            queries=False)
            enc.check_dim(col.dim, "encoded documents")
            for j, i in enumerate(to_encode):
                idx, val = enc.row(j)
                docs[i].indices, docs[i].values = idx.astype(np.int32), val.astype(np.float32)
        seq = await run(write_pool, col.upsert, docs)
        return S.UpsertResult(upserted=len(docs), ids=[d.id for d in docs], seq=seq)

    @app.get("/v1/collections/{name}/documents/{doc_id}", response_model=S.Document, tags=["documents"],
             responses=ERRORS, dependencies=[Depends(read_key)])
    async def get_document(name: str = NamePath, doc_id: str = Path(..., max_length=512),
                           vector: bool = Query(False, description="include the stored sparse vector")):
        col = store().get(name)
        doc = col.get(doc_id, with_vector=vector)
        if doc is None:
            raise ApiError(404, "not_found", f"document {doc_id!r} not found in collection {name!r}")
        if vector:
            vocab = col_vocab(col)[0]
            doc["vector"] = {(vocab[t] if vocab is not None else str(t)): w for t, w in doc["vector"].items()}
        return S.Document(**doc)

    @app.delete("/v1/collections/{name}/documents/{doc_id}", response_model=S.DeleteResult, tags=["documents"],
                responses=ERRORS, dependencies=[Depends(write_key)])
    async def delete_document(name: str = NamePath, doc_id: str = Path(..., max_length=512)):
        col = store().get(name)
        deleted, missing = await run(write_pool, col.delete, [doc_id])
        if not deleted:
            raise ApiError(404, "not_found", f"document {doc_id!r} not found in collection {name!r}")
        return S.DeleteResult(deleted=deleted, not_found=missing)

    @app.post("/v1/collections/{name}/documents/delete", response_model=S.DeleteResult, tags=["documents"],
              responses=ERRORS, dependencies=[Depends(write_key)])
    async def delete_documents(req: S.DeleteRequest, name: str = NamePath):
        """Delete a batch of documents by id; ids not present are listed in not_found."""
        col = store().get(name)
        deleted, missing = await run(write_pool, col.delete, [str(i) for i in req.ids])
        return S.DeleteResult(deleted=deleted, not_found=missing)

    # ------------------------------------------------------------------ routes: search
    @app.post("/v1/collections/{name}/search", response_model=S.SearchResponse, tags=["search"],
              responses=ERRORS, dependencies=[Depends(read_key)])
    async def search(req: S.SearchRequest, name: str = NamePath):
        """Search by text (encoded with the collection's model) or by a sparse vector."""
        col = store().get(name)
        q = S.QueryIn(text=req.text, vector=req.vector, vector_ids=req.vector_ids)
        res = await run(search_pool, do_search, col, [q], req, 1)
        return _json(res[0])

    @app.post("/v1/collections/{name}/search/batch", response_model=S.BatchSearchResponse, tags=["search"],
              responses=ERRORS, dependencies=[Depends(read_key)])
    async def search_batch(req: S.BatchSearchRequest, name: str = NamePath):
        col = store().get(name)
        check_batch(len(req.queries), limits.max_batch_queries, "queries")
        t0 = time.perf_counter()
        res = await run(search_pool, do_search, col, req.queries, req, settings.threads)
        return _json({"results": res, "took_ms": (time.perf_counter() - t0) * 1000})

    # ------------------------------------------------------------------ routes: encode
    @app.post("/v1/encode", response_model=S.EncodeResponse, tags=["encode"], responses=ERRORS,
              dependencies=[Depends(read_key)])
    async def encode(req: S.EncodeRequest):
        """Encode texts into {token: weight} with the default model or one a collection uses."""
        model = req.model or settings.model
        if model is None:
            raise ApiError(422, "no_model", "this server has no default model; name one")
        st = state["store"]
        served = {settings.model} | ({c.config.get("model") for c in st.collections.values()} if st else set())
        if model not in served:
            raise ApiError(422, "model_unavailable", f"model {model!r} is not served here (served: "
                                                     f"{sorted(m for m in served if m)})")
        for i, t in enumerate(req.texts):
            check_text(t, f"texts[{i}]")
        batch = await run(search_pool, models.encode, model, list(req.texts), queries=req.kind == "query")
        if req.top_k is not None:
            batch = batch.prune(top_k=req.top_k)
        vecs = []
        for idx, val in batch:
            pairs = sorted(zip(idx.tolist(), val.tolist()), key=lambda p: -p[1])
            vecs.append({(batch.vocab[t] if batch.vocab is not None else str(t)): w for t, w in pairs})
        return S.EncodeResponse(model=model, vectors=vecs)

    app.state.settings = settings
    app.state.service = state
    app.state.models = models
    return app
