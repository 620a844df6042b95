"""Recall@10 at equal search settings: pyseismic-lsr against lsr's blocks with and without the k-means step.

Builds the peer and lsr at ``refine`` 1 (the default) and 0 on the same vectors (2 threads, the benchmark's
build parameters), then reads Recall@10 against the exact top 10 at a few (query_cut, heap_factor) points.
Recall only, no timing: it shows how much of lsr's recall gap at equal settings comes from the k-means
step (which scores fewer documents per setting, see docs/results/index-latency-2core-real50k.md).

    python benchmarks/refine_recall.py --data real --n-docs 50000 --n-queries 1000
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import index as bench  # noqa: E402  (benchmarks/index.py: data sets, the peer wrapper, exact truth)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", choices=sorted(bench.DATA_NAMES), default="real")
    ap.add_argument("--vectors", type=Path, default=Path(".cache/bench/real"))
    ap.add_argument("--n-docs", type=int, default=50_000)
    ap.add_argument("--n-queries", type=int, default=1_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--points", default="3:1.0,5:0.9,5:0.8,8:0.8", metavar="QC:HF,...")
    args = ap.parse_args(argv)
    args.cache = None  # load_data's option to keep generated data; not used here

    from lsr.index import SeismicIndex

    docs, queries, _ = bench.load_data(args)
    truth, _ = bench.exact_truth(docs, queries, 10)
    points = [(int(a), float(b)) for a, b in (p.split(":") for p in args.points.split(","))]
    peer = bench.Peer(docs, 2)
    peer.prepare(queries)
    rows = {"pyseismic-lsr": [bench.recall(peer.latency(10, qc, hf)[1], truth) for qc, hf in points]}
    del peer
    for refine in (1, 0):
        ix = SeismicIndex.build(docs, threads=2, refine=refine, **bench.BUILD)
        rows[f"lsr, refine={refine}"] = [bench.recall(bench.lsr_latency(ix, queries, 10, qc, hf)[1], truth)
                                         for qc, hf in points]
        del ix
    print(f"{args.data}, {len(docs):,} documents, {len(queries):,} queries: Recall@10 at equal settings\n")
    print("| index | " + " | ".join(f"qc {qc}, hf {hf}" for qc, hf in points) + " |")
    print("|---|" + "---:|" * len(points))
    for name, r in rows.items():
        print(f"| {name} | " + " | ".join(f"{x:.4f}" for x in r) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
