"""Sharded search on Ray against the single-process collection, and Ray Data encoding against the
plain encoding loop, side by side in one run.

    python benchmarks/cluster.py --n-docs 1000000 --shards 1,2,4,8 --clients 16 \
        --corpus ../shared/data/beir/scifact/corpus.jsonl.gz --encode-docs 5183 --json /tmp/cluster.json

Search: the same synthetic SPLADE-like documents (benchmarks/synthetic.py; with ``--vectors``, real
SPLADE-tiny encodings replicated by benchmarks/real_vectors.py) go into a local
collection (the single-process index: one Seismic segment, searched in this process) and into a
sharded collection with S shard actors (R = 1) for each S; both are merged into Seismic segments
with the same parameters. Latency: one query at a time from one client (the scatter-gather
overhead is the difference in median); throughput: ``--clients`` threads each sending one query at
a time (QPS and p99). Every hit carries its stored document in both systems. Encoding: documents
per second of ``SparseEncoder.encode_documents`` in this process (the ``lsr-encode`` loop) against
``lsr.cluster.encode.encode_stream`` (Ray Data ``map_batches`` on an actor pool, one GPU per actor
where there are GPUs), wall time including the pool's start-up, and their outputs compared.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import real_vectors  # noqa: E402
from synthetic import generate  # noqa: E402

from lsr.cluster.runtime import connect, loopback_env  # noqa: E402
from lsr.index.sparse import SparseBatch  # noqa: E402
from lsr.service.collection import CollectionStore, DocIn, MergePolicy  # noqa: E402

KNOBS = {"query_cut": 10, "heap_factor": 0.9}


def _docs(batch: SparseBatch, start: int, stop: int) -> list[DocIn]:
    return [DocIn(f"d{i}", *batch.row(i), None, {"n": i}) for i in range(start, stop)]


def fill(col, docs: SparseBatch, write_batch: int) -> float:
    t0 = time.perf_counter()
    for b in range(0, len(docs), write_batch):
        e = min(b + write_batch, len(docs))
        if hasattr(col, "upsert_rows"):  # a sharded collection's bulk path: columns, not one object per document
            col.upsert_rows([f"d{i}" for i in range(b, e)], docs[b:e], metadata=[{"n": i} for i in range(b, e)])
        else:
            col.upsert(_docs(docs, b, e))
    col.merge(force=True)
    return time.perf_counter() - t0


def latency(search, queries: SparseBatch, n: int) -> np.ndarray:
    out = []
    for i in range(n):
        q = queries[i % len(queries): i % len(queries) + 1]
        t0 = time.perf_counter()
        search(q)
        out.append(time.perf_counter() - t0)
    return np.asarray(out) * 1000


def throughput(search, queries: SparseBatch, clients: int, seconds: float) -> tuple[float, float]:
    lat: list[list[float]] = [[] for _ in range(clients)]
    stop = time.perf_counter() + seconds

    def client(c: int) -> None:
        i = c
        while time.perf_counter() < stop:
            q = queries[i % len(queries): i % len(queries) + 1]
            t0 = time.perf_counter()
            search(q)
            lat[c].append(time.perf_counter() - t0)
            i += clients

    t0 = time.perf_counter()
    threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    allv = np.concatenate([np.asarray(x) for x in lat]) * 1000
    return len(allv) / wall, float(np.percentile(allv, 99))


def recall(res, truth) -> float:
    return float(np.mean([len({c.id for c in r} & set(t)) / max(len(t), 1) for r, t in zip(res, truth)]))


def _data(args, tmp: Path) -> tuple[SparseBatch, SparseBatch]:
    """The documents and queries, generated once and kept in the work folder (a later call reuses them)."""
    from lsr.index.sparse import load_vectors, save_vectors

    key = tmp / f"data-{args.n_docs}-{args.n_queries}-{args.seed}" if not args.vectors else \
        tmp / f"data-real-{args.n_docs}-{args.n_queries}-{args.seed}"
    if (key / "queries.npz").exists():
        docs, queries = load_vectors(key / "docs.npz")[0], load_vectors(key / "queries.npz")[0]
        print(f"# {len(docs):,} documents and {len(queries):,} queries read from {key}", flush=True)
        return docs, queries
    t0 = time.perf_counter()
    if args.vectors:  # real SPLADE-tiny encodings, replicated by term permutation (benchmarks/real_vectors.py)
        docs, queries = real_vectors.load(Path(args.vectors), args.n_docs, args.n_queries, seed=args.seed)
    else:
        docs, queries = generate(args.n_docs, args.n_queries, args.seed)
    print(f"# {len(docs):,} documents ({docs.nnz / len(docs):.1f} nnz/doc), {len(queries):,} queries "
          f"({queries.nnz / len(queries):.1f} nnz) generated in {time.perf_counter() - t0:.1f} s", flush=True)
    key.mkdir(parents=True, exist_ok=True)
    save_vectors(key / "docs.npz", docs)
    save_vectors(key / "queries.npz", queries)  # last: its presence means both are complete
    return docs, queries


def bench_search(args, tmp: Path) -> list[dict]:
    """Fill the systems that are not filled yet (a marker per system in the work folder), then, unless
    ``--stage fill``, measure each one. With a kept ``--work`` folder the stages can run in separate
    processes (a GPU host's call limit): filled collections are opened again, not rebuilt."""
    from lsr.cluster.store import ClusterStore
    from lsr.index import ExactIndex

    docs, queries = _data(args, tmp)
    config = {"model": None, "dim": docs.dim, "index": {}}
    done = tmp / f"filled-{args.n_docs}"
    done.mkdir(parents=True, exist_ok=True)

    def open_system(s: int):
        if s == 0:
            store = CollectionStore(tmp / "single", MergePolicy(min_docs=10**12, idle_s=1e12))
            store.load_all()
        else:
            store = ClusterStore.launch(tmp / f"shards-{s}", s, 1, cluster_name=f"bench{s}", merge_min_docs=10**12,
                                        merge_idle_s=1e12, max_concurrency=max(16, args.clients), timeout_s=1800)
            store.load_all()
        col = store.collections.get("bench")
        return store, col if col is not None else store.create("bench", config)

    def close_system(s: int, store) -> None:
        store.close() if s == 0 else store.kill()

    systems = [0] + args.shards
    todo = [s for s in systems if not (done / f"{s}.json").exists()]
    opened = {s: open_system(s) for s in todo}
    for s in todo:  # a partly filled collection (a call cut short) starts again from empty
        if len(opened[s][1]):
            opened[s][0].delete("bench")
            opened[s] = (opened[s][0], opened[s][0].create("bench", config))

    def fill_one(s: int) -> None:
        build = fill(opened[s][1], docs, args.write_batch)
        fileio_write(done / f"{s}.json", {"build_s": build, "concurrent": bool(args.concurrent_fill)})
        print(f"# system {s} filled in {build:.1f} s", flush=True)

    if args.concurrent_fill:  # all at once (the cores are shared: build times are not comparable)
        threads = [threading.Thread(target=fill_one, args=(s,)) for s in todo]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    else:
        for s in todo:
            fill_one(s)
    if args.stage == "fill":
        for s, (store, _) in opened.items():
            close_system(s, store)
        return []

    truth_hits = ExactIndex.build(docs).search(queries, k=10, threads=os.cpu_count())
    truth = [[f"d{r}" for r in row if r >= 0] for row in truth_hits.rows]
    rows: list[dict] = []
    for s in systems:
        store, col = opened.pop(s) if s in opened else open_system(s)
        if s == 0:
            label = "single process (local collection)"

            def search(q, col=col):
                view, res = col.search(q, 10, KNOBS, 1)
                return [[view.document(c) for c in r] for r in res]
        else:
            label = f"Ray, {s} shard actor{'s' if s > 1 else ''}"

            def search(q, col=col):
                return col.search(q, 10, KNOBS, 1)
        search(queries[:8])  # warm
        _, res = col.search(queries, 10, KNOBS, 1)
        lat = latency(search, queries, args.latency_queries)
        qps, p99 = throughput(search, queries, args.clients, args.seconds)
        qps_single_scatter = p99_single_scatter = None
        if s > 0:  # the same load with every search in its own scatter (no coalescing of concurrent searches)
            store.coalesce = False
            qps_single_scatter, p99_single_scatter = throughput(search, queries, args.clients, args.seconds)
            store.coalesce = True
        marker = json.loads((done / f"{s}.json").read_text())
        row = {"system": label, "shards": s, "build_s": round(marker["build_s"], 1),
               "concurrent_fill": marker["concurrent"], "recall@10": round(recall(res, truth), 4),
               "p50_ms": round(float(np.percentile(lat, 50)), 3), "p99_ms": round(float(np.percentile(lat, 99)), 3),
               "qps": round(qps, 1), "qps_p99_ms": round(p99, 2),
               "qps_uncoalesced": None if qps_single_scatter is None else round(qps_single_scatter, 1),
               "qps_uncoalesced_p99_ms": None if p99_single_scatter is None else round(p99_single_scatter, 2),
               "bytes_per_doc": round(sum(x["bytes"] for x in col.stats()["segments"]) / len(docs), 1)}
        print(row, flush=True)
        rows.append(row)
        if args.json:  # as it goes: a run cut short still leaves its rows
            Path(args.json).write_text(json.dumps({"search": rows}, indent=1))
        close_system(s, store)
    return rows


def fileio_write(path: Path, obj: dict) -> None:
    from lsr.index import fileio

    fileio.atomic_write(path, json.dumps(obj).encode(), site="bench")


def bench_encode(args) -> dict:
    import torch

    from lsr.cluster.encode import cluster_gpus, encode_stream
    from lsr.index.corpus import read_corpus
    from lsr.models import SparseEncoder

    texts = [d.full_text for d in read_corpus(args.corpus, args.encode_docs)]
    device = "cuda" if torch.cuda.is_available() else "cpu"
    enc = SparseEncoder.load(args.model, device=device)
    enc.encode_documents(texts[:64], batch_size=args.encode_batch)  # warm
    t0 = time.perf_counter()
    plain = enc.encode_documents(texts, batch_size=args.encode_batch)
    plain_s = time.perf_counter() - t0
    del enc
    t0 = time.perf_counter()
    first = None
    n_first = 0
    rows: list = [None] * len(texts)
    for batch in encode_stream(texts, args.model, actors=args.actors, batch_size=args.encode_batch,
                               block_rows=args.block):
        if first is None:
            first, n_first = time.perf_counter(), len(batch)
        for pos, t, w in batch:
            rows[pos] = (t, w)
    ray_s = time.perf_counter() - t0
    diff = 0.0
    same_terms = True
    for i, (t, w) in enumerate(rows):
        idx, val = plain.row(i)
        keep = val > 0
        same_terms &= np.array_equal(idx[keep], t)
        if same_terms:
            diff = max(diff, float(np.abs(val[keep] - w).max()) if w.size else 0.0)
    return {"docs": len(texts), "device": device, "gpus": cluster_gpus(), "actors": args.actors,
            "plain_docs_s": round(len(texts) / plain_s, 1), "ray_docs_s": round(len(texts) / ray_s, 1),
            "ray_docs_s_after_start": round((len(texts) - n_first) / max(time.perf_counter() - first, 1e-9), 1),
            "ray_start_s": round(first - t0, 1), "same_terms": bool(same_terms), "max_abs_diff": diff}


def _gpu_name() -> str | None:
    try:
        import torch
    except ImportError:
        return None
    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n-docs", type=int, default=1_000_000)
    ap.add_argument("--n-queries", type=int, default=1000)
    ap.add_argument("--shards", default="1,2,4,8", help="shard actor counts, comma-separated")
    ap.add_argument("--clients", type=int, default=16, help="client threads of the throughput run")
    ap.add_argument("--seconds", type=float, default=10.0, help="length of each throughput run")
    ap.add_argument("--latency-queries", type=int, default=500, help="queries of the one-client latency run")
    ap.add_argument("--write-batch", type=int, default=5000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--vectors", default=None,
                    help="search on real vectors: folder of benchmarks/real_vectors.py encode (default: synthetic)")
    ap.add_argument("--corpus", default=None, help="BEIR corpus.jsonl[.gz] for the encoding run (none: skip it)")
    ap.add_argument("--model", default="splade-tiny")
    ap.add_argument("--encode-docs", type=int, default=5183)
    ap.add_argument("--encode-batch", type=int, default=64)
    ap.add_argument("--actors", type=int, default=None, help="Ray Data encoder actors (default: one per GPU, else CPU)")
    ap.add_argument("--block", type=int, default=256, help="documents per Ray Data block")
    ap.add_argument("--skip-search", action="store_true")
    ap.add_argument("--stage", choices=["fill", "all"], default="all",
                    help="fill: only fill the systems not yet filled in --work (then stop); all: fill what is "
                         "missing, then measure")
    ap.add_argument("--concurrent-fill", action="store_true",
                    help="fill every system at once before measuring them one at a time (saves wall time on a big "
                         "machine; the build times are then not comparable)")
    ap.add_argument("--cpus", type=int, default=None, help="CPUs Ray may use (default: all)")
    ap.add_argument("--work", default=None, help="folder for the collections (default: a temp folder)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    args.shards = [int(s) for s in args.shards.split(",") if s]
    loopback_env()
    connect("local", num_cpus=args.cpus)
    tmp = Path(args.work or tempfile.mkdtemp(prefix="lsr-cluster-bench-"))
    out: dict = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "host": platform.node(),
                             "gpu": _gpu_name()},
                 "command": "python " + " ".join(sys.argv), "commit": os.environ.get("LSR_COMMIT"),
                 "params": vars(args)}
    if args.corpus:  # first: the cheaper of the two
        out["encode"] = bench_encode(args)
        print(out["encode"], flush=True)
    if not args.skip_search:
        out["search"] = bench_search(args, tmp)
    import ray

    out["machine"]["ray"] = ray.__version__
    print_report(out)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))


def print_report(out: dict) -> None:
    print(f"\n## lsr on Ray: {out['machine']['cpus']} CPUs, ray {out['machine']['ray']}, params "
          f"{ {k: v for k, v in out['params'].items() if k not in ('json', 'work')} }\n")
    if out.get("search"):
        rows = out["search"]
        base = rows[0]
        print("| system | build s | bytes/doc | Recall@10 | p50 ms (1 client) | p99 ms (1 client) | overhead p50 ms | "
              "QPS | QPS ratio | p99 ms under load | QPS, one scatter per search | its p99 ms |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for r in rows:
            unc = r.get("qps_uncoalesced")
            print(f"| {r['system']} | {r['build_s']} | {r['bytes_per_doc']} | {r['recall@10']:.4f} | {r['p50_ms']:.2f} | "
                  f"{r['p99_ms']:.2f} | {r['p50_ms'] - base['p50_ms']:+.2f} | {r['qps']:,.0f} | "
                  f"{r['qps'] / base['qps']:.2f}x | {r['qps_p99_ms']:.1f} | "
                  + (f"{unc:,.0f} | {r['qps_uncoalesced_p99_ms']:.1f} |" if unc is not None else "— | — |"))
    if "encode" in out:
        e = out["encode"]
        print(f"\n| encoding ({e['docs']:,} docs, {e['device']}) | docs/s | ratio |\n|---|---:|---:|")
        print(f"| plain lsr-encode loop (SparseEncoder.encode_documents) | {e['plain_docs_s']:,.0f} | 1.00x |")
        print(f"| Ray Data map_batches, {e['actors'] or 'auto'} actors, wall incl. {e['ray_start_s']} s start | "
              f"{e['ray_docs_s']:,.0f} | {e['ray_docs_s'] / e['plain_docs_s']:.2f}x |")
        print(f"| Ray Data map_batches, once the pool is up | {e['ray_docs_s_after_start']:,.0f} | "
              f"{e['ray_docs_s_after_start'] / e['plain_docs_s']:.2f}x |")
        print(f"\nsame terms: {e['same_terms']}, max |weight difference| {e['max_abs_diff']:.2e}")


if __name__ == "__main__":
    main()
