"""One shard replica: a Ray actor that owns a normal lsr data folder (:class:`CollectionStore`).

Everything durable is the hardened single-node code: the write-ahead log (fsynced before a write
returns), segments, merges, quarantine and repair. This class adds what replication needs:

* writes carry the shard's sequence number they must follow (``base_seq``): a replica that is not
  exactly there refuses the write (:class:`SeqMismatch`), so replicas never diverge silently;
* :meth:`ops_after` reads this replica's own log for the records after a sequence number, and
  :meth:`export` / :meth:`install` copy a whole collection folder, for a replica that catches up;
* its own merge loop, gated so a copy never sees a merge half done.

The actor is created by :mod:`lsr.cluster.store`; methods return plain data (no ray import here).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from lsr.index import fileio
from lsr.index.sparse import SparseBatch
from lsr.service.collection import CollectionError, CollectionFailed, CollectionStore, DocIn, MergePolicy, StorageFull
from lsr.service.wal import current_logs, log_name, log_numbers, scan_log

log = logging.getLogger(__name__)


class SeqMismatch(RuntimeError):
    """A write addressed to sequence number N found the replica elsewhere: it must catch up first."""


def _err(exc: BaseException) -> tuple[str, str, int, str]:
    status = exc.status if isinstance(exc, CollectionError) else 500
    kind = "storage_full" if isinstance(exc, StorageFull) else "failed" if isinstance(exc, CollectionFailed) else (
        "seq" if isinstance(exc, SeqMismatch) else "collection")
    return ("err", kind, status, str(exc))


class ShardReplica:
    """Replica ``replica`` of shard ``shard``: the data folder ``<root>/shard-SSS-replica-R``."""

    def __init__(self, root: str, shard: int, replica: int, merge_min_docs: int = 1000, merge_idle_s: float = 10.0,
                 merge_interval_s: float = 1.0) -> None:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        self.shard, self.replica = shard, replica
        self.folder = Path(root) / f"shard-{shard:03d}-replica-{replica}"
        self.incarnation = uuid.uuid4().hex  # a restarted actor has a new one: the coordinator resyncs it
        self.started = time.time()
        # the store replays every collection's own log here: what this replica acknowledged is back
        self.store = CollectionStore(self.folder, MergePolicy(min_docs=merge_min_docs, idle_s=merge_idle_s))
        self.store.load_all()
        (self.folder / "LOCK").write_text(f"{os.getpid()}\n")
        self._gate = threading.RLock()  # merges vs. copies of a collection folder
        self._stop = threading.Event()
        self._merger = threading.Thread(target=self._merge_loop, args=(merge_interval_s,), daemon=True,
                                        name="lsr-replica-merge")
        self._merger.start()
        log.info("shard %d replica %d up in %s (%d collections, %d failed)", shard, replica, self.folder,
                 len(self.store.collections), len(self.store.failed))

    # ------------------------------------------------------------------ state
    def status(self) -> dict[str, Any]:
        """Incarnation, node, and per collection its sequence number and config (or why it failed)."""
        cols = {n: {"seq": c.seq, "config": c.config, "created_at": c.manifest.get("created_at", 0.0),
                    "documents": len(c)} for n, c in list(self.store.collections.items())}
        import ray  # only inside the actor: the node this replica runs on

        return {"incarnation": self.incarnation, "shard": self.shard, "replica": self.replica, "pid": os.getpid(),
                "node": ray.get_runtime_context().get_node_id(), "collections": cols, "failed": dict(self.store.failed)}

    def ping(self) -> str:
        return self.incarnation

    def _check(self, inc: str) -> None:
        # a call meant for an earlier life of this actor: the coordinator must catch it up first
        if inc != self.incarnation:
            raise SeqMismatch(f"shard {self.shard} replica {self.replica} restarted (a new incarnation)")

    # ------------------------------------------------------------------ collections
    def create(self, inc: str, name: str, config: dict[str, Any]) -> Any:
        try:
            self._check(inc)
            col = self.store.create(name, config)
            return ("ok", {"seq": col.seq, "created_at": col.manifest.get("created_at", 0.0)})
        except (CollectionError, OSError, SeqMismatch) as exc:
            return _err(exc)

    def drop(self, inc: str, name: str) -> Any:
        try:
            self._check(inc)
            with self._gate:
                if name in self.store.collections or name in self.store.failed:
                    self.store.delete(name)
            return ("ok", None)
        except (CollectionError, OSError, SeqMismatch) as exc:
            return _err(exc)

    # ------------------------------------------------------------------ writes
    def upsert(self, inc: str, name: str, base_seq: int, rows: dict[str, Any]) -> Any:
        """Apply one write that must follow ``base_seq``; returns the new sequence number once fsynced.
        ``rows``: the shard's documents as columns (ids, CSR indptr/t/w, optional text and metadata lists)."""
        try:
            self._check(inc)
            col = self.store.get(name)
            if col.seq != base_seq:
                raise SeqMismatch(f"shard {self.shard} replica {self.replica}: {name} at seq {col.seq}, write follows {base_seq}")
            ptr, t, w = rows["indptr"], rows["t"], rows["w"]
            texts, meta = rows.get("text"), rows.get("metadata")
            seq = col.upsert([DocIn(d, t[ptr[i]:ptr[i + 1]], w[ptr[i]:ptr[i + 1]], None if texts is None else texts[i],
                                    None if meta is None else meta[i]) for i, d in enumerate(rows["ids"])])
            return ("ok", seq)
        except (CollectionError, OSError, SeqMismatch) as exc:
            return _err(exc)

    def delete(self, inc: str, name: str, base_seq: int, ids: list[str]) -> Any:
        try:
            self._check(inc)
            col = self.store.get(name)
            if col.seq != base_seq:
                raise SeqMismatch(f"shard {self.shard} replica {self.replica}: {name} at seq {col.seq}, write follows {base_seq}")
            found, missing = col.delete(ids)
            return ("ok", (found, missing, col.seq))
        except (CollectionError, OSError, SeqMismatch) as exc:
            return _err(exc)

    def merge(self, inc: str, name: str, force: bool, compact: bool | None) -> Any:
        try:
            self._check(inc)
            with self._gate:
                return ("ok", self.store.get(name).merge(force=force, compact=compact))
        except (CollectionError, OSError, SeqMismatch) as exc:
            return _err(exc)

    # ------------------------------------------------------------------ reads
    def search(self, inc: str, name: str, queries: SparseBatch, k: int, knobs: dict[str, Any], threads: int,
               text: bool) -> Any:
        """Per query: ``[(id, score, metadata, text)]``, best first, ties by id (the single-node order)."""
        try:
            self._check(inc)
            view, results = self.store.get(name).search(queries, k, knobs, threads)
            out = []
            for cands in results:
                row = []
                for c in cands:
                    doc = view.document(c, text=text)
                    row.append((c.id, c.score, doc.get("metadata"), doc.get("text") if text else None))
                out.append(row)
            return ("ok", out)
        except (CollectionError, OSError, SeqMismatch) as exc:
            return _err(exc)

    def get(self, inc: str, name: str, doc_id: str, with_vector: bool) -> Any:
        try:
            self._check(inc)
            return ("ok", self.store.get(name).get(doc_id, with_vector=with_vector))
        except (CollectionError, OSError, SeqMismatch) as exc:
            return _err(exc)

    def stats(self, inc: str, name: str) -> Any:
        try:
            self._check(inc)
            return ("ok", self.store.get(name).stats())
        except (CollectionError, OSError, SeqMismatch) as exc:
            return _err(exc)

    def ids(self, inc: str, name: str) -> Any:
        """Every live document id with its vector's checksum (convergence checks in tests and repair)."""
        try:
            self._check(inc)
            col = self.store.get(name)
            out = {}
            for doc_id in list(col.loc):
                doc = col.get(doc_id, with_vector=True)
                if doc is not None:
                    blob = json.dumps([sorted(doc["vector"].items()), doc.get("text"), doc.get("metadata")])
                    out[doc_id] = hashlib.blake2b(blob.encode(), digest_size=8).hexdigest()
            return ("ok", out)
        except (CollectionError, OSError, SeqMismatch) as exc:
            return _err(exc)

    # ------------------------------------------------------------------ catching up
    def ops_after(self, inc: str, name: str, seq: int) -> Any:
        """The log records after ``seq``, in order, or None when this replica's logs no longer hold
        them all (a merge folded them into a segment: copy the folder instead)."""
        try:
            self._check(inc)
            with self._gate:
                col = self.store.get(name)
                if col.seq == seq:
                    return ("ok", [])
                wal = col.path / "wal"
                recs = []
                for n in current_logs(log_numbers(wal), int(col.manifest["wal_start"])):
                    recs += [r for r in scan_log(wal / log_name(n), last=True).records if int(r["seq"]) > seq]
                if not recs or int(recs[0]["seq"]) != seq + 1 or int(recs[-1]["seq"]) != col.seq:
                    return ("ok", None)
                return ("ok", recs)
        except (CollectionError, OSError, SeqMismatch) as exc:
            return _err(exc)

    def apply(self, inc: str, name: str, records: list[dict[str, Any]]) -> Any:
        """Apply records copied from another replica's log (each must follow this one's seq)."""
        try:
            self._check(inc)
            col = self.store.get(name)
            for rec in records:
                if int(rec["seq"]) != col.seq + 1:
                    raise SeqMismatch(f"{name}: record {rec['seq']} does not follow seq {col.seq}")
                if rec["op"] == "upsert":
                    col.upsert([DocIn(d["id"], np.asarray(d["t"], np.int64), np.asarray(d["w"], np.float64),
                                      d.get("text"), d.get("metadata")) for d in rec["docs"]])
                else:
                    col.delete(rec["ids"])
                if col.seq != int(rec["seq"]):
                    raise SeqMismatch(f"{name}: record {rec['seq']} left the replica at seq {col.seq}")
            return ("ok", col.seq)
        except (CollectionError, OSError, SeqMismatch) as exc:
            return _err(exc)

    def export(self, inc: str, name: str) -> Any:
        """The collection folder's files (manifest, listed segments, current logs) as bytes."""
        try:
            self._check(inc)
            with self._gate:
                col = self.store.get(name)
                path = col.path
                manifest_bytes = (path / "manifest.json").read_bytes()
                manifest = json.loads(manifest_bytes)
                files: dict[str, bytes] = {"manifest.json": manifest_bytes}
                for s in manifest["segments"]:
                    for p in sorted((path / "segments" / s["name"]).rglob("*")):
                        if p.is_file():
                            files[str(p.relative_to(path))] = p.read_bytes()
                wal = path / "wal"
                for n in current_logs(log_numbers(wal), int(manifest["wal_start"])):
                    files[f"wal/{log_name(n)}"] = (wal / log_name(n)).read_bytes()
                return ("ok", {"seq": col.seq, "files": files})
        except (CollectionError, OSError, SeqMismatch) as exc:
            return _err(exc)

    def install(self, inc: str, name: str, files: dict[str, bytes]) -> Any:
        """Replace collection ``name`` with a copy of another replica's folder, durably, then open it."""
        root = self.store.root
        tmp = root / f".tmp-{name}-{uuid.uuid4().hex[:8]}"  # removed at the next start if we crash
        try:
            self._check(inc)
            with self._gate:
                dirs = set()
                for rel, data in files.items():
                    dest = tmp / rel
                    fileio.makedirs(dest.parent)
                    dirs.add(dest.parent)
                    with fileio.open_new(dest) as fh:
                        fileio.write(fh, data)
                        fileio.fsync(fh, site="cluster.install:file")
                fileio.makedirs(tmp / "segments")
                fileio.makedirs(tmp / "wal")
                for d in sorted(dirs | {tmp / "segments", tmp / "wal", tmp}, key=lambda p: -len(p.parts)):
                    fileio.fsync_dir(d, site="cluster.install:dir")
                if name in self.store.collections or name in self.store.failed:
                    self.store.delete(name)
                fileio.replace(tmp, root / name)
                fileio.fsync_dir(root, site="cluster.install:rename")
                col = self.store.reopen(name)
                return ("ok", col.seq)
        except (CollectionError, OSError, SeqMismatch) as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            return _err(exc)

    # ------------------------------------------------------------------ background merges
    def _merge_loop(self, interval: float) -> None:
        while not self._stop.wait(interval):
            for col in list(self.store.collections.values()):
                if col.closed or time.monotonic() < col.next_merge_at:
                    continue
                try:
                    with self._gate:
                        if not col.closed and col.needs_merge():
                            col.merge()
                except CollectionError:
                    pass  # logged and counted by the merge; retried after its back-off
                except Exception:
                    log.exception("background merge of %s failed", col.name)

    def close(self) -> None:
        self._stop.set()
        self._merger.join(timeout=30)
        self.store.close()
