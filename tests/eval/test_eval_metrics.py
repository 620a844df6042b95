"""lsr.eval.metrics and efficiency: equal to ir-measures computed directly, hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lsr import SparseBatch
from lsr.eval.data import load_beir
from lsr.eval.efficiency import latency_stats
from lsr.index.stats import document_frequencies, flops
from lsr.eval.metrics import (
    DEFAULT_MEASURES, evaluate, paired_test, parse_measures, read_trec_run, write_trec_run,
)

ir_measures = pytest.importorskip("ir_measures")


def _pseudo_run(qrels, doc_ids, seed=0, depth=100):
    """A deterministic run over real ids: judged docs at random ranks among random others."""
    rng = np.random.default_rng(seed)
    run = {}
    for q, rel in qrels.items():
        cand = list(rel) + list(rng.choice(doc_ids, size=depth, replace=False))
        scores = rng.random(len(cand))
        run[q] = {d: float(s) for d, s in zip(cand, scores)}
    return run


def test_hand_made_ndcg_at_10():
    # Judgments d1:1, d2:2; ranking d3, d2, d1 (trec_eval's linear gain):
    # DCG = 2/log2(3) + 1/log2(4) = 1.261860 + 0.5; IDCG = 2/log2(2) + 1/log2(3) = 2 + 0.630930
    run = {"q1": {"d3": 3.0, "d2": 2.0, "d1": 1.0}, "q2": {"d9": 1.0}}
    qrels = {"q1": {"d1": 1, "d2": 2}, "q2": {"d4": 1}}
    ev = evaluate(run, qrels, ["nDCG@10", "RR@10", "R@100"])
    expected_q1 = (2 / math.log2(3) + 1 / math.log2(4)) / (2 + 1 / math.log2(3))
    assert ev.per_query["nDCG@10"]["q1"] == pytest.approx(expected_q1, abs=1e-9)
    assert expected_q1 == pytest.approx(0.669672, abs=1e-6)
    assert ev.per_query["nDCG@10"]["q2"] == 0.0
    assert ev.aggregate["nDCG@10"] == pytest.approx(expected_q1 / 2)
    assert ev.per_query["RR@10"]["q1"] == 0.5 and ev.aggregate["R@100"] == 0.5


def test_missing_query_counts_as_zero():
    ev = evaluate({"q1": {"d1": 1.0}}, {"q1": {"d1": 1}, "q2": {"d2": 1}}, ["nDCG@10"])
    assert ev.per_query["nDCG@10"] == {"q1": 1.0, "q2": 0.0} and ev.aggregate["nDCG@10"] == 0.5


def test_metrics_equal_ir_measures_on_run_file(tmp_path, msmarco_dir):
    ds = load_beir(msmarco_dir, "test")  # graded (1-3) judgments
    run = _pseudo_run(ds.qrels, ds.doc_ids)
    path = tmp_path / "run.trec"
    write_trec_run(path, run)
    qrels_path = tmp_path / "qrels.txt"
    qrels_path.write_text("".join(f"{q} 0 {d} {g}\n" for q, rel in ds.qrels.items() for d, g in rel.items()))
    measures = list(DEFAULT_MEASURES) + ["P@5", "AP"]
    ours = evaluate(read_trec_run(path), ds.qrels, measures)
    qrels_ir = list(ir_measures.read_trec_qrels(str(qrels_path)))
    direct = ir_measures.calc_aggregate(parse_measures(measures), qrels_ir, list(ir_measures.read_trec_run(str(path))))
    for m in parse_measures(measures):
        assert ours.aggregate[str(m)] == pytest.approx(direct[m], abs=1e-9), str(m)
    per_q = {(str(x.measure), x.query_id): x.value for x in ir_measures.iter_calc(
        parse_measures(measures), qrels_ir, list(ir_measures.read_trec_run(str(path))))}
    for (m, q), v in per_q.items():
        assert ours.per_query[m][q] == pytest.approx(v, abs=1e-12)


def test_run_file_roundtrip_and_errors(tmp_path):
    run = {"q1": {"a": 0.5, "b": 1.5}, "q2": {"c": -1.0}}
    p = tmp_path / "r.trec"
    write_trec_run(p, run, tag="x")
    assert p.read_text().split("\n")[0] == "q1 Q0 b 1 1.500000 x"
    assert read_trec_run(p) == run
    p.write_text("q1 Q0 a 1 0.5 x\nq1 Q0 b 2\n")
    with pytest.raises(ValueError, match=r"r\.trec:2: expected 6 columns"):
        read_trec_run(p)


def test_any_measure_string_and_bad_ones():
    assert [str(m) for m in parse_measures("nDCG@10 R@1000 P(rel=2)@5")] == ["nDCG@10", "R@1000", "P(rel=2)@5"]
    with pytest.raises(ValueError, match="unknown measure 'nope@3'"):
        parse_measures(["nope@3"])


def test_paired_tests_match_scipy():
    from scipy import stats

    rng = np.random.default_rng(1)
    a = {f"q{i}": float(v) for i, v in enumerate(rng.random(50))}
    b = {q: v + 0.05 * rng.standard_normal() + 0.02 for q, v in a.items()}
    xs, ys = [a[q] for q in sorted(a)], [b[q] for q in sorted(a)]
    assert paired_test(a, b) == pytest.approx(stats.ttest_rel(xs, ys).pvalue)
    assert paired_test(a, b, "wilcoxon") == pytest.approx(stats.wilcoxon(xs, ys).pvalue)
    assert paired_test(a, dict(a)) == 1.0
    with pytest.raises(ValueError, match="unknown test"):
        paired_test(a, b, "z")


def test_flops_and_latency_by_hand():
    q = SparseBatch.from_dicts([{0: 1.0, 2: 0.5}, {0: 2.0}], dim=4)
    d = SparseBatch.from_dicts([{0: 1.0}, {0: 1.0, 2: 3.0}, {3: 1.0}, {1: 1.0}], dim=4)
    # P(q0)=1, P(q2)=0.5; P(d0)=0.5, P(d2)=0.25 -> 0.5 + 0.125
    assert flops(q, d) == pytest.approx(0.625)
    assert document_frequencies(d)[0].tolist() == [2, 1, 1, 1]
    # FLOPS is the mean number of matching terms over all query-document pairs.
    qd, dd = q.to_dense() > 0, d.to_dense() > 0
    assert flops(q, d) == pytest.approx((qd.astype(float) @ dd.T.astype(float)).mean())
    s = latency_stats([0.001, 0.002, 0.003, 0.004], "x_")
    assert s["x_p50_ms"] == pytest.approx(2.5) and s["x_mean_ms"] == pytest.approx(2.5)
    assert s["x_p99_ms"] == pytest.approx(3.97)


def test_docstring_examples():
    import doctest

    import lsr.eval.efficiency
    import lsr.eval.metrics
    import lsr.eval.run

    for mod in (lsr.eval.metrics, lsr.eval.efficiency, lsr.eval.run):
        failed, _ = doctest.testmod(mod)
        assert failed == 0, mod.__name__
