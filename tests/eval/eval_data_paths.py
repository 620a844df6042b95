"""Paths to the shared datasets and a helper that cuts small BEIR folders from them
(a uniquely named module: every tests/ folder has its own conftest.py)."""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

DATA = Path(os.environ.get("LSR_DATA", Path(__file__).resolve().parents[3] / "shared" / "data"))
SCIFACT = DATA / "beir" / "scifact"
MSMARCO = DATA / "msmarco-sample"


def _lines(path: Path):
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8", newline="\n") as fh:
        for line in fh:
            if line.strip():
                yield line


def make_beir_subset(src: Path, dst: Path, n_queries: int, n_extra_docs: int, split: str = "test",
                     gz: bool = False) -> Path:
    """Copy the first ``n_queries`` judged queries of ``src``, their judged docs and
    ``n_extra_docs`` more, into a BEIR folder at ``dst``."""
    qrels_lines = (src / "qrels" / f"{split}.tsv").read_text(encoding="utf-8").split("\n")
    header, body = qrels_lines[0], [l for l in qrels_lines[1:] if l.strip()]
    qids: list[str] = []
    for l in body:
        q = l.split("\t")[0]
        if q not in qids:
            qids.append(q)
        if len(qids) > n_queries:
            qids.pop()
            break
    keep_q = set(qids)
    kept_qrels = [l for l in body if l.split("\t")[0] in keep_q]
    judged = {l.split("\t")[1] for l in kept_qrels}
    corpus_src = src / "corpus.jsonl.gz" if (src / "corpus.jsonl.gz").exists() else src / "corpus.jsonl"
    docs, extra = [], 0
    for line in _lines(corpus_src):
        did = json.loads(line)["_id"]
        if did in judged:
            docs.append(line)
        elif extra < n_extra_docs:
            docs.append(line)
            extra += 1
    (dst / "qrels").mkdir(parents=True, exist_ok=True)
    (dst / "qrels" / f"{split}.tsv").write_text("\n".join([header] + kept_qrels) + "\n", encoding="utf-8")
    queries = [l for l in _lines(src / "queries.jsonl") if json.loads(l)["_id"] in keep_q]
    (dst / "queries.jsonl").write_text("".join(queries), encoding="utf-8")
    if gz:
        with gzip.open(dst / "corpus.jsonl.gz", "wt", encoding="utf-8", newline="\n") as fh:
            fh.write("".join(docs))
    else:
        (dst / "corpus.jsonl").write_text("".join(docs), encoding="utf-8")
    return dst
