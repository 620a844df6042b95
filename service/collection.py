"""Durable, updatable collections: a manifest, immutable segments, a fresh exact segment, a WAL.

Layout of ``<data>/collections/<name>/``: ``manifest.json`` (replaced atomically), ``segments/<seg>/``
(see :mod:`lsr.service.segment`), ``wal/NNNNNN.log``, and ``quarantine/`` for segment folders found
at start-up that the manifest does not list (moved there, never deleted). A write is validated,
appended to the log and fsynced before it is applied in memory and acknowledged; a restart replays
the log files the manifest has not folded in. Searches read an immutable :class:`View`, so writers
never block them. All storage I/O goes through :mod:`lsr.index.fileio`.

Failure model (see the service README, "Durability and repair"): a torn last log record is
dropped; any other damage leaves the collection in ``CollectionStore.failed`` (HTTP 503 through
:class:`CollectionFailed`) until ``lsr repair`` salvages it. A full disk during a write raises
:class:`StorageFull` (507) with the log rolled back and nothing applied; a failing merge is logged,
counted (``Collection.merge_failures``) and retried later while the documents stay searchable.
"""

from __future__ import annotations

import fcntl
import json
import logging
import math
import os
import re
import shutil
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import numpy.typing as npt

from lsr.index import ExactIndex, fileio
from lsr.index.filter import MetadataFilter, MetadataTable
from lsr.index.exact import top_rows
from lsr.index.sparse import SparseBatch

from .segment import Segment, SegmentError, verify_segment
from .wal import (DISK_FULL_ERRNOS, LogScan, Record, WalCorruption, WalDiskFull, WriteAheadLog, current_logs, log_name,
                  log_numbers, scan_log)

log = logging.getLogger(__name__)

MANIFEST_FORMAT = 1
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
FRESH = ("fresh", -1)
#: Largest accepted term weight. The Seismic index stores weights as float16, whose largest finite
#: value this is; anything larger would be clipped in the index (and 1e300 becomes inf in float32).
MAX_WEIGHT = 65504.0
#: Largest accepted vocabulary size (term ids are int32 everywhere).
MAX_DIM = 2**31 - 1


class CollectionError(ValueError):
    """Bad request against a collection (maps to a 4xx/5xx); ``status`` says which."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


class CollectionFailed(CollectionError):
    """The collection exists but could not be opened (``reason``); 503 until it is repaired."""

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(f"collection {name!r} is unavailable: it failed to open: {reason}", 503)
        self.name = name
        self.reason = reason


class CollectionCorrupt(RuntimeError):
    """A collection's manifest or log files are missing or unreadable (it opens as failed)."""


class StorageFull(CollectionError):
    """The disk (or quota) is full: the write was not applied (507 Insufficient Storage)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, 507)


class MergeFailed(CollectionError):
    """A merge failed (logged and counted); the documents stay searchable from the log (500)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, 500)


def validate_name(name: str) -> str:
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise CollectionError(
            f"invalid collection name {name!r}: use 1-64 letters, digits, '_' or '-', starting with a letter or digit",
            422,
        )
    return name


def validate_dim(dim: object) -> int:
    if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or not 1 <= int(dim) <= MAX_DIM:
        raise CollectionError(f"dim must be an integer in [1, {MAX_DIM}], got {dim!r}", 422)
    return int(dim)


def check_vector(doc_id: str, indices: npt.ArrayLike, values: npt.ArrayLike, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """Validate one document vector; returns it as sorted int32 ids / float32 weights.

    Term ids must be integers in ``[0, dim)`` without duplicates, weights finite, > 0 and
    <= :data:`MAX_WEIGHT`. Raises :class:`CollectionError` (422) naming the document.
    """
    idx = np.asarray(indices)
    val = np.asarray(values)
    if idx.ndim != 1 or val.ndim != 1 or idx.shape != val.shape:
        raise CollectionError(f"document {doc_id!r}: term ids and weights must be two lists of one length", 422)
    if idx.size:
        if not np.issubdtype(idx.dtype, np.integer):
            raise CollectionError(f"document {doc_id!r}: term ids must be integers", 422)
        if not np.issubdtype(val.dtype, np.floating) and not np.issubdtype(val.dtype, np.integer):
            raise CollectionError(f"document {doc_id!r}: weights must be numbers", 422)
        idx64 = idx.astype(np.int64)
        bad = (idx64 < 0) | (idx64 >= dim)
        if bad.any():
            raise CollectionError(
                f"document {doc_id!r}: term id {int(idx64[np.argmax(bad)])} outside the collection's vocabulary [0, {dim})", 422)
        v64 = val.astype(np.float64)
        ok = np.isfinite(v64) & (v64 > 0) & (v64 <= MAX_WEIGHT)
        if not ok.all():
            w = float(v64[np.argmin(ok)])
            raise CollectionError(
                f"document {doc_id!r}: weight {w!r} for term {int(idx64[np.argmin(ok)])} is not a finite number "
                f"in (0, {MAX_WEIGHT:g}]", 422)
        order = np.argsort(idx64, kind="stable")
        idx64, v64 = idx64[order], v64[order]
        if idx64.size > 1 and (np.diff(idx64) == 0).any():
            dup = int(idx64[1:][np.diff(idx64) == 0][0])
            raise CollectionError(f"document {doc_id!r}: term id {dup} appears twice", 422)
        v32 = v64.astype(np.float32)
        if (v32 <= 0).any():  # a positive weight below float32's smallest subnormal
            raise CollectionError(f"document {doc_id!r}: weight too small for float32", 422)
        return idx64.astype(np.int32), v32
    return np.zeros(0, np.int32), np.zeros(0, np.float32)


def check_rows(ids: Sequence[str], indptr: npt.ArrayLike, indices: npt.ArrayLike, values: npt.ArrayLike,
               dim: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`check_vector` for many documents at once, as CSR arrays (one pass over the arrays, no
    per-document Python): the same rules and the same errors, naming the first offending document.
    Returns ``(indptr int64, indices int32, values float32)`` with each row's terms sorted."""
    ptr = np.asarray(indptr)
    idx = np.asarray(indices)
    val = np.asarray(values)
    n = len(ids)
    if ptr.ndim != 1 or ptr.size != n + 1 or idx.ndim != 1 or val.ndim != 1 or idx.shape != val.shape:
        raise CollectionError(f"{n} documents need indptr of {n + 1} offsets and term ids and weights of one length", 422)
    for d in ids:
        if not isinstance(d, str) or not d:
            raise CollectionError(f"document id {d!r} must be a non-empty string", 422)
    ptr = ptr.astype(np.int64)
    if ptr[0] != 0 or ptr[-1] != idx.size or (np.diff(ptr) < 0).any():
        raise CollectionError("indptr must start at 0, never decrease and end at the number of term ids", 422)
    if idx.size == 0:
        return ptr, np.zeros(0, np.int32), np.zeros(0, np.float32)
    if not np.issubdtype(idx.dtype, np.integer):
        raise CollectionError(f"document {ids[0]!r}: term ids must be integers", 422)
    if not np.issubdtype(val.dtype, np.floating) and not np.issubdtype(val.dtype, np.integer):
        raise CollectionError(f"document {ids[0]!r}: weights must be numbers", 422)
    row = np.repeat(np.arange(n), np.diff(ptr))
    idx64 = idx.astype(np.int64)
    bad = (idx64 < 0) | (idx64 >= dim)
    if bad.any():
        i = int(np.argmax(bad))
        raise CollectionError(f"document {ids[row[i]]!r}: term id {int(idx64[i])} outside the collection's "
                              f"vocabulary [0, {dim})", 422)
    v64 = val.astype(np.float64)
    ok = np.isfinite(v64) & (v64 > 0) & (v64 <= MAX_WEIGHT)
    if not ok.all():
        i = int(np.argmin(ok))
        raise CollectionError(f"document {ids[row[i]]!r}: weight {float(v64[i])!r} for term {int(idx64[i])} is not a "
                              f"finite number in (0, {MAX_WEIGHT:g}]", 422)
    same_row = row[1:] == row[:-1]
    if (np.diff(idx64)[same_row] <= 0).any():  # not already sorted within rows (encoders' output is)
        order = np.lexsort((idx64, row))
        idx64, v64 = idx64[order], v64[order]
    dup = (np.diff(idx64) == 0) & same_row
    if dup.any():
        i = int(np.argmax(dup)) + 1
        raise CollectionError(f"document {ids[row[i]]!r}: term id {int(idx64[i])} appears twice", 422)
    v32 = v64.astype(np.float32)
    if (v32 <= 0).any():
        raise CollectionError(f"document {ids[row[int(np.argmax(v32 <= 0))]]!r}: weight too small for float32", 422)
    return ptr, idx64.astype(np.int32), v32


def check_dense(doc_id: str, dense: npt.ArrayLike, dense_dim: int) -> np.ndarray:
    """Validate one dense embedding: ``dense_dim`` finite numbers; returns it as float32."""
    try:
        arr = np.asarray(dense, np.float64)
    except (TypeError, ValueError):
        raise CollectionError(f"document {doc_id!r}: dense_vector must be a list of numbers", 422) from None
    if arr.shape != (dense_dim,):
        raise CollectionError(f"document {doc_id!r}: dense_vector has {arr.size} values, the collection's dense "
                              f"model gives {dense_dim}", 422)
    if not np.isfinite(arr).all() or (np.abs(arr) > 1e30).any():
        raise CollectionError(f"document {doc_id!r}: dense_vector values must be finite", 422)
    return arr.astype(np.float32)


def validate_record(rec: Record, dim: int, dense_dim: int | None = None) -> None:
    """Check a log record's shape and vectors (replay and repair); raises ValueError. A document's
    dense embedding (``e``) is checked against ``dense_dim`` when given."""
    if not isinstance(rec, dict) or not isinstance(rec.get("seq"), int):
        raise ValueError("record lacks an integer 'seq'")
    op = rec.get("op")
    if op == "upsert":
        docs = rec.get("docs")
        if not isinstance(docs, list):
            raise ValueError("upsert record lacks 'docs'")
        for d in docs:
            if not isinstance(d, dict) or not isinstance(d.get("id"), str):
                raise ValueError("upsert record has a document without a string 'id'")
            if not isinstance(d.get("t"), list) or not isinstance(d.get("w"), list):
                raise ValueError(f"document {d['id']!r} lacks 't'/'w' lists")
            try:
                check_vector(d["id"], np.asarray(d["t"], np.int64) if d["t"] else np.zeros(0, np.int64),
                             np.asarray(d["w"], np.float64) if d["w"] else np.zeros(0), dim)
            except (CollectionError, TypeError, OverflowError) as exc:
                raise ValueError(str(exc)) from None
            if d.get("metadata") is not None and not isinstance(d["metadata"], dict):
                raise ValueError(f"document {d['id']!r}: metadata is not an object")
            if d.get("text") is not None and not isinstance(d["text"], str):
                raise ValueError(f"document {d['id']!r}: text is not a string")
            if d.get("e") is not None:
                try:
                    check_dense(d["id"], d["e"], dense_dim if dense_dim else len(d["e"]))
                except (CollectionError, TypeError) as exc:
                    raise ValueError(str(exc)) from None
            elif dense_dim:
                raise ValueError(f"document {d['id']!r} lacks its dense embedding 'e'")
    elif op == "delete":
        ids = rec.get("ids")
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise ValueError("delete record lacks a list of string 'ids'")
    else:
        raise ValueError(f"unknown op {op!r}")


@dataclass
class FreshDoc:
    indices: np.ndarray
    values: np.ndarray
    text: str | None
    metadata: dict[str, Any] | None
    seq: int
    dense: np.ndarray | None = None  # float32 embedding (collections with a dense model)


@dataclass
class DocIn:
    """One resolved document to write: its vector as term ids and weights."""

    id: str
    indices: np.ndarray
    values: np.ndarray
    text: str | None = None
    metadata: dict[str, Any] | None = None
    dense: np.ndarray | None = None  # the embedding, for a collection with a dense model


@dataclass
class Candidate:
    id: str
    score: float
    segment: str  # segment name or "fresh"
    row: int


def _fetch_size(k: int, n: int, n_dead: int) -> int:
    """How many hits to ask a segment for so that, after dropping its tombstoned rows, ``k`` live
    ones most likely remain: scaled by the live share plus a margin, never all the tombstones."""
    if not n_dead:
        return min(k, n)
    live_share = max(1e-3, 1.0 - n_dead / n)
    return min(n, k + n_dead, int(math.ceil(k / live_share * 1.25)) + 8)


class View:
    """An immutable snapshot of a collection for searching."""

    #: shards left out of a partial search of a sharded collection (lsr.cluster); a local one has none
    missing_shards: tuple[int, ...] = ()

    def __init__(self, segments: tuple[Segment, ...], dead: dict[str, np.ndarray], fresh: dict[str, FreshDoc],
                 dim: int) -> None:
        self.segments = segments
        self.dead = dead  # seg name -> bool array (never mutated after publish)
        self.dead_counts = {s.name: int(dead[s.name].sum()) for s in segments}
        self.fresh = fresh  # id -> FreshDoc (a private copy)
        self.dim = dim
        self._fresh_ids: list[str] | None = None
        self._scorer: ExactIndex | None = None
        self._fresh_table: MetadataTable | None = None
        self._fresh_dense: np.ndarray | None = None
        self._lock = threading.Lock()
        self.research_count = 0  # segment searches repeated with a larger k (too many tombstones hit)

    def fresh_scorer(self) -> tuple[list[str], ExactIndex]:
        with self._lock:
            if self._scorer is None or self._fresh_ids is None:
                ids = list(self.fresh)
                batch = _batch_from_fresh([self.fresh[i] for i in ids], self.dim)
                self._fresh_ids, self._scorer = ids, ExactIndex.build(batch)
            return self._fresh_ids, self._scorer

    def fresh_table(self) -> MetadataTable:
        """The fresh documents' metadata as filter columns, in :meth:`fresh_scorer`'s row order."""
        ids, _ = self.fresh_scorer()
        with self._lock:
            if self._fresh_table is None:
                self._fresh_table = MetadataTable.from_records([self.fresh[i].metadata for i in ids])
            return self._fresh_table

    def _segment_hits(self, seg: Segment, queries: SparseBatch, k: int, knobs: dict[str, Any],
                      threads: int | None) -> list[list[tuple[int, float]]]:
        """Live ``(row, score)`` hits per query, at least ``k`` where the segment has them."""
        dead = self.dead[seg.name]
        n = len(seg)
        n_dead = self.dead_counts[seg.name]
        fetch = _fetch_size(k, n, n_dead)
        out: list[list[tuple[int, float]]] = [[] for _ in range(len(queries))]
        todo = np.arange(len(queries))
        batch = queries
        while True:
            rows, scores = seg.search(batch, fetch, knobs, threads)
            short = []
            for j, q in enumerate(todo):
                live = [(int(r), float(s)) for r, s in zip(rows[j], scores[j])
                        if r >= 0 and np.isfinite(s) and not dead[r]]
                out[q] = live
                # the index returned a full list yet tombstones ate it: ask again for more
                if len(live) < k and rows.shape[1] and rows[j, -1] >= 0:
                    short.append(j)
            ceiling = min(n, k + n_dead)
            if not short or fetch >= ceiling:
                return out
            fetch = min(ceiling, fetch * 4)
            todo = todo[short]
            batch = batch[np.asarray(short, np.int64)]
            self.research_count += 1

    def _filtered_hits(self, seg: Segment, queries: SparseBatch, k: int, knobs: dict[str, Any],
                       threads: int | None, flt: MetadataFilter) -> list[list[tuple[int, float]]]:
        """Live ``(row, score)`` hits among the rows that pass ``flt``: tombstoned rows are left out
        of the allowed mask, so the index returns the true top-k of what remains."""
        allowed = seg.metadata_table().mask(flt) & ~self.dead[seg.name]
        if not allowed.any():
            return [[] for _ in range(len(queries))]
        rows, scores = seg.search(queries, k, knobs, threads, allowed=allowed)
        return [[(int(r), float(s)) for r, s in zip(rows[j], scores[j]) if r >= 0 and np.isfinite(s)]
                for j in range(len(queries))]

    def search(self, queries: SparseBatch, k: int, knobs: dict[str, Any], threads: int | None,
               flt: MetadataFilter | None = None) -> list[list[Candidate]]:
        """Top-``k`` candidates per query over every segment and the fresh documents; with ``flt``
        only documents whose metadata pass the filter are ranked."""
        nq = len(queries)
        per_query: list[list[Candidate]] = [[] for _ in range(nq)]
        for seg in self.segments:
            if len(seg) - self.dead_counts[seg.name] <= 0:
                continue
            if flt is None:
                seg_hits = self._segment_hits(seg, queries, k, knobs, threads)
            else:
                seg_hits = self._filtered_hits(seg, queries, k, knobs, threads, flt)
            for q, hits in enumerate(seg_hits):
                per_query[q].extend(Candidate(seg.ids[r], s, seg.name, r) for r, s in hits)
        if self.fresh:
            ids, scorer = self.fresh_scorer()
            allowed = self.fresh_table().mask(flt) if flt is not None else None
            fresh_hits = scorer.search(queries, min(k, len(ids)), threads=1, allowed=allowed)
            for q in range(nq):
                for r, s in zip(fresh_hits.rows[q], fresh_hits.scores[q]):
                    if r >= 0 and np.isfinite(s):
                        per_query[q].append(Candidate(ids[r], float(s), "fresh", int(r)))
        out = []
        for cands in per_query:
            cands.sort(key=lambda c: (-c.score, c.id))
            out.append(cands[:k])
        return out

    def dense_search(self, queries: np.ndarray, k: int, flt: MetadataFilter | None = None) -> list[list[Candidate]]:
        """Exact top-``k`` by dot product of dense embeddings (cosine for normalised ones) over live
        documents (that pass ``flt``); ``queries`` is (n, dense_dim) float32."""
        nq = queries.shape[0]
        per_query: list[list[Candidate]] = [[] for _ in range(nq)]
        for seg in self.segments:
            if seg.dense is None:
                continue
            ok = ~self.dead[seg.name]
            if flt is not None:
                ok &= seg.metadata_table().mask(flt)
            rows = np.flatnonzero(ok)
            if rows.size:
                scores = queries @ np.asarray(seg.dense[rows], np.float32).T
                for q in range(nq):
                    for j in top_rows(scores[q], k):
                        per_query[q].append(Candidate(seg.ids[rows[j]], float(scores[q, j]), seg.name, int(rows[j])))
        if self.fresh:
            ids, _ = self.fresh_scorer()
            with self._lock:
                if self._fresh_dense is None:
                    vecs = [self.fresh[i].dense for i in ids]
                    self._fresh_dense = (np.stack([v for v in vecs if v is not None]) if all(v is not None for v in vecs)
                                         else np.zeros((0, queries.shape[1]), np.float32))
                fresh_dense = self._fresh_dense
            if fresh_dense.shape[0] == len(ids):
                ok_rows = np.arange(len(ids)) if flt is None else np.flatnonzero(self.fresh_table().mask(flt))
                scores = queries @ fresh_dense[ok_rows].T
                for q in range(nq):
                    for j in top_rows(scores[q], k):
                        r = int(ok_rows[j])
                        per_query[q].append(Candidate(ids[r], float(scores[q, j]), "fresh", r))
        out = []
        for cands in per_query:
            cands.sort(key=lambda c: (-c.score, c.id))
            out.append(cands[:k])
        return out

    def dense_vector(self, cand: Candidate) -> np.ndarray | None:
        if cand.segment == "fresh":
            return self.fresh[cand.id].dense
        for seg in self.segments:
            if seg.name == cand.segment:
                return None if seg.dense is None else np.asarray(seg.dense[cand.row], np.float32)
        raise KeyError(cand.segment)

    def vector(self, cand: Candidate) -> tuple[np.ndarray, np.ndarray]:
        if cand.segment == "fresh":
            d = self.fresh[cand.id]
            return d.indices, d.values
        for seg in self.segments:
            if seg.name == cand.segment:
                return seg.vectors.row(cand.row)
        raise KeyError(cand.segment)

    def document(self, cand: Candidate, *, text: bool = True) -> dict[str, Any]:
        if cand.segment == "fresh":
            d = self.fresh[cand.id]
            return {"id": cand.id, "text": d.text, "metadata": d.metadata}
        for seg in self.segments:
            if seg.name == cand.segment:
                return seg.doc(cand.row, text=text)
        raise KeyError(cand.segment)




def _batch_from_fresh(docs: Sequence[FreshDoc], dim: int) -> SparseBatch:
    if not docs:
        return SparseBatch.empty(0, dim)
    lens = np.fromiter((d.indices.size for d in docs), np.int64, len(docs))
    indptr = np.concatenate([[0], np.cumsum(lens)]).astype(np.int64)
    indices = np.concatenate([d.indices for d in docs]).astype(np.int32)
    values = np.concatenate([d.values for d in docs]).astype(np.float32)
    return SparseBatch(indptr, indices, values, dim)


@dataclass
class MergePolicy:
    min_docs: int = 1000  # merge once the fresh segment holds this many documents
    idle_s: float = 10.0  # or once writes have been quiet this long
    max_segments: int = 8  # compact all segments into one past this many
    max_dead_fraction: float = 0.25  # compact all segments when this share of all sealed rows is tombstoned
    segment_dead_fraction: float = 0.10  # rewrite any one segment whose tombstoned share passes this
    retry_s: float = 5.0  # after a failed merge wait this long (doubling per failure, up to 300 s)


def _is_disk_full(exc: BaseException) -> bool:
    cur: BaseException | None = exc
    while cur is not None:
        if isinstance(cur, OSError) and cur.errno in DISK_FULL_ERRNOS:
            return True
        cur = cur.__cause__ or cur.__context__
    return False


class Collection:
    """One collection folder, opened: replayed log, loaded segments, and a published View."""

    def __init__(self, path: Path, manifest: dict[str, Any], policy: MergePolicy | None = None) -> None:
        self.path = Path(path)
        self.name = manifest["name"]
        self.manifest = manifest
        self.config = manifest["config"]
        self.dim = int(self.config["dim"])
        self.dense_dim: int | None = self.config.get("dense_dim")  # set with a dense model (hybrid search)
        self.policy = policy or MergePolicy()
        self._lock = threading.Lock()  # serialises writes and the merge's swap
        self._merge_lock = threading.Lock()  # one merge at a time
        self.segments: list[Segment] = []
        self.dead: dict[str, np.ndarray] = {}
        self.loc: dict[str, tuple[str, int]] = {}
        self.fresh: dict[str, FreshDoc] = {}
        self.seq = int(manifest.get("seq", 0))
        self.last_write = time.monotonic()
        self.closed = False
        self.view: View
        self._wal: WriteAheadLog | None = None
        self._wal_bytes = 0
        self.merge_failures = 0  # merges that failed since start (exported as a metric)
        self.merge_failures_in_row = 0
        self.last_merge_error: str | None = None
        self.next_merge_at = 0.0  # monotonic time before which the background merger waits
        self.dropped_tail_bytes = 0  # torn log tail dropped at open
        self.quarantined: list[str] = []  # segment folders moved to quarantine/ at open

    # ------------------------------------------------------------------ create / open
    @classmethod
    def create(cls, root: Path, name: str, config: dict[str, Any], policy: MergePolicy | None = None) -> "Collection":
        validate_name(name)
        config = dict(config)
        config["dim"] = validate_dim(config.get("dim"))
        root = Path(root)
        final = root / name
        if final.exists():
            raise CollectionError(f"collection {name!r} already exists", 409)
        tmp = root / f".tmp-{name}-{uuid.uuid4().hex[:8]}"
        fileio.makedirs(tmp)
        fileio.makedirs(tmp / "segments")
        WriteAheadLog.create(tmp / "wal", 1).close()  # the current log exists before a manifest names it
        manifest = {
            "format": MANIFEST_FORMAT,
            "name": name,
            "config": config,
            "generation": 0,
            "segments": [],
            "dead": {},
            "wal_start": 1,
            "seq": 0,
            "created_at": time.time(),
        }
        # the folder's fsync (in atomic_write) also makes its segments/ and wal/ entries durable
        fileio.atomic_write(tmp / "manifest.json", json.dumps(manifest, indent=1).encode(), site="create.manifest")
        if final.exists():
            shutil.rmtree(tmp, ignore_errors=True)
            raise CollectionError(f"collection {name!r} already exists", 409)
        try:
            fileio.replace(tmp, final)
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)
            raise CollectionError(f"collection {name!r} already exists", 409) from None
        fileio.fsync_dir(root, site="create.rename")
        return cls.open(final, policy, sync_log=False)  # every file and name of it was synced just now

    @classmethod
    def open(cls, path: Path, policy: MergePolicy | None = None, *, verify: bool = True,
             sync_log: bool = True) -> "Collection":
        """Open a collection folder. Segment checksums are verified unless ``verify=False``; the
        manifest, the log folder and the replayed last log are fsynced unless ``sync_log=False`` (a
        check that serves nothing).

        Raises (and the store records the collection as failed) on a missing or unreadable
        manifest, a damaged segment, a missing current log, or log corruption other than a torn
        tail of the last log file (:class:`~lsr.service.wal.WalCorruption`).
        """
        path = Path(path)
        mpath = path / "manifest.json"
        if not mpath.is_file():
            raise CollectionCorrupt("manifest.json is missing")
        try:
            manifest = json.loads(mpath.read_bytes())
        except (ValueError, UnicodeDecodeError) as exc:
            raise CollectionCorrupt(f"manifest.json is not valid JSON ({exc})") from None
        if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
            raise CollectionCorrupt(f"manifest.json: unsupported format {manifest.get('format') if isinstance(manifest, dict) else None!r}")
        if sync_log:
            # The manifest's name may be in the page cache only: a merge that died after its swap
            # (whose file it had synced) but before the folder fsync. What follows acts on it (logs
            # before its wal_start are deleted, the log folder is synced), so make the swap durable
            # first, or a power cut would bring back an older manifest naming logs already gone.
            fileio.fsync_dir(path, site="open.manifest:dir")
        col = cls(path, manifest, policy)
        referenced = {s["name"] for s in manifest["segments"]}
        seg_root = path / "segments"
        for p in sorted(seg_root.iterdir()) if seg_root.exists() else []:
            if p.name not in referenced:  # left by a merge that crashed before its manifest swap
                col._quarantine(p)
        for s in manifest["segments"]:
            seg = Segment.load(seg_root / s["name"], verify=verify)
            dead = np.zeros(len(seg), bool)
            rows = np.asarray(manifest["dead"].get(s["name"], []), np.int64)
            dead[rows] = True
            col.segments.append(seg)
            col.dead[seg.name] = dead
            for r, doc_id in enumerate(seg.ids):
                if not dead[r]:
                    col.loc[doc_id] = (seg.name, r)
        wal_dir = path / "wal"
        start = int(manifest["wal_start"])
        numbers = log_numbers(wal_dir) if wal_dir.is_dir() else []
        try:
            current = current_logs(numbers, start)
        except FileNotFoundError as exc:
            raise CollectionCorrupt(str(exc)) from None
        n_replayed = 0
        last_scan: LogScan | None = None
        for i, n in enumerate(current):
            scan = scan_log(wal_dir / log_name(n), last=(i == len(current) - 1))
            for off, rec in zip(scan.offsets, scan.records):
                try:
                    validate_record(rec, col.dim, col.dense_dim)
                except ValueError as exc:
                    raise WalCorruption(log_name(n), off, f"record fails validation: {exc}") from None
                col._apply(rec)
                n_replayed += 1
            last_scan = scan
        assert last_scan is not None  # current holds at least the log named by the manifest
        col.dropped_tail_bytes = last_scan.size - last_scan.valid_bytes
        for n in numbers:  # folded into segments by a merge whose manifest swap is durable
            if n < start:
                (wal_dir / log_name(n)).unlink(missing_ok=True)
        col._wal = WriteAheadLog(wal_dir, current[-1], valid_bytes=last_scan.valid_bytes, sync=sync_log)
        col._wal_bytes = sum((wal_dir / log_name(n)).stat().st_size for n in current)
        col._publish()
        log.info(
            "opened collection %s: %d docs (%d fresh) in %d segments, %d log records replayed",
            col.name, len(col.loc), len(col.fresh), len(col.segments), n_replayed,
        )
        return col

    def _quarantine(self, seg_path: Path) -> None:
        """Move a segment folder the manifest does not list to ``quarantine/`` (never delete it)."""
        qdir = self.path / "quarantine"
        fileio.makedirs(qdir)
        dest = qdir / seg_path.name
        if dest.exists():
            dest = qdir / f"{seg_path.name}.{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:6]}"
        fileio.replace(seg_path, dest)
        fileio.fsync_dir(qdir, site="quarantine")
        fileio.fsync_dir(seg_path.parent, site="quarantine.segments")
        fileio.fsync_dir(self.path, site="quarantine.collection")
        self.quarantined.append(dest.name)
        log.warning("collection %s: segment folder %s is not in the manifest (a merge cut short?); moved to "
                    "quarantine/%s", self.name, seg_path.name, dest.name)

    def close(self) -> None:
        with self._lock:
            self.closed = True
            if self._wal is not None:
                self._wal.close()
            # Segments are not closed here: searches in flight may still read them through their
            # view; their files close when the last reference goes.

    # ------------------------------------------------------------------ writes
    def _mark_dead(self, where: tuple[str, int], touched: set[str]) -> None:
        seg_name, row = where
        if seg_name == "fresh":
            return
        if seg_name not in touched:
            self.dead[seg_name] = self.dead[seg_name].copy()  # copy-on-write: views keep the old one
            touched.add(seg_name)
        self.dead[seg_name][row] = True

    def _apply(self, rec: Record) -> None:
        touched: set[str] = set()
        seq = int(rec["seq"])
        if rec["op"] == "upsert":
            for d in rec["docs"]:
                doc_id = d["id"]
                old = self.loc.get(doc_id)
                if old is not None:
                    self._mark_dead(old, touched)
                self.fresh[doc_id] = FreshDoc(
                    np.asarray(d["t"], np.int32), np.asarray(d["w"], np.float32), d.get("text"), d.get("metadata"), seq,
                    np.asarray(d["e"], np.float32) if d.get("e") is not None else None,
                )
                self.loc[doc_id] = FRESH
        elif rec["op"] == "delete":
            for doc_id in rec["ids"]:
                old = self.loc.pop(doc_id, None)
                if old is None:
                    continue
                if old == FRESH:
                    self.fresh.pop(doc_id, None)
                else:
                    self._mark_dead(old, touched)
        else:
            raise SegmentError(f"unknown log record op {rec['op']!r}")
        self.seq = max(self.seq, seq)

    def _publish(self) -> None:
        self.view = View(tuple(self.segments), dict(self.dead), dict(self.fresh), self.dim)

    def _check_open(self) -> None:
        if self.closed:
            raise CollectionError(f"collection {self.name!r} was deleted", 404)

    def _log(self) -> WriteAheadLog:
        """The open log (set once :meth:`open` has replayed it)."""
        if self._wal is None:
            raise RuntimeError(f"collection {self.name!r} has no open log")
        return self._wal

    def _append(self, rec: Record) -> None:
        try:
            self._wal_bytes += self._log().append(rec)
        except WalDiskFull:
            raise StorageFull(
                f"collection {self.name!r}: no space left on the data disk; the write was not applied "
                "(free space and retry)") from None

    def upsert(self, docs: Sequence[DocIn]) -> int:
        """Add or replace documents; returns after the log record is fsynced and applied.

        Every vector is validated first (:func:`check_vector`); a violation raises
        :class:`CollectionError` 422 naming the document and nothing is written.
        """
        checked = []
        for d in docs:
            if not isinstance(d.id, str) or not d.id:
                raise CollectionError(f"document id {d.id!r} must be a non-empty string", 422)
            checked.append(check_vector(d.id, d.indices, d.values, self.dim))
        dense: list[np.ndarray | None] = []
        for d in docs:
            if self.dense_dim:
                if d.dense is None:
                    raise CollectionError(f"document {d.id!r}: collection {self.name!r} keeps a dense embedding per "
                                          "document; give text (encoded by its dense model) or dense_vector", 422)
                dense.append(check_dense(d.id, d.dense, self.dense_dim))
            elif d.dense is not None:
                raise CollectionError(f"document {d.id!r}: collection {self.name!r} has no dense model; "
                                      "drop dense_vector", 422)
            else:
                dense.append(None)
        with self._lock:
            self._check_open()
            rec: Record = {
                "seq": self.seq + 1,
                "op": "upsert",
                "docs": [
                    {"id": d.id, "t": idx, "w": val, "text": d.text, "metadata": d.metadata,
                     **({"e": e} if e is not None else {})}
                    for d, (idx, val), e in zip(docs, checked, dense)
                ],
            }
            self._append(rec)
            self._apply(rec)
            self.last_write = time.monotonic()
            self._publish()
            return self.seq

    def delete(self, ids: Iterable[str]) -> tuple[list[str], list[str]]:
        """Delete documents by id; returns ``(deleted, not_found)``."""
        with self._lock:
            self._check_open()
            ids = list(dict.fromkeys(ids))
            found = [i for i in ids if i in self.loc]
            missing = [i for i in ids if i not in self.loc]
            if found:
                rec: Record = {"seq": self.seq + 1, "op": "delete", "ids": found}
                self._append(rec)
                self._apply(rec)
                self.last_write = time.monotonic()
                self._publish()
            return found, missing

    # ------------------------------------------------------------------ reads
    def get(self, doc_id: str, *, with_vector: bool = False) -> dict[str, Any] | None:
        try:
            return self._get(self.loc.get(doc_id), self.view, doc_id, with_vector)
        except (KeyError, StopIteration):
            # Raced with a merge's swap (loc and view change together under the write lock).
            with self._lock:
                return self._get(self.loc.get(doc_id), self.view, doc_id, with_vector)

    @staticmethod
    def _get(where: tuple[str, int] | None, view: View, doc_id: str, with_vector: bool) -> dict[str, Any] | None:
        if where is None:
            return None
        out: dict[str, Any]
        if where == FRESH:
            d = view.fresh[doc_id]
            out = {"id": doc_id, "text": d.text, "metadata": d.metadata}
            vec = (d.indices, d.values)
        else:
            seg = next(s for s in view.segments if s.name == where[0])
            out = seg.doc(where[1])
            vec = seg.vectors.row(where[1])
        if with_vector:
            out["vector"] = {int(t): float(w) for t, w in zip(*vec)}
        return out

    def search(self, queries: SparseBatch, k: int, knobs: dict[str, Any],
               threads: int | None = None, *, allow_partial: bool = False,
               flt: MetadataFilter | None = None) -> tuple[View, list[list[Any]]]:
        # allow_partial matters to a sharded collection (lsr.cluster) only: a local one is never partial
        # list[list[Candidate]] (View.search); left loose for callers that build untyped hit dicts
        # from the candidates (routers/search.py)
        queries.check_dim(self.dim)
        view = self.view
        return view, view.search(queries, k, knobs, threads, flt)

    def __len__(self) -> int:
        return len(self.loc)

    def stats(self) -> dict[str, Any]:
        view = self.view
        seg_info = [
            {
                "name": s.name,
                "kind": s.kind,
                "documents": len(s),
                "deleted": view.dead_counts[s.name],
                "bytes": s.meta.get("_bytes") or _cache_bytes(s),
            }
            for s in view.segments
        ]
        return {
            "documents": len(self.loc),
            "fresh_documents": len(view.fresh),
            "segments": seg_info,
            "segment_count": len(seg_info),
            "bytes": sum(s["bytes"] for s in seg_info) + self._wal_bytes,
            "wal_bytes": self._wal_bytes,
            "generation": self.manifest["generation"],
            "seq": self.seq,
            "merge_failures": self.merge_failures,
            "last_merge_error": self.last_merge_error,
        }

    # ------------------------------------------------------------------ merge
    def _select_folded(self, compact: bool | None) -> list[Segment]:
        """Segments a merge rewrites: all when compacting (asked, too many segments, or too many
        tombstones overall), else each one whose tombstoned share passes the policy's threshold."""
        if not self.segments:
            return []
        if compact:
            return list(self.segments)
        if compact is None:
            total = sum(len(s) for s in self.segments)
            dead = sum(int(d.sum()) for d in self.dead.values())
            if len(self.segments) > self.policy.max_segments or (total and dead / total > self.policy.max_dead_fraction):
                return list(self.segments)
        thr = self.policy.segment_dead_fraction
        return [s for s in self.segments if len(s) and int(self.dead[s.name].sum()) / len(s) > thr]

    def needs_merge(self) -> bool:
        if self._select_folded(None):
            return True
        if not self.fresh:
            return False
        return len(self.fresh) >= self.policy.min_docs or time.monotonic() - self.last_write >= self.policy.idle_s

    def _merge_failed(self, exc: BaseException, what: str) -> CollectionError:
        self.merge_failures += 1
        self.merge_failures_in_row += 1
        self.last_merge_error = f"{what}: {exc}"
        delay = min(300.0, self.policy.retry_s * 2 ** (self.merge_failures_in_row - 1))
        self.next_merge_at = time.monotonic() + delay
        log.error("collection %s: merge failed (%s: %s); the documents stay searchable from the log; retry in %.0f s",
                  self.name, what, exc, delay, exc_info=exc)
        if _is_disk_full(exc):
            return StorageFull(f"collection {self.name!r}: merge failed, no space left on the data disk")
        return MergeFailed(f"collection {self.name!r}: merge failed ({what}: {exc})")

    def merge(self, *, force: bool = False, compact: bool | None = None) -> bool:
        """Fold the fresh documents (and the segments the policy picks, or all when ``compact``)
        into a new segment. Returns whether a merge ran; raises :class:`StorageFull` or
        :class:`MergeFailed` when it failed (counted in ``merge_failures``; nothing changes)."""
        with self._merge_lock:
            with self._lock:
                self._check_open()
                folded = self._select_folded(compact)
                if not self.fresh and not folded:
                    return False
                if not force and not folded and not self.needs_merge():
                    return False
                fresh_snap = list(self.fresh.items())
                folded_dead = {s.name: self.dead[s.name] for s in folded}
                old_wal = self._log().number
                try:  # writes from now on go to a new log, so the old ones can be dropped afterwards
                    new_wal = WriteAheadLog.create(self.path / "wal", old_wal + 1)
                except OSError as exc:
                    raise self._merge_failed(exc, "starting a new log file") from exc
                self._log().close()
                self._wal = new_wal
                generation = self.manifest["generation"] + 1
            # Build outside the write lock: writes and searches go on meanwhile.
            ids: list[str] = []
            sources: list[tuple[str, int]] = []
            texts: list[str | None] = []
            metas: list[dict[str, Any] | None] = []
            dense_rows: list[np.ndarray] = []
            parts: list[SparseBatch] = []
            seg_name = f"seg-{generation:06d}"
            new_seg = None
            try:
                for seg in folded:
                    live_rows = np.flatnonzero(~folded_dead[seg.name])
                    if live_rows.size:
                        parts.append(seg.vectors[live_rows])
                    for row in live_rows.tolist():
                        doc = seg.doc(row)
                        ids.append(seg.ids[row])
                        sources.append((seg.name, row))
                        texts.append(doc.get("text"))
                        metas.append(doc.get("metadata"))
                    if self.dense_dim and seg.dense is not None and live_rows.size:
                        dense_rows.append(np.asarray(seg.dense[live_rows], np.float32))
                if fresh_snap:
                    parts.append(_batch_from_fresh([d for _, d in fresh_snap], self.dim))
                    for doc_id, d in fresh_snap:
                        ids.append(doc_id)
                        sources.append(("fresh", d.seq))
                        texts.append(d.text)
                        metas.append(d.metadata)
                        if self.dense_dim and d.dense is not None:
                            dense_rows.append(d.dense[None, :])
                if ids:
                    vectors = SparseBatch.concat(parts)
                    dense = np.concatenate(dense_rows) if self.dense_dim else None
                    if dense is not None and dense.shape[0] != len(ids):
                        raise SegmentError(f"{len(ids)} documents but {dense.shape[0]} dense embeddings")
                    new_seg = Segment.build(
                        self.path / "segments" / seg_name, vectors, ids, texts, metas, self.config.get("index") or {},
                        dense=dense,
                    )
            except Exception as exc:
                raise self._merge_failed(exc, f"building segment {seg_name}") from exc
            with self._lock:
                if self.closed:
                    return False
                kept = [s for s in self.segments if s not in folded]
                new_dead = {s.name: self.dead[s.name] for s in kept}
                moves: list[tuple[str, int, bool]] = []  # (id, row, from fresh)
                if new_seg is not None:
                    dead = np.zeros(len(new_seg), bool)
                    for r, (doc_id, src) in enumerate(zip(ids, sources)):
                        cur = self.loc.get(doc_id)
                        if src[0] == "fresh":
                            live = cur == FRESH and doc_id in self.fresh and self.fresh[doc_id].seq == src[1]
                        else:
                            live = cur == src
                        if live:
                            moves.append((doc_id, r, src[0] == "fresh"))
                        else:
                            dead[r] = True
                    new_dead[new_seg.name] = dead
                    kept.append(new_seg)
                manifest = dict(self.manifest)
                manifest.update(
                    generation=generation,
                    segments=[{"name": s.name, "kind": s.kind, "documents": len(s)} for s in kept],
                    dead={name: np.flatnonzero(d).tolist() for name, d in new_dead.items() if d.any()},
                    wal_start=old_wal + 1,
                    seq=self.seq,
                )
                durable = self._write_manifest(manifest, new_seg)
                if new_seg is not None:  # else there are no moves
                    for doc_id, r, from_fresh in moves:
                        self.loc[doc_id] = (new_seg.name, r)
                        if from_fresh:
                            del self.fresh[doc_id]
                self.manifest = manifest
                self.segments = kept
                self.dead = new_dead
                self._publish()
                self.merge_failures_in_row = 0
                self.next_merge_at = 0.0
                if durable:
                    for n in log_numbers(self.path / "wal"):
                        if n <= old_wal:
                            p = self.path / "wal" / log_name(n)
                            self._wal_bytes -= p.stat().st_size
                            p.unlink(missing_ok=True)
            if folded and durable:
                for seg in folded:  # open handles in running searches keep the unlinked files alive
                    shutil.rmtree(seg.path, ignore_errors=True)
                try:  # else they would come back at a power cut and be quarantined at the next start
                    fileio.fsync_dir(self.path / "segments", site="merge.cleanup")
                except OSError as exc:
                    log.warning("collection %s: cannot sync segments/ after removing merged segments: %s", self.name, exc)
            log.info(
                "collection %s: merged %d fresh docs%s into %s",
                self.name, len(fresh_snap), f" and {len(folded)} segments" if folded else "", seg_name,
            )
            return True

    def _write_manifest(self, manifest: dict[str, Any], new_seg: Segment | None) -> bool:
        """Write the manifest as atomic_write does, keeping track of how far it got. Once the rename
        happened the merge is committed: returns whether it is also durable. Before that, raises
        the merge's error (the new segment folder is removed and nothing changed)."""
        path = self.path / "manifest.json"
        tmp = path.with_name(".manifest.json.tmp")
        try:
            with fileio.open_new(tmp) as fh:
                fileio.write(fh, json.dumps(manifest).encode())
                fileio.fsync(fh, site="manifest:file")
            fileio.replace(tmp, path)
        except OSError as exc:
            if new_seg is not None:
                shutil.rmtree(new_seg.path, ignore_errors=True)
            tmp.unlink(missing_ok=True)
            raise self._merge_failed(exc, "writing the manifest") from exc
        try:
            fileio.fsync_dir(self.path, site="manifest:dir")
        except OSError as exc:
            # The new manifest is in place but maybe not durable: keep the old logs and segments
            # (a restart may find either manifest, and both must find their files).
            self._merge_failed(exc, "syncing the collection folder after the manifest swap")
            return False
        return True

    def verify(self) -> None:
        """Check every segment's checksums and that the manifest references only whole segments."""
        for s in self.manifest["segments"]:
            verify_segment(self.path / "segments" / s["name"])


def _cache_bytes(seg: Segment) -> int:
    size = seg.size_bytes()
    seg.meta["_bytes"] = size
    return size


def _reason(exc: BaseException, path: Path) -> str:
    """An error's message without server paths (collection-relative file names only)."""
    msg = str(exc)
    for prefix in (str(path) + "/", str(path)):
        msg = msg.replace(prefix, "")
    return f"{type(exc).__name__}: {msg}"


class CollectionStore:
    """All collections under ``<data>/collections``; holds the data folder's process lock.

    ``collections``: name -> open :class:`Collection`. ``failed``: name -> why it could not be
    opened (collection-relative file names, no server paths); :meth:`get` raises
    :class:`CollectionFailed` (503) for those, :meth:`create` 409.
    """

    def __init__(self, data_dir: str | Path, policy: MergePolicy | None = None) -> None:
        self.data_dir = Path(data_dir)
        self.root = self.data_dir / "collections"
        fileio.makedirs(self.data_dir)
        self._lock_fh = os.fdopen(os.open(self.data_dir / "LOCK", os.O_RDWR | os.O_CREAT, fileio.FILE_MODE), "r+")
        try:
            fcntl.flock(self._lock_fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self._lock_fh.close()
            raise RuntimeError(
                f"{self.data_dir} is in use by another lsr process (a running server?); stop it or use another --data"
            ) from None
        if not self.root.is_dir():
            fileio.makedirs(self.root)
            fileio.fsync_dir(self.data_dir, site="store.root")
        self.policy = policy or MergePolicy()
        self.collections: dict[str, Collection] = {}
        self.failed: dict[str, str] = {}
        self._lock = threading.Lock()
        self.ready = False
        self._stop = threading.Event()
        self._merger: threading.Thread | None = None

    # ------------------------------------------------------------------ metrics
    @property
    def merge_failures(self) -> dict[str, int]:
        """name -> merges that failed since start (a counter)."""
        return {name: col.merge_failures for name, col in list(self.collections.items())}

    def metrics(self) -> dict[str, Any]:
        """Per-collection gauges and counters for an exporter, plus the failed collections."""
        out = {}
        for name, col in list(self.collections.items()):
            view = col.view
            out[name] = {
                "documents": len(col.loc),
                "fresh_documents": len(view.fresh),
                "segments": len(view.segments),
                "log_bytes": col._wal_bytes,
                "merge_failures": col.merge_failures,
                "deleted_rows": sum(view.dead_counts.values()),
            }
        return {"collections": out, "failed": dict(self.failed)}

    # ------------------------------------------------------------------ open / lookup
    def load_all(self, *, mark_ready: bool = True) -> None:
        """Open every collection, verifying segment checksums. One that cannot open goes to
        ``failed``, not away."""
        for p in sorted(self.root.iterdir()):
            if p.name.startswith(".tmp-") or p.name.startswith(".trash-"):
                # an unfinished create (never acknowledged) or a deleted collection
                shutil.rmtree(p, ignore_errors=True)
                continue
            if not p.is_dir() or not NAME_RE.match(p.name):
                continue
            self._open_one(p)
        self.ready = mark_ready

    def _open_one(self, p: Path) -> Collection | None:
        try:
            col = Collection.open(p, self.policy, verify=True)
        except Exception as exc:
            reason = _reason(exc, p)
            self.failed[p.name] = reason
            log.error("collection %s failed to open and is unavailable until repaired: %s", p.name, reason)
            return None
        self.collections[p.name] = col
        self.failed.pop(p.name, None)
        return col

    def reopen(self, name: str) -> Collection:
        """Try a failed collection again (after ``lsr repair`` with the server stopped... or a fix)."""
        validate_name(name)
        with self._lock:
            if name in self.collections:
                return self.collections[name]
            col = self._open_one(self.root / name)
            if col is None:
                raise CollectionFailed(name, self.failed[name])
            return col

    def get(self, name: str) -> Collection:
        validate_name(name)
        col = self.collections.get(name)
        if col is None:
            reason = self.failed.get(name)
            if reason is not None:
                raise CollectionFailed(name, reason)
            raise CollectionError(f"collection {name!r} not found", 404)
        return col

    def create(self, name: str, config: dict[str, Any]) -> Collection:
        validate_name(name)
        with self._lock:
            if name in self.failed:
                raise CollectionError(
                    f"collection {name!r} already exists but failed to open ({self.failed[name]}); repair or delete it",
                    409)
            if name in self.collections:
                raise CollectionError(f"collection {name!r} already exists", 409)
            col = Collection.create(self.root, name, config, self.policy)
            self.collections[name] = col
            return col

    def delete(self, name: str) -> None:
        """Delete a collection (also a failed one): renamed away durably, then removed."""
        validate_name(name)
        with self._lock:
            if name in self.failed:
                path, col = self.root / name, None
            else:
                col = self.get(name)
                path = col.path
            lock = col._merge_lock if col is not None else threading.Lock()
            with lock:
                if col is not None:
                    col.close()
                trash = self.root / f".trash-{name}-{uuid.uuid4().hex[:8]}"
                fileio.replace(path, trash)
                fileio.fsync_dir(self.root, site="store.delete")
                self.collections.pop(name, None)
                self.failed.pop(name, None)
            shutil.rmtree(trash, ignore_errors=True)

    # ------------------------------------------------------------------ background merges
    def start_merger(self, interval: float = 1.0) -> None:
        def loop() -> None:
            while not self._stop.wait(interval):
                for col in list(self.collections.values()):
                    if self._stop.is_set():
                        return
                    if col.closed or time.monotonic() < col.next_merge_at:
                        continue
                    try:
                        if col.needs_merge():
                            col.merge()
                    except CollectionError:
                        pass  # logged and counted by the merge; retried after its back-off
                    except Exception:
                        log.exception("background merge of %s failed", col.name)

        self._merger = threading.Thread(target=loop, name="lsr-merge", daemon=True)
        self._merger.start()

    def close(self) -> None:
        self._stop.set()
        if self._merger is not None:
            self._merger.join(timeout=30)
        for col in list(self.collections.values()):
            col.close()
        try:
            fcntl.flock(self._lock_fh.fileno(), fcntl.LOCK_UN)
            self._lock_fh.close()
        except OSError:
            pass
