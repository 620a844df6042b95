"""What the routes depend on: the :class:`Service` (settings, store, pools, models, metrics) and
the FastAPI dependencies that hand out its parts: API-key checks, the store, a collection by name.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Annotated, Callable, ParamSpec, TypeVar

import numpy as np
from fastapi import Depends, Path as PathParam, Request

from lsr.index.sparse import SparseBatch

from .collection import Collection, CollectionStore, MergePolicy
from .config import Settings
from .encoders import ModelRegistry, ModelUnavailable
from .errors import ApiError
from .metrics import Metrics

log = logging.getLogger(__name__)

P = ParamSpec("P")
T = TypeVar("T")


class Service:
    """One running service: its settings, the collection store, thread pools, models and metrics."""

    def __init__(self, settings: Settings, store: CollectionStore | None = None):
        self.settings = settings
        self.limits = settings.limits
        lim = settings.limits
        self.models = ModelRegistry(settings.model, allow_load=settings.load_models, batch_max=lim.query_batch_max,
                                    batch_wait_ms=lim.query_batch_wait_ms, batch_queue=lim.query_queue,
                                    threads=lim.encoder_threads)
        self.store: CollectionStore | None = store
        self.phase = "loading collections"
        self.load_error: str | None = None
        self.search_pool = ThreadPoolExecutor(max_workers=max(1, settings.threads), thread_name_prefix="lsr-search")
        self.write_pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="lsr-write")
        self.vocab_cache: dict[str, tuple[list[str] | None, dict[str, int] | None]] = {}
        self.metrics = Metrics(lambda: self.store)
        self._loader: threading.Thread | None = None
        self.on_ready: list[Callable[[], None]] = []  # called once /ready turns ready (e.g. the demo's banner)
        self._hidden = sorted({p for p in self._server_paths() if len(p) > 1}, key=len, reverse=True)

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        log.info("lsr service settings: %s", self.settings.describe())
        self._loader = threading.Thread(target=self._load, name="lsr-load", daemon=True)
        self._loader.start()

    def stop(self) -> None:
        if self._loader is not None:
            self._loader.join(timeout=60)
        if self.store is not None:
            self.store.close()
        self.models.close()
        self.search_pool.shutdown(wait=False)
        self.write_pool.shutdown(wait=False)

    def _load(self) -> None:
        s = self.settings
        try:
            if self.store is None:
                self.store = CollectionStore(s.data_dir, MergePolicy(min_docs=s.merge_min_docs, idle_s=s.merge_idle_s))
            self.store.load_all(mark_ready=False)
            self.phase = "compiling search kernels (first start after install: a minute or two)"
            self._warm_up()  # /ready waits for it: a ready server answers its first query at full speed
            if s.load_models and s.preload_models:
                self.phase = "loading models"
                self._preload_models(self.store)
                self.phase = "warming up (one query per collection)"
                self._warm_queries(self.store)
            self.store.ready = True
            self.store.start_merger(s.merge_interval_s)
        except Exception as exc:  # noqa: BLE001 - shown by /ready and every request, never swallowed
            log.exception("cannot open the data folder %s", s.data_dir)
            self.load_error = f"cannot open the data folder: {self.redact(str(exc))}"
            return
        for callback in self.on_ready:
            callback()

    def _warm_up(self) -> None:
        warm_kernels(self.settings.threads)

    def _preload_models(self, store: CollectionStore) -> None:
        """Load the default model and every collection's model before /ready: a text query never waits for one."""
        names = {c.config.get("model") for c in store.collections.values()} | {self.settings.model}
        for name in sorted(n for n in names if n is not None):
            try:
                self.models.preload(name)
            except ModelUnavailable as exc:  # said by /ready (no `models` entry) and by the queries that need it
                log.warning("%s", exc)

    def _warm_queries(self, store: CollectionStore) -> None:
        """One real text query per collection (tokeniser, first forward pass, the segments' search and the
        stored-text reads), so the first user query after /ready is as fast as the hundredth."""
        loaded = set(self.models.loaded())
        for col in list(store.collections.values()):
            model = col.config.get("model")
            if model not in loaded or len(col) == 0:
                continue
            try:
                queries = self.models.encode_queries(model, ["what is the effect of a warm up query"])
                if queries.dim != col.dim:
                    continue  # a mismatch is the query's 422 to report, not the warm-up's
                view, results = col.search(queries, 10, {}, 1)
                for cand in results[0][:3]:
                    view.document(cand, text=True)
                    view.vector(cand)
            except Exception:  # noqa: BLE001 - logged; the same error answers the first real query of it
                log.exception("warm-up query on collection %s failed", col.name)

    # ------------------------------------------------------------------ helpers
    def ready_store(self) -> CollectionStore:
        st = self.store
        if st is None or not st.ready:
            if self.load_error:
                raise ApiError(503, "not_ready", self.load_error)
            raise ApiError(503, "not_ready", f"not ready yet ({self.phase}); retry when GET /ready says ready",
                           {"retry-after": "1"})
        return st

    async def run(self, pool: ThreadPoolExecutor, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(pool, lambda: fn(*args, **kwargs))

    def col_vocab(self, col: Collection) -> tuple[list[str] | None, dict[str, int] | None]:
        hit = self.vocab_cache.get(col.name)
        if hit is not None:
            return hit
        model = col.config.get("model")
        if model is None:
            out: tuple[list[str] | None, dict[str, int] | None] = (None, None)
        else:
            vocab = self.models.vocab(model)
            out = (vocab, {t: i for i, t in enumerate(vocab)})
        self.vocab_cache[col.name] = out
        return out

    def _server_paths(self) -> list[str]:
        out = []
        for p in (Path(self.settings.data_dir), Path.home()):
            out += [str(p), str(p.resolve())]
        try:
            from lsr.models.hub import cache_dir

            out.append(str(cache_dir()))
        except ImportError:
            pass
        return out

    def redact(self, message: str) -> str:
        """A message for a client: server folders (data, model cache, home) replaced by placeholders."""
        for p in self._hidden:
            message = message.replace(p, "<server path>")
        return message


def warm_kernels(threads: int) -> None:
    """Compile (or load from Numba's on-disk cache) the Seismic and exact kernels, build and search, on toy
    data: run before /ready so no user query pays for it."""
    from lsr.index import ExactIndex, SeismicIndex

    rng = np.random.default_rng(0)
    rows = [{int(t): 1.0 for t in rng.choice(64, 4, replace=False)} for _ in range(32)]
    docs = SparseBatch.from_dicts(rows, dim=64)
    idx = SeismicIndex.build(docs, None)
    idx.search(docs[:1], k=3, threads=1)
    idx.search(docs[:4], k=3, threads=threads)
    exact = ExactIndex.build(docs, None)  # scores a collection's fresh (not yet merged) documents
    exact.search(docs[:1], k=3, threads=1)
    exact.search(docs[:4], k=3, threads=threads)


# ---------------------------------------------------------------------------- dependencies
def get_service(request: Request) -> Service:
    svc: Service = request.app.state.service
    return svc


Svc = Annotated[Service, Depends(get_service)]


def _check_key(request: Request, svc: Service) -> None:
    key = request.headers.get("x-api-key")
    if key is None:
        auth = request.headers.get("authorization", "")
        if auth.lower().startswith("bearer "):
            key = auth[7:].strip()
    if not key:
        raise ApiError(401, "unauthorized", "missing API key: send it in the X-API-Key header")
    ok = False
    for k in svc.settings.api_keys:  # compare against every key, constant time each
        ok |= hmac.compare_digest(key.encode("utf-8", "surrogatepass"), k.encode())
    if not ok:
        raise ApiError(403, "forbidden", "wrong API key")


# async: a sync dependency would cost a worker-thread hop per request
async def write_key(request: Request, svc: Svc) -> None:
    """Writes and collection management always need an API key."""
    _check_key(request, svc)


async def read_key(request: Request, svc: Svc) -> None:
    """Reads (and /metrics, /openapi.json, /docs) need one with ``--read-requires-key``."""
    if svc.settings.read_requires_key:
        _check_key(request, svc)


async def get_store(svc: Svc) -> CollectionStore:
    return svc.ready_store()


Store = Annotated[CollectionStore, Depends(get_store)]
NamePath = PathParam(..., description="collection name", max_length=200)


async def get_collection(store: Store, name: str = NamePath) -> Collection:
    return store.get(name)


Col = Annotated[Collection, Depends(get_collection)]
