"""Coalescing concurrent searches: the batching itself (no Ray needed) and, over a Ray cluster,
concurrent searches equal serial ones."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from lsr.cluster.coalesce import Coalescer
from lsr.index.sparse import SparseBatch


def one_query(term: int) -> SparseBatch:
    return SparseBatch.from_csr(np.array([0, 1]), np.array([term], np.int32), np.array([1.0], np.float32), dim=100)


def two_queries(term: int) -> SparseBatch:
    """A request of two queries: ``term`` and ``term + 50``."""
    return SparseBatch.from_csr(np.array([0, 1, 2]), np.array([term, term + 50], np.int32),
                                np.array([1.0, 1.0], np.float32), dim=100)


class Backend:
    """A scatter that records each batch it gets and answers each query with its own term id; the first
    call waits until released, so the requests that arrive meanwhile must queue."""

    def __init__(self, fail: bool = False) -> None:
        self.batches: list[list[int]] = []
        self.release = threading.Event()
        self.entered = threading.Event()
        self.fail = fail

    def __call__(self, batch: SparseBatch):
        self.batches.append([int(batch.row(i)[0][0]) for i in range(len(batch))])
        self.entered.set()
        self.release.wait(10)
        if self.fail:
            raise RuntimeError("shard 3 has no live replica")
        return f"view-{len(self.batches)}", [[t * 10] for t in self.batches[-1]]


def run_clients(co: Coalescer, backend: Backend, terms: list[int]) -> tuple[dict, dict]:
    results: dict[int, object] = {}
    errors: dict[int, BaseException] = {}

    def client(t: int) -> None:
        try:
            results[t] = co.submit("k", two_queries(t) if t % 2 == 0 else one_query(t), backend)
        except BaseException as exc:  # noqa: BLE001 - recorded and checked
            errors[t] = exc

    first = threading.Thread(target=client, args=(terms[0],))
    first.start()
    assert backend.entered.wait(10)
    rest = [threading.Thread(target=client, args=(t,)) for t in terms[1:]]
    for th in rest:
        th.start()
    deadline = time.monotonic() + 10
    while co.requests < len(terms) and time.monotonic() < deadline:
        time.sleep(0.001)
    backend.release.set()
    for th in [first] + rest:
        th.join(10)
    return results, errors


def test_requests_queued_behind_a_scatter_go_out_as_one_batch_and_get_their_own_hits():
    co, backend = Coalescer(), Backend()
    results, errors = run_clients(co, backend, [1, 2, 3, 4, 5, 6])
    assert not errors
    assert backend.batches[0] == [1]
    # requests 2, 4, 6 carry two queries each (t and t + 50)
    assert sorted(backend.batches[1]) == [2, 3, 4, 5, 6, 52, 54, 56] and len(backend.batches) == 2
    assert co.scatters == 2 and co.requests == 6
    for t in range(1, 7):
        view, hits = results[t]
        # its own queries' hits, in its order, not a neighbour's
        assert hits == ([[t * 10], [(t + 50) * 10]] if t % 2 == 0 else [[t * 10]])
        assert view == ("view-1" if t == 1 else "view-2")


def test_a_failed_scatter_fails_every_request_of_its_batch_and_the_queue_goes_on():
    co, backend = Coalescer(), Backend(fail=True)
    results, errors = run_clients(co, backend, [7, 8, 9])
    assert not results and set(errors) == {7, 8, 9}
    assert all("no live replica" in str(e) for e in errors.values())
    backend.fail = False  # the coalescer is idle again: a later request goes straight out
    view, hits = co.submit("k", one_query(4), backend)
    assert hits == [[40]] and co.scatters == 3


def test_one_client_is_never_held_back():
    co = Coalescer()
    calls = []

    def run(batch: SparseBatch):
        calls.append(len(batch))
        return None, [[int(batch.row(0)[0][0])]]

    for t in range(5):
        _, hits = co.submit(("k", t % 2), one_query(t), run)
        assert hits == [[t]]
    assert calls == [1] * 5 and co.scatters == 5


@pytest.mark.slow
def test_concurrent_cluster_searches_equal_serial_ones(ray_cluster, tmp_path):
    from lsr.cluster.store import ClusterStore
    from lsr.service.collection import DocIn

    rng = np.random.default_rng(3)
    n, dim = 600, 500
    docs = [DocIn(f"d{i}", np.sort(rng.choice(dim, 12, replace=False)).astype(np.int32),
                  rng.random(12).astype(np.float32) + 0.01, None, {"n": i}) for i in range(n)]
    st = ClusterStore.launch(tmp_path / "r", 2, 1, cluster_name="co", merge_min_docs=10**9, merge_idle_s=1e9,
                             timeout_s=60)
    try:
        st.load_all()
        col = st.create("c", {"model": None, "dim": dim, "index": {}})
        col.upsert(docs)
        queries = [SparseBatch.from_csr(np.array([0, 3]), np.sort(rng.choice(dim, 3, replace=False)).astype(np.int32),
                                        rng.random(3).astype(np.float32) + 0.1, dim=dim) for _ in range(48)]
        knobs = {"query_cut": None, "heap_factor": None}
        serial = [[(c.id, c.score) for c in col.search(q, 5 + i % 3, knobs, 1)[1][0]] for i, q in enumerate(queries)]
        before = (col._coalescer.requests, col._coalescer.scatters)
        got: dict[int, list] = {}
        barrier = threading.Barrier(12)

        def client(c: int) -> None:
            barrier.wait()
            for i in range(c, len(queries), 12):
                got[i] = [(h.id, h.score) for h in col.search(queries[i], 5 + i % 3, knobs, 1)[1][0]]

        threads = [threading.Thread(target=client, args=(c,)) for c in range(12)]
        for th in threads:
            th.start()
        for th in threads:
            th.join(120)
        assert [got[i] for i in range(len(queries))] == serial
        requests, scatters = col._coalescer.requests - before[0], col._coalescer.scatters - before[1]
        assert requests == len(queries) and scatters < requests  # some shared a scatter
    finally:
        st.kill()
