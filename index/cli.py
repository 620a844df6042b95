"""``lsr-index``: build an index from vectors, search it into a TREC run file, describe it.

    lsr-index build docs.jsonl my-index                 # Seismic JSONL or .npz CSR (lsr.save_vectors)
    lsr-index build docs.npz my-index --kind exact
    lsr-index search my-index queries.jsonl --out run.trec --k 10 --query-cut 10 --heap-factor 0.9
    lsr-index info my-index
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import sys
import time
from pathlib import Path
from typing import Callable

from .sparse import SparseBatch, load_vectors

from .base import DEFAULT_SEARCH, MAX_K, BaseIndex, SearchParams, resolve_threads
from .exact import ExactIndex
from .seismic import SeismicIndex, SeismicParams
from .storage import IndexFormatError

__all__ = ["HelpFormatter", "main"]

log = logging.getLogger("lsr.index.cli")


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """``--help`` shows each option's default; a ``None`` or off default says nothing, so it is
    left out (the help text says what happens without the option). Shared by the lsr CLIs."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or action.default is False:
            return action.help
        return super()._get_help_string(action)

    def add_argument(self, action: argparse.Action) -> None:
        # argparse prints no help line, so no default, for an option without help text: give it one
        if (action.help is None and action.option_strings and action.default is not None
                and action.default is not False and action.default is not argparse.SUPPRESS):
            action = copy.copy(action)
            action.help = "(default: %(default)s)"
        super().add_argument(action)


def _positive(name: str, value: int | None) -> None:
    if value is not None and value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")


def _as_flags(check: Callable[[], object]) -> None:
    """Run a library check; its ValueError names the parameter (``query_cut must be ...``): name
    the command-line flag instead (``--query-cut must be ...``)."""
    try:
        check()
    except ValueError as exc:
        name, _, rest = str(exc).partition(" ")
        raise ValueError(f"--{name.replace('_', '-')} {rest}" if name.isidentifier() else str(exc)) from None


def _check_build(args: argparse.Namespace) -> None:
    """Every build argument checked before the vectors load (which can take minutes)."""
    if not args.input.exists():
        raise FileNotFoundError(f"no such vectors file: {args.input}")
    if args.output.exists() and not args.output.is_dir():
        raise FileExistsError(f"{args.output} exists and is not a folder")
    if args.threads is not None:
        _as_flags(lambda: resolve_threads(args.threads))
    if args.kind == "seismic":
        params = SeismicParams(args.n_postings, args.pruning, args.max_fraction, args.centroid_fraction,
                               args.min_cluster_size, args.summary_energy, args.doc_cut, args.nknn, seed=args.seed)
        _as_flags(params.check)


def _build(args: argparse.Namespace) -> None:
    _check_build(args)
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


def _read_queries(path: Path, index: BaseIndex) -> tuple[SparseBatch, list[str]]:
    """Queries as the index's vocabulary sees them: JSONL tokens map through the index's vocab
    (token ids as strings when it has none; unknown tokens are dropped, they cannot match);
    .npz rows must have the index's dim."""
    if path.name.endswith((".jsonl", ".jsonl.gz")):
        vocab = index.vocab if index.vocab is not None else [str(i) for i in range(index.dim)]
        return SparseBatch.from_jsonl(path, vocab=vocab, dim=index.dim, drop_unknown=True)
    batch, ids = load_vectors(path)
    batch.check_dim(index.dim, "queries")
    return batch, ids if ids is not None else [str(i) for i in range(len(batch))]


def _check_search(args: argparse.Namespace) -> None:
    """Every search argument checked before the index loads."""
    _positive("--k", args.k)
    if args.k > MAX_K:
        raise ValueError(f"--k {args.k} exceeds the limit of {MAX_K}")
    _positive("--batch-size", args.batch_size)
    if args.threads is not None:
        _as_flags(lambda: resolve_threads(args.threads))
    _as_flags(lambda: SearchParams.of(query_cut=args.query_cut, heap_factor=args.heap_factor, n_knn=args.n_knn))
    for what, path in (("index folder", args.index), ("queries file", args.queries)):
        if not path.exists():
            raise FileNotFoundError(f"no such {what}: {path}")
    if not args.out.parent.is_dir():
        raise FileNotFoundError(f"--out {args.out}: no folder {args.out.parent}")


def _search(args: argparse.Namespace) -> None:
    from . import load_index

    _check_search(args)
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


def _info(args: argparse.Namespace) -> None:
    from . import load_index

    index = load_index(args.index, mmap=True, verify=not args.no_verify)
    st = index.stats()
    if args.json:
        print(json.dumps(st, indent=2, default=_json_default))
        return
    print(f"{args.index}: {st['kind']} index")
    for key in ("docs", "rows", "deleted", "unindexed", "dim", "nnz", "postings", "blocks", "summary_entries", "knn"):
        if key in st:
            print(f"  {key:16s} {st[key]:,}")
    print(f"  {'memory':16s} {st['bytes_total'] / 1e6:,.1f} MB ({st['bytes_per_component']:.2f} bytes per component)")
    if "params" in st and st["params"]:
        print("  params           " + ", ".join(f"{k}={v}" for k, v in st["params"].items()))


def _json_default(x: object) -> object:
    item = getattr(x, "item", None)  # numpy scalars
    return item() if callable(item) else str(x)


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="lsr-index", description="Build, search and inspect lsr indexes.",
                                 formatter_class=HelpFormatter)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-q", "--quiet", action="store_true", help="no progress bars or info logs")
    sub = ap.add_subparsers(dest="cmd", required=True)

    b = sub.add_parser("build", parents=[common], help="index vectors (.jsonl Seismic format or .npz CSR)",
                       formatter_class=HelpFormatter)
    b.add_argument("input", type=Path)
    b.add_argument("output", type=Path, help="index folder to write")
    b.add_argument("--kind", choices=["seismic", "exact"], default="seismic", help="index type")
    b.add_argument("--n-postings", type=int, default=3500, help="average postings kept per term")
    b.add_argument("--pruning", choices=["global", "fixed"], default="global",
                   help="global: one weight threshold over all lists; fixed: the top n per term")
    b.add_argument("--max-fraction", type=float, default=1.5,
                   help="global pruning: a list keeps at most n_postings x this")
    b.add_argument("--centroid-fraction", type=float, default=0.1, help="blocks per list = fraction x list length")
    b.add_argument("--min-cluster-size", type=int, default=2, help="smaller blocks merge into the nearest large one")
    b.add_argument("--summary-energy", type=float, default=0.4, help="share of a block's mass its summary keeps")
    b.add_argument("--doc-cut", type=int, default=15, help="clustering compares each document's top entries")
    b.add_argument("--nknn", type=int, default=0, help="neighbours per document for kNN refinement (0: none)")
    b.add_argument("--seed", type=int, default=42, help="clustering seed")
    b.add_argument("--threads", type=int, default=None, help="build threads (without it: all cores)")
    b.set_defaults(func=_build)

    s = sub.add_parser("search", parents=[common], help="search a queries file into a TREC run file",
                       formatter_class=HelpFormatter)
    s.add_argument("index", type=Path)
    s.add_argument("queries", type=Path, help=".jsonl (Seismic format) or .npz")
    s.add_argument("--out", type=Path, required=True, help="TREC run file to write")
    s.add_argument("--k", type=int, default=10, help=f"hits per query, at most {MAX_K}")
    s.add_argument("--query-cut", type=int, default=None,
                   help=f"query terms that open posting lists (without it: {DEFAULT_SEARCH.query_cut})")
    s.add_argument("--heap-factor", type=float, default=None,
                   help=f"block pruning threshold in (0, 1] (without it: {DEFAULT_SEARCH.heap_factor})")
    s.add_argument("--n-knn", type=int, default=None, help="kNN-graph refinement (needs an index built with --nknn)")
    s.add_argument("--threads", type=int, default=None, help="search threads (without it: all cores)")
    s.add_argument("--batch-size", type=int, default=1000, help="queries per search call")
    s.add_argument("--run-name", default="lsr", help="the run's tag, the last TREC column")
    s.add_argument("--no-verify", action="store_true", help="skip checksum verification on load")
    s.set_defaults(func=_search)

    i = sub.add_parser("info", parents=[common], help="describe an index folder", formatter_class=HelpFormatter)
    i.add_argument("index", type=Path)
    i.add_argument("--json", action="store_true", help="print the stats as JSON")
    i.add_argument("--no-verify", action="store_true", help="skip checksum verification on load")
    i.set_defaults(func=_info)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    func: Callable[[argparse.Namespace], None] = args.func
    try:
        func(args)
    except (ValueError, KeyError, IndexFormatError) as exc:
        print(f"lsr-index: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a folder that cannot be written, a file that cannot be read
        msg = f"{exc.strerror}: {exc.filename}" if exc.strerror and exc.filename else str(exc)
        print(f"lsr-index: error: {msg}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
