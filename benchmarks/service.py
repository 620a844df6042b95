"""Load test of the search service on SciFact: concurrent httpx async clients against lsr-serve
(real uvicorn on loopback) vs raw ``index.search`` on the same queries, threads and concurrency.

    python benchmarks/service.py --duration 20 --concurrency 8

Documents: SPLADE-tiny vectors of SciFact's corpus (``--doc-vectors``, a ``.npz`` with ids, e.g. the
eval cache; encoded here when absent). Queries: SciFact test queries encoded with SPLADE-tiny (cached).
Prints a markdown table: QPS, p50/p99 latency, errors, and the ratio of the service to raw search.
"""

from __future__ import annotations

import argparse
import asyncio
import glob
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SCIFACT = ROOT.parent / "shared" / "data" / "beir" / "scifact"
CACHE = ROOT / ".cache" / "service-bench"


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def load_queries(scifact: Path, n: int):
    from lsr.index.sparse import load_vectors, save_vectors

    CACHE.mkdir(parents=True, exist_ok=True)
    path = CACHE / "scifact-test-queries-splade-tiny.npz"
    if path.exists():
        batch, ids = load_vectors(path)
        return batch[: min(n, len(batch))]
    test_ids = set()
    with open(scifact / "qrels" / "test.tsv") as fh:
        next(fh)
        for line in fh:
            test_ids.add(line.split("\t")[0])
    texts, ids = [], []
    with open(scifact / "queries.jsonl", encoding="utf-8") as fh:
        for line in fh:
            rec = json.loads(line)
            if rec["_id"] in test_ids:
                texts.append(rec["text"])
                ids.append(rec["_id"])
    from lsr.models import SparseEncoder

    log(f"encoding {len(texts)} SciFact test queries with SPLADE-tiny")
    batch = SparseEncoder.load("splade-tiny").encode_queries(texts)
    save_vectors(path, batch, ids)
    return batch[: min(n, len(batch))]


def load_docs(path: str | None, scifact: Path):
    from lsr.index.sparse import load_vectors

    if path is None:
        found = sorted(glob.glob(str(ROOT / ".cache" / "eval" / "scifact-*" / "splade-splade-tiny.npz")))
        path = found[0] if found else None
    if path is None:
        raise SystemExit("no SciFact document vectors: pass --doc-vectors (e.g. from lsr-encode or lsr-eval's cache)")
    batch, ids = load_vectors(path)
    if ids is None:
        raise SystemExit(f"{path}: vectors carry no ids")
    return batch, ids, path


def build_data(data_dir: Path, docs, ids) -> float:
    """Ingest the vectors through the service's own write path (log + merge into a Seismic segment)."""
    from lsr.service.collection import CollectionStore, DocIn, MergePolicy

    t0 = time.perf_counter()
    store = CollectionStore(data_dir, MergePolicy(min_docs=10**12, idle_s=1e12))
    store.load_all()
    col = store.create("scifact", {"model": "splade-tiny", "dim": docs.dim, "index": {}})
    for s in range(0, len(ids), 1000):
        batch = []
        for i in range(s, min(s + 1000, len(ids))):
            idx, val = docs.row(i)
            batch.append(DocIn(str(ids[i]), idx.copy(), val.copy(), None, {"row": i}))
        col.upsert(batch)
    col.merge(force=True)
    seg = col.segments[0]
    kind = seg.kind
    store.close()
    log(f"built collection: {len(ids)} docs, segment kind {kind}, {time.perf_counter() - t0:.1f}s")
    return time.perf_counter() - t0


def percentiles(lat_ms: list[float]) -> tuple[float, float]:
    a = np.asarray(lat_ms)
    return float(np.percentile(a, 50)), float(np.percentile(a, 99))


def run_raw(seg_path: Path, queries, k: int, concurrency: int, duration: float, max_requests: int, threads: int):
    """raw ``index.search`` one query per call (threads=1), ``concurrency`` callers on a ``threads`` pool."""
    from lsr.index import SeismicIndex

    idx = SeismicIndex.load(seg_path / "index", mmap=True)
    singles = [queries[i] for i in range(len(queries))]
    for q in singles[:20]:  # warm-up (JIT, caches)
        idx.search(q, k=k, threads=1)
    lat: list[float] = []
    lock = threading.Lock()
    stop = time.monotonic() + duration
    counter = [0]

    def worker(w):
        local = []
        while time.monotonic() < stop:
            with lock:
                n = counter[0]
                if n >= max_requests:
                    break
                counter[0] += 1
            q = singles[n % len(singles)]
            t = time.perf_counter()
            idx.search(q, k=k, threads=1)
            local.append((time.perf_counter() - t) * 1000)
        with lock:
            lat.extend(local)

    t0 = time.perf_counter()
    # `concurrency` callers share `threads` OS threads' worth of CPU: run them on a pool of that size,
    # as the service does (its search pool has --threads workers).
    with ThreadPoolExecutor(max_workers=min(concurrency, threads)) as pool:
        list(pool.map(worker, range(min(concurrency, threads))))
    wall = time.perf_counter() - t0
    return {"n": len(lat), "qps": len(lat) / wall, "lat": lat, "errors": 0}


async def _http_load(url: str, bodies: list[bytes] | None, concurrency: int, duration: float, max_requests: int):
    """POST searches (or GET /health when ``bodies`` is None: the HTTP floor of client + server)."""
    import httpx

    lat: list[float] = []
    errors = [0]
    counter = [0]
    stop = time.monotonic() + duration
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30) as client:
        async def worker():
            while time.monotonic() < stop and counter[0] < max_requests:
                n = counter[0]
                counter[0] += 1
                t = time.perf_counter()
                try:
                    if bodies is None:
                        r = await client.get("/health")
                    else:
                        r = await client.post("/v1/collections/scifact/search", content=bodies[n % len(bodies)],
                                              headers={"content-type": "application/json"})
                    ok = r.status_code == 200
                except httpx.HTTPError:
                    ok = False
                lat.append((time.perf_counter() - t) * 1000)
                if not ok:
                    errors[0] += 1

        for b in (bodies or [])[:20]:  # warm-up
            await client.post("/v1/collections/scifact/search", content=b, headers={"content-type": "application/json"})
        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - t0
    return {"n": len(lat), "qps": len(lat) / wall, "lat": lat, "errors": errors[0]}


def start_server(data_dir: Path, threads: int, port: int) -> subprocess.Popen:
    import httpx

    env = {**os.environ, "LSR_API_KEYS": "bench"}
    cmd = [sys.executable, "-m", "lsr.service.cli", "--data", str(data_dir), "--port", str(port),
           "--threads", str(threads), "--log-level", "warning", "--no-preload"]
    proc = subprocess.Popen(cmd, env=env)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/ready", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        if proc.poll() is not None:
            raise SystemExit("server exited early")
        time.sleep(0.2)
    proc.kill()
    raise SystemExit("server not ready")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scifact", type=Path, default=DEFAULT_SCIFACT)
    p.add_argument("--doc-vectors", default=None)
    p.add_argument("--queries", type=int, default=300)
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 8])
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="server search threads")
    p.add_argument("--duration", type=float, default=15.0, help="seconds per measurement")
    p.add_argument("--max-requests", type=int, default=20000, help="cap per measurement")
    p.add_argument("--include-text", action="store_true", help="return stored text with hits (off: ids + metadata)")
    p.add_argument("--keep", action="store_true", help="keep the temporary data folder")
    p.add_argument("--data", type=Path, default=None, help="reuse (or build once into) this data folder")
    args = p.parse_args(argv)

    from lsr.service.collection import CollectionStore  # noqa: F401  (import check before the long part)

    queries = load_queries(args.scifact, args.queries)
    docs, ids, doc_path = load_docs(args.doc_vectors, args.scifact)
    tmp = Path(tempfile.mkdtemp(prefix="lsr-service-bench-"))
    data = args.data or tmp / "data"
    if (data / "collections" / "scifact" / "manifest.json").exists():
        build_s = float("nan")
    else:
        build_s = build_data(data, docs, ids)
    manifest = json.loads((data / "collections" / "scifact" / "manifest.json").read_text())
    seg_path = data / "collections" / "scifact" / "segments" / manifest["segments"][0]["name"]
    bodies = []
    for i in range(len(queries)):
        idx, val = queries.row(i)
        body = {"vector_ids": {str(int(t)): float(w) for t, w in zip(idx, val)}, "k": args.k,
                "include_text": bool(args.include_text)}
        bodies.append(json.dumps(body).encode())

    port = free_port()
    proc = start_server(data, args.threads, port)
    rows = []
    try:
        for conc in args.concurrency:
            log(f"raw index.search, concurrency {conc}")
            raw = run_raw(seg_path, queries, args.k, conc, args.duration, args.max_requests, args.threads)
            log(f"service over HTTP, concurrency {conc}")
            svc = asyncio.run(_http_load(f"http://127.0.0.1:{port}", bodies, conc, args.duration, args.max_requests))
            log(f"HTTP floor (GET /health), concurrency {conc}")
            floor = asyncio.run(_http_load(f"http://127.0.0.1:{port}", None, conc, min(5.0, args.duration),
                                           args.max_requests))
            rows.append((conc, raw, svc, floor))
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)

    import numba

    print(f"## lsr service load test (SciFact, {len(ids)} docs, {len(queries)} SPLADE-tiny test queries, k={args.k})\n")
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; python "
          f"{platform.python_version()}, numba {numba.__version__}; server threads {args.threads}; "
          f"{args.duration:.0f}s per cell (cap {args.max_requests} requests); document vectors {doc_path}; "
          f"ingest + Seismic build {build_s:.1f}s; hits {'with' if args.include_text else 'without'} text\n")
    print("| clients | raw QPS | raw p50 ms | raw p99 ms | service QPS | service p50 ms | service p99 ms | errors "
          "| p99 ratio | target p99 (1.2x raw + 1 ms) | met | HTTP floor (GET /health) QPS / p50 / p99 ms |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|:-:|---:|")
    for conc, raw, svc, floor in rows:
        r50, r99 = percentiles(raw["lat"])
        s50, s99 = percentiles(svc["lat"])
        f50, f99 = percentiles(floor["lat"])
        target = 1.2 * r99 + 1.0
        print(f"| {conc} | {raw['qps']:.0f} | {r50:.2f} | {r99:.2f} | {svc['qps']:.0f} | {s50:.2f} | {s99:.2f} | "
              f"{svc['errors']} | {s99 / r99:.1f}x | {target:.2f} | {'yes' if s99 <= target and not svc['errors'] else 'no'} "
              f"| {floor['qps']:.0f} / {f50:.2f} / {f99:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
