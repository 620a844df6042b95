"""Index a JSONL corpus into a collection of a data folder, offline (the server must be stopped).

Reads BEIR ``corpus.jsonl[.gz]`` (``_id``, ``title``, ``text``, ``metadata``) or Seismic JSONL
(``id``, ``content``, ``vector``) through :func:`lsr.index.corpus.read_corpus`, the one corpus
reader: documents are encoded by ``doc.full_text`` exactly as evaluation encodes them. Vectors come
from the records, a ``--vectors`` file, or the collection's model. Documents go through the same
validated log as API writes, then one merge seals them.
"""

from __future__ import annotations

import enum
import logging
from pathlib import Path
from typing import Any, Final

import numpy as np
from tqdm.auto import tqdm

from lsr.index.corpus import read_corpus
from lsr.index.sparse import SparseBatch, load_vectors

from .collection import CollectionStore, DocIn, MergePolicy, validate_name
from .encoders import ModelRegistry

log = logging.getLogger(__name__)

class _Unset(enum.Enum):
    UNSET = "unset"


#: ``ingest(model=...)`` default: the existing collection's model, or ``DEFAULT_MODEL`` for a new one.
MODEL_UNSET: Final = _Unset.UNSET
DEFAULT_MODEL = "splade-tiny"


def ingest(
    corpus: str | Path,
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
    docs = list(read_corpus(corpus, limit))  # FileNotFoundError / CorpusError before anything is created
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
