"""``lsr-serve`` / ``lsr serve``: start the search service on uvicorn; ``ingest_main`` indexes a JSONL corpus."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from lsr.index.base import MAX_K
from lsr.index.cli import HelpFormatter

from .config import Limits, Settings, resolve_api_keys
from .demo import add_arguments as add_demo_arguments, demo_defaults

if TYPE_CHECKING:
    from .collection import CollectionStore


def _model_arg(value: str) -> str | None:
    return None if value.lower() in ("none", "") else value


def serve_parser(prog: str = "lsr-serve") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description="Serve lsr collections over REST (OpenAPI at /docs).",
                                formatter_class=HelpFormatter)
    p.add_argument("--host", default=os.environ.get("LSR_HOST", "127.0.0.1"))
    p.add_argument("--port", type=int, default=int(os.environ.get("LSR_PORT", "8000")))
    p.add_argument("--data", default=os.environ.get("LSR_DATA", "./lsr-data"), help="data folder (collections)")
    p.add_argument("--model", type=_model_arg, default=os.environ.get("LSR_MODEL", "splade-tiny"),
                   help="default encoder (short name or folder; 'none' for vectors only)")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="search threads")
    p.add_argument("--api-keys-file", default=os.environ.get("LSR_API_KEYS_FILE"),
                   help="file with one API key per line (else $LSR_API_KEYS, comma-separated, else a generated key "
                        "stored in DATA/api_key)")
    p.add_argument("--read-requires-key", action="store_true", help="searches and reads need an API key too")
    p.add_argument("--max-k", type=int, default=Limits.max_k,
                   help=f"largest k a search may ask for (at most {MAX_K}); a larger k is a 422 naming the limit")
    p.add_argument("--max-batch", type=int, default=Limits.max_batch_documents, help="documents per write")
    p.add_argument("--max-queries", type=int, default=Limits.max_batch_queries, help="queries per batch search")
    p.add_argument("--max-text-chars", type=int, default=Limits.max_text_chars)
    p.add_argument("--max-body-mb", type=float, default=Limits.max_body_bytes / 2**20)
    p.add_argument("--merge-min-docs", type=int, default=1000, help="merge the fresh segment at this many docs")
    p.add_argument("--merge-idle", type=float, default=10.0, help="or after this many quiet seconds")
    p.add_argument("--no-preload", action="store_true", help="load encoders on the first text request, not at start")
    g = p.add_argument_group("connections and load (service/README.md, 'Limits')")
    g.add_argument("--max-connections", type=int, default=Limits.max_connections,
                   help="open sockets; a new one past this gets 503 and is closed (the open-file limit is raised "
                        "to fit)")
    g.add_argument("--max-in-flight", type=int, default=Limits.max_in_flight,
                   help="requests being handled; past this 503 + Retry-After (load shedding)")
    g.add_argument("--header-timeout", type=float, default=Limits.header_timeout_s,
                   help="seconds for a request's headers to arrive (slow clients get 408 and are closed)")
    g.add_argument("--body-timeout", type=float, default=Limits.body_timeout_s,
                   help="seconds for a request's body to arrive after its headers")
    g.add_argument("--max-header-kb", type=int, default=Limits.max_header_bytes // 1024,
                   help="request line + headers; past it 431 and close")
    g.add_argument("--keep-alive", type=float, default=Limits.keep_alive_s, help="idle keep-alive seconds")
    g.add_argument("--query-batch", type=int, default=Limits.query_batch_max,
                   help="texts per forward pass when batching model-encoded queries (1: no batching)")
    g.add_argument("--encoder-threads", type=int, default=Limits.encoder_threads,
                   help="torch threads of a model's forward pass (the search threads need the other cores)")
    g.add_argument("--query-batch-wait-ms", type=float, default=Limits.query_batch_wait_ms,
                   help="how long a query batch waits for more queries")
    p.add_argument("--cors-origin", action="append", default=[], metavar="ORIGIN",
                   help="let pages from ORIGIN (e.g. http://localhost:3000) call the API from a browser; repeat for "
                        "more; none by default")
    c = p.add_argument_group("cluster: sharded, replicated collections on Ray (pip install 'lsr[cluster]'; docs/cluster.md)")
    c.add_argument("--cluster", default=None, metavar="ADDRESS",
                   help="serve collections sharded over Ray actors: a Ray address (HOST:PORT, auto) or 'local' (a "
                        "Ray runtime started in this process); --data is then each replica's folder on its node")
    c.add_argument("--shards", type=int, default=2, help="with --cluster: shards per collection (by a hash of the id)")
    c.add_argument("--replicas", type=int, default=2, help="with --cluster: copies of each shard")
    p.add_argument("--log-level", default="info")
    add_demo_arguments(p)
    return p


def settings_from_args(args: argparse.Namespace) -> Settings:
    data = Path(args.data)
    for flag, value in [("--max-connections", args.max_connections), ("--max-in-flight", args.max_in_flight),
                        ("--query-batch", args.query_batch), ("--max-header-kb", args.max_header_kb),
                        ("--encoder-threads", args.encoder_threads)]:
        if value < 1:
            raise ValueError(f"{flag} must be at least 1, got {value}")
    if not 1 <= args.max_k <= MAX_K:
        raise ValueError(f"--max-k must be between 1 and {MAX_K}, got {args.max_k}")
    for flag, value in [("--header-timeout", args.header_timeout), ("--body-timeout", args.body_timeout),
                        ("--keep-alive", args.keep_alive)]:
        if not value > 0:
            raise ValueError(f"{flag} must be positive, got {value}")
    limits = Limits(
        max_k=args.max_k, max_batch_documents=args.max_batch, max_batch_queries=args.max_queries,
        max_text_chars=args.max_text_chars, max_body_bytes=int(args.max_body_mb * 2**20),
        max_connections=args.max_connections, max_in_flight=args.max_in_flight,
        header_timeout_s=args.header_timeout, max_header_bytes=args.max_header_kb * 1024,
        body_timeout_s=args.body_timeout, keep_alive_s=args.keep_alive,
        query_batch_max=args.query_batch, encoder_threads=args.encoder_threads,
        query_batch_wait_ms=max(0.0, args.query_batch_wait_ms),
    )
    return Settings(
        data_dir=data, model=args.model, threads=max(1, args.threads),
        api_keys=resolve_api_keys(args.api_keys_file, data), read_requires_key=args.read_requires_key,
        limits=limits, merge_min_docs=args.merge_min_docs, merge_idle_s=args.merge_idle,
        preload_models=not args.no_preload, cors_origins=list(args.cors_origin),
    )


def _lock_owner(data: Path) -> str:
    try:
        pid = (data / "LOCK").read_text().strip()
    except OSError:
        return "another process"
    return f"PID {pid}" if pid.isdigit() else "another process"


def open_store(settings: Settings) -> CollectionStore:
    """Take the data folder's lock now, so a second server fails at once instead of never getting ready."""
    from .collection import CollectionStore, MergePolicy

    try:
        store = CollectionStore(settings.data_dir, MergePolicy(min_docs=settings.merge_min_docs,
                                                               idle_s=settings.merge_idle_s))
    except RuntimeError as exc:
        if "in use" not in str(exc):
            raise
        raise ValueError(f"data folder {settings.data_dir} in use by {_lock_owner(settings.data_dir)} "
                         "(a running server?); stop it or use another --data") from None
    # The PID is for the message above; the flock the store holds is what excludes.
    (settings.data_dir / "LOCK").write_text(f"{os.getpid()}\n")
    return store


def main(argv: list[str] | None = None, prog: str = "lsr-serve",
         cluster: Callable[[argparse.Namespace, Settings], CollectionStore] | None = None) -> int:
    """``cluster`` opens the store of ``--cluster`` (lsr.cluster, passed in by ``lsr serve``)."""
    started = time.monotonic()
    parser = serve_parser(prog)
    args = parser.parse_args(argv)
    if args.demo:  # the demo's own --data and --model defaults; flags given still win
        demo_defaults(parser)
        args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.demo:
        from .demo import run_demo

        return run_demo(args, prog, started)
    from .app import create_app
    from .encoders import known_model
    from .server import run

    try:
        if args.model is not None and not known_model(args.model):
            raise ValueError(f"--model {args.model!r} is neither a model folder nor a known model name "
                             "(e.g. splade-tiny; 'none' serves vectors only)")
        settings = settings_from_args(args)
        if args.cluster is not None:
            if cluster is None:
                raise ValueError("--cluster is served by `lsr serve --cluster` (pip install 'lsr[cluster]')")
            store = cluster(args, settings)
        else:
            store = open_store(settings)
    except (OSError, ValueError) as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 2
    run(create_app(settings, store=store), host=args.host, port=args.port, limits=settings.limits,
        log_level=args.log_level)
    return 0


def ingest_main(argv: list[str] | None = None, prog: str = "lsr ingest") -> int:
    p = argparse.ArgumentParser(prog=prog, description="Index a JSONL corpus (BEIR or Seismic layout) into a "
                                                       "collection: through a running server with --url, or "
                                                       "straight into a data folder no server is using (--data).",
                                formatter_class=HelpFormatter)
    p.add_argument("corpus", help="corpus.jsonl[.gz]")
    p.add_argument("--collection", "-c", required=True)
    p.add_argument("--data", default=os.environ.get("LSR_DATA", "./lsr-data"))
    p.add_argument("--model", type=_model_arg, default=argparse.SUPPRESS,
                   help="encoder of a new collection (default splade-tiny); 'none' with --dim for vectors only; "
                        "an existing collection keeps its own and refuses another")
    p.add_argument("--dim", type=int, default=None)
    p.add_argument("--vectors", default=None, help="precomputed vectors with ids (.npz or .jsonl) to skip encoding")
    p.add_argument("--limit", type=int, default=None, help="only the first N documents")
    p.add_argument("--batch-size", type=int, default=None, help="documents per batch (default 256; 64 with --url)")
    p.add_argument("--url", default=None, help="a running server (e.g. http://127.0.0.1:8000): post the documents "
                                               "through its API instead of writing --data")
    p.add_argument("--api-key", default=None,  # not the environment's key as a default: --help would print it
                   help="write key for --url (default $LSR_API_KEY; a server that generated its key keeps it in "
                        "DATA/api_key)")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds per request with --url")
    args = p.parse_args(argv)
    if args.limit is not None and args.limit < 1:
        print(f"{prog}: --limit must be a positive number of documents, got {args.limit}", file=sys.stderr)
        return 2
    if args.batch_size is not None and args.batch_size < 1:
        print(f"{prog}: --batch-size must be positive, got {args.batch_size}", file=sys.stderr)
        return 2
    logging.basicConfig(level="INFO", format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.url is not None:
        logging.getLogger("httpx").setLevel(logging.WARNING)  # not a log line per batch: the bar shows progress
        return _ingest_url(args, prog)
    from .ingest import ingest

    try:
        model = {"model": args.model} if "model" in args else {}
        stats = ingest(args.corpus, args.collection, data_dir=args.data, vectors=args.vectors,
                       limit=args.limit, batch_size=args.batch_size or 256, dim=args.dim, **model)
    except (OSError, ValueError, RuntimeError) as exc:
        msg = str(exc)
        if isinstance(exc, RuntimeError) and "in use" in msg:
            msg = f"data folder {args.data} in use by {_lock_owner(Path(args.data))} (a running server?); stop it first"
        print(f"{prog}: {msg}", file=sys.stderr)
        return 2
    print(json.dumps({"collection": args.collection, "documents": stats["documents"], "bytes": stats["bytes"]}))
    return 0


def _ingest_url(args: argparse.Namespace, prog: str) -> int:
    from .ingest import IngestError, ingest_http

    if args.vectors is not None:
        print(f"{prog}: --vectors works on a data folder only; with --url put the vectors in the corpus records "
              "(Seismic JSONL: id, content, vector)", file=sys.stderr)
        return 2
    if not args.url.startswith(("http://", "https://")):
        print(f"{prog}: --url must start with http:// or https://, got {args.url!r}", file=sys.stderr)
        return 2
    try:
        model = {"model": args.model} if "model" in args else {}
        key = args.api_key or os.environ.get("LSR_API_KEY") or None
        out = ingest_http(args.corpus, args.collection, url=args.url, api_key=key, dim=args.dim,
                          limit=args.limit, batch_size=args.batch_size or 64, timeout=args.timeout, **model)
    except (OSError, ValueError, IngestError) as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 2
    print(json.dumps({"collection": args.collection, "sent": out["documents"],
                      "documents": out["collection"].get("documents")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
