"""Index a JSONL corpus into a collection of a data folder, offline (the server must be stopped).

Reads BEIR ``corpus.jsonl[.gz]`` (``_id``, ``title``, ``text``, ``metadata``) or Seismic JSONL
(``id``, ``content``, ``vector``); vectors come from the records, a ``--vectors`` file, or the
collection's model. Documents go through the same log as API writes, then one merge seals them.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Iterator

import numpy as np
from tqdm.auto import tqdm

from lsr.index.jsonl import iter_jsonl
from lsr.index.sparse import load_vectors

from .collection import CollectionStore, DocIn, MergePolicy, validate_name
from .encoders import ModelRegistry

log = logging.getLogger(__name__)


def read_corpus(path: str | Path, limit: int | None = None) -> Iterator[dict]:
    n = 0
    for lineno, rec in iter_jsonl(path):
        if not isinstance(rec, dict):
            raise ValueError(f"{path}:{lineno}: expected a JSON object")
        doc_id = rec.get("_id", rec.get("id"))
        if doc_id is None:
            raise ValueError(f"{path}:{lineno}: record has no _id or id")
        title = rec.get("title") or ""
        text = rec.get("text", rec.get("content")) or ""
        sep = " " if title.rstrip()[-1:] in (".", "?", "!", ":") else ". "
        full = f"{title}{sep}{text}" if title and text else (title or text)
        meta = dict(rec.get("metadata") or {})
        if title:
            meta.setdefault("title", title)
        yield {"id": str(doc_id), "text": full, "metadata": meta or None, "vector": rec.get("vector")}
        n += 1
        if limit is not None and n >= limit:
            return


def ingest(
    corpus: str | Path,
    collection: str,
    *,
    data_dir: str | Path = "./lsr-data",
    model: str | None = "splade-tiny",
    vectors: str | Path | None = None,
    limit: int | None = None,
    batch_size: int = 256,
    dim: int | None = None,
) -> dict:
    """Create ``collection`` if missing and add the corpus's documents; returns the collection stats."""
    validate_name(collection)
    registry = ModelRegistry(model)
    store = CollectionStore(data_dir, MergePolicy(min_docs=10**12, idle_s=1e12))
    try:
        store.load_all()
        col = store.collections.get(collection)
        if col is None:
            if model is not None:
                dim = len(registry.vocab(model))
            elif dim is None:
                raise ValueError("a collection without a model needs --dim")
            col = store.create(collection, {"model": model, "dim": dim, "index": {}})
        model = col.config.get("model")
        vocab = registry.vocab(model) if model is not None else None
        lookup = {t: i for i, t in enumerate(vocab)} if vocab is not None else None
        given: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        if vectors is not None:
            batch, ids = load_vectors(vectors, vocab=vocab)
            if ids is None:
                raise ValueError(f"{vectors}: the vectors file carries no ids to match the corpus")
            batch.check_dim(col.dim, "vectors")
            for i, doc_id in enumerate(ids):
                idx, val = batch.row(i)
                given[str(doc_id)] = (idx.copy(), val.copy())
        docs = list(read_corpus(corpus, limit))
        bar = tqdm(total=len(docs), desc=f"ingest {collection}", unit="doc")
        for start in range(0, len(docs), batch_size):
            chunk = docs[start : start + batch_size]
            out: list[DocIn] = []
            to_encode = []
            for d in chunk:
                if d["id"] in given:
                    idx, val = given[d["id"]]
                elif isinstance(d["vector"], dict):
                    pairs = {}
                    for tok, w in d["vector"].items():
                        tid = lookup.get(tok) if lookup is not None else int(tok)
                        if tid is None:
                            raise ValueError(f"document {d['id']}: token {tok!r} not in the model's vocabulary")
                        pairs[tid] = pairs.get(tid, 0.0) + float(w)
                    items = sorted((t, w) for t, w in pairs.items() if w > 0)
                    idx = np.asarray([t for t, _ in items], np.int32)
                    val = np.asarray([w for _, w in items], np.float32)
                else:
                    idx = val = None
                    to_encode.append(len(out))
                out.append(DocIn(d["id"], idx, val, d["text"], d["metadata"]))
            if to_encode:
                if model is None:
                    raise ValueError("documents without vectors need a model to encode them")
                enc = registry.encode(model, [out[i].text for i in to_encode], queries=False)
                for j, i in enumerate(to_encode):
                    idx, val = enc.row(j)
                    out[i].indices, out[i].values = idx.astype(np.int32), val.astype(np.float32)
            col.upsert(out)
            bar.update(len(chunk))
        bar.close()
        col.merge(force=True)
        stats = col.stats()
        log.info("collection %s: %d documents", collection, stats["documents"])
        return stats
    finally:
        store.close()
