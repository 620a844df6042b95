"""Evaluate trained checkpoints next to the baselines they must beat, on BEIR folders:
BM25 (word pieces, k1 0.9, b 0.4), SPLADE-tiny (full), and SPLADE-tiny documents + IDF queries.

``python -m lsr.train.baselines --data DIR --out OUT [--model NAME=PATH ...] [--no-baselines]``
writes ``OUT/results.json`` (nDCG@10, R@100, non-zeros, FLOPS per dataset and method) and the
runs as TREC files under ``OUT/runs/``. Exact scoring (``lsr.index.ExactIndex``); metrics via ir-measures where
installed, else the built-in nDCG@10.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

from lsr.index.cli import HelpFormatter

__all__ = ["EVAL_SETS", "main"]

logger = logging.getLogger(__name__)

EVAL_SETS = (("scifact", "test"), ("nfcorpus", "dev"))


def _write_run(path: Path, run, name):
    with open(path, "w") as fh:
        for q, docs in run.items():
            for r, (d, s) in enumerate(sorted(docs.items(), key=lambda kv: -kv[1]), 1):
                fh.write(f"{q} Q0 {d} {r} {s:.6f} {name}\n")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m lsr.train.baselines", formatter_class=HelpFormatter)
    p.add_argument("--data", required=True, help="folder holding beir/scifact and beir/nfcorpus")
    p.add_argument("--out", required=True)
    p.add_argument("--model", action="append", default=[], metavar="NAME=PATH")
    p.add_argument("--no-baselines", action="store_true")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--sets", default=",".join(f"{n}:{s}" for n, s in EVAL_SETS), help="name:split,...")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    from lsr.data import load_beir
    from lsr.models import SparseEncoder
    from lsr.teachers import BM25, wordpiece_tokenizer
    from lsr.teachers.scorers import resolve_model
    from lsr.train.evaluate import exact_run, measure, sparsity_stats

    out = Path(args.out)
    (out / "runs").mkdir(parents=True, exist_ok=True)
    res_path = out / "results.json"
    results = json.loads(res_path.read_text()) if res_path.exists() else {}

    def record(method, ds, metrics, run):
        results.setdefault(method, {})[ds] = metrics
        res_path.write_text(json.dumps(results, indent=1))
        _write_run(out / "runs" / f"{method}__{ds}.trec", run, method)
        logger.info("%s on %s: %s", method, ds, json.dumps(metrics))

    def run_encoder(enc, corpus, queries, qrels, refit_idf=False):
        qids = [q for q in qrels if q in queries]
        dids = list(corpus)
        t = time.time()
        d = enc.encode_documents([corpus[x] for x in dids], batch_size=args.batch_size)
        t_doc = time.time() - t
        if refit_idf:
            enc.fit_idf([corpus[x] for x in dids])
        qv = enc.encode_queries([queries[q] for q in qids], batch_size=args.batch_size)
        run = exact_run(qv, d, qids, dids, 100)
        m = measure({q: qrels[q] for q in qids}, run)
        m.update(sparsity_stats(qv, d))
        m["doc_encode_s"] = t_doc
        return m, run

    for name, split in (x.split(":") for x in args.sets.split(",")):
        data = load_beir(Path(args.data) / "beir" / name, split)
        qrels = {q: r for q, r in data.qrels.items() if q in data.queries}
        if not args.no_baselines:
            tok = wordpiece_tokenizer(resolve_model("splade-tiny"))
            bm = BM25(list(data.corpus.values()), list(data.corpus), tokenizer=tok, k1=0.9, b=0.4)
            qids = list(qrels)
            ids, sc = bm.search([data.queries[q] for q in qids], k=100)
            run = {q: {d: float(s) for d, s in zip(ids[i], sc[i]) if d is not None} for i, q in enumerate(qids)}
            record("bm25", name, measure(qrels, run), run)
            enc = SparseEncoder.load("splade-tiny", kind="splade")
            m, run = run_encoder(enc, data.corpus, data.queries, qrels)
            record("splade-tiny", name, m, run)
            enc = SparseEncoder.load("splade-tiny", kind="inference-free")
            m, run = run_encoder(enc, data.corpus, data.queries, qrels, refit_idf=True)
            record("splade-tiny-docs+idf", name, m, run)
        for spec in args.model:
            mname, path = spec.split("=", 1)
            if not Path(path).exists():
                logger.warning("skipping %s: %s does not exist", mname, path)
                continue
            enc = SparseEncoder.load(path)
            m, run = run_encoder(enc, data.corpus, data.queries, qrels)
            record(mname, name, m, run)
            if enc.kind == "inference-free":
                m, run = run_encoder(enc, data.corpus, data.queries, qrels, refit_idf=True)
                record(f"{mname}+corpus-idf", name, m, run)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
