"""The coordinator: a sharded, replicated collection store with the single-node store's interface.

:class:`ClusterStore` stands where :class:`lsr.service.collection.CollectionStore` stands in the
service (``lsr serve --cluster``): the routers call ``get``/``create``/``delete`` and the same
methods on a :class:`ClusterCollection` (``upsert``, ``delete``, ``get``, ``search``, ``stats``,
``merge``), so the REST API does not change. Documents go to shard ``blake2b(id) mod N``; each
shard has R replicas (:class:`lsr.cluster.replica.ShardReplica` actors, each owning a normal
collection folder on its node's disk).

Consistency model (docs/cluster.md): writes to one shard are serialised here and carry the
shard's sequence number; a write goes to every live replica and is acknowledged once all of them
have fsynced it. A replica that failed a call, or restarted, leaves the live set and serves nothing
until it has caught up: its own log replayed by its restart, then the records it missed copied
from a live replica's log (or the whole folder when a merge has folded them away). Searches go to
one live replica per shard and merge the top-k by (score desc, id asc), the single-node order.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from lsr.index.sparse import SparseBatch
from lsr.service.collection import (Candidate, CollectionError, CollectionFailed, DocIn, StorageFull, check_rows, check_vector,
                                    validate_dim, validate_name)
from lsr.service.errors import ApiError

from .coalesce import Coalescer
from .replica import ShardReplica
from .runtime import NAMESPACE, require_ray

log = logging.getLogger(__name__)

_BUNDLE_BYTES = 1 << 20  # what a replica reserves (Ray's "memory" resource): a placement token only


def shard_of(doc_id: str, n_shards: int) -> int:
    """The shard of a document id: a stable hash (blake2b, the same in every process and release)."""
    digest = hashlib.blake2b(doc_id.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "little") % n_shards


class ShardUnavailable(ApiError):
    """No live replica holds a shard: 503 (searches may ask for ``allow_partial`` instead)."""

    def __init__(self, detail: str) -> None:
        super().__init__(503, "shard_unavailable", detail, {"retry-after": "1"})


class ReplicaDown(Exception):
    """A replica did not answer (its actor died, is restarting, or timed out)."""


@dataclass
class Replica:
    handle: Any
    shard: int
    index: int
    live: bool = False
    incarnation: str | None = None
    last_error: str | None = None


@dataclass
class Shard:
    index: int
    replicas: list[Replica]
    lock: threading.Lock = field(default_factory=threading.Lock)  # writes and catch-ups of this shard
    committed: dict[str, int] = field(default_factory=dict)  # collection -> acknowledged sequence number
    rr: Any = field(default_factory=itertools.count)

    def live(self) -> list[Replica]:
        return [r for r in self.replicas if r.live]


def _raise(out: Any, what: str) -> Any:
    """Unwrap a replica's ``("ok", value)`` or raise its ``("err", kind, status, message)`` here."""
    if out[0] == "ok":
        return out[1]
    _, kind, status, msg = out
    if kind == "storage_full":
        raise StorageFull(msg)
    if kind == "seq":
        raise ReplicaDown(msg)
    raise CollectionError(msg, status)


def _check_layout(root: Path, shards: int, replicas: int) -> None:
    """Refuse to open replica folders (visible from here) laid out for another shard count: their
    documents were placed by ``mod`` another N, and a search would miss them."""
    if not root.is_dir():
        return
    found = {p.name for p in root.glob("shard-*-replica-*") if p.is_dir()}
    shard_ids = {int(n.split("-")[1]) for n in found if n.split("-")[1].isdigit()}
    if shard_ids and max(shard_ids) + 1 != shards:
        raise ValueError(f"{root} holds replicas of {max(shard_ids) + 1} shards; open it with --shards "
                         f"{max(shard_ids) + 1} (re-sharding is not supported: ingest into a new folder)")


class ClusterStore:
    """Collections sharded over ``len(shards)`` shards of R replicas each (see the module docstring)."""

    def __init__(self, handles: Sequence[Sequence[Any]], *, timeout_s: float = 30.0, monitor_s: float = 0.5,
                 coalesce: bool = True) -> None:
        self.ray = require_ray()
        self.coalesce = coalesce  # concurrent searches with the same options share one scatter
        self.shards = [Shard(s, [Replica(h, s, r) for r, h in enumerate(row)]) for s, row in enumerate(handles)]
        self.n_shards = len(self.shards)
        self.timeout_s = timeout_s
        self.monitor_s = monitor_s
        self.collections: dict[str, ClusterCollection] = {}
        self.failed: dict[str, str] = {}
        self.ready = False
        self.configs: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()  # collection create / delete
        self._stop = threading.Event()
        self._monitor: threading.Thread | None = None
        self.resyncs = 0  # replicas brought back (a counter)
        self.copied_records = 0
        self.copied_folders = 0
        self.placement_groups: list[str] = []

    # ------------------------------------------------------------------ launching
    @classmethod
    def launch(cls, data_root: str | Path, shards: int, replicas: int, *, cluster_name: str = "lsr",
               merge_min_docs: int = 1000, merge_idle_s: float = 10.0, num_cpus: float = 0,
               max_concurrency: int = 16, timeout_s: float = 30.0, coalesce: bool = True) -> "ClusterStore":
        """Start (or find, by name) the N x R replica actors on a connected Ray cluster.

        The replicas of a shard are placed on distinct nodes by a placement group (STRICT_SPREAD
        when the cluster has R nodes or more); when a node is lost Ray moves its bundle to another
        node and restarts the actor there.
        Each owns ``data_root/shard-SSS-replica-R`` on its node's disk. Actors are restarted by Ray
        without limit; a call in flight when one dies fails and the coordinator retries elsewhere.
        """
        ray = require_ray()
        from ray.util import get_placement_group, placement_group
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        if shards < 1 or replicas < 1:
            raise ValueError(f"--shards and --replicas must be at least 1, got {shards} and {replicas}")
        _check_layout(Path(data_root), shards, replicas)
        n_nodes = len([n for n in ray.nodes() if n.get("Alive")])
        actor = ray.remote(ShardReplica)
        handles = []
        for s in range(shards):
            # one placement group per shard, a bundle per replica on distinct nodes (STRICT_SPREAD);
            # the bundles hold 1 MiB of Ray's "memory" resource only, so CPUs stay free for Ray Data
            pg_name = f"{cluster_name}-shard-{s:03d}"
            try:
                pg = get_placement_group(pg_name)
            except ValueError:
                pg = placement_group([{"memory": _BUNDLE_BYTES}] * replicas, name=pg_name, lifetime="detached",
                                     strategy="STRICT_SPREAD" if n_nodes >= replicas else "SPREAD")
            if not pg.wait(timeout_seconds=120):
                raise RuntimeError(f"shard {s}: Ray could not place {replicas} replicas on distinct nodes")
            row = []
            for r in range(replicas):
                row.append(actor.options(
                    name=f"{cluster_name}-shard-{s:03d}-replica-{r}", namespace=NAMESPACE, get_if_exists=True,
                    lifetime="detached", max_restarts=-1, max_task_retries=0, num_cpus=num_cpus,
                    memory=_BUNDLE_BYTES, max_concurrency=max_concurrency,
                    scheduling_strategy=PlacementGroupSchedulingStrategy(pg, placement_group_bundle_index=r),
                ).remote(str(data_root), s, r, merge_min_docs, merge_idle_s))
            handles.append(row)
        store = cls(handles, timeout_s=timeout_s, coalesce=coalesce)
        store.placement_groups = [f"{cluster_name}-shard-{s:03d}" for s in range(shards)]
        return store


    def kill(self) -> None:
        """Stop the replica actors (their folders stay; a later launch opens them again)."""
        self.close()
        for sh in self.shards:
            for rep in sh.replicas:
                try:
                    self.ray.kill(rep.handle, no_restart=True)
                except Exception as exc:  # noqa: BLE001 - already gone
                    log.debug("kill %s/%s: %s", rep.shard, rep.index, exc)
        from ray.util import get_placement_group, remove_placement_group

        for name in self.placement_groups:
            try:
                remove_placement_group(get_placement_group(name))
            except ValueError:
                pass

    # ------------------------------------------------------------------ calls
    def call(self, rep: Replica, method: str, *args: Any, timeout: float | None = None,
             slow_is_down: bool = True) -> Any:
        """One replica call; :class:`ReplicaDown` (and the replica leaves the live set) when it fails
        (or, with ``slow_is_down``, when it does not answer within ``timeout``)."""
        if method in ("status", "ping"):
            ref = getattr(rep.handle, method).remote(*args)
        else:  # data calls name the life of the actor they are meant for (a restarted one refuses)
            ref = getattr(rep.handle, method).remote(rep.incarnation, *args)
        return self.wait(rep, ref, timeout, slow_is_down)

    def wait(self, rep: Replica, ref: Any, timeout: float | None = None, slow_is_down: bool = True) -> Any:
        exc_mod = self.ray.exceptions
        try:
            out = self.ray.get(ref, timeout=timeout or self.timeout_s)
        except (exc_mod.RayActorError, exc_mod.GetTimeoutError, exc_mod.ActorUnavailableError,
                exc_mod.ObjectLostError) as exc:
            if slow_is_down or not isinstance(exc, exc_mod.GetTimeoutError):
                self.mark_down(rep, f"{type(exc).__name__}")
            raise ReplicaDown(f"shard {rep.shard} replica {rep.index}: {type(exc).__name__}") from None
        if isinstance(out, tuple) and out[0] == "err" and out[1] == "seq":  # restarted, or behind
            self.mark_down(rep, out[3])
            raise ReplicaDown(out[3])
        return out

    def mark_down(self, rep: Replica, why: str) -> None:
        if rep.live:
            log.warning("shard %d replica %d left the live set: %s", rep.shard, rep.index, why)
        rep.live = False
        rep.last_error = why

    # ------------------------------------------------------------------ open / monitor
    def load_all(self, *, mark_ready: bool = True) -> None:
        """Ask every replica what it holds (each replayed its own logs at start), settle each
        shard's acknowledged sequence numbers, catch up the replicas that are behind."""
        statuses: dict[tuple[int, int], dict[str, Any]] = {}
        for sh in self.shards:
            for rep in sh.replicas:
                try:
                    statuses[(sh.index, rep.index)] = self.call(rep, "status", timeout=max(self.timeout_s, 120))
                except ReplicaDown as exc:
                    log.error("%s", exc)
        for st in statuses.values():
            for name, c in st["collections"].items():
                self.configs.setdefault(name, {"config": c["config"], "created_at": c["created_at"]})
        for sh in self.shards:
            for name in self.configs:
                seqs = [statuses[(sh.index, r.index)]["collections"].get(name, {}).get("seq", -1)
                        for r in sh.replicas if (sh.index, r.index) in statuses]
                sh.committed[name] = max([0, *seqs])
            for rep in sh.replicas:
                st = statuses.get((sh.index, rep.index))
                if st is not None:
                    rep.incarnation = st["incarnation"]
                    self._catch_up(sh, rep, st)
        for name, c in self.configs.items():
            self.collections[name] = ClusterCollection(self, name, c["config"], c["created_at"])
        self._refresh_failed()
        self.ready = mark_ready

    def start_merger(self, interval: float = 1.0) -> None:
        """The service's hook for background work: replicas merge on their own; here a monitor
        brings replicas that failed or restarted back into the live set once they caught up."""
        def loop() -> None:
            while not self._stop.wait(self.monitor_s):
                self.check_replicas()

        self._monitor = threading.Thread(target=loop, name="lsr-cluster-monitor", daemon=True)
        self._monitor.start()

    def check_replicas(self) -> None:
        for sh in self.shards:
            for rep in sh.replicas:
                try:
                    if rep.live:
                        # a busy replica (a merge, a loaded machine) is slow, not gone
                        inc = self.call(rep, "ping", timeout=5, slow_is_down=False)
                        if inc == rep.incarnation:
                            continue
                        self.mark_down(rep, "restarted")
                    st = self.call(rep, "status", timeout=10)
                except ReplicaDown:
                    continue
                rep.incarnation = st["incarnation"]
                with sh.lock:
                    self._catch_up(sh, rep, st)
        self._refresh_failed()

    def _refresh_failed(self) -> None:
        for name in list(self.collections):
            dead = [sh.index for sh in self.shards if not sh.live()]
            if dead:
                self.failed[name] = f"shards {dead} have no live replica"
            else:
                self.failed.pop(name, None)

    def _catch_up(self, sh: Shard, rep: Replica, st: dict[str, Any]) -> None:
        """Bring ``rep`` to the shard's acknowledged state (caller holds the shard lock or is alone),
        then put it in the live set. Without a live source it rejoins only if it lacks nothing."""
        sources = [r for r in sh.live() if r is not rep]
        have = st["collections"]
        try:
            for name in list(have):
                if name not in self.configs:  # deleted while this replica was away
                    _raise(self.call(rep, "drop", name), "drop")
            for name, c in self.configs.items():
                want = sh.committed.get(name, 0)
                mine = have.get(name, {}).get("seq")
                if mine is not None and mine == want and name not in st["failed"]:
                    continue
                if not sources:
                    log.warning("shard %d replica %d: %s at seq %s, acknowledged %d, and no live replica to copy "
                                "from: it stays out", sh.index, rep.index, name, mine, want)
                    return
                src = sources[0]
                if mine is None or name in st["failed"]:
                    if name in st["failed"]:
                        _raise(self.call(rep, "drop", name), "drop")
                    self._copy_folder(sh, src, rep, name)
                    continue
                recs = _raise(self.call(src, "ops_after", name, mine), "ops_after") if mine < want else None
                if recs is not None:
                    got = _raise(self.call(rep, "apply", name, recs, timeout=max(self.timeout_s, 300)), "apply")
                    self.copied_records += len(recs)
                    if got != want:
                        raise ReplicaDown(f"{name}: replayed to {got}, expected {want}")
                else:  # its log no longer holds them (merged), or this replica is ahead: copy the folder
                    self._copy_folder(sh, src, rep, name)
        except (ReplicaDown, CollectionError) as exc:
            log.warning("shard %d replica %d: catching up failed (%s); retried later", sh.index, rep.index, exc)
            rep.live = False
            return
        rep.live = True
        rep.last_error = None
        self.resyncs += 1
        log.info("shard %d replica %d caught up and serves again", sh.index, rep.index)

    def _copy_folder(self, sh: Shard, src: Replica, rep: Replica, name: str) -> None:
        got = _raise(self.call(src, "export", name, timeout=max(self.timeout_s, 600)), "export")
        seq = _raise(self.call(rep, "install", name, got["files"], timeout=max(self.timeout_s, 600)), "install")
        self.copied_folders += 1
        if seq != sh.committed.get(name, 0):
            raise ReplicaDown(f"{name}: copied folder at seq {seq}, expected {sh.committed.get(name, 0)}")

    # ------------------------------------------------------------------ collections
    def get(self, name: str) -> "ClusterCollection":
        validate_name(name)
        col = self.collections.get(name)
        if col is None:
            raise CollectionError(f"collection {name!r} not found", 404)
        return col

    def create(self, name: str, config: dict[str, Any]) -> "ClusterCollection":
        validate_name(name)
        config = dict(config)
        config["dim"] = validate_dim(config.get("dim"))
        with self._lock:
            if name in self.collections:
                raise CollectionError(f"collection {name!r} already exists", 409)
            for sh in self.shards:
                if not sh.live():
                    raise ShardUnavailable(f"shard {sh.index} has no live replica; cannot create {name!r} now")
            created_at = time.time()
            for sh in self.shards:
                with sh.lock:
                    for rep in sh.live():
                        try:
                            out = _raise(self.call(rep, "create", name, config), "create")
                            created_at = min(created_at, out["created_at"])
                        except ReplicaDown:
                            continue
                    sh.committed[name] = 0
            self.configs[name] = {"config": config, "created_at": created_at}
            col = ClusterCollection(self, name, config, created_at)
            self.collections[name] = col
            return col

    def delete(self, name: str) -> None:
        self.get(name)
        with self._lock:
            self.configs.pop(name, None)
            self.collections.pop(name, None)
            self.failed.pop(name, None)
            for sh in self.shards:
                with sh.lock:
                    for rep in sh.live():
                        try:
                            _raise(self.call(rep, "drop", name), "drop")
                        except ReplicaDown:
                            continue  # dropped when it catches up
                    sh.committed.pop(name, None)

    @property
    def merge_failures(self) -> dict[str, int]:
        return {}

    def close(self) -> None:
        self._stop.set()
        if self._monitor is not None:
            self._monitor.join(timeout=10)

    def replica_states(self) -> list[dict[str, Any]]:
        return [{"shard": r.shard, "replica": r.index, "live": r.live, "last_error": r.last_error}
                for sh in self.shards for r in sh.replicas]


class ClusterView:
    """The search result's view: stored documents came with the hits; vectors are fetched on demand."""

    def __init__(self, col: "ClusterCollection", docs: dict[str, tuple[Any, Any]], missing: list[int]) -> None:
        self.col = col
        self.docs = docs
        self.missing_shards = tuple(missing)

    def document(self, cand: Candidate, *, text: bool = True) -> dict[str, Any]:
        meta, txt = self.docs[cand.id]
        return {"id": cand.id, "text": txt if text else None, "metadata": meta}

    def vector(self, cand: Candidate) -> tuple[np.ndarray, np.ndarray]:
        doc = self.col.get(cand.id, with_vector=True)
        if doc is None:  # deleted since the search
            return np.zeros(0, np.int32), np.zeros(0, np.float32)
        items = sorted(doc["vector"].items())
        return np.asarray([t for t, _ in items], np.int32), np.asarray([w for _, w in items], np.float32)


class ClusterCollection:
    """One collection over every shard; the same verbs as :class:`lsr.service.collection.Collection`."""

    def __init__(self, store: ClusterStore, name: str, config: dict[str, Any], created_at: float) -> None:
        self.store = store
        self.name = name
        self.config = config
        self.dim = int(config["dim"])
        self.manifest = {"created_at": created_at}
        self.closed = False
        self._coalescer = Coalescer()

    # ------------------------------------------------------------------ writes
    def _write(self, sh: Shard, method: str, payload: Any) -> Any:
        """One write to every live replica of ``sh``, acknowledged when all of them fsynced it."""
        st = self.store
        with sh.lock:
            live = sh.live()
            if not live:
                raise ShardUnavailable(f"collection {self.name!r}: shard {sh.index} has no live replica; "
                                       "the write was not applied to it (retry: writes are idempotent)")
            base = sh.committed.get(self.name, 0)
            refs = [(rep, getattr(rep.handle, method).remote(rep.incarnation, self.name, base, payload))
                    for rep in live]
            results = []
            refused: list[tuple[Replica, CollectionError]] = []
            for rep, ref in refs:
                try:
                    results.append((rep, _raise(st.wait(rep, ref), method)))
                except ReplicaDown as exc:
                    st.mark_down(rep, str(exc))
                except CollectionError as exc:  # a full disk, or a collection this replica lacks
                    refused.append((rep, exc))
            if not results:
                if refused:
                    raise refused[0][1]
                raise ShardUnavailable(f"collection {self.name!r}: no replica of shard {sh.index} answered; "
                                       "the write may or may not have been applied (retry: writes are idempotent)")
            for rep, exc in refused:  # the others applied it: this one must catch up before it serves
                st.mark_down(rep, f"refused a write its peers applied: {exc}")
            seqs = {(v if method == "upsert" else v[2]) for _, v in results}
            if len(seqs) != 1:
                raise RuntimeError(f"shard {sh.index}: replicas disagree after a write ({sorted(seqs)})")
            sh.committed[self.name] = seqs.pop()
            return results[0][1]

    def upsert(self, docs: Sequence[DocIn]) -> int:
        """Add or replace documents; returns once every live replica of each touched shard fsynced
        them. A batch spanning shards is not atomic across them (each shard's part is)."""
        checked = []
        for d in docs:
            if not isinstance(d.id, str) or not d.id:
                raise CollectionError(f"document id {d.id!r} must be a non-empty string", 422)
            checked.append(check_vector(d.id, d.indices, d.values, self.dim))  # refused here, before any shard
        lens = np.fromiter((t.size for t, _ in checked), np.int64, len(checked))
        indptr = np.concatenate([[0], np.cumsum(lens)]).astype(np.int64)
        cat = (lambda k: np.concatenate([c[k] for c in checked])) if checked else (lambda k: np.zeros(0))
        self._send_rows([d.id for d in docs], indptr, cat(0).astype(np.int32), cat(1).astype(np.float32),
                        [d.text for d in docs], [d.metadata for d in docs])
        return self.seq

    def upsert_rows(self, ids: Sequence[str], vectors: SparseBatch, texts: Sequence[str | None] | None = None,
                    metadata: Sequence[dict[str, Any] | None] | None = None) -> int:
        """:meth:`upsert` for a bulk load: documents as one CSR batch, validated in one pass and sent to
        each shard as arrays (no per-document objects on this side)."""
        for what, col in (("texts", texts), ("metadata", metadata)):
            if col is not None and len(col) != len(ids):
                raise CollectionError(f"{len(ids)} ids but {len(col)} {what}", 422)
        indptr, idx, val = check_rows(ids, vectors.indptr, vectors.indices, vectors.values, self.dim)
        self._send_rows(list(ids), indptr, idx, val, texts, metadata)
        return self.seq

    def _send_rows(self, ids: list[str], indptr: np.ndarray, idx: np.ndarray, val: np.ndarray,
                   texts: Sequence[str | None] | None, metadata: Sequence[dict[str, Any] | None] | None) -> None:
        """Split checked rows by shard and write each shard's part as one columnar payload."""
        if not ids:
            return
        shard = np.fromiter((shard_of(i, self.store.n_shards) for i in ids), np.int64, len(ids))
        batch = SparseBatch(indptr, idx, val, self.dim)
        parts: dict[int, dict[str, Any]] = {}
        for s in np.unique(shard).tolist():
            rows = np.flatnonzero(shard == s)
            sub = batch[rows]
            parts[s] = {"ids": [ids[r] for r in rows], "indptr": sub.indptr, "t": sub.indices, "w": sub.values,
                        "text": None if texts is None else [texts[r] for r in rows],
                        "metadata": None if metadata is None else [metadata[r] for r in rows]}
        self._fan(lambda s: self._write(self.store.shards[s], "upsert", parts[s]), list(parts))

    def delete(self, ids: Iterable[str]) -> tuple[list[str], list[str]]:
        ids = list(dict.fromkeys(ids))
        parts: dict[int, list[str]] = {}
        for i in ids:
            parts.setdefault(shard_of(i, self.store.n_shards), []).append(i)
        out = self._fan(lambda s: self._write(self.store.shards[s], "delete", parts[s]), list(parts))
        found = {i for r in out for i in r[0]}
        return [i for i in ids if i in found], [i for i in ids if i not in found]

    def _fan(self, fn: Any, shards: list[int]) -> list[Any]:
        if len(shards) == 1:
            return [fn(shards[0])]
        threads: list[threading.Thread] = []
        results: dict[int, Any] = {}
        errors: dict[int, BaseException] = {}

        def run(s: int) -> None:
            try:
                results[s] = fn(s)
            except BaseException as exc:  # noqa: BLE001 - re-raised below, in the caller's thread
                errors[s] = exc

        for s in shards:
            t = threading.Thread(target=run, args=(s,))
            t.start()
            threads.append(t)
        for t in threads:
            t.join()
        if errors:
            raise errors[min(errors)]
        return [results[s] for s in shards]

    @property
    def seq(self) -> int:
        """The collection's version: acknowledged writes summed over its shards (monotonic)."""
        return sum(sh.committed.get(self.name, 0) for sh in self.store.shards)

    # ------------------------------------------------------------------ reads
    def _read(self, sh: Shard, method: str, *args: Any) -> Any:
        """Call one live replica of ``sh`` (round robin), the next one when it fails."""
        live = sh.live()
        if not live:
            raise ShardUnavailable(f"collection {self.name!r}: shard {sh.index} has no live replica")
        start = next(sh.rr)
        for i in range(len(live)):
            rep = live[(start + i) % len(live)]
            try:
                return _raise(self.store.call(rep, method, self.name, *args), method)
            except ReplicaDown:
                continue
        raise ShardUnavailable(f"collection {self.name!r}: no replica of shard {sh.index} answered")

    def get(self, doc_id: str, *, with_vector: bool = False) -> dict[str, Any] | None:
        out: dict[str, Any] | None = self._read(self.store.shards[shard_of(doc_id, self.store.n_shards)], "get",
                                                 doc_id, with_vector)
        return out

    def search(self, queries: SparseBatch, k: int, knobs: dict[str, Any], threads: int | None = None,
               *, allow_partial: bool = False, text: bool = True) -> tuple[ClusterView, list[list[Candidate]]]:
        """Scatter to one live replica per shard, gather, merge the top ``k`` by (score desc, id asc).

        A shard without a live replica raises :class:`ShardUnavailable` (503), or with
        ``allow_partial`` is left out and named in the view's ``missing_shards``. Concurrent searches
        with the same options share one scatter (:mod:`lsr.cluster.coalesce`) unless the store was
        made with ``coalesce=False``."""
        queries.check_dim(self.dim)
        threads = max(1, int(threads or 1))

        def run(batch: SparseBatch) -> tuple[ClusterView, list[list[Candidate]]]:
            return self._scatter(batch, k, knobs, threads, allow_partial, text)

        if not self.store.coalesce:
            return run(queries)
        key = (k, repr(sorted(knobs.items())), threads, allow_partial, text)
        return self._coalescer.submit(key, queries, run)

    def _scatter(self, queries: SparseBatch, k: int, knobs: dict[str, Any], threads: int, allow_partial: bool,
                 text: bool) -> tuple[ClusterView, list[list[Candidate]]]:
        st = self.store
        pending: dict[int, tuple[Replica, Any, list[Replica]]] = {}
        missing: list[int] = []

        def send(sh: Shard, tried: list[Replica]) -> None:
            live = [r for r in sh.live() if r not in tried]
            if not live:
                missing.append(sh.index)
                return
            rep = live[next(sh.rr) % len(live)]
            ref = rep.handle.search.remote(rep.incarnation, self.name, queries, k, knobs, threads, text)
            pending[sh.index] = (rep, ref, tried + [rep])

        for sh in st.shards:
            send(sh, [])
        per_query: list[list[tuple[float, str]]] = [[] for _ in range(len(queries))]
        docs: dict[str, tuple[Any, Any]] = {}
        while pending:
            s = min(pending)
            rep, ref, tried = pending.pop(s)
            try:
                res = _raise(st.wait(rep, ref), "search")
            except ReplicaDown:
                send(st.shards[s], tried)  # the next replica of this shard
                continue
            for q, hits in enumerate(res):
                for doc_id, score, meta, txt in hits:
                    per_query[q].append((score, doc_id))
                    docs[doc_id] = (meta, txt)
        if missing and not allow_partial:
            raise ShardUnavailable(f"collection {self.name!r}: shards {sorted(missing)} have no live replica; "
                                   "results would be partial (send allow_partial=true to accept that)")
        out = []
        for hits in per_query:
            hits.sort(key=lambda h: (-h[0], h[1]))
            out.append([Candidate(doc_id, score, "cluster", -1) for score, doc_id in hits[:k]])
        return ClusterView(self, docs, sorted(missing)), out

    def __len__(self) -> int:
        return int(self.stats()["documents"])

    def stats(self) -> dict[str, Any]:
        """Summed over the shards that answer; ``missing_shards`` names the others (their documents
        are not counted; /ready and the collection list show the shard loss)."""
        per = self.store.shards
        got = self._fan(lambda s: self._stats_or_none(s), list(range(self.store.n_shards)))
        missing = [s for s, p in enumerate(got) if p is None]
        parts = [p for p in got if p is not None]
        if not parts:
            raise ShardUnavailable(f"collection {self.name!r}: no shard has a live replica")
        segs = [dict(seg, name=f"shard-{i:03d}/{seg['name']}") for i, p in enumerate(got) if p is not None
                for seg in p["segments"]]
        return {
            "documents": sum(p["documents"] for p in parts),
            "fresh_documents": sum(p["fresh_documents"] for p in parts),
            "segments": segs,
            "segment_count": len(segs),
            "bytes": sum(p["bytes"] for p in parts),
            "wal_bytes": sum(p["wal_bytes"] for p in parts),
            "generation": max(p["generation"] for p in parts),
            "seq": self.seq,
            "shards": len(per),
            "merge_failures": sum(p["merge_failures"] for p in parts),
            "last_merge_error": next((p["last_merge_error"] for p in parts if p["last_merge_error"]), None),
            "missing_shards": missing,
        }

    def _stats_or_none(self, s: int) -> dict[str, Any] | None:
        try:
            out: dict[str, Any] = self._read(self.store.shards[s], "stats")
            return out
        except ShardUnavailable:
            return None

    def _fan_reads(self, method: str, *args: Any) -> list[Any]:
        return self._fan(lambda s: self._read(self.store.shards[s], method, *args), list(range(self.store.n_shards)))

    def merge(self, *, force: bool = False, compact: bool | None = None) -> bool:
        """Merge on every live replica of every shard (each builds its segment on its own node)."""
        st = self.store
        refs = [(rep, rep.handle.merge.remote(rep.incarnation, self.name, force, compact))
                for sh in st.shards for rep in sh.live()]
        merged = False
        for rep, ref in refs:
            try:
                merged |= bool(_raise(st.wait(rep, ref, timeout=max(st.timeout_s, 3600)), "merge"))
            except ReplicaDown:
                continue
        return merged

    def needs_merge(self) -> bool:
        return False  # replicas merge on their own schedule
