"""Training data: BEIR folders (train qrels → positives), MS MARCO-style triples, hard
negatives mined with BM25 or an lsr index, and a seeded, resumable example stream.
"""

from lsr.data.beir import BeirData, load_beir, load_triples
from lsr.data.dataset import Example, TrainingSet, merge
from lsr.data.negatives import mine_bm25, mine_with_index

__all__ = [
    "BeirData", "load_beir", "load_triples",
    "Example", "TrainingSet", "merge", "mine_bm25", "mine_with_index",
]
