"""Heterogeneous ensemble teachers: dense (MiniLM cosine), sparse (SPLADE dot), lexical (BM25);
per-query normalisation, weighted combination, and an on-disk cache keyed by a config hash.
"""

from lsr.teachers.base import Ensemble, Teacher, candidates_hash, normalize
from lsr.teachers.bm25 import BM25, regex_tokenizer, wordpiece_tokenizer
from lsr.teachers.scorers import BM25Teacher, DenseTeacher, SparseTeacher, build_teacher, resolve_model

__all__ = [
    "Ensemble", "Teacher", "candidates_hash", "normalize", "BM25", "regex_tokenizer", "wordpiece_tokenizer",
    "BM25Teacher", "DenseTeacher", "SparseTeacher", "build_teacher", "resolve_model",
]
