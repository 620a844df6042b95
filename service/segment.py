"""Immutable on-disk segments of a collection.

A segment folder holds the document vectors (``vectors.npz``), the stored documents
(``docs.jsonl`` + row offsets, ``meta.jsonl`` + row offsets), the dense embeddings of a hybrid
collection (``dense.npy``), a Seismic index (``index/``, built by :mod:`lsr.index`) and
``segment.json`` with the sha256 of every file, written last. Every file and
folder is fsynced through :mod:`lsr.index.fileio` (sites ``segment.file``, ``segment.meta``, ``segment.dir``, and
``segments.dir`` for the parent ``segments/`` folder) before a manifest may name the segment.
Loading verifies the checksums by default (``verify=False`` skips them for a folder just written).
A failing Seismic build raises: the merge fails loudly and the documents stay in the log.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, BinaryIO, Sequence

import numpy as np

from lsr.index import ExactIndex, SeismicIndex, fileio
from lsr.index.filter import MetadataTable
from lsr.index.sparse import SparseBatch, load_vectors
from lsr.index.storage import sha256_file

log = logging.getLogger(__name__)

SEGMENT_FORMAT = 1


class SegmentError(RuntimeError):
    """A segment on disk is missing files or fails its checksums (message: collection-relative)."""


class _Writer:
    """A file object whose writes go through :func:`fileio.write` (so a test double sees them)."""

    def __init__(self, fh: BinaryIO) -> None:
        self._fh = fh

    def write(self, data: bytes | bytearray | memoryview) -> int:
        data = bytes(data)
        fileio.write(self._fh, data)
        return len(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._fh, name)


_POOLS: dict[int, ThreadPoolExecutor] = {}


def _pool(threads: int) -> ThreadPoolExecutor:
    pool = _POOLS.get(threads)
    if pool is None:
        pool = _POOLS.setdefault(threads, ThreadPoolExecutor(threads, thread_name_prefix="lsr-segment"))
    return pool


def _rel(path: Path) -> str:
    """``segments/<seg>/<file>``: the name an error may show (no server paths)."""
    parts = Path(path).parts
    if "segments" in parts:
        i = len(parts) - 1 - parts[::-1].index("segments")
        return "/".join(parts[i:])
    return Path(path).name


class Segment:
    """A loaded immutable segment: row -> external id, stored docs, vectors, and an index."""

    def __init__(self, name: str, path: Path, meta: dict[str, Any], ids: list[str], vectors: SparseBatch,
                 index: SeismicIndex | ExactIndex) -> None:
        self.name = name
        self.path = path
        self.meta = meta
        self.ids = ids
        self.vectors = vectors
        self.index = index  # SeismicIndex, or ExactIndex for a segment written as "exact"
        self.kind = meta["kind"]
        self._offsets = np.load(path / "docs.offsets.npy")
        self._fd = os.open(str(path / "docs.jsonl"), os.O_RDONLY)
        self._meta_fd = -1
        self._table: MetadataTable | None = None
        self.dense: np.ndarray | None = None  # (n, dense_dim) float32, memory-mapped, when the collection has one
        self._table_lock = threading.Lock()
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
        metadata: Sequence[dict[str, Any] | None],
        index_params: dict[str, Any] | None = None,
        dense: np.ndarray | None = None,
    ) -> "Segment":
        """Write a segment folder (every file and folder fsynced) and return it loaded.

        Raises on any failure (disk full, a failing Seismic build) after removing the partial
        folder; the caller's merge fails and its documents stay where they were.
        """
        path = Path(path)
        if not len(ids):
            raise ValueError("a segment needs at least one document")
        if path.exists():  # a partial folder of a failed merge of this process
            shutil.rmtree(path)
        try:
            return cls._build(path, vectors, [str(x) for x in ids], texts, metadata, dict(index_params or {}), dense)
        except BaseException:
            shutil.rmtree(path, ignore_errors=True)
            raise

    @classmethod
    def _build(cls, path: Path, vectors: SparseBatch, ids: list[str], texts: Sequence[str | None],
               metadata: Sequence[dict[str, Any] | None], params: dict[str, Any],
               dense: np.ndarray | None = None) -> "Segment":
        fileio.makedirs(path)
        with fileio.open_new(path / "vectors.npz") as fh:
            np.savez(_Writer(fh), indptr=vectors.indptr, indices=vectors.indices, values=vectors.values,
                     dim=np.int64(vectors.dim), ids=np.asarray(ids, dtype=str))
        offsets = np.zeros(len(ids) + 1, np.int64)
        meta_offsets = np.zeros(len(ids) + 1, np.int64)
        # docs.jsonl holds whole documents; meta.jsonl only id + metadata, so hits without text
        # parse a few bytes instead of the whole text
        with fileio.open_new(path / "docs.jsonl") as fh, fileio.open_new(path / "meta.jsonl") as mh:
            pos = mpos = 0
            buf, mbuf = [], []
            for i, (doc_id, text, meta) in enumerate(zip(ids, texts, metadata)):
                line = json.dumps({"id": doc_id, "text": text, "metadata": meta}, ensure_ascii=False).encode() + b"\n"
                buf.append(line)
                pos += len(line)
                offsets[i + 1] = pos
                mline = json.dumps({"id": doc_id, "metadata": meta}, ensure_ascii=False).encode() + b"\n"
                mbuf.append(mline)
                mpos += len(mline)
                meta_offsets[i + 1] = mpos
                if len(buf) >= 4096:
                    fileio.write(fh, b"".join(buf))
                    fileio.write(mh, b"".join(mbuf))
                    buf, mbuf = [], []
            fileio.write(fh, b"".join(buf))
            fileio.write(mh, b"".join(mbuf))
        arrays = [("docs.offsets.npy", offsets), ("meta.offsets.npy", meta_offsets)]
        if dense is not None:  # one float32 embedding per row (hybrid search); checksummed like the rest
            arrays.append(("dense.npy", np.ascontiguousarray(dense, np.float32)))
        for name, arr in arrays:
            with fileio.open_new(path / name) as fh:
                np.save(_Writer(fh), arr)
        # A failing build raises here: no silent fallback to exact scoring.
        idx = SeismicIndex.build(vectors, None, **params)
        idx.save(path / "index")
        del idx
        # lsr.index fsyncs its own folder (sites index.array, index.manifest:*); ours are below
        files = sorted(p for p in path.rglob("*") if p.is_file())
        digests = dict(zip(files, _pool(4).map(sha256_file, files)))
        for p in files:
            if p.parent == path:
                fileio.fsync(p, site="segment.file")
        meta = {
            "format": SEGMENT_FORMAT,
            "kind": "seismic",
            "n_docs": len(ids),
            "dim": vectors.dim,
            "nnz": vectors.nnz,
            "index_params": params,
            "files": {str(p.relative_to(path)): digests[p] for p in files},
        }
        with fileio.open_new(path / "segment.json") as fh:
            fileio.write(fh, json.dumps(meta, indent=1).encode())
            fileio.fsync(fh, site="segment.meta")
        fileio.fsync_dir(path, site="segment.dir")
        fileio.fsync_dir(path.parent, site="segments.dir")  # the new folder's name in segments/
        return cls.load(path, verify=False)

    @classmethod
    def load(cls, path: Path, *, verify: bool = True) -> "Segment":
        """Open a segment; ``verify`` (default) checks every file against segment.json's sha256."""
        path = Path(path)
        meta_path = path / "segment.json"
        if not meta_path.exists():
            raise SegmentError(f"{_rel(path)} has no segment.json (incomplete build?)")
        try:
            meta = json.loads(meta_path.read_text())
        except (ValueError, UnicodeDecodeError) as exc:
            raise SegmentError(f"{_rel(meta_path)} is not valid JSON ({exc})") from None
        if verify:
            verify_segment(path, meta)
        vectors, ids = load_vectors(path / "vectors.npz")
        ids = list(ids or [])
        index: SeismicIndex | ExactIndex
        if meta["kind"] == "seismic":
            index = SeismicIndex.load(path / "index", mmap=True, verify=False)  # checked just above
        elif meta["kind"] == "exact":  # segments written before Seismic was required
            index = ExactIndex.build(vectors)
        else:
            raise SegmentError(f"{_rel(meta_path)}: unknown segment kind {meta['kind']!r}")
        seg = cls(path.name, path, meta, ids, vectors, index)
        if (path / "dense.npy").exists():
            seg.dense = np.load(path / "dense.npy", mmap_mode="r")
            if seg.dense.ndim != 2 or seg.dense.shape[0] != len(ids):
                raise SegmentError(f"{_rel(path / 'dense.npy')}: shape {seg.dense.shape} does not match {len(ids)} rows")
        return seg

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

    def __del__(self) -> None:
        self.close()

    # ------------------------------------------------------------------ reads
    def doc(self, row: int, *, text: bool = True) -> dict[str, Any]:
        """The stored document of ``row``: id, metadata and (unless ``text=False``) text."""
        out: dict[str, Any]
        if not text and self._meta_fd >= 0:
            s, e = int(self._meta_offsets[row]), int(self._meta_offsets[row + 1])
            out = json.loads(os.pread(self._meta_fd, e - s, s))
            return out
        s, e = int(self._offsets[row]), int(self._offsets[row + 1])
        out = json.loads(os.pread(self._fd, e - s, s))
        return out

    def metadata_table(self) -> MetadataTable:
        """The rows' metadata as filter columns, read once from ``meta.jsonl`` on first use."""
        with self._table_lock:
            if self._table is None:
                src = self.path / ("meta.jsonl" if self._meta_fd >= 0 else "docs.jsonl")
                lines = src.read_bytes().split(b"\n")[: len(self)]  # JSON strings escape newlines
                self._table = MetadataTable.from_records([json.loads(line).get("metadata") for line in lines])
            return self._table

    def search(self, queries: SparseBatch, k: int, knobs: dict[str, Any],
               threads: int | None, allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-k rows and scores per query (missing: row -1, score -inf); ``allowed`` (bool per
        row) restricts the ranking to those rows (a filtered search)."""
        k = max(1, min(k, len(self)))
        kwargs = {key: v for key, v in knobs.items() if v is not None}
        if allowed is not None:
            kwargs["allowed"] = allowed
        nq = len(queries)
        threads = max(1, int(threads or 1))
        # Each call uses the index's single-thread low-latency path; a batch is split over our own
        # threads (the kernels release the GIL).
        if threads == 1 or nq < 2 * threads:
            return self._search_one(queries, k, kwargs)
        bounds = np.linspace(0, nq, threads + 1).astype(int)
        parts = list(_pool(threads).map(lambda ab: self._search_one(queries[ab[0]:ab[1]], k, kwargs),
                                        zip(bounds[:-1], bounds[1:])))
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

    def _search_one(self, queries: SparseBatch, k: int, kwargs: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
        hits = self.index.search(queries, k=k, threads=1, **kwargs)
        return np.asarray(hits.rows, dtype=np.int64), np.asarray(hits.scores, dtype=np.float32)

    def size_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.path.rglob("*") if p.is_file())


def verify_segment(path: Path, meta: dict[str, Any] | None = None) -> None:
    """Check that every file listed in ``segment.json`` exists with its recorded sha256."""
    path = Path(path)
    if meta is None:
        meta_path = path / "segment.json"
        if not meta_path.exists():
            raise SegmentError(f"{_rel(path)} has no segment.json")
        meta = json.loads(meta_path.read_text())
    files = meta.get("files", {})
    for rel in files:
        if not (path / rel).is_file():
            raise SegmentError(f"{_rel(path)}: file {rel} is missing")
    rels = list(files)
    digests = list(_pool(4).map(lambda r: sha256_file(path / r), rels)) if len(rels) > 1 else [sha256_file(path / r) for r in rels]
    for rel, digest in zip(rels, digests):
        if digest != files[rel]:
            raise SegmentError(f"{_rel(path)}: file {rel} fails its sha256 checksum")
