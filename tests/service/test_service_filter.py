"""Filtered search over real HTTP: the top-k among documents whose metadata match, across sealed
(Seismic) segments, fresh documents, deletes and a restart; bad filters are 422s."""

from __future__ import annotations

import numpy as np
import pytest

DIM = 200
LANGS = ("en", "de", "fr")


def _docs(n, start=0):
    rng = np.random.default_rng(start)
    out = []
    for i in range(start, start + n):
        terms = rng.choice(DIM - 1, size=10, replace=False) + 1
        vec = {str(int(t)): round(float(w), 3) for t, w in zip(terms, rng.uniform(0.1, 2.0, 10))}
        meta = None if i % 17 == 0 else {"year": 2000 + i % 25, "lang": LANGS[i % 3], "open": i % 2 == 0,
                                         "date": f"2020-{1 + i % 12:02d}-01"}
        out.append({"id": f"d{i}", "text": f"document {i}", "vector_ids": vec, "metadata": meta})
    return out


def _match(meta, flt):
    if not meta:
        return False
    for field, cond in flt.items():
        v = meta.get(field)
        if isinstance(cond, dict):
            ops = {"gt": v.__gt__, "gte": v.__ge__, "lt": v.__lt__, "lte": v.__le__} if v is not None else {}
            if v is None or not all(ops[op](b) for op, b in cond.items()):
                return False
        elif isinstance(cond, list):
            if v not in cond or isinstance(v, bool) != isinstance(cond[0], bool):
                return False
        elif v != cond or isinstance(v, bool) != isinstance(cond, bool):
            return False
    return True


def _truth(query, docs, flt, k):
    scores = {}
    for did, d in docs.items():
        if flt is not None and not _match(d["metadata"], flt):
            continue
        s = sum(w * d["vector_ids"].get(t, 0.0) for t, w in query.items())
        if s > 0:
            scores[did] = s
    return [d for d, _ in sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))[:k]]


@pytest.fixture(scope="module")
def coll(client):
    assert client.post("/v1/collections", json={"name": "f", "model": None, "dim": DIM}).status_code == 201
    docs = {d["id"]: d for d in _docs(600)}
    items = list(docs.values())
    for s in range(0, len(items), 200):
        r = client.post("/v1/collections/f/documents", json={"documents": items[s:s + 200]})
        assert r.status_code == 200, r.text
    r = client.post("/v1/collections/f/merge", params={"compact": True})
    assert r.status_code == 200, r.text
    fresh = {d["id"]: d for d in _docs(60, start=600)}  # and some not sealed yet
    assert client.post("/v1/collections/f/documents", json={"documents": list(fresh.values())}).status_code == 200
    docs.update(fresh)
    gone = [f"d{i}" for i in range(0, 660, 11)]
    assert client.post("/v1/collections/f/documents/delete", json={"ids": gone}).status_code == 200
    for d in gone:
        docs.pop(d)
    return docs


FILTERS = [
    {"lang": "de", "year": 2003},                       # ~1%: exact over the allowed rows
    {"year": {"gte": 2010, "lt": 2012}},                # ~8%
    {"lang": ["en", "fr"], "open": True},               # ~33%: the blocked search with a mask
    {"year": {"gt": 2002}},                             # ~85%
    {"date": {"gte": "2020-03-01", "lte": "2020-05-01"}, "lang": "en"},
]


def _queries(n, seed=11):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        terms = rng.choice(DIM - 1, size=8, replace=False) + 1
        out.append({str(int(t)): float(w) for t, w in zip(terms, rng.uniform(0.2, 1.5, 8))})
    return out


@pytest.mark.parametrize("flt", FILTERS)
def test_filtered_search_is_the_top_k_among_matches(anon, coll, flt):
    found = wanted = 0
    for q in _queries(8):
        want = _truth(q, coll, flt, 10)
        r = anon.post("/v1/collections/f/search", json={"vector_ids": q, "k": 10, "filter": flt})
        assert r.status_code == 200, r.text
        hits = r.json()["hits"]
        assert all(_match(h["metadata"], flt) for h in hits)
        assert len(hits) == len(want)  # no holes: as many hits as matching documents allow, up to k
        found += len({h["id"] for h in hits} & set(want))
        wanted += len(want)
    assert wanted and found / wanted >= 0.95


def test_selective_filter_equals_exact_and_batch_agrees(anon, coll):
    flt = FILTERS[0]
    qs = _queries(6, seed=5)
    r = anon.post("/v1/collections/f/search/batch", json={"queries": [{"vector_ids": q} for q in qs], "k": 5,
                                                          "filter": flt, "explain": True})
    assert r.status_code == 200, r.text
    for q, res in zip(qs, r.json()["results"]):
        assert [h["id"] for h in res["hits"]] == _truth(q, coll, flt, 5)


def test_unfiltered_search_still_sees_everything(anon, coll):
    q = _queries(1, seed=3)[0]
    hits = anon.post("/v1/collections/f/search", json={"vector_ids": q, "k": 10}).json()["hits"]
    assert any(h["metadata"] is None or not _match(h["metadata"], FILTERS[0]) for h in hits)


def test_filter_survives_restart_and_sees_new_writes(server, client, anon, coll):
    new = {"id": "late", "text": "late", "vector_ids": {"5": 3.0, "6": 3.0}, "metadata": {"lang": "xx"}}
    assert client.post("/v1/collections/f/documents", json={"documents": [new]}).status_code == 200
    body = {"vector_ids": {"5": 1.0, "6": 1.0}, "k": 3, "filter": {"lang": "xx"}}
    assert [h["id"] for h in anon.post("/v1/collections/f/search", json=body).json()["hits"]] == ["late"]
    server.stop()
    server.start()
    with server.client(None) as c:
        assert [h["id"] for h in c.post("/v1/collections/f/search", json=body).json()["hits"]] == ["late"]
        flt = FILTERS[1]
        q = _queries(1, seed=9)[0]
        hits = c.post("/v1/collections/f/search", json={"vector_ids": q, "k": 10, "filter": flt}).json()["hits"]
        assert [h["id"] for h in hits] == _truth(q, coll, flt, 10)


@pytest.mark.parametrize("flt, fragment", [
    ({"year": {"from": 2000}}, "unknown range operator 'from'"),
    ({"year": None}, "null is not a filter value"),
    ({"year": {"gte": 1, "lt": "x"}}, "all numbers or all strings"),
    ({"lang": {"a": [1]}}, "unknown range operator"),
    ({}, "at least one"),
    ("en", "valid dictionary"),
])
def test_bad_filters_are_422(anon, coll, flt, fragment):
    r = anon.post("/v1/collections/f/search", json={"vector_ids": {"5": 1.0}, "filter": flt})
    assert r.status_code == 422, r.text
    assert fragment in r.text


def test_oversized_metadata_is_422_and_nothing_stored(client, coll):
    doc = {"id": "big", "vector_ids": {"1": 1.0}, "metadata": {"blob": "x" * 70_000}}
    r = client.post("/v1/collections/f/documents", json={"documents": [doc]})
    assert r.status_code == 422 and "limit 65536" in r.text, r.text
    assert client.get("/v1/collections/f/documents/big").status_code == 404
