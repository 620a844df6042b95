"""Slow clients against the service: N sockets that send half a request header and trickle the rest,
while 16 normal clients search. Prints the normal clients' QPS, p50/p99 and errors, and what the
slow clients saw, for the guarded server (``lsr serve``: header/body deadlines, a connection cap,
load shedding) and, with ``--plain``, for stock uvicorn: its defaults at the common limit of 1,024
open files, and its own knobs (``limit_concurrency``, ``timeout_keep_alive``) with the limit raised.

    python benchmarks/slowloris.py --slow 2000 --duration 20 --plain

The server is a real uvicorn subprocess on loopback; the slow clients run in a second process (its
own event loop), the normal clients (httpx, keep-alive) in this one. The open-file limit of this
script is raised to its hard limit (``resource``), so 2,000 sockets fit on the client side.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import platform
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from serving import free_port, wait_ready

DIM = 1000
PLAIN = """
import json, sys, uvicorn
from pathlib import Path
from lsr.service.app import create_app
from lsr.service.config import Settings
uvicorn.run(create_app(Settings(data_dir=Path(sys.argv[1]), model=None, api_keys=["bench"])),
            host="127.0.0.1", port=int(sys.argv[2]), log_level="warning", **json.loads(sys.argv[3]))
"""
# Stock uvicorn settings tried against the same attack (the app is the same; only the server differs).
STOCK = {
    "plain uvicorn (defaults, 1,024 fds)": ({}, 1024),
    "uvicorn limit_concurrency=1000, timeout_keep_alive=5 (fds raised)": (
        {"limit_concurrency": 1000, "timeout_keep_alive": 5, "backlog": 2048}, None),
}


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def raise_nofile() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def build_data(data: Path, n: int) -> None:
    from lsr.service.collection import CollectionStore, DocIn, MergePolicy

    rng = np.random.default_rng(0)
    store = CollectionStore(data, MergePolicy(min_docs=10**12, idle_s=1e12))
    store.load_all()
    col = store.create("a", {"model": None, "dim": DIM, "index": {}})
    docs = []
    for i in range(n):
        idx = np.sort(rng.choice(DIM, 30, replace=False)).astype(np.int32)
        docs.append(DocIn(f"d{i}", idx, rng.uniform(0.1, 2, 30).astype(np.float32)))
    col.upsert(docs)
    col.merge(force=True)
    store.close()


def start_server(data: Path, port: int, stock: str | None, extra: list[str]) -> subprocess.Popen:
    env = {**os.environ, "LSR_API_KEYS": "bench"}
    if stock is not None:
        kwargs, nofile = STOCK[stock]
        cmd = [sys.executable, "-c", PLAIN, str(data), str(port), json.dumps(kwargs)]

        def limit():  # the usual default soft limit, as on most machines
            if nofile:
                resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))

        proc = subprocess.Popen(cmd, env=env, preexec_fn=limit)
    else:
        cmd = [sys.executable, "-m", "lsr.service.cli", "--data", str(data), "--port", str(port), "--model", "none",
               "--log-level", "warning", *extra]
        proc = subprocess.Popen(cmd, env=env)
    return wait_ready(proc, port)


# ---------------------------------------------------------------------------- slow clients (child process)
def slow_main(port: int, n: int, trickle_s: float, seconds: float, out) -> None:
    raise_nofile()
    stats = {"connects": 0, "connect_errors": 0, "http_408": 0, "http_503": 0, "closed": 0, "max_open": 0}
    open_now = [0]

    async def one(i: int):
        await asyncio.sleep(i * 0.001)  # ramp up over n ms
        stop = time.monotonic() + seconds
        while time.monotonic() < stop:
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                stats["connect_errors"] += 1
                await asyncio.sleep(0.5)
                continue
            stats["connects"] += 1
            open_now[0] += 1
            stats["max_open"] = max(stats["max_open"], open_now[0])
            try:
                writer.write(b"POST /v1/collections/a/search HTTP/1.1\r\nhost: x\r\n")
                await writer.drain()
                while time.monotonic() < stop:
                    try:
                        data = await asyncio.wait_for(reader.read(256), timeout=trickle_s)
                    except asyncio.TimeoutError:
                        writer.write(b"x")  # one more byte of a header that never ends
                        await writer.drain()
                        continue
                    if data.startswith(b"HTTP/1.1 408"):
                        stats["http_408"] += 1
                    elif data.startswith(b"HTTP/1.1 503"):
                        stats["http_503"] += 1
                    else:
                        stats["closed"] += 1
                    break
            except OSError:
                stats["closed"] += 1
            finally:
                open_now[0] -= 1
                writer.close()

    async def run():
        await asyncio.gather(*(one(i) for i in range(n)))

    asyncio.run(run())
    out.put(stats)


# ---------------------------------------------------------------------------- normal clients
async def normal_load(url: str, clients: int, seconds: float) -> dict:
    import httpx

    rng = np.random.default_rng(1)
    bodies = [json.dumps({"vector_ids": {str(int(t)): 1.0 for t in rng.choice(DIM, 5, replace=False)},
                          "k": 10, "include_text": False}).encode() for _ in range(200)]
    lat: list[float] = []
    errors: dict[str, int] = {}
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30) as client:
        stop = time.monotonic() + seconds

        async def worker(w: int):
            n = w
            while time.monotonic() < stop:
                n += clients
                t = time.perf_counter()
                try:
                    r = await client.post("/v1/collections/a/search", content=bodies[n % len(bodies)],
                                          headers={"content-type": "application/json"})
                    kind = None if r.status_code == 200 else f"http {r.status_code}"
                except httpx.HTTPError as exc:
                    kind = type(exc).__name__
                lat.append((time.perf_counter() - t) * 1000)
                if kind:
                    errors[kind] = errors.get(kind, 0) + 1
                    await asyncio.sleep(0.05)

        t0 = time.perf_counter()
        await asyncio.gather(*(worker(w) for w in range(clients)))
        wall = time.perf_counter() - t0
    a = np.asarray(lat or [float("nan")])
    return {"n": len(lat), "qps": len(lat) / wall, "p50": float(np.percentile(a, 50)),
            "p99": float(np.percentile(a, 99)), "errors": errors}


def measure(data: Path, stock: str | None, args, extra: list[str]) -> dict:
    port = free_port()
    proc = start_server(data, port, stock, extra)
    url = f"http://127.0.0.1:{port}"
    try:
        base = asyncio.run(normal_load(url, args.normal, 3))  # no slow clients yet
        q: mp.Queue = mp.Queue()
        slow = mp.Process(target=slow_main, args=(port, args.slow, args.trickle, args.duration + 5, q), daemon=True)
        slow.start()
        time.sleep(args.ramp)  # let the slow sockets pile up first
        res = asyncio.run(normal_load(url, args.normal, args.duration))
        alive = proc.poll() is None
        import httpx

        try:
            after = httpx.get(url + "/health", timeout=5).status_code
        except httpx.HTTPError as exc:
            after = type(exc).__name__
        slow.join(args.duration + 60)
        stats = q.get(timeout=30) if not slow.is_alive() else {}
        if slow.is_alive():
            slow.kill()
        return {"base": base, "res": res, "slow": stats, "alive": alive, "health_after": after}
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--slow", type=int, default=2000, help="slow clients")
    p.add_argument("--normal", type=int, default=16, help="normal clients (searches)")
    p.add_argument("--duration", type=float, default=20.0, help="seconds of measurement under attack")
    p.add_argument("--ramp", type=float, default=4.0, help="seconds the slow clients get before measuring")
    p.add_argument("--trickle", type=float, default=1.0, help="a slow client sends one byte this often")
    p.add_argument("--docs", type=int, default=5000)
    p.add_argument("--plain", action="store_true", help="also measure stock uvicorn: defaults at 1,024 open files, "
                   "and limit_concurrency + timeout_keep_alive with the open-file limit raised")
    p.add_argument("--server-args", default="", help="extra lsr serve flags, e.g. '--header-timeout 5'")
    args = p.parse_args(argv)
    nofile = raise_nofile()
    if nofile < args.slow + 256:
        raise SystemExit(f"open-file hard limit {nofile} is too low for {args.slow} slow clients")
    tmp = Path(tempfile.mkdtemp(prefix="lsr-slowloris-"))
    rows = []
    try:
        build_data(tmp / "data", args.docs)
        configs: list = [(label, label) for label in STOCK] if args.plain else []
        configs.append((f"lsr serve {args.server_args}".strip() + " (guarded)", None))
        for label, stock in configs:
            log(f"measuring: {label}")
            rows.append((label, measure(tmp / "data", stock, args, args.server_args.split())))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    import uvicorn

    print(f"## slow clients vs the search service ({args.slow} slow clients trickling a header byte every "
          f"{args.trickle:g}s, {args.normal} normal clients searching for {args.duration:g}s)\n")
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; python "
          f"{platform.python_version()}, uvicorn {uvicorn.__version__}; {args.docs} docs, vectors-only collection\n")
    print("| server | normal QPS (no attack) | p99 ms (no attack) | normal QPS | p50 ms | p99 ms | normal errors "
          "| slow: connects / 408 / 503 / max open | alive, /health after |")
    print("|---|---:|---:|---:|---:|---:|---|---|---|")
    for label, m in rows:
        b, r, s = m["base"], m["res"], m["slow"]
        errs = ", ".join(f"{k}: {v}" for k, v in sorted(r["errors"].items())) or "0"
        slow = f"{s.get('connects', '?')} / {s.get('http_408', '?')} / {s.get('http_503', '?')} / {s.get('max_open', '?')}"
        print(f"| {label} | {b['qps']:.0f} | {b['p99']:.1f} | {r['qps']:.0f} | {r['p50']:.1f} | {r['p99']:.1f} | {errs} "
              f"| {slow} | {m['alive']}, {m['health_after']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
