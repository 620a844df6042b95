"""Blocking by clustering: the k-means refinement after the random centroids (``refine``)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lsr.index import SeismicIndex, load_index
from lsr.index import kernels as K


def _cluster(docs, t: int, n_cent: int, min_size: int, refine: int, doc_cut: int = 5, seed: int = 42) -> np.ndarray:
    """Cluster ids of term t's documents (all of them, in row order) by the kernel."""
    dim = docs.dim
    vals = docs.values.astype(np.float32)
    cut_ptr, cut_comp, cut_val = K.top_components(docs.indptr, docs.indices, vals, doc_cut)
    rows = np.flatnonzero(docs.to_dense()[:, t] > 0).astype(np.int32)
    P = rows.size
    cap = int(np.diff(docs.indptr)[rows].sum()) + n_cent * int(np.diff(docs.indptr).max()) + 1
    assign = np.empty(P + 1, np.int64)
    K._cluster_list(t, rows, n_cent, min_size, seed, docs.indptr, docs.indices, vals, cut_ptr, cut_comp, cut_val,
                    np.full(dim, -1, np.int64), np.zeros(dim, np.int64), np.empty(cap, np.int64),
                    np.empty(cap, np.float32), np.zeros(P + 1, np.float32), np.empty(P + 1, np.int64), assign,
                    np.empty(P + 1, np.int64), np.empty(P + 1, np.int64), refine, np.empty(n_cent + 2, np.int64),
                    np.zeros(dim, np.float32), np.zeros(dim, np.bool_), np.empty(dim, np.int64),
                    np.empty(cap, np.int32), np.empty(cap, np.float32))
    return assign[:P], rows


def _refine_ref(docs, rows: np.ndarray, assign: np.ndarray, n_cent: int, min_size: int, doc_cut: int) -> np.ndarray:
    """NumPy reference of one refinement step: each cluster's mean (members' full vectors summed in
    list order in float32, times 1/size), every document to the mean with the largest dot product
    with its doc_cut top entries (float32, in the order of those entries; ties: lowest id; none > 0:
    it stays), then documents of clusters under min_size to the best cluster of at least min_size."""
    vals = docs.values.astype(np.float32)
    cut_ptr, cut_comp, cut_val = K.top_components(docs.indptr, docs.indices, vals, doc_cut)
    means = np.zeros((n_cent, docs.dim), np.float32)
    sizes = np.bincount(assign, minlength=n_cent)
    for x, d in enumerate(rows.tolist()):
        s, e = docs.indptr[d], docs.indptr[d + 1]
        for c, v in zip(docs.indices[s:e].tolist(), vals[s:e].tolist()):
            means[assign[x], c] = np.float32(means[assign[x], c] + np.float32(v))
    for i in range(n_cent):
        if sizes[i]:
            means[i] *= np.float32(1.0) / np.float32(sizes[i])

    def scores(d: int) -> np.ndarray:
        out = np.zeros(n_cent, np.float32)
        for p in range(cut_ptr[d], cut_ptr[d + 1]):
            out += np.float32(cut_val[p]) * means[:, cut_comp[p]]  # one float32 add per centroid
        return out

    new = assign.copy()
    for x, d in enumerate(rows.tolist()):
        s = scores(d)
        if s.max() > 0:
            new[x] = int(np.argmax(s))  # first of the largest
    sizes = np.bincount(new, minlength=n_cent)
    large = sizes >= min_size
    if not large.any():
        return np.zeros_like(new)
    for x, d in enumerate(rows.tolist()):
        if large[new[x]]:
            continue
        s = np.where(large, scores(d), 0)
        new[x] = int(np.argmax(s)) if s.max() > 0 else int(np.flatnonzero(large)[0])
    return new


@pytest.mark.parametrize("min_size", [1, 3])
@pytest.mark.parametrize("doc_cut", [1, 5])
def test_refinement_step_matches_reference(small_random, min_size, doc_cut):
    """The kernel keeps a mean only on the terms of its list's top entries (doc_cut 1: few of
    them); the reference keeps whole means: the same assignments."""
    docs, _ = small_random
    counts = np.bincount(docs.indices, minlength=docs.dim)
    for t in np.argsort(-counts, kind="stable")[:2].tolist():
        n_cent = int(counts[t]) // 8
        start, rows = _cluster(docs, t, n_cent, min_size, refine=0, doc_cut=doc_cut)
        one, _ = _cluster(docs, t, n_cent, min_size, refine=1, doc_cut=doc_cut)
        two, _ = _cluster(docs, t, n_cent, min_size, refine=2, doc_cut=doc_cut)
        want = _refine_ref(docs, rows, start, n_cent, min_size, doc_cut)
        assert np.array_equal(one, want), t
        assert np.array_equal(two, _refine_ref(docs, rows, want, n_cent, min_size, doc_cut)), t
        assert not np.array_equal(one, start)  # the step moves documents
        sizes = np.bincount(one, minlength=n_cent)
        assert np.all((sizes == 0) | (sizes >= min_size))


def _cohesion(index: SeismicIndex, docs) -> float:
    """Mean dot product of a document with the mean of its block, over every block of every list."""
    S = docs.to_scipy().tocsr()
    rows = index.post_rows()
    bp = np.asarray(index._a["blk_ptr"], np.int64)
    total, n = 0.0, 0
    for b in range(bp.shape[0] - 1):
        X = S[rows[bp[b]:bp[b + 1]]]
        total += float((X @ np.asarray(X.mean(axis=0)).ravel()).sum())
        n += X.shape[0]
    return total / n


def test_refined_blocks_are_tighter_and_search_stays_exact(synth):
    docs, queries = synth
    one_pass = SeismicIndex.build(docs, refine=0, threads=1)
    refined = SeismicIndex.build(docs, threads=1)
    assert refined.params.refine == 1
    # the k-means step: documents closer to the mean of their block (the summary's basis)
    assert _cohesion(refined, docs) > _cohesion(one_pass, docs)
    # exhaustive settings (no pruning, whole summaries, every list, every block): exact whatever the blocks
    ref = SeismicIndex.build(docs[:800], n_postings=None, summary_energy=1.0, threads=1)
    for r in (0, 2):
        ix = SeismicIndex.build(docs[:800], n_postings=None, summary_energy=1.0, refine=r, threads=2)
        a = ix.search(queries, 10, query_cut=10_000, heap_factor=1e-6)
        b = ref.search(queries, 10, query_cut=10_000, heap_factor=1e-6)
        assert np.array_equal(a.rows, b.rows)
        np.testing.assert_array_equal(a.scores, b.scores)


def test_bad_refine_is_refused(small_random):
    docs, _ = small_random
    for bad in (-1, 1.5, None):
        with pytest.raises(ValueError, match="refine"):
            SeismicIndex.build(docs, refine=bad)


def test_folder_without_refine_loads_as_one_pass(small_random, tmp_path):
    """A folder written before ``refine`` existed was clustered in one pass: its parameters say so,
    and a rebuild keeps it that way."""
    docs, queries = small_random
    index = SeismicIndex.build(docs, refine=0)
    folder = index.save(tmp_path / "old")
    m = json.loads((folder / "manifest.json").read_text())
    del m["params"]["refine"]
    (folder / "manifest.json").write_text(json.dumps(m))
    old = load_index(folder)
    assert old.params.refine == 0
    assert np.array_equal(old.search(queries, 10).rows, index.search(queries, 10).rows)
    again = old.rebuild()
    assert again.params.refine == 0
    assert np.array_equal(again._a["post_off"], index._a["post_off"])
