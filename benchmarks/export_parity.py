"""Export parity: the same document and query vectors searched by lsr (exact), by a Lucene impact
index built by Pyserini from ``lsr export --format anserini``, and by a Qdrant local-mode collection
loaded from ``lsr export --format qdrant``; nDCG@10 of each on a BEIR split, in one run.

    python benchmarks/export_parity.py --data ../shared/data/beir/scifact --split test \\
        --model models/inference-free-splade-tiny-scifact-nfcorpus --work runs/export-parity

Document vectors are encoded once (in chunks, resumable) and cached under ``--cache``
(default ``.cache/export``, git-ignored); queries are encoded by the model's query side. The
Anserini export quantises weights as ``round(w x scale)`` on both sides (``--scale``, default 100).
Prints a markdown table with each engine's nDCG@10 and its difference from lsr's.

Measured 2026-12-02 (SciFact test, 300 queries, 5,183 documents, shipped inference-free model; 2 shared
cores under heavy load; document encoding 2,645 s with one torch thread, cached afterwards):

| engine (same vectors) | nDCG@10 | vs lsr exact | build / load (s) | search, 300 queries (s) |
|---|---:|---:|---:|---:|
| lsr exact search | 0.7199 | — | — | 0.5 |
| Lucene impact index (Pyserini 1.6.0, scale 100) | 0.7187 | -0.0012 | 65.1 (with JVM start) | 25.0 |
| Qdrant local mode (qdrant-client 1.20.0) | 0.7199 | +0.0000 | 50.4 | 670.2 (pure-Python local mode) |
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import platform
import sys
import time
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]


def model_key(model: str) -> str:
    p = Path(model)
    h = hashlib.sha256()
    if p.is_dir():
        for f in sorted(p.glob("*.safetensors")):
            h.update(f.name.encode())
            h.update(str(f.stat().st_size).encode())
            with open(f, "rb") as fh:
                h.update(fh.read(1 << 20))
    else:
        h.update(model.encode())
    return f"{p.name}-{h.hexdigest()[:10]}"


def encode_documents_cached(model: str, corpus: Path, cache: Path, *, chunk: int = 500, threads: int = 1,
                            limit: int | None = None):
    """Document vectors of ``corpus`` (in file order) with their ids, encoded ``chunk`` documents at a
    time; each finished chunk is saved, so an interrupted run resumes where it stopped."""
    from lsr.index.corpus import read_corpus
    from lsr.index.sparse import SparseBatch, load_vectors, save_vectors

    docs = list(read_corpus(corpus, limit))
    folder = cache / f"{corpus.parent.name}-{model_key(model)}-{len(docs)}"
    final = folder / "docs.npz"
    if final.exists():
        return load_vectors(final)
    folder.mkdir(parents=True, exist_ok=True)
    enc = None
    parts = []
    for start in range(0, len(docs), chunk):
        part = folder / f"chunk-{start:06d}.npz"
        if not part.exists():
            if enc is None:
                import torch

                from lsr.models import SparseEncoder

                torch.set_num_threads(threads)
                enc = SparseEncoder.load(model)
            texts = [d.full_text for d in docs[start:start + chunk]]
            t0 = time.perf_counter()
            batch = enc.encode_documents(texts, batch_size=32, show_progress_bar=True)
            logging.info("docs %d-%d encoded in %.1f s", start, start + len(texts), time.perf_counter() - t0)
            save_vectors(part, batch, [d.id for d in docs[start:start + chunk]])
        parts.append(load_vectors(part))
    batch = SparseBatch.concat([b for b, _ in parts])
    ids = [i for _, ii in parts for i in (ii or [])]
    save_vectors(final, batch, ids)
    return batch, ids


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "beir" / "scifact",
                    help="a BEIR folder")
    ap.add_argument("--split", default="test")
    ap.add_argument("--model", default=str(ROOT / "models" / "inference-free-splade-tiny-scifact-nfcorpus"))
    ap.add_argument("--cache", type=Path, default=ROOT / ".cache" / "export", help="document vectors cache")
    ap.add_argument("--work", type=Path, default=ROOT / "runs" / "export-parity", help="exports and indexes")
    ap.add_argument("--scale", type=float, default=100.0)
    ap.add_argument("--threads", type=int, default=1, help="torch threads while encoding")
    ap.add_argument("--encode-only", action="store_true", help="fill the cache and stop")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    corpus = next(p for p in (args.data / "corpus.jsonl.gz", args.data / "corpus.jsonl") if p.exists())
    t0 = time.perf_counter()
    docs, doc_ids = encode_documents_cached(args.model, corpus, args.cache, threads=args.threads)
    logging.info("document vectors ready in %.1f s", time.perf_counter() - t0)
    if args.encode_only:
        return 0
    sys.path.insert(0, str(ROOT / "tests" / "service"))
    import export_engines as E  # the searches the parity test runs, shared

    from lsr.eval.data import load_beir
    from lsr.eval.metrics import evaluate
    from lsr.index.sparse import save_vectors
    from lsr.models import SparseEncoder
    from lsr.service.export import export_collection, lucene_tokens
    from lsr.service.ingest import ingest

    ds = load_beir(args.data, args.split)
    qids = list(ds.queries)
    t0 = time.perf_counter()
    queries = SparseEncoder.load(args.model).encode_queries([ds.queries[q] for q in qids])
    logging.info("%d queries encoded in %.1f s", len(qids), time.perf_counter() - t0)
    work = args.work
    if work.exists():
        import shutil

        shutil.rmtree(work)
    (work / "anserini").mkdir(parents=True)
    vec_file = work / "docs.npz"
    save_vectors(vec_file, docs, doc_ids)
    res: dict[str, dict[str, float]] = {}
    t0 = time.perf_counter()
    ingest(corpus, "parity", data_dir=work / "data", vectors=vec_file, model=args.model)
    logging.info("collection built in %.1f s", time.perf_counter() - t0)
    t0 = time.perf_counter()
    run = E.lsr_exact(docs, doc_ids, queries, qids)
    res["lsr exact"] = {"search_s": time.perf_counter() - t0, "build_s": 0.0}
    ans = export_collection(work / "data", "parity", work / "anserini" / "docs.jsonl", "anserini", scale=args.scale)
    qd = export_collection(work / "data", "parity", work / "qdrant.jsonl", "qdrant")
    logging.info("exports: %s / %s", ans, qd)
    build_s = E.pyserini_index(work / "anserini" / "docs.jsonl", work / "lucene")
    t0 = time.perf_counter()
    runs = {"lsr exact": run}
    runs["Lucene impact (Pyserini)"] = E.pyserini_search(work / "lucene", queries, qids, lucene_tokens(docs.vocab),
                                                         args.scale)
    res["Lucene impact (Pyserini)"] = {"build_s": build_s, "search_s": time.perf_counter() - t0}
    t0 = time.perf_counter()
    runs["Qdrant local mode"], load_s = E.qdrant_search(work / "qdrant.jsonl", queries, qids)
    res["Qdrant local mode"] = {"build_s": load_s, "search_s": time.perf_counter() - t0 - load_s}
    for name, r in runs.items():
        res[name]["ndcg"] = evaluate(r, ds.qrels, ["nDCG@10"]).aggregate["nDCG@10"]
    from importlib.metadata import version

    print(f"\nExport parity on {args.data.name} {args.split} ({len(qids)} queries, {len(doc_ids)} documents), "
          f"model {Path(args.model).name}, Anserini scale {args.scale:g}; {platform.node()}, "
          f"pyserini {version('pyserini')}, qdrant-client {version('qdrant-client')}\n")
    print("| engine | nDCG@10 | vs lsr exact | build/load (s) | search (s) |")
    print("|---|---:|---:|---:|---:|")
    base = res["lsr exact"]["ndcg"]
    for name, r in res.items():
        print(f"| {name} | {r['ndcg']:.4f} | {r['ndcg'] - base:+.4f} | {r['build_s']:.1f} | {r['search_s']:.1f} |")
    print(json.dumps({k: {kk: round(vv, 5) for kk, vv in v.items()} for k, v in res.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
