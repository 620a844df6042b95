"""`lsr export`: Anserini JsonVectorCollection and Qdrant points from a collection or a vectors file.

Engine parity (Pyserini, Qdrant) is in test_export_parity.py; here: the records themselves, the
token and id mapping, and the CLI's errors."""

from __future__ import annotations

import fcntl
import hashlib
import json
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import pytest

from lsr.index.sparse import SparseBatch, save_vectors
from lsr.service.collection import CollectionStore, DocIn, MergePolicy
from lsr.service.export import (QDRANT_NAMESPACE, anserini_query, anserini_record, ExportDoc, lucene_tokens,
                                qdrant_point_id)

LSR = [sys.executable, "-m", "lsr.cli.main"]


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*LSR, *args], capture_output=True, text=True, timeout=120)


def _lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text(encoding="utf-8").split("\n") if x]


def test_lucene_tokens_whitespace_empty_and_collisions():
    vocab = ["cat", "new york", "new_york", "", "cat", "tab\there", "nbsp\u00a0x", "##ing", "[CLS]"]
    toks = lucene_tokens(vocab)
    assert len(set(toks)) == len(toks)  # one term per id
    assert not any(c.isspace() for t in toks for c in t) and all(toks)
    assert toks[0] == "cat" and toks[2] == "new_york" and toks[7] == "##ing" and toks[8] == "[CLS]"  # kept
    assert toks[1] == "new_york#1" and toks[4] == "cat#4" and toks[3] == "[EMPTY]"
    assert toks[5] == "tab_here" and toks[6] == "nbsp_x"
    # a BERT vocabulary needs no rewriting
    from lsr.service.encoders import _vocab_from_folder

    bert = _vocab_from_folder(Path(__file__).resolve().parents[2] / "models" / "inference-free-splade-tiny-scifact-nfcorpus")
    assert bert is not None and lucene_tokens(bert) == bert


def test_records():
    doc = ExportDoc("d1", np.array([0, 2, 3], np.int32), np.array([1.234, 0.004, 0.5], np.float32), "some text",
                    {"year": 2020})
    rec, zeros = anserini_record(doc, ["a", "b", "c", "d"], 100.0)
    assert rec == {"id": "d1", "contents": "some text", "vector": {"a": 123, "d": 50}} and zeros == 1
    assert all(isinstance(v, int) for v in rec["vector"].values())
    rec, _ = anserini_record(doc, ["a", "b", "c", "d"], 1000.0)
    assert rec["vector"] == {"a": 1234, "c": 4, "d": 500}
    q = SparseBatch.from_dicts([{"a": 0.5, "c": 0.001}], vocab=["a", "b", "c", "d"])
    assert anserini_query(q, ["a", "b", "c", "d"], 100.0) == [{"a": 50}]
    pid = qdrant_point_id("d1")
    assert pid == str(uuid.uuid5(QDRANT_NAMESPACE, "d1")) == qdrant_point_id("d1") != qdrant_point_id("d2")
    assert uuid.UUID(pid).version == 5


def _collection(data: Path) -> dict[str, tuple[list[int], list[float]]]:
    """A vectors-only collection with a merged segment, a deleted document and fresh (log-only)
    documents; returns the live documents' vectors."""
    store = CollectionStore(data, MergePolicy(min_docs=10**9, idle_s=1e9))
    try:
        col = store.create("c1", {"model": None, "dim": 50, "index": {}})
        rng = np.random.default_rng(0)
        live: dict[str, tuple[list[int], list[float]]] = {}

        def docs(prefix: str, n: int) -> list[DocIn]:
            out = []
            for i in range(n):
                idx = np.sort(rng.choice(50, size=5, replace=False)).astype(np.int32)
                val = rng.uniform(0.1, 3.0, 5).astype(np.float32)
                out.append(DocIn(f"{prefix}{i}", idx, val, f"text of {prefix}{i}", {"n": i}))
                live[f"{prefix}{i}"] = (idx.tolist(), val.tolist())
            return out

        col.upsert(docs("s", 30))
        col.merge(force=True)
        col.delete(["s3", "s7"])
        del live["s3"], live["s7"]
        col.upsert(docs("f", 4))  # stays in the log: exported from the replayed fresh segment
        assert col.view.fresh
    finally:
        store.close()
    return live


def _tree_digest(folder: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        if p.is_file() and p.name != "LOCK":
            h.update(str(p.relative_to(folder)).encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def test_export_collection_both_formats(tmp_path):
    data = tmp_path / "data"
    live = _collection(data)
    before = _tree_digest(data)
    r = _run("export", "c1", "--data", str(data), "--format", "qdrant", "--out", str(tmp_path / "q.jsonl"),
             "--no-progress")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["documents"] == len(live) == 32
    points = _lines(tmp_path / "q.jsonl")
    assert {p["payload"]["doc_id"] for p in points} == set(live)
    for p in points:
        doc_id = p["payload"]["doc_id"]
        assert p["id"] == str(uuid.uuid5(QDRANT_NAMESPACE, doc_id))
        assert p["payload"]["text"] == f"text of {doc_id}" and p["payload"]["metadata"]["n"] == int(doc_id[1:])
        v = p["vector"]["sparse"]
        assert v["indices"] == live[doc_id][0]
        np.testing.assert_array_equal(np.float32(v["values"]), np.float32(live[doc_id][1]))

    r = _run("export", "c1", "--data", str(data), "--format", "anserini", "--scale", "10",
             "--out", str(tmp_path / "new" / "a.jsonl"), "--no-progress")  # the folder is created
    assert r.returncode == 0, r.stderr
    recs = _lines(tmp_path / "new" / "a.jsonl")
    assert {x["id"] for x in recs} == set(live)
    for x in recs:
        idx, val = live[x["id"]]
        # a collection without a model: terms are the term ids
        assert x["vector"] == {str(t): int(np.rint(np.float64(np.float32(w)) * 10)) for t, w in zip(idx, val)}
    assert _tree_digest(data) == before  # exporting changed nothing stored


def test_export_vectors_file(tmp_path):
    vocab = ["alpha", "beta", "gamma delta", "epsilon"]
    batch = SparseBatch.from_dicts([{"alpha": 1.5, "gamma delta": 0.25}, {"beta": 0.7}], vocab=vocab)
    save_vectors(tmp_path / "v.npz", batch, ["x1", "x2"])
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text(json.dumps({"_id": "x1", "title": "T", "text": "one"}) + "\n"
                      + json.dumps({"_id": "x2", "title": "", "text": "two"}) + "\n")
    r = _run("export", "--vectors", str(tmp_path / "v.npz"), "--corpus", str(corpus), "--format", "anserini",
             "--out", str(tmp_path / "a.jsonl"), "--no-progress")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["renamed_tokens"] == 1
    assert _lines(tmp_path / "a.jsonl") == [
        {"id": "x1", "contents": "T one", "vector": {"alpha": 150, "gamma_delta": 25}},
        {"id": "x2", "contents": "two", "vector": {"beta": 70}},
    ]


def test_export_errors_are_one_line_exit_2(tmp_path):
    data = tmp_path / "data"
    _collection(data)
    out = str(tmp_path / "o.jsonl")
    (tmp_path / "afile").write_text("")
    cases = [
        (["nope", "--data", str(data), "--format", "qdrant", "--out", out], "no collection 'nope'"),
        (["--data", str(data), "--format", "qdrant", "--out", out], "give a COLLECTION or --vectors"),
        (["c1", "--data", str(data), "--format", "anserini", "--scale", "0", "--out", out], "scale must be a positive"),
        (["c1", "--data", str(data), "--format", "qdrant", "--out", str(tmp_path)], "is a folder"),
        (["c1", "--data", str(data), "--format", "qdrant", "--out", str(tmp_path / "afile" / "x.jsonl")],
         "is not a folder"),
        (["--vectors", str(tmp_path / "missing.npz"), "--format", "qdrant", "--out", out], "missing.npz"),
    ]
    for args, needle in cases:
        r = _run("export", *args)
        assert r.returncode == 2 and needle in r.stderr and r.stderr.count("\n") == 1, (args, r.stderr)
    r = _run("export", "c1", "--data", str(data), "--format", "lucene", "--out", out)
    assert r.returncode == 2 and "invalid choice" in r.stderr
    with open(data / "LOCK", "a+") as fh:  # as a running server holds it
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        r = _run("export", "c1", "--data", str(data), "--format", "qdrant", "--out", out)
    assert r.returncode == 2 and "in use" in r.stderr
    assert not Path(out).exists() and not list(tmp_path.glob(".o.jsonl.tmp*"))


def test_shipped_model_loads_in_sentence_transformers_with_identical_vectors():
    """Interop on the model side: the folder under models/ is a sentence-transformers SparseEncoder
    (Router: static query weights, MLM + SpladePooling documents) giving lsr's vectors."""
    st = pytest.importorskip("sentence_transformers")
    from lsr.index.corpus import read_corpus, read_queries
    from lsr.models import SparseEncoder

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "eval"))
    from eval_data_paths import SCIFACT

    if not SCIFACT.exists():
        pytest.skip(f"SciFact not found at {SCIFACT}")
    folder = Path(__file__).resolve().parents[2] / "models" / "inference-free-splade-tiny-scifact-nfcorpus"
    docs = [d.full_text for d in read_corpus(next(SCIFACT.glob("corpus.jsonl*")), 4)]
    queries = list(read_queries(SCIFACT / "queries.jsonl").values())[:8]
    ours = SparseEncoder.load(str(folder))
    theirs = st.SparseEncoder(str(folder), device="cpu")
    for mine, other in ((ours.encode_documents(docs), theirs.encode_document(docs, convert_to_tensor=True)),
                        (ours.encode_queries(queries), theirs.encode_query(queries, convert_to_tensor=True))):
        dense = other.to_dense().numpy()
        assert dense.shape == mine.shape and (dense > 0).sum(axis=1).min() > 0
        np.testing.assert_allclose(mine.to_dense(), dense, atol=1e-4)
        assert ((mine.to_dense() > 0) == (dense > 0)).mean() > 0.999  # the same terms, not just close weights
