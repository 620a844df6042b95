"""lsr.eval: BEIR evaluation harness (datasets, runs, ir-measures metrics, efficiency, reports).

>>> from lsr.eval import load_dataset, run_systems, build_report, markdown   # doctest: +SKIP
>>> ds = load_dataset("../shared/data/beir/scifact", split="test")           # or "beir/scifact/test"
>>> results = run_systems(ds, ["bm25", "splade:splade-tiny"], out_dir="runs")
>>> print(markdown(build_report(ds, results)))
"""

from __future__ import annotations

_EXPORTS = {
    "Dataset": "data", "DatasetError": "data", "load_dataset": "data", "load_beir": "data", "load_irds": "data",
    "evaluate": "metrics", "paired_test": "metrics", "parse_measures": "metrics", "DEFAULT_MEASURES": "metrics",
    "read_trec_run": "metrics", "write_trec_run": "metrics",
    "flops": "efficiency",
    "parse_system": "run", "run_systems": "run", "SystemResult": "run",
    "build_report": "report", "save_report": "report", "load_report": "report", "markdown": "report",
    "compare": "report",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    # Lazy: `import lsr.eval` stays cheap; pyserini and torch load only when a system needs them.
    mod = _EXPORTS.get(name)
    if mod is None:
        raise AttributeError(f"module 'lsr.eval' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f"lsr.eval.{mod}"), name)
