"""Seismic build kernels: the parallel build equals the one-thread build, and each stage matches a
NumPy reference (inverted lists, the top-m selection, the work schedule)."""

from __future__ import annotations

import numba
import numpy as np
import pytest

from lsr.index import SeismicIndex
from lsr.index import kernels as K


@pytest.mark.parametrize("params", [dict(n_postings=200, min_cluster_size=4, summary_energy=0.7),
                                    dict(n_postings=150, pruning="fixed", doc_cut=None)])
def test_parallel_build_equals_one_thread_build(synth, params):
    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("needs 2 Numba threads")
    docs, queries = synth
    one = SeismicIndex.build(docs, threads=1, **params)
    two = SeismicIndex.build(docs, threads=2, **params)
    for name, arr in one._a.items():
        other = two._a[name]
        assert arr.dtype == other.dtype and np.array_equal(arr, other), name
    h1, h2 = one.search(queries, k=10), two.search(queries, k=10)
    assert np.array_equal(h1.rows, h2.rows)


def test_invert_pruned_matches_numpy(small_random):
    docs, _ = small_random
    vals = docs.values.astype(np.float32)
    rows_of = np.repeat(np.arange(len(docs)), np.diff(docs.indptr))
    lam, cap = np.float32(0.3), 40
    for workers in (1, 3):
        # the argument types of SeismicIndex.build's call (one compiled specialisation)
        ptr, rows, pv = K.invert_pruned(docs.indptr, docs.indices.astype(np.uint16), vals, docs.dim, lam, cap, workers)
        for t in range(docs.dim):
            sel = (docs.indices == t) & (vals >= lam)
            r, v = rows_of[sel], vals[sel]
            order = np.lexsort((r, -v))[:cap]  # value desc, row asc on ties
            np.testing.assert_array_equal(rows[ptr[t]:ptr[t + 1]], r[order])
            np.testing.assert_array_equal(pv[ptr[t]:ptr[t + 1]], v[order])


def test_select_top_matches_partition():
    rng = np.random.default_rng(0)
    for n in (1, 2, 7, 65, 300, 2000):
        for ties in (False, True):
            a = rng.random(n).astype(np.float32)
            if ties:
                a = np.round(a * 4).astype(np.float32) / 4  # few distinct values
            for m in sorted({1, n // 3 + 1, n}):
                b = a.copy()
                K._select_top(b, n, m)
                assert np.array_equal(np.sort(b), np.sort(a))  # a permutation
                np.testing.assert_array_equal(np.sort(b[n - m:]), np.sort(a)[n - m:])


def test_schedule_deals_every_item_once_and_balances():
    rng = np.random.default_rng(1)
    cost = rng.pareto(1.2, 5000) * (rng.random(5000) < 0.8)
    items, wptr = K.schedule(cost, 8)
    assert sorted(items.tolist()) == np.nonzero(cost > 0)[0].tolist()
    loads = np.array([cost[items[wptr[w]:wptr[w + 1]]].sum() for w in range(8)])
    # greedy LPT: no worker ends more than the largest item above the mean
    assert loads.max() <= cost.sum() / 8 + cost.max() + 1e-9
    items1, wptr1 = K.schedule(np.zeros(5), 4)
    assert items1.size == 0 and wptr1.tolist() == [0, 0, 0, 0, 0]
