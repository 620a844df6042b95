"""ExactIndex equals NumPy brute force, with deterministic ties."""

from __future__ import annotations

import numpy as np
import pytest

from lsr import SparseBatch
from lsr.index import ExactIndex, Hits


def brute_force(docs: SparseBatch, queries: SparseBatch, k: int, deleted=()):
    """Dense float64 scores; hits need score > 0; ties by row ascending."""
    S = queries.to_dense().astype(np.float64) @ docs.to_dense().astype(np.float64).T
    ids = np.full((len(queries), k), -1, np.int64)
    scores = np.full((len(queries), k), -np.inf, np.float32)
    for i, row in enumerate(S):
        cand = [r for r in np.nonzero(row > 0)[0] if r not in set(deleted)]
        cand.sort(key=lambda r: (-row[r], r))
        ids[i, : len(cand[:k])] = cand[:k]
        scores[i, : len(cand[:k])] = row[cand[:k]]
    return ids, scores


@pytest.fixture(scope="module")
def tied():
    """Weights from {0.5, 1, 2}: sums are exact in float32 and ties are everywhere."""
    rng = np.random.default_rng(11)
    n, dim = 400, 40
    D = rng.choice([0.5, 1.0, 2.0], size=(n, dim)) * (rng.random((n, dim)) < 0.15)
    Q = rng.choice([0.5, 1.0, 2.0], size=(25, dim)) * (rng.random((25, dim)) < 0.2)
    return SparseBatch.from_dense(D.astype(np.float32)), SparseBatch.from_dense(Q.astype(np.float32))


@pytest.mark.parametrize("threads", [1, 2])
def test_equals_brute_force_with_ties(tied, threads):
    docs, queries = tied
    index = ExactIndex.build(docs)
    hits = index.search(queries, k=15, threads=threads)
    ids, scores = brute_force(docs, queries, 15)
    assert isinstance(hits, Hits)
    assert np.array_equal(hits.ids, ids)
    assert np.array_equal(hits.rows, ids)
    np.testing.assert_array_equal(hits.scores, scores)


def test_random_data_and_string_ids(small_random):
    docs, queries = small_random
    names = [f"doc-{i}" for i in range(len(docs))]
    index = ExactIndex.build(docs, ids=names)
    ids, scores = index.search(queries, k=10)  # tuple unpacking
    ref_ids, ref_scores = brute_force(docs, queries, 10)
    assert ids.dtype == object
    assert ids.tolist() == [[None if r < 0 else names[r] for r in row] for row in ref_ids]
    np.testing.assert_allclose(scores, ref_scores, rtol=1e-5)


def test_delete_add_get(tied):
    docs, queries = tied
    index = ExactIndex.build(docs[:300], ids=list(range(100, 400)))
    assert index.delete([100, 150]) == 2
    index.add(docs[300:], ids=list(range(1000, 1100)))
    assert len(index) == 398
    assert list(index.ids[:3]) == [101, 102, 103]
    hits = index.search(queries, k=12)
    assert 100 not in hits.ids and 150 not in hits.ids
    # same as a rebuild over the live documents
    live = [i for i in range(400) if i not in (0, 50)]
    ext = [100 + i if i < 300 else 1000 + i - 300 for i in live]
    ref = ExactIndex.build(docs[np.array(live)], ids=ext).search(queries, k=12)
    assert np.array_equal(hits.ids, ref.ids)
    np.testing.assert_array_equal(hits.scores, ref.scores)
    got = index.get([1005, 101])
    assert got.to_dicts() == docs[np.array([305, 1])].to_dicts()
    with pytest.raises(KeyError):
        index.get([100])  # deleted


def test_top_rows_is_the_sorted_prefix_with_ties_by_position():
    from lsr.index.exact import top_rows

    rng = np.random.default_rng(3)
    scores = rng.integers(0, 5, size=200).astype(np.float32)  # many ties
    want = sorted(range(200), key=lambda j: (-scores[j], j))
    for k in (1, 7, 50, 200, 500):
        assert top_rows(scores, k).tolist() == want[:k]
