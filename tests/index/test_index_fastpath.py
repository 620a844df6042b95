"""The single-query fast path: same results and errors as the full checks; id lookup; mmap
arrays reach the kernels as plain ndarray views; 4-byte block offsets (and old 8-byte folders)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lsr.index import IndexFormatError, SeismicIndex, load_index
from lsr.index.ids import IdMap
from lsr.index.storage import sha256_file


@pytest.fixture(scope="module")
def index(small_random):
    docs, _ = small_random
    return SeismicIndex.build(docs)


def test_argument_forms_give_the_same_hits(index, small_random):
    _, queries = small_random
    for i in range(0, len(queries), 7):
        q = queries[i : i + 1]
        ref = index.search(q, 10, query_cut=5, heap_factor=0.8, threads=1)
        for other in (index.search(q, np.int64(10), query_cut=np.int32(5), heap_factor=np.float64(0.8)),
                      index.search(q.to_scipy(), 10, query_cut=5, heap_factor=0.8),
                      index.search(q, 10, query_cut=5, heap_factor=0.8, threads=2)):
            assert np.array_equal(ref.rows, other.rows) and np.array_equal(ref.ids, other.ids)
            np.testing.assert_array_equal(ref.scores, other.scores)
    # one query through the fast path == the same query inside a batch (parallel path)
    batch = index.search(queries, 10, query_cut=5, heap_factor=0.8, threads=2)
    singles = np.concatenate([index.search(queries[i : i + 1], 10, query_cut=5, heap_factor=0.8).rows
                              for i in range(len(queries))])
    assert np.array_equal(batch.rows, singles)
    # heap_factor given as an int is 1.0
    a = index.search(queries[:3], 5, query_cut=4, heap_factor=1)
    b = index.search(queries[:3], 5, query_cut=4, heap_factor=1.0)
    assert np.array_equal(a.rows, b.rows)


def test_fast_path_rejects_what_the_full_checks_reject(index, small_random):
    _, queries = small_random
    q = queries[:1]
    for bad in (True, 2.0, "3"):
        with pytest.raises(ValueError, match="k must be an int"):
            index.search(q, k=bad)
    beyond = index.search(q, k=np.int64(len(index) + 1))  # padded with missing hits, as a short list
    assert beyond.rows.shape == (1, len(index) + 1) and beyond.rows[0, -1] == -1
    for bad in (0, -2, np.int64(0), True, 2.5, "3"):
        with pytest.raises(ValueError, match="query_cut"):
            index.search(q, 3, query_cut=bad)
    for bad in (0.0, 1.5, float("nan"), "0.5", -1):
        with pytest.raises(ValueError, match="heap_factor"):
            index.search(q, 3, heap_factor=bad)
    for bad in (1, -1):
        with pytest.raises(ValueError, match="n_knn"):
            index.search(q, 3, n_knn=bad)
    with pytest.raises(ValueError, match="threads"):
        index.search(q, 3, threads=0)


def test_id_lookup():
    rows = np.array([[0, 3, -1], [2, -1, -1]])
    ident = IdMap.build(None, 5)
    assert np.array_equal(ident.lookup(rows), rows) and ident.lookup(rows).dtype == np.int64
    out = ident.lookup(rows)
    out[0, 0] = 99  # a copy, never a view of the caller's rows
    assert rows[0, 0] == 0
    ext = IdMap.build(None, 3).extend(None, 2)  # 0..4 again after an add
    assert np.array_equal(ext.lookup(rows), rows)
    ints = IdMap.build([10, 12, 11, 7, 3], 5)
    assert ints.lookup(rows).tolist() == [[10, 7, -1], [11, -1, -1]]
    assert IdMap.build([1, 2, 3, 4, 5], 5).lookup(rows).tolist() == [[1, 4, -1], [3, -1, -1]]
    strs = IdMap.build(["a", "b", "c", "d", "e"], 5)
    got = strs.lookup(rows)
    assert got.dtype == object and got.tolist() == [["a", "d", None], ["c", None, None]]
    assert IdMap.build(None, 0).lookup(np.full((1, 2), -1)).tolist() == [[-1, -1]]
    assert IdMap.build([], 0).lookup(np.full((1, 2), -1)).tolist() == [[-1, -1]]


def test_mmap_arrays_reach_the_kernel_as_plain_views(index, small_random, tmp_path):
    _, queries = small_random
    index.save(tmp_path / "s")
    loaded = SeismicIndex.load(tmp_path / "s", mmap=True)
    assert isinstance(loaded._a["post_off"], np.memmap)
    a = loaded.search(queries, 10, threads=1)
    for x in loaded._kernel_args:
        assert not isinstance(x, np.ndarray) or type(x) is np.ndarray
    assert np.shares_memory(loaded._kernel_args[2], loaded._a["post_off"])
    b = index.search(queries, 10, threads=1)
    assert np.array_equal(a.rows, b.rows)
    np.testing.assert_array_equal(a.scores, b.scores)


def _rewrite(folder, name, arr):
    np.save(folder / f"{name}.npy", arr)
    m = json.loads((folder / "manifest.json").read_text())
    e = m["arrays"][name]
    e.update(dtype=arr.dtype.str, shape=list(arr.shape), bytes=(folder / f"{name}.npy").stat().st_size,
             sha256=sha256_file(folder / f"{name}.npy"))
    (folder / "manifest.json").write_text(json.dumps(m))


def test_block_offsets_are_4_bytes_and_old_8_byte_folders_load(index, small_random, tmp_path):
    _, queries = small_random
    assert index._a["blk_ptr"].dtype == np.uint32
    assert index.stats()["bytes"]["blk_ptr"] == 4 * (index.stats()["blocks"] + 1)
    assert index.summary_entries()["blk_ptr"].dtype == np.int64
    folder = index.save(tmp_path / "old")
    _rewrite(folder, "blk_ptr", np.load(folder / "blk_ptr.npy").astype(np.int64))  # as format 1 wrote it
    old = load_index(folder)
    assert old._a["blk_ptr"].dtype == np.int64
    for kw in (dict(threads=1), dict(threads=2), dict(query_cut=3, heap_factor=0.7)):
        a, b = index.search(queries, 10, **kw), old.search(queries, 10, **kw)
        assert np.array_equal(a.rows, b.rows)
        np.testing.assert_array_equal(a.scores, b.scores)
    for name in ("term_blk_ptr", "blk_ptr", "post_rows", "comp", "block", "value", "term_ent_ptr"):
        assert np.array_equal(index.summary_entries()[name], old.summary_entries()[name])
    # a decreasing (wrapped) 4-byte offset is refused, not read
    bp = np.load(folder / "blk_ptr.npy").astype(np.uint32)
    bp[1], bp[2] = bp[2], bp[1]
    if bp[1] != bp[2]:
        _rewrite(folder, "blk_ptr", bp)
        with pytest.raises(IndexFormatError, match="blk_ptr"):
            load_index(folder)
