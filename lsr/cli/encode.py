"""``lsr-encode``: encode a BEIR corpus or queries file (JSONL, optionally gzipped) into sparse vectors.

    lsr-encode --model splade-tiny --input corpus.jsonl.gz --out vectors.npz
    lsr-encode --model splade-tiny --input queries.jsonl --out queries.npz --queries

The output (``.npz`` or Seismic ``.jsonl``) holds the ids and loads with ``lsr.load_vectors``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

from lsr.index.cli import HelpFormatter
from lsr.index.corpus import read_corpus, read_queries

__all__ = ["main"]

logger = logging.getLogger("lsr.encode")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lsr-encode", description=__doc__.split("\n\n")[0],
                                formatter_class=HelpFormatter)
    p.add_argument("--model", required=True, help="short name (splade-tiny, smollm2-135m) or a model folder")
    p.add_argument("--input", required=True, help="BEIR corpus.jsonl[.gz] or queries.jsonl")
    p.add_argument("--out", required=True, help="output vectors: .npz or .jsonl")
    p.add_argument("--queries", action="store_true", help="encode as queries (without it: documents)")
    p.add_argument("--kind", choices=["splade", "inference-free", "decoder"], default=None,
                   help="override the detected model kind")
    p.add_argument("--batch-size", type=int, default=32, help="texts per forward pass")
    p.add_argument("--max-length", type=int, default=None,
                   help="max tokens per text (without it: the model's max_doc_length / max_query_length)")
    p.add_argument("--top-k", type=int, default=None, help="keep the top-k weights of each vector")
    p.add_argument("--min-weight", type=float, default=None, help="drop weights below this")
    p.add_argument("--limit", type=int, default=None, help="encode only the first N records")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (without it: cuda if available, else cpu)")
    p.add_argument("--cluster", default=None, metavar="ADDRESS",
                   help="encode with Ray Data on a Ray cluster (HOST:PORT, auto, or 'local'): an actor pool with one "
                        "GPU per actor where there are GPUs, else CPU (pip install 'lsr[cluster]')")
    p.add_argument("--actors", type=int, default=None, help="with --cluster: encoder actors (default: one per GPU, "
                                                           "else one per CPU)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def _check_device(device: str) -> str | None:
    """Why ``device`` cannot be used here, or None; checked before the model loads, so a missing
    GPU is one line rather than a traceback from deep inside torch."""
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        return f"--device {device!r} is not a device (expected cpu, cuda, cuda:N or mps)"
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            why = "torch was built without CUDA" if torch.version.cuda is None else "no CUDA GPU is visible"
            return f"--device {device}: CUDA is not available on this machine ({why}); use --device cpu"
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            return f"--device {device}: this machine has {torch.cuda.device_count()} CUDA device(s)"
    if dev.type == "mps" and not torch.backends.mps.is_available():
        return f"--device {device}: MPS is not available on this machine; use --device cpu"
    return None


def _encode_cluster(args: argparse.Namespace, pairs: list[tuple[str, str]], out: Path) -> int:
    """``--cluster``: the same encoding on a Ray Data actor pool (lsr.cluster), rows in input order."""
    from lsr.index.sparse import save_vectors

    if args.actors is not None and args.actors < 1:
        print(f"lsr-encode: --actors must be positive, got {args.actors}", file=sys.stderr)
        return 2
    try:
        from lsr.cluster.cli import encode_to_file

        batch, ids, dt = encode_to_file(pairs, args)
        save_vectors(out, batch, ids)
    except (OSError, ValueError, ModuleNotFoundError) as exc:
        print(f"lsr-encode: {exc}", file=sys.stderr)
        return 2
    n = len(batch)
    logger.info("encoded %d texts through Ray Data in %.1fs (%.1f/s) -> %s", n, dt, n / dt if dt else 0.0, out)
    print(json.dumps({"n": n, "seconds": round(dt, 3), "avg_nnz": round(batch.nnz / max(n, 1), 2), "out": str(out),
                      "cluster": args.cluster}))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    out = Path(args.out)
    if not (out.name.endswith(".npz") or out.name.endswith(".jsonl")):
        print(f"lsr-encode: --out must end in .npz or .jsonl, got {out}", file=sys.stderr)
        return 2
    for name, val in (("--batch-size", args.batch_size), ("--max-length", args.max_length), ("--top-k", args.top_k),
                      ("--limit", args.limit)):
        if val is not None and val <= 0:
            print(f"lsr-encode: {name} must be positive, got {val}", file=sys.stderr)
            return 2
    if args.device is not None:
        problem = _check_device(args.device)
        if problem:
            print(f"lsr-encode: {problem}", file=sys.stderr)
            return 2
    try:
        if args.queries:
            pairs = list(read_queries(args.input).items())[: args.limit]
        else:
            pairs = [(d.id, d.full_text) for d in read_corpus(args.input, args.limit)]
    except (FileNotFoundError, ValueError) as exc:
        print(f"lsr-encode: {exc}", file=sys.stderr)
        return 2
    if not pairs:
        print(f"lsr-encode: {args.input}: no {'queries' if args.queries else 'documents'} to encode", file=sys.stderr)
        return 2
    try:  # before the encoding, not after it
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        print(f"lsr-encode: cannot create the folder of --out {out}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    if args.cluster is not None:
        return _encode_cluster(args, pairs, out)
    ids, texts = [i for i, _ in pairs], [t for _, t in pairs]
    from lsr.models import SparseEncoder
    from lsr.index.sparse import save_vectors

    try:
        enc = SparseEncoder.load(args.model, kind=args.kind, device=args.device)
    except (FileNotFoundError, ValueError, RuntimeError) as exc:
        print(f"lsr-encode: cannot load model {args.model!r}: {exc}", file=sys.stderr)
        return 2
    if args.max_length is not None:
        if args.queries:
            enc.max_query_length = args.max_length
        else:
            enc.max_doc_length = args.max_length
    t0 = time.perf_counter()
    fn = enc.encode_queries if args.queries else enc.encode_documents
    batch = fn(texts, batch_size=args.batch_size, show_progress_bar=not args.no_progress, top_k=args.top_k,
               min_weight=args.min_weight)
    dt = time.perf_counter() - t0
    try:
        save_vectors(out, batch, ids)
    except OSError as exc:
        print(f"lsr-encode: cannot write {out}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    n = len(batch)
    logger.info("encoded %d %s in %.1fs (%.1f/s), avg nnz %.1f -> %s", n, "queries" if args.queries else "documents",
                dt, n / dt if dt else 0.0, batch.nnz / max(n, 1), out)
    print(json.dumps({"n": n, "seconds": round(dt, 3), "avg_nnz": round(batch.nnz / max(n, 1), 2), "out": str(out)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
