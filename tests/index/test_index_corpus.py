"""The shared rules of the ground floor: one document text on every path, one IDF, one set of
search knobs (hand values and the other paths as references)."""

from __future__ import annotations

import gzip
import json
import math
from pathlib import Path

import numpy as np
import pytest

import lsr.models
from lsr import SparseBatch, load_vectors
from lsr.index import ExactIndex, SearchParams, SeismicIndex
from lsr.index.corpus import CorpusError, doc_text, read_corpus
from lsr.index.stats import bm25_idf, document_frequencies

SCIFACT = Path(__file__).resolve().parents[1] / "data" / "beir" / "scifact"


def test_doc_text_rule():
    assert doc_text("Title", "body") == "Title body"
    assert doc_text("", "body") == doc_text(None, "body") == "body"
    assert doc_text("  Title ", "") == "Title"
    assert doc_text(None, None) == ""


class _Recorder:
    """Stands in for SparseEncoder in lsr-encode: keeps the texts it is given (no torch)."""

    texts: list[str] = []

    @classmethod
    def load(cls, *a, **kw):
        return cls()

    def encode_documents(self, texts, **kw):
        _Recorder.texts = list(texts)
        return SparseBatch.from_dicts([{0: 1.0}] * len(texts), dim=4)


def test_same_document_text_through_encode_training_and_eval(tmp_path, monkeypatch):
    from lsr.cli.encode import main
    from lsr.data import load_beir as load_training
    from lsr.eval.data import load_beir as load_eval

    monkeypatch.setattr(lsr.models, "SparseEncoder", _Recorder, raising=False)
    assert main(["--model", "x", "--input", str(SCIFACT / "corpus.jsonl.gz"), "--out", str(tmp_path / "v.npz")]) == 0
    _, ids = load_vectors(tmp_path / "v.npz")
    encoded = dict(zip(ids, _Recorder.texts))
    training = load_training(SCIFACT, "test").corpus
    ds = load_eval(SCIFACT, "test")
    evaluation = dict(zip(ds.doc_ids, ds.doc_texts()))
    assert len(encoded) > 1000 and encoded == training == evaluation
    with gzip.open(SCIFACT / "corpus.jsonl.gz", "rt", encoding="utf-8") as fh:
        first = json.loads(fh.readline())
    assert encoded[first["_id"]] == f"{first['title']} {first['text']}"


def test_read_corpus_errors_name_the_line(tmp_path):
    p = tmp_path / "corpus.jsonl"
    p.write_text('{"_id": "a", "text": "x"}\n{"_id": "a", "text": "y"}\n', encoding="utf-8")
    with pytest.raises(CorpusError, match=r"corpus\.jsonl:2: duplicate document id 'a'"):
        list(read_corpus(p))
    p.write_text('{"_id": "a", "title": 3, "text": "x"}\n', encoding="utf-8")
    with pytest.raises(CorpusError, match=r"corpus\.jsonl:1: .*must be strings"):
        list(read_corpus(tmp_path))


def test_document_frequencies_batch_equals_token_ids():
    token_ids = [[1, 1, 2], [2], [0, 2], []]
    batch = SparseBatch.from_dicts([{t: 1.0 for t in ids} for ids in token_ids], dim=4)
    df_ids, n_ids = document_frequencies(token_ids, 4)
    df_batch, n_batch = document_frequencies(batch)
    assert df_ids.tolist() == df_batch.tolist() == [1, 1, 3, 0] and n_ids == n_batch == 4


def test_bm25_idf_hand_values():
    # N = 4: df 0 -> ln(1 + 4.5/0.5), df 1 -> ln(1 + 3.5/1.5), df 4 -> ln(1 + 0.5/4.5)
    idf = bm25_idf(np.array([0, 1, 4]), 4)
    assert idf.dtype == np.float32
    assert idf.tolist() == pytest.approx([math.log(10.0), math.log(1 + 7 / 3), math.log(1 + 1 / 9)], rel=1e-6)


@pytest.mark.parametrize("cls", [ExactIndex, SeismicIndex])
def test_unknown_or_bad_knob_raises(small_random, cls):
    docs, queries = small_random
    index = cls.build(docs[:200])
    with pytest.raises(TypeError, match="heap_facter"):
        index.search(queries[:2], k=3, heap_facter=0.5)
    with pytest.raises(ValueError, match="heap_factor"):
        index.search(queries[:2], k=3, heap_factor=1.5)  # exact ignores the knobs, but checks them
    with pytest.raises(ValueError, match="query_cut"):
        index.search(queries[:2], k=3, query_cut=0)


def test_search_params_one_set_of_defaults():
    assert SearchParams.of() == SearchParams() == SearchParams(query_cut=10, heap_factor=0.9)
    assert SearchParams.of(query_cut=None, heap_factor=1).heap_factor == 1.0
    with pytest.raises(TypeError, match="'cut'"):
        SearchParams.of(cut=3)


def test_empty_exact_index_pads():
    index = ExactIndex.build(SparseBatch.empty(0, 8))
    hits = index.search(SparseBatch.from_dicts([{1: 1.0}, {}], dim=8), k=3, threads=1)
    assert hits.rows.shape == (2, 3) and (hits.rows == -1).all() and np.isneginf(hits.scores).all()


def test_docstring_examples():
    import doctest

    import lsr.index.base
    import lsr.index.stats

    for mod in (lsr.index.base, lsr.index.stats):
        failed, _ = doctest.testmod(mod)
        assert failed == 0, mod.__name__
