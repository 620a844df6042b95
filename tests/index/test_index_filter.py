"""Filtered search: metadata filters -> allowed-row masks; filtered Seismic vs exact filtered search."""

from __future__ import annotations

import numpy as np
import pytest

from lsr import SparseBatch
from lsr.index import ExactIndex, SeismicIndex
from lsr.index import kernels as K
from lsr.index.filter import FilterError, MetadataFilter, MetadataTable


# ------------------------------------------------------------------------------ filters
RECORDS = [
    {"year": 2019, "lang": "en", "open": True, "score": 0.5},
    {"year": 2021, "lang": "de", "open": False},
    {"year": 2022.0, "lang": "en", "tags": ["a", "b"]},
    None,
    {"year": "2020", "lang": "fr", "open": 1},
    {},
    {"year": 2020, "date": "2020-05-01"},
    {"date": "2021-12-31", "lang": "EN"},
]


@pytest.mark.parametrize("spec, rows", [
    ({"lang": "en"}, [0, 2]),
    ({"lang": ["en", "de"]}, [0, 1, 2]),
    ({"year": 2020}, [6]),                       # the string "2020" is not the number 2020
    ({"year": "2020"}, [4]),
    ({"year": {"gte": 2020}}, [1, 2, 6]),
    ({"year": {"gt": 2020, "lte": 2022}}, [1, 2]),
    ({"year": {"lt": 2020}}, [0]),
    ({"open": True}, [0]),                       # 1 is not true
    ({"open": 1}, [4]),
    ({"open": [False, True]}, [0, 1]),
    ({"lang": "en", "year": {"gte": 2020}}, [2]),
    ({"date": {"gte": "2020-06-01"}}, [7]),
    ({"date": {"gte": "2020-01-01", "lt": "2021"}}, [6]),
    ({"tags": "a"}, []),                         # nested values are not indexed
    ({"missing": 1}, []),
    ({"score": {"gt": 0.49, "lt": 0.51}}, [0]),
])
def test_mask_matches_hand_values(spec, rows):
    table = MetadataTable.from_records(RECORDS)
    assert np.flatnonzero(table.mask(spec)).tolist() == rows


def _ref_match(rec, spec):
    """Plain-Python meaning of a filter, written independently of the columnar table."""
    if not rec:
        return False
    for field, cond in spec.items():
        if field not in rec:
            return False
        v = rec[field]
        if isinstance(cond, dict):
            if isinstance(v, bool) or not isinstance(v, (int, float, str)):
                return False
            bounds = list(cond.values())
            if isinstance(bounds[0], str) != isinstance(v, str):
                return False
            ops = {"gt": lambda a, b: a > b, "gte": lambda a, b: a >= b, "lt": lambda a, b: a < b,
                   "lte": lambda a, b: a <= b}
            if not all(ops[op](v, b) for op, b in cond.items()):
                return False
        else:
            values = cond if isinstance(cond, list) else [cond]
            if not any(type(v) is type(x) and v == x if isinstance(x, (bool, str)) or isinstance(v, (bool, str))
                       else v == x for x in values):
                return False
    return True


def test_mask_equals_plain_python_on_random_records():
    rng = np.random.default_rng(5)
    langs = ["en", "de", "fr", "es"]
    recs = []
    for _ in range(500):
        r = {}
        if rng.random() < 0.9:
            r["year"] = int(rng.integers(1990, 2025)) if rng.random() < 0.8 else float(rng.integers(1990, 2025))
        if rng.random() < 0.9:
            r["lang"] = langs[int(rng.integers(0, 4))]
        if rng.random() < 0.5:
            r["open"] = bool(rng.random() < 0.5)
        recs.append(r if rng.random() < 0.95 else None)
    table = MetadataTable.from_records(recs)
    for _ in range(200):
        spec = {}
        if rng.random() < 0.7:
            lo = int(rng.integers(1990, 2025))
            spec["year"] = {str(rng.choice(["gt", "gte"])): lo, str(rng.choice(["lt", "lte"])): lo + int(rng.integers(0, 15))}
        if rng.random() < 0.5:
            spec["lang"] = [langs[i] for i in rng.choice(4, int(rng.integers(1, 4)), replace=False)]
        if rng.random() < 0.3:
            spec["open"] = bool(rng.random() < 0.5)
        if not spec:
            spec["lang"] = "en"
        want = [i for i, r in enumerate(recs) if _ref_match(r, spec)]
        assert np.flatnonzero(table.mask(spec)).tolist() == want, spec


@pytest.mark.parametrize("spec, words", [
    ({}, "at least one"),
    ([("a", 1)], "object of field conditions"),
    ({"year": {"from": 1}}, "unknown range operator 'from'"),
    ({"year": {}}, "empty range"),
    ({"year": {"gte": 1, "lt": "2"}}, "all numbers or all strings"),
    ({"year": {"gte": True}}, "number or a string"),
    ({"year": None}, "null"),
    ({"year": float("nan")}, "finite"),
    ({"year": [{"a": 1}]}, "string, number or boolean"),
    ({"year": []}, "list of 1-1024"),
    ({"": 1}, "field names"),
    ({f"f{i}": 1 for i in range(33)}, "at most 32"),
])
def test_bad_filters_name_the_problem(spec, words):
    with pytest.raises(FilterError, match=words):
        MetadataFilter.parse(spec)


# ------------------------------------------------------------------------------ kernels
def test_rows_kernel_matches_reference(small_random):
    docs, queries = small_random
    index = SeismicIndex.build(docs[:1000])
    index.add(docs[1000:])  # rows past the build are in the tail arrays
    rng = np.random.default_rng(1)
    rows = np.flatnonzero(rng.random(len(docs)) < 0.3).astype(np.int64)
    f16 = docs.astype(np.float16)
    vectors = [(f16.row(i)[0], f16.row(i)[1].astype(np.float32)) for i in range(len(docs))]
    ref_s, ref_r = K.rows_search_ref(queries.indptr, queries.indices, queries.values, 10, rows, vectors)
    hits = index.search(queries, k=10, allowed=np.isin(np.arange(len(docs)), rows), exact_below=1.0, threads=1)
    np.testing.assert_array_equal(hits.rows, ref_r)
    np.testing.assert_array_equal(hits.scores, ref_s)


# ------------------------------------------------------------------------------ filtered search
@pytest.fixture(scope="module")
def filt(synth):
    docs, queries = synth
    index = SeismicIndex.build(docs, ids=[f"d{i}" for i in range(len(docs))])
    exact = ExactIndex.build(docs.astype(np.float16), ids=[f"d{i}" for i in range(len(docs))])
    return docs, queries, index, exact


def _recall(found, truth):
    out = []
    for f, t in zip(found, truth):
        t = set(t[t >= 0].tolist())
        if t:
            out.append(len(set(f[f >= 0].tolist()) & t) / len(t))
    return float(np.mean(out))


def _mask(n, share, seed):
    return np.random.default_rng(seed).random(n) < share


@pytest.mark.parametrize("share", [0.01, 0.08, 0.3])
def test_exact_mode_equals_exact_filtered_search(filt, share):
    docs, queries, index, exact = filt
    allowed = _mask(len(docs), share, 2)
    ref = exact.search(queries, k=10, allowed=allowed)
    for threads in (1, 2):
        hits = index.search(queries, k=10, allowed=allowed, exact_below=1.0, threads=threads)
        np.testing.assert_array_equal(hits.rows, ref.rows)
        # the forward index sums a document's terms in lanes (kernels.dot_f16_ref), the exact index
        # in term order: equal to rounding; test_rows_kernel_matches_reference pins the bits
        np.testing.assert_allclose(hits.scores, ref.scores, rtol=1e-6)
    assert set(ref.rows[ref.rows >= 0].tolist()) <= set(np.flatnonzero(allowed).tolist())


@pytest.mark.parametrize("share", [0.7, 0.5, 0.25, 0.12])
def test_blocked_filtered_search_recall(filt, share):
    """The Seismic path (no exact switch) with default knobs: recall@10 against exact filtered
    search >= 0.95 (measured 0.955-0.987 on these 3,000 documents; unfiltered 0.95), no holes,
    nothing outside."""
    docs, queries, index, exact = filt
    allowed = _mask(len(docs), share, 3)
    ref = exact.search(queries, k=10, allowed=allowed)
    hits = index.search(queries, k=10, allowed=allowed, exact_below=0.0)
    assert _recall(hits.rows, ref.rows) >= 0.95
    assert set(hits.rows[hits.rows >= 0].tolist()) <= set(np.flatnonzero(allowed).tolist())
    # as many hits per query as the exact filtered search finds (k, or every match)
    np.testing.assert_array_equal((hits.rows >= 0).sum(1), (ref.rows >= 0).sum(1))
    one = np.concatenate([index.search(queries[i], k=10, allowed=allowed, exact_below=0.0).rows
                          for i in range(len(queries))])
    np.testing.assert_array_equal(one, index.search(queries, k=10, allowed=allowed, exact_below=0.0, threads=2).rows)


def test_post_filtering_would_leave_holes(filt):
    """Why the mask goes into the search: filtering the unfiltered top-100 afterwards keeps far fewer
    than k hits for a selective filter, while the filtered search returns the full top-k."""
    docs, queries, index, exact = filt
    allowed = _mask(len(docs), 0.03, 4)
    post = index.search(queries, k=100).rows
    kept = np.array([np.isin(r[r >= 0], np.flatnonzero(allowed)).sum() for r in post])
    hits = index.search(queries, k=10, allowed=allowed)  # default switch: exact at 3 % allowed
    ref = exact.search(queries, k=10, allowed=allowed)
    np.testing.assert_array_equal(hits.rows, ref.rows)
    assert (kept < 10).mean() > 0.5 and (hits.rows[:, -1] >= 0).all()


def test_filter_with_deletes_and_added_documents(small_random):
    docs, queries = small_random
    index = SeismicIndex.build(docs[:1200], ids=list(range(1200)))
    index.add(docs[1200:], ids=list(range(1200, len(docs))))
    index.delete(list(range(0, len(docs), 7)))
    f16 = docs.astype(np.float16)
    exact = ExactIndex.build(f16)
    exact.delete(list(range(0, len(docs), 7)))
    for share, eb in ((0.05, 0.1), (0.6, 0.0)):
        allowed = _mask(len(docs), share, 6)
        ref = exact.search(queries, k=10, allowed=allowed)
        hits = index.search(queries, k=10, allowed=allowed, exact_below=eb, query_cut=1000, heap_factor=1.0)
        got = hits.rows[hits.rows >= 0]
        assert not np.isin(got, np.arange(0, len(docs), 7)).any() and allowed[got].all()
        assert _recall(hits.rows, ref.rows) >= 0.95
        assert (got >= 1200).any()  # the tail (added rows) is searched too


def test_metadata_filter_end_to_end(filt):
    docs, queries, index, exact = filt
    years = np.random.default_rng(8).integers(2000, 2025, len(docs))
    table = MetadataTable.from_records([{"year": int(y), "kind": "a" if y % 2 else "b"} for y in years])
    allowed = table.mask({"year": {"gte": 2020}, "kind": "a"})
    assert allowed.sum() == ((years >= 2020) & (years % 2 == 1)).sum()
    hits = index.search(queries, k=5, allowed=allowed)
    rows = hits.rows[hits.rows >= 0]
    assert ((years[rows] >= 2020) & (years[rows] % 2 == 1)).all()
    assert hits.ids[0, 0] == f"d{hits.rows[0, 0]}"


def test_exact_index_mask_equals_brute_force(small_random):
    docs, queries = small_random
    allowed = _mask(len(docs), 0.2, 9)
    hits = ExactIndex.build(docs).search(queries, k=10, allowed=allowed)
    D = docs.to_scipy() if hasattr(docs, "to_scipy") else None
    S = (queries.to_scipy() @ D.T).toarray().astype(np.float32)
    for i in range(len(queries)):
        s, r = K.topk_ref(np.where(allowed, S[i], 0), 10)
        np.testing.assert_array_equal(hits.rows[i], r)
        np.testing.assert_allclose(hits.scores[i], s, rtol=1e-5)


@pytest.mark.parametrize("cls", [ExactIndex, SeismicIndex])
def test_bad_masks(small_random, cls):
    docs, queries = small_random
    index = cls.build(docs[:300])
    with pytest.raises(ValueError, match="300 rows"):
        index.search(queries, k=5, allowed=np.ones(299, bool))
    with pytest.raises(ValueError, match="bool array"):
        index.search(queries, k=5, allowed=np.ones(300, np.uint8))
    with pytest.raises(ValueError, match="bool array"):
        index.search(queries, k=5, allowed=[True] * 300)
    none = index.search(queries, k=5, allowed=np.zeros(300, bool))
    assert (none.rows == -1).all() and np.isneginf(none.scores).all()
