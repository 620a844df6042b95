"""Sharded, replicated collections on a simulated 3-node Ray cluster (tests/cluster/conftest.py).

Exact search over shards equals the single-node collection hit for hit (ids, scores, tie order);
approximate (Seismic) search reaches the single-node Recall@10 within 0.005; a node removed in the
middle of a write and search load loses no acknowledged write and fails no search (R = 2), and the
replica Ray restarts catches up until both copies of each shard hold the same documents; with
R = 1 a lost shard is a 503 over real HTTP, or ``partial: true`` when the request allows it.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from lsr.index import ExactIndex
from lsr.index.sparse import SparseBatch
from lsr.service.collection import CollectionError, CollectionStore, DocIn, MergePolicy

ray = pytest.importorskip("ray", reason="the cluster tests need the 'cluster' extra: pip install 'lsr[cluster]'")

from lsr.cluster.store import ClusterStore, ShardUnavailable, shard_of  # noqa: E402

DIM = 3000
API_KEY = "cluster-test-key-0123456789"
KNOBS = {"query_cut": None, "heap_factor": None}


def make_docs(n: int, seed: int) -> SparseBatch:
    """Zipf-popular terms with log-normal weights; a few topics so queries have real neighbours."""
    rng = np.random.default_rng(seed)
    pop = 1.0 / np.arange(1, DIM + 1) ** 0.9
    pop /= pop.sum()
    topics = rng.choice(DIM, size=(40, 30), p=pop)
    rows = []
    for _ in range(n):
        t = np.concatenate([rng.choice(DIM, rng.integers(10, 40), p=pop), rng.choice(topics[rng.integers(40)], 12)])
        t = np.unique(t)
        rows.append({int(i): float(w) for i, w in zip(t, rng.lognormal(0, 0.8, t.size))})
    return SparseBatch.from_dicts(rows, dim=DIM)


def make_queries(docs: SparseBatch, n: int, seed: int) -> SparseBatch:
    rng = np.random.default_rng(seed)
    rows = []
    for d in rng.integers(0, len(docs), n):
        idx, val = docs.row(int(d))
        pick = rng.choice(idx.size, min(8, idx.size), replace=False)
        rows.append({int(idx[p]): float(val[p] * rng.uniform(0.5, 1.5)) for p in pick})
    return SparseBatch.from_dicts(rows, dim=DIM)


def doc_ins(docs: SparseBatch, start: int, stop: int, prefix: str = "d") -> list[DocIn]:
    return [DocIn(f"{prefix}{i}", *docs.row(i), f"text of {prefix}{i}", {"n": i}) for i in range(start, stop)]


def fill(cols, docs: SparseBatch, batch: int = 300) -> None:
    for b in range(0, len(docs), batch):
        part = doc_ins(docs, b, min(b + batch, len(docs)))
        for c in cols:
            c.upsert(part)


def brute_force(docs: SparseBatch, queries: SparseBatch, k: int) -> list[list[str]]:
    hits = ExactIndex.build(docs).search(queries, k=k)
    return [[f"d{r}" for r in row if r >= 0] for row in hits.rows]


@pytest.fixture(scope="module")
def stores(ray_cluster, tmp_path_factory):
    root = tmp_path_factory.mktemp("cluster")
    st = ClusterStore.launch(root / "replicas", 2, 2, cluster_name="t", merge_min_docs=10**9, merge_idle_s=1e9,
                             timeout_s=60)
    st.load_all()
    st.start_merger()
    single = CollectionStore(root / "single", MergePolicy(min_docs=10**9, idle_s=1e9))
    yield st, single
    st.kill()
    single.close()


def test_shard_of_is_stable():
    # fixed values: the hash must not change between processes or releases (it places documents)
    assert [shard_of(f"doc-{i}", 4) for i in range(8)] == [shard_of(f"doc-{i}", 4) for i in range(8)]
    assert shard_of("doc-0", 1) == 0
    counts = np.bincount([shard_of(f"d{i}", 4) for i in range(4000)], minlength=4)
    assert counts.min() > 850  # an even split


def test_exact_search_equals_single_node(stores):
    st, single = stores
    docs = make_docs(1200, seed=1)
    queries = make_queries(docs, 40, seed=2)
    config = {"model": None, "dim": DIM, "index": {}}
    col, ref = st.create("exact", config), single.create("exact", config)
    fill([col, ref], docs)
    assert col.stats()["documents"] == len(ref) == len(docs)
    per_shard = [sh.committed["exact"] for sh in st.shards]
    assert all(s > 0 for s in per_shard)  # both shards hold documents
    _, got = col.search(queries, 10, KNOBS, 1)
    _, want = ref.search(queries, 10, KNOBS, 1)
    for g, w, bf in zip(got, want, brute_force(docs, queries, 10)):
        assert [c.id for c in g] == [c.id for c in w]
        np.testing.assert_allclose([c.score for c in g], [c.score for c in w], rtol=1e-6)
        assert len(g) == 10 and set(c.id for c in g) == set(bf)
    # ties: documents with the same vector score the same; both break the tie by id
    twins = [DocIn(f"twin-{j}", *docs.row(0), None, None) for j in range(6)]
    col.upsert(twins)
    ref.upsert(twins)
    _, got = col.search(docs[0:1], 8, KNOBS, 1)
    _, want = ref.search(docs[0:1], 8, KNOBS, 1)
    assert [c.id for c in got[0]] == [c.id for c in want[0]]
    assert {shard_of(t.id, 2) for t in twins} == {0, 1}  # the tie spans shards
    # deletes and reads agree too
    gone = [f"d{i}" for i in range(0, 1200, 7)] + ["never-there"]
    assert col.delete(gone) == ref.delete(gone)
    assert col.get("d1", with_vector=True) == ref.get("d1", with_vector=True)
    assert col.get("d7") is None
    _, got = col.search(queries, 10, KNOBS, 1)
    _, want = ref.search(queries, 10, KNOBS, 1)
    assert [[c.id for c in g] for g in got] == [[c.id for c in w] for w in want]


def test_bulk_rows_write_what_per_document_writes_write(stores):
    st, single = stores
    docs = make_docs(900, seed=11)
    config = {"model": None, "dim": DIM, "index": {}}
    col, ref = st.create("bulk", config), single.create("bulk", config)
    ids = [f"d{i}" for i in range(len(docs))]
    # each row's terms reversed: the bulk path sorts them as the per-document path does
    row = np.repeat(np.arange(len(docs)), docs.row_nnz())
    order = np.lexsort((-docs.indices.astype(np.int64), row))
    flipped = SparseBatch(docs.indptr, docs.indices[order], docs.values[order], DIM)
    assert not np.array_equal(flipped.indices, docs.indices)
    seq = col.upsert_rows(ids, flipped, texts=[f"text of {i}" for i in ids], metadata=[{"n": n} for n in range(len(ids))])
    assert seq == col.seq and col.stats()["documents"] == len(docs)
    fill([ref], docs)
    assert col.get("d5", with_vector=True) == ref.get("d5", with_vector=True)
    queries = make_queries(docs, 20, seed=12)
    _, got = col.search(queries, 10, KNOBS, 1)
    _, want = ref.search(queries, 10, KNOBS, 1)
    assert [[c.id for c in g] for g in got] == [[c.id for c in w] for w in want]
    # a bad row anywhere refuses the whole write before any shard sees it
    bad = SparseBatch(np.array([0, 2, 4]), np.array([1, 2, 3, DIM + 5]), np.ones(4, np.float32), DIM + 10)
    before = [sh.committed["bulk"] for sh in st.shards]
    with pytest.raises(CollectionError, match="'new-1': term id 3005 outside"):
        col.upsert_rows(["new-0", "new-1"], bad)
    assert [sh.committed["bulk"] for sh in st.shards] == before and col.get("new-0") is None


def test_approximate_recall_matches_single_node(stores):
    st, single = stores
    docs = make_docs(3000, seed=3)
    queries = make_queries(docs, 100, seed=4)
    config = {"model": None, "dim": DIM, "index": {}}
    col, ref = st.create("approx", config), single.create("approx", config)
    fill([col, ref], docs, batch=1000)
    assert col.merge(force=True) and ref.merge(force=True)
    assert col.stats()["fresh_documents"] == 0 and len(col.stats()["segments"]) == 2
    truth = brute_force(docs, queries, 10)
    knobs = {"query_cut": 5, "heap_factor": 0.8}

    def recall(c):
        _, res = c.search(queries, 10, knobs, 1)
        return float(np.mean([len({h.id for h in r} & set(t)) / len(t) for r, t in zip(res, truth)]))

    r_cluster, r_single = recall(col), recall(ref)
    print(f"Recall@10: sharded {r_cluster:.4f}, single node {r_single:.4f}")
    assert r_single > 0.8
    assert abs(r_cluster - r_single) <= 0.005


def test_node_removed_mid_load_loses_no_acked_write(stores, ray_cluster):
    cluster, workers = ray_cluster
    st, _ = stores
    docs = make_docs(900, seed=5)
    queries = make_queries(docs, 20, seed=6)
    col = st.create("load", {"model": None, "dim": DIM, "index": {}})
    col.upsert(doc_ins(docs, 0, 100))
    acked: list[str] = []
    write_errors: list[str] = []
    search_errors: list[str] = []
    searches = [0]
    done = threading.Event()

    def writer():
        for b in range(100, 900, 10):
            try:
                col.upsert(doc_ins(docs, b, b + 10))
                acked.extend(f"d{i}" for i in range(b, b + 10))
            except Exception as exc:  # noqa: BLE001 - counted: the test requires none
                write_errors.append(repr(exc))
            time.sleep(0.01)
        done.set()

    def searcher():
        while not done.is_set():
            try:
                _, res = col.search(queries, 10, KNOBS, 1)
                assert all(len(r) == 10 for r in res)
                searches[0] += 1
            except Exception as exc:  # noqa: BLE001 - counted: the test requires none
                search_errors.append(repr(exc))

    threads = [threading.Thread(target=writer), threading.Thread(target=searcher)]
    for t in threads:
        t.start()
    while len(acked) < 200:
        time.sleep(0.05)
    # a worker node that holds replicas (at most one of each shard: placement groups spread them)
    homes = [ray.get(r.handle.status.remote())["node"] for sh in st.shards for r in sh.replicas]
    victim = max((w for w in workers if w.node_id in homes), key=lambda w: homes.count(w.node_id))
    on_victim = [h for h in homes if h == victim.node_id]
    t_remove = time.monotonic()
    cluster.remove_node(victim)
    for t in threads:
        t.join(timeout=300)
    assert on_victim, "the removed node held no replica"
    assert not write_errors, write_errors[:3]
    assert not search_errors, search_errors[:3]
    assert searches[0] > 5
    # the replicas that lived there come back (Ray restarts them elsewhere) and catch up
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not all(r.live for sh in st.shards for r in sh.replicas):
        time.sleep(0.2)
    back_s = time.monotonic() - t_remove
    print(f"node removed: {len(acked)} writes acked, {searches[0]} searches, all replicas live again after "
          f"{back_s:.1f} s; records copied {st.copied_records}, folders copied {st.copied_folders}")
    assert all(r.live for sh in st.shards for r in sh.replicas), st.replica_states()
    assert st.resyncs >= 1
    want = {f"d{i}" for i in range(100)} | set(acked)
    for sh in st.shards:
        copies = [ray.get(r.handle.ids.remote(r.incarnation, "load"))[1] for r in sh.replicas]
        assert copies[0] == copies[1]  # converged: same documents, same vectors and texts
        assert set(copies[0]) == {i for i in want if shard_of(i, 2) == sh.index}
    for i in range(0, 900, 37):
        doc = col.get(f"d{i}", with_vector=True)
        assert doc is not None and doc["metadata"] == {"n": i}
        idx, val = docs.row(i)
        assert doc["vector"] == {int(t): float(w) for t, w in zip(idx, val)}


def test_replica_behind_a_merge_catches_up_by_copying_the_folder(ray_cluster, tmp_path):
    # a store of its own without the monitor thread: catch-up runs when the test calls it
    st = ClusterStore.launch(tmp_path / "replicas", 1, 2, cluster_name="cp", merge_min_docs=10**9,
                             merge_idle_s=1e9, timeout_s=60)
    try:
        st.load_all()
        docs = make_docs(400, seed=8)
        col = st.create("copy", {"model": None, "dim": DIM, "index": {}})
        col.upsert(doc_ins(docs, 0, 200))
        sh = st.shards[0]
        away = sh.replicas[1]
        ray.kill(away.handle, no_restart=False)  # Ray restarts it; it replays its own log
        col.upsert(doc_ins(docs, 200, 400))  # the restarted actor refuses a call meant for its old life
        assert not away.live and sh.committed["copy"] == 2
        assert col.merge(force=True)  # the live replica folds its log into a segment: the records are gone
        deadline = time.monotonic() + 120
        while not away.live and time.monotonic() < deadline:
            st.check_replicas()
            time.sleep(0.2)
        assert away.live, st.replica_states()
        assert st.copied_folders == 1 and st.copied_records == 0  # a copy of the folder, not of the log
        copies = [ray.get(r.handle.ids.remote(r.incarnation, "copy"))[1] for r in sh.replicas]
        assert copies[0] == copies[1] and set(copies[0]) == {f"d{i}" for i in range(400)}
        st_away = ray.get(away.handle.stats.remote(away.incarnation, "copy"))[1]
        assert st_away["fresh_documents"] == 0 and st_away["segment_count"] == 1 and st_away["seq"] == 2
        _, res = col.search(make_queries(docs, 5, seed=9), 10, KNOBS, 1)  # both replicas serve
        assert all(len(r) == 10 for r in res)
    finally:
        st.kill()


def test_ingest_through_ray_data(ray_cluster, tmp_path):
    """`lsr ingest --cluster`: Ray Data encodes on an actor pool, each shard builds its own segment;
    the stored vectors equal the encoder's own output."""
    cluster, _ = ray_cluster
    root = Path(__file__).resolve().parents[2]
    corpus = root / "tests" / "data" / "beir" / "scifact" / "corpus.jsonl.gz"
    model = root / "models" / "inference-free-splade-tiny-scifact-nfcorpus"
    data = tmp_path / "data"
    cmd = [sys.executable, "-m", "lsr.cli.main", "ingest", "--cluster", cluster.address, str(corpus), "--collection",
           "sf", "--shards", "2", "--replicas", "1", "--data", str(data), "--model", str(model), "--limit", "24",
           "--actors", "1", "--block", "8", "--batch-size", "8"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["documents"] == 24 and out["shards"] == 2
    st = ClusterStore.launch(data, 2, 1)  # the same named actors the ingest started (detached)
    try:
        st.load_all()
        col = st.get("sf")
        stats = col.stats()
        assert stats["documents"] == 24 and stats["fresh_documents"] == 0 and stats["segment_count"] == 2
        from lsr.index.corpus import read_corpus
        from lsr.models import SparseEncoder

        docs = list(read_corpus(corpus, 24))
        enc = SparseEncoder.load(str(model)).encode_documents([d.full_text for d in docs])
        for i in (0, 7, 23):
            got = col.get(docs[i].id, with_vector=True)
            idx, val = enc.row(i)
            want = {int(t): float(w) for t, w in zip(idx, val) if w > 0}
            assert got["vector"].keys() == want.keys()
            assert max(abs(got["vector"][t] - want[t]) for t in want) < 1e-4
            assert got["text"] == docs[i].full_text
    finally:
        st.kill()
    for s in range(2):  # the names are free again for the next test
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                ray.get_actor(f"lsr-shard-{s:03d}-replica-0", namespace="lsr")
            except ValueError:
                break
            time.sleep(0.2)


def test_encode_cli_through_ray_data_writes_what_the_plain_loop_writes(ray_cluster, tmp_path):
    cluster, _ = ray_cluster
    root = Path(__file__).resolve().parents[2]
    base = [sys.executable, "-m", "lsr.cli.encode", "--input",
            str(root / "tests" / "data" / "beir" / "scifact" / "corpus.jsonl.gz"), "--model",
            str(root / "models" / "inference-free-splade-tiny-scifact-nfcorpus"), "--limit", "12", "--batch-size", "4",
            "--no-progress"]
    plain = subprocess.run(base + ["--out", str(tmp_path / "plain.npz")], capture_output=True, text=True, timeout=600)
    assert plain.returncode == 0, plain.stderr[-2000:]
    viaray = subprocess.run(base + ["--out", str(tmp_path / "ray.npz"), "--cluster", cluster.address, "--actors", "1"],
                            capture_output=True, text=True, timeout=600)
    assert viaray.returncode == 0, viaray.stderr[-3000:]
    from lsr.index.sparse import load_vectors

    a, ids_a = load_vectors(tmp_path / "plain.npz")
    b, ids_b = load_vectors(tmp_path / "ray.npz")
    assert list(ids_a) == list(ids_b) and len(ids_a) == 12  # input order kept
    assert np.array_equal(a.indptr, b.indptr) and np.array_equal(a.indices, b.indices)
    np.testing.assert_allclose(a.values, b.values, atol=1e-5)


@pytest.mark.parametrize("argv", [
    ["lsr.cli.main", "ingest", "--cluster", "local", "corpus.jsonl", "--collection", "c", "--shards", "0"],
    ["lsr.cli.main", "serve", "--cluster", "local", "--replicas", "0", "--model", "none"],
])
def test_cluster_cli_rejects_bad_counts(argv, tmp_path):
    r = subprocess.run([sys.executable, "-m", *argv, "--data", str(tmp_path / "d")], capture_output=True, text=True,
                       timeout=300, cwd=tmp_path)
    assert r.returncode == 2
    assert "--shards and --replicas must be at least 1" in r.stderr and "Traceback" not in r.stderr


def test_lost_shard_is_503_or_partial_over_http(ray_cluster, tmp_path):
    import httpx

    cluster, _ = ray_cluster
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    log_path = tmp_path / "serve.log"
    env = {**os.environ, "LSR_API_KEYS": API_KEY}
    cmd = [sys.executable, "-m", "lsr.cli.main", "serve", "--cluster", cluster.address, "--shards", "2",
           "--replicas", "1", "--data", str(tmp_path / "data"), "--model", "none", "--port", str(port),
           "--log-level", "warning"]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            assert proc.poll() is None, log_path.read_text()[-3000:]
            try:
                if httpx.get(url + "/ready", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, log_path.read_text()[-3000:]
            time.sleep(0.2)
        h = {"x-api-key": API_KEY}
        with httpx.Client(base_url=url, headers=h, timeout=60) as c:
            assert c.post("/v1/collections", json={"name": "r1", "model": None, "dim": DIM}).status_code == 201
            docs = make_docs(200, seed=7)
            body = [{"id": f"d{i}", "vector_ids": {str(t): float(w) for t, w in zip(*docs.row(i))}}
                    for i in range(200)]
            r = c.post("/v1/collections/r1/documents", json={"documents": body})
            assert r.status_code == 200, r.text
            q = {str(t): float(w) for t, w in zip(*docs.row(3))}
            r = c.post("/v1/collections/r1/search", json={"vector_ids": q, "k": 5})
            assert r.status_code == 200 and r.json()["hits"][0]["id"] == "d3" and "partial" not in r.json()
            assert c.get("/v1/collections/r1").json()["documents"] == 200
            # lose shard 1 for good (its only replica, no restart)
            lost = ray.get_actor("lsr-shard-001-replica-0", namespace="lsr")
            ray.kill(lost, no_restart=True)
            r = c.post("/v1/collections/r1/search", json={"vector_ids": q, "k": 5})
            assert r.status_code == 503 and r.json()["error"] == "shard_unavailable", r.text
            in_shard0 = sum(shard_of(f"d{i}", 2) == 0 for i in range(200))
            assert c.get("/v1/collections/r1").json()["documents"] == in_shard0  # the shard that answers
            deadline = time.monotonic() + 30  # the monitor notices the loss: /ready says degraded, and why
            while (ready := c.get("/ready").json())["status"] != "degraded" and time.monotonic() < deadline:
                time.sleep(0.2)
            assert ready["status"] == "degraded" and "[1]" in ready["failed"]["r1"], ready
            listed = [x for x in c.get("/v1/collections").json()["collections"] if x["name"] == "r1"]
            assert len(listed) == 1 and listed[0]["status"] == "degraded", listed  # once, not also as failed
            r = c.post("/v1/collections/r1/search", json={"vector_ids": q, "k": 200, "allow_partial": True})
            assert r.status_code == 200, r.text
            out = r.json()
            assert out["partial"] is True and out["missing_shards"] == [1]
            ids = {hit["id"] for hit in out["hits"]}
            assert ids and all(shard_of(i, 2) == 0 for i in ids)  # shard 0's matches, never shard 1's
            in_lost = next(f"d{i}" for i in range(200) if shard_of(f"d{i}", 2) == 1)
            r = c.post("/v1/collections/r1/documents", json={"documents": [{"id": in_lost, "vector_ids": {"1": 1.0}}]})
            assert r.status_code == 503, r.text
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
        for s in range(2):
            try:
                ray.kill(ray.get_actor(f"lsr-shard-{s:03d}-replica-0", namespace="lsr"), no_restart=True)
            except ValueError:
                pass
