"""BM25 over a corpus (term weights as CSR, searched by ``lsr.index.ExactIndex``): hard negatives and the lexical
teacher's scores of given (query, document) pairs. Tokenisation is pluggable: the word pieces of
a Hugging Face ``tokenizer.json`` (as lsr's encoders see text) or a lowercase word regex.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

__all__ = ["BM25", "wordpiece_tokenizer", "regex_tokenizer"]

logger = logging.getLogger(__name__)


_TOKENIZERS: dict = {}


def wordpiece_tokenizer(model_dir: str | Path) -> tuple[Callable[[Sequence[str]], list[list[int]]], int]:
    """``(tokenize, vocab_size)`` from a folder's ``tokenizer.json`` (no special tokens)."""
    from tokenizers import Tokenizer

    path = Path(model_dir) / "tokenizer.json"
    if not path.exists():
        raise FileNotFoundError(f"no tokenizer.json in {model_dir}")
    key = str(path.resolve())
    if key not in _TOKENIZERS:
        tok = Tokenizer.from_file(str(path))
        tok.no_truncation()
        tok.no_padding()
        _TOKENIZERS[key] = (tok, {})
    tok, memo = _TOKENIZERS[key]

    def tokenize(texts):
        # Mining, the BM25 teacher and dev pools tokenise the same corpus: do it once per process.
        texts = list(texts)
        todo = list(dict.fromkeys(t for t in texts if t not in memo))
        if todo:
            for t, e in zip(todo, tok.encode_batch(todo, add_special_tokens=False)):
                memo[t] = e.ids
        return [memo[t] for t in texts]

    return tokenize, tok.get_vocab_size()


def regex_tokenizer(dim: int = 1 << 20) -> tuple[Callable[[Sequence[str]], list[list[int]]], int]:
    """Lowercase ``\\w+`` words hashed into ``dim`` buckets (stable across runs)."""
    import zlib

    pat = re.compile(r"\w+")

    def tokenize(texts):
        return [[zlib.crc32(w.encode()) % dim for w in pat.findall(t.lower())] for t in texts]

    return tokenize, dim


class BM25:
    r"""Okapi BM25, :math:`\sum_{t \in q} \mathrm{idf}_t \frac{tf_{td}(k_1+1)}{tf_{td} + k_1(1-b+b\,|d|/\overline{|d|})}`
    with the BM25 IDF :math:`\ln(1 + (N-\mathrm{df}+0.5)/(\mathrm{df}+0.5))` (Lucene's form).

    >>> bm = BM25(["a cat", "a dog"], ids=["d1", "d2"], tokenizer=regex_tokenizer(64))
    >>> bm.search(["cat"], k=1)[0][0][0]
    'd1'
    """

    def __init__(self, docs: Sequence[str], ids: Sequence[str] | None = None, *, tokenizer=None,
                 k1: float = 0.9, b: float = 0.4):
        import scipy.sparse as sp

        from lsr.index.sparse import SparseBatch
        from lsr.index.stats import bm25_idf, document_frequencies

        self.tokenize, self.dim = tokenizer or regex_tokenizer()
        self.ids = list(ids) if ids is not None else [str(i) for i in range(len(docs))]
        self.row = {d: i for i, d in enumerate(self.ids)}
        toks = self.tokenize(docs)
        lens = np.fromiter((len(t) for t in toks), np.int64, len(toks))
        indptr = np.concatenate([[0], np.cumsum(lens)])
        cols = np.fromiter((t for ts in toks for t in ts), np.int64, int(indptr[-1]))
        tf = sp.csr_matrix((np.ones(cols.size, np.float32), cols, indptr), shape=(len(docs), self.dim))
        tf.sum_duplicates()
        self.idf = bm25_idf(*document_frequencies(SparseBatch.from_scipy(tf)))
        avg = max(float(lens.mean()) if len(lens) else 1.0, 1e-9)
        norm = k1 * (1 - b + b * lens / avg)
        rows = np.repeat(np.arange(tf.shape[0]), np.diff(tf.indptr))
        w = tf.data * (k1 + 1) / (tf.data + norm[rows]) * self.idf[tf.indices]
        self.weights = sp.csr_matrix((w.astype(np.float32), tf.indices, tf.indptr), shape=tf.shape)
        self.k1, self.b = k1, b
        self._index = None  # the ExactIndex over the weights, built on the first search

    def query_matrix(self, queries: Sequence[str]):
        import scipy.sparse as sp

        toks = self.tokenize(queries)
        lens = np.fromiter((len(t) for t in toks), np.int64, len(toks))
        indptr = np.concatenate([[0], np.cumsum(lens)])
        cols = np.fromiter((t for ts in toks for t in ts), np.int64, int(indptr[-1]))
        m = sp.csr_matrix((np.ones(cols.size, np.float32), cols, indptr), shape=(len(queries), self.dim))
        m.sum_duplicates()  # query term frequency counts, as Lucene's BM25 over a bag of words
        return m

    def search(self, queries: Sequence[str], k: int = 100):
        """Top-``k`` ``(ids (n, k) object array, scores (n, k) float32)``; missing hits are None / -inf."""
        from lsr.index import ExactIndex
        from lsr.index.sparse import SparseBatch

        if self._index is None:
            self._index = ExactIndex.build(SparseBatch.from_scipy(self.weights), ids=[str(d) for d in self.ids])
        hits = self._index.search(SparseBatch.from_scipy(self.query_matrix(queries)), k=k)
        return hits.ids, hits.scores

    def score_pairs(self, queries: Sequence[str], candidates: Sequence[Sequence[str]]) -> list[np.ndarray]:
        """BM25 score of each query against its own candidate document ids."""
        qm = self.query_matrix(queries)
        out = []
        for i, cands in enumerate(candidates):
            rows = [self.row[d] for d in cands]
            out.append(np.asarray((self.weights[rows] @ qm[i].T).toarray()).ravel().astype(np.float32))
        return out
