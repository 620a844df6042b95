"""Search latency of a collection with tombstones, and the time to open (and verify) it.

Builds a collection of synthetic SPLADE-like documents (benchmarks/synthetic.py), merges it into
one Seismic segment, then times single-query search (k=10) clean, with 25% of the documents
deleted but not yet reclaimed (bounded over-fetch), as the old code searched (over-fetch by every
tombstone), and after the merge policy rewrote the segment. Also times opening the collection with
segment checksums verified (the default) and without.

    python benchmarks/deletes.py --n-docs 20000 --n-queries 300
    python benchmarks/deletes.py --vectors DIR    # DIR/docs.npz + DIR/queries.npz from any source
                                                  # (lsr-encode output, synthetic.py --out, ...)
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from synthetic import generate  # noqa: E402

from lsr.index import load_vectors  # noqa: E402
from lsr.service.collection import Collection, CollectionStore, DocIn, MergePolicy  # noqa: E402


def _latency(col, queries, k=10, repeat=3, search=None) -> dict:
    search = search or (lambda q: col.search(q, k, {}))
    for i in range(min(20, len(queries))):  # warm-up
        search(queries[i])
    times = []
    for _ in range(repeat):
        for i in range(len(queries)):
            t = time.perf_counter()
            search(queries[i])
            times.append(time.perf_counter() - t)
    t = np.asarray(times) * 1e3
    return {"mean_ms": round(float(t.mean()), 4), "p50_ms": round(float(np.median(t)), 4),
            "p99_ms": round(float(np.percentile(t, 99)), 4)}


def _old_search(col, k):
    """The pre-fix search: ask each segment for k + (its number of tombstones), filter them all."""
    def run(q):
        view = col.view
        out = []
        for seg in view.segments:
            dead = view.dead[seg.name]
            rows, scores = seg.search(q, k + view.dead_counts[seg.name], {}, None)
            for r, s in zip(rows[0], scores[0]):
                if r < 0 or not np.isfinite(s) or dead[r]:
                    continue
                out.append((seg.ids[r], float(s)))
        return sorted(out, key=lambda c: -c[1])[:k]
    return run


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n-docs", type=int, default=20000)
    p.add_argument("--n-queries", type=int, default=300)
    p.add_argument("--delete-share", type=float, default=0.25)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--vectors", type=Path, default=None,
                   help="folder with docs.npz and queries.npz to use instead of the synthetic generator")
    args = p.parse_args(argv)
    if args.vectors is not None:
        docs, _ = load_vectors(args.vectors / "docs.npz")
        queries, _ = load_vectors(args.vectors / "queries.npz")
        queries = queries[: args.n_queries]
        data = str(args.vectors)
    else:
        docs, queries = generate(args.n_docs, args.n_queries)
        data = "benchmarks/synthetic.py"
    out: dict = {"data": data, "n_docs": len(docs), "n_queries": len(queries), "delete_share": args.delete_share}
    with tempfile.TemporaryDirectory() as tmp:
        store = CollectionStore(tmp, MergePolicy(min_docs=10**12, idle_s=1e12))
        store.load_all()
        col = store.create("bench", {"model": None, "dim": docs.dim})
        ids = [f"d{i}" for i in range(len(docs))]
        for s in range(0, len(docs), 1000):
            col.upsert([DocIn(ids[i], *docs.row(i), text=f"document {i}") for i in range(s, min(s + 1000, len(docs)))])
        t = time.perf_counter()
        col.merge(force=True)
        out["merge_s"] = round(time.perf_counter() - t, 3)
        out["clean"] = _latency(col, queries, repeat=args.repeat)
        rng = np.random.default_rng(0)
        victims = rng.choice(len(docs), int(len(docs) * args.delete_share), replace=False)
        col.delete([ids[i] for i in victims])
        out["deleted_bounded_overfetch"] = _latency(col, queries, repeat=args.repeat)
        out["research_count"] = col.view.research_count
        out["deleted_old_overfetch"] = _latency(col, queries, repeat=args.repeat, search=_old_search(col, 10))
        out["policy_picks"] = [s.name for s in col._select_folded(None)]
        t = time.perf_counter()
        col.merge()
        out["reclaim_merge_s"] = round(time.perf_counter() - t, 3)
        out["after_reclaim"] = _latency(col, queries, repeat=args.repeat)
        for key in ("deleted_bounded_overfetch", "deleted_old_overfetch", "after_reclaim"):
            out[f"ratio_{key}_vs_clean"] = {m: round(out[key][m] / out["clean"][m], 3) for m in ("mean_ms", "p50_ms")}
        path = col.path
        store.close()
        for verify in (True, False):
            best = float("inf")
            for _ in range(3):
                t = time.perf_counter()
                c = Collection.open(path, verify=verify)
                best = min(best, time.perf_counter() - t)
                c.close()
            out[f"open_s_verify_{verify}".lower()] = round(best, 4)
        out["collection_bytes"] = sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())
    print(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
