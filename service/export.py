"""Export sparse vectors to the engines users already run: Anserini's ``JsonVectorCollection``
(a Lucene impact index through Pyserini) and Qdrant sparse-vector points, one JSON object a line.

Sources: a collection folder of a data folder (read under the data folder's lock, like ``lsr
repair``: the server must be stopped) or a vectors file from ``lsr-encode`` (texts from a corpus).

Anserini (``{"id", "contents", "vector": {token: impact}}``): Anserini turns each entry into the
token repeated ``impact`` times and reads impacts with ``asInt``, so impacts are integers,
``round(weight * scale)`` (default ``scale`` 100, as Pyserini's SPLADE indexes); entries that round
to 0 are dropped. Tokens are the vocabulary's strings, rewritten where Lucene's whitespace analyser
would split them or where two term ids would share one term (:func:`lucene_tokens`); the query side
must use the same tokens and scale (:func:`anserini_query`).

Qdrant (``{"id", "vector": {NAME: {"indices", "values"}}, "payload"}``, the body of one point of
its REST upsert): point ids must be unsigned integers or UUIDs, so a document id becomes
``uuid5(QDRANT_NAMESPACE, id)``; the payload keeps ``doc_id``, ``text`` and ``metadata``. Values
are the float32 weights unchanged (Qdrant stores float32).
"""

from __future__ import annotations

import fcntl
import json
import logging
import math
import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
from tqdm.auto import tqdm

from lsr.index.corpus import read_corpus
from lsr.index.sparse import SparseBatch, load_vectors

from .collection import Collection, MergePolicy, validate_name

__all__ = [
    "FORMATS", "DEFAULT_SCALE", "DEFAULT_VECTOR_NAME", "QDRANT_NAMESPACE", "ExportDoc", "ExportError",
    "lucene_tokens", "quantise", "qdrant_point_id", "anserini_record", "qdrant_record", "anserini_query",
    "collection_docs", "vectors_docs", "export_docs", "export_collection", "export_vectors",
]

log = logging.getLogger(__name__)

FORMATS = ("anserini", "qdrant")
#: Impacts are ``round(weight * scale)``; 100 keeps two decimals of SPLADE-range weights (0-3).
DEFAULT_SCALE = 100.0
DEFAULT_VECTOR_NAME = "sparse"
#: Namespace of the uuid5 point ids (fixed: the same document id always gets the same point id).
QDRANT_NAMESPACE = uuid.UUID("6f1d3c52-8a8e-5b7e-9c43-4c5e2b1a7d90")


class ExportError(ValueError):
    """The export cannot start: unknown collection, folder in use, bad option (message says which)."""


@dataclass
class ExportDoc:
    id: str
    indices: np.ndarray
    values: np.ndarray
    text: str | None = None
    metadata: dict[str, Any] | None = field(default=None)


def lucene_tokens(vocab: Sequence[str]) -> list[str]:
    """One Lucene term per term id, unique, with no whitespace.

    A token that is empty or holds whitespace (Lucene's whitespace analyser would split it) has
    each whitespace character replaced by ``_`` (an empty one becomes ``[EMPTY]``); a token equal to
    an earlier term gets ``#<term id>`` appended (repeatedly, should that exist too). Every other
    token is kept as it is.

    >>> lucene_tokens(["cat", "new york", "new_york", "", "cat"])
    ['cat', 'new_york#1', 'new_york', '[EMPTY]', 'cat#4']
    """
    safe = [bool(t) and not any(c.isspace() for c in t) for t in vocab]
    taken = {t for t, ok in zip(vocab, safe) if ok}
    out: list[str] = []
    seen: set[str] = set()
    for i, (t, ok) in enumerate(zip(vocab, safe)):
        if ok and t not in seen:
            name = t
        else:
            name = "".join("_" if c.isspace() else c for c in t) if t else "[EMPTY]"
            while name in seen or (not ok and name in taken):
                name = f"{name}#{i}"
        seen.add(name)
        out.append(name)
    return out


def quantise(values: np.ndarray, scale: float) -> np.ndarray:
    """``round(values * scale)`` as int64 (numpy's rounding: an exact half goes to the even integer)."""
    return np.rint(np.asarray(values, np.float64) * scale).astype(np.int64)


def qdrant_point_id(doc_id: str) -> str:
    """The Qdrant point id of a document id: ``uuid5(QDRANT_NAMESPACE, doc_id)`` as a string."""
    return str(uuid.uuid5(QDRANT_NAMESPACE, doc_id))


def anserini_record(doc: ExportDoc, tokens: Sequence[str], scale: float) -> tuple[dict[str, Any], int]:
    """The JsonVectorCollection record of ``doc`` and how many entries rounded to 0 (dropped)."""
    q = quantise(doc.values, scale)
    keep = q > 0
    vector = {tokens[int(t)]: int(w) for t, w in zip(doc.indices[keep], q[keep])}
    return {"id": doc.id, "contents": doc.text or "", "vector": vector}, int(np.count_nonzero(~keep))


def qdrant_record(doc: ExportDoc, vector_name: str = DEFAULT_VECTOR_NAME) -> dict[str, Any]:
    """One Qdrant point (REST upsert layout) with a named sparse vector."""
    keep = doc.values > 0
    return {
        "id": qdrant_point_id(doc.id),
        "vector": {vector_name: {"indices": doc.indices[keep].astype(np.int64).tolist(),
                                 "values": doc.values[keep].astype(np.float32).tolist()}},
        "payload": {"doc_id": doc.id, "text": doc.text, "metadata": doc.metadata},
    }


def anserini_query(batch: SparseBatch, tokens: Sequence[str], scale: float = DEFAULT_SCALE) -> list[dict[str, int]]:
    """Query vectors as the ``{term: int weight}`` dicts Pyserini's ``LuceneImpactSearcher`` takes
    from a query encoder's ``encode`` (same terms and scale as the exported documents)."""
    out = []
    for idx, val in batch:
        q = quantise(val, scale)
        keep = q > 0
        out.append({tokens[int(t)]: int(w) for t, w in zip(idx[keep], q[keep])})
    return out


# ---------------------------------------------------------------------------------- sources
def _lock(data_dir: Path) -> Any:
    lock_fh = open(data_dir / "LOCK", "a+")
    try:
        fcntl.flock(lock_fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        lock_fh.close()
        raise ExportError(f"{data_dir} is in use by another lsr process (a running server?); stop it first") from None
    return lock_fh


def collection_docs(col: Collection) -> Iterator[ExportDoc]:
    """Every live document of an open collection: sealed segments in manifest order, then fresh ones."""
    view = col.view
    for seg in view.segments:
        dead = view.dead[seg.name]
        for r in range(len(seg)):
            if dead[r]:
                continue
            idx, val = seg.vectors.row(r)
            doc = seg.doc(r)
            yield ExportDoc(seg.ids[r], idx, val, doc.get("text"), doc.get("metadata"))
    for doc_id, fd in view.fresh.items():
        yield ExportDoc(doc_id, fd.indices, fd.values, fd.text, fd.metadata)


def vectors_docs(vectors: str | Path,
                 corpus: str | Path | None = None) -> tuple[list[ExportDoc], list[str] | None, int]:
    """Documents of a vectors file (``.npz`` or Seismic ``.jsonl`` with ids), texts and metadata
    from ``corpus`` when given; returns them with the file's vocabulary (None when it has none)
    and its dimension."""
    batch, ids = load_vectors(vectors)
    if ids is None:
        raise ExportError(f"{vectors}: the vectors file carries no document ids")
    texts: dict[str, tuple[str, dict[str, Any] | None]] = {}
    if corpus is not None:
        for d in read_corpus(corpus):
            meta = dict(d.metadata or {})
            if d.title:
                meta.setdefault("title", d.title)
            texts[d.id] = (d.full_text, meta or None)
    docs = []
    for i, doc_id in enumerate(ids):
        idx, val = batch.row(i)
        text, extra = texts.get(doc_id, (None, None))
        docs.append(ExportDoc(doc_id, idx, val, text, extra))
    return docs, list(batch.vocab) if batch.vocab is not None else None, batch.dim


def _model_vocab(model: str) -> list[str]:
    from .encoders import ModelRegistry

    registry = ModelRegistry(model)
    try:
        return registry.vocab(model)
    finally:
        registry.close()


# ---------------------------------------------------------------------------------- writers
def _check(fmt: str, scale: float, out: Path) -> None:
    if fmt not in FORMATS:
        raise ExportError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if not (isinstance(scale, (int, float)) and math.isfinite(scale) and scale > 0):
        raise ExportError(f"scale must be a positive number, got {scale!r}")
    if out.is_dir():
        raise ExportError(f"--out {out} is a folder; give a file such as {out / 'docs.jsonl'}")
    if out.parent.exists() and not out.parent.is_dir():
        raise ExportError(f"--out {out}: {out.parent} is not a folder")


def export_docs(docs: Iterator[ExportDoc] | Sequence[ExportDoc], out: str | Path, fmt: str, *,
                vocab: Sequence[str] | None, dim: int, scale: float = DEFAULT_SCALE,
                vector_name: str = DEFAULT_VECTOR_NAME, total: int | None = None,
                progress: bool = True) -> dict[str, Any]:
    """Write ``docs`` to ``out`` (JSON lines) in ``fmt``; returns counts. Written to a temporary
    file beside ``out`` and renamed, so a failed export leaves no partial file under that name.
    Without a vocabulary the Anserini terms are the term ids as strings."""
    out = Path(out)
    _check(fmt, scale, out)
    tokens = lucene_tokens(list(vocab) if vocab is not None else [str(i) for i in range(dim)])
    renamed = [(i, t) for i, t in enumerate(vocab or []) if tokens[i] != t]
    n = nnz = dropped = 0
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            for doc in tqdm(docs, total=total, desc=f"export {fmt}", unit="doc", disable=not progress):
                if fmt == "anserini":
                    rec, zeros = anserini_record(doc, tokens, scale)
                    dropped += zeros
                    nnz += len(rec["vector"])
                else:
                    rec = qdrant_record(doc, vector_name)
                    nnz += len(rec["vector"][vector_name]["indices"])
                fh.write(json.dumps(rec, ensure_ascii=False) + "\n")
                n += 1
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    stats: dict[str, Any] = {"format": fmt, "out": str(out), "documents": n, "nnz": nnz}
    if fmt == "anserini":
        stats.update(scale=scale, dropped_zero_impacts=dropped, renamed_tokens=len(renamed),
                     renamed_examples={str(vocab[i] if vocab else i): t for i, t in renamed[:5]})
    else:
        stats.update(vector_name=vector_name, id_namespace=str(QDRANT_NAMESPACE))
    log.info("exported %d documents (%s) to %s", n, fmt, out)
    return stats


def export_collection(data_dir: str | Path, name: str, out: str | Path, fmt: str, *, scale: float = DEFAULT_SCALE,
                      vector_name: str = DEFAULT_VECTOR_NAME, progress: bool = True) -> dict[str, Any]:
    """Export collection ``name`` of ``data_dir`` (server stopped: takes the data folder's lock).
    Terms come from the collection's model vocabulary; a vectors-only collection exports term ids."""
    validate_name(name)
    data_dir = Path(data_dir)
    out = Path(out)
    _check(fmt, scale, out)
    cdir = data_dir / "collections" / name
    if not (cdir / "manifest.json").is_file():
        raise ExportError(f"no collection {name!r} in {data_dir}")
    lock_fh = _lock(data_dir)
    try:
        # opened as the server would open it (replay of its log, checksums verified)
        col = Collection.open(cdir, MergePolicy(), sync_log=False)
        try:
            model = col.config.get("model")
            vocab = _model_vocab(model) if model is not None else None
            if vocab is not None and len(vocab) != col.dim:
                raise ExportError(f"collection {name!r}: model {model!r} has {len(vocab)} terms, the collection {col.dim}")
            stats = export_docs(collection_docs(col), out, fmt, vocab=vocab, dim=col.dim, scale=scale,
                                vector_name=vector_name, total=len(col), progress=progress)
        finally:
            col.close()
    finally:
        lock_fh.close()
    return {"collection": name, "model": model, **stats}


def export_vectors(vectors: str | Path, out: str | Path, fmt: str, *, corpus: str | Path | None = None,
                   vocab_model: str | None = None, scale: float = DEFAULT_SCALE,
                   vector_name: str = DEFAULT_VECTOR_NAME, progress: bool = True) -> dict[str, Any]:
    """Export a vectors file (``lsr-encode`` output); terms from the file's vocabulary, else from
    ``vocab_model``'s, else term ids."""
    out = Path(out)
    _check(fmt, scale, out)
    docs, vocab, dim = vectors_docs(vectors, corpus)
    if vocab is None and vocab_model is not None:
        vocab = _model_vocab(vocab_model)
        if len(vocab) != dim:
            raise ExportError(f"{vectors}: {dim} dimensions, but model {vocab_model!r} has {len(vocab)} terms")
    stats = export_docs(docs, out, fmt, vocab=vocab, dim=dim, scale=scale, vector_name=vector_name,
                        total=len(docs), progress=progress)
    return {"vectors": str(vectors), **stats}
