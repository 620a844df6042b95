"""Index a JSONL corpus into a collection: offline into a data folder (:func:`ingest`, no server on it), or
through a running server's REST API (:func:`ingest_http`, ``lsr ingest --url``).

Reads BEIR ``corpus.jsonl[.gz]`` (``_id``, ``title``, ``text``, ``metadata``) or Seismic JSONL
(``id``, ``content``, ``vector``) through :func:`lsr.index.corpus.read_corpus`, the one corpus
reader: documents are encoded by ``doc.full_text`` exactly as evaluation encodes them. Vectors come
from the records, a ``--vectors`` file, or the collection's model. Documents go through the same
validated log as API writes, then one merge seals them.
"""

from __future__ import annotations

import enum
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Sequence

import numpy as np
from tqdm.auto import tqdm

from lsr.index.corpus import Doc, read_corpus
from lsr.index.sparse import SparseBatch, load_vectors

from .collection import CollectionStore, DocIn, MergePolicy, validate_name
from .encoders import ModelRegistry

if TYPE_CHECKING:
    import httpx

log = logging.getLogger(__name__)

class _Unset(enum.Enum):
    UNSET = "unset"


#: ``ingest(model=...)`` default: the existing collection's model, or ``DEFAULT_MODEL`` for a new one.
MODEL_UNSET: Final = _Unset.UNSET
DEFAULT_MODEL = "splade-tiny"


def ingest(
    corpus: str | Path | Sequence[Doc],
    collection: str,
    *,
    data_dir: str | Path = "./lsr-data",
    model: str | None | _Unset = MODEL_UNSET,
    vectors: str | Path | None = None,
    limit: int | None = None,
    batch_size: int = 256,
    dim: int | None = None,
) -> dict[str, Any]:
    """Create ``collection`` if missing and add the corpus's documents; returns the collection stats.

    ``corpus``: a JSONL file, or documents already read (:class:`lsr.index.corpus.Doc`).

    ``model``: a model name, or None for a vectors-only collection; left out, an existing
    collection keeps its model and a new one gets :data:`DEFAULT_MODEL`. A model given for an
    existing collection that has another one is a ValueError. ``limit`` must be >= 1. The corpus
    (and ``vectors``) are read before a new collection is created, so a missing or malformed
    file leaves nothing behind.
    """
    validate_name(collection)
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ValueError(f"limit must be a positive number of documents, got {limit!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    # FileNotFoundError / CorpusError before anything is created
    docs = list(read_corpus(corpus, limit)) if isinstance(corpus, (str, Path)) else list(corpus)[:limit]
    store = CollectionStore(data_dir, MergePolicy(min_docs=10**12, idle_s=1e12))
    registry: ModelRegistry | None = None
    created = False
    col = None
    try:
        store.load_all()
        col = store.collections.get(collection)
        if col is None:
            if collection in store.failed:  # a failed collection of this name: say so, never a new one
                store.get(collection)
            if isinstance(model, _Unset):
                model = DEFAULT_MODEL
            registry = ModelRegistry(model)
            if model is not None:
                dim = len(registry.vocab(model))
            elif dim is None:
                raise ValueError("a collection without a model needs --dim")
        else:
            have: str | None = col.config.get("model")
            if not isinstance(model, _Unset) and model != have:
                raise ValueError(
                    f"collection {collection!r} exists with model {have!r}; --model {model!r} would mix encodings "
                    "(leave --model out, or ingest into a new collection)")
            model = have
            registry = ModelRegistry(model)
        vocab = registry.vocab(model) if model is not None else None
        lookup = {t: i for i, t in enumerate(vocab)} if vocab is not None else None
        given: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        if vectors is not None:
            batch, ids = load_vectors(vectors, vocab=vocab)
            if ids is None:
                raise ValueError(f"{vectors}: the vectors file carries no ids to match the corpus")
            want_dim = col.dim if col is not None else dim
            if want_dim is None:  # not reached: a new collection without a model has --dim (checked above)
                raise ValueError("a collection without a model needs --dim")
            batch.check_dim(want_dim, "vectors")
            for i, doc_id in enumerate(ids):
                idx, val = batch.row(i)
                given[str(doc_id)] = (idx.copy(), val.copy())
        # vectors from the records are resolved before a new collection is created
        resolved: list[tuple[np.ndarray, np.ndarray] | None] = []
        for d in docs:
            if d.id in given:
                resolved.append(given[d.id])
            elif isinstance(d.vector, dict):
                pairs: dict[int, float] = {}
                for tok, w in d.vector.items():
                    if lookup is not None:
                        tid = lookup.get(tok)
                    else:
                        try:
                            tid = int(tok)
                        except ValueError:
                            tid = None
                    if tid is None:
                        raise ValueError(f"document {d.id}: token {tok!r} not in the collection's vocabulary")
                    pairs[tid] = pairs.get(tid, 0.0) + float(w)
                items = sorted((t, w) for t, w in pairs.items() if w > 0)
                resolved.append((np.asarray([t for t, _ in items], np.int64), np.asarray([w for _, w in items], np.float64)))
            else:
                if model is None:
                    raise ValueError(f"document {d.id}: no vector, and the collection has no model to encode it")
                resolved.append(None)
        if col is None:
            col = store.create(collection, {"model": model, "dim": dim, "index": {}})
            created = True
        if registry is not None and model is not None and any(v is None for v in resolved):
            registry.encoder(model)  # load it before the bar starts, so the bar's rate is the encoding's
        bar = tqdm(total=len(docs), desc=f"ingest {collection}", unit="doc")
        for start in range(0, len(docs), batch_size):
            chunk = docs[start : start + batch_size]
            out: list[DocIn] = []
            to_encode: list[int] = []
            encode_texts: list[str] = []
            for d, vec in zip(chunk, resolved[start : start + batch_size]):
                meta = dict(d.metadata or {})
                if d.title:
                    meta.setdefault("title", d.title)
                text = d.full_text
                if vec is None:
                    to_encode.append(len(out))
                    encode_texts.append(text)
                    vec = (np.zeros(0, np.int32), np.zeros(0, np.float32))
                out.append(DocIn(d.id, vec[0], vec[1], text, meta or None))
            if to_encode:
                assert registry is not None and model is not None  # resolved above: no vector means a model
                enc = registry.encode_documents(model, encode_texts)
                for j, i in enumerate(to_encode):
                    idx, val = enc.row(j)
                    keep = val > 0
                    out[i].indices, out[i].values = idx[keep].astype(np.int32), val[keep].astype(np.float32)
            col.upsert(out)
            bar.update(len(chunk))
        bar.close()
        col.merge(force=True)
        stats = col.stats()
        log.info("collection %s: %d documents", collection, stats["documents"])
        return stats
    except BaseException:
        if created and col is not None and len(col) == 0:
            store.delete(collection)  # created here and nothing went in: leave nothing behind
        raise
    finally:
        if registry is not None:
            registry.close()
        store.close()


class IngestError(RuntimeError):
    """``ingest_http`` could not go on: the server is unreachable, refused the key, or rejected a batch."""


def _detail(resp: httpx.Response) -> str:
    try:
        body = resp.json()
    except ValueError:
        return str(resp.text[:300] or resp.reason_phrase)
    if isinstance(body, dict) and "detail" in body:
        return str(body["detail"])
    return str(body)[:300]


def _doc_json(d: Doc) -> dict[str, Any]:
    meta = dict(d.metadata or {})
    if d.title:
        meta.setdefault("title", d.title)
    out: dict[str, Any] = {"id": d.id, "text": d.full_text}
    if meta:
        out["metadata"] = meta
    if isinstance(d.vector, dict):
        out["vector"] = {t: float(w) for t, w in d.vector.items() if float(w) > 0}
    return out


def ingest_http(
    corpus: str | Path,
    collection: str,
    *,
    url: str,
    api_key: str | None,
    model: str | None | _Unset = MODEL_UNSET,
    dim: int | None = None,
    limit: int | None = None,
    batch_size: int = 64,
    timeout: float = 300.0,
    wait_ready: float = 120.0,
) -> dict[str, Any]:
    """Post the corpus's documents to a running server in batches (``POST /v1/collections/NAME/documents``).

    Creates ``collection`` if missing (``model`` left out: the server's default model). Each batch is
    durable once acknowledged; an error names how many documents went in before it. Returns
    ``{"documents": sent, "collection": <the server's description after the last batch>}``.
    """
    import httpx

    validate_name(collection)
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ValueError(f"limit must be a positive number of documents, got {limit!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    docs = list(read_corpus(corpus, limit))  # a missing or malformed file fails before any request
    base = url.rstrip("/")
    headers = {"x-api-key": api_key} if api_key else {}
    with httpx.Client(base_url=base, headers=headers, timeout=timeout) as client:

        def call(method: str, path: str, body: Any = None) -> httpx.Response:
            retries = 0
            while True:
                try:
                    resp = client.request(method, path, json=body)
                except httpx.TransportError as exc:
                    raise IngestError(f"cannot reach {base} ({type(exc).__name__}: {exc}); is `lsr serve` running "
                                      "there?") from None
                if resp.status_code == 503 and retries < 30:  # loading or shedding load: wait as told
                    retries += 1
                    time.sleep(min(10.0, float(resp.headers.get("retry-after", "1") or 1)))
                    continue
                return resp

        deadline = time.monotonic() + wait_ready
        while True:
            r = call("GET", "/ready")
            if r.status_code == 200 or time.monotonic() > deadline:
                break
            time.sleep(1.0)
        if r.status_code != 200:
            raise IngestError(f"{base} is not ready after {wait_ready:.0f} s: {_detail(r)}")

        def check(resp: httpx.Response, what: str) -> None:
            if resp.status_code == 401:
                raise IngestError(f"{what}: the server needs an API key for writes: pass --api-key KEY or set "
                                  "$LSR_API_KEY (a server that generated its key keeps it in DATA/api_key)")
            if resp.status_code == 403:
                raise IngestError(f"{what}: the server refused the API key (wrong key)")
            if resp.status_code >= 400:
                raise IngestError(f"{what}: HTTP {resp.status_code}: {_detail(resp)}")

        r = call("GET", f"/v1/collections/{collection}")
        if r.status_code == 404:
            create: dict[str, Any] = {"name": collection}
            if not isinstance(model, _Unset):
                create["model"] = model
            if dim is not None:
                create["dim"] = dim
            check(call("POST", "/v1/collections", create), f"creating collection {collection!r}")
        else:
            check(r, f"reading collection {collection!r}")
            have = r.json().get("model")
            if not isinstance(model, _Unset) and model != have:
                raise ValueError(
                    f"collection {collection!r} exists with model {have!r}; --model {model!r} would mix encodings "
                    "(leave --model out, or ingest into a new collection)")
        sent = 0
        bar = tqdm(total=len(docs), desc=f"ingest {collection}", unit="doc")
        try:
            for start in range(0, len(docs), batch_size):
                chunk = docs[start : start + batch_size]
                r = call("POST", f"/v1/collections/{collection}/documents",
                         {"documents": [_doc_json(d) for d in chunk]})
                done = f" (the {sent} before them are stored)" if sent else ""
                check(r, f"documents {start + 1}-{start + len(chunk)}{done}")
                sent += len(chunk)
                bar.update(len(chunk))
        finally:
            bar.close()
        r = call("GET", f"/v1/collections/{collection}")
        check(r, f"reading collection {collection!r}")
        info: dict[str, Any] = r.json()
    log.info("collection %s: %d documents sent, %s in the collection", collection, sent, info.get("documents"))
    return {"documents": sent, "collection": info}
