"""Numba kernels against their NumPy references."""

from __future__ import annotations

import numpy as np
import pytest

from lsr import SparseBatch
from lsr.index import SeismicIndex
from lsr.index import kernels as K


def test_f16_table_matches_numpy():
    bits = np.arange(65536, dtype=np.uint16)
    with np.errstate(invalid="ignore"):
        ref = bits.view(np.float16).astype(np.float32)
    ok = np.isfinite(ref)
    assert np.array_equal(K.F16_TABLE[ok], ref[ok])


def test_heap_keeps_best_with_row_ties():
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 5, size=500).astype(np.float32)  # many ties
    for k in (1, 3, 10, 600):
        hs = np.empty(k, np.float32)
        hr = np.empty(k, np.int64)
        size = 0
        for r in rng.permutation(500):
            if scores[r] > 0:
                size = K.heap_push(hs, hr, size, k, scores[r], np.int64(r))
        out_s = np.empty(k, np.float32)
        out_r = np.empty(k, np.int64)
        K.heap_drain(hs, hr, size, out_s, out_r)
        ref_s, ref_r = K.topk_ref(scores, k)
        assert np.array_equal(out_r, ref_r)
        assert np.array_equal(out_s, ref_s)


def test_exact_kernel_matches_reference(small_random):
    docs, queries = small_random
    deleted = np.zeros(len(docs), np.uint8)
    deleted[::7] = 1
    inv = K.csr_transpose(docs.indptr, docs.indices, docs.values, docs.dim)
    s, r = K.exact_search(queries.indptr, queries.indices, queries.values, 10, *inv, deleted, 2)
    rs, rr = K.exact_search_ref(queries.indptr, queries.indices, queries.values, 10, docs.indptr, docs.indices,
                                docs.values, docs.dim, deleted)
    assert np.array_equal(r, rr)
    np.testing.assert_allclose(s, rs, rtol=1e-5)


def test_block_summaries_match_reference(small_random):
    docs, _ = small_random
    index = SeismicIndex.build(docs, centroid_fraction=0.2, summary_energy=0.5)
    a, ent = index._a, index.summary_entries()
    vals = K.F16_TABLE[a["fwd_val"]]
    rng = np.random.default_rng(1)
    for gb in rng.choice(int(a["term_blk_ptr"][-1]), size=40, replace=False):
        rows = index.post_rows()[a["blk_ptr"][gb]:a["blk_ptr"][gb + 1]]
        vecs = [(a["fwd_comp"][a["fwd_ptr"][d]:a["fwd_ptr"][d + 1]], vals[a["fwd_ptr"][d]:a["fwd_ptr"][d + 1]]) for d in rows]
        ref_c, ref_v = K.block_summary_ref(vecs, 0.5)
        mine = ent["block"] == gb
        order = np.argsort(ent["comp"][mine])
        assert np.array_equal(ent["comp"][mine][order], ref_c)
        np.testing.assert_allclose(ent["value"][mine][order], ref_v, rtol=1e-6)


def test_summaries_bound_their_blocks_at_full_energy(small_random):
    docs, _ = small_random
    index = SeismicIndex.build(docs, summary_energy=1.0)
    a, ent = index._a, index.summary_entries()
    vals = K.F16_TABLE[a["fwd_val"]]
    summ = {}
    for b, c, v in zip(ent["block"].tolist(), ent["comp"].tolist(), ent["value"].tolist()):
        summ[(b, c)] = v
    for gb in range(0, int(a["term_blk_ptr"][-1]), 17):
        for d in index.post_rows()[a["blk_ptr"][gb]:a["blk_ptr"][gb + 1]]:
            s, e = a["fwd_ptr"][d], a["fwd_ptr"][d + 1]
            for c, v in zip(a["fwd_comp"][s:e].tolist(), vals[s:e].tolist()):
                assert summ[(gb, c)] >= v


@pytest.mark.parametrize("query_cut,heap_factor", [(3, 0.9), (10, 0.7), (50, 1.0)])
def test_seismic_kernel_matches_reference(small_random, query_cut, heap_factor):
    docs, queries = small_random
    index = SeismicIndex.build(docs, centroid_fraction=0.1, summary_energy=0.4, n_postings=60)
    index.delete([5, 6, 7])
    index.add(docs[:20], ids=list(range(10_000, 10_020)))
    hits = index.search(queries, 10, query_cut=query_cut, heap_factor=heap_factor, threads=1)
    arrays = dict(index._a, deleted=index._deleted)
    for i in range(len(queries)):
        idx, val = queries.row(i)
        rs, rr = K.seismic_one_ref(idx, val, 10, query_cut, heap_factor, arrays)
        assert np.array_equal(hits.rows[i], rr), i
        np.testing.assert_array_equal(hits.scores[i], rs)


def test_dot_f16_handles_subnormals():
    vals = np.array([1e-6, 3e-5, 0.5, 2.0, 60000.0], np.float32)
    batch = SparseBatch.from_csr(np.array([0, 5]), np.arange(5), vals, 5)
    index = SeismicIndex.build(batch, n_postings=None)
    q = SparseBatch.from_csr(np.array([0, 5]), np.arange(5), np.ones(5, np.float32), 5)
    got = index.search(q, 1).scores[0, 0]
    assert got == K.dot_f16_ref(vals.astype(np.float16).astype(np.float32))


def test_dot_f16_sums_in_lanes_like_its_reference():
    """The kernel's dot product against dot_f16_ref bit for bit, on rows of every length modulo the
    lane count (zeros and subnormals among the values); the data are such that a plain running sum
    gives other bits, so the test pins the summation order, not only the value."""
    rng = np.random.default_rng(5)
    dim = 400
    qdense = rng.random(dim, dtype=np.float32) * 3
    lengths = [n % 14 for n in range(300)] + [213, 250, 251] * 20
    comp = rng.integers(0, dim, sum(lengths)).astype(np.uint16)
    vals = (rng.random(comp.size, dtype=np.float32) * 4) ** 3
    vals[::17] = 0.0
    vals[::23] = 2e-6  # a float16 subnormal
    bits = K.to_f16_bits(vals)
    wide = bits.view(np.float16).astype(np.float32)  # NumPy's own widening, not the kernel's
    serial_differs = 0
    s = 0
    for n in lengths:
        got = K._dot_f16(qdense, comp, bits, s, s + n, K.F16_TABLE)
        products = qdense[comp[s : s + n]] * wide[s : s + n]
        assert got == K.dot_f16_ref(products), (s, n)
        serial = np.float32(0)
        for x in products:
            serial = np.float32(serial + x)
        serial_differs += bool(serial != got)
        s += n
    assert serial_differs > 0
