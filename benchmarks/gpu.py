"""GPU scoring path vs CPU peers on the same data, in one run, on each data set asked for.

Systems: lsr GPU approximate (Seismic blocks and summaries scored for the whole batch on the GPU),
lsr GPU exact (tiled sparse x dense product), lsr's CPU SeismicIndex on all host cores, and
pyseismic-lsr on all host cores. Reports queries/s at several batch sizes, Recall@10 against
exact, the ratio to pyseismic-lsr's best all-core q/s at Recall@10 >= 0.95, a torch-profiler
breakdown of where an approximate batch's time goes, and (``--exact-docs``) the exact path's
q/s and achieved memory bandwidth on a larger collection. Prints markdown tables, writes JSON.

    python benchmarks/gpu.py --data synthetic,zipf --n-docs 1000000 --n-queries 10000 --out gpu.json
    python benchmarks/gpu.py --data synthetic --n-docs 20000 --n-queries 256 --device cpu   # smoke test

Data: ``synthetic`` (benchmarks/synthetic.py), ``zipf`` (benchmarks/zipf_vectors.py), ``real``
(SPLADE-tiny encodings under ``--real-vectors``, replicated by benchmarks/real_vectors.py). The
generators' chunks are drawn in parallel worker processes (same output as their ``generate``).
pyseismic-lsr reads the collection from its binary format and builds in a second process while
lsr builds (build times are therefore not comparable; see benchmarks/index.py for those); its
searches run alone, after lsr's.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from lsr.index import SeismicIndex  # noqa: E402
from lsr.index.gpu import GpuIndex  # noqa: E402
from lsr.index.sparse import SparseBatch  # noqa: E402

PARAMS = dict(n_postings=3500, centroid_fraction=0.1, min_cluster_size=2, summary_energy=0.4,
              max_fraction=1.5, doc_cut=15)
GRID = [(10, 0.9), (10, 0.8), (6, 0.8), (4, 0.7), (3, 0.9), (3, 1.0), (2, 0.9), (20, 0.9), (15, 0.8), (20, 0.8)]


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def recall_at(rows: np.ndarray, truth: np.ndarray) -> float:
    hits = total = 0
    for a, b in zip(rows, truth):
        b = b[b >= 0]
        total += b.size
        hits += np.intersect1d(a[a >= 0], b).size
    return hits / max(total, 1)


# ---------------------------------------------------------------------------------------- data
def _synth_chunk(args):
    import synthetic

    n, ci, m = args
    return synthetic.Generator(0)._doc_chunk(ci, m, 120)


def _zipf_chunk(args):
    import zipf_vectors

    ci, m = args
    return zipf_vectors.ZipfGenerator(7)._doc_chunk(ci, m)  # (documents, their topics)


def make_data(kind: str, n_docs: int, n_queries: int, vectors: Path | None, procs: int):
    """(docs as float16-exact float32, queries): the generators' own output, chunks in parallel."""
    from multiprocessing import get_context

    chunk = 50_000
    jobs = [(c // chunk, min(chunk, n_docs - c)) for c in range(0, n_docs, chunk)]
    if kind == "synthetic":
        import synthetic

        with get_context("fork").Pool(min(procs, len(jobs))) as pool:
            docs = SparseBatch.concat(pool.map(_synth_chunk, [(n_docs, ci, m) for ci, m in jobs]))
        queries = synthetic.Generator(0).queries(n_queries, docs)
    elif kind == "zipf":
        import zipf_vectors

        with get_context("fork").Pool(min(procs, len(jobs))) as pool:
            parts = pool.map(_zipf_chunk, jobs)
        docs = SparseBatch.concat([p[0] for p in parts])
        g = zipf_vectors.ZipfGenerator(7)
        g.doc_topics = np.concatenate([p[1] for p in parts])
        queries = g.queries(n_queries, docs)
    elif kind == "real":
        import real_vectors

        if vectors is None:
            raise SystemExit("--data real needs --real-vectors DIR (benchmarks/real_vectors.py encode)")
        docs, queries = real_vectors.load(vectors, n_docs, n_queries)
    else:
        raise SystemExit(f"unknown data set {kind!r}: synthetic, zipf or real")
    # the CPU indexes store f16: every system sees the same values
    return docs.astype(np.float16).astype(np.float32), queries


def write_seismic_bin(path: Path, b: SparseBatch) -> None:
    """Seismic's inner binary format: u32 n, then per row u32 len, len u32 components, len f32 values."""
    n = len(b)
    lens = np.diff(b.indptr).astype(np.int64)
    out = np.empty(1 + n + 2 * b.nnz, np.uint32)
    out[0] = n
    head = np.arange(n, dtype=np.int64) + 1 + 2 * b.indptr[:-1]
    out[head] = lens
    rows = np.repeat(np.arange(n), lens)
    j = np.arange(b.nnz, dtype=np.int64) - b.indptr[rows]
    out[head[rows] + 1 + j] = b.indices.astype(np.uint32)
    out[head[rows] + 1 + lens[rows] + j] = b.values.astype(np.float32).view(np.uint32)
    out.tofile(path)


# ---------------------------------------------------------------------------------------- pyseismic
def pyseismic_worker(folder: Path, threads: int) -> None:
    """Build from folder/docs.bin, touch folder/built, wait for folder/go, search the grid."""
    import seismic

    from importlib.metadata import version

    t0 = time.perf_counter()
    index = seismic.SeismicIndexRaw.build(str(folder / "docs.bin"), **PARAMS)
    build_s = time.perf_counter() - t0
    (folder / "built").write_text(str(build_s))
    while not (folder / "go").exists():
        time.sleep(0.2)
    n = int(np.fromfile(folder / "queries.bin", np.uint32, count=1)[0])
    points = []
    for qc, hf in GRID:
        index.batch_search(str(folder / "queries.bin"), 10, qc, hf, 0, True, threads)  # warm-up
        t0 = time.perf_counter()
        res = index.batch_search(str(folder / "queries.bin"), 10, qc, hf, 0, True, threads)
        dt = time.perf_counter() - t0
        rows = np.full((n, 10), -1, np.int64)
        for i, r in enumerate(res):
            got = [int(d) for _, d in r][:10]
            rows[i, : len(got)] = got
        np.save(folder / f"rows-{qc}-{hf}.npy", rows)
        points.append({"query_cut": qc, "heap_factor": hf, "qps": n / dt})
    (folder / "result.json").write_text(json.dumps({"build_s": build_s, "points": points,
                                                    "version": version("pyseismic-lsr"), "threads": threads}))


def start_pyseismic(folder: Path, docs: SparseBatch, queries: SparseBatch, threads: int):
    try:
        import seismic  # noqa: F401
    except ImportError as exc:
        log(f"pyseismic-lsr not importable ({exc}); skipped")
        return None
    folder.mkdir(parents=True, exist_ok=True)
    for f in ("built", "go", "result.json"):
        (folder / f).unlink(missing_ok=True)
    write_seismic_bin(folder / "docs.bin", docs)
    write_seismic_bin(folder / "queries.bin", queries)
    return subprocess.Popen([sys.executable, __file__, "--pyseismic-worker", str(folder), "--threads", str(threads)],
                            stdout=open(folder / "log.txt", "w"), stderr=subprocess.STDOUT)


def finish_pyseismic(proc, folder: Path, truth: np.ndarray):
    if proc is None:
        return None
    (folder / "go").write_text("")
    proc.wait()
    if proc.returncode != 0:
        log(f"pyseismic worker failed (rc {proc.returncode}): {(folder / 'log.txt').read_text()[-2000:]}")
        return None
    res = json.loads((folder / "result.json").read_text())
    for p in res["points"]:
        p["recall"] = recall_at(np.load(folder / f"rows-{p['query_cut']}-{p['heap_factor']}.npy"), truth)
        log(f"pyseismic qc={p['query_cut']} hf={p['heap_factor']}: {p['qps']:.0f} q/s, R@10 {p['recall']:.4f}")
    return res


def wait_built(proc, folder: Path) -> None:
    while proc is not None and proc.poll() is None and not (folder / "built").exists():
        time.sleep(0.2)


# ---------------------------------------------------------------------------------------- timing
def sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        for i in range(torch.cuda.device_count()):
            torch.cuda.synchronize(i)


def time_gpu(gi, queries, batch: int, device: str, max_batches: int, **kw) -> dict:
    """Queries/s at a batch size, end to end (host arrays in, host arrays out), in steady state:
    the batches are searched once untimed, then timed (the first pass captures a CUDA graph for
    each new query shape, a cost a server pays once per shape; its rate is ``qps_first_pass``)."""
    n = len(queries)
    starts = list(range(0, n - batch + 1, batch))[:max_batches] or [0]
    rates = []
    for _ in range(2):
        sync(device)
        t0 = time.perf_counter()
        done = 0
        for s in starts:
            gi.search(queries[s : s + batch], k=10, **kw)
            done += min(batch, n - s)
        sync(device)
        rates.append(done / (time.perf_counter() - t0))
    return {"qps": rates[1], "qps_first_pass": rates[0], "queries": done}


def torch_profile(gi, queries, batch: int, device: str, reps: int, **kw) -> dict:
    """Where a batch's time goes (torch profiler): wall time, device-busy time, kernels launched,
    host waits for the device, copies, and the top kernels."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    qb = queries[:batch]
    gi.search(qb, k=10, **kw)
    sync(device)
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.startswith("cuda") else [])
    with profile(activities=acts) as prof:
        t0 = time.perf_counter()
        for _ in range(reps):
            gi.search(qb, k=10, **kw)
        sync(device)
        wall = (time.perf_counter() - t0) / reps
    ev = prof.events()
    dev_kind = getattr(torch.autograd.DeviceType, "CUDA", None)
    kernels = [e for e in ev if e.device_type == dev_kind]
    launches = sum(1 for e in ev if e.name in ("cudaLaunchKernel", "cuLaunchKernel", "cudaLaunchKernelExC",
                                                "cuLaunchKernelEx"))
    syncs = [e for e in ev if e.name in ("cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaEventSynchronize")]
    memcpy = [e for e in ev if e.name in ("cudaMemcpyAsync", "cudaMemcpy")]
    aten = sum(1 for e in ev if e.name.startswith("aten::"))
    mallocs = sum(1 for e in ev if e.name in ("cudaMalloc", "cudaHostAlloc", "cudaFree", "cudaFreeHost"))
    by_name: dict[str, float] = {}
    for e in kernels:
        key = e.name[:60]
        by_name[key] = by_name.get(key, 0.0) + getattr(e, "device_time_total", 0.0)
    busy = sum(getattr(e, "device_time_total", 0.0) for e in kernels) / 1e3 / reps  # ms
    copies = [e for e in kernels if "Memcpy" in e.name or "Memset" in e.name]
    top = sorted(by_name.items(), key=lambda x: -x[1])[:8]
    return {
        "batch": batch, "wall_ms": wall * 1e3, "device_busy_ms": busy,
        "kernels_per_batch": len(kernels) / reps, "launches_per_batch": launches / reps,
        "host_waits_per_batch": len(syncs) / reps, "aten_ops_per_batch": aten / reps,
        "host_wait_ms": sum(e.cpu_time_total for e in syncs) / 1e3 / reps,
        "memcpy_calls_per_batch": len(memcpy) / reps,
        "copy_kernels_ms": sum(getattr(e, "device_time_total", 0.0) for e in copies) / 1e3 / reps,
        "device_allocations": mallocs,
        "top_kernels_ms": [(k, v / 1e3 / reps) for k, v in top],
    }


def legacy_index(gi, path: Path):
    """The previous approximate path (an earlier gpu.py, given by --baseline) on the same uploaded
    shards, for a before/after profile."""
    import importlib.util

    sys.path.insert(0, str(path.parent))  # its own kernels module lies beside it
    spec = importlib.util.spec_from_file_location("lsr_gpu_baseline", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    old = mod.GpuIndex(gi._shards, gi.dim, gi.n_rows, gi._idmap, layout=True)
    old.has_blocks = True
    for sh in gi._shards:  # the older path scored added rows from this array
        sh.always = None
    return old


# ---------------------------------------------------------------------------------------- one data set
def run_dataset(kind: str, args, info: dict) -> dict:
    import torch

    res: dict = {"data": kind, "params": PARAMS}
    t0 = time.perf_counter()
    docs, queries = make_data(kind, args.n_docs, args.n_queries, args.real_vectors, args.threads)
    res["data_s"] = time.perf_counter() - t0
    res["docs_nnz_mean"] = docs.nnz / len(docs)
    res["queries_nnz_mean"] = queries.nnz / len(queries)
    log(f"[{kind}] data: {docs!r} {queries!r} in {res['data_s']:.1f}s")
    folder = args.work / f"pyseismic-{kind}"
    proc = None if args.skip_pyseismic else start_pyseismic(folder, docs, queries, args.threads)

    # exact on the GPU: the ground truth and the exact row
    gx = GpuIndex.build(docs, device=args.device)
    truth = gx.search(queries, k=10).rows
    ex = {}
    for b in args.batches:
        if b <= len(queries):
            ex[b] = time_gpu(gx, queries, b, args.device, max_batches=3 if b >= 1024 else 10)
    del gx
    if torch.cuda.is_available():
        torch.cuda.empty_cache()

    # lsr Seismic on the CPU (all cores); pyseismic builds at the same time in its own process
    SeismicIndex.build(docs[:2000], **PARAMS, threads=args.threads)  # compile the kernels once
    t0 = time.perf_counter()
    si = SeismicIndex.build(docs, **PARAMS, threads=args.threads)
    res["lsr_build_s_concurrent"] = time.perf_counter() - t0
    log(f"[{kind}] lsr build {res['lsr_build_s_concurrent']:.1f}s (beside pyseismic's build)")
    t0 = time.perf_counter()
    wait_built(proc, folder)
    res["waited_for_pyseismic_build_s"] = time.perf_counter() - t0
    cpu = []
    for qc, hf in GRID[: args.cpu_points]:
        si.search(queries[:64], k=10, query_cut=qc, heap_factor=hf, threads=args.threads)
        t0 = time.perf_counter()
        h = si.search(queries, k=10, query_cut=qc, heap_factor=hf, threads=args.threads)
        cpu.append({"query_cut": qc, "heap_factor": hf, "qps": len(queries) / (time.perf_counter() - t0),
                    "recall": recall_at(h.rows, truth)})
        log(f"[{kind}] lsr cpu qc={qc} hf={hf}: {cpu[-1]['qps']:.0f} q/s, R@10 {cpu[-1]['recall']:.4f}")
    res["lsr_cpu"] = cpu

    t0 = time.perf_counter()
    ga = GpuIndex.from_index(si, device=args.device)
    res["gpu_approx_upload_s"] = time.perf_counter() - t0
    res["gpu_approx_memory_bytes"] = ga.memory_bytes()
    del si
    log(f"[{kind}] gpu approx upload {res['gpu_approx_upload_s']:.1f}s, {ga.memory_bytes() / 2**30:.2f} GiB")
    points = []
    for qc, hf in GRID:
        kw = dict(mode="approx", query_cut=qc, heap_factor=hf)
        rows = ga.search(queries, k=10, **kw).rows
        p = {"query_cut": qc, "heap_factor": hf, "recall": recall_at(rows, truth), "qps": {}, "qps_first_pass": {}}
        for b in args.batches:
            if b <= len(queries):
                t = time_gpu(ga, queries, b, args.device, max_batches=10 if b < 1024 else 3, **kw)
                p["qps"][b], p["qps_first_pass"][b] = t["qps"], t["qps_first_pass"]
        points.append(p)
        log(f"[{kind}] gpu approx qc={qc} hf={hf}: R@10 {p['recall']:.4f}, "
            + ", ".join(f"b{b}: {v:.0f}" for b, v in p["qps"].items()))
    res["gpu_approx"] = points
    res["gpu_exact"] = ex
    # where a batch's time goes, at the fastest setting that keeps R@10 >= 0.95
    ok = [p for p in points if p["recall"] >= 0.95] or points
    best = max(ok, key=lambda p: p["qps"].get(max(p["qps"]), 0))
    kw = dict(mode="approx", query_cut=best["query_cut"], heap_factor=best["heap_factor"])
    res["profile_setting"] = kw
    if any(sh.fwd_idx32 is not None for sh in ga._shards):
        # the Triton kernels against the torch-op path on the same device: the same rows expected
        # (the first 200 queries: the torch-op path's candidate lists grow with the batch)
        sub = queries[: min(len(queries), 200)]
        fused = ga.search(sub, k=10, **kw).rows
        saved = [sh.fwd_idx32 for sh in ga._shards]
        for sh in ga._shards:
            sh.fwd_idx32 = None
        ref = ga.search(sub, k=10, **kw).rows
        for sh, x in zip(ga._shards, saved):
            sh.fwd_idx32 = x
        res["kernels_vs_torch_ops"] = {"rows_equal": float(np.mean(fused == ref)),
                                       "recall_kernels": recall_at(fused, truth[: len(sub)]),
                                       "recall_torch_ops": recall_at(ref, truth[: len(sub)]), "queries": len(sub)}
        log(f"[{kind}] Triton kernels vs torch ops: {res['kernels_vs_torch_ops']}")
    if any(sh.fwd_idx32 is not None for sh in ga._shards):
        # the approximate step's forms side by side, same setting: sized from the batch (the host
        # waits twice per candidate stage), static shapes, static shapes replayed as a CUDA graph,
        # and what `auto` picks per batch (lsr.index.gpu._static_ok)
        # and the sized step with query tiles in flight (lsr.index.gpu._Streams): one tile at a time,
        # the batch in 2 or 4 tiles with two in flight (each on its own stream)
        ab = {}
        one = {"LSR_GPU_STATIC": "0", "LSR_GPU_INFLIGHT": "1"}
        two = {"LSR_GPU_STATIC": "0", "LSR_GPU_INFLIGHT": "2"}
        for name, env, parts in (("dynamic, one tile", one, 1),
                                 ("dynamic, 2 tiles, 2 in flight", two, 2),
                                 ("dynamic, 4 tiles, 2 in flight", two, 4),
                                 ("dynamic, 8 tiles, 2 in flight", two, 8),
                                 ("static", {"LSR_GPU_STATIC": "1", "LSR_GPU_GRAPHS": "0"}, 1),
                                 ("static+graph", {"LSR_GPU_STATIC": "1"}, 1), ("auto", {}, 0)):
            os.environ.update(env)
            rows = ga.search(queries[:1024], k=10, **kw).rows
            ab[name] = {"recall_1024": recall_at(rows, truth[:1024]), "qps": {
                b: time_gpu(ga, queries, b, args.device, max_batches=20 if b < 1024 else 3,
                            **(dict(kw, tile=-(-b // parts)) if parts else kw))["qps"]
                for b in args.batches if b <= len(queries)}}
            for key in env:
                os.environ.pop(key)
        res["step_ab"] = ab
        log(f"[{kind}] approximate step forms at {kw}: {ab}")
    # per-stage device time and how full the padded candidate matrices are (each stage waits)
    from lsr.index import gpu as gpu_mod

    stages = {}
    for b in args.profile_batches:
        if b <= len(queries):
            gpu_mod.PROFILE.on, gpu_mod.PROFILE.times, gpu_mod.PROFILE.sizes = True, {}, {}
            ga.search(queries[:b], k=10, **kw)
            stages[b] = {"ms": {n: v * 1e3 for n, v in gpu_mod.PROFILE.times.items()},
                         "sizes": dict(gpu_mod.PROFILE.sizes)}
    gpu_mod.PROFILE.on = False
    res["stages"] = stages
    log(f"[{kind}] stages at {kw}: {stages}")
    res["profile"] = [torch_profile(ga, queries, b, args.device, 5 if b < 1024 else 2, **kw)
                      for b in args.profile_batches if b <= len(queries)]
    if args.baseline:
        old = legacy_index(ga, args.baseline)
        okw = dict(kw, tile=8192)  # the earlier default tile (256) was slower still
        res["baseline_profile"] = [torch_profile(old, queries, b, args.device, 3 if b < 1024 else 1, **okw)
                                   for b in args.profile_batches if b <= len(queries)]
        rows = old.search(queries, k=10, **okw).rows
        res["baseline"] = {"recall": recall_at(rows, truth), "qps": {
            b: time_gpu(old, queries, b, args.device, 5 if b < 1024 else 2, **okw)["qps"]
            for b in args.batches if b <= len(queries)}}
        log(f"[{kind}] baseline: {res['baseline']}")
    del ga
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    res["pyseismic"] = finish_pyseismic(proc, folder, truth)
    if kind == "synthetic":
        args.synthetic = (docs, queries)
    print(table(res, info, args.batches), flush=True)
    return res


def exact_scale(args, info: dict) -> dict:
    """The exact path on ``--exact-docs`` documents: the synthetic collection repeated (the exact
    path's cost depends on the non-zeros and the batch, not on which documents they are), q/s at
    ``--exact-batch``."""
    import torch

    docs, queries = getattr(args, "synthetic", None) or make_data("synthetic", args.n_docs, args.exact_batch * 4,
                                                                  None, args.threads)
    n_copies = -(-args.exact_docs // len(docs))
    big = SparseBatch.concat([docs] * n_copies)[: args.exact_docs]
    t0 = time.perf_counter()
    gx = GpuIndex.build(big, device=args.device)
    upload = time.perf_counter() - t0
    r = time_gpu(gx, queries, args.exact_batch, args.device, 3)
    # bytes that must cross HBM per batch in this algorithm: the index (row pointers, int64 ids,
    # f32 values as the sparse product reads them) once per query tile, the (docs x tile) f32
    # score block written and read back for the top-k
    tile = min(args.exact_batch, 1024)
    tiles = -(-args.exact_batch // tile)
    index_bytes = big.indptr.nbytes + big.nnz * (8 + 4)
    moved = tiles * (index_bytes + 2 * len(big) * tile * 4)
    t_batch = args.exact_batch / r["qps"]
    out = {"docs": len(big), "nnz": big.nnz, "batch": args.exact_batch, "qps": r["qps"], "upload_s": upload,
           "bytes_per_batch": moved, "seconds_per_batch": t_batch, "achieved_gbs": moved / t_batch / 1e9,
           "card_gbs": args.bandwidth_gbs, "fraction": moved / t_batch / 1e9 / args.bandwidth_gbs,
           "index_bytes": index_bytes}
    log(f"exact at {len(big):,} docs, batch {args.exact_batch}: {r['qps']:.0f} q/s; {out['achieved_gbs']:.0f} GB/s "
        f"= {100 * out['fraction']:.1f}% of {args.bandwidth_gbs:.0f} GB/s")
    del gx
    torch.cuda.empty_cache() if torch.cuda.is_available() else None
    return out


# ---------------------------------------------------------------------------------------- report
def table(res: dict, info: dict, batches) -> str:
    kind = res["data"]
    lines = [f"### {kind}: {info['n_docs']:,} docs, {info['n_queries']:,} queries, card {info['card']}, "
             f"{info['cpu_cores']} host cores, torch {info['torch']}", ""]
    lines += ["| system | setting | R@10 | " + " | ".join(f"q/s batch {b}" for b in batches) + " |",
              "|" + "---|" * (3 + len(batches))]
    ex = res["gpu_exact"]
    lines.append("| lsr GPU exact | tiled SpMM | 1.000 | " + " | ".join(
        f"{ex[b]['qps']:,.0f}" if b in ex else "-" for b in batches) + " |")
    for p in res["gpu_approx"]:
        lines.append(f"| lsr GPU approx | qc={p['query_cut']} hf={p['heap_factor']} | {p['recall']:.3f} | "
                     + " | ".join(f"{p['qps'][b]:,.0f}" if b in p["qps"] else "-" for b in batches) + " |")
    if "baseline" in res:
        b0 = res["baseline"]
        lines.append(f"| lsr GPU approx, previous code (tile 8192) | {res['profile_setting']['query_cut']}/"
                     f"{res['profile_setting']['heap_factor']} | {b0['recall']:.3f} | "
                     + " | ".join(f"{b0['qps'][b]:,.0f}" if b in b0["qps"] else "-" for b in batches) + " |")
    n = info["cpu_cores"]
    for p in res.get("lsr_cpu") or []:
        lines.append(f"| lsr CPU Seismic ({n} threads) | qc={p['query_cut']} hf={p['heap_factor']} | "
                     f"{p['recall']:.3f} | all queries at once: {p['qps']:,.0f} |" + " |" * (len(batches) - 1))
    ps = res.get("pyseismic")
    for p in (ps or {}).get("points", []):
        lines.append(f"| pyseismic-lsr {ps['version']} ({ps['threads']} threads) | qc={p['query_cut']} "
                     f"hf={p['heap_factor']} | {p['recall']:.3f} | all queries at once: {p['qps']:,.0f} |"
                     + " |" * (len(batches) - 1))
    best_ps = max((p["qps"] for p in (ps or {}).get("points", []) if p["recall"] >= 0.95), default=None)
    if best_ps:
        lines += ["", f"Ratios at R@10 >= 0.95 (GPU approx best at each batch / pyseismic-lsr best, "
                      f"{best_ps:,.0f} q/s):", ""]
        lines += ["| batch | GPU approx q/s | setting | ratio |", "|---|---|---|---|"]
        for b in batches:
            cands = [(p["qps"][b], p) for p in res["gpu_approx"] if p["recall"] >= 0.95 and b in p["qps"]]
            if cands:
                q, p = max(cands, key=lambda x: x[0])
                lines.append(f"| {b} | {q:,.0f} | qc={p['query_cut']} hf={p['heap_factor']} | {q / best_ps:.2f}x |")
    if "step_ab" in res:
        ab = res["step_ab"]
        lines += ["", f"The approximate step's forms ({res['profile_setting']}; R@10 on the first 1,024 queries):", "",
                  "| form | R@10 | " + " | ".join(f"q/s batch {b}" for b in batches) + " |",
                  "|" + "---|" * (2 + len(batches))]
        for name, r in ab.items():
            lines.append(f"| {name} | {r['recall_1024']:.3f} | "
                         + " | ".join(f"{r['qps'][b]:,.0f}" if b in r["qps"] else "-" for b in batches) + " |")
    lines += ["", f"Profile ({res['profile_setting']}):", "",
              "| code | batch | wall ms | device busy ms | kernels | host waits (ms) | copies | top kernels (ms) |",
              "|---|---|---|---|---|---|---|---|"]
    for name, prof in (("now", res["profile"]), ("previous", res.get("baseline_profile") or [])):
        for p in prof:
            top = "; ".join(f"{k} {v:.2f}" for k, v in p["top_kernels_ms"][:4])
            lines.append(f"| {name} | {p['batch']} | {p['wall_ms']:.2f} | {p['device_busy_ms']:.2f} | "
                         f"{p['kernels_per_batch']:.0f} | {p['host_waits_per_batch']:.0f} ({p['host_wait_ms']:.2f}) | "
                         f"{p['memcpy_calls_per_batch']:.0f} | {top} |")
    lines.append(f"\nGPU approx upload {res['gpu_approx_upload_s']:.1f}s, "
                 f"{res['gpu_approx_memory_bytes'] / 2**30:.2f} GiB on the GPU.")
    return "\n".join(lines)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="synthetic", help="comma list of synthetic, zipf, real")
    ap.add_argument("--real-vectors", type=Path, default=None, help="folder of benchmarks/real_vectors.py encode")
    ap.add_argument("--n-docs", type=int, default=1_000_000)
    ap.add_argument("--n-queries", type=int, default=10_000)
    ap.add_argument("--device", default="cuda", help="cuda, cuda:all (split over every GPU) or cpu")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--batches", default="64,1024,10000")
    ap.add_argument("--profile-batches", default="64,1024,10000")
    ap.add_argument("--cpu-points", type=int, default=2, help="lsr CPU settings to time (of the grid)")
    ap.add_argument("--baseline", type=Path, default=None, help="an earlier index/gpu.py to profile beside")
    ap.add_argument("--exact-docs", type=int, default=0, help="also time the exact path on this many documents")
    ap.add_argument("--exact-batch", type=int, default=500)
    ap.add_argument("--bandwidth-gbs", type=float, default=None, help="card bandwidth; default from the card name")
    ap.add_argument("--skip-pyseismic", action="store_true")
    ap.add_argument("--work", type=Path, default=Path("/tmp/lsr-gpu-bench"))
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--pyseismic-worker", type=Path, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.pyseismic_worker:
        return pyseismic_worker(args.pyseismic_worker, args.threads)
    import torch

    args.batches = [int(b) for b in args.batches.split(",")]
    args.profile_batches = [int(b) for b in args.profile_batches.split(",")]
    card = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    args.bandwidth_gbs = args.bandwidth_gbs or (4800.0 if "H200" in card else 3350.0 if "H100" in card else 100.0)
    info = {"card": card, "gpus": torch.cuda.device_count() if torch.cuda.is_available() else 0,
            "cpu_cores": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__,
            "n_docs": args.n_docs, "n_queries": args.n_queries, "device": args.device,
            "command": "python benchmarks/gpu.py " + " ".join(argv if argv is not None else sys.argv[1:])}
    try:  # LSR_COMMIT: where the run happens on a copy of the tree without its git folder
        info["commit"] = os.environ.get("LSR_COMMIT") or subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip() or None
    except OSError:
        info["commit"] = None
    log(f"machine: {info}")
    args.work.mkdir(parents=True, exist_ok=True)
    out: dict = {"machine": info, "data": {}}
    for kind in args.data.split(","):
        out["data"][kind] = run_dataset(kind, args, info)
        if args.out:
            args.out.write_text(json.dumps(out, indent=1, default=str))
    if args.exact_docs:
        out["exact_scale"] = exact_scale(args, info)
        if args.out:
            args.out.write_text(json.dumps(out, indent=1, default=str))


if __name__ == "__main__":
    main()
