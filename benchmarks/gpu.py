"""GPU scoring path vs CPU peers on the same synthetic SPLADE-like data, in one run.

Systems: lsr GPU exact (tiled sparse x dense product), lsr GPU approximate (Seismic blocks and
summaries scored for the whole batch on the GPU), lsr's CPU SeismicIndex on all host cores, and
pyseismic-lsr on all host cores. Reports queries/s at batch sizes 1, 64, 1024 and 10k, Recall@10
against exact, build and upload time, GPU memory, and the exact path's fraction of the
memory-bandwidth bound. Prints a markdown table and writes JSON.

    python benchmarks/gpu.py --n-docs 1000000 --n-queries 10000 --out gpu.json
    python benchmarks/gpu.py --n-docs 20000 --n-queries 256 --device cpu   # smoke test, no GPU
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from synthetic import generate  # noqa: E402

from lsr.index import SeismicIndex  # noqa: E402
from lsr.index.gpu import GpuIndex  # noqa: E402


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def recall_at(rows: np.ndarray, truth: np.ndarray) -> float:
    hits = 0
    total = 0
    for a, b in zip(rows, truth):
        b = b[b >= 0]
        total += b.size
        hits += np.intersect1d(a[a >= 0], b).size
    return hits / max(total, 1)


def sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        for i in range(torch.cuda.device_count()):
            torch.cuda.synchronize(i)


def time_gpu(gi: GpuIndex, queries, batch: int, device: str, max_batches: int, **kw) -> dict:
    """Queries/s at a batch size, end to end (host arrays in, host arrays out) and compute only."""
    n = len(queries)
    starts = list(range(0, n - batch + 1, batch))[:max_batches] or [0]
    gi.search(queries[starts[0] : starts[0] + batch], k=10, **kw)  # warm-up
    sync(device)
    total = compute = 0.0
    done = 0
    for s in starts:
        hits = gi.search(queries[s : s + batch], k=10, **kw)
        total += hits.timings["total_s"]
        compute += hits.timings["compute_s"]
        done += min(batch, n - s)
    return {"qps": done / total, "qps_compute_only": done / max(compute, 1e-12), "queries": done}


def run_pyseismic(docs, queries, truth, params, grid, threads):
    try:
        import seismic
        from seismic import SeismicDataset, SeismicIndex as PySeismic
    except ImportError as exc:
        log(f"pyseismic-lsr not importable ({exc}); skipped")
        return None
    st = seismic.get_seismic_string()
    t0 = time.perf_counter()
    ds = SeismicDataset()
    for i in range(len(docs)):
        idx, val = docs.row(i)
        ds.add_document(str(i), idx.astype(str).astype(st), val.astype(np.float32))
    t_load = time.perf_counter() - t0
    t0 = time.perf_counter()
    index = PySeismic.build_from_dataset(
        ds, n_postings=params["n_postings"], centroid_fraction=params["centroid_fraction"],
        min_cluster_size=params["min_cluster_size"], summary_energy=params["summary_energy"],
        max_fraction=params["max_fraction"], doc_cut=params["doc_cut"], num_threads=threads,
    )
    t_build = time.perf_counter() - t0
    del ds
    log(f"pyseismic: dataset {t_load:.1f}s, build {t_build:.1f}s")
    qids = np.array([str(i) for i in range(len(queries))], dtype=st)
    comps = [queries.row(i)[0].astype(str).astype(st) for i in range(len(queries))]
    vals = [queries.row(i)[1].astype(np.float32) for i in range(len(queries))]
    points = []
    for qc, hf in grid:
        index.batch_search(qids[:64], comps[:64], vals[:64], k=10, query_cut=qc, heap_factor=hf, num_threads=threads)
        t0 = time.perf_counter()
        res = index.batch_search(qids, comps, vals, k=10, query_cut=qc, heap_factor=hf, num_threads=threads)
        dt = time.perf_counter() - t0
        rows = np.full((len(queries), 10), -1, np.int64)
        for r in res:  # results carry their query id; do not rely on their order
            if r:
                got = [int(d) for _, _, d in r][:10]
                rows[int(r[0][0]), : len(got)] = got
        points.append({"query_cut": qc, "heap_factor": hf, "qps": len(queries) / dt, "recall": recall_at(rows, truth)})
        log(f"pyseismic qc={qc} hf={hf}: {points[-1]['qps']:.0f} q/s, R@10 {points[-1]['recall']:.4f}")
    return {"build_s": t_build, "load_s": t_load, "points": points}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-docs", type=int, default=1_000_000)
    ap.add_argument("--n-queries", type=int, default=10_000)
    ap.add_argument("--device", default="cuda", help="cuda, cuda:all (split over every GPU) or cpu")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--batches", default="1,64,1024,10000")
    ap.add_argument("--exact-tile", type=int, default=None, help="default: the best of a sweep")
    ap.add_argument("--approx-tile", type=int, default=None, help="default: the best of a sweep")
    ap.add_argument("--bandwidth-gbs", type=float, default=None, help="card bandwidth; default from the card name")
    ap.add_argument("--skip-pyseismic", action="store_true")
    ap.add_argument("--skip-cpu", action="store_true")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--work", type=Path, default=None,
                    help="folder to keep the generated data and the built Seismic index in, reused by later runs")
    ap.add_argument("--profile", action="store_true", help="per-stage times of the approximate path, then exit")
    ap.add_argument("--exact-tiles", default=None, help="sweep exact tile sizes, e.g. 64,128,256,512, then exit")
    args = ap.parse_args(argv)
    import torch

    batches = [int(b) for b in args.batches.split(",")]
    card = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    n_gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    bw = args.bandwidth_gbs or (4800.0 if "H200" in card else 3350.0 if "H100" in card else None)
    info = {"card": card, "gpus": n_gpus, "cpu_cores": os.cpu_count(), "python": platform.python_version(),
            "torch": torch.__version__, "n_docs": args.n_docs, "n_queries": args.n_queries, "device": args.device}
    log(f"machine: {info}")
    params = dict(n_postings=3500, centroid_fraction=0.1, min_cluster_size=2, summary_energy=0.4,
                  max_fraction=1.5, doc_cut=15)
    grid = [(10, 0.9), (10, 0.8), (6, 0.8), (4, 0.7)]

    t0 = time.perf_counter()
    docs, queries = load_or_generate(args)
    log(f"data: {docs!r} {queries!r} in {time.perf_counter() - t0:.1f}s")
    res: dict = {"machine": info, "params": params}

    if args.profile or args.exact_tiles:
        return profile(args, docs, queries, params)

    # exact on the GPU: the ground truth and the exact row
    t0 = time.perf_counter()
    gx = GpuIndex.build(docs, device=args.device)
    res["gpu_exact_upload_s"] = time.perf_counter() - t0
    truth = gx.search(queries, k=10, tile=256).rows
    if args.exact_tile is None:
        sweep = {t: time_gpu(gx, queries, len(queries), args.device, 1, tile=t)["qps_compute_only"]
                 for t in (64, 128, 256, 512, 2048)}
        args.exact_tile = max(sweep, key=sweep.get)
        res["exact_tile_sweep"] = sweep
        log(f"exact tile sweep (q/s compute): {sweep} -> {args.exact_tile}")
    ex = {}
    for b in batches:
        if b > len(queries):
            continue
        ex[b] = time_gpu(gx, queries, b, args.device, max_batches=20 if b < 1024 else 5, tile=args.exact_tile)
        log(f"gpu exact batch {b}: {ex[b]['qps']:.0f} q/s (compute only {ex[b]['qps_compute_only']:.0f})")
    fwd_bytes = docs.nnz * (4 + 4) + docs.indptr.nbytes  # int32 ids... stored int64 ids + f32 values on device
    fwd_bytes_dev = gx.memory_bytes()
    big = max(ex) if ex else None
    if big and bw:
        tiles = -(-big // args.exact_tile)
        # traffic of this algorithm: each query tile streams the forward index once and writes,
        # then top-k reads, a (docs x tile) float32 score block; the query tile sits in L2
        per_tile = fwd_bytes_dev + 2 * len(docs) * args.exact_tile * 4
        bytes_per_batch = tiles * per_tile + big * docs.dim * 4
        t_batch = big / ex[big]["qps_compute_only"]
        res["exact_bandwidth"] = {"bytes_per_batch": bytes_per_batch, "batch": big, "seconds": t_batch,
                                  "achieved_gbs": bytes_per_batch / t_batch / 1e9, "card_gbs": bw,
                                  "fraction": bytes_per_batch / t_batch / 1e9 / bw,
                                  "index_once_seconds": fwd_bytes_dev / (bw * 1e9)}
    res["gpu_exact"] = {"qps": ex, "memory_bytes": fwd_bytes_dev}
    if torch.cuda.is_available():
        res["gpu_exact"]["max_allocated"] = int(torch.cuda.max_memory_allocated())
    del gx
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()

    # lsr Seismic on the CPU (all cores), then its blocks uploaded for the GPU approximate path
    t0 = time.perf_counter()
    si = SeismicIndex.build(docs[:2000], **params, threads=args.threads)  # compile the kernels once
    res["lsr_compile_s"] = time.perf_counter() - t0
    si, res["lsr_build_s"] = load_or_build(args, docs, params)
    res["lsr_bytes"] = si.stats()["bytes_total"]
    log(f"lsr seismic build {res['lsr_build_s']:.1f}s (compile {res['lsr_compile_s']:.1f}s), {res['lsr_bytes'] / 2**20:.0f} MiB")
    cpu_points = []
    if not args.skip_cpu:
        for qc, hf in grid:
            si.search(queries[:64], k=10, query_cut=qc, heap_factor=hf, threads=args.threads)
            t0 = time.perf_counter()
            h = si.search(queries, k=10, query_cut=qc, heap_factor=hf, threads=args.threads)
            dt = time.perf_counter() - t0
            cpu_points.append({"query_cut": qc, "heap_factor": hf, "qps": len(queries) / dt,
                               "recall": recall_at(h.rows, truth)})
            log(f"lsr cpu qc={qc} hf={hf}: {cpu_points[-1]['qps']:.0f} q/s, R@10 {cpu_points[-1]['recall']:.4f}")
    res["lsr_cpu"] = cpu_points

    t0 = time.perf_counter()
    ga = GpuIndex.from_index(si, device=args.device)
    res["gpu_approx_upload_s"] = time.perf_counter() - t0
    res["gpu_approx_memory_bytes"] = ga.memory_bytes()
    log(f"gpu approx upload {res['gpu_approx_upload_s']:.1f}s, {ga.memory_bytes() / 2**30:.2f} GiB")
    if args.approx_tile is None:
        from lsr.index import gpu as G

        sweep = {}
        for t in (512, 2048, 8192):
            kw = dict(mode="approx", query_cut=10, heap_factor=0.9, tile=t)
            ga.search(queries[:t], k=10, **kw)
            G.PROFILE.on = True
            G.PROFILE.times.clear()
            G.PROFILE.sizes.clear()
            t0 = time.perf_counter()
            ga.search(queries, k=10, **kw)
            sweep[t] = len(queries) / (time.perf_counter() - t0)
            G.PROFILE.on = False
            log(f"approx tile {t}: {sweep[t]:.0f} q/s (profiled); "
                + ", ".join(f"{k} {v * 1e3:.0f}ms" for k, v in G.PROFILE.times.items()) + "; per query: "
                + ", ".join(f"{k} {v / len(queries):.0f}" for k, v in G.PROFILE.sizes.items()))
        args.approx_tile = max(sweep, key=sweep.get)
        res["approx_tile_sweep"] = sweep
    res["tiles"] = {"exact": args.exact_tile, "approx": args.approx_tile}
    approx_points = []
    for qc, hf in grid:
        kw = dict(mode="approx", query_cut=qc, heap_factor=hf, tile=args.approx_tile)
        rows = np.concatenate([ga.search(queries[s : s + 4096], k=10, **kw).rows for s in range(0, len(queries), 4096)])
        point = {"query_cut": qc, "heap_factor": hf, "recall": recall_at(rows, truth), "qps": {}}
        for b in batches:
            if b <= len(queries):
                point["qps"][b] = time_gpu(ga, queries, b, args.device, max_batches=20 if b < 1024 else 3, **kw)
        approx_points.append(point)
        log(f"gpu approx qc={qc} hf={hf}: R@10 {point['recall']:.4f}, "
            + ", ".join(f"b{b}: {v['qps']:.0f} q/s" for b, v in point["qps"].items()))
    res["gpu_approx"] = approx_points
    if torch.cuda.is_available():
        res["gpu_approx_max_allocated"] = int(torch.cuda.max_memory_allocated())
    del ga

    if not args.skip_pyseismic:
        res["pyseismic"] = run_pyseismic(docs, queries, truth, params, grid, args.threads)

    print(table(res, batches))
    if args.out:
        args.out.write_text(json.dumps(res, indent=1, default=str))


def load_or_generate(args):
    """The synthetic collection, from ``--work`` when an earlier run left it there."""
    from lsr.index.sparse import load_vectors, save_vectors

    w = args.work / f"data-{args.n_docs}-{args.n_queries}" if args.work else None
    if w is not None and (w / "queries.npz").exists():
        return load_vectors(w / "docs.npz")[0], load_vectors(w / "queries.npz")[0]
    docs, queries = generate(args.n_docs, args.n_queries)
    docs = docs.astype(np.float16)  # the CPU indexes store f16; every system sees the same values
    if w is not None:
        w.mkdir(parents=True, exist_ok=True)
        save_vectors(w / "docs.npz", docs)
        save_vectors(w / "queries.npz", queries)
    return docs, queries


def load_or_build(args, docs, params):
    """(SeismicIndex, build seconds): loaded from ``--work`` (build seconds from that run) or built."""
    w = args.work / f"seismic-{args.n_docs}" if args.work else None
    if w is not None and (w / "build_s.txt").exists():
        return SeismicIndex.load(w), float((w / "build_s.txt").read_text())
    t0 = time.perf_counter()
    si = SeismicIndex.build(docs, **params, threads=args.threads)
    dt = time.perf_counter() - t0
    if w is not None:
        si.save(w)
        (w / "build_s.txt").write_text(str(dt))
    return si, dt


def profile(args, docs, queries, params) -> None:
    from lsr.index import gpu as G

    gx = GpuIndex.build(docs, device=args.device)
    for t in [int(x) for x in (args.exact_tiles or "").split(",") if x]:
        r = time_gpu(gx, queries, len(queries), args.device, 1, tile=t)
        log(f"exact tile {t}: {r['qps']:.0f} q/s (compute {r['qps_compute_only']:.0f})")
    truth = gx.search(queries, k=10, tile=256).rows
    del gx
    if not args.profile:
        return
    si, _ = load_or_build(args, docs, params)
    ga = GpuIndex.from_index(si, device=args.device)
    if any(sh.fwd_idx32 is not None for sh in ga._shards):
        # the Triton kernel against the torch-op path on the same device: same results, and the time of each
        kw = dict(k=10, mode="approx", query_cut=10, heap_factor=0.9, tile=2048)
        ga.search(queries[:2048], **kw)
        t0 = time.perf_counter()
        tri = ga.search(queries, **kw)
        t_tri = time.perf_counter() - t0
        saved = [sh.fwd_idx32 for sh in ga._shards]
        for sh in ga._shards:
            sh.fwd_idx32 = None
        t0 = time.perf_counter()
        ref = ga.search(queries, **kw)
        t_ref = time.perf_counter() - t0
        for sh, x in zip(ga._shards, saved):
            sh.fwd_idx32 = x
        same = float(np.mean(tri.rows == ref.rows))
        log(f"triton vs torch ops: rows equal {same:.5f}, max score diff "
            f"{float(np.nanmax(np.abs(np.where(np.isfinite(ref.scores), tri.scores - ref.scores, 0)))):.2e}; "
            f"{len(queries) / t_tri:.0f} vs {len(queries) / t_ref:.0f} q/s")
    for qc, hf in [(10, 0.9), (6, 0.8)]:
        for tile in (512, 2048, 8192):
            kw = dict(mode="approx", query_cut=qc, heap_factor=hf, tile=tile)
            ga.search(queries[:tile], k=10, **kw)
            G.PROFILE.on = True
            G.PROFILE.times.clear()
            G.PROFILE.sizes.clear()
            t0 = time.perf_counter()
            h = ga.search(queries, k=10, **kw)
            dt = time.perf_counter() - t0
            G.PROFILE.on = False
            n = len(queries)
            log(f"approx qc={qc} hf={hf} tile={tile}: {n / dt:.0f} q/s R@10 {recall_at(h.rows, truth):.4f}; "
                + ", ".join(f"{k} {v * 1e3:.0f}ms" for k, v in G.PROFILE.times.items()) + "; per query: "
                + ", ".join(f"{k} {v / n:.0f}" for k, v in G.PROFILE.sizes.items()))


def table(res: dict, batches) -> str:
    m = res["machine"]
    lines = [f"GPU benchmark: {m['n_docs']:,} docs, {m['n_queries']:,} queries, card {m['card']} x{m['gpus']}, "
             f"{m['cpu_cores']} host cores, torch {m['torch']}", ""]
    head = "| system | setting | R@10 | " + " | ".join(f"q/s batch {b}" for b in batches) + " |"
    lines += [head, "|" + "---|" * (3 + len(batches))]
    ex = res["gpu_exact"]["qps"]
    lines.append(f"| lsr GPU exact | tiled SpMM, tile {res['tiles']['exact']} | 1.000 | " + " | ".join(
        f"{ex[b]['qps']:,.0f} ({ex[b]['qps_compute_only']:,.0f})" if b in ex else "-" for b in batches) + " |")
    for p in res["gpu_approx"]:
        lines.append(f"| lsr GPU approx | qc={p['query_cut']} hf={p['heap_factor']} tile {res['tiles']['approx']} | {p['recall']:.3f} | " + " | ".join(
            f"{p['qps'][b]['qps']:,.0f} ({p['qps'][b]['qps_compute_only']:,.0f})" if b in p["qps"] else "-"
            for b in batches) + " |")
    for p in res.get("lsr_cpu") or []:
        lines.append(f"| lsr CPU Seismic ({m['cpu_cores']} cores) | qc={p['query_cut']} hf={p['heap_factor']} | "
                     f"{p['recall']:.3f} | " + " | ".join("-" for _ in batches[:-1]) + f" | {p['qps']:,.0f} |")
    ps = res.get("pyseismic")
    for p in (ps or {}).get("points", []):
        lines.append(f"| pyseismic-lsr ({m['cpu_cores']} cores) | qc={p['query_cut']} hf={p['heap_factor']} | "
                     f"{p['recall']:.3f} | " + " | ".join("-" for _ in batches[:-1]) + f" | {p['qps']:,.0f} |")
    lines += ["", "q/s: end to end with host<->device copies (in brackets: GPU compute only). CPU systems: one "
              "batch of all queries on all host cores.", ""]
    lines.append(f"| build/upload | seconds | memory |\n|---|---|---|")
    lines.append(f"| lsr GPU exact upload | {res['gpu_exact_upload_s']:.1f} | {res['gpu_exact']['memory_bytes'] / 2**30:.2f} GiB on GPU |")
    lines.append(f"| lsr Seismic build (CPU) + GPU upload | {res['lsr_build_s']:.1f} + {res['gpu_approx_upload_s']:.1f} | "
                 f"{res['lsr_bytes'] / 2**30:.2f} GiB host, {res['gpu_approx_memory_bytes'] / 2**30:.2f} GiB on GPU |")
    if ps:
        lines.append(f"| pyseismic-lsr build | {ps['build_s']:.1f} | - |")
    if "exact_bandwidth" in res:
        b = res["exact_bandwidth"]
        lines.append(f"\nExact path at batch {b['batch']}: {b['bytes_per_batch'] / 1e9:.1f} GB moved per batch "
                     f"(index streamed once per query tile, score blocks written and read) in "
                     f"{b['seconds'] * 1e3:.1f} ms = {b['achieved_gbs']:.0f} GB/s, {100 * b['fraction']:.1f}% of the "
                     f"card's {b['card_gbs']:.0f} GB/s. Reading the index just once would take "
                     f"{b['index_once_seconds'] * 1e3:.2f} ms.")
    best_ps = max((p["qps"] for p in (ps or {}).get("points", []) if p["recall"] >= 0.95), default=None)
    best_ga = max((p["qps"][max(p["qps"])]["qps"] for p in res["gpu_approx"] if p["recall"] >= 0.95), default=None)
    if best_ps and best_ga:
        lines.append(f"\nAt R@10 >= 0.95: GPU approx {best_ga:,.0f} q/s vs pyseismic-lsr {best_ps:,.0f} q/s = "
                     f"{best_ga / best_ps:.1f}x (target >= 10x).")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
