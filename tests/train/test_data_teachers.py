"""Training data (BEIR loading, BM25 negatives, the seeded stream) and the teachers (BM25 by hand,
normalisation, weighted ensemble, on-disk cache) on small real data and hand-checked toys."""

import math
import os
from pathlib import Path

import numpy as np
import pytest

from lsr.data import TrainingSet, load_beir, load_triples, mine_bm25
from lsr.index.corpus import read_qrels
from lsr.teachers import BM25, Ensemble, normalize, regex_tokenizer

ROOT = Path(__file__).resolve().parents[2]
DATA = Path(os.environ.get("LSR_DATA", ROOT.parent / "shared" / "data"))
needs_data = pytest.mark.skipif(not (DATA / "beir" / "scifact").exists(), reason="needs ../shared/data")


def test_bm25_by_hand():
    docs = ["a cat", "a dog a dog", "cat cat cat"]
    bm = BM25(docs, ["x", "y", "z"], tokenizer=regex_tokenizer(97), k1=0.9, b=0.4)
    n, avg = 3, (2 + 4 + 3) / 3

    def term(tf, dl, df):
        idf = math.log(1 + (n - df + 0.5) / (df + 0.5))
        return idf * tf * 1.9 / (tf + 0.9 * (1 - 0.4 + 0.4 * dl / avg))

    got = bm.score_pairs(["cat"], [["x", "y", "z"]])[0]
    assert got == pytest.approx([term(1, 2, 2), 0.0, term(3, 3, 2)], rel=1e-5)
    ids, scores = bm.search(["dog"], k=3)
    assert ids[0][0] == "y" and ids[0][1] is None and scores[0][1] == -np.inf


def test_normalize_by_hand():
    s = np.array([1.0, 3.0, 2.0])
    assert normalize(s, "minmax").tolist() == [0.0, 1.0, 0.5]
    z = normalize(s, "zscore")
    assert z == pytest.approx((s - 2) / np.std(s))
    assert normalize(np.array([2.0, 2.0]), "minmax").tolist() == [0.0, 0.0]
    with pytest.raises(ValueError):
        normalize(s, "bogus")


class _Fixed:
    def __init__(self, name, table):
        self.name, self.table, self.calls = name, table, 0

    def fingerprint(self):
        return {"kind": self.name}

    def score(self, queries, corpus, candidates):
        self.calls += 1
        return {q: np.asarray([self.table[(q, d)] for d in c], np.float32) for q, c in candidates.items()}


def test_ensemble_combines_and_caches(tmp_path):
    queries, corpus = {"q": "query"}, {"a": "doc a", "b": "doc b", "c": "doc c"}
    cands = {"q": ["a", "b", "c"]}
    dense = _Fixed("dense", {("q", "a"): 0.9, ("q", "b"): 0.1, ("q", "c"): 0.5})
    lex = _Fixed("bm25", {("q", "a"): 10.0, ("q", "b"): 30.0, ("q", "c"): 20.0})
    ens = Ensemble([dense, lex], [0.75, 0.25], normalization="minmax", scale=2.0, cache_dir=tmp_path)
    out = ens(queries, corpus, cands)["q"]
    # dense minmax [1, 0, .5], bm25 minmax [0, 1, .5]
    assert out["a"] == pytest.approx(2 * 0.75)
    assert out["b"] == pytest.approx(2 * 0.25)
    assert out["c"] == pytest.approx(2 * 0.5)
    assert len(list(tmp_path.glob("teacher-scores-*.npz"))) == 2
    # a second ensemble (another weighting, one shared teacher) reads the cache
    ens2 = Ensemble([dense], [1.0], cache_dir=tmp_path)
    assert ens2(queries, corpus, cands)["q"]["a"] == pytest.approx(1.0)
    assert dense.calls == 1 and lex.calls == 1
    # different candidate texts -> a different key, so a rescore
    ens2(queries, {**corpus, "a": "changed"}, cands)
    assert dense.calls == 2


def test_training_set_is_deterministic_and_resumable():
    queries = {f"q{i}": f"query {i}" for i in range(10)}
    corpus = {f"d{i}": f"doc {i}" for i in range(30)}
    pos = {f"q{i}": [f"d{i}"] for i in range(10)}
    neg = {f"q{i}": [f"d{j}" for j in range(10, 30)] for i in range(10)}
    ts = TrainingSet(queries, corpus, pos, neg, n_negatives=3, seed=5)
    stream = ts.batches(4)
    first = [next(stream) for _ in range(5)]  # 2 batches per epoch of 10 (remainder dropped)
    assert [(e, o) for e, o, _ in first] == [(0, 4), (0, 8), (1, 4), (1, 8), (2, 4)]
    again = TrainingSet(queries, corpus, pos, neg, n_negatives=3, seed=5).batches(4, epoch=1, offset=4)
    e, o, b = next(again)
    assert [x.doc_ids for x in b] == [x.doc_ids for x in first[3][2]]
    for _, _, batch in first:
        for ex in batch:
            assert ex.doc_ids[0] in pos[ex.qid] and len(ex.doc_ids) == 4
            assert not set(ex.doc_ids[1:]) & set(pos[ex.qid])
    other = TrainingSet(queries, corpus, pos, neg, n_negatives=3, seed=6).batches(4)
    assert [x.qid for x in next(other)[2]] != [x.qid for x in first[0][2]]


def test_triples(tmp_path):
    p = tmp_path / "triples.tsv"
    p.write_text("what is a cat\ta cat is an animal\ta dog barks\nwhat is a cat\ta cat is an animal\tthe sky\n")
    data, negs = load_triples(p)
    (qid,) = data.queries
    assert data.queries[qid] == "what is a cat"
    assert [data.corpus[d] for d in data.positives()[qid]] == ["a cat is an animal"]
    assert [data.corpus[d] for d in negs[qid]] == ["a dog barks", "the sky"]


@needs_data
def test_beir_scifact_and_bm25_negatives_exclude_positives():
    data = load_beir(DATA / "beir" / "scifact", "train")
    assert len(data.corpus) == 5183 and len(data.queries) == 1109
    qrels = read_qrels(DATA / "beir" / "scifact" / "qrels" / "train.tsv")
    assert sum(len(v) for v in qrels.values()) == 919
    pos = dict(list(data.positives().items())[:20])
    corpus = {d: data.corpus[d] for d in list(data.corpus)[:400]} | {d: data.corpus[d] for p in pos.values() for d in p}
    negs = mine_bm25(data.queries, corpus, pos, depth=10, tokenizer=regex_tokenizer())
    assert set(negs) == set(pos)
    for q, ns in negs.items():
        assert len(ns) == 10 and not set(ns) & set(pos[q])


def test_real_dense_and_sparse_teachers_rank_the_relevant_document_first():
    from lsr.teachers import DenseTeacher, SparseTeacher

    queries = {"q": "vitamin D deficiency and bone fractures"}
    corpus = {
        "rel": "Low vitamin D levels raise the risk of bone fractures in older adults.",
        "off1": "The stock market fell sharply on Tuesday after the earnings report.",
        "off2": "A recipe for chocolate cake with strawberries.",
    }
    cands = {"q": ["off1", "rel", "off2"]}
    for teacher in (DenseTeacher("minilm", device="cpu"), SparseTeacher("splade-tiny", device="cpu")):
        scores = teacher.score(queries, corpus, cands)["q"]
        assert scores.shape == (3,) and int(np.argmax(scores)) == 1, teacher.name
