"""Hybrid sparse + dense search over real HTTP: a collection with the real all-MiniLM-L6-v2 keeps
one embedding per document (durable through the log and the segments); mode=hybrid fuses the
sparse and the dense ranking by alpha or RRF, checked against rankings computed here."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest

from lsr.models.dense import DenseEncoder

DIM = 200
CORPUS = Path(__file__).resolve().parents[1] / "data" / "beir" / "scifact" / "corpus.jsonl.gz"


@pytest.fixture(scope="module")
def texts():
    out = []
    with gzip.open(CORPUS, "rt", encoding="utf-8") as fh:
        for line in fh:
            d = json.loads(line)
            out.append((d["_id"], (d.get("title", "") + " " + d["text"])[:600]))
            if len(out) == 45:
                break
    return out


@pytest.fixture(scope="module")
def coll(client, texts):
    r = client.post("/v1/collections", json={"name": "h", "model": None, "dim": DIM, "dense_model": "minilm"})
    assert r.status_code == 201, r.text
    assert r.json()["dense_model"] == "minilm"
    rng = np.random.default_rng(1)
    docs = {}
    for i, (doc_id, text) in enumerate(texts):
        terms = rng.choice(DIM - 1, size=12, replace=False) + 1
        vec = {str(int(t)): round(float(w), 3) for t, w in zip(terms, rng.uniform(0.1, 2.0, 12))}
        docs[doc_id] = {"id": doc_id, "text": text, "vector_ids": vec, "metadata": {"i": i}}
    items = list(docs.values())
    assert client.post("/v1/collections/h/documents", json={"documents": items[:40]}).status_code == 200
    assert client.post("/v1/collections/h/merge", params={"compact": True}).json()["merged"]
    assert client.post("/v1/collections/h/documents", json={"documents": items[40:]}).status_code == 200  # fresh
    return docs


@pytest.fixture(scope="module")
def embed(coll):
    """The same model, run here: (document id -> embedding, the query's embedding)."""
    enc = DenseEncoder.load("minilm", device="cpu")
    docs = enc.encode([d["text"] for d in coll.values()])
    return dict(zip(coll, docs)), enc.encode([QUERY_TEXT])[0]


def _sparse(q, docs):
    s = {d: sum(w * doc["vector_ids"].get(t, 0.0) for t, w in q.items()) for d, doc in docs.items()}
    return {d: v for d, v in s.items() if v > 0}


QUERY_TEXT = "vitamin D deficiency and bone density in older adults"
QUERY_VEC = {"3": 1.0, "17": 0.7, "42": 1.3, "99": 0.4, "150": 0.9, "180": 0.5}


def _search(anon, **body):
    r = anon.post("/v1/collections/h/search", json={"vector_ids": QUERY_VEC, "text": QUERY_TEXT, "k": 10,
                                                    "mode": "hybrid", **body})
    assert r.status_code == 200, r.text
    return r.json()["hits"]


def test_alpha_ends_are_the_two_exact_rankings(anon, coll, embed):
    doc_emb, q_emb = embed
    dense = {d: float(e @ q_emb) for d, e in doc_emb.items()}
    sparse = _sparse(QUERY_VEC, coll)
    dense_order = sorted(dense, key=lambda d: (-dense[d], d))[:10]
    sparse_order = sorted(sparse, key=lambda d: (-sparse[d], d))[:10]
    hits1 = _search(anon, alpha=1.0)
    assert [h["id"] for h in hits1] == dense_order
    for h in hits1:
        assert h["dense_score"] == pytest.approx(dense[h["id"]], abs=1e-5)
        assert h["sparse_score"] == pytest.approx(sparse.get(h["id"], 0.0), rel=1e-5)
        assert h["metadata"]["i"] == list(coll).index(h["id"])
    # alpha 0: the sparse ranking first; documents no sparse term reaches (score 0) may fill up to k
    hits0 = _search(anon, alpha=0.0)
    assert [h["id"] for h in hits0][: len(sparse_order)] == sparse_order
    assert all(h["sparse_score"] == 0.0 for h in hits0[len(sparse_order):])
    mid = _search(anon, alpha=0.5)
    assert len(mid) == 10
    scores = [h["score"] for h in mid]
    assert scores == sorted(scores, reverse=True) and 0.0 <= scores[-1] <= scores[0] <= 1.0


def test_rrf_by_hand(anon, coll, embed):
    doc_emb, q_emb = embed
    dense = {d: float(e @ q_emb) for d, e in doc_emb.items()}
    sparse = _sparse(QUERY_VEC, coll)
    fused: dict = {}
    for ranking in (sorted(sparse, key=lambda d: (-sparse[d], d)), sorted(dense, key=lambda d: (-dense[d], d))):
        for r, d in enumerate(ranking, 1):
            fused[d] = fused.get(d, 0.0) + 1 / (60 + r)
    want = sorted(fused, key=lambda d: -fused[d])[:10]
    hits = _search(anon, fusion="rrf")
    assert [h["id"] for h in hits] == want
    assert [h["score"] for h in hits] == pytest.approx([fused[d] for d in want])


def test_hybrid_with_a_filter_and_a_given_embedding(anon, coll, embed):
    doc_emb, q_emb = embed
    body = {"vector_ids": QUERY_VEC, "dense_vector": q_emb.tolist(), "k": 5, "mode": "hybrid", "alpha": 1.0,
            "filter": {"i": {"gte": 20}}}
    r = anon.post("/v1/collections/h/search", json=body)
    assert r.status_code == 200, r.text
    hits = r.json()["hits"]
    dense = {d: float(doc_emb[d] @ q_emb) for d, doc in coll.items() if doc["metadata"]["i"] >= 20}
    assert [h["id"] for h in hits] == sorted(dense, key=lambda d: (-dense[d], d))[:5]


def test_embeddings_survive_restart(server, anon, coll):
    before = _search(anon, alpha=0.5)
    server.stop()
    server.start()
    with server.client(None) as c:
        r = c.post("/v1/collections/h/search", json={"vector_ids": QUERY_VEC, "text": QUERY_TEXT, "k": 10,
                                                     "mode": "hybrid", "alpha": 0.5})
        assert r.status_code == 200, r.text
        after = r.json()["hits"]
    assert [h["id"] for h in after] == [h["id"] for h in before]
    assert [h["score"] for h in after] == pytest.approx([h["score"] for h in before], abs=1e-6)


@pytest.mark.parametrize("path, body, fragment", [
    ("h/documents", {"documents": [{"id": "x", "vector_ids": {"1": 1.0}}]}, "give text (encoded by its dense model)"),
    ("h/documents", {"documents": [{"id": "x", "vector_ids": {"1": 1.0}, "dense_vector": [0.1, 0.2]}]},
     "dense_vector has 2 values"),
    ("h/search", {"vector_ids": {"1": 1.0}, "mode": "hybrid"}, "needs text or dense_vector"),
    ("h/search", {"vector_ids": {"1": 1.0}, "mode": "hybrid", "dense_vector": [1.0]}, "dense_vector has 1 values"),
    ("h/search", {"vector_ids": {"1": 1.0}, "dense_vector": [1.0] * 384}, "dense_vector needs mode=hybrid"),
    ("h/search", {"vector_ids": {"1": 1.0}, "mode": "hybrid", "text": "a", "alpha": 2}, "less than or equal to 1"),
    ("plain/search", {"vector_ids": {"1": 1.0}, "mode": "hybrid", "text": "a"}, "has no dense_model"),
    ("plain/documents", {"documents": [{"id": "x", "vector_ids": {"1": 1.0}, "dense_vector": [1.0]}]},
     "has no dense model"),
])
def test_hybrid_errors_are_422(client, coll, path, body, fragment):
    client.post("/v1/collections", json={"name": "plain", "model": None, "dim": DIM})
    r = client.post(f"/v1/collections/{path}", json=body)
    assert r.status_code == 422, r.text
    assert fragment in r.text
    assert client.get("/v1/collections/h/documents/x").status_code == 404
