"""``lsr serve --demo`` (``lsr demo``): the bundled SciFact copy, indexed on first start, then served.

The corpus is ``tests/data/beir/scifact/corpus.jsonl.gz`` (CC BY-NC 2.0) and the model the shipped
inference-free encoder (``models/inference-free-splade-tiny-scifact-nfcorpus``): documents are
encoded once with a progress bar into a data folder of its own (``./lsr-demo``); queries need no model
call. A later start finds the collection complete and reuses it. Once ``/ready`` says ready the
command prints the search page's address and a ``curl`` line that returns hits.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import shlex
import socket
import sys
import time
from pathlib import Path
from typing import Any

from lsr.index.corpus import Doc, read_corpus

log = logging.getLogger(__name__)

#: A source checkout holds the demo's corpus and model beside the ``service/`` folder.
_ROOT = Path(__file__).resolve().parent.parent
DEMO_CORPUS = _ROOT / "tests" / "data" / "beir" / "scifact" / "corpus.jsonl.gz"
DEMO_MODEL = _ROOT / "models" / "inference-free-splade-tiny-scifact-nfcorpus"
DEMO_DATA = "./lsr-demo"
DEMO_COLLECTION = "scifact"
DEMO_LIMIT = 500
DEMO_QUERY = "vitamin D deficiency and the risk of fractures"
LICENCE = "SciFact, CC BY-NC 2.0 (Allen Institute for AI): non-commercial research use"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The ``--demo`` options of ``lsr serve``."""
    g = p.add_argument_group("demo (lsr serve --demo, or lsr demo)")
    g.add_argument("--demo", action="store_true",
                   help=f"serve the bundled SciFact sample: indexed into --data (default {DEMO_DATA}) on first "
                        f"start with the shipped inference-free model, reused after; prints a curl line and the "
                        f"search page's address")
    g.add_argument("--demo-corpus", default=str(DEMO_CORPUS), help="corpus of the demo collection")
    g.add_argument("--demo-limit", type=int, default=DEMO_LIMIT,
                   help="index the first N documents (0: all 5,183 of SciFact; about 40 documents/s on 2 cores)")
    g.add_argument("--demo-collection", default=DEMO_COLLECTION, help="name of the demo collection")


def demo_defaults(p: argparse.ArgumentParser) -> None:
    """With ``--demo``, --data and --model default to the demo's folder and model (given flags still win)."""
    p.set_defaults(data=DEMO_DATA, model=str(DEMO_MODEL))


def demo_documents(corpus: str | Path, limit: int) -> list[Doc]:
    """The first ``limit`` documents of ``corpus`` (all of them for 0)."""
    if limit < 0:
        raise ValueError(f"--demo-limit must be 0 (all) or a positive number of documents, got {limit}")
    if not Path(corpus).exists():
        raise FileNotFoundError(f"demo corpus {corpus} not found (it ships with a source checkout of lsr; pass "
                                "--demo-corpus FILE)")
    return list(read_corpus(corpus, limit or None))


def prepare(data_dir: Path, collection: str, model: str, docs: list[Doc]) -> dict[str, Any]:
    """Make ``collection`` hold ``docs`` (encoded with ``model``): nothing to do when it already does.

    Returns ``{"documents": n, "indexed": m, "seconds": s}`` where ``m`` is how many were encoded now
    (0 on a later start). An interrupted first start leaves some documents in; the next start adds the
    rest.
    """
    from .collection import CollectionStore, MergePolicy
    from .ingest import ingest

    t0 = time.perf_counter()
    store = CollectionStore(data_dir, MergePolicy(min_docs=10**12, idle_s=1e12))
    try:
        store.load_all()
        col = store.collections.get(collection)
        if col is not None and col.config.get("model") != model:
            raise ValueError(f"collection {collection!r} in {data_dir} was built with model "
                             f"{col.config.get('model')!r}, not {model!r}; use another --data")
        missing = docs if col is None else [d for d in docs if col.get(d.id) is None]
    finally:
        store.close()
    if missing:
        log.info("indexing %d documents into %s/%s with %s", len(missing), data_dir, collection, model)
        ingest(missing, collection, data_dir=data_dir, model=model, batch_size=32)
        gc.collect()  # the encoder's garbage goes now, not in the middle of the first query
    return {"documents": len(docs), "indexed": len(missing), "seconds": time.perf_counter() - t0}


def banner(*, host: str, port: int, collection: str, documents: int, key_file: Path | None,
           read_requires_key: bool, started: float, model: str) -> str:
    """What the demo prints once ready: the page, a curl line that returns hits, and how to add documents."""
    shown = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    base = f"http://{shown}:{port}" if ":" not in shown else f"http://[{shown}]:{port}"
    key_arg = f'"$(cat {shlex.quote(str(key_file))})"' if key_file is not None else "YOUR_KEY"
    body = json.dumps({"text": DEMO_QUERY, "k": 3})
    curl = f"curl -s {base}/v1/collections/{collection}/search -H 'content-type: application/json'"
    if read_requires_key:
        curl += f" -H \"x-api-key: {key_arg[1:-1] if key_file is not None else 'YOUR_KEY'}\""
    curl += f" -d {shlex.quote(body)}"
    return "\n".join([
        "",
        f"lsr demo ready in {time.monotonic() - started:.1f} s: {documents:,} documents in collection "
        f"{collection!r} ({LICENCE}), model {Path(model).name}",
        f"  search page:  {base}/",
        f"  try:          {curl}",
        f"  add documents while it runs:  lsr ingest --url {base} --api-key {key_arg} CORPUS.jsonl --collection NAME",
        "",
    ])


def _check_port(host: str, port: int) -> None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise ValueError(f"cannot listen on {host}:{port} ({exc.strerror}); another server there? pass --port") \
                from None


def run_demo(args: argparse.Namespace, prog: str, started: float) -> int:
    """Index the demo collection if need be, then serve it; returns the exit status."""
    from .app import create_app
    from .cli import open_store, settings_from_args
    from .collection import validate_name
    from .encoders import known_model
    from .server import run

    try:
        if args.model is None or not known_model(args.model):
            raise ValueError(f"--model {args.model!r} is not a model folder or known name (the demo needs a model "
                             f"to encode its documents; default {DEMO_MODEL})")
        docs = demo_documents(args.demo_corpus, args.demo_limit)
        validate_name(args.demo_collection)
        _check_port(args.host, args.port)  # before minutes of indexing, not after
        settings = settings_from_args(args)  # after the checks: a refused start leaves no data folder behind
        prep = prepare(settings.data_dir, args.demo_collection, args.model, docs)
        if prep["indexed"]:
            log.info("indexed %d documents in %.1f s", prep["indexed"], prep["seconds"])
        else:
            log.info("reusing collection %s in %s (%d documents)", args.demo_collection, settings.data_dir,
                     prep["documents"])
        store = open_store(settings)
    except (OSError, ValueError) as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 2
    except RuntimeError as exc:
        if "in use" not in str(exc):
            raise
        print(f"{prog}: data folder {args.data} in use (a running server?); stop it or use another --data",
              file=sys.stderr)
        return 2
    app = create_app(settings, store=store)
    key_file = settings.data_dir / "api_key"
    generated = not args.api_keys_file and not os.environ.get("LSR_API_KEYS", "").strip()

    def ready() -> None:
        text = banner(host=args.host, port=args.port, collection=args.demo_collection, documents=prep["documents"],
                      key_file=key_file if generated else None, read_requires_key=settings.read_requires_key,
                      started=started, model=args.model)
        print(text, flush=True)

    app.state.service.on_ready.append(ready)
    run(app, host=args.host, port=args.port, limits=settings.limits, log_level=args.log_level)
    return 0
