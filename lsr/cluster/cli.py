"""The ``--cluster`` side of the CLIs: ``lsr serve --cluster`` (the store), ``lsr ingest --cluster``
(Ray Data encoding, each shard's segment built where the shard lives) and ``lsr-encode --cluster``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from lsr.index.cli import HelpFormatter

from .runtime import RayMissing, connect

log = logging.getLogger(__name__)


def cluster_arguments(p: argparse.ArgumentParser | Any) -> None:
    """``--shards`` and ``--replicas`` (``--cluster`` itself is declared by each command)."""
    p.add_argument("--shards", type=int, default=int(os.environ.get("LSR_SHARDS", "2")),
                   help="with --cluster: shards a collection's documents are split over (by a hash of the id)")
    p.add_argument("--replicas", type=int, default=int(os.environ.get("LSR_REPLICAS", "2")),
                   help="with --cluster: copies of each shard, on different nodes where there are enough")


def _check_counts(shards: int, replicas: int) -> None:
    if shards < 1 or replicas < 1:
        raise ValueError(f"--shards and --replicas must be at least 1, got {shards} and {replicas}")


def open_cluster_store(args: argparse.Namespace, settings: Any) -> Any:
    """The store of ``lsr serve --cluster ADDRESS|local``: replica actors with folders under --data."""
    from .store import ClusterStore

    _check_counts(args.shards, args.replicas)
    try:
        connect(args.cluster)
    except (ConnectionError, RuntimeError) as exc:
        raise ValueError(f"--cluster {args.cluster}: cannot connect to Ray: {exc}") from None
    return ClusterStore.launch(Path(settings.data_dir).resolve(), args.shards, args.replicas,
                               merge_min_docs=settings.merge_min_docs, merge_idle_s=settings.merge_idle_s)


def ingest_main(argv: list[str] | None = None, prog: str = "lsr ingest") -> int:
    p = argparse.ArgumentParser(prog=prog, description="Encode a JSONL corpus with Ray Data and index it into a "
                                                       "sharded collection whose replicas live on a Ray cluster.",
                                formatter_class=HelpFormatter)
    p.add_argument("corpus", help="corpus.jsonl[.gz] (BEIR layout)")
    p.add_argument("--collection", "-c", required=True)
    p.add_argument("--cluster", required=True, help="Ray address (HOST:PORT, auto) or 'local'")
    p.add_argument("--data", default=os.environ.get("LSR_DATA", "./lsr-data"),
                   help="folder of the replicas' data on each node")
    cluster_arguments(p)
    p.add_argument("--model", default=None, help="encoder of a new collection (default splade-tiny); an existing "
                                                 "collection keeps its own")
    p.add_argument("--limit", type=int, default=None, help="only the first N documents")
    p.add_argument("--actors", type=int, default=None, help="encoder actors (default: one per GPU, else per CPU)")
    p.add_argument("--batch-size", type=int, default=32, help="texts per forward pass")
    p.add_argument("--block", type=int, default=256, help="documents per Ray Data block (and per write)")
    args = p.parse_args(argv)
    for flag, v in (("--limit", args.limit), ("--actors", args.actors), ("--batch-size", args.batch_size),
                    ("--block", args.block)):
        if v is not None and v < 1:
            print(f"{prog}: {flag} must be positive, got {v}", file=sys.stderr)
            return 2
    logging.basicConfig(level="INFO", format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from lsr.index.corpus import read_corpus

    try:
        _check_counts(args.shards, args.replicas)
        docs = list(read_corpus(args.corpus, args.limit))
        if not docs:
            raise ValueError(f"{args.corpus}: no documents")
        stats = cluster_ingest(docs, args.collection, cluster=args.cluster, data=args.data, shards=args.shards,
                               replicas=args.replicas, model=args.model, actors=args.actors,
                               batch_size=args.batch_size, block=args.block)
    except (OSError, ValueError, RayMissing) as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(stats))
    return 0


def cluster_ingest(docs: list[Any], collection: str, *, cluster: str, data: str, shards: int, replicas: int,
                   model: str | None = None, actors: int | None = None, batch_size: int = 32,
                   block: int = 256) -> dict[str, Any]:
    """Encode ``docs`` on a Ray Data actor pool and write them to the sharded collection, then merge:
    every replica builds its shard's Seismic segment on its own node."""
    from lsr.index.sparse import SparseBatch
    from lsr.service.collection import validate_name
    from lsr.service.encoders import ModelRegistry

    from .encode import encode_stream
    from .store import ClusterStore

    validate_name(collection)
    try:
        connect(cluster)
    except (ConnectionError, RuntimeError) as exc:
        raise ValueError(f"--cluster {cluster}: cannot connect to Ray: {exc}") from None
    store = ClusterStore.launch(Path(data).resolve(), shards, replicas, merge_min_docs=10**12, merge_idle_s=1e12)
    store.load_all()
    try:
        col = store.collections.get(collection)
        if col is None:
            model = model or "splade-tiny"
            reg = ModelRegistry(model)
            dim = len(reg.vocab(model))
            reg.close()
            col = store.create(collection, {"model": model, "dim": dim, "index": {}})
        elif model is not None and model != col.config.get("model"):
            raise ValueError(f"collection {collection!r} exists with model {col.config.get('model')!r}; "
                             f"--model {model!r} would mix encodings")
        model = col.config.get("model")
        if model is None:
            raise ValueError(f"collection {collection!r} has no model to encode documents with")
        t0 = time.perf_counter()
        bar = tqdm(total=len(docs), desc=f"ingest {collection} (Ray Data)", unit="doc")
        for rows in encode_stream([d.full_text for d in docs], model, actors=actors, batch_size=batch_size,
                                  block_rows=block):
            picked = [docs[pos] for pos, _, _ in rows]
            metas = []
            for d in picked:
                meta = dict(d.metadata or {})
                if d.title:
                    meta.setdefault("title", d.title)
                metas.append(meta or None)
            lens = [t.size for _, t, _ in rows]
            vectors = SparseBatch(np.concatenate([[0], np.cumsum(lens)]).astype(np.int64),
                                  np.concatenate([t for _, t, _ in rows]), np.concatenate([w for _, _, w in rows]),
                                  col.dim)
            col.upsert_rows([d.id for d in picked], vectors, [d.full_text for d in picked], metas)
            bar.update(len(picked))
        bar.close()
        encode_s = time.perf_counter() - t0
        col.merge(force=True)
        st = col.stats()
        return {"collection": collection, "documents": st["documents"], "bytes": st["bytes"], "shards": shards,
                "replicas": replicas, "encode_seconds": round(encode_s, 2),
                "seconds": round(time.perf_counter() - t0, 2)}
    finally:
        store.close()


def encode_to_file(pairs: list[tuple[str, str]], args: argparse.Namespace) -> tuple[Any, list[str], float]:
    """``lsr-encode --cluster``: the same encoding through Ray Data; rows back in input order."""
    from lsr.index.sparse import SparseBatch
    from lsr.service.encoders import ModelRegistry

    from .encode import encode_stream

    try:
        connect(args.cluster)
    except (ConnectionError, RuntimeError) as exc:
        raise ValueError(f"--cluster {args.cluster}: cannot connect to Ray: {exc}") from None
    reg = ModelRegistry(args.model)
    vocab = reg.vocab(args.model)
    reg.close()
    texts = [t for _, t in pairs]
    rows: list[tuple[np.ndarray, np.ndarray] | None] = [None] * len(texts)
    t0 = time.perf_counter()
    bar = tqdm(total=len(texts), desc="encode (Ray Data)", unit="text", disable=args.no_progress)
    for batch in encode_stream(texts, args.model, actors=args.actors, batch_size=args.batch_size,
                               max_length=args.max_length, top_k=args.top_k, min_weight=args.min_weight,
                               queries=args.queries):
        for pos, t, w in batch:
            rows[pos] = (t, w)
        bar.update(len(batch))
    bar.close()
    dt = time.perf_counter() - t0
    lens = np.asarray([r[0].size for r in rows if r is not None], np.int64)
    if lens.size != len(rows):
        raise RuntimeError("the Ray Data pipeline lost rows")
    indptr = np.concatenate([[0], np.cumsum(lens)]).astype(np.int64)
    ind = np.concatenate([r[0] for r in rows if r is not None]) if len(rows) else np.zeros(0, np.int32)
    val = np.concatenate([r[1] for r in rows if r is not None]) if len(rows) else np.zeros(0, np.float32)
    batch_out = SparseBatch(indptr, ind.astype(np.int32), val.astype(np.float32), len(vocab), vocab=vocab)
    return batch_out, [i for i, _ in pairs], dt
