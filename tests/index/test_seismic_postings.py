"""Postings that point into the forward index (offset, length): ties, tombstones, format-2 folders."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lsr import SparseBatch
from lsr.index import IndexFormatError, SeismicIndex, load_index
from lsr.index import kernels as K
from lsr.index.storage import FORMAT_VERSION, sha256_file


def _with_copies(seed: int = 0) -> tuple[SparseBatch, SparseBatch, np.ndarray]:
    """60 distinct documents, each stored 3 times at scattered rows, with empty rows between:
    equal scores everywhere, and offsets shared by an empty row and the row after it."""
    rng = np.random.default_rng(seed)
    dim = 50
    base = rng.random((60, dim), dtype=np.float32) * (rng.random((60, dim)) < 0.3)
    base[:, 0] += 0.01  # no empty base document
    src = np.concatenate([rng.permutation(60) for _ in range(3)])
    rows = base[src]
    empty = rng.random(rows.shape[0]) < 0.1
    rows[empty] = 0.0
    queries = rng.random((25, dim), dtype=np.float32) * (rng.random((25, dim)) < 0.3)
    return SparseBatch.from_dense(rows), SparseBatch.from_dense(queries), np.where(empty, -1, src)


@pytest.fixture(scope="module")
def copies():
    docs, queries, src = _with_copies()
    index = SeismicIndex.build(docs, n_postings=None, centroid_fraction=0.3, nknn=3)
    index.add(docs[:30], ids=list(range(1000, 1030)))  # the tail repeats main rows
    return index, docs, queries, src


def test_postings_hold_offset_and_length_of_their_row(copies):
    index, docs, _, _ = copies
    a = index._a
    assert a["post_off"].dtype == np.uint32 and a["post_len"].dtype == np.uint16
    rows = index.post_rows()
    fwd_ptr = np.asarray(a["fwd_ptr"])
    assert np.array_equal(a["post_off"], fwd_ptr[rows])
    assert np.array_equal(a["post_len"], fwd_ptr[rows + 1] - fwd_ptr[rows])
    assert np.all(a["post_len"] > 0)  # an empty row has no posting, so offsets name rows uniquely
    # each posting of term t's list is a document holding t
    tbp, bp = a["term_blk_ptr"], a["blk_ptr"]
    for t in range(docs.dim):
        for d in rows[bp[tbp[t]]:bp[tbp[t + 1]]]:
            assert t in docs.row(int(d))[0].tolist()
    assert np.array_equal(index.summary_entries()["post_rows"], rows)


@pytest.mark.parametrize("k", [5, 40])  # a heap of <= 32 is scanned for repeats, a larger one stamps rows
@pytest.mark.parametrize("threads", [1, 2])
def test_ties_break_by_row_with_copies_and_tail(copies, k, threads):
    index, _, queries, _ = copies
    arrays = dict(index._a, deleted=index._deleted)
    for kw in (dict(query_cut=50, heap_factor=0.01), dict(query_cut=3, heap_factor=0.8), dict(query_cut=5, n_knn=3)):
        hits = index.search(queries, k, threads=threads, **kw)
        for i in range(len(queries)):
            idx, val = queries.row(i)
            rs, rr = K.seismic_one_ref(idx, val, k, kw["query_cut"], kw.get("heap_factor", 0.9), arrays,
                                       n_knn=kw.get("n_knn", 0))
            assert np.array_equal(hits.rows[i], rr), (kw, i)
            np.testing.assert_array_equal(hits.scores[i], rs)
            live = hits.rows[i][hits.rows[i] >= 0]
            assert np.unique(live).size == live.size  # a document met in several lists comes once
            s = hits.scores[i][: live.size]
            tied = s[1:] == s[:-1]
            assert np.all(live[1:][tied] > live[:-1][tied])  # equal scores: rows ascending


def test_exhaustive_search_equals_brute_force(copies):
    index, docs, queries, _ = copies
    vecs = index.get(list(range(len(docs))) + list(range(1000, 1030)))  # float16-rounded, as scored
    dense = vecs.to_dense().astype(np.float32)
    hits = index.search(queries, 40, query_cut=50, heap_factor=0.01, threads=1)
    for i in range(len(queries)):
        q = queries.row(i)
        scores = np.zeros(dense.shape[0], np.float32)
        for c, v in zip(q[0].tolist(), q[1].tolist()):
            scores += np.float32(v) * dense[:, c]
        rs, _ = K.topk_ref(scores, 40)
        ok = hits.rows[i] >= 0
        assert ok.sum() == (rs > -np.inf).sum()
        # (summation order differs from the kernel's, so scores agree to rounding)
        np.testing.assert_allclose(hits.scores[i][ok], rs[ok], rtol=1e-5)
        np.testing.assert_allclose(hits.scores[i][ok], scores[hits.rows[i][ok]], rtol=1e-5)


@pytest.mark.parametrize("k", [5, 40])
def test_deleted_rows_never_returned(k):
    docs, queries, _ = _with_copies(1)
    index = SeismicIndex.build(docs, n_postings=None, centroid_fraction=0.3)
    before = index.search(queries, k, query_cut=50, heap_factor=0.01, threads=1)
    gone = np.unique(before.rows[:, :3])
    gone = gone[gone >= 0]
    index.delete(gone)
    index.add(docs[:10], ids=list(range(1000, 1010)))
    index.delete([1000, 1001])
    after = index.search(queries, k, query_cut=50, heap_factor=0.01, threads=1)
    dead = set(gone.tolist()) | {len(docs), len(docs) + 1}
    assert not dead & set(after.rows.ravel().tolist())
    arrays = dict(index._a, deleted=index._deleted)
    for i in range(len(queries)):
        idx, val = queries.row(i)
        _, rr = K.seismic_one_ref(idx, val, k, 50, 0.01, arrays)
        assert np.array_equal(after.rows[i], rr), i


def _as_format2(folder, index, old_format):
    """Rewrite a saved folder as format 2 wrote it: postings by row (post_rows), a term low byte per
    summary entry (sum_low)."""
    low = (K.summary_comps(index._a["sum_term"], index._a["sum_tdir"]) & K.BUCKET_MASK).astype(np.uint8)
    return old_format(folder, 2, {"post_rows": index.post_rows().astype(np.int32), "sum_low": low},
                      ("post_off", "post_len", "sum_term", "sum_tdir", "grp_tptr"))


def test_format2_folder_loads_with_the_same_results(copies, tmp_path, old_format):
    index, _, queries, _ = copies
    assert FORMAT_VERSION == 4
    folder = index.save(tmp_path / "v2")
    _as_format2(folder, index, old_format)
    old = load_index(folder)
    for kw in (dict(threads=1), dict(threads=2, k=40), dict(query_cut=3, heap_factor=0.7, n_knn=3)):
        kw = dict(kw)
        k = kw.pop("k", 10)
        a, b = index.search(queries, k, **kw), old.search(queries, k, **kw)
        assert np.array_equal(a.rows, b.rows)
        np.testing.assert_array_equal(a.scores, b.scores)
    again = load_index(old.save(tmp_path / "v3"))
    assert json.loads((tmp_path / "v3" / "manifest.json").read_text())["format_version"] == FORMAT_VERSION
    assert np.array_equal(again._a["post_off"], index._a["post_off"])
    assert "post_rows" not in again._a


def test_format2_folder_with_bad_rows_is_refused(copies, tmp_path, old_format):
    index, _, _, _ = copies
    folder = index.save(tmp_path / "bad")
    _as_format2(folder, index, old_format)
    rows = np.load(folder / "post_rows.npy")
    rows[0] = index._n_main
    old_format(folder, 2, {"post_rows": rows}, ())
    with pytest.raises(IndexFormatError, match="post_rows.npy.*out of range"):
        load_index(folder)


def test_posting_length_past_the_forward_index_is_refused(copies, tmp_path):
    index, _, _, _ = copies
    folder = index.save(tmp_path / "len")
    m = json.loads((folder / "manifest.json").read_text())
    pl = np.load(folder / "post_len.npy")
    pl[np.argmax(np.load(folder / "post_off.npy"))] += 1
    np.save(folder / "post_len.npy", pl)
    m["arrays"]["post_len"]["sha256"] = sha256_file(folder / "post_len.npy")
    (folder / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(IndexFormatError, match="out of range"):
        load_index(folder)
