"""Load test of the search service's query paths over real HTTP (lsr-serve on uvicorn, loopback).

    python benchmarks/service.py --clients 1 4 16 --duration 8

One data folder, two collections over the same SciFact document vectors (IDF-weighted word pieces
of the BERT vocabulary, made torch-free so the set-up takes seconds):
- ``if``: the shipped inference-free model (models/inference-free-splade-tiny-scifact-nfcorpus);
  a text query is tokenised and weighted by its table (no model call). Compared with searching the
  same query sent as ``vector_ids`` (the same vector, so the same search work): target >= 0.8x.
- ``splade``: SPLADE-tiny; a text query needs a forward pass. Compared with the query batcher off
  (``--query-batch 1``: one forward pass per request, one at a time, as the old per-model lock did)
  and on (the default: queries arriving within 2 ms share one forward pass).
Clients are httpx async clients in this process; SciFact's 300 test queries in turn. Prints a
markdown table.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from serving import free_port, wait_ready

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "models" / "inference-free-splade-tiny-scifact-nfcorpus"


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def scifact_dir(arg: Path | None) -> Path:
    for p in [arg, ROOT.parent / "shared" / "data" / "beir" / "scifact", ROOT / "tests" / "data" / "beir" / "scifact"]:
        if p is not None and (p / "queries.jsonl").exists():
            return p
    raise SystemExit("no SciFact folder: pass --scifact")


def read_corpus(folder: Path, limit: int | None) -> tuple[list[str], list[str]]:
    path = folder / "corpus.jsonl.gz"
    opener = gzip.open if path.exists() else open
    ids, texts = [], []
    with opener(path if path.exists() else folder / "corpus.jsonl", "rt", encoding="utf-8") as fh:
        for line in fh:
            rec = json.loads(line)
            ids.append(rec["_id"])
            texts.append(f"{rec.get('title', '')}. {rec.get('text', '')}")
            if limit and len(ids) >= limit:
                break
    return ids, texts


def read_test_queries(folder: Path) -> list[str]:
    want = set()
    with open(folder / "qrels" / "test.tsv") as fh:
        next(fh)
        for line in fh:
            want.add(line.split("\t")[0])
    out = []
    with open(folder / "queries.jsonl", encoding="utf-8") as fh:
        for line in fh:
            rec = json.loads(line)
            if rec["_id"] in want:
                out.append(rec["text"])
    return out


def build_data(data: Path, ids: list[str], doc_vecs) -> None:
    from lsr.service.collection import CollectionStore, DocIn, MergePolicy

    store = CollectionStore(data, MergePolicy(min_docs=10**12, idle_s=1e12))
    store.load_all()
    for name, model in (("if", str(MODEL)), ("splade", "splade-tiny")):
        col = store.create(name, {"model": model, "dim": doc_vecs.dim, "index": {}})
        for s in range(0, len(ids), 1000):
            batch = []
            for i in range(s, min(s + 1000, len(ids))):
                idx, val = doc_vecs.row(i)
                if idx.size:
                    batch.append(DocIn(ids[i], idx.astype(np.int32), val.astype(np.float32), None, {"row": i}))
            col.upsert(batch)
        col.merge(force=True)
    store.close()


def start_server(data: Path, port: int, threads: int, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "LSR_API_KEYS": "bench"}
    cmd = [sys.executable, "-m", "lsr.service.cli", "--data", str(data), "--port", str(port), "--threads",
           str(threads), "--log-level", "warning", "--model", str(MODEL), *extra]
    proc = subprocess.Popen(cmd, env=env)
    return wait_ready(proc, port)


def stop_server(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()


async def http_load(url: str, path: str, bodies: list[bytes], clients: int, duration: float) -> dict:
    import httpx

    lat: list[float] = []
    errors = [0]
    counter = [0]
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    headers = {"content-type": "application/json"}
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60) as client:
        for b in bodies[:10]:  # warm-up: encoders loaded, caches filled
            await client.post(path, content=b, headers=headers)
        stop = time.monotonic() + duration

        async def worker():
            while time.monotonic() < stop:
                n = counter[0]
                counter[0] += 1
                t = time.perf_counter()
                try:
                    ok = (await client.post(path, content=bodies[n % len(bodies)], headers=headers)).status_code == 200
                except httpx.HTTPError:
                    ok = False
                lat.append((time.perf_counter() - t) * 1000)
                errors[0] += not ok

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(clients)))
        wall = time.perf_counter() - t0
    a = np.asarray(lat)
    return {"qps": len(lat) / wall, "p50": float(np.percentile(a, 50)), "p99": float(np.percentile(a, 99)),
            "errors": errors[0]}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scifact", type=Path, default=None)
    p.add_argument("--docs", type=int, default=None, help="first N SciFact documents (default: all 5,183)")
    p.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16])
    p.add_argument("--duration", type=float, default=8.0, help="seconds per cell")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="server search threads")
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--skip-splade", action="store_true", help="only the inference-free rows")
    args = p.parse_args(argv)

    from lsr.models.inference_free import IdfQueryEncoder

    folder = scifact_dir(args.scifact)
    table = IdfQueryEncoder.load(MODEL)
    ids, texts = read_corpus(folder, args.docs)
    queries = read_test_queries(folder)
    t0 = time.perf_counter()
    doc_vecs = table.encode_queries(texts)  # IDF-weighted word pieces (the table's own weights)
    q_vecs = table.encode_queries(queries)
    keep = [i for i in range(len(queries)) if q_vecs.row(i)[0].size]
    tmp = Path(tempfile.mkdtemp(prefix="lsr-service-bench-"))
    data = tmp / "data"
    build_data(data, ids, doc_vecs)
    log(f"built 2 collections of {len(ids)} documents in {time.perf_counter() - t0:.1f}s")

    def body(**kw) -> bytes:
        return json.dumps({**kw, "k": args.k, "include_text": False}).encode()

    text_bodies = [body(text=queries[i]) for i in keep]
    vec_bodies = [body(vector_ids={str(int(t)): float(w) for t, w in zip(*q_vecs.row(i))}) for i in keep]
    runs = [("on", ())] if args.skip_splade else [("off", ("--query-batch", "1")), ("on", ())]
    rows: dict = {}
    try:
        for batching, extra in runs:
            port = free_port()
            proc = start_server(data, port, args.threads, *extra)
            url = f"http://127.0.0.1:{port}"
            try:
                for c in args.clients:
                    cells = []
                    if batching == "on":
                        cells += [("vector search (inference-free collection)", "/v1/collections/if/search", vec_bodies),
                                  ("text search (inference-free, torch-free)", "/v1/collections/if/search", text_bodies)]
                    if not args.skip_splade:
                        cells.append((f"SPLADE text search, batcher {batching}", "/v1/collections/splade/search",
                                      text_bodies))
                    for label, path, bodies in cells:
                        log(f"{label}, {c} clients")
                        rows[(label, c)] = asyncio.run(http_load(url, path, bodies, c, args.duration))
            finally:
                stop_server(proc)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    import fastapi
    import uvicorn

    print(f"## lsr service: text vs vector queries, SPLADE query batching (SciFact, {len(ids)} docs, "
          f"{len(keep)} test queries, k={args.k})\n")
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; python "
          f"{platform.python_version()}, fastapi {fastapi.__version__}, uvicorn {uvicorn.__version__}; server "
          f"threads {args.threads}; {args.duration:.0f}s per cell; clients in the same machine\n")
    print("| query path | clients | QPS | p50 ms | p99 ms | errors | ratio |")
    print("|---|---:|---:|---:|---:|---:|---|")
    for (label, c), r in rows.items():
        ratio = ""
        if label.startswith("text search"):
            base = rows[("vector search (inference-free collection)", c)]["qps"]
            ratio = f"{r['qps'] / base:.2f}x vector QPS (target >= 0.8x)"
        elif label.endswith("batcher on") and ("SPLADE text search, batcher off", c) in rows:
            ratio = f"{r['qps'] / rows[('SPLADE text search, batcher off', c)]['qps']:.2f}x batcher off"
        print(f"| {label} | {c} | {r['qps']:.0f} | {r['p50']:.2f} | {r['p99']:.2f} | {r['errors']} | {ratio} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
