"""``lsr-index``: build an index from vectors, search it into a TREC run file, describe it.

    lsr-index build docs.jsonl my-index                 # Seismic JSONL or .npz CSR (lsr.save_vectors)
    lsr-index build docs.npz my-index --kind exact
    lsr-index search my-index queries.jsonl --out run.trec --k 10 --query-cut 10 --heap-factor 0.9
    lsr-index info my-index
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path


from .sparse import SparseBatch, load_vectors

from .base import DEFAULT_SEARCH
from .exact import ExactIndex
from .seismic import SeismicIndex
from .storage import IndexFormatError

log = logging.getLogger("lsr.index.cli")


def _build(args) -> None:
    t0 = time.perf_counter()
    docs, ids = load_vectors(args.input)
    log.info("loaded %d documents (dim %d, %.1f nnz/doc) from %s in %.1fs", len(docs), docs.dim,
             docs.nnz / max(len(docs), 1), args.input, time.perf_counter() - t0)
    t0 = time.perf_counter()
    index: ExactIndex | SeismicIndex
    if args.kind == "exact":
        index = ExactIndex.build(docs, ids)
    else:
        index = SeismicIndex.build(
            docs, ids, n_postings=args.n_postings, pruning=args.pruning, max_fraction=args.max_fraction,
            centroid_fraction=args.centroid_fraction, min_cluster_size=args.min_cluster_size,
            summary_energy=args.summary_energy, doc_cut=args.doc_cut, nknn=args.nknn, seed=args.seed,
            threads=args.threads, progress=not args.quiet)
    build_s = time.perf_counter() - t0
    index.save(args.output)
    st = index.stats()
    print(f"built {args.kind} index of {st['docs']} documents in {build_s:.1f}s "
          f"({st['bytes_total'] / 1e6:.1f} MB) -> {args.output}")


def _read_queries(path: Path, index) -> tuple[SparseBatch, list[str]]:
    """Queries as the index's vocabulary sees them: JSONL tokens map through the index's vocab
    (token ids as strings when it has none; unknown tokens are dropped, they cannot match);
    .npz rows must have the index's dim."""
    if path.name.endswith((".jsonl", ".jsonl.gz")):
        vocab = index.vocab if index.vocab is not None else [str(i) for i in range(index.dim)]
        return SparseBatch.from_jsonl(path, vocab=vocab, dim=index.dim, drop_unknown=True)
    batch, ids = load_vectors(path)
    batch.check_dim(index.dim, "queries")
    return batch, ids if ids is not None else [str(i) for i in range(len(batch))]


def _search(args) -> None:
    from . import load_index

    index = load_index(args.index, mmap=True, verify=not args.no_verify)
    queries, qids = _read_queries(args.queries, index)
    k = args.k
    kwargs = {"threads": args.threads, "query_cut": args.query_cut, "heap_factor": args.heap_factor,
              "n_knn": args.n_knn}
    from tqdm.auto import tqdm

    t0 = time.perf_counter()
    n_lines = 0
    with open(args.out, "w", encoding="utf-8") as out, tqdm(total=len(queries), unit="q", disable=args.quiet) as bar:
        for s in range(0, len(queries), args.batch_size):
            batch = queries[s : s + args.batch_size]
            hits = index.search(batch, k, **kwargs)
            for i in range(len(batch)):
                qid = qids[s + i]
                for rank, (doc, score) in enumerate(zip(hits.ids[i], hits.scores[i]), 1):
                    if hits.rows[i, rank - 1] < 0:
                        break
                    out.write(f"{qid} Q0 {doc} {rank} {float(score):.6f} {args.run_name}\n")
                    n_lines += 1
            bar.update(len(batch))
    dt = time.perf_counter() - t0
    print(f"searched {len(queries)} queries in {dt:.2f}s ({len(queries) / max(dt, 1e-9):.0f} q/s), "
          f"{n_lines} lines -> {args.out}")


def _info(args) -> None:
    from . import load_index

    index = load_index(args.index, mmap=True, verify=not args.no_verify)
    st = index.stats()
    if args.json:
        print(json.dumps(st, indent=2, default=lambda x: x.item() if hasattr(x, "item") else str(x)))
        return
    print(f"{args.index}: {st['kind']} index")
    for key in ("docs", "rows", "deleted", "unindexed", "dim", "nnz", "postings", "blocks", "summary_entries", "knn"):
        if key in st:
            print(f"  {key:16s} {st[key]:,}")
    print(f"  {'memory':16s} {st['bytes_total'] / 1e6:,.1f} MB ({st['bytes_per_component']:.2f} bytes per component)")
    if "params" in st and st["params"]:
        print("  params           " + ", ".join(f"{k}={v}" for k, v in st["params"].items()))


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="lsr-index", description="Build, search and inspect lsr indexes.")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-q", "--quiet", action="store_true", help="no progress bars or info logs")
    sub = ap.add_subparsers(dest="cmd", required=True)

    b = sub.add_parser("build", parents=[common], help="index vectors (.jsonl Seismic format or .npz CSR)")
    b.add_argument("input", type=Path)
    b.add_argument("output", type=Path, help="index folder to write")
    b.add_argument("--kind", choices=["seismic", "exact"], default="seismic")
    b.add_argument("--n-postings", type=int, default=3500)
    b.add_argument("--pruning", choices=["global", "fixed"], default="global")
    b.add_argument("--max-fraction", type=float, default=1.5)
    b.add_argument("--centroid-fraction", type=float, default=0.1)
    b.add_argument("--min-cluster-size", type=int, default=2)
    b.add_argument("--summary-energy", type=float, default=0.4)
    b.add_argument("--doc-cut", type=int, default=15)
    b.add_argument("--nknn", type=int, default=0, help="neighbours per document for kNN refinement (0: none)")
    b.add_argument("--seed", type=int, default=42)
    b.add_argument("--threads", type=int, default=None)
    b.set_defaults(func=_build)

    s = sub.add_parser("search", parents=[common], help="search a queries file into a TREC run file")
    s.add_argument("index", type=Path)
    s.add_argument("queries", type=Path, help=".jsonl (Seismic format) or .npz")
    s.add_argument("--out", type=Path, required=True, help="TREC run file to write")
    s.add_argument("--k", type=int, default=10)
    s.add_argument("--query-cut", type=int, default=None, help=f"default {DEFAULT_SEARCH.query_cut}")
    s.add_argument("--heap-factor", type=float, default=None, help=f"default {DEFAULT_SEARCH.heap_factor}")
    s.add_argument("--n-knn", type=int, default=None)
    s.add_argument("--threads", type=int, default=None)
    s.add_argument("--batch-size", type=int, default=1000)
    s.add_argument("--run-name", default="lsr")
    s.add_argument("--no-verify", action="store_true", help="skip checksum verification on load")
    s.set_defaults(func=_search)

    i = sub.add_parser("info", parents=[common], help="describe an index folder")
    i.add_argument("index", type=Path)
    i.add_argument("--json", action="store_true")
    i.add_argument("--no-verify", action="store_true")
    i.set_defaults(func=_info)
    return ap


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        args.func(args)
    except (ValueError, FileNotFoundError, FileExistsError, KeyError, IndexFormatError) as exc:
        print(f"lsr-index: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
