"""lsr.eval.run / report / cli on pre-encoded vectors (a bag of words over the real texts)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import zlib

import numpy as np
import pytest

from lsr import SparseBatch, save_vectors
from lsr.eval.data import load_beir
from lsr.eval.report import build_report, compare, markdown
from lsr.eval.run import parse_system, run_systems
from lsr.index import ExactIndex

DIM = 1 << 14


def bow(texts):
    """log(1 + tf) over hashed lowercase words: a deterministic stand-in for an encoder."""
    rows = []
    for t in texts:
        row: dict[int, float] = {}
        for w in re.findall(r"[a-z0-9]+", t.lower()):
            h = zlib.crc32(w.encode()) % DIM
            row[h] = row.get(h, 0.0) + 1.0
        rows.append({h: float(np.log1p(c)) for h, c in row.items()})
    return SparseBatch.from_dicts(rows, dim=DIM)


@pytest.fixture(scope="module")
def vectors(tmp_path_factory, scifact_small):
    ds = load_beir(scifact_small, "test")
    d = tmp_path_factory.mktemp("vecs")
    docs = bow(ds.doc_texts())
    # store documents in reverse order: the runner must realign them by id
    rev = np.arange(len(ds))[::-1].copy()
    save_vectors(d / "docs.npz", docs[rev], [ds.doc_ids[i] for i in rev])
    save_vectors(d / "queries.npz", bow([ds.queries[q] for q in ds.queries]), list(ds.queries))
    return ds, docs, d


def test_parse_system():
    s = parse_system("splade:splade-tiny,index=seismic,query_cut=10,heap_factor=0.8,n_postings=500,name=fast")
    assert (s.kind, s.model, s.index, s.name) == ("splade", "splade-tiny", "seismic", "fast")
    assert s.search_params == {"query_cut": 10, "heap_factor": 0.8} and s.build_params == {"n_postings": 500}
    assert parse_system("bm25").name == "BM25 (Pyserini)"
    assert parse_system("bm25,k1=1.2,b=0.75").options == {"k1": 1.2, "b": 0.75}
    for bad, msg in [("tfidf", "unknown kind 'tfidf'"), ("splade", "name the model"),
                     ("splade:x,index=faiss", "index must be one of"), ("splade:x,oops", "not key=value"),
                     ("vectors:d.npz", "queries=VECTORS or query_encoder=MODEL")]:
        with pytest.raises(ValueError, match=re.escape(msg)):
            parse_system(bad)


def test_run_systems_vectors_and_indexes(vectors, tmp_path):
    ds, docs, d = vectors
    base = f"vectors:{d / 'docs.npz'},queries={d / 'queries.npz'}"
    systems = [f"{base},name=exact", f"{base},index=seismic,query_cut=50,heap_factor=1.0,name=seismic"]
    res = run_systems(ds, systems, k=100, out_dir=tmp_path / "runs", show_progress=False)
    by = {r.name: r for r in res}
    assert not any(r.skipped for r in res), [r.skipped for r in res]
    ex = by["exact"]
    assert ex.metrics["nDCG@10"] > 0.3  # word overlap finds SciFact's cited abstracts
    # each query's run is the brute-force top-100 of the positive scores
    q = bow([ds.queries[x] for x in ds.queries])
    dense = q.to_dense().astype(np.float64) @ docs.to_dense().astype(np.float64).T
    run = [line.split() for line in (tmp_path / "runs" / "exact.trec").read_text().splitlines()]
    pos = {d: j for j, d in enumerate(ds.doc_ids)}
    for i, qid in enumerate(ds.queries):
        got = [(r[2], float(r[4])) for r in run if r[0] == qid]
        best = np.sort(dense[i][dense[i] > 0])[::-1][:100]
        np.testing.assert_allclose([s for _, s in got], best, rtol=1e-5)
        np.testing.assert_allclose([dense[i, pos[d]] for d, _ in got], best, rtol=1e-5)
    e = ex.efficiency
    for key in ("build_s", "index_bytes", "search_p50_ms", "search_p99_ms", "qps", "doc_nnz_mean",
                "query_nnz_mean", "flops"):
        assert e[key] is not None and e[key] >= 0, key
    assert (tmp_path / "runs" / "exact.trec").exists()
    rep = build_report(ds, res, {"baseline_name": "exact"})
    json.dumps(rep)
    md = markdown(rep)
    assert "| exact |" in md and "nDCG@10" in md and "FLOPS" in md and "against **exact**" in md
    assert rep["versions"]["numpy"] and rep["machine"]["cores"] >= 1


def test_cli_run_and_compare_subprocess(vectors, tmp_path):
    ds, _, d = vectors
    sysarg = f"vectors:{d / 'docs.npz'},queries={d / 'queries.npz'},index=exact"
    out = tmp_path / "a.json"
    cmd = [sys.executable, "-m", "lsr.eval.cli", "run", "--dataset", ds.source,
           "--split", "test", "--system", sysarg, "--system", sysarg + ",name=second", "--measure", "nDCG@10",
           "--measure", "P@5", "--out", str(out), "--no-progress"]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert "| second | " in p.stdout and "P@5" in p.stdout
    rep = json.loads(out.read_text())
    assert [s["name"] for s in rep["systems"]] == ["docs.npz", "second"]
    assert set(rep["systems"][0]["per_query"]["nDCG@10"]) == set(ds.queries)
    assert out.with_suffix(".md").exists() and (tmp_path / "a.runs" / "second.trec").exists()
    p2 = subprocess.run([sys.executable, "-m", "lsr.eval.cli", "compare", str(out), str(out)],
                        capture_output=True, text=True, timeout=60)
    assert p2.returncode == 0, p2.stderr
    assert "| a: docs.npz | " in p2.stdout and "| a#2: second | " in p2.stdout
    assert "(p=1.000)" in p2.stdout  # the same run twice
    bad = subprocess.run([sys.executable, "-m", "lsr.eval.cli", "run", "--dataset", str(tmp_path / "nope"),
                          "--system", sysarg], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "no such dataset folder" in bad.stderr and "nope" in bad.stderr


def test_compare_adds_p_values(vectors):
    ds, _, d = vectors
    base = f"vectors:{d / 'docs.npz'},queries={d / 'queries.npz'},index=exact"
    r1 = build_report(ds, run_systems(ds, [base + ",name=A"], k=50, show_progress=False))
    r2 = build_report(ds, run_systems(ds, [base + ",name=B,k=5"], k=50, show_progress=False))
    table = compare([r1, r2], ["one", "two"])
    assert "one: A" in table and "two: B" in table and "(p=" in table and "against **one: A**" in table


def test_skips_bm25_with_reason_when_pyserini_missing(vectors, monkeypatch):
    from lsr.eval import bm25

    monkeypatch.setattr(bm25, "pyserini_available", lambda: (False, "pyserini is not installed (test)"))
    ds, _, d = vectors
    res = run_systems(ds, ["bm25", f"vectors:{d / 'docs.npz'},queries={d / 'queries.npz'},index=exact"],
                      k=10, show_progress=False)
    assert res[0].skipped == "pyserini is not installed (test)" and not res[1].skipped
    assert res[1].baseline == res[1].name or res[1].significance == {}
    md = markdown(build_report(ds, res))
    assert "skipped: pyserini is not installed (test)" in md


class _BowEncoder:
    """Stands in for lsr.models.SparseEncoder (same two methods) so the encoder path runs without torch."""

    device = "cpu"
    calls = 0

    def encode_documents(self, texts, batch_size=32, show_progress_bar=False):
        _BowEncoder.calls += 1
        return bow(texts)

    def encode_queries(self, texts, batch_size=32, show_progress_bar=False):
        return bow(texts)


def test_encoder_path_shares_and_caches_document_vectors(scifact_small, tmp_path, monkeypatch):
    from lsr.eval.run import Runner

    monkeypatch.setattr(Runner, "encoder", lambda self, kind, model: _BowEncoder())
    ds = load_beir(scifact_small, "test")
    _BowEncoder.calls = 0
    systems = ["splade:fake,index=exact", "splade:fake,index=exact,name=again", "splade:fake,index=exact,query_cut=3"]
    res = run_systems(ds, systems, k=20, cache_dir=tmp_path / "cache", show_progress=False)
    assert _BowEncoder.calls == 1  # three systems, one document encoding
    assert res[2].efficiency.get("index_shared") and not res[0].efficiency.get("index_shared")
    e = res[0].efficiency
    assert e["docs_per_s"] > 0 and e["query_encode_p50_ms"] >= 0 and "doc_vectors_saved" in e
    assert res[1].metrics["nDCG@10"] == pytest.approx(res[0].metrics["nDCG@10"], abs=1e-6)
    (side,) = list((tmp_path / "cache").rglob("*.json"))
    again = run_systems(ds, systems[:1], k=20, cache_dir=tmp_path / "cache", show_progress=False)
    assert _BowEncoder.calls == 1  # the cache served the second invocation
    assert again[0].efficiency["doc_vectors_encoded"]["docs_per_s"] == pytest.approx(e["docs_per_s"])
    assert again[0].metrics == res[0].metrics
    assert "(cpu)" in markdown(build_report(ds, again))


def test_batch_results_are_checked_against_one_query_search(vectors, monkeypatch):
    import lsr.eval.run as runmod

    class LossyBatch(ExactIndex):
        def search(self, queries, k=10, **kw):
            hits = super().search(queries, k, **kw)
            if len(queries) > 1:  # a batch path that loses one query's hits
                hits.ids[1] = -1
                hits.scores[1] = -np.inf
            return hits

    ds, _, d = vectors
    spec = f"vectors:{d / 'docs.npz'},queries={d / 'queries.npz'},index=exact"
    good = run_systems(ds, [spec], k=20, show_progress=False)[0]
    monkeypatch.setattr(runmod, "_index_class", lambda kind: LossyBatch)
    bad = run_systems(ds, [spec], k=20, show_progress=False)[0]
    assert bad.efficiency["batch_mismatch_queries"] == 1
    assert bad.metrics == good.metrics
