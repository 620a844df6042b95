"""Hybrid and dense systems in lsr-eval: spec parsing, the fusion rules, and a run on real SciFact
documents with the real MiniLM and the shipped inference-free model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lsr.eval.data import load_beir
from lsr.eval.run import Runner, parse_system
from lsr.index.fusion import convex, fuse, minmax, rrf

MODEL = str(Path(__file__).resolve().parents[2] / "models" / "inference-free-splade-tiny-scifact-nfcorpus")


def test_parse_hybrid_specs():
    s = parse_system(f"hybrid:inference-free:{MODEL},alpha=0.3,candidates=50,index=seismic,query_cut=5")
    assert (s.kind, s.model, s.index) == ("hybrid", MODEL, "seismic")
    assert s.options["sparse_kind"] == "inference-free" and s.options["alpha"] == 0.3
    assert s.options["dense"] == "minilm" and s.options["candidates"] == 50 and s.search_params == {"query_cut": 5}
    r = parse_system("hybrid:vectors:docs.npz,queries=q.npz,fusion=rrf,dense=/m")
    assert (r.options["sparse_kind"], r.options["docs"], r.options["rrf_k"], r.options["dense"]) == ("vectors", "docs.npz", 60, "/m")
    assert "RRF" in r.name and "alpha=0.3" in s.name
    assert parse_system("dense:minilm").name == "dense minilm"


@pytest.mark.parametrize("spec, words", [
    ("hybrid:x,alpha=1.5", "alpha must be a number in [0, 1]"),
    ("hybrid:x,fusion=max", "fusion must be convex or rrf"),
    ("hybrid:x,fusion=rrf,alpha=0.2", "alpha applies to fusion=convex"),
    ("hybrid:x,candidates=0", "candidates must be an int >= 1"),
    ("hybrid", "name the model"),
    ("dense", "name the model"),
    ("hybrid:vectors:", "name the model"),
])
def test_bad_hybrid_specs(spec, words):
    with pytest.raises(ValueError, match=words.replace("[", r"\[").replace("]", r"\]")):
        parse_system(spec)


def test_fusion_rules_by_hand():
    assert minmax(np.array([2.0, 4.0, 3.0])).tolist() == [0.0, 1.0, 0.5]
    assert minmax(np.array([5.0, 5.0])).tolist() == [0.0, 0.0]
    assert convex(np.array([0.0, 10.0]), np.array([1.0, 0.0]), 0.25).tolist() == [0.25, 0.75]
    assert rrf([["a", "b"], ["b", "c"]], k=60) == pytest.approx({"a": 1 / 61, "b": 1 / 62 + 1 / 61, "c": 1 / 62})
    # a candidate missing from one side is scored exactly on that side (here: sparse 0 for "c")
    out = fuse([("a", 3.0), ("b", 1.0)], [("c", 0.9), ("b", 0.5)], alpha=0.5, k=3,
               sparse_of=lambda ids: [0.0] * len(ids), dense_of=lambda ids: [0.1] * len(ids))
    # sparse a 3, b 1, c 0 -> 1, 1/3, 0; dense a .1, b .5, c .9 -> 0, .5, 1
    # fused: a .5, b (1/3 + .5) / 2, c .5; the tie a-c keeps first appearance
    assert [d for d, _ in out] == ["a", "c", "b"]
    assert [s for _, s in out] == pytest.approx([0.5, 0.5, (1 / 3 + 0.5) / 2])
    with pytest.raises(ValueError, match="alpha"):
        fuse([("a", 1.0)], [], alpha=2.0)


@pytest.fixture(scope="module")
def runner(scifact_small, tmp_path_factory):
    ds = load_beir(scifact_small, "test").subset(n_docs=60, n_queries=8)  # two encoders on 2 CPU cores: keep it small
    return Runner(ds, k=20, latency_queries=2, show_progress=False, out_dir=tmp_path_factory.mktemp("runs"))


def test_dense_and_hybrid_runs(runner, tmp_path):
    """alpha=0 ranks as the sparse system, alpha=1 as the dense one (both sides are scored exactly for
    every candidate); RRF and alpha=0.5 lie in between; every run is a real ranking with nDCG."""
    ds = runner.ds
    sparse = runner.run(parse_system(f"inference-free:{MODEL}"))
    dense = runner.run(parse_system("dense:minilm"))
    h0 = runner.run(parse_system(f"hybrid:inference-free:{MODEL},alpha=0"))
    h1 = runner.run(parse_system(f"hybrid:inference-free:{MODEL},alpha=1"))
    h5 = runner.run(parse_system(f"hybrid:inference-free:{MODEL},alpha=0.5"))
    hr = runner.run(parse_system(f"hybrid:inference-free:{MODEL},fusion=rrf"))
    for res in (sparse, dense, h0, h1, h5, hr):
        assert res.skipped is None and 0.0 < res.metrics["nDCG@10"] <= 1.0, res.name
    assert dense.metrics["nDCG@10"] > 0.3  # MiniLM on SciFact (published ~0.65 on the full corpus)
    assert dense.efficiency["batch_search_s"] >= 0 and h5.efficiency["candidates"] == 20

    # the runs themselves: rebuild each side's ranking from the runner's cached vectors
    d_emb, _ = runner.dense_doc_vectors("minilm")
    q_emb = runner.dense_query_vectors("minilm")
    assert d_emb.shape == (len(ds.doc_ids), 384)
    np.testing.assert_allclose(np.linalg.norm(d_emb, axis=1), 1.0, rtol=1e-5)
    for i, q in enumerate(runner.qids[:5]):
        dense_order = [ds.doc_ids[j] for j in np.argsort(-(d_emb @ q_emb[i]), kind="stable")[:10]]
        assert list(_ranked(_run(h1)[q]))[:10] == dense_order
        assert list(_ranked(_run(h0)[q]))[:10] == list(_ranked(_run(sparse)[q]))[:10]


def _run(res):
    """query -> document ids in the run file's rank order (ranked on the unrounded scores)."""
    out: dict = {}
    for line in Path(res.run_file).read_text().splitlines():
        q, _, d, rank, _, _ = line.split()
        out.setdefault(q, []).append((int(rank), d))
    return {q: [d for _, d in sorted(v)] for q, v in out.items()}


def _ranked(ids):
    return ids
