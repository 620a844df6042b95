"""Training examples: per query, one sampled positive and ``n`` sampled hard negatives, in an
order fixed by ``(seed, epoch)``; a position ``(epoch, offset)`` is all a resume needs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np

__all__ = ["TrainingSet", "Example", "merge"]


@dataclass
class Example:
    qid: str
    query: str
    doc_ids: list[str]  # positive first
    docs: list[str]
    teacher: np.ndarray | None  # (1 + n,) teacher scores of doc_ids, or None


def merge(*parts):
    """Merge BEIR datasets loaded with distinct prefixes into one corpus/queries/positives."""
    corpus, queries, positives = {}, {}, {}
    for data in parts:
        corpus.update(data.corpus)
        queries.update(data.queries)
        positives.update(data.positives())
    return corpus, queries, positives


class TrainingSet:
    """Deterministic sampler over ``queries`` with ``positives`` and mined ``negatives``.

    ``teacher_scores``: optional ``{qid: {doc_id: score}}``; an example then carries the scores of
    its documents (every sampled document must have one). Each epoch visits every query once in
    the order ``default_rng([seed, epoch]).permutation``; the positive and negatives of the
    ``i``-th example of an epoch come from ``default_rng([seed, epoch, i])``, so the stream is a
    pure function of ``(seed, epoch, i)``.
    """

    def __init__(self, queries: dict[str, str], corpus: dict[str, str], positives: dict[str, Sequence[str]],
                 negatives: dict[str, Sequence[str]], *, n_negatives: int = 7, seed: int = 0,
                 teacher_scores: dict[str, dict[str, float]] | None = None):
        if n_negatives < 0:
            raise ValueError(f"n_negatives must be >= 0, got {n_negatives}")
        self.qids = sorted(q for q in positives if q in queries and (n_negatives == 0 or negatives.get(q)))
        if not self.qids:
            raise ValueError("no training query has both a positive and hard negatives")
        self.queries, self.corpus = queries, corpus
        self.positives = {q: list(positives[q]) for q in self.qids}
        self.negatives = {q: list(negatives.get(q, ())) for q in self.qids}
        self.n_negatives, self.seed = int(n_negatives), int(seed)
        self.teacher_scores = teacher_scores

    def __len__(self) -> int:
        return len(self.qids)

    def order(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.seed, epoch]).permutation(len(self.qids))

    def example(self, epoch: int, i: int, qidx: int | None = None) -> Example:
        if qidx is None:
            qidx = int(self.order(epoch)[i])
        qid = self.qids[qidx]
        rng = np.random.default_rng([self.seed, epoch, i])
        pos = self.positives[qid][int(rng.integers(len(self.positives[qid])))]
        negs = self.negatives[qid]
        if self.n_negatives:
            pick = rng.choice(len(negs), self.n_negatives, replace=len(negs) < self.n_negatives)
            neg_ids = [negs[int(j)] for j in pick]
        else:
            neg_ids = []
        ids = [pos] + neg_ids
        teacher = None
        if self.teacher_scores is not None:
            ts = self.teacher_scores[qid]
            teacher = np.asarray([ts[d] for d in ids], np.float32)
        return Example(qid, self.queries[qid], ids, [self.corpus[d] for d in ids], teacher)

    def batches(self, batch_size: int, epoch: int = 0, offset: int = 0) -> Iterator[tuple[int, int, list[Example]]]:
        """Endless ``(epoch, offset_after, examples)``; a batch never straddles two epochs."""
        while True:
            order = self.order(epoch)
            n = len(order) - len(order) % batch_size if len(order) >= batch_size else len(order)
            while offset < n:
                end = min(offset + batch_size, n)
                yield epoch, end, [self.example(epoch, i, int(order[i])) for i in range(offset, end)]
                offset = end
            epoch, offset = epoch + 1, 0
