"""``lsr-eval``: run systems over a BEIR folder or ir-datasets id, and compare reports.

    lsr-eval run --dataset ../shared/data/beir/scifact --split test \\
        --system bm25 --system splade:splade-tiny --out report.json
    lsr-eval compare a.json b.json
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from lsr.index.base import MAX_K
from lsr.index.cli import HelpFormatter

from .metrics import DEFAULT_MEASURES

SYSTEM_HELP = (
    "a system: 'bm25' (Pyserini Lucene, k1=0.9 b=0.4), 'splade:MODEL' / 'inference-free:DIR' / "
    "'decoder:DIR' / 'encoder:DIR' (an lsr encoder name or checkpoint folder), or "
    "'vectors:DOCS.npz,queries=Q.npz' (pre-encoded), 'dense:MODEL' (e.g. dense:minilm, exact cosine), or "
    "'hybrid:SPARSE,dense=minilm,alpha=0.5' / 'hybrid:SPARSE,fusion=rrf' (SPARSE: one of the sparse heads "
    "above, e.g. inference-free:DIR); options after commas: name=LABEL, "
    "index=exact|seismic, query_cut=, heap_factor=, threads=, batch_size=, k=, and index build "
    "parameters (n_postings=, centroid_fraction=, summary_energy=, ...). Repeat for several systems."
)


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="lsr-eval", description="Evaluate lsr systems on BEIR datasets.",
                                 formatter_class=HelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="run systems over one dataset and write a report", formatter_class=HelpFormatter)
    r.add_argument("--dataset", required=True, help="a BEIR folder or an ir-datasets id (beir/scifact/test)")
    r.add_argument("--split", default="test", help="qrels split")
    r.add_argument("--system", action="append", required=True, help=SYSTEM_HELP)
    r.add_argument("--measure", action="append", default=None,
                   help=f"an ir-measures string; repeatable (without it: {' '.join(DEFAULT_MEASURES)})")
    r.add_argument("--k", type=int, default=1000,
                   help=f"retrieval depth, 1 to {MAX_K}; a depth beyond the corpus is cut to the corpus size")
    r.add_argument("--out", help="report JSON path (a .md table is written beside it)")
    r.add_argument("--runs-dir", help="folder for TREC run files (without it: <out stem>.runs/ beside --out)")
    r.add_argument("--cache-dir", help="folder that caches encoded document vectors between invocations")
    r.add_argument("--baseline", default="0", help="system index or name the p-values compare against (0: the first)")
    r.add_argument("--test", choices=["t", "wilcoxon"], default="t", help="paired significance test")
    r.add_argument("--max-docs", type=int, help="use a subset: judged documents first, then corpus order")
    r.add_argument("--max-queries", type=int, help="use only the first N judged queries")
    r.add_argument("--latency-queries", type=int, help="time at most N single queries (without it: all)")
    r.add_argument("--no-progress", action="store_true", help="hide progress bars")
    r.add_argument("-v", "--verbose", action="store_true")
    c = sub.add_parser("compare", help="print several reports side by side", formatter_class=HelpFormatter)
    c.add_argument("reports", nargs="+", help="report JSON files from lsr-eval run")
    c.add_argument("--test", choices=["t", "wilcoxon"], default="t", help="paired significance test")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if getattr(args, "verbose", False) else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        if args.cmd == "run":
            return _run(args)
        return _compare(args)
    except (ValueError, FileNotFoundError, RuntimeError) as exc:
        print(f"lsr-eval: error: {exc}", file=sys.stderr)
        return 2


def _check_run(args: argparse.Namespace) -> None:
    """The arguments that need no data, checked before anything loads or starts (the JVM among them)."""
    for flag, value, least in (("--k", args.k, 1), ("--max-docs", args.max_docs, 1),
                               ("--max-queries", args.max_queries, 1), ("--latency-queries", args.latency_queries, 0)):
        if value is not None and value < least:
            raise ValueError(f"{flag} must be >= {least}, got {value}")
    if args.k > MAX_K:
        raise ValueError(f"--k {args.k} exceeds the limit of {MAX_K}")
    if args.out:
        out = Path(args.out)
        if out.is_dir():
            raise ValueError(f"--out {out} is a folder; give a report file such as {out / 'report.json'}")
        if not out.parent.is_dir():
            raise FileNotFoundError(f"--out {out}: no folder {out.parent}")
    for p in (args.runs_dir, args.cache_dir):
        if p and Path(p).exists() and not Path(p).is_dir():
            raise ValueError(f"{p} exists and is not a folder")


def _run(args: argparse.Namespace) -> int:
    from .data import load_dataset
    from .metrics import parse_measures
    from .report import build_report, markdown, save_report
    from .run import parse_system, run_systems

    _check_run(args)
    specs = [parse_system(s) for s in args.system]
    measures = [str(m) for m in parse_measures(args.measure or list(DEFAULT_MEASURES))]
    ds = load_dataset(args.dataset, args.split)
    if args.max_docs or args.max_queries:
        ds = ds.subset(args.max_docs, args.max_queries)
    if ds.missing_docs:
        print(f"lsr-eval: note: {len(ds.missing_docs)} judged documents are not in the corpus", file=sys.stderr)
    out = Path(args.out) if args.out else None
    runs_dir = Path(args.runs_dir) if args.runs_dir else (out.with_suffix("").with_name(out.stem + ".runs") if out else None)
    baseline: int | str = int(args.baseline) if args.baseline.isdigit() else args.baseline
    results = run_systems(
        ds, specs, k=args.k, measures=measures, out_dir=runs_dir, cache_dir=args.cache_dir,
        baseline=baseline, test=args.test, latency_queries=args.latency_queries,
        show_progress=not args.no_progress,
    )
    ok = [r for r in results if not r.skipped]
    base_name = next((r.baseline for r in results if r.baseline), None)
    config = {
        "dataset": args.dataset, "split": args.split, "systems": [s.to_dict() for s in specs],
        "measures": measures, "k": args.k, "baseline_name": base_name, "test": args.test,
        "max_docs": args.max_docs, "max_queries": args.max_queries, "cache_dir": args.cache_dir,
        "runs_dir": str(runs_dir) if runs_dir else None,
    }
    report = build_report(ds, results, config)
    md = markdown(report)
    print(md)
    for r in results:
        if r.skipped:
            print(f"lsr-eval: skipped {r.name}: {r.skipped}", file=sys.stderr)
    if out:
        save_report(out, report)
        out.with_suffix(".md").write_text(md, encoding="utf-8")
        print(f"report: {out}", file=sys.stderr)
    return 0 if ok else 1


def _compare(args: argparse.Namespace) -> int:
    from .report import compare, load_report

    reports = [load_report(p) for p in args.reports]
    names: list[str] = []
    for p in args.reports:
        stem = Path(p).stem
        names.append(stem if stem not in names else f"{stem}#{len(names) + 1}")
    print(compare(reports, names, test=args.test))
    return 0


if __name__ == "__main__":
    sys.exit(main())
