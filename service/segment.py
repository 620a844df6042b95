"""Immutable on-disk segments of a collection, and the exact scorer used for fresh documents.

A segment folder holds the document vectors (``vectors.npz``), the stored documents
(``docs.jsonl`` + row offsets), a Seismic index (``index/``, built by :mod:`lsr.index`) and
``segment.json`` with sha256 checksums of every file, written last so a segment is whole or absent.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from lsr.index.sparse import SparseBatch, load_vectors, save_vectors

from .wal import atomic_write, fsync_dir

log = logging.getLogger(__name__)

SEGMENT_FORMAT = 1


class SegmentError(RuntimeError):
    """A segment on disk is missing files or fails its checksums."""


def _seismic():
    """The Seismic index class, or None while lsr.index does not provide one."""
    try:
        from lsr.index import SeismicIndex  # noqa: PLC0415
    except Exception:  # ImportError, or a half-written module from the index helper
        return None
    return SeismicIndex


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _fsync_file(path: Path) -> None:
    fd = os.open(str(path), os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class ExactScorer:
    """Exact inner-product top-k over a SparseBatch through a scipy sparse product.

    Documents that share no term with a query are not returned (score -inf, row -1), as an
    inverted index would not find them either.
    """

    def __init__(self, docs: SparseBatch):
        self.n = len(docs)
        self.dim = docs.dim
        self._mat_t = docs.to_scipy().T.tocsr() if self.n else None

    def search(self, queries: SparseBatch, k: int) -> tuple[np.ndarray, np.ndarray]:
        nq = len(queries)
        rows = np.full((nq, k), -1, np.int64)
        scores = np.full((nq, k), -np.inf, np.float32)
        if not self.n or not nq:
            return rows, scores
        prod = (queries.to_scipy() @ self._mat_t).tocsr()
        for i in range(nq):
            s, e = prod.indptr[i], prod.indptr[i + 1]
            if s == e:
                continue
            cols = prod.indices[s:e]
            vals = prod.data[s:e].astype(np.float32)
            pos = vals > 0
            cols, vals = cols[pos], vals[pos]
            if not cols.size:
                continue
            take = min(k, cols.size)
            if cols.size > take:
                part = np.argpartition(-vals, take - 1)[:take]
                cols, vals = cols[part], vals[part]
            order = np.lexsort((cols, -vals))
            rows[i, :take] = cols[order]
            scores[i, :take] = vals[order]
        return rows, scores


_POOLS: dict[int, ThreadPoolExecutor] = {}


def _pool(threads: int) -> ThreadPoolExecutor:
    pool = _POOLS.get(threads)
    if pool is None:
        pool = _POOLS.setdefault(threads, ThreadPoolExecutor(threads, thread_name_prefix="lsr-segment"))
    return pool


class Segment:
    """A loaded immutable segment: row -> external id, stored docs, vectors, and an index."""

    def __init__(self, name: str, path: Path, meta: dict, ids: list[str], vectors: SparseBatch, index: Any):
        self.name = name
        self.path = path
        self.meta = meta
        self.ids = ids
        self.vectors = vectors
        self.index = index  # SeismicIndex, or an ExactScorer
        self.kind = meta["kind"]
        self._offsets = np.load(path / "docs.offsets.npy")
        self._fd = os.open(str(path / "docs.jsonl"), os.O_RDONLY)
        self._meta_fd = -1
        if (path / "meta.jsonl").exists():
            self._meta_offsets = np.load(path / "meta.offsets.npy")
            self._meta_fd = os.open(str(path / "meta.jsonl"), os.O_RDONLY)

    def __len__(self) -> int:
        return len(self.ids)

    # ------------------------------------------------------------------ build / load
    @classmethod
    def build(
        cls,
        path: Path,
        vectors: SparseBatch,
        ids: Sequence[str],
        texts: Sequence[str | None],
        metadata: Sequence[dict | None],
        index_params: dict | None = None,
    ) -> "Segment":
        """Write a segment folder (fsynced) and return it loaded. Seismic when available, else exact."""
        path = Path(path)
        if path.exists():
            _remove_tree(path)
        path.mkdir(parents=True)
        ids = [str(x) for x in ids]
        save_vectors(path / "vectors.npz", vectors, ids)
        offsets = np.zeros(len(ids) + 1, np.int64)
        meta_offsets = np.zeros(len(ids) + 1, np.int64)
        # docs.jsonl holds whole documents; meta.jsonl only id + metadata, so hits without text
        # parse a few bytes instead of the whole text
        with open(path / "docs.jsonl", "wb") as fh, open(path / "meta.jsonl", "wb") as mh:
            pos = mpos = 0
            for i, (doc_id, text, meta) in enumerate(zip(ids, texts, metadata)):
                line = json.dumps({"id": doc_id, "text": text, "metadata": meta}, ensure_ascii=False).encode() + b"\n"
                fh.write(line)
                pos += len(line)
                offsets[i + 1] = pos
                mline = json.dumps({"id": doc_id, "metadata": meta}, ensure_ascii=False).encode() + b"\n"
                mh.write(mline)
                mpos += len(mline)
                meta_offsets[i + 1] = mpos
        with open(path / "docs.offsets.npy", "wb") as fh:
            np.save(fh, offsets)
        with open(path / "meta.offsets.npy", "wb") as fh:
            np.save(fh, meta_offsets)
        kind = "exact"
        params = dict(index_params or {})
        seismic = _seismic()
        if seismic is not None and len(ids) > 0:
            try:
                idx = seismic.build(vectors, None, **params)
                idx.save(path / "index")
                kind = "seismic"
            except Exception:
                log.exception("Seismic build failed for %s; the segment falls back to exact scoring", path)
                if (path / "index").exists():
                    _remove_tree(path / "index")
        files = sorted(p for p in path.rglob("*") if p.is_file())
        for p in files:
            _fsync_file(p)
        for d in sorted({p.parent for p in files}, key=lambda d: -len(d.parts)):
            fsync_dir(d)
        meta = {
            "format": SEGMENT_FORMAT,
            "kind": kind,
            "n_docs": len(ids),
            "dim": vectors.dim,
            "nnz": vectors.nnz,
            "index_params": params,
            "files": {str(p.relative_to(path)): _sha256(p) for p in files},
        }
        atomic_write(path / "segment.json", json.dumps(meta, indent=1).encode())
        return cls.load(path, verify=False)

    @classmethod
    def load(cls, path: Path, *, verify: bool = False) -> "Segment":
        path = Path(path)
        meta_path = path / "segment.json"
        if not meta_path.exists():
            raise SegmentError(f"segment {path} has no segment.json (incomplete build?)")
        meta = json.loads(meta_path.read_text())
        if verify:
            verify_segment(path, meta)
        vectors, ids = load_vectors(path / "vectors.npz")
        ids = list(ids or [])
        index: Any = None
        if meta["kind"] == "seismic":
            seismic = _seismic()
            if seismic is None:
                log.warning("%s: Seismic index unavailable; scoring this segment exactly", path)
            else:
                index = seismic.load(path / "index", mmap=True)
        if index is None:
            index = ExactScorer(vectors)
        return cls(path.name, path, meta, ids, vectors, index)

    def close(self) -> None:
        """Release the document file. Only call it when no search can still hold this segment: a
        closed descriptor number may be reused by another file. Dropped segments close on collection."""
        for attr in ("_fd", "_meta_fd"):
            fd = getattr(self, attr, -1)
            setattr(self, attr, -1)
            if fd >= 0:
                try:
                    os.close(fd)
                except OSError:
                    pass

    def __del__(self):
        self.close()

    # ------------------------------------------------------------------ reads
    def doc(self, row: int, *, text: bool = True) -> dict:
        """The stored document of ``row``: id, metadata and (unless ``text=False``) text."""
        if not text and self._meta_fd >= 0:
            s, e = int(self._meta_offsets[row]), int(self._meta_offsets[row + 1])
            return json.loads(os.pread(self._meta_fd, e - s, s))
        s, e = int(self._offsets[row]), int(self._offsets[row + 1])
        return json.loads(os.pread(self._fd, e - s, s))

    def search(self, queries: SparseBatch, k: int, knobs: dict, threads: int | None) -> tuple[np.ndarray, np.ndarray]:
        """Top-k rows and scores per query (missing: row -1, score -inf)."""
        k = max(1, min(k, len(self)))
        if isinstance(self.index, ExactScorer):
            return self.index.search(queries, k)
        kwargs = {key: v for key, v in knobs.items() if v is not None}
        nq = len(queries)
        threads = max(1, int(threads or 1))
        # Each call uses the index's single-thread low-latency path; a batch is split over our own
        # threads (the kernels release the GIL). This also kept us clear of a lost-query bug in the
        # index's threaded batch path before 8a04192 (threads=2: one query of 600 came back empty).
        if threads == 1 or nq < 2 * threads:
            return self._search_one(queries, k, kwargs)
        bounds = np.linspace(0, nq, threads + 1).astype(int)
        parts = list(_pool(threads).map(lambda ab: self._search_one(queries[ab[0]:ab[1]], k, kwargs),
                                        zip(bounds[:-1], bounds[1:])))
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

    def _search_one(self, queries: SparseBatch, k: int, kwargs: dict) -> tuple[np.ndarray, np.ndarray]:
        hits = self.index.search(queries, k=k, threads=1, **kwargs)
        rows = getattr(hits, "rows", None)
        if rows is None:
            rows = hits.ids
        return np.asarray(rows, dtype=np.int64), np.asarray(hits.scores, dtype=np.float32)

    def size_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.path.rglob("*") if p.is_file())


def verify_segment(path: Path, meta: dict | None = None) -> None:
    """Check that every file listed in ``segment.json`` exists with its recorded sha256."""
    path = Path(path)
    if meta is None:
        meta_path = path / "segment.json"
        if not meta_path.exists():
            raise SegmentError(f"segment {path} has no segment.json")
        meta = json.loads(meta_path.read_text())
    for rel, digest in meta.get("files", {}).items():
        p = path / rel
        if not p.exists():
            raise SegmentError(f"segment {path}: file {rel} is missing")
        if _sha256(p) != digest:
            raise SegmentError(f"segment {path}: file {rel} fails its sha256 checksum")


def _remove_tree(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)
