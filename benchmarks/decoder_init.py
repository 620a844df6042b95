"""The decoder's sparse head before any training: ``logit_shift`` vs the vocabulary-aware per-term bias.

Each of ``--queries`` dev queries (SciFact ``train-dev``: never test) is scored against a pool of its
first judged document, the other queries' judged documents and ``--docs`` random corpus documents;
prints non-zeros, the score scale, the mean gap between the judged document and the pool, and how
often the judged document ranks in the top 3. The bias is fitted on ``--fit-docs`` corpus documents.

    python benchmarks/decoder_init.py --data ../shared/data/beir/scifact
"""

from __future__ import annotations

import argparse

import numpy as np


def stats(enc, queries: list[str], pool: list[str], name: str) -> str:
    Q = enc.encode_queries(queries).to_scipy()
    D = enc.encode_documents(pool, batch_size=8).to_scipy()
    S = (Q @ D.T).toarray()
    n = len(queries)
    pos = S[np.arange(n), np.arange(n)]
    others = [np.delete(S[i], i) for i in range(n)]
    top3 = np.mean([(o > p).sum() < 3 for o, p in zip(others, pos)])
    gap = np.mean([p - o.mean() for o, p in zip(others, pos)])
    spread = np.mean([o.std() for o in others])
    return (f"| {name} | {Q.getnnz(1).mean():.0f} / {D.getnnz(1).mean():.0f} | {S.mean():.2f} | {spread:.2f} | "
            f"{gap:.2f} | {gap / spread:.1f} | {top3:.2f} |")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="../shared/data/beir/scifact", help="a BEIR folder with train judgments")
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--queries", type=int, default=30)
    ap.add_argument("--docs", type=int, default=40)
    ap.add_argument("--fit-docs", type=int, default=24)
    ap.add_argument("--target-terms", type=float, default=200)
    ap.add_argument("--logit-shift", type=float, default=5.0)
    ap.add_argument("--max-doc-length", type=int, default=128)
    args = ap.parse_args(argv)
    from lsr.data.beir import load_beir
    from lsr.models import SparseEncoder

    ds = load_beir(args.data, split="train-dev")
    qids = [q for q in ds.queries if q in ds.qrels][: args.queries]
    corpus = list(ds.corpus.values())
    rng = np.random.default_rng(0)
    sample = [corpus[i] for i in rng.choice(len(corpus), args.docs + args.fit_docs, replace=False)]
    pool = [ds.corpus[next(iter(ds.qrels[q]))] for q in qids] + sample[: args.docs]
    queries = [ds.queries[q] for q in qids]
    enc = SparseEncoder.load(args.model, kind="decoder", logit_shift=args.logit_shift,
                             max_doc_length=args.max_doc_length)
    print(f"{len(qids)} {args.data} train-dev queries, pool of {len(pool)} documents, no training\n")
    print("| head | non-zeros query / doc | mean score | spread (std) | judged - mean | gap / spread | judged in top 3 |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    print(stats(enc, queries, pool, f"logit_shift = {args.logit_shift:g}"), flush=True)
    enc.fit_term_bias(sample[args.docs:], target_terms=args.target_terms, batch_size=8)
    print(stats(enc, queries, pool, f"vocabulary-aware bias, {args.target_terms:g} terms"))


if __name__ == "__main__":
    main()
