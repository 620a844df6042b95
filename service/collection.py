"""Durable, updatable collections: a manifest, immutable segments, a fresh exact segment, a WAL.

Layout of ``<data>/collections/<name>/``: ``manifest.json`` (replaced atomically), ``segments/<seg>/``
(see :mod:`lsr.service.segment`), ``wal/NNNNNN.log``. A write is appended to the log and fsynced
before it is applied in memory and acknowledged; a restart replays the log files the manifest has
not folded in. Searches read an immutable :class:`View`, so writers never block them.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import re
import shutil
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from lsr.index.sparse import SparseBatch

from .segment import ExactScorer, Segment, SegmentError, verify_segment
from .wal import WriteAheadLog, atomic_write, fsync_dir, log_numbers, log_name, replay

log = logging.getLogger(__name__)

MANIFEST_FORMAT = 1
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
FRESH = ("fresh", -1)


class CollectionError(ValueError):
    """Bad request against a collection (maps to a 4xx); ``status`` says which."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


def validate_name(name: str) -> str:
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise CollectionError(
            f"invalid collection name {name!r}: use 1-64 letters, digits, '_' or '-', starting with a letter or digit",
            422,
        )
    return name


@dataclass
class FreshDoc:
    indices: np.ndarray
    values: np.ndarray
    text: str | None
    metadata: dict | None
    seq: int


@dataclass
class DocIn:
    """One resolved document to write: its vector as sorted term ids and weights."""

    id: str
    indices: np.ndarray
    values: np.ndarray
    text: str | None = None
    metadata: dict | None = None


@dataclass
class Candidate:
    id: str
    score: float
    segment: str  # segment name or "fresh"
    row: int


class View:
    """An immutable snapshot of a collection for searching."""

    def __init__(self, segments: tuple, dead: dict, fresh: dict, dim: int):
        self.segments = segments
        self.dead = dead  # seg name -> bool array (never mutated after publish)
        self.dead_counts = {s.name: int(dead[s.name].sum()) for s in segments}
        self.fresh = fresh  # id -> FreshDoc (a private copy)
        self.dim = dim
        self._fresh_ids: list[str] | None = None
        self._scorer: ExactScorer | None = None
        self._lock = threading.Lock()

    def fresh_scorer(self) -> tuple[list[str], ExactScorer]:
        with self._lock:
            if self._scorer is None:
                ids = list(self.fresh)
                batch = _batch_from_fresh([self.fresh[i] for i in ids], self.dim)
                self._fresh_ids, self._scorer = ids, ExactScorer(batch)
            return self._fresh_ids, self._scorer

    def search(self, queries: SparseBatch, k: int, knobs: dict, threads: int | None) -> list[list[Candidate]]:
        nq = len(queries)
        per_query: list[list[Candidate]] = [[] for _ in range(nq)]
        for seg in self.segments:
            dead = self.dead[seg.name]
            n_dead = self.dead_counts[seg.name]
            if len(seg) - n_dead <= 0:
                continue
            # Over-fetch by the number of tombstoned rows so filtering them leaves k.
            rows, scores = seg.search(queries, k + n_dead, knobs, threads)
            for q in range(nq):
                for r, s in zip(rows[q], scores[q]):
                    if r < 0 or not np.isfinite(s) or dead[r]:
                        continue
                    per_query[q].append(Candidate(seg.ids[r], float(s), seg.name, int(r)))
        if self.fresh:
            ids, scorer = self.fresh_scorer()
            rows, scores = scorer.search(queries, min(k, len(ids)))
            for q in range(nq):
                for r, s in zip(rows[q], scores[q]):
                    if r >= 0 and np.isfinite(s):
                        per_query[q].append(Candidate(ids[r], float(s), "fresh", int(r)))
        out = []
        for cands in per_query:
            cands.sort(key=lambda c: (-c.score, c.id))
            out.append(cands[:k])
        return out

    def vector(self, cand: Candidate) -> tuple[np.ndarray, np.ndarray]:
        if cand.segment == "fresh":
            d = self.fresh[cand.id]
            return d.indices, d.values
        for seg in self.segments:
            if seg.name == cand.segment:
                return seg.vectors.row(cand.row)
        raise KeyError(cand.segment)

    def document(self, cand: Candidate, *, text: bool = True) -> dict:
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
    max_dead_fraction: float = 0.25  # or when this share of sealed rows is tombstoned


class Collection:
    """One collection folder, opened: replayed log, loaded segments, and a published View."""

    def __init__(self, path: Path, manifest: dict, policy: MergePolicy | None = None):
        self.path = Path(path)
        self.name = manifest["name"]
        self.manifest = manifest
        self.config = manifest["config"]
        self.dim = int(self.config["dim"])
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

    # ------------------------------------------------------------------ create / open
    @classmethod
    def create(cls, root: Path, name: str, config: dict, policy: MergePolicy | None = None) -> "Collection":
        validate_name(name)
        root = Path(root)
        final = root / name
        if final.exists():
            raise CollectionError(f"collection {name!r} already exists", 409)
        tmp = root / f".tmp-{name}-{uuid.uuid4().hex[:8]}"
        (tmp / "segments").mkdir(parents=True)
        (tmp / "wal").mkdir()
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
        atomic_write(tmp / "manifest.json", json.dumps(manifest, indent=1).encode())
        fsync_dir(tmp / "segments")
        fsync_dir(tmp / "wal")
        fsync_dir(tmp)
        try:
            os.rename(tmp, final)  # fails if a concurrent create won
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)
            raise CollectionError(f"collection {name!r} already exists", 409) from None
        fsync_dir(root)
        return cls.open(final, policy)

    @classmethod
    def open(cls, path: Path, policy: MergePolicy | None = None, *, verify: bool = False) -> "Collection":
        path = Path(path)
        manifest = json.loads((path / "manifest.json").read_text())
        if manifest.get("format") != MANIFEST_FORMAT:
            raise SegmentError(f"{path}/manifest.json: unsupported format {manifest.get('format')!r}")
        col = cls(path, manifest, policy)
        referenced = {s["name"] for s in manifest["segments"]}
        seg_root = path / "segments"
        for p in seg_root.iterdir() if seg_root.exists() else []:
            if p.name not in referenced:  # left by a merge that crashed before its manifest swap
                log.info("%s: removing unreferenced segment %s", col.name, p.name)
                shutil.rmtree(p, ignore_errors=True)
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
        wal_dir.mkdir(exist_ok=True)
        start = int(manifest["wal_start"])
        for n in log_numbers(wal_dir):
            if n < start:
                (wal_dir / log_name(n)).unlink(missing_ok=True)
        n_replayed = 0
        for _, rec in replay(wal_dir, start):
            col._apply(rec)
            n_replayed += 1
        numbers = log_numbers(wal_dir)
        col._wal = WriteAheadLog(wal_dir, numbers[-1] if numbers else start)
        col._wal_bytes = sum((wal_dir / log_name(n)).stat().st_size for n in log_numbers(wal_dir))
        col._publish()
        log.info(
            "opened collection %s: %d docs (%d fresh) in %d segments, %d log records replayed",
            col.name, len(col.loc), len(col.fresh), len(col.segments), n_replayed,
        )
        return col

    def close(self) -> None:
        with self._lock:
            self.closed = True
            if self._wal is not None:
                self._wal.close()
            # Segments are not closed here: searches in flight may still read them through their
            # view; their files close when the last reference goes.

    # ------------------------------------------------------------------ writes
    def _mark_dead(self, where: tuple[str, int], touched: set) -> None:
        seg_name, row = where
        if seg_name == "fresh":
            return
        if seg_name not in touched:
            self.dead[seg_name] = self.dead[seg_name].copy()  # copy-on-write: views keep the old one
            touched.add(seg_name)
        self.dead[seg_name][row] = True

    def _apply(self, rec: dict) -> None:
        touched: set = set()
        seq = int(rec["seq"])
        if rec["op"] == "upsert":
            for d in rec["docs"]:
                doc_id = d["id"]
                old = self.loc.get(doc_id)
                if old is not None:
                    self._mark_dead(old, touched)
                self.fresh[doc_id] = FreshDoc(
                    np.asarray(d["t"], np.int32), np.asarray(d["w"], np.float32), d.get("text"), d.get("metadata"), seq
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

    def upsert(self, docs: Sequence[DocIn]) -> int:
        """Add or replace documents; returns after the log record is fsynced and applied."""
        for d in docs:
            if d.indices.size and (int(d.indices.max()) >= self.dim or int(d.indices.min()) < 0):
                raise CollectionError(f"document {d.id!r}: term id outside the collection's vocabulary [0, {self.dim})", 422)
        with self._lock:
            self._check_open()
            rec = {
                "seq": self.seq + 1,
                "op": "upsert",
                "docs": [
                    {"id": d.id, "t": d.indices.tolist(), "w": d.values.tolist(), "text": d.text, "metadata": d.metadata}
                    for d in docs
                ],
            }
            self._wal_bytes += self._wal.append(rec)
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
                rec = {"seq": self.seq + 1, "op": "delete", "ids": found}
                self._wal_bytes += self._wal.append(rec)
                self._apply(rec)
                self.last_write = time.monotonic()
                self._publish()
            return found, missing

    # ------------------------------------------------------------------ reads
    def get(self, doc_id: str, *, with_vector: bool = False) -> dict | None:
        try:
            return self._get(self.loc.get(doc_id), self.view, doc_id, with_vector)
        except (KeyError, StopIteration):
            # Raced with a merge's swap (loc and view change together under the write lock).
            with self._lock:
                return self._get(self.loc.get(doc_id), self.view, doc_id, with_vector)

    @staticmethod
    def _get(where, view: View, doc_id: str, with_vector: bool) -> dict | None:
        if where is None:
            return None
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

    def search(self, queries: SparseBatch, k: int, knobs: dict, threads: int | None = None):
        queries.check_dim(self.dim)
        view = self.view
        return view, view.search(queries, k, knobs, threads)

    def __len__(self) -> int:
        return len(self.loc)

    def stats(self) -> dict:
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
            "bytes": sum(s["bytes"] for s in seg_info) + self._wal_bytes,
            "wal_bytes": self._wal_bytes,
            "generation": self.manifest["generation"],
            "seq": self.seq,
        }

    # ------------------------------------------------------------------ merge
    def needs_merge(self) -> bool:
        if not self.fresh:
            return self._needs_compaction()
        return (
            len(self.fresh) >= self.policy.min_docs
            or time.monotonic() - self.last_write >= self.policy.idle_s
            or self._needs_compaction()
        )

    def _needs_compaction(self) -> bool:
        if len(self.segments) > self.policy.max_segments:
            return True
        total = sum(len(s) for s in self.segments)
        dead = sum(int(d.sum()) for d in self.dead.values())
        return total > 0 and dead / total > self.policy.max_dead_fraction

    def merge(self, *, force: bool = False, compact: bool | None = None) -> bool:
        """Fold the fresh documents (and, when compacting, every segment) into a new segment."""
        with self._merge_lock:
            with self._lock:
                self._check_open()
                if compact is None:
                    compact = self._needs_compaction()
                if not self.fresh and not compact:
                    return False
                if not force and not compact and not self.needs_merge():
                    return False
                fresh_snap = list(self.fresh.items())
                folded = list(self.segments) if compact else []
                folded_dead = {s.name: self.dead[s.name] for s in folded}
                old_wal = self._wal.number
                self._wal.close()
                self._wal = WriteAheadLog(self.path / "wal", old_wal + 1)
                generation = self.manifest["generation"] + 1
            # Build outside the write lock: writes and searches go on meanwhile.
            ids: list[str] = []
            sources: list[tuple] = []
            texts: list = []
            metas: list = []
            parts: list[SparseBatch] = []
            for seg in folded:
                live = np.flatnonzero(~folded_dead[seg.name])
                if live.size:
                    parts.append(seg.vectors[live])
                for r in live:
                    doc = seg.doc(int(r))
                    ids.append(seg.ids[r])
                    sources.append((seg.name, int(r)))
                    texts.append(doc.get("text"))
                    metas.append(doc.get("metadata"))
            if fresh_snap:
                parts.append(_batch_from_fresh([d for _, d in fresh_snap], self.dim))
                for doc_id, d in fresh_snap:
                    ids.append(doc_id)
                    sources.append(("fresh", d.seq))
                    texts.append(d.text)
                    metas.append(d.metadata)
            new_seg = None
            seg_name = f"seg-{generation:06d}"
            if ids:
                vectors = SparseBatch.concat(parts)
                new_seg = Segment.build(
                    self.path / "segments" / seg_name, vectors, ids, texts, metas, self.config.get("index") or {}
                )
            with self._lock:
                if self.closed:
                    return False
                kept = [s for s in self.segments if s not in folded]
                new_dead = {s.name: self.dead[s.name] for s in kept}
                if new_seg is not None:
                    dead = np.zeros(len(new_seg), bool)
                    for r, (doc_id, src) in enumerate(zip(ids, sources)):
                        cur = self.loc.get(doc_id)
                        if src[0] == "fresh":
                            live = cur == FRESH and doc_id in self.fresh and self.fresh[doc_id].seq == src[1]
                        else:
                            live = cur == src
                        if live:
                            self.loc[doc_id] = (new_seg.name, r)
                            if src[0] == "fresh":
                                del self.fresh[doc_id]
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
                atomic_write(self.path / "manifest.json", json.dumps(manifest).encode())
                self.manifest = manifest
                self.segments = kept
                self.dead = new_dead
                self._publish()
                for n in log_numbers(self.path / "wal"):
                    if n <= old_wal:
                        p = self.path / "wal" / log_name(n)
                        self._wal_bytes -= p.stat().st_size
                        p.unlink(missing_ok=True)
            for seg in folded:  # open handles in running searches keep the unlinked files alive
                shutil.rmtree(seg.path, ignore_errors=True)
            log.info(
                "collection %s: merged %d fresh docs%s into %s",
                self.name, len(fresh_snap), f" and {len(folded)} segments" if folded else "", seg_name,
            )
            return True

    def verify(self) -> None:
        """Check every segment's checksums and that the manifest references only whole segments."""
        for s in self.manifest["segments"]:
            verify_segment(self.path / "segments" / s["name"])


def _cache_bytes(seg: Segment) -> int:
    seg.meta["_bytes"] = seg.size_bytes()
    return seg.meta["_bytes"]


class CollectionStore:
    """All collections under ``<data>/collections``; holds the data folder's process lock."""

    def __init__(self, data_dir: str | Path, policy: MergePolicy | None = None):
        self.data_dir = Path(data_dir)
        self.root = self.data_dir / "collections"
        self.root.mkdir(parents=True, exist_ok=True)
        self.policy = policy or MergePolicy()
        self.collections: dict[str, Collection] = {}
        self._lock = threading.Lock()
        self._lock_fh = open(self.data_dir / "LOCK", "a+")
        try:
            fcntl.flock(self._lock_fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self._lock_fh.close()
            raise RuntimeError(
                f"{self.data_dir} is in use by another lsr process (a running server?); stop it or use another --data"
            ) from None
        self.ready = False
        self._stop = threading.Event()
        self._merger: threading.Thread | None = None

    def load_all(self, verify: bool = False, *, mark_ready: bool = True) -> None:
        for p in sorted(self.root.iterdir()):
            if p.name.startswith(".tmp-") or p.name.startswith(".trash-"):
                shutil.rmtree(p, ignore_errors=True)
                continue
            if not (p / "manifest.json").exists():
                continue
            try:
                self.collections[p.name] = Collection.open(p, self.policy, verify=verify)
            except Exception:
                log.exception("cannot open collection %s; it is left out", p)
        self.ready = mark_ready

    def get(self, name: str) -> Collection:
        validate_name(name)
        col = self.collections.get(name)
        if col is None:
            raise CollectionError(f"collection {name!r} not found", 404)
        return col

    def create(self, name: str, config: dict) -> Collection:
        validate_name(name)
        with self._lock:
            if name in self.collections:
                raise CollectionError(f"collection {name!r} already exists", 409)
            col = Collection.create(self.root, name, config, self.policy)
            self.collections[name] = col
            return col

    def delete(self, name: str) -> None:
        with self._lock:
            col = self.get(name)
            with col._merge_lock:
                col.close()
                trash = self.root / f".trash-{name}-{uuid.uuid4().hex[:8]}"
                os.rename(col.path, trash)
                fsync_dir(self.root)
                del self.collections[name]
            shutil.rmtree(trash, ignore_errors=True)

    def start_merger(self, interval: float = 1.0) -> None:
        def loop():
            while not self._stop.wait(interval):
                for col in list(self.collections.values()):
                    if self._stop.is_set():
                        return
                    try:
                        if not col.closed and col.needs_merge():
                            col.merge()
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
