"""The GPU scoring path, run on the CPU through the same API (CI has no GPU)."""

import numpy as np
import pytest
import scipy.sparse as sp

torch = pytest.importorskip("torch")

from lsr.index.sparse import SparseBatch  # noqa: E402
from lsr.index.gpu import BlockLayout, GpuIndex, cuda_available  # noqa: E402


def _data(n_docs=1500, n_q=37, dim=400, seed=0):
    rng = np.random.default_rng(seed)
    D = sp.random(n_docs, dim, density=0.04, random_state=rng, format="csr", dtype=np.float32)
    Q = sp.random(n_q, dim, density=0.03, random_state=rng, format="csr", dtype=np.float32)
    return SparseBatch.from_scipy(D), SparseBatch.from_scipy(Q)


def _brute(docs, qs, k):
    S = (qs.to_scipy() @ docs.to_scipy().T).toarray()
    rows = np.full((len(qs), k), -1)
    scores = np.full((len(qs), k), -np.inf, np.float32)
    for i, s in enumerate(S):
        order = np.lexsort((np.arange(s.size), -s))
        order = order[s[order] > 0][:k]
        rows[i, : order.size] = order
        scores[i, : order.size] = s[order]
    return rows, scores


@pytest.fixture(scope="module")
def data():
    docs, qs = _data()
    return docs, qs, BlockLayout.from_postings(docs, n_postings=10**9, block_size=8)


@pytest.mark.parametrize("tile,doc_tile", [(256, 1 << 21), (8, 100), (37, 1500), (5, 499)])
def test_exact_equals_brute_force_across_tilings(data, tile, doc_tile):
    docs, qs, _ = data
    gi = GpuIndex.build(docs, device="cpu")
    hits = gi.search(qs, k=10, tile=tile, doc_tile=doc_tile)
    rows, scores = _brute(docs, qs, 10)
    np.testing.assert_array_equal(hits.rows, rows)
    np.testing.assert_allclose(hits.scores, scores, rtol=1e-5)


def test_exact_equals_exact_index(data):
    from lsr.index import ExactIndex

    docs, qs, _ = data
    ids = [f"d{i}" for i in range(len(docs))]
    ref = ExactIndex.build(docs, ids=ids).search(qs, k=10)
    hits = GpuIndex.build(docs, ids, device="cpu").search(qs, k=10)
    np.testing.assert_array_equal(hits.ids, ref.ids)
    np.testing.assert_allclose(hits.scores, ref.scores, rtol=1e-5)


def test_sharded_exact_and_approx_merge(data):
    docs, qs, layout = data
    rows, _ = _brute(docs, qs, 10)
    gi = GpuIndex.build(docs, device=["cpu", "cpu", "cpu"], layout=layout)
    np.testing.assert_array_equal(gi.search(qs, k=10, tile=16).rows, rows)
    # Full summaries, every term, heap_factor 1: the summaries are upper bounds, so nothing is lost.
    approx = gi.search(qs, k=10, mode="approx", query_cut=docs.dim, heap_factor=1.0)
    np.testing.assert_array_equal(approx.rows, rows)


def test_approx_recall_with_pruning(data):
    docs, qs, _ = data
    layout = BlockLayout.from_postings(docs, n_postings=200, block_size=8, summary_energy=0.6)
    gi = GpuIndex.build(docs, device="cpu", layout=layout)
    rows, _ = _brute(docs, qs, 10)
    approx = gi.search(qs, k=10, mode="approx", query_cut=8, heap_factor=0.7)
    recall = np.mean([len(set(a[a >= 0]) & set(b[b >= 0])) / max(1, (b >= 0).sum()) for a, b in zip(approx.rows, rows)])
    assert recall >= 0.8
    assert set(approx.timings) >= {"total_s", "compute_s", "copy_s"}


def test_missing_hits_and_empty_queries(data):
    docs, _, layout = data
    qs = SparseBatch.from_dicts([{}, {0: 1.0}], dim=docs.dim)
    gi = GpuIndex.build(docs, device="cpu", layout=layout)
    for mode in ("exact", "approx"):
        hits = gi.search(qs, k=20, mode=mode)
        assert (hits.rows[0] == -1).all() and np.isneginf(hits.scores[0]).all()
        n_match = int((docs.to_scipy()[:, 0] > 0).sum())
        assert (hits.rows[1] >= 0).sum() == min(20, n_match)


def test_bad_input(data):
    docs, qs, _ = data
    gi = GpuIndex.build(docs, device="cpu")
    with pytest.raises(ValueError, match="k must be"):
        gi.search(qs, k=0)
    with pytest.raises(ValueError, match="needs block summaries"):
        gi.search(qs, k=5, mode="approx")
    with pytest.raises(ValueError, match="dim"):
        gi.search(SparseBatch.from_dicts([{1: 1.0}], dim=docs.dim + 1), k=5)


@pytest.mark.skipif(cuda_available(), reason="checks the error raised where CUDA is absent")
def test_cuda_without_cuda_is_a_clear_error(data):
    docs, _, _ = data
    with pytest.raises(RuntimeError, match="CUDA is not available"):
        GpuIndex.build(docs, device="cuda")


@pytest.mark.gpu
@pytest.mark.skipif(not cuda_available(), reason="needs CUDA")
def test_cuda_matches_cpu(data):
    docs, qs, layout = data
    cpu = GpuIndex.build(docs, device="cpu").search(qs, k=10)
    gpu = GpuIndex.build(docs, device="cuda", layout=layout).search(qs, k=10)
    np.testing.assert_array_equal(gpu.rows, cpu.rows)


def test_from_seismic_index_reuses_blocks_and_honours_add_delete():
    from lsr.index import ExactIndex, SeismicIndex

    docs, qs = _data(n_docs=800, n_q=20, dim=300, seed=3)
    docs = docs.astype(np.float16)  # the Seismic forward index stores f16: compare like with like
    ids = [f"d{i}" for i in range(len(docs))]
    si = SeismicIndex.build(docs[:700], ids[:700], n_postings=None, summary_energy=1.0, doc_cut=None)
    si.add(docs[700:], ids[700:])
    gone = ids[::7]
    si.delete(gone)
    ref = ExactIndex.build(docs, ids=ids)
    ref.delete(gone)
    want = ref.search(qs, k=10)
    gi = GpuIndex.from_index(si, device="cpu")
    exact = gi.search(qs, k=10)
    np.testing.assert_array_equal(exact.ids, want.ids)
    approx = gi.search(qs, k=10, mode="approx", query_cut=docs.dim, heap_factor=1.0)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(approx.ids, want.ids)])
    assert recall >= 0.97  # 8-bit summaries are not strict upper bounds
    assert not set(gone) & set(approx.ids.ravel())


def test_from_exact_index_hides_deleted(data):
    from lsr.index import ExactIndex

    docs, qs, _ = data
    ids = [f"d{i}" for i in range(len(docs))]
    ref = ExactIndex.build(docs, ids=ids)
    ref.delete(ids[::3])
    hits = GpuIndex.from_index(ref, device="cpu").search(qs, k=10)
    np.testing.assert_array_equal(hits.ids, ref.search(qs, k=10).ids)


def test_approx_tiles_and_padding_do_not_change_results(data):
    # the approximate path pads each tile's queries to its longest one and its summary scores to
    # the longest posting list: a tile of 5 and the whole batch (the default) must agree
    docs, qs, _ = data
    layout = BlockLayout.from_postings(docs, n_postings=200, block_size=8, summary_energy=0.6)
    gi = GpuIndex.build(docs, device="cpu", layout=layout)
    kw = dict(k=10, mode="approx", query_cut=5, heap_factor=0.8)
    whole, tiled = gi.search(qs, **kw), gi.search(qs, tile=5, **kw)
    np.testing.assert_array_equal(whole.rows, tiled.rows)
    np.testing.assert_allclose(whole.scores, tiled.scores, rtol=1e-6)
    with pytest.raises(ValueError, match="probe_blocks"):
        gi.search(qs, probe_blocks=0, **kw)


def test_seen_bitmap_words():
    from lsr.index.gpu import _bitmap_words

    mask = np.random.default_rng(1).random(1000) < 0.3
    words = _bitmap_words(mask).view(np.uint32)
    r = np.arange(mask.size)
    assert words.size == -(-mask.size // 32)
    np.testing.assert_array_equal(((words[r // 32] >> (r % 32)) & 1).astype(bool), mask)


def test_approx_ties_come_by_row_ascending():
    # every document four times over, few distinct weights: many equal scores. With every block
    # kept the approximate path scores every document and must return ExactIndex's rows exactly
    from lsr.index import ExactIndex

    rng = np.random.default_rng(5)
    base = sp.random(50, 120, density=0.1, random_state=rng, format="csr", dtype=np.float32)
    base.data = np.round(base.data * 8) / 8 + 0.125
    docs = SparseBatch.from_scipy(sp.vstack([base] * 4).tocsr())
    Q = sp.random(12, 120, density=0.15, random_state=rng, format="csr", dtype=np.float32).toarray()
    qs = SparseBatch.from_dense((np.round(Q * 4) / 4).astype(np.float32))
    want = ExactIndex.build(docs).search(qs, k=10)
    assert (want.scores[:, 1:] == want.scores[:, :-1]).sum() > 20
    gi = GpuIndex.build(docs, device="cpu", layout=BlockLayout.from_postings(docs, n_postings=1000, block_size=8))
    got = gi.search(qs, k=10, mode="approx", query_cut=1000, heap_factor=1e-6)
    np.testing.assert_array_equal(got.rows, want.rows)
    np.testing.assert_array_equal(got.scores, want.scores)


def test_tiles_in_flight_take_turns_at_each_wait():
    # the scheduler resumes tiles round robin, at most `inflight` started at once, each in its
    # own slot (its page-locked buffers and stream), and a slot is reused only once its tile ended
    import torch

    from lsr.index.gpu import _Streams

    log: list[tuple[str, int, int]] = []
    busy: set[int] = set()

    def job(name: str, waits: int):
        def steps(slot: int):
            assert slot not in busy  # no two running tiles share a slot
            busy.add(slot)
            for i in range(waits):
                log.append((name, slot, i))
                yield
            log.append((name, slot, waits))
            busy.discard(slot)

        return steps

    _Streams().run([job("a", 2), job("b", 1), job("c", 2)], 2, torch.device("cpu"), torch)
    assert log == [("a", 0, 0), ("b", 1, 0), ("a", 0, 1), ("b", 1, 1), ("a", 0, 2), ("c", 1, 0),
                   ("c", 1, 1), ("c", 1, 2)]
    log.clear()
    _Streams().run([job("a", 2), job("b", 1)], 1, torch.device("cpu"), torch)
    assert log == [("a", 0, 0), ("a", 0, 1), ("a", 0, 2), ("b", 0, 0), ("b", 0, 1)]


def test_a_failing_tile_stops_the_others():
    import torch

    from lsr.index.gpu import _Streams

    closed: list[str] = []

    def job(name: str, fail: bool):
        def steps(slot: int):
            try:
                yield
                if fail:
                    raise RuntimeError("device lost")
                yield
            finally:
                closed.append(name)

        return steps

    try:
        _Streams().run([job("a", True), job("b", False)], 2, torch.device("cpu"), torch)
        raise AssertionError("the tile's error was swallowed")
    except RuntimeError as exc:
        assert "device lost" in str(exc)
        # while the error propagates (its traceback still holds the scheduler's frame), the other
        # tile is closed already, not left suspended for the garbage collector
        assert sorted(closed) == ["a", "b"]


def test_tiles_in_flight_do_not_change_results(data, monkeypatch):
    docs, qs, _ = data
    layout = BlockLayout.from_postings(docs, n_postings=200, block_size=8, summary_energy=0.6)
    gi = GpuIndex.build(docs, device="cpu", layout=layout)
    kw = dict(k=10, mode="approx", query_cut=5, heap_factor=0.8)
    monkeypatch.setenv("LSR_GPU_INFLIGHT", "1")
    one = gi.search(qs, tile=4, **kw)
    monkeypatch.setenv("LSR_GPU_INFLIGHT", "3")
    three = gi.search(qs, tile=4, **kw)
    np.testing.assert_array_equal(one.rows, three.rows)
    np.testing.assert_array_equal(one.scores, three.scores)
    for bad in ("0", "two", "-1"):
        monkeypatch.setenv("LSR_GPU_INFLIGHT", bad)
        with pytest.raises(ValueError, match="LSR_GPU_INFLIGHT"):
            gi.search(qs, **kw)
