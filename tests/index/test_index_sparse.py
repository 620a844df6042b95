"""Property tests: SparseBatch converters round-trip (hypothesis)."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lsr import SparseBatch, load_vectors, save_vectors

DIM = 50
weights = st.floats(min_value=1e-3, max_value=100.0, allow_nan=False).map(lambda x: float(np.float32(x)))
row = st.dictionaries(st.integers(0, DIM - 1), weights, max_size=12)
rows = st.lists(row, max_size=8)
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _same(a: SparseBatch, b: SparseBatch) -> None:
    assert a.dim == b.dim
    assert np.array_equal(a.indptr, b.indptr)
    assert np.array_equal(a.indices, b.indices)
    assert np.array_equal(a.values, b.values)


@SETTINGS
@given(rows)
def test_dicts_roundtrip(rs):
    b = SparseBatch.from_dicts(rs, dim=DIM)
    assert b.to_dicts() == [{k: float(np.float32(v)) for k, v in r.items()} for r in rs]
    _same(SparseBatch.from_dicts(b.to_dicts(), dim=DIM), b)
    assert b.indices.dtype == np.int32 and b.values.dtype == np.float32 and b.indptr.dtype == np.int64


@SETTINGS
@given(rows)
def test_token_dicts_roundtrip(rs):
    vocab = [f"w{i}" for i in range(DIM)]
    b = SparseBatch.from_dicts(rs, vocab=vocab)
    _same(SparseBatch.from_dicts(b.to_dicts(tokens=True), vocab=vocab), b)


@SETTINGS
@given(rows)
def test_scipy_and_dense_roundtrip(rs):
    b = SparseBatch.from_dicts(rs, dim=DIM)
    _same(SparseBatch.from_scipy(b.to_scipy()), b)
    _same(SparseBatch.from_dense(b.to_dense()), b)
    _same(SparseBatch.from_scipy(sp.csc_matrix(b.to_scipy())), b)


@SETTINGS
@given(rows, st.data())
def test_slicing_and_concat(rs, data):
    b = SparseBatch.from_dicts(rs, dim=DIM)
    n = len(b)
    cut = data.draw(st.integers(0, n))
    _same(SparseBatch.concat([b[:cut], b[cut:]]), b)
    sel = data.draw(st.lists(st.integers(0, max(n - 1, 0)), max_size=5)) if n else []
    picked = b[np.array(sel, dtype=np.int64)]
    assert picked.to_dicts() == [b.to_dicts()[i] for i in sel]


@SETTINGS
@given(rows)
def test_unsorted_duplicates_normalised(rs):
    b = SparseBatch.from_dicts(rs, dim=DIM)
    # shuffle within rows and duplicate every entry: from_csr sorts and sums
    rng = np.random.default_rng(len(rs))
    ptr, idx, val = [0], [], []
    for i, v in b:
        order = rng.permutation(len(i))
        idx += list(i[order]) * 2
        val += list(v[order] / 2) * 2
        ptr.append(len(idx))
    c = SparseBatch.from_csr(np.array(ptr), np.array(idx, np.int64), np.array(val, np.float32), DIM)
    assert np.array_equal(c.indptr, b.indptr) and np.array_equal(c.indices, b.indices)
    np.testing.assert_allclose(c.values, b.values, rtol=1e-6)


@SETTINGS
@given(rows)
def test_files_roundtrip(tmp_path_factory, rs):
    tmp = tmp_path_factory.mktemp("vec")
    vocab = [f"w{i}" for i in range(DIM)]
    b = SparseBatch.from_dicts(rs, vocab=vocab)
    ids = [f"id{i}" for i in range(len(b))]
    save_vectors(tmp / "v.npz", b, ids)
    got, got_ids = load_vectors(tmp / "v.npz")
    _same(got, b)
    assert got_ids == (ids if len(b) else got_ids) and got.vocab == b.vocab
    if len(b):
        save_vectors(tmp / "v.jsonl", b, ids)
        got, got_ids = load_vectors(tmp / "v.jsonl", vocab=vocab)
        assert got_ids == ids
        assert got.to_dicts() == b.to_dicts()
