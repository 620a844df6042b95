"""The compact summary layout (each group's distinct terms once + per-group bucket directories) and
format-1 and format-3 folders."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lsr.index import IndexFormatError, SeismicIndex, load_index
from lsr.index import kernels as K
from lsr.index.storage import FORMAT_VERSION


@pytest.fixture(scope="module")
def built(small_random):
    docs, _ = small_random
    index = SeismicIndex.build(docs, centroid_fraction=0.2, summary_energy=0.5, n_postings=80)
    index.delete([3])
    return index


def _entries_by_hand(index):
    """Every summary entry as (global block, term, dequantised value), from the block summaries
    recomputed with the NumPy reference (no use of the packed arrays)."""
    a = index._a
    vals = K.F16_TABLE[a["fwd_val"]]
    out = set()
    for gb in range(int(a["term_blk_ptr"][-1])):
        rows = index.post_rows()[a["blk_ptr"][gb]:a["blk_ptr"][gb + 1]]
        vecs = [(a["fwd_comp"][a["fwd_ptr"][d]:a["fwd_ptr"][d + 1]], vals[a["fwd_ptr"][d]:a["fwd_ptr"][d + 1]])
                for d in rows]
        comps, deq = K.block_summary_ref(vecs, index.params.summary_energy)
        out |= {(gb, int(c), float(v)) for c, v in zip(comps, deq)}
    return out


def test_entries_decode_to_the_reference_summaries(built):
    a = built._a
    assert a["sum_term"].dtype == np.uint16 and a["sum_dir"].dtype == np.uint16 and a["sum_tdir"].dtype == np.uint16
    assert a["sum_dir"].shape == (int(a["term_grp_ptr"][-1]), K.n_buckets(built.dim) + 1)
    ent = built.summary_entries()
    got = {(int(b), int(c), float(v)) for b, c, v in zip(ent["block"], ent["comp"], ent["value"])}
    assert got == _entries_by_hand(built)
    # 2 bytes per entry, 2 per distinct term of a group, plus the directories
    st = built.stats()["bytes"]
    assert st["sum_blk"] + st["sum_code"] == 2 * built.stats()["summary_entries"]
    gp = np.asarray(a["grp_ptr"])
    grp = np.repeat(np.arange(gp.shape[0] - 1), np.diff(gp))
    comps = K.summary_comps(a["sum_term"], a["sum_tdir"])
    distinct = np.unique(grp * built.dim + comps).shape[0]
    assert st["sum_term"] == 2 * distinct and a["grp_tptr"][-1] == distinct


def test_directory_bounds_each_bucket(built):
    a = built._a
    gp = np.asarray(a["grp_ptr"])
    tp = np.asarray(a["grp_tptr"])
    comps = K.summary_comps(a["sum_term"], a["sum_tdir"])
    for g in range(0, gp.shape[0] - 1, 7):
        c = comps[gp[g]:gp[g + 1]]
        assert np.all(np.diff(c) >= 0)  # sorted by term inside a group
        u, n = np.unique(c, return_counts=True)
        st = np.asarray(a["sum_term"][tp[g]:tp[g + 1]], np.int64)
        assert np.array_equal(st & K.BUCKET_MASK, u & K.BUCKET_MASK) and np.array_equal((st >> K.BUCKET_BITS) + 1, n)
        for h in np.unique(c >> K.BUCKET_BITS):
            assert a["sum_dir"][g, h] == np.searchsorted(c >> K.BUCKET_BITS, h)
            assert a["sum_tdir"][g, h] == np.searchsorted(u >> K.BUCKET_BITS, h)
    low, dir_ = K.summary_directory(gp, comps, built.dim)
    assert np.array_equal(dir_, a["sum_dir"])
    for x, y in zip(K.summary_terms(gp, low, dir_), (a["sum_term"], a["sum_tdir"], a["grp_tptr"])):
        assert np.array_equal(x, y)


def _as_format1(folder, index, old_format):
    """Rewrite a saved folder as format 1 wrote it: full 2-byte term ids in sum_comp."""
    comps = K.summary_comps(index._a["sum_term"], index._a["sum_tdir"]).astype(np.uint16)
    return old_format(folder, 1, {"sum_comp": comps}, ("sum_term", "sum_tdir", "grp_tptr", "sum_dir"))


def _as_format3(folder, index, old_format):
    """Rewrite a saved folder as format 3 wrote it: one term low byte per summary entry (sum_low)."""
    low = (K.summary_comps(index._a["sum_term"], index._a["sum_tdir"]) & K.BUCKET_MASK).astype(np.uint8)
    return old_format(folder, 3, {"sum_low": low}, ("sum_term", "sum_tdir", "grp_tptr"))


def test_format1_folder_loads_with_the_same_results(built, small_random, tmp_path, old_format):
    _, queries = small_random
    assert FORMAT_VERSION == 4
    folder = built.save(tmp_path / "v1")
    assert json.loads((folder / "manifest.json").read_text())["format_version"] == FORMAT_VERSION
    _as_format1(folder, built, old_format)
    old = load_index(folder)
    for kw in (dict(threads=1), dict(threads=2), dict(query_cut=3, heap_factor=0.7)):
        a, b = built.search(queries, 10, **kw), old.search(queries, 10, **kw)
        assert np.array_equal(a.rows, b.rows)
        np.testing.assert_array_equal(a.scores, b.scores)
    for name in ("comp", "block", "value"):
        assert np.array_equal(built.summary_entries()[name], old.summary_entries()[name])
    # saved again, it is written in the current format
    again = load_index(old.save(tmp_path / "v2"))
    assert np.array_equal(again._a["sum_dir"], built._a["sum_dir"])


def test_format3_folder_loads_with_the_same_results(built, small_random, tmp_path, old_format):
    _, queries = small_random
    folder = built.save(tmp_path / "v3")
    _as_format3(folder, built, old_format)
    old = load_index(folder)
    assert "sum_low" not in old._a
    for kw in (dict(threads=1), dict(threads=2), dict(query_cut=3, heap_factor=0.7)):
        a, b = built.search(queries, 10, **kw), old.search(queries, 10, **kw)
        assert np.array_equal(a.rows, b.rows)
        np.testing.assert_array_equal(a.scores, b.scores)
    for name in ("sum_term", "sum_tdir", "grp_tptr"):
        assert np.array_equal(old._a[name], built._a[name])
    again = load_index(old.save(tmp_path / "v4"))
    assert json.loads((tmp_path / "v4" / "manifest.json").read_text())["format_version"] == FORMAT_VERSION
    assert np.array_equal(again._a["sum_term"], built._a["sum_term"])


def test_format3_folder_with_bad_directory_is_refused(built, tmp_path, old_format):
    folder = built.save(tmp_path / "bad3")
    _as_format3(folder, built, old_format)
    d = np.load(folder / "sum_dir.npy")
    d[int(np.argmax(d[:, -1] > 0)), -1] += 1
    old_format(folder, 3, {"sum_dir": d}, ())
    with pytest.raises(IndexFormatError, match="sum_dir.npy.*sum_low"):
        load_index(folder)


def test_term_counts_past_their_bucket_are_refused(built, tmp_path, replace_arrays):
    folder = built.save(tmp_path / "cnt")
    st = np.load(folder / "sum_term.npy")
    st[0] += 1 << K.BUCKET_BITS  # one more entry for the first term than its bucket holds
    replace_arrays(folder, sum_term=st)
    with pytest.raises(IndexFormatError, match="sum_term.npy.*counts"):
        load_index(folder)


def test_format1_folder_with_unsorted_entries_is_refused(built, tmp_path, old_format):
    folder = built.save(tmp_path / "bad")
    _as_format1(folder, built, old_format)
    comps = np.load(folder / "sum_comp.npy")
    gp = np.asarray(built._a["grp_ptr"])
    i = int(gp[0] + np.argmax(np.diff(comps[gp[0]:gp[1]].astype(np.int64)) > 0))  # two different terms in group 0
    comps[i], comps[i + 1] = comps[i + 1], comps[i]
    old_format(folder, 1, {"sum_comp": comps}, ())
    with pytest.raises(IndexFormatError, match="sum_comp.npy.*not sorted"):
        load_index(folder)


def test_inconsistent_directory_is_refused(built, tmp_path, replace_arrays):
    folder = built.save(tmp_path / "dir")
    d = np.load(folder / "sum_dir.npy")
    row = int(np.argmax(d[:, -1] > 0))
    d[row, -1] += 1  # the group's size no longer matches grp_ptr
    replace_arrays(folder, sum_dir=d)
    with pytest.raises(IndexFormatError, match="sum_dir.npy.*summary groups"):
        load_index(folder)


def _energy_by_sort(vals, energy):
    """The energy cut by a full sort (float64 sums): (n kept, threshold, ties kept at it)."""
    order = np.argsort(-vals, kind="stable")
    acc, until = 0.0, float(vals.astype(np.float64).sum()) * float(np.float32(energy))
    for n, i in enumerate(order, 1):
        acc += float(vals[i])
        if acc >= until:
            thr = vals[i]
            return n, thr, int(np.sum(vals[order[:n]] == thr))
    raise AssertionError("unreachable")


@pytest.mark.parametrize("energy", [1e-3, 0.1, 0.4, 0.77, 1.0])
def test_energy_cut_histogram_equals_a_sort(energy):
    rng = np.random.default_rng(5)
    hist_m, hist_n = np.empty(1024), np.empty(1024, np.int64)
    for trial in range(60):
        nu = int(rng.integers(1, 3000))
        # float16-rounded values, with subnormals, many ties and a wide range
        raw = np.concatenate([rng.lognormal(-0.6, 1.5, nu), rng.choice([1e-6, 3e-5, 0.5, 2.0], nu)])[:nu]
        vals = raw.astype(np.float16).astype(np.float32)
        vals = np.maximum(vals, np.float32(np.float16(6e-8)))  # > 0, as every stored value
        dim = nu + 5
        maxv = np.full(dim, -1.0, np.float32)
        comps = rng.permutation(dim)[:nu].astype(np.int64)
        maxv[comps] = vals
        tmp = np.empty(dim, np.float32)
        n, thr, ties, hi = K._energy_threshold(comps, nu, maxv, np.float32(energy), tmp, hist_m, hist_n)
        assert (n, thr, ties) == _energy_by_sort(vals, energy), trial
        assert hi == vals.max()


def test_top_terms_equals_a_stable_argsort():
    rng = np.random.default_rng(9)
    for trial in range(200):
        n = int(rng.integers(1, 60))
        q = rng.choice([0.5, 1.0, 2.0, 3.0], n).astype(np.float32) if trial % 2 else rng.random(n, np.float32)
        for cut in (1, 3, 10, 32, n):
            cut = min(cut, n)
            order = np.empty(cut, np.int64)
            got = K._top_terms(q, cut, order)
            assert got == cut
            assert np.array_equal(order, np.argsort(-q, kind="mergesort")[:cut]), (trial, cut)
