"""lsr SeismicIndex vs pyseismic-lsr vs scipy's exact product, on the same data, one run.

Prints a markdown report: build time, index memory, single-thread latency (mean, p99), batch QPS
and Recall@10 against the exact top-10; a trace of query_cut/heap_factor points for both indexes
(same build parameters), lsr/peer latency ratios at matched Recall@10 (each system at its own
cheapest point of the trace that reaches the floor), memory by part, and a targets table
(latency at Recall@10 >= 0.95, memory, build time: lsr / peer).

    python benchmarks/index.py --n-docs 100000 --n-queries 1000 --json /tmp/bench.json
    python benchmarks/index.py --data zipf ...     # the second generator (benchmarks/zipf_vectors.py)
    python benchmarks/index.py --data real --vectors .cache/bench/real ...   # SPLADE-tiny vectors, replicated
    python benchmarks/index.py --build-scaling 1,2 --n-postings 500,3500     # build time vs threads only
    python benchmarks/index.py --build-scaling 16,8,4,2,1 --n-postings 500,1000,3500,5000 --build-grid axes
        # n_postings at 16 threads, then threads at the first n_postings (not the whole cross product)

Data sets (``--data``): ``synthetic`` (benchmarks/synthetic.py), ``zipf`` (benchmarks/zipf_vectors.py:
heavier-tailed weights, ~50-term queries) and ``real`` (benchmarks/real_vectors.py: SPLADE-tiny
encodings of the local corpora, copied with per-copy term permutations up to ``--n-docs``).

Latency is measured through each library's public Python API, one query per call, on one
thread, with the two indexes interleaved point by point so machine noise hits both alike; they take
turns going first, and each system's mean is that of its best of ``--rounds`` rounds.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import real_vectors  # noqa: E402
import synthetic  # noqa: E402
import zipf_vectors  # noqa: E402

from lsr.index import SeismicIndex  # noqa: E402

BUILD = dict(n_postings=3500, centroid_fraction=0.1, min_cluster_size=2, summary_energy=0.4, max_fraction=1.5, doc_cut=15)
# the search grid both systems are traced over; each is then read at its own cheapest point per recall floor
# (heap_factor in steps of 0.05: a step of 0.1 changes a query's cost by about a third, so on a coarser grid
# which system looks faster depended on whose recall happened to land just above or below the floor)
# query_cut 2 since the Zipf runs at 500k, where both systems passed 0.95 already at (3, 1.0): without a cheaper point
# below the floor the curves' crossing cannot be read (docs/results/index-latency-2core-zipf500k.md)
POINTS = [(qc, hf) for qc in (2, 3, 4, 5, 6, 8, 10, 15) for hf in (1.0, 0.95, 0.9, 0.85, 0.8)]
TARGETS = {"latency": 0.8, "memory": 1.1, "build": 1.5}  # lsr / peer ratios asked for


def machine() -> dict:
    cpu = ""
    with contextlib.suppress(OSError):
        m = re.search(r"model name\s*:\s*(.*)", Path("/proc/cpuinfo").read_text())
        cpu = m.group(1) if m else ""
    import numba
    import scipy

    from importlib.metadata import PackageNotFoundError, version

    try:
        peer_v = version("pyseismic-lsr")
    except PackageNotFoundError:
        peer_v = "absent"
    return {
        "cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(), "numpy": np.__version__,
        "numba": numba.__version__, "scipy": scipy.__version__, "pyseismic-lsr": peer_v,
        "load_avg": os.getloadavg(),
    }


DATA_NAMES = {"synthetic": "synthetic SPLADE-like (benchmarks/synthetic.py)",
              "zipf": "Zipf generator (benchmarks/zipf_vectors.py: heavy-tailed weights, ~50-term queries)",
              "real": "real SPLADE-tiny vectors of SciFact + NFCorpus + MS MARCO sample, replicated by term permutation"}


def load_data(args):
    """(docs, queries, description) for --data; with --cache, generated data is kept there as .npz."""
    from lsr.index.sparse import load_vectors, save_vectors

    cache = None
    if args.cache is not None and args.data != "real":
        cache = args.cache / f"{args.data}-{args.n_docs}-{args.n_queries}-{args.seed}"
        if (cache / "queries.npz").exists():
            return load_vectors(cache / "docs.npz")[0], load_vectors(cache / "queries.npz")[0], DATA_NAMES[args.data]
    if args.data == "synthetic":
        docs, queries = synthetic.generate(args.n_docs, args.n_queries, args.seed)
    elif args.data == "zipf":
        docs, queries = zipf_vectors.generate(args.n_docs, args.n_queries, 7 + args.seed)
    else:
        docs, queries = real_vectors.load(args.vectors, args.n_docs, args.n_queries, seed=args.seed)
        model = real_vectors.encoder_name(args.vectors)
        if model != "splade-tiny":
            return docs, queries, DATA_NAMES["real"].replace("SPLADE-tiny", model)
    if cache is not None:
        cache.mkdir(parents=True, exist_ok=True)
        save_vectors(cache / "docs.npz", docs)
        save_vectors(cache / "queries.npz", queries)
    return docs, queries, DATA_NAMES[args.data]


def build_plan(threads: list[int], posts: list[int], grid: str) -> list[tuple[int, int]]:
    """(threads, n_postings) builds to run, most informative first: ``cross`` is every pair
    (thread counts outer); ``axes`` is every n_postings at the most threads, then every other
    thread count at the first n_postings."""
    threads = list(dict.fromkeys(threads))
    posts = list(dict.fromkeys(posts))
    if grid == "cross":
        return [(th, npost) for th in threads for npost in posts]
    top = max(threads)
    return [(top, npost) for npost in posts] + [(th, posts[0]) for th in threads if th != top]


def build_scaling(args, docs, desc, info) -> None:
    """Build both indexes at each planned (threads, n_postings); print a table, write JSON after
    every build (a run cut short keeps what it measured)."""
    threads = [int(x) for x in args.build_scaling.split(",")]
    posts = [int(x) for x in args.n_postings.split(",")]
    plan = build_plan(threads, posts, args.build_grid)
    t_start = time.perf_counter()
    SeismicIndex.build(docs[:2000], **{**BUILD, "n_postings": posts[0]}, threads=max(threads))  # compile
    info["compile_s"] = time.perf_counter() - t_start
    rows: list[dict] = []
    skipped = []
    for th, npost in plan:
        params = {**BUILD, "n_postings": npost}
        if args.time_budget and time.perf_counter() - t_start > args.time_budget:
            print(f"time budget spent: skipping n_postings={npost} threads={th}", file=sys.stderr)
            skipped.append({"n_postings": npost, "threads": th})
            continue
        t0, c0 = time.perf_counter(), _cpu_s()
        built = SeismicIndex.build(docs, **params, threads=th)
        lsr_s, lsr_cpu = time.perf_counter() - t0, _cpu_s() - c0
        stages = built.build_seconds
        del built
        peer_s = peer_cpu = None
        if not args.no_peer:
            c0 = _cpu_s()
            peer_s = Peer(docs, th, params).build_s
            peer_cpu = _cpu_s() - c0
        rows.append({"n_postings": npost, "threads": th, "lsr_s": lsr_s, "peer_s": peer_s,
                     "lsr_cpu_s": lsr_cpu, "peer_cpu_s": peer_cpu, "lsr_stages_s": stages})
        print(rows[-1], file=sys.stderr)
        report = build_report(rows, skipped, docs, desc, info)
        if args.json:
            info.update(build_scaling=rows, skipped=skipped, report=report)
            args.json.write_text(json.dumps(info, indent=2, default=float))
    report = build_report(rows, skipped, docs, desc, info)
    print(report)
    if args.json:
        info.update(build_scaling=rows, skipped=skipped, report=report)
        args.json.write_text(json.dumps(info, indent=2, default=float))


def build_report(rows: list[dict], skipped: list[dict], docs, desc, info) -> str:
    m = info["machine"]
    out = [f"**Data**: {desc}: {len(docs):,} docs ({docs.nnz / len(docs):.1f} nnz/doc).  ",
           f"**Machine**: {m['cpu']}, {m['cores']} cores, load avg {m['load_avg'][0]:.1f} at start; numba {m['numba']}, "
           f"pyseismic-lsr {m['pyseismic-lsr']}. Build parameters (both): "
           + ", ".join(f"{a}={b}" for a, b in BUILD.items() if a != "n_postings")
           + f". lsr's times exclude its one-off JIT compilation ({info.get('compile_s', 0):.1f} s, cached on disk after).", "",
           f"| n_postings | threads | lsr build (s) | pyseismic-lsr build (s) | lsr / peer (target ≤ {TARGETS['build']}) "
           "| lsr CPU (s) | peer CPU (s) | lsr / peer CPU | lsr speed-up vs 1 thread | peer speed-up vs 1 thread |",
           "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    one = {(r["n_postings"]): r for r in rows if r["threads"] == 1}
    for r in sorted(rows, key=lambda r: (r["n_postings"], r["threads"])):
        if r["peer_s"] is None:
            p = ratio = pc = cratio = "—"
        else:
            p, pc = f"{r['peer_s']:.1f}", f"{r['peer_cpu_s']:.1f}"
            ok = "" if r["lsr_s"] / r["peer_s"] <= TARGETS["build"] else " (missed)"
            ratio, cratio = f"{r['lsr_s'] / r['peer_s']:.2f}×{ok}", f"{r['lsr_cpu_s'] / r['peer_cpu_s']:.2f}×"
        base = one.get(r["n_postings"])
        su_l = f"{base['lsr_s'] / r['lsr_s']:.2f}×" if base else "—"
        su_p = f"{base['peer_s'] / r['peer_s']:.2f}×" if base and r["peer_s"] and base["peer_s"] else "—"
        out.append(f"| {r['n_postings']} | {r['threads']} | {r['lsr_s']:.1f} | {p} | {ratio} | {r['lsr_cpu_s']:.1f} | {pc} "
                   f"| {cratio} | {su_l} | {su_p} |")
    if skipped:
        out.append("")
        out.append("Not run (time budget spent): " + ", ".join(f"n_postings={r['n_postings']} threads={r['threads']}"
                                                             for r in skipped) + ".")
    out.append("")
    out.append("lsr build stages (wall s): " + "; ".join(
        f"n_postings={r['n_postings']}, {r['threads']} threads: "
        + ", ".join(f"{k} {v:.1f}" for k, v in r["lsr_stages_s"].items()) for r in rows) + ".")
    out.append("")
    out.append("Wall time is what a user waits; CPU time (user + system, all threads) is the work done, which a "
               "loaded machine does not inflate the way it inflates wall time.")
    return "\n".join(out)


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    k = truth.shape[1]
    return float(np.mean([len(set(f[f >= 0].tolist()) & set(t[t >= 0].tolist())) / k for f, t in zip(found, truth)]))


def frontier_latency(points: list[tuple[float, float]], floor: float) -> float | None:
    """Latency at which a system's trade-off curve reaches Recall@10 ``floor``: over the (latency, recall)
    points that no other point beats on both, linear interpolation between the last point below the floor
    and the first at or above it (the cheapest point itself when it already reaches the floor); None when
    no point reaches it."""
    front: list[tuple[float, float]] = []
    for lat, rec in sorted(points, key=lambda p: (p[0], -p[1])):
        if not front or rec > front[-1][1]:
            front.append((lat, rec))
    for i, (lat, rec) in enumerate(front):
        if rec >= floor:
            if i == 0:
                return lat
            l0, r0 = front[i - 1]
            return l0 + (lat - l0) * (floor - r0) / (rec - r0)
    return None


def exact_truth(docs, queries, k):
    """Exact top-k with scipy (float32 CSR product), plus its single-thread per-query latency."""
    D = docs.to_scipy().T.tocsr()  # dim x n: q (1 x dim) @ D gives a dense-able row
    Dt = docs.to_scipy()
    Q = queries.to_scipy()
    truth = np.empty((len(queries), k), np.int64)
    for s in range(0, len(queries), 200):
        S = (Q[s : s + 200] @ D).toarray()
        part = np.argpartition(-S, k, axis=1)[:, :k]
        ps = np.take_along_axis(S, part, 1)
        order = np.argsort(-ps, axis=1, kind="stable")
        truth[s : s + 200] = np.take_along_axis(part, order, 1)
    lat = []
    for i in range(min(len(queries), 50)):  # a side figure: 50 queries (one costs ~60 ms at 200k docs)
        t0 = time.perf_counter()
        s = (Dt @ Q[i].T).toarray().ravel()
        np.argpartition(-s, k)[:k]
        lat.append(time.perf_counter() - t0)
    return truth, np.asarray(lat)


@contextlib.contextmanager
def capture_stdout_fd():
    """Capture what native code writes to fd 1 (pyseismic prints its space usage there)."""
    sys.stdout.flush()
    saved = os.dup(1)
    with tempfile.TemporaryFile(mode="w+b") as tmp:
        os.dup2(tmp.fileno(), 1)
        box = {}
        try:
            yield box
        finally:
            sys.stdout.flush()
            os.dup2(saved, 1)
            os.close(saved)
            tmp.seek(0)
            box["text"] = tmp.read().decode("utf-8", "replace")


class Peer:
    def __init__(self, docs, threads, params=None):
        import seismic

        self.seismic = seismic
        ds = seismic.SeismicDataset()
        if hasattr(ds, "add_documents_by_id"):  # pyseismic-lsr >= 0.5.4
            ds.add_documents_by_id([str(i) for i in range(len(docs))], docs.indices.astype(np.int64), docs.values,
                                   docs.indptr)
        else:  # 0.5.2 (the newest wheel for Python 3.12): one call per document, tokens as strings
            names = np.array([str(t) for t in range(docs.dim)], dtype=seismic.get_seismic_string())
            for i in range(len(docs)):
                lo, hi = docs.indptr[i], docs.indptr[i + 1]
                ds.add_document(str(i), names[docs.indices[lo:hi]], np.ascontiguousarray(docs.values[lo:hi], np.float32))
        t0 = time.perf_counter()
        with capture_stdout_fd():
            self.index = seismic.SeismicIndex.build_from_dataset(ds, **(params or BUILD), num_threads=threads)
        self.build_s = time.perf_counter() - t0
        with capture_stdout_fd() as box:
            self.index.print_space_usage_byte()
        m = re.search(r"Total:\s*(\d+)\s*Bytes", box["text"])
        self.bytes = int(m.group(1)) if m else -1
        self.space_text = box["text"]

    def prepare(self, queries):
        st = self.seismic.get_seismic_string()
        self.qids = np.array([str(i) for i in range(len(queries))], dtype=st)
        self.qc = [np.array([str(int(x)) for x in queries.row(i)[0]], dtype=st) for i in range(len(queries))]
        self.qv = [np.ascontiguousarray(queries.row(i)[1], np.float32) for i in range(len(queries))]

    def _rows(self, res, k):
        out = np.full(k, -1, np.int64)
        for j, (_, _, d) in enumerate(res[:k]):
            out[j] = int(d)
        return out

    def latency(self, k, qc, hf):
        lat, rows = [], []
        for i in range(len(self.qc)):
            t0 = time.perf_counter()
            res = self.index.search(self.qids[i], self.qc[i], self.qv[i], k, qc, hf)
            lat.append(time.perf_counter() - t0)
            rows.append(self._rows(res, k))
        return np.asarray(lat), np.stack(rows)

    def batch(self, k, qc, hf, threads):
        t0 = time.perf_counter()
        self.index.batch_search(self.qids, self.qc, self.qv, k, qc, hf, num_threads=threads)
        return len(self.qc) / (time.perf_counter() - t0)


def lsr_latency(index, queries, k, qc, hf):
    lat, rows = [], []
    singles = [queries[i : i + 1] for i in range(len(queries))]
    for q in singles:
        t0 = time.perf_counter()
        h = index.search(q, k, query_cut=qc, heap_factor=hf, threads=1)
        lat.append(time.perf_counter() - t0)
        rows.append(h.rows[0])
    return np.asarray(lat), np.stack(rows)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-docs", type=int, default=100_000)
    ap.add_argument("--n-queries", type=int, default=1_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2, help="threads for build and batch search")
    ap.add_argument("--rounds", type=int, default=3,
                    help="latency rounds per point; a system's mean latency is that of its best round")
    ap.add_argument("--no-peer", action="store_true", help="skip pyseismic-lsr")
    ap.add_argument("--data", choices=sorted(DATA_NAMES), default="synthetic", help="which data set (see above)")
    ap.add_argument("--vectors", type=Path, default=Path(".cache/bench/real"),
                    help="--data real: folder of the encoded corpora (benchmarks/real_vectors.py encode)")
    ap.add_argument("--build-scaling", default=None, metavar="T1,T2,...",
                    help="only time the builds of both indexes at these thread counts")
    ap.add_argument("--n-postings", default="3500", help="--build-scaling: n_postings values, comma-separated")
    ap.add_argument("--time-budget", type=float, default=0.0,
                    help="--build-scaling: start no new build after this many seconds (0: no limit)")
    ap.add_argument("--build-grid", choices=("cross", "axes"), default="cross",
                    help="--build-scaling: every (threads, n_postings) pair, or n_postings at the most threads "
                         "then threads at the first n_postings")
    ap.add_argument("--points", default=None, metavar="QC:HF,...",
                    help="search points to trace (default: query_cut 3-15 x heap_factor 1.0/0.9/0.8)")
    ap.add_argument("--cache", type=Path, default=None,
                    help="keep generated data here (.npz) and reuse it on the next run with the same sizes")
    ap.add_argument("--json", type=Path, default=None, help="write all numbers here")
    args = ap.parse_args(argv)
    k = args.k
    info = {"machine": machine(), "command": " ".join(["python"] + sys.argv), "commit": _commit(),
            "args": {k_: str(v) for k_, v in vars(args).items()}, "build_params": BUILD}

    t0 = time.perf_counter()
    try:
        docs, queries, desc = load_data(args)
    except FileNotFoundError as exc:
        print(f"benchmarks/index.py: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    info["data"] = {"name": args.data, "description": desc, "docs": len(docs), "queries": len(queries), "nnz_per_doc": docs.nnz / len(docs),
                    "nnz_per_query": queries.nnz / len(queries), "gen_s": time.perf_counter() - t0}
    print(f"data: {info['data']}", file=sys.stderr)
    if args.build_scaling:
        build_scaling(args, docs, desc, info)
        return
    points = POINTS if not args.points else [(int(a), float(b)) for a, b in (x.split(":") for x in args.points.split(","))]
    truth, exact_lat = exact_truth(docs, queries, k)

    t0 = time.perf_counter()
    SeismicIndex.build(docs[:2000], **BUILD, threads=args.threads)  # JIT compilation (cached on disk after)
    info["compile_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    lsr = SeismicIndex.build(docs, **BUILD, threads=args.threads)
    lsr_build = time.perf_counter() - t0
    lsr_stats = lsr.stats()
    lsr_bytes = lsr_stats["bytes_total"]
    info["lsr_bytes"] = dict(sorted(lsr_stats["bytes"].items(), key=lambda x: -x[1]))
    lsr.search(queries[:2], k, threads=1)  # warm the kernels (cached compile)
    lsr.search(queries[:4], k, threads=args.threads)
    print(f"lsr build {lsr_build:.1f}s, {lsr_bytes / 1e6:.1f} MB", file=sys.stderr)

    peer = None
    if not args.no_peer:
        peer = Peer(docs, args.threads)
        peer.prepare(queries)
        print(f"peer build {peer.build_s:.1f}s, {peer.bytes / 1e6:.1f} MB", file=sys.stderr)

    # one untimed pass of each system over the queries: page in both indexes before the first point
    lsr_latency(lsr, queries, k, *points[0])
    if peer is not None:
        peer.latency(k, *points[0])
    trace = []
    for qc, hf in points:
        row = {"query_cut": qc, "heap_factor": hf}
        lm, pm = [], []
        for rnd in range(args.rounds):
            # the two systems take turns going first, so neither always meets the colder caches
            if peer is not None and rnd % 2 == 1:
                plat, prows = peer.latency(k, qc, hf)
                pm.append(plat)
            lat, rows = lsr_latency(lsr, queries, k, qc, hf)
            lm.append(lat)
            if peer is not None and rnd % 2 == 0:
                plat, prows = peer.latency(k, qc, hf)
                pm.append(plat)
        # each system's mean is that of its best round; p99 over all rounds
        lat = np.concatenate(lm)
        row.update(lsr_mean_ms=float(min(x.mean() for x in lm) * 1e3), lsr_p99_ms=float(np.percentile(lat, 99) * 1e3),
                   lsr_recall=recall(rows, truth))
        if peer is not None:
            plat = np.concatenate(pm)
            row.update(peer_mean_ms=float(min(x.mean() for x in pm) * 1e3),
                       peer_p99_ms=float(np.percentile(plat, 99) * 1e3), peer_recall=recall(prows, truth))
        trace.append(row)
        print(row, file=sys.stderr)

    def best(prefix, floor):
        ok = [r for r in trace if r.get(f"{prefix}_recall", -1) >= floor]
        return min(ok, key=lambda r: r[f"{prefix}_mean_ms"]) if ok else None

    ratios = []
    for floor in (0.90, 0.95, 0.99):
        bl, bp = best("lsr", floor), best("peer", floor) if peer is not None else None
        fl = frontier_latency([(r["lsr_mean_ms"], r["lsr_recall"]) for r in trace], floor)
        fp = frontier_latency([(r["peer_mean_ms"], r["peer_recall"]) for r in trace], floor) if peer else None
        ratios.append({"recall_floor": floor, "lsr": bl, "peer": bp,
                       "ratio": (bl["lsr_mean_ms"] / bp["peer_mean_ms"]) if (bl and bp) else None,
                       "lsr_frontier_ms": fl, "peer_frontier_ms": fp,
                       "frontier_ratio": (fl / fp) if (fl and fp) else None})

    # headline rows: each index at its fastest point with Recall@10 >= 0.95
    head_l = best("lsr", 0.95) or max(trace, key=lambda r: r["lsr_recall"])
    lsr_qps = len(queries) / _timed(lambda: lsr.search(queries, k, query_cut=head_l["query_cut"],
                                                       heap_factor=head_l["heap_factor"], threads=args.threads))
    rows_md = [("lsr SeismicIndex", lsr_build, lsr_bytes, head_l["lsr_mean_ms"], head_l["lsr_p99_ms"], lsr_qps,
                head_l["lsr_recall"], f"query_cut={head_l['query_cut']}, heap_factor={head_l['heap_factor']}")]
    if peer is not None:
        head_p = best("peer", 0.95) or max(trace, key=lambda r: r["peer_recall"])
        peer_qps = peer.batch(k, head_p["query_cut"], head_p["heap_factor"], args.threads)
        rows_md.append(("pyseismic-lsr", peer.build_s, peer.bytes, head_p["peer_mean_ms"], head_p["peer_p99_ms"],
                        peer_qps, head_p["peer_recall"], f"query_cut={head_p['query_cut']}, heap_factor={head_p['heap_factor']}"))
    exact_bytes = docs.indptr.nbytes + docs.indices.nbytes + docs.values.nbytes
    rows_md.append(("scipy exact (CSR product)", 0.0, exact_bytes, exact_lat.mean() * 1e3,
                    np.percentile(exact_lat, 99) * 1e3, float("nan"), 1.0, "exhaustive"))

    out = []
    m = info["machine"]
    out.append(f"**Data**: {desc}, {len(docs):,} docs ({info['data']['nnz_per_doc']:.1f} nnz/doc), "
               f"{len(queries):,} queries ({info['data']['nnz_per_query']:.1f} nnz/query), vocab 30,522, seed {args.seed}.  ")
    out.append(f"**Machine**: {m['cpu']}, {m['cores']} cores, load avg {m['load_avg'][0]:.1f} at start; Python {m['python']}, "
               f"numpy {m['numpy']}, numba {m['numba']}, scipy {m['scipy']}, pyseismic-lsr {m['pyseismic-lsr']}.  ")
    out.append(f"**Build parameters (both)**: {', '.join(f'{a}={b}' for a, b in BUILD.items())}; lsr also "
               f"refine={lsr.params.refine} (k-means steps after the random centroids, which the peer does not take); "
               f"build and batch on {args.threads} threads; latency single-thread, one query per call, k={k}.")
    out.append("")
    out.append(f"| index | build (s) | index memory (MB) | mean latency (ms) | p99 latency (ms) | batch QPS ({args.threads} threads) | Recall@10 | search setting |")
    out.append("|---|---:|---:|---:|---:|---:|---:|---|")
    for name, b, mem, mean, p99, qps, rec, setting in rows_md:
        qps_s = "—" if np.isnan(qps) else f"{qps:,.0f}"
        b_s = "—" if b == 0.0 else f"{b:.1f}"
        out.append(f"| {name} | {b_s} | {mem / 1e6:.1f} | {mean:.3f} | {p99:.3f} | {qps_s} | {rec:.3f} | {setting} |")
    out.append("")
    targets = []
    if peer is not None:
        r95 = ratios[1]
        lat = (r95["lsr"]["lsr_mean_ms"] if r95["lsr"] else None, r95["peer"]["peer_mean_ms"] if r95["peer"] else None)
        targets = [("single-thread latency at Recall@10 ≥ 0.95, each at its cheapest point (ms)", *lat, "latency"),
                   ("index memory (MB)", lsr_bytes / 1e6, peer.bytes / 1e6, "memory"),
                   (f"build on {args.threads} threads, n_postings {BUILD['n_postings']} (s)", lsr_build, peer.build_s, "build")]
        out.append("| measure | lsr | pyseismic-lsr | lsr / peer | asked | met |")
        out.append("|---|---:|---:|---:|---:|---|")
        for what, lv, pv, key in targets:
            if lv is None or pv is None:
                out.append(f"| {what} | {'—' if lv is None else f'{lv:.3f}'} | {'—' if pv is None else f'{pv:.3f}'} | — | "
                           f"≤ {TARGETS[key]}× | not measured |")
                continue
            ratio = lv / pv
            out.append(f"| {what} | {lv:.3f} | {pv:.3f} | {ratio:.2f}× | ≤ {TARGETS[key]}× | "
                       f"{'yes' if ratio <= TARGETS[key] else f'no (by {ratio / TARGETS[key] - 1:.0%})'} |")
        out.append("")
    out.append("| query_cut | heap_factor | lsr mean (ms) | lsr p99 (ms) | lsr R@10 | peer mean (ms) | peer p99 (ms) | peer R@10 |")
    out.append("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in trace:
        out.append(f"| {r['query_cut']} | {r['heap_factor']} | {r['lsr_mean_ms']:.3f} | {r['lsr_p99_ms']:.3f} | {r['lsr_recall']:.3f} | "
                   + (f"{r['peer_mean_ms']:.3f} | {r['peer_p99_ms']:.3f} | {r['peer_recall']:.3f} |" if peer else "— | — | — |"))
    out.append("")
    out.append("| Recall@10 ≥ | lsr fastest (ms, setting) | peer fastest (ms, setting) | lsr / peer latency | "
               "on the frontier: lsr / peer (ms) | frontier ratio |")
    out.append("|---:|---|---|---:|---|---:|")
    for r in ratios:
        lsr_s = f"{r['lsr']['lsr_mean_ms']:.3f} (qc={r['lsr']['query_cut']}, hf={r['lsr']['heap_factor']})" if r["lsr"] else "not reached"
        peer_s = f"{r['peer']['peer_mean_ms']:.3f} (qc={r['peer']['query_cut']}, hf={r['peer']['heap_factor']})" if r["peer"] else "not reached"
        ratio_s = f"{r['ratio']:.2f}×" if r["ratio"] else "—"
        fr = [("—" if x is None else f"{x:.3f}") for x in (r["lsr_frontier_ms"], r["peer_frontier_ms"])]
        fratio = f"{r['frontier_ratio']:.2f}×" if r["frontier_ratio"] else "—"
        out.append(f"| {r['recall_floor']:.2f} | {lsr_s} | {peer_s} | {ratio_s} | {fr[0]} / {fr[1]} | {fratio} |")
    out.append("")
    out.append("The frontier columns read each system's latency where its trade-off curve (the points no other point "
               "beats on both time and recall) crosses the floor, interpolated linearly between the two points "
               "around it; they do not depend on which grid step each system's recall happens to pass.")
    speedup = exact_lat.mean() * 1e3 / head_l["lsr_mean_ms"]
    out.append("")
    out.append(f"lsr vs scipy exact at Recall@10 ≥ 0.95: {speedup:.0f}× faster per query. "
               + (f"Build lsr/peer: {lsr_build / peer.build_s:.2f}×; memory lsr/peer: {lsr_bytes / peer.bytes:.2f}×." if peer else ""))
    top = list(info["lsr_bytes"].items())[:6]
    out.append("")
    out.append(f"lsr memory by array ({lsr_stats['summary_entries']:,} summary entries, {lsr_stats['blocks']:,} blocks): "
               + ", ".join(f"{name} {b / 1e6:.1f} MB" for name, b in top) + ".")
    report = "\n".join(out)
    print(report)
    if args.json:
        info.update(trace=trace, ratios=ratios, table=[dict(zip(
            ["index", "build_s", "bytes", "mean_ms", "p99_ms", "batch_qps", "recall", "setting"], r)) for r in rows_md],
            exact_speedup=speedup, report=report,
            targets=[{"measure": w, "lsr": lv, "peer": pv, "ratio": (lv / pv if lv and pv else None),
                      "asked": TARGETS[key]} for w, lv, pv, key in targets],
            peer_space=(peer.space_text if peer is not None else None))
        args.json.write_text(json.dumps(info, indent=2, default=float))


def _cpu_s() -> float:
    """User + system CPU seconds of this process, all threads."""
    import resource

    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def _commit() -> str:
    """The checkout's commit ($LSR_COMMIT where the tree travels without its .git)."""
    import subprocess

    if os.environ.get("LSR_COMMIT"):
        return os.environ["LSR_COMMIT"]
    with contextlib.suppress(OSError, subprocess.CalledProcessError):
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True,
                              check=True).stdout.strip()
    return "unknown"


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


if __name__ == "__main__":
    main()
