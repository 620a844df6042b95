"""Property tests of a collection's log (Hypothesis): whatever happens, a reopened collection holds
exactly the acknowledged documents, or it is loudly failed; never a silent subset.

Generated sequences of upserts (vectors as term ids, dim 64), deletes, merges (force, compact) and
crashes run against one collection through the fault-injecting file layer (``faultfs``). A model
dict (id -> text, metadata, vector) is the acknowledged state; after every step the live collection
and, after every crash, the reopened one are compared with it (ids, vectors, texts, metadata).

Crashes:

* **process crash**: the store is abandoned (no close, nothing flushed later) and reopened; what
  reached the OS survives;
* **power cut**: as a process crash, then :meth:`FaultFS.power_cut` keeps only what was fsynced
  (with and without ``writeback``, i.e. unsynced writes reaching the disk anyway);
* **crash during a write**: the process dies after writing ``cut`` bytes of the log frame (a torn
  frame: the state is the one before the write) or after the whole frame but before its fsync (the
  write was never acknowledged: the process crash keeps it, as the OS has it; a power cut keeps it
  only with writeback). The model then takes what the reopened collection must show;
* **crash during a merge**: at its n-th fsync (any site: segment files, index, manifest, folder
  syncs, cleanup); a merge changes no document, so the state is exactly the model;
* **crash during the restart**: the reopen after a crash dies too, at its n-th fsync (cutting a
  torn tail, syncing the replayed log, quarantining a segment folder), then a process crash or a
  power cut; the next restart still shows exactly the model.

Every crash must reopen to exactly the model: a failed collection is a test failure there. (This
found a bug: a frame written whole by a process that died before its fsync was replayed and served
by the restart, then lost at a power cut; the restart now fsyncs the log it replays, ``wal.open``.)

Damage to a log at rest (after a clean close), asserted precisely:

* a bit flip anywhere in the **last record of the last log** reads as a torn tail: that record is
  dropped, the state is the acknowledged one minus the last write;
* a bit flip in **any other record** fails the collection (``store.failed``, ``CollectionFailed``
  naming the file and the record's byte offset). No byte of a record is irrelevant: the length and
  crc32 header fields and every payload byte are checked, so "exactly the acknowledged state" is
  never the outcome there, and the test does not accept it. ``lsr repair`` then drops exactly that
  record (one dropped region, at its offset) and the collection opens with every other record, as
  a reference replay of the log's records says; one test flips a bit at every byte of every record;
* truncation at **every offset of the last record** of the last log: that record is dropped;
* truncation inside a record of a log that is **not the last**: failed;
* truncation inside an **earlier record of the last log** drops that record *and every later one*
  (they are cut off with it), and what remains, whole records then a partial frame, is exactly what
  a crash while appending that record leaves: the log cannot tell the two apart, and the collection
  opens with the records before the cut. The test asserts that (a whole-record prefix of the log),
  documenting the limit: losing fsynced bytes by truncation is outside the crash model.
"""

from __future__ import annotations

import copy
import fcntl
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lsr.index import fileio
from lsr.service.collection import (Collection, CollectionFailed, CollectionStore, DocIn, MergeFailed, MergePolicy,
                                    StorageFull)
from lsr.service.repair import repair
from lsr.service.wal import WalCorruption, log_name, log_numbers, scan_log

from faultfs import FaultFS

DIM = 64
IDS = [f"d{i}" for i in range(6)]
NAME = "c"

Model = dict  # id -> (text, metadata, {term: weight})


class Crash(BaseException):
    """The simulated process death (a BaseException: no ``except Exception`` catches it)."""


class CrashFS(FaultFS):
    """FaultFS that can kill the process mid-write of a log frame or at the n-th fsync."""

    def __init__(self, root: Path, *, writeback: bool, skip_sites: tuple[str, ...] = ()) -> None:
        super().__init__(root, writeback=writeback, skip_sites=skip_sites)
        self.fsyncs_left: int | None = None  # crash when this many more fsyncs have run
        self.log_write_cut: int | None = None  # crash after writing this many bytes of a log frame
        self.torn = False  # the crash left a partial frame

    def disarm(self) -> None:
        self.fsyncs_left = self.log_write_cut = None

    def _tick(self, site: str) -> None:
        if self.fsyncs_left is not None:
            if self.fsyncs_left == 0:
                self.fsyncs_left = None
                raise Crash(site)
            self.fsyncs_left -= 1

    def fsync(self, fh: BinaryIO | int | Path, site: str) -> None:
        self._tick(site)
        super().fsync(fh, site)

    def fsync_dir(self, path: Path, site: str) -> None:
        self._tick(site)
        super().fsync_dir(path, site)

    def write(self, fh: BinaryIO, data: bytes) -> None:
        cut = self.log_write_cut
        if cut is not None and os.readlink(f"/proc/self/fd/{fh.fileno()}").endswith(".log"):
            self.log_write_cut = None
            if cut < len(data):
                self.torn = True
                super().write(fh, data[:cut])
                fh.flush()  # it reached the OS; the rest never will
                raise Crash("mid-write")
            self.torn = False
            super().write(fh, data)
            fh.flush()  # the whole frame reached the OS...
            self.fsyncs_left = 0  # ...and the process dies before its fsync
            return
        super().write(fh, data)


class NoSync(fileio.FileSystem):
    """Real files without fsyncs: for the exhaustive loops, which test parsing, not durability."""

    def fsync(self, fh: BinaryIO | int | Path, site: str) -> None:
        pass

    def fsync_dir(self, path: Path, site: str) -> None:
        pass


# ---------------------------------------------------------------------------- strategies
_vector = st.dictionaries(st.integers(0, DIM - 1),
                          st.floats(min_value=2.0**-10, max_value=65504.0, allow_nan=False, width=32), max_size=4)
_doc = st.tuples(st.sampled_from(IDS), _vector, st.one_of(st.none(), st.text(max_size=12)),
                 st.one_of(st.none(), st.dictionaries(st.sampled_from("ab"), st.integers(-3, 3), max_size=2)))
_upsert = st.tuples(st.just("upsert"), st.lists(_doc, max_size=3))
_delete = st.tuples(st.just("delete"), st.lists(st.sampled_from(IDS), min_size=1, max_size=3))
_write = st.one_of(_upsert, _delete)
_mode = st.sampled_from(["process", "power"])
_compact = st.sampled_from([None, True])
_merge = st.tuples(st.just("merge"), _compact)
_crash = st.tuples(st.just("crash"), _mode)
_crash_in_write = st.tuples(st.just("crash_in_write"), _mode, _write, st.integers(0, 400))
_crash_in_merge = st.tuples(st.just("crash_in_merge"), _mode, _compact, st.integers(0, 60))
_crash_in_reopen = st.tuples(st.just("crash_in_reopen"), _mode, st.integers(0, 4), _mode)
_disk_full = st.tuples(st.just("disk_full"), st.one_of(_write, _compact.map(lambda c: ("merge", c))),
                       st.integers(0, 3000))

# writes dominate; merges (a Seismic build each) are rare
WRITES = st.one_of(_upsert, _upsert, _upsert, _delete, _delete, _merge)
WITH_CRASHES = st.one_of(_upsert, _upsert, _upsert, _upsert, _delete, _delete, _crash, _crash_in_write,
                         _crash_in_write, _merge, _crash_in_merge, _crash_in_reopen, _disk_full)
# for damage at rest: crashed or failed merges leave more than one current log
AT_REST = st.one_of(WRITES, _crash_in_merge, _disk_full)


def _after(model: Model, op: tuple) -> tuple[Model, bool]:
    """The model after write ``op``, and whether the op appends a log record."""
    new = dict(model)
    if op[0] == "upsert":
        for doc_id, vec, text, meta in op[1]:
            new[doc_id] = (text, copy.deepcopy(meta), {int(t): float(w) for t, w in vec.items()})
        return new, True
    found = [i for i in dict.fromkeys(op[1]) if i in new]
    for i in found:
        del new[i]
    return new, bool(found)


def _docin(doc: tuple) -> DocIn:
    doc_id, vec, text, meta = doc
    return DocIn(doc_id, np.array(list(vec), np.int64), np.array(list(vec.values()), np.float32), text,
                 copy.deepcopy(meta))


def documents(col: Collection) -> Model:
    """The collection's documents as the model writes them."""
    out: Model = {}
    for doc_id in list(col.loc):
        got = col.get(doc_id, with_vector=True)
        assert got is not None, doc_id
        out[doc_id] = (got["text"], got["metadata"], got["vector"])
    return out


def _store(data: Path) -> CollectionStore:
    st_ = CollectionStore(data, MergePolicy(min_docs=10**9, idle_s=1e9, max_segments=10**6))
    st_.load_all()
    return st_


def _abandon(store: CollectionStore) -> None:
    """A process death: nothing is closed or flushed, only the data folder's lock goes with it."""
    fcntl.flock(store._lock_fh.fileno(), fcntl.LOCK_UN)
    store._lock_fh.close()


class Harness:
    """One collection driven by ops, with its acknowledged model and every state it passed through."""

    def __init__(self, root: Path, *, writeback: bool, skip_sites: tuple[str, ...] = ()) -> None:
        self.data = root / "data"
        self.fs = CrashFS(self.data, writeback=writeback, skip_sites=skip_sites)
        self.model: Model = {}
        self.history: list[Model] = [{}]  # the state after each log record (history[0]: created)
        self.abandoned: list[CollectionStore] = []  # kept referenced: nothing of theirs runs again

    def start(self) -> None:
        self.store = _store(self.data)
        self.col = self.store.create(NAME, {"model": None, "dim": DIM})

    # ------------------------------------------------------------------ ops
    def run(self, ops: list) -> None:
        for op in ops:
            getattr(self, "op_" + op[0])(*op[1:])
            assert documents(self.col) == self.model, f"live collection differs after {op[0]}"

    def _write(self, op: tuple) -> None:
        if op[0] == "upsert":
            self.col.upsert([_docin(d) for d in op[1]])
        else:
            self.col.delete(op[1])

    def op_upsert(self, docs: list) -> None:
        self._acked(("upsert", docs))

    def op_delete(self, ids: list) -> None:
        self._acked(("delete", ids))

    def _acked(self, op: tuple) -> None:
        new, appends = _after(self.model, op)
        self._write(op)
        self.model = new
        if appends:
            self.history.append(new)

    def op_merge(self, compact: bool | None) -> None:
        self.col.merge(force=True, compact=compact)

    def op_crash(self, mode: str) -> None:
        self._crash(mode, self.model)

    def op_crash_in_write(self, mode: str, op: tuple, cut: int) -> None:
        new, appends = _after(self.model, op)
        self.fs.log_write_cut = cut
        try:
            self._write(op)
        except Crash:
            crashed = True
        else:
            crashed = False
            assert not appends  # a delete of missing ids writes nothing
        finally:
            self.fs.disarm()
        if not crashed:
            self.model = new
            self._crash(mode, self.model)
            return
        kept = not self.fs.torn and (mode == "process" or self.fs.writeback)
        self._crash(mode, new if kept else self.model)
        if kept:
            self.history.append(new)

    def op_crash_in_merge(self, mode: str, compact: bool | None, nth: int) -> None:
        self.fs.fsyncs_left = nth
        try:
            self.col.merge(force=True, compact=compact)
        except Crash:
            pass
        finally:
            self.fs.disarm()
        self._crash(mode, self.model)

    def op_disk_full(self, op: tuple, left: int) -> None:
        """The disk fills after ``left`` more bytes: a write fails with StorageFull and changes
        nothing, a merge fails (StorageFull or MergeFailed) and changes no document."""
        self.fs.fail_writes(after_bytes=left, match=".log" if op[0] != "merge" else "")
        try:
            if op[0] == "merge":
                try:
                    self.col.merge(force=True, compact=op[1])
                except (StorageFull, MergeFailed):
                    pass
            else:
                new, appends = _after(self.model, op)
                try:
                    self._write(op)
                except StorageFull:
                    assert appends
                else:
                    self.model = new
                    if appends:
                        self.history.append(new)
        finally:
            self.fs.clear_faults()

    def op_crash_in_reopen(self, mode: str, nth: int, mode2: str) -> None:
        self._crash(mode, self.model, reopen_crash=(nth, mode2))

    def _crash(self, mode: str, expect: Model, reopen_crash: tuple[int, str] | None = None) -> None:
        _abandon(self.store)
        self.abandoned.append(self.store)
        if mode == "power":
            self.fs.power_cut()
        if reopen_crash is not None:  # the restart dies too, at its n-th fsync (cutting a torn tail,
            nth, mode = reopen_crash  # syncing the replayed log, quarantining a segment folder)
            store = CollectionStore(self.data, MergePolicy(min_docs=10**9, idle_s=1e9, max_segments=10**6))
            self.fs.fsyncs_left = nth
            try:
                store.load_all()
            except Crash:
                pass
            finally:
                self.fs.disarm()
            _abandon(store)
            self.abandoned.append(store)
            if mode == "power":
                self.fs.power_cut()
        self.store = _store(self.data)
        assert not self.store.failed, f"{mode} crash left the collection failed: {self.store.failed}"
        self.col = self.store.get(NAME)
        got = documents(self.col)
        assert got == expect, f"after a {mode} crash: {got} != {expect}"
        self.model = expect

    def close(self) -> None:
        self.store.close()
        self.fs.close()


def _run(ops: list, writeback: bool = False, skip_sites: tuple[str, ...] = ()) -> tuple[Harness, tempfile.TemporaryDirectory]:
    tmp = tempfile.TemporaryDirectory(prefix="lsr-prop-")
    h = Harness(Path(tmp.name), writeback=writeback, skip_sites=skip_sites)
    try:
        with fileio.use(h.fs):
            h.start()
            h.run(ops)
    finally:
        h.close()
    return h, tmp


def _cdir(h: Harness) -> Path:
    return h.data / "collections" / NAME


def _current_logs(h: Harness) -> list[Path]:
    """The log files a reopen replays, in order (after a clean close)."""
    start = json.loads((_cdir(h) / "manifest.json").read_bytes())["wal_start"]
    return [_cdir(h) / "wal" / log_name(n) for n in log_numbers(_cdir(h) / "wal") if n >= start]


def _records(h: Harness) -> list[tuple[Path, int, int, bool]]:
    """Every record of the current logs: (log, start, end, in the last log)."""
    logs = _current_logs(h)
    out = []
    for i, p in enumerate(logs):
        scan = scan_log(p, last=True)
        assert scan.valid_bytes == scan.size
        ends = scan.offsets[1:] + [scan.size]
        out += [(p, s, e, i == len(logs) - 1) for s, e in zip(scan.offsets, ends)]
    return out


def _draw_record(recs: list[tuple[Path, int, int, bool]], data: st.DataObject) -> tuple[int, tuple[Path, int, int, bool]]:
    """One of ``_records``' records, drawn: (its index, the record)."""
    k = data.draw(st.integers(0, len(recs) - 1), label="record")
    return k, recs[k]


def _bodies(h: Harness) -> list[dict]:
    """The decoded records of the current logs, in the order of :func:`_records`."""
    return [rec for p in _current_logs(h) for rec in scan_log(p, last=True).records]


def _replay(model: Model, records: list[dict]) -> Model:
    """A reference replay of log records onto a model (what the log's records say, read directly)."""
    out = dict(model)
    for rec in records:
        if rec["op"] == "upsert":
            for d in rec["docs"]:
                # weights are float32 in the log, written in float32's shortest form (16384.0625 as 16384.062)
                w32 = np.asarray(d["w"], np.float32).tolist()
                out[d["id"]] = (d.get("text"), d.get("metadata"), dict(zip(d["t"], w32)))
        else:
            for doc_id in rec["ids"]:
                out.pop(doc_id, None)
    return out


def _reopen(h: Harness) -> CollectionStore:
    return _store(h.data)


def _assert_failed(store: CollectionStore, log: Path, offset: int) -> None:
    assert NAME in store.failed and NAME not in store.collections, "damage was not reported"
    with pytest.raises(CollectionFailed) as err:
        store.get(NAME)
    assert err.value.status == 503
    assert log.name in store.failed[NAME] and f"byte {offset}" in store.failed[NAME], store.failed[NAME]


FAST = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                                     HealthCheck.function_scoped_fixture])


# ---------------------------------------------------------------------------- crashes
@settings(FAST, max_examples=50)
@given(ops=st.lists(WITH_CRASHES, max_size=14), writeback=st.booleans())
def test_crashes_replay_exactly_the_acknowledged_state(ops, writeback, caplog):
    caplog.set_level(logging.CRITICAL)
    h, tmp = _run(ops + [("crash", "process"), ("crash", "power")], writeback)
    tmp.cleanup()


def test_replayed_records_are_synced_at_open():
    """The example Hypothesis found: a frame written whole but not fsynced when the process died is
    replayed (and served) by the restart; without the ``wal.open`` fsync a power cut took it back."""
    ops = [("upsert", [("d1", {3: 1.0}, "kept", None)]),
           ("crash_in_write", "process", ("upsert", [("d0", {}, None, None)]), 10**6),
           ("crash", "power")]
    h, tmp = _run(ops)
    assert h.model == {"d1": ("kept", None, {3: 1.0}), "d0": (None, None, {})}
    tmp.cleanup()
    with pytest.raises(AssertionError, match="after a power crash"):
        _run(ops, skip_sites=("wal.open",))


def test_a_log_started_by_a_dead_merge_is_made_durable_at_open():
    """The example Hypothesis found: a merge died at its first fsync, before the folder fsync of the
    log it had just started; the restart appended to that log, and a power cut took the file (and
    the acknowledged write in it) away until the open fsynced the folder (``wal.open_dir``)."""
    ops = [("upsert", [("d0", {0: 1.0}, None, None)]), ("crash_in_merge", "process", None, 0),
           ("upsert", [("d0", {}, None, None)]), ("crash", "process"), ("crash", "power")]
    h, tmp = _run(ops)
    assert h.model == {"d0": (None, None, {})}
    tmp.cleanup()
    with pytest.raises(AssertionError, match="after a power crash"):
        _run(ops, skip_sites=("wal.open_dir",))


def test_a_manifest_left_unsynced_by_a_dead_merge_is_made_durable_at_open():
    """Another example Hypothesis found: a merge died after its manifest swap but before syncing
    the folder; the restart deleted the logs before the new manifest's wal_start and synced the log
    folder, and a power cut brought back the old manifest naming a log already gone, until the open
    fsynced the manifest first (``open.manifest:dir``)."""
    ops = [("upsert", [("d0", {}, None, None)]), ("crash_in_merge", "process", None, 35),
           ("crash", "process"), ("crash", "power")]
    h, tmp = _run(ops)
    assert h.model == {"d0": (None, None, {})}
    tmp.cleanup()
    with pytest.raises(AssertionError, match="power crash left the collection failed"):
        _run(ops, skip_sites=("open.manifest:dir",))


# ---------------------------------------------------------------------------- bit flips
@settings(FAST, max_examples=40)
@given(ops=st.lists(AT_REST, min_size=1, max_size=10), data=st.data())
def test_bit_flip_in_a_log_record(ops, data, caplog):
    caplog.set_level(logging.CRITICAL)
    h, tmp = _run(ops)
    try:
        recs = _records(h)
        if not recs:
            return
        k, (log, start, end, in_last) = _draw_record(recs, data)
        bodies = _bodies(h)
        base = h.history[-len(recs) - 1]  # the state the current logs start from (the segments')
        assert _replay(base, bodies) == h.history[-1]
        offset = data.draw(st.integers(start, end - 1), label="offset")
        bit = data.draw(st.integers(0, 7), label="bit")
        raw = bytearray(log.read_bytes())
        raw[offset] ^= 1 << bit
        log.write_bytes(bytes(raw))
        store = _reopen(h)
        try:
            if in_last and end == len(raw):  # the last record of the last log: a torn tail
                assert not store.failed, store.failed
                assert documents(store.get(NAME)) == h.history[-2]
                return
            _assert_failed(store, log, start)
        finally:
            store.close()
        # lsr repair drops exactly the damaged record and keeps every other one
        report = repair(h.data, NAME)
        assert report["ok"] and report["dropped_count"] == 1, report
        assert (report["dropped"][0]["file"], report["dropped"][0]["offset"]) == (log.name, start), report
        want = _replay(base, bodies[:k] + bodies[k + 1:])
        assert report["documents"] == len(want)
        store = _reopen(h)
        try:
            assert not store.failed, store.failed
            assert documents(store.get(NAME)) == want
        finally:
            store.close()
    finally:
        tmp.cleanup()


# ---------------------------------------------------------------------------- truncation
@settings(FAST, max_examples=40)
@given(ops=st.lists(AT_REST, min_size=1, max_size=10), data=st.data())
def test_truncation_inside_a_log_record(ops, data, caplog):
    caplog.set_level(logging.CRITICAL)
    h, tmp = _run(ops)
    try:
        recs = _records(h)
        if not recs:
            return
        k, (log, start, end, in_last) = _draw_record(recs, data)
        # inside the record: a cut at its first byte would leave whole records (in a log that is not
        # the last, a silent loss the log format cannot see either)
        offset = data.draw(st.integers(start if in_last else start + 1, end - 1), label="offset")
        with open(log, "r+b") as fh:
            fh.truncate(offset)
        store = _reopen(h)
        try:
            if in_last:
                # records k.. are gone: the state before record k (the last record: minus the last write)
                assert not store.failed, store.failed
                assert documents(store.get(NAME)) == h.history[k - len(recs) - 1]
                if k == len(recs) - 1:
                    assert documents(store.get(NAME)) == h.history[-2]
            else:
                _assert_failed(store, log, start)
        finally:
            store.close()
    finally:
        tmp.cleanup()


@settings(FAST, max_examples=8)
@given(ops=st.lists(st.one_of(_upsert, _delete), max_size=6))  # no segments: 200 opens stay cheap
def test_truncation_at_every_offset_of_the_last_record(ops, caplog):
    caplog.set_level(logging.CRITICAL)
    h, tmp = _run(ops + [("upsert", [("d0", {1: 1.0, 2: 2.0}, "x", None), ("d1", {}, None, {"a": 1})])])
    try:
        log, start, end, in_last = _records(h)[-1]
        assert in_last
        whole = log.read_bytes()
        assert end == len(whole)
        with fileio.use(NoSync()):
            for offset in range(start, end):
                log.write_bytes(whole[:offset])
                col = Collection.open(_cdir(h), MergePolicy())
                try:
                    assert documents(col) == h.history[-2], offset
                finally:
                    col.close()
                assert log.stat().st_size == start  # the torn tail was cut
    finally:
        tmp.cleanup()


def test_bit_flip_at_every_byte_of_every_record(caplog):
    """Exhaustively: one flipped bit at every byte of every record of a log. The last record reads
    as a torn tail (dropped); any other record fails the open at that record's offset."""
    caplog.set_level(logging.CRITICAL)
    ops = [("upsert", [("d0", {1: 1.0, 63: 2.5}, "t\x00\n\"é😀", {"b": -3})]),
           ("upsert", [("d1", {}, None, None), ("d2", {0: 65504.0}, "", {})]),
           ("delete", ["d0", "d4"]),
           ("upsert", [("d0", {2: 0.25}, "back", None)])]
    h, tmp = _run(ops)
    try:
        recs = _records(h)
        assert len(recs) == 4 and all(in_last for *_, in_last in recs)
        log = recs[0][0]
        whole = log.read_bytes()
        with fileio.use(NoSync()):
            _flip_every_byte(h, log, whole, recs)
    finally:
        tmp.cleanup()


def _flip_every_byte(h: Harness, log: Path, whole: bytes, recs: list[tuple[Path, int, int, bool]]) -> None:
    for k, (_, start, end, _) in enumerate(recs):
        for offset in range(start, end):
            raw = bytearray(whole)
            raw[offset] ^= 1 << (offset % 8)
            log.write_bytes(bytes(raw))
            if k == len(recs) - 1:
                col = Collection.open(_cdir(h), MergePolicy())
                try:
                    assert documents(col) == h.history[-2], offset
                finally:
                    col.close()
            else:
                with pytest.raises(WalCorruption) as err:
                    Collection.open(_cdir(h), MergePolicy())
                assert (err.value.file, err.value.offset) == (log.name, start), offset
