"""SPLADE-tiny on SciFact test, end to end: encode the corpus (256 document tokens), exact search
through lsr.index.ExactIndex, nDCG@10 with ir-measures.

    python benchmarks/scifact_splade.py --data /work/shared/data/beir/scifact --cache .cache

Document vectors are cached (``<cache>/scifact-<model>-d<len>.npz``, ids included) and reused.
Also reports the inference-free use (same documents, BM25-IDF query weights, no query model).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np


def search(docs, doc_ids, queries, k=100):
    from lsr.index import ExactIndex

    hits = ExactIndex.build(docs, ids=list(doc_ids)).search(queries, k=k)
    return hits.ids, hits.scores, "lsr.index.ExactIndex"


def ndcg10(run_ids, run_scores, qids, qrels):
    import ir_measures
    from ir_measures import nDCG

    run = []
    for qi, qid in enumerate(qids):
        for did, s in zip(run_ids[qi], run_scores[qi]):
            if did is None or (isinstance(did, (int, np.integer)) and did < 0) or not np.isfinite(s):
                continue
            run.append(ir_measures.ScoredDoc(qid, str(did), float(s)))
    qrels_l = [ir_measures.Qrel(q, d, r) for q, ds in qrels.items() for d, r in ds.items()]
    return ir_measures.calc_aggregate([nDCG @ 10], qrels_l, run)[nDCG @ 10]


def main(argv=None):
    from lsr import load_vectors, save_vectors
    from lsr.index.corpus import read_corpus, read_qrels, read_queries
    from lsr.models import SparseEncoder
    from lsr.models.inference_free import IdfQueryEncoder

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default="/work/shared/data/beir/scifact")
    ap.add_argument("--model", default="splade-tiny")
    ap.add_argument("--split", default="test")
    ap.add_argument("--max-doc-length", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--cache", default=".cache", help="folder for the document vectors")
    ap.add_argument("--device", default=None)
    ap.add_argument("--precision", choices=["auto", "fp32"], default="auto", help="fp32: no bf16 autocast on GPU")
    ap.add_argument("--encode-only", action="store_true", help="encode and cache the documents, no evaluation")
    args = ap.parse_args(argv)

    data = Path(args.data)
    docs_read = list(read_corpus(data))
    doc_ids, doc_texts = [d.id for d in docs_read], [d.full_text for d in docs_read]
    q_all = read_queries(data)
    q_all_ids, q_all_texts = list(q_all), list(q_all.values())
    qrels = read_qrels(data / "qrels" / f"{args.split}.tsv") if not args.encode_only else {}
    keep = [i for i, q in enumerate(q_all_ids) if q in qrels]
    qids = [q_all_ids[i] for i in keep]
    qtexts = [q_all_texts[i] for i in keep]

    enc = SparseEncoder.load(args.model, device=args.device, max_doc_length=args.max_doc_length)
    enc.amp = args.precision == "auto"
    name = Path(str(args.model)).name
    cache = Path(args.cache) / f"scifact-{name}-d{args.max_doc_length}.npz"
    if cache.exists():
        docs, ids = load_vectors(cache)
        assert ids == doc_ids, f"{cache} holds other ids; delete it"
        enc_s = float("nan")
    else:
        t0 = time.perf_counter()
        docs = enc.encode_documents(doc_texts, batch_size=args.batch_size, show_progress_bar=True)
        enc_s = time.perf_counter() - t0
        cache.parent.mkdir(parents=True, exist_ok=True)
        save_vectors(cache, docs, doc_ids)
        print(json.dumps({"encoded": len(doc_ids), "seconds": round(enc_s, 2), "docs_per_s": round(len(doc_ids) / enc_s, 1),
                          "device": str(enc.device), "precision": args.precision, "out": str(cache)}))
    if args.encode_only:
        return None
    queries = enc.encode_queries(qtexts, batch_size=args.batch_size)
    run_ids, run_scores, how = search(docs, doc_ids, queries)
    score = ndcg10(run_ids, run_scores, qids, qrels)

    idf = IdfQueryEncoder.from_corpus(enc.tokenizer.backend_tokenizer, doc_texts, dim=enc.dim)
    q_idf = idf.encode_queries(qtexts)
    r2_ids, r2_scores, _ = search(docs, doc_ids, q_idf)
    score_idf = ndcg10(r2_ids, r2_scores, qids, qrels)

    res = {
        "model": str(args.model), "split": args.split, "n_docs": len(doc_ids), "n_queries": len(qids),
        "max_doc_length": args.max_doc_length, "search": how,
        "nDCG@10": round(float(score), 4), "nDCG@10 (IDF queries, inference-free)": round(float(score_idf), 4),
        "avg_doc_nnz": round(docs.nnz / len(docs), 1), "avg_query_nnz": round(queries.nnz / len(queries), 1),
        "encode_seconds": None if np.isnan(enc_s) else round(enc_s, 1),
        "docs_per_s": None if np.isnan(enc_s) else round(len(doc_ids) / enc_s, 1),
        "doc_vectors": str(cache), "machine": f"{platform.processor() or platform.machine()}, device {enc.device}",
    }
    print(json.dumps(res, indent=2))
    print()
    print("| model | SciFact test nDCG@10 | + IDF queries | avg doc nnz | avg query nnz | search |")
    print("|---|---|---|---|---|---|")
    print(f"| {args.model} (lsr, d{args.max_doc_length}) | {res['nDCG@10']:.4f} | {res['nDCG@10 (IDF queries, inference-free)']:.4f} "
          f"| {res['avg_doc_nnz']} | {res['avg_query_nnz']} | {how} |")
    return res


if __name__ == "__main__":
    main()
