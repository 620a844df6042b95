"""check_rows (a bulk write's validation in one pass) against check_vector, document by document:
the same accepted vectors and the same error for the first bad document."""

from __future__ import annotations

import numpy as np
import pytest

from lsr.service.collection import CollectionError, check_rows, check_vector

DIM = 50


def rows(seed: int, n: int = 40) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    lens = rng.integers(0, 9, n)
    idx = np.concatenate([rng.choice(DIM, k, replace=False) for k in lens]).astype(np.int64)  # unsorted rows
    val = rng.uniform(0.01, 3.0, idx.size)
    return [f"doc-{i}" for i in range(n)], np.concatenate([[0], np.cumsum(lens)]), idx, val


def one_by_one(ids, ptr, idx, val):
    out = [check_vector(d, idx[ptr[i]:ptr[i + 1]], val[ptr[i]:ptr[i + 1]], DIM) for i, d in enumerate(ids)]
    return out


@pytest.mark.parametrize("seed", range(5))
def test_accepts_what_check_vector_accepts(seed):
    ids, ptr, idx, val = rows(seed)
    p, t, w = check_rows(ids, ptr, idx, val, DIM)
    assert t.dtype == np.int32 and w.dtype == np.float32 and p.dtype == np.int64
    for i, (ti, wi) in enumerate(one_by_one(ids, ptr, idx, val)):
        np.testing.assert_array_equal(t[p[i]:p[i + 1]], ti)
        np.testing.assert_array_equal(w[p[i]:p[i + 1]], wi)


@pytest.mark.parametrize("spoil", ["term", "negative", "nan", "huge", "duplicate", "tiny"])
def test_first_bad_document_is_named_as_check_vector_names_it(spoil):
    ids, ptr, idx, val = rows(7)
    idx, val = idx.copy(), val.copy()
    r = 17  # a row with at least two terms
    assert ptr[r + 1] - ptr[r] >= 2
    a, b = ptr[r], ptr[r] + 1
    if spoil == "term":
        idx[b] = DIM + 3
    elif spoil == "negative":
        val[b] = -1.0
    elif spoil == "nan":
        val[b] = np.nan
    elif spoil == "huge":
        val[b] = 1e9
    elif spoil == "duplicate":
        idx[b] = idx[a]
    else:
        val[b] = 1e-50
    with pytest.raises(CollectionError) as want:
        one_by_one(ids, ptr, idx, val)
    with pytest.raises(CollectionError) as got:
        check_rows(ids, ptr, idx, val, DIM)
    assert str(got.value) == str(want.value) and ids[r] in str(got.value)


def test_malformed_columns_and_ids_are_refused():
    ids, ptr, idx, val = rows(3)
    with pytest.raises(CollectionError, match="indptr"):
        check_rows(ids[:-1], ptr, idx, val, DIM)
    with pytest.raises(CollectionError, match="indptr must start at 0"):
        check_rows(ids, ptr + 1, idx, val, DIM)
    with pytest.raises(CollectionError, match="one length"):
        check_rows(ids, ptr, idx, val[:-1], DIM)
    with pytest.raises(CollectionError, match="non-empty string"):
        check_rows([""] + ids[1:], ptr, idx, val, DIM)
    empty = check_rows(["a", "b"], np.zeros(3, np.int64), np.zeros(0, np.int64), np.zeros(0), DIM)
    assert [x.size for x in empty] == [3, 0, 0]
