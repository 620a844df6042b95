"""Data safety of collections, called directly (no HTTP): vector validation, failed collections,
quarantine, disk full, and power cuts through the fault-injecting file layer (tests/service/faultfs.py).

The power-cut scenario takes acknowledged upserts, deletes, merges (one of them reclaiming
tombstones) and a collection delete, and records the durable state at many points, mid-merge
included; every one must reopen to exactly the acknowledged state. Then, for every fsync site of
the write path, the same scenario with that one fsync removed must lose or corrupt acknowledged
state at some point: the test fails if an fsync could be dropped unnoticed.
"""

from __future__ import annotations

import copy
import errno
import json
import logging

import numpy as np
import pytest

from lsr.index import SeismicIndex, fileio
from lsr.index.sparse import SparseBatch
from lsr.service.collection import (MAX_WEIGHT, CollectionError, CollectionFailed, CollectionStore, DocIn,
                                    MergePolicy, StorageFull)
from lsr.service.segment import Segment

from faultfs import FaultFS

DIM = 1000
SHARED = DIM - 1


def _doc(i: int, ver: int = 0) -> DocIn:
    # term 1 + i is document i's own: a search for it finds that document first
    return DocIn(f"d{i}", np.array([1 + i, SHARED]), np.array([2.0 + ver, 0.5], np.float32),
                 f"doc {i} v{ver}", {"v": ver, "i": i})


def _expect(d: DocIn) -> dict:
    return {"text": d.text, "metadata": d.metadata,
            "vector": {int(t): float(np.float32(w)) for t, w in zip(d.indices, d.values)}}


def _store(data) -> CollectionStore:
    st = CollectionStore(data, MergePolicy(min_docs=10**9, idle_s=1e9))
    st.load_all()
    return st


def _check_state(data, oracle: dict, collections: set, *, clean: bool) -> str | None:
    """Open ``data`` and compare with the acknowledged state; returns what differs (None: equal)."""
    st = _store(data)
    try:
        if st.failed:
            return f"failed collections: {st.failed}"
        if set(st.collections) != collections:
            return f"collections {sorted(st.collections)}, acknowledged {sorted(collections)}"
        if "c" not in collections:
            return None
        col = st.get("c")
        if set(col.loc) != set(oracle):
            return f"documents differ: lost {sorted(set(oracle) - set(col.loc))}, extra {sorted(set(col.loc) - set(oracle))}"
        for doc_id, want in oracle.items():
            got = col.get(doc_id, with_vector=True)
            if got is None or {k: got[k] for k in want} != want:
                return f"document {doc_id}: {got} != {want}"
        ids = sorted(oracle)
        if ids:
            q = SparseBatch.from_dicts([{1 + int(i[1:]): 1.0} for i in ids], dim=DIM)
            _, res = col.search(q, 1, {})
            for i, hits in zip(ids, res):
                if not hits or hits[0].id != i:
                    return f"document {i} not found by search"
        if clean and col.quarantined:
            return f"segment folders quarantined after a clean cut: {col.quarantined}"
        col.upsert([DocIn("after", np.array([0]), np.array([1.0]))])  # the log takes writes again
        return None
    finally:
        st.close()


def _scenario(fs: FaultFS, data) -> list:
    """Acknowledged writes, merges and deletes; returns [(label, durable tree, oracle, collections, clean)]."""
    points: list = []
    oracle: dict = {}
    names: set = set()

    def cut(label, clean=True):
        points.append((label, fs.tree(), copy.deepcopy(oracle), set(names), clean))

    st = _store(data)
    try:
        col = st.create("c", {"model": None, "dim": DIM})
        names.add("c")
        st.create("gone", {"model": None, "dim": DIM})
        names.add("gone")
        cut("created")
        docs = [_doc(i) for i in range(20)]
        col.upsert(docs[:12])
        col.upsert(docs[12:])
        oracle.update({d.id: _expect(d) for d in docs})
        cut("upserts")
        col.delete(["d3", "d4"])
        for i in (3, 4):
            oracle.pop(f"d{i}")
        cut("deletes")
        fs.on_site("segments.dir", lambda: cut("mid-merge: segment written", clean=False), nth=1)
        fs.on_site("manifest:file", lambda: cut("mid-merge: before the manifest", clean=False), nth=1)
        assert col.merge(force=True)
        cut("merged")
        more = [_doc(i) for i in range(20, 26)] + [_doc(5, ver=1)]
        col.upsert(more)
        oracle.update({d.id: _expect(d) for d in more})
        col.delete(["d6", "d7", "d21"])
        for i in (6, 7, 21):
            oracle.pop(f"d{i}")
        cut("writes after a merge")
        # the sealed segment now has 3/18 rows tombstoned: the policy rewrites it
        assert [s.name for s in col._select_folded(None)] == ["seg-000001"]
        fs.on_site("manifest:file", lambda: cut("mid-reclaim: before the manifest", clean=False), nth=2)
        assert col.merge()
        assert col.stats()["segments"][0]["deleted"] == 0 and len(col.segments) == 1
        cut("reclaimed")
        last = [_doc(i) for i in range(30, 33)]
        col.upsert(last)
        oracle.update({d.id: _expect(d) for d in last})
        st.delete("gone")
        names.discard("gone")
        cut("collection deleted")
    finally:
        st.close()
    return points


# Every fsync site on the write path; a new one must be added here (test_sites_are_all_listed).
WRITE_PATH_SITES = [
    "store.root", "wal.create", "wal.append", "create.manifest:file", "create.manifest:dir", "create.rename",
    "segment.file", "segment.meta", "segment.dir", "segments.dir", "index.array", "index.manifest:file",
    "index.manifest:dir", "manifest:file", "manifest:dir", "merge.cleanup", "store.delete",
]
# The sites of a reopen (wal.open, wal.open_dir, open.manifest:dir, ...) are shown to matter by
# test_service_properties' regression tests, each from the example Hypothesis found.


def _run(tmp_path, skip=()):
    data = tmp_path / "data"
    fs = FaultFS(data, skip_sites=skip)
    try:
        with fileio.use(fs):
            points = _scenario(fs, data)
        results = []
        for n, (label, tree, oracle, names, clean) in enumerate(points):
            dest = FaultFS.materialize(tree, tmp_path / f"cut{n}")
            results.append((label, _check_state(dest, oracle, names, clean=clean)))
        return fs, results
    finally:
        fs.close()


def test_power_cut_keeps_exactly_the_acknowledged_state(tmp_path):
    fs, results = _run(tmp_path)
    assert len(results) >= 9
    bad = [(label, why) for label, why in results if why]
    assert not bad, bad


def test_sites_are_all_listed(tmp_path):
    fs, _ = _run(tmp_path)
    assert set(fs.sites) == set(WRITE_PATH_SITES)


@pytest.mark.parametrize("site", WRITE_PATH_SITES)
def test_each_fsync_matters(tmp_path, site, caplog):
    caplog.set_level(logging.CRITICAL)
    fs, results = _run(tmp_path, skip={site})
    assert fs.sites[site] > 0
    broken = [(label, why) for label, why in results if why]
    assert broken, f"with fsync site {site!r} removed, every power cut still reopened to the acknowledged state"


@pytest.fixture
def faulty(tmp_path):
    """``(data, fs)``: a data folder behind a FaultFS that every storage call in the test goes through."""
    data = tmp_path / "data"
    fs = FaultFS(data)
    try:
        with fileio.use(fs):
            yield data, fs
    finally:
        fs.close()


def test_power_cut_in_place_then_write_on(faulty):
    """power_cut() rebuilds the data folder itself; the collection reopens, takes writes, survives again."""
    data, fs = faulty
    st = _store(data)
    col = st.create("c", {"model": None, "dim": DIM})
    col.upsert([_doc(i) for i in range(5)])
    col.merge(force=True)
    col.upsert([_doc(5)])
    st.close()
    fs.power_cut()
    st = _store(data)
    col = st.get("c")
    assert sorted(col.loc) == [f"d{i}" for i in range(6)]
    col.delete(["d0"])
    col.upsert([_doc(6)])
    st.close()
    fs.power_cut()
    st = _store(data)
    assert sorted(st.get("c").loc) == [f"d{i}" for i in range(1, 7)]
    st.close()


# ---------------------------------------------------------------------------- disk full
def test_enospc_on_log_append_rolls_back(faulty):
    data, fs = faulty
    st = _store(data)
    col = st.create("c", {"model": None, "dim": DIM})
    col.upsert([_doc(0)])
    size, view, seq = col._wal.size(), col.view, col.seq
    fs.fail_writes(after_bytes=10, match=".log")
    with pytest.raises(StorageFull) as err:
        col.upsert([_doc(1)])
    assert err.value.status == 507 and "no space" in str(err.value)
    with pytest.raises(StorageFull):
        col.delete(["d0"])
    assert col.view is view and col.seq == seq and sorted(col.loc) == ["d0"]
    log = col.path / "wal" / "000001.log"
    assert log.stat().st_size == size  # the partial frame was cut
    fs.clear_faults()  # space freed: writes work again
    col.upsert([_doc(2)])
    st.close()
    fs.power_cut()
    st = _store(data)
    assert sorted(st.get("c").loc) == ["d0", "d2"]
    st.close()


def test_enospc_in_merge_fails_loudly_and_retries(faulty):
    data, fs = faulty
    st = _store(data)
    col = st.create("c", {"model": None, "dim": DIM})
    col.upsert([_doc(i) for i in range(10)])
    fs.fail_writes(after_bytes=100, match="docs.jsonl")
    with pytest.raises(StorageFull):
        col.merge(force=True)
    assert col.merge_failures == 1 and st.merge_failures == {"c": 1}
    assert "no space" in col.stats()["last_merge_error"].lower() or "ENOSPC" in col.stats()["last_merge_error"] \
        or "28" in col.stats()["last_merge_error"]
    assert len(col.view.fresh) == 10 and not col.segments
    assert not list((col.path / "segments").iterdir())  # the partial segment is gone
    _, res = col.search(SparseBatch.from_dicts([{4: 1.0}], dim=DIM), 1, {})
    assert res[0][0].id == "d3"  # still searchable from the fresh segment
    fs.clear_faults()
    assert col.merge(force=True) and len(col.segments) == 1 and not col.fresh
    st.close()
    fs.power_cut()
    st = _store(data)
    assert sorted(st.get("c").loc) == sorted(f"d{i}" for i in range(10))
    st.close()


def test_failing_seismic_build_fails_the_merge(tmp_path, monkeypatch):
    st = _store(tmp_path / "data")
    col = st.create("c", {"model": None, "dim": DIM})
    col.upsert([_doc(i) for i in range(5)])

    def boom(*a, **k):
        raise RuntimeError("seismic exploded")

    monkeypatch.setattr(SeismicIndex, "build", boom)
    with pytest.raises(CollectionError) as err:
        col.merge(force=True)
    assert err.value.status == 500 and "seismic exploded" in str(err.value)
    assert st.merge_failures == {"c": 1} and st.metrics()["collections"]["c"]["merge_failures"] == 1
    assert col.next_merge_at > 0 and len(col.view.fresh) == 5
    assert not list((col.path / "segments").iterdir())
    monkeypatch.undo()
    assert col.merge(force=True) and col.segments[0].kind == "seismic"
    st.close()


# ---------------------------------------------------------------------------- validation
@pytest.mark.parametrize("indices,values,why", [
    ([0], [1e300], "not a finite"),  # float32 inf: every merge failed forever on the old code
    ([0], [float("nan")], "not a finite"),
    ([0], [float("inf")], "not a finite"),
    ([0], [MAX_WEIGHT * 2], "not a finite"),
    ([0], [-1.0], "not a finite"),
    ([0], [0.0], "not a finite"),
    ([DIM], [1.0], "outside"),
    ([-1], [1.0], "outside"),
    ([2**31], [1.0], "outside"),
    ([3, 3], [1.0, 1.0], "twice"),
])
def test_upsert_validates_vectors(tmp_path, indices, values, why):
    st = _store(tmp_path / "data")
    col = st.create("c", {"model": None, "dim": DIM})
    with pytest.raises(CollectionError) as err:
        col.upsert([_doc(0), DocIn("bad", np.array(indices, np.int64), np.array(values, np.float64))])
    assert err.value.status == 422 and "'bad'" in str(err.value) and why in str(err.value)
    assert not col.loc and col._wal.size() == 0
    col.upsert([DocIn("ok", np.array([5, 2]), np.array([MAX_WEIGHT, 1e-3]))])  # unsorted ids are sorted
    assert col.merge(force=True)  # what was accepted always merges
    assert col.get("ok", with_vector=True)["vector"] == {2: pytest.approx(1e-3), 5: MAX_WEIGHT}
    st.close()


def test_dim_is_validated_at_create(tmp_path):
    st = _store(tmp_path / "data")
    for dim in (0, -5, 2**31, "x", None):
        with pytest.raises(CollectionError) as err:
            st.create("c", {"model": None, "dim": dim})
        assert err.value.status == 422
    st.close()


# ---------------------------------------------------------------------------- failed collections
def _two_logs(data):
    """Collection "c" with three upserts in its log, and a healthy collection "ok"."""
    st = _store(data)
    col = st.create("c", {"model": None, "dim": DIM})
    col.upsert([_doc(0)])
    col.upsert([_doc(1)])
    col.upsert([_doc(2)])
    st.create("ok", {"model": None, "dim": DIM}).upsert([_doc(9)])
    st.close()
    return data / "collections" / "c"


def test_mid_log_corruption_fails_the_collection_visibly(tmp_path):
    cdir = _two_logs(tmp_path / "data")
    log = cdir / "wal" / "000001.log"
    raw = bytearray(log.read_bytes())
    second = 8 + int.from_bytes(raw[:4], "little")
    raw[second + 20] ^= 0x55
    log.write_bytes(bytes(raw))
    st = _store(tmp_path / "data")
    try:
        assert set(st.collections) == {"ok"} and set(st.failed) == {"c"}
        reason = st.failed["c"]
        assert "000001.log" in reason and f"byte {second}" in reason and str(tmp_path) not in reason
        with pytest.raises(CollectionFailed) as err:
            st.get("c")
        assert err.value.status == 503 and "000001.log" in str(err.value)
        with pytest.raises(CollectionError) as err:
            st.create("c", {"model": None, "dim": DIM})
        assert err.value.status == 409 and "failed" in str(err.value)
        assert st.metrics()["failed"] == {"c": reason}
    finally:
        st.close()


def test_torn_tail_is_dropped_not_failed(tmp_path):
    cdir = _two_logs(tmp_path / "data")
    log = cdir / "wal" / "000001.log"
    log.write_bytes(log.read_bytes()[:-3])
    st = _store(tmp_path / "data")
    assert not st.failed and sorted(st.get("c").loc) == ["d0", "d1"]
    st.close()


def test_missing_current_log_fails_the_collection(tmp_path):
    cdir = _two_logs(tmp_path / "data")
    (cdir / "wal" / "000001.log").unlink()  # old code: opened as an empty collection
    st = _store(tmp_path / "data")
    assert "c" in st.failed and "000001.log" in st.failed["c"] and "missing" in st.failed["c"]
    st.close()


def test_damaged_segment_fails_the_collection(tmp_path):
    st = _store(tmp_path / "data")
    col = st.create("c", {"model": None, "dim": DIM})
    col.upsert([_doc(i) for i in range(5)])
    col.merge(force=True)
    st.close()
    docs = tmp_path / "data" / "collections" / "c" / "segments" / "seg-000001" / "docs.jsonl"
    raw = bytearray(docs.read_bytes())
    raw[5] ^= 1  # checksums are verified on every load now (not only with --verify)
    docs.write_bytes(bytes(raw))
    st = _store(tmp_path / "data")
    assert "sha256" in st.failed["c"] and "segments/seg-000001" in st.failed["c"] and str(tmp_path) not in st.failed["c"]
    st.delete("c")  # an operator may drop a failed collection
    assert not st.failed and not (tmp_path / "data" / "collections" / "c").exists()
    st.close()


def test_unlisted_segment_is_quarantined_not_deleted(tmp_path):
    st = _store(tmp_path / "data")
    col = st.create("c", {"model": None, "dim": DIM})
    col.upsert([_doc(i) for i in range(5)])
    col.merge(force=True)
    st.close()
    cdir = tmp_path / "data" / "collections" / "c"
    stray = cdir / "segments" / "seg-000009"
    stray.mkdir()
    (stray / "docs.jsonl").write_text("precious\n")
    st = _store(tmp_path / "data")
    assert not st.failed and len(st.get("c")) == 5
    assert (cdir / "quarantine" / "seg-000009" / "docs.jsonl").read_text() == "precious\n"
    assert not stray.exists() and st.get("c").quarantined == ["seg-000009"]
    st.close()


def test_files_are_private(tmp_path):
    st = _store(tmp_path / "data")
    col = st.create("c", {"model": None, "dim": DIM})
    col.upsert([_doc(i) for i in range(5)])
    col.merge(force=True)
    col.upsert([_doc(9)])
    st.close()
    for p in (tmp_path / "data" / "collections").rglob("*"):
        want = 0o700 if p.is_dir() else 0o600
        assert p.stat().st_mode & 0o777 == want, p


# ---------------------------------------------------------------------------- delete reclamation
def test_search_does_not_overfetch_by_every_tombstone(tmp_path, monkeypatch):
    st = _store(tmp_path / "data")
    col = st.create("c", {"model": None, "dim": DIM})
    col.upsert([DocIn(f"d{i}", np.array([1 + i % 900, SHARED]), np.array([1.0, 1.0 + i * 0.05]))
                for i in range(800)])
    col.merge(force=True)
    col.delete([f"d{i}" for i in range(0, 800, 4)])  # 25% tombstones
    asked = []
    real = Segment.search

    def spy(self, queries, k, knobs, threads):
        asked.append(k)
        return real(self, queries, k, knobs, threads)

    monkeypatch.setattr(Segment, "search", spy)
    q = SparseBatch.from_dicts([{SHARED: 1.0}], dim=DIM)
    _, res = col.search(q, 10, {})
    assert len(res[0]) == 10 and all(int(c.id[1:]) % 4 for c in res[0])
    assert max(asked) < 40, asked  # old code asked for k + 200
    # the best documents are the highest ids (weights rise with i); tombstones among them are skipped
    assert [c.id for c in res[0]] == [f"d{i}" for i in range(799, 780, -1) if i % 4][:10]
    # a query whose top hits are all tombstoned searches again with a larger k
    col.delete([f"d{i}" for i in range(700, 800)])
    asked.clear()
    _, res = col.search(q, 10, {})
    assert [c.id for c in res[0]] == [f"d{i}" for i in range(699, 680, -1) if i % 4][:10]
    assert len(asked) >= 2
    st.close()


# ---------------------------------------------------------------------------- repair
def test_repair_salvages_every_good_record(tmp_path, capsys):
    from lsr.service.repair import repair_main

    data = tmp_path / "data"
    st = _store(data)
    col = st.create("c", {"model": None, "dim": DIM})
    for i in range(5):
        col.upsert([_doc(i)])
    st.close()
    log = data / "collections" / "c" / "wal" / "000001.log"
    raw = bytearray(log.read_bytes())
    starts, pos = [], 0
    while pos < len(raw):
        starts.append(pos)
        pos += 8 + int.from_bytes(raw[pos:pos + 4], "little")
    bad_len = starts[2] - starts[1]
    raw[starts[1] + 12] ^= 0x40  # damage record 2 of 5
    log.write_bytes(bytes(raw))
    st = _store(data)
    assert "c" in st.failed
    assert repair_main(["c", "--data", str(data)]) == 2  # the folder is locked while a store holds it
    st.close()
    assert repair_main(["c", "--data", str(data), "--dry-run"]) == 0
    assert log.read_bytes() == bytes(raw)
    capsys.readouterr()
    assert repair_main(["c", "--data", str(data)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] and report["documents"] == 4 and report["records_kept"] == 4
    assert report["dropped_count"] == 1 and report["dropped_bytes"] == bad_len
    assert report["dropped"][0]["offset"] == starts[1] and report["dropped"][0]["file"] == "000001.log"
    st = _store(data)
    assert not st.failed and sorted(st.get("c").loc) == ["d0", "d2", "d3", "d4"]
    st.close()


def test_repair_recreates_a_missing_current_log(tmp_path):
    from lsr.service.repair import repair

    cdir = _two_logs(tmp_path / "data")
    (cdir / "wal" / "000001.log").unlink()
    report = repair(tmp_path / "data", "c")
    assert report["missing_logs"] == ["000001.log"] and report["ok"]
    st = _store(tmp_path / "data")
    assert not st.failed
    st.close()


# ---------------------------------------------------------------------------- ingest
def _corpus(path, n=5):
    with open(path, "w") as fh:
        for i in range(n):
            fh.write(json.dumps({"_id": f"d{i}", "title": f"Title {i}", "text": f"body {i}",
                                 "vector": {str(i + 1): 1.5}}) + "\n")
    return path


def test_ingest_reads_the_one_corpus_reader(tmp_path):
    from lsr.service.ingest import ingest

    corpus = _corpus(tmp_path / "corpus.jsonl")
    data = tmp_path / "data"
    stats = ingest(corpus, "c", data_dir=data, model=None, dim=50)
    assert stats["documents"] == 5
    st = _store(data)
    doc = st.get("c").get("d2")
    assert doc["text"] == "Title 2 body 2"  # doc_text(): the text evaluation encodes
    assert doc["metadata"]["title"] == "Title 2"
    st.close()
    ingest(corpus, "c", data_dir=data, dim=50)  # no model given: the collection keeps its own
    with pytest.raises(ValueError, match="exists with model None"):
        ingest(corpus, "c", data_dir=data, model="splade-tiny")


@pytest.mark.parametrize("limit", [0, -1])
def test_ingest_rejects_a_bad_limit(tmp_path, limit):
    from lsr.service.ingest import ingest

    with pytest.raises(ValueError, match="limit"):
        ingest(_corpus(tmp_path / "corpus.jsonl"), "c", data_dir=tmp_path / "data", model=None, dim=50, limit=limit)
    assert not (tmp_path / "data" / "collections" / "c").exists()


def test_ingest_of_a_missing_file_leaves_no_collection(tmp_path):
    from lsr.service.ingest import ingest

    with pytest.raises(FileNotFoundError):
        ingest(tmp_path / "missing.jsonl", "c", data_dir=tmp_path / "data", model=None, dim=50)
    assert not (tmp_path / "data" / "collections" / "c").exists()
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"_id": "x", "text": "ok", "vector": {"999": 1.0}}\n')  # term id beyond dim
    with pytest.raises(CollectionError):
        ingest(bad, "c", data_dir=tmp_path / "data", model=None, dim=50)
    st = _store(tmp_path / "data")
    assert "c" not in st.collections and not st.failed
    st.close()


def test_merge_policy_rewrites_only_segments_past_the_threshold(tmp_path):
    st = _store(tmp_path / "data")
    col = st.create("c", {"model": None, "dim": DIM})
    col.upsert([_doc(i) for i in range(20)])
    col.merge(force=True)
    col.upsert([_doc(i) for i in range(20, 40)])
    col.merge(force=True)
    a, b = col.segments
    col.delete(["d0", "d20", "d21", "d22"])  # a: 1/20 = 5%, b: 3/20 = 15%
    assert col._select_folded(None) == [b] and col.needs_merge()
    assert col.merge()
    assert a in col.segments and b not in col.segments and len(col) == 36
    assert not col.needs_merge()
    st.close()


def test_background_merger_backs_off_after_a_failure(tmp_path, monkeypatch):
    import time

    st = CollectionStore(tmp_path / "data", MergePolicy(min_docs=1, idle_s=1e9, retry_s=30))
    st.load_all()
    col = st.create("c", {"model": None, "dim": DIM})
    col.upsert([_doc(0)])
    calls = []
    real = SeismicIndex.build.__func__

    def flaky(cls, *a, **k):
        calls.append(1)
        raise RuntimeError("no")

    monkeypatch.setattr(SeismicIndex, "build", classmethod(flaky))
    st.start_merger(0.02)
    try:
        time.sleep(0.5)
        assert len(calls) == 1 and col.merge_failures == 1  # not retried in a tight loop
        monkeypatch.setattr(SeismicIndex, "build", classmethod(real))
        col.next_merge_at = 0  # the back-off has passed
        deadline = time.monotonic() + 20
        while col.fresh and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not col.fresh and len(col.segments) == 1
    finally:
        st.close()


def test_a_failed_log_roll_does_not_block_later_merges(faulty):
    data, fs = faulty
    st = _store(data)
    col = st.create("c", {"model": None, "dim": DIM})
    col.upsert([_doc(0)])
    real = fs.fsync_dir

    def failing(path, site):
        if site == "wal.create":
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(path, site)

    fs.fsync_dir = failing
    with pytest.raises(StorageFull):
        col.merge(force=True)
    del fs.fsync_dir
    col.upsert([_doc(1)])  # still written to the old log
    assert col.merge(force=True) and len(col) == 2
    st.close()
    fs.power_cut()
    st = _store(data)
    assert sorted(st.get("c").loc) == ["d0", "d1"]
    st.close()


# Cutting a partial record off the log must itself be durable: the kernel may have written the
# partial record back, and once a merge starts a newer log the leftover reads as mid-log corruption.
# FaultFS(writeback=True) keeps every written byte, so only the truncation's fsync removes it.
def _partial_record_then_roll(tmp_path, skip, *, crash_before_rollback: bool):
    data = tmp_path / "data"
    fs = FaultFS(data, skip_sites=skip, writeback=True)
    try:
        with fileio.use(fs):
            st = _store(data)
            col = st.create("c", {"model": None, "dim": DIM})
            col.upsert([_doc(0)])
            if crash_before_rollback:  # the process dies mid-append: the partial record stays
                col._wal._rollback = lambda: None
            fs.fail_writes(after_bytes=10, match=".log")
            with pytest.raises(StorageFull):
                col.upsert([_doc(1)])
            fs.clear_faults()
            if crash_before_rollback:
                st.close()
                fs.power_cut()
                st = _store(data)  # reopening cuts the torn tail
                col = st.get("c")
            col._wal.close()  # nothing else appended to this log, then a merge's roll:
            col._wal = type(col._wal).create(col.path / "wal", col._wal.number + 1)
            st.close()
            fs.power_cut()
            st = _store(data)
            try:
                return dict(st.failed), sorted(st.collections["c"].loc) if "c" in st.collections else None
            finally:
                st.close()
    finally:
        fs.close()


@pytest.mark.parametrize("site,crash", [("wal.rollback", False), ("wal.truncate", True)])
def test_cutting_a_partial_record_is_durable(tmp_path, site, crash):
    failed, ids = _partial_record_then_roll(tmp_path / "ok", set(), crash_before_rollback=crash)
    assert not failed and ids == ["d0"]
    failed, ids = _partial_record_then_roll(tmp_path / "mutant", {site}, crash_before_rollback=crash)
    assert "c" in failed and "not the last" in failed["c"], f"removing fsync site {site!r} went unnoticed"


# Start-up and repair write paths: what they move or rewrite must survive a power cut too.
def _quarantine_then_cut(tmp_path, skip):
    data = tmp_path / "data"
    st = _store(data)
    col = st.create("c", {"model": None, "dim": DIM})
    col.upsert([_doc(0)])
    col.merge(force=True)
    st.close()
    stray = data / "collections" / "c" / "segments" / "seg-000007"
    stray.mkdir()
    (stray / "docs.jsonl").write_text("precious\n")
    fs = FaultFS(data, skip_sites=skip)  # the stray folder is on disk (the baseline)
    try:
        with fileio.use(fs):
            st = _store(data)
            assert st.get("c").quarantined == ["seg-000007"]
            st.close()
            fs.power_cut()
        q = data / "collections" / "c" / "quarantine" / "seg-000007" / "docs.jsonl"
        # moved exactly once: kept in quarantine/, gone from segments/
        return q.exists() and q.read_text() == "precious\n" and not stray.exists()
    finally:
        fs.close()


@pytest.mark.parametrize("site", ["quarantine", "quarantine.segments", "quarantine.collection"])
def test_quarantine_is_durable(tmp_path, site):
    assert _quarantine_then_cut(tmp_path / "ok", set())
    assert not _quarantine_then_cut(tmp_path / "mutant", {site}), f"removing fsync site {site!r} went unnoticed"


def _repair_then_cut(tmp_path, skip):
    from lsr.service.repair import repair

    data = tmp_path / "data"
    st = _store(data)
    col = st.create("c", {"model": None, "dim": DIM})
    for i in range(4):
        col.upsert([_doc(i)])
    st.close()
    log = data / "collections" / "c" / "wal" / "000001.log"
    raw = bytearray(log.read_bytes())
    raw[8 + int.from_bytes(raw[:4], "little") + 12] ^= 0x40  # damage record 2 of 4
    log.write_bytes(bytes(raw))
    fs = FaultFS(data, skip_sites=skip)
    try:
        with fileio.use(fs):
            assert repair(data, "c")["documents"] == 3
            fs.power_cut()
        st = _store(data)
        try:
            return dict(st.failed), sorted(st.collections["c"].loc) if "c" in st.collections else None
        finally:
            st.close()
    finally:
        fs.close()


@pytest.mark.parametrize("site", ["repair.log:file", "repair.log:dir"])
def test_repair_is_durable(tmp_path, site):
    assert _repair_then_cut(tmp_path / "ok", set()) == ({}, ["d0", "d2", "d3"])
    assert _repair_then_cut(tmp_path / "mutant", {site}) != ({}, ["d0", "d2", "d3"]), \
        f"removing fsync site {site!r} went unnoticed"
