"""An `lsr export` searched by the engines it targets gives lsr's results: a Lucene impact index
built by Pyserini from the Anserini export, and a Qdrant local-mode collection loaded from the Qdrant
export, on a SciFact test slice with the shipped inference-free model's vectors.

nDCG@10 within 0.005 of lsr's exact search; beyond that, Qdrant's scores are lsr's (float32), and
Lucene's scores are exactly the dot products of the quantised vectors. The full SciFact test
figures come from ``python benchmarks/export_parity.py``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "eval"))
from eval_data_paths import SCIFACT, make_beir_subset  # noqa: E402

import export_engines as E  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
MODEL = ROOT / "models" / "inference-free-splade-tiny-scifact-nfcorpus"
LSR = [sys.executable, "-m", "lsr.cli.main"]
SCALE = 100.0
N_QUERIES, N_EXTRA_DOCS = 40, 80


def _cached_rows(doc_ids: list[str]):
    """Rows of a full-corpus cache written by benchmarks/export_parity.py, when one is present."""
    from lsr.index.sparse import load_vectors

    for f in sorted((ROOT / ".cache" / "export").glob(f"scifact-{MODEL.name}-*-5183/docs.npz")):
        batch, ids = load_vectors(f)
        pos = {d: i for i, d in enumerate(ids or [])}
        if all(d in pos for d in doc_ids):
            return batch[np.array([pos[d] for d in doc_ids], np.int64)]
    return None


@pytest.fixture(scope="module")
def parity(tmp_path_factory):
    from lsr.eval import bm25

    ok, why = bm25.pyserini_available()
    if not ok:
        pytest.skip(why)
    pytest.importorskip("qdrant_client")
    if not SCIFACT.exists():
        pytest.skip(f"SciFact not found at {SCIFACT}")
    from lsr.eval.data import load_beir
    from lsr.index.sparse import save_vectors
    from lsr.models import SparseEncoder

    work = tmp_path_factory.mktemp("export_parity")
    ds = load_beir(make_beir_subset(SCIFACT, work / "beir", N_QUERIES, N_EXTRA_DOCS), "test")
    enc = SparseEncoder.load(str(MODEL))
    docs = _cached_rows(ds.doc_ids)
    if docs is None:
        docs = enc.encode_documents(ds.doc_texts(), batch_size=32)
    qids = list(ds.queries)
    queries = enc.encode_queries([ds.queries[q] for q in qids])
    save_vectors(work / "docs.npz", docs, ds.doc_ids)
    r = subprocess.run([*LSR, "ingest", str(work / "beir" / "corpus.jsonl"), "-c", "sf", "--data", str(work / "data"),
                        "--model", str(MODEL), "--vectors", str(work / "docs.npz")],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    (work / "anserini").mkdir()
    for fmt, out in (("anserini", work / "anserini" / "docs.jsonl"), ("qdrant", work / "qdrant.jsonl")):
        r = subprocess.run([*LSR, "export", "sf", "--data", str(work / "data"), "--format", fmt, "--out", str(out),
                            "--scale", str(SCALE), "--no-progress"], capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)["documents"] == len(ds.doc_ids)
    E.pyserini_index(work / "anserini" / "docs.jsonl", work / "lucene")
    from lsr.service.export import lucene_tokens

    tokens = lucene_tokens(list(docs.vocab))
    runs = {
        "lsr": E.lsr_exact(docs, ds.doc_ids, queries, qids),
        "lucene": E.pyserini_search(work / "lucene", queries, qids, tokens, SCALE),
        "qdrant": E.qdrant_search(work / "qdrant.jsonl", queries, qids)[0],
    }
    return {"ds": ds, "docs": docs, "queries": queries, "qids": qids, "runs": runs}


def test_ndcg_parity(parity):
    from lsr.eval.metrics import evaluate

    nd = {name: evaluate(run, parity["ds"].qrels, ["nDCG@10"]).aggregate["nDCG@10"]
          for name, run in parity["runs"].items()}
    assert nd["lsr"] > 0.5, nd  # the shipped model on its own slice: a real ranking, not noise
    assert abs(nd["lucene"] - nd["lsr"]) <= 0.005, nd
    assert abs(nd["qdrant"] - nd["lsr"]) <= 0.005, nd


def test_qdrant_scores_are_lsr_scores(parity):
    lsr, qd = parity["runs"]["lsr"], parity["runs"]["qdrant"]
    for q in parity["qids"]:
        a = sorted(lsr[q].values(), reverse=True)
        b = sorted(qd[q].values(), reverse=True)
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-5)
        for d, s in qd[q].items():
            if d in lsr[q]:
                assert s == pytest.approx(lsr[q][d], rel=1e-5, abs=1e-5)


def test_lucene_scores_are_quantised_dot_products(parity):
    from lsr.index import ExactIndex
    from lsr.index.sparse import SparseBatch

    def quantised(b: SparseBatch) -> SparseBatch:
        return SparseBatch(b.indptr, b.indices, np.rint(b.values.astype(np.float64) * SCALE).astype(np.float32), b.dim)

    ds, qids = parity["ds"], parity["qids"]
    hits = ExactIndex.build(quantised(parity["docs"]), ids=list(ds.doc_ids)).search(quantised(parity["queries"]), k=10)
    lucene = parity["runs"]["lucene"]
    for i, q in enumerate(qids):
        want = sorted((float(s) for s, r in zip(hits.scores[i], hits.rows[i]) if r >= 0), reverse=True)
        assert sorted(lucene[q].values(), reverse=True) == pytest.approx(want, abs=1e-3)
        exact = dict(zip(hits.ids[i], hits.scores[i]))
        for d, s in lucene[q].items():
            if d in exact:
                assert s == pytest.approx(float(exact[d]), abs=1e-3)
