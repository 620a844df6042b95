"""Effectiveness metrics through ir-measures, per query and aggregate, and paired significance tests.

Aggregates follow ``trec_eval -c``: every judged query counts, a query the run lacks scores 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

__all__ = [
    "DEFAULT_MEASURES",
    "Evaluation",
    "evaluate",
    "paired_test",
    "parse_measures",
    "read_trec_run",
    "write_trec_run",
]

DEFAULT_MEASURES = ("nDCG@10", "R@100", "R@1000", "RR@10")

Run = Mapping[str, Mapping[str, float]]
Qrels = Mapping[str, Mapping[str, int]]


def parse_measures(measures: Sequence[str] | str | None = None) -> list:
    """ir-measures objects from strings such as ``"nDCG@10"``, ``"R@100"``, ``"P(rel=2)@5"``."""
    import ir_measures

    if measures is None:
        measures = DEFAULT_MEASURES
    if isinstance(measures, str):
        measures = [m for m in measures.replace(",", " ").split() if m]
    out = []
    for m in measures:
        if not isinstance(m, str):
            out.append(m)
            continue
        try:
            out.append(ir_measures.parse_measure(m))
        except (ValueError, NameError, SyntaxError, TypeError, AttributeError) as exc:  # ir_measures' parse errors
            raise ValueError(f"unknown measure {m!r}: {exc}") from None
    return out


@dataclass
class Evaluation:
    """``aggregate[name]`` is the mean over judged queries; ``per_query[name][qid]`` each value."""

    aggregate: dict[str, float]
    per_query: dict[str, dict[str, float]]

    def to_dict(self) -> dict:
        return {"aggregate": self.aggregate, "per_query": self.per_query}


def evaluate(run: Run, qrels: Qrels, measures: Sequence[str] | None = None) -> Evaluation:
    """Compute ``measures`` (default :data:`DEFAULT_MEASURES`) of ``run`` against ``qrels``.

    ``run`` is ``{qid: {doc_id: score}}``. Queries without judgments are ignored; judged queries
    missing from the run get 0 (``trec_eval -c``).

    >>> ev = evaluate({"q1": {"d1": 2.0, "d2": 1.0}}, {"q1": {"d2": 1}}, ["RR@10"])
    >>> ev.aggregate["RR@10"]
    0.5
    """
    import ir_measures

    ms = parse_measures(measures)
    names = [str(m) for m in ms]
    per_query: dict[str, dict[str, float]] = {n: {} for n in names}
    qrels_list = [
        ir_measures.Qrel(str(q), str(d), int(g)) for q, rel in qrels.items() for d, g in rel.items()
    ]
    run_list = [
        ir_measures.ScoredDoc(str(q), str(d), float(s))
        for q, docs in run.items()
        if q in qrels
        for d, s in docs.items()
    ]
    for m in ir_measures.iter_calc(ms, qrels_list, run_list):
        per_query[str(m.measure)][m.query_id] = float(m.value)
    judged = [q for q in qrels]
    for n in names:
        for q in judged:
            per_query[n].setdefault(q, 0.0)
    aggregate = {n: (float(np.mean(list(per_query[n].values()))) if per_query[n] else 0.0) for n in names}
    return Evaluation(aggregate, per_query)


def paired_test(a: Mapping[str, float], b: Mapping[str, float], test: str = "t") -> float:
    """Two-sided p-value of a paired test over the queries ``a`` and ``b`` share.

    ``test="t"`` is the paired t-test (scipy ``ttest_rel``), ``"wilcoxon"`` the signed-rank test.
    Identical score lists give p = 1.
    """
    from scipy import stats

    qs = sorted(set(a) & set(b))
    if len(qs) < 2:
        return float("nan")
    x = np.array([a[q] for q in qs], np.float64)
    y = np.array([b[q] for q in qs], np.float64)
    if np.allclose(x, y):
        return 1.0
    if test in ("t", "ttest", "t-test"):
        p = stats.ttest_rel(x, y).pvalue
    elif test == "wilcoxon":
        p = stats.wilcoxon(x, y).pvalue
    else:
        raise ValueError(f"unknown test {test!r}: expected 't' or 'wilcoxon'")
    return float(p) if not math.isnan(p) else 1.0


# ---------------------------------------------------------------------------------- TREC run files
def write_trec_run(path: str | Path, run: Run, tag: str = "lsr") -> None:
    """Write ``qid Q0 docid rank score tag`` lines, best first within each query."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as fh:
        for q, docs in run.items():
            ranked = sorted(docs.items(), key=lambda kv: (-kv[1], kv[0]))
            for rank, (d, s) in enumerate(ranked, 1):
                fh.write(f"{q} Q0 {d} {rank} {s:.6f} {tag}\n")


def read_trec_run(path: str | Path) -> dict[str, dict[str, float]]:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such run file: {path}")
    run: dict[str, dict[str, float]] = {}
    with open(path, encoding="utf-8", newline="\n") as fh:
        for lineno, line in enumerate(fh, 1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 6:
                raise ValueError(f"{path}:{lineno}: expected 6 columns (qid Q0 docid rank score tag), got {len(parts)}")
            try:
                run.setdefault(parts[0], {})[parts[2]] = float(parts[4])
            except ValueError:
                raise ValueError(f"{path}:{lineno}: score {parts[4]!r} is not a number") from None
    return run
