"""The teachers: dense bi-encoder (cosine), sparse SPLADE (dot product) and BM25.

Each encodes every distinct query and candidate document once, then scores the pairs.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import numpy as np

__all__ = ["DenseTeacher", "SparseTeacher", "BM25Teacher", "resolve_model", "build_teacher"]

logger = logging.getLogger(__name__)


def resolve_model(name_or_path: str) -> Path:
    """A folder path as is; a short name (``splade-tiny``, ``minilm``) through lsr.models.hub."""
    p = Path(name_or_path).expanduser()
    if p.exists():
        return p
    from lsr.models.hub import model_path

    return Path(model_path(name_or_path))


def _unique_docs(candidates):
    seen = {}
    for cands in candidates.values():
        for d in cands:
            seen.setdefault(d, len(seen))
    return seen


def _device(device):
    if device:
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


class DenseTeacher:
    """Cosine similarity of a sentence-transformers bi-encoder (e.g. all-MiniLM-L6-v2)."""

    def __init__(self, model: str = "minilm", *, batch_size: int = 64, max_length: int = 256, device=None):
        self.model, self.batch_size, self.max_length, self.device = model, batch_size, max_length, device
        self.name = "dense"

    def fingerprint(self) -> dict:
        return {"kind": "dense", "model": Path(self.model).name, "max_length": self.max_length}

    def score(self, queries, corpus, candidates):
        from sentence_transformers import SentenceTransformer

        st = SentenceTransformer(str(resolve_model(self.model)), device=_device(self.device))
        st.max_seq_length = self.max_length
        docs = _unique_docs(candidates)
        qids = list(candidates)
        kw = dict(batch_size=self.batch_size, normalize_embeddings=True, convert_to_numpy=True,
                  show_progress_bar=True)
        qe = st.encode([queries[q] for q in qids], **kw)
        de = st.encode([corpus[d] for d in docs], **kw)
        return {q: de[[docs[d] for d in candidates[q]]] @ qe[i] for i, q in enumerate(qids)}


class SparseTeacher:
    """Dot product of a SPLADE model's query and document vectors (e.g. SPLADE-tiny)."""

    def __init__(self, model: str = "splade-tiny", *, batch_size: int = 64, max_length: int = 256, device=None):
        self.model, self.batch_size, self.max_length, self.device = model, batch_size, max_length, device
        self.name = "sparse"

    def fingerprint(self) -> dict:
        return {"kind": "sparse", "model": Path(self.model).name, "max_length": self.max_length}

    def score(self, queries, corpus, candidates):
        from lsr.models import SparseEncoder

        enc = SparseEncoder.load(str(resolve_model(self.model)), kind="splade", device=_device(self.device),
                                 max_doc_length=self.max_length)
        docs = _unique_docs(candidates)
        qids = list(candidates)
        qv = enc.encode_queries([queries[q] for q in qids], batch_size=self.batch_size, show_progress_bar=True).to_scipy()
        dv = enc.encode_documents([corpus[d] for d in docs], batch_size=self.batch_size, show_progress_bar=True).to_scipy()
        out = {}
        for i, q in enumerate(qids):
            rows = [docs[d] for d in candidates[q]]
            out[q] = np.asarray((dv[rows] @ qv[i].T).toarray()).ravel().astype(np.float32)
        return out


class BM25Teacher:
    """BM25 (k1, b) over the corpus given, word pieces of ``tokenizer`` (a model folder or short
    name) or lowercase words when ``tokenizer`` is None."""

    def __init__(self, tokenizer: str | None = "splade-tiny", *, k1: float = 0.9, b: float = 0.4):
        self.tokenizer, self.k1, self.b = tokenizer, k1, b
        self.name = "bm25"

    def fingerprint(self) -> dict:
        return {"kind": "bm25", "tokenizer": self.tokenizer and Path(self.tokenizer).name, "k1": self.k1, "b": self.b}

    def score(self, queries, corpus, candidates):
        from lsr.teachers.bm25 import BM25, regex_tokenizer, wordpiece_tokenizer

        tok = wordpiece_tokenizer(resolve_model(self.tokenizer)) if self.tokenizer else regex_tokenizer()
        bm = BM25(list(corpus.values()), list(corpus.keys()), tokenizer=tok, k1=self.k1, b=self.b)
        qids = list(candidates)
        scores = bm.score_pairs([queries[q] for q in qids], [candidates[q] for q in qids])
        return dict(zip(qids, scores))


def build_teacher(kind: str, model: str | None = None, **kw):
    if kind == "dense":
        return DenseTeacher(model or "minilm", **kw)
    if kind == "sparse":
        return SparseTeacher(model or "splade-tiny", **kw)
    if kind == "bm25":
        return BM25Teacher(model if model is not None else "splade-tiny", **kw)
    raise ValueError(f"unknown teacher kind {kind!r}: expected dense, sparse or bm25")
