"""Inference-free models: IDF table vs a hand count, the torch-free query path, save/load, ST Router folders."""

import json
import math
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from lsr.models.inference_free import IdfQueryEncoder

REPO = Path(__file__).resolve().parents[2]
CORPUS = ["the cat sat", "the dog sat down", "a cat and a dog", "birds fly"]


def test_idf_against_hand_count(splade_dir):
    q = IdfQueryEncoder.from_corpus(splade_dir, CORPUS)
    tok = q.tokenizer
    N = 4
    hand_df = {"the": 2, "cat": 2, "sat": 2, "dog": 2, "down": 1, "a": 1, "and": 1, "birds": 1, "fly": 1}
    for word, df in hand_df.items():
        tid = tok.token_to_id(word)
        assert q.weights[tid] == pytest.approx(math.log(1 + (N - df + 0.5) / (df + 0.5)), rel=1e-6), word
    unseen = tok.token_to_id("zebra")
    assert q.weights[unseen] == pytest.approx(math.log(1 + (N + 0.5) / 0.5), rel=1e-6)
    for special in ("[CLS]", "[SEP]", "[PAD]", "[MASK]", "[UNK]"):
        assert q.weights[tok.token_to_id(special)] == 0.0


def test_query_vectors(splade_dir, tmp_path):
    q = IdfQueryEncoder.from_corpus(splade_dir, CORPUS)
    b = q.encode_queries(["cat cat dog", "", "zzzz"])
    rows = b.to_dicts(tokens=True)
    assert set(rows[0]) == {"cat", "dog"}  # distinct tokens, weight not multiplied by frequency
    assert rows[0]["cat"] == pytest.approx(float(q.weights[q.tokenizer.token_to_id("cat")]))
    assert rows[1] == {}
    assert len(b) == 3 and b.dim == q.dim == 30522
    q.save(tmp_path)
    again = IdfQueryEncoder.load(tmp_path)
    np.testing.assert_array_equal(again.weights, q.weights)
    assert again.encode_queries(["cat cat dog"]).to_dicts() == b[0:1].to_dicts()
    with pytest.raises(TypeError, match=r"texts\[0\]"):
        q.encode_queries([None])


TORCH_FREE = textwrap.dedent("""
    import importlib.abc, sys

    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "torch" or name.startswith("torch."):
                raise ImportError("torch is blocked in this test")
            return None

    sys.meta_path.insert(0, Block())
    sys.modules["torch"] = None
    import lsr
    try:
        import lsr.index  # noqa: F401  (must not need torch either)
    except ImportError as exc:
        if "torch" in str(exc):
            raise
    from lsr.models.inference_free import IdfQueryEncoder
    q = IdfQueryEncoder.load(sys.argv[1])
    b = q.encode_queries(["what causes fever", "cat"])
    print(len(b), b.nnz, sorted(b.to_dicts(tokens=True)[1]))
    assert not any(m == "torch" or m.startswith("torch.") for m in sys.modules if sys.modules[m] is not None)
""")


def test_query_path_without_torch(splade_dir, tmp_path):
    IdfQueryEncoder.from_corpus(splade_dir, CORPUS).save(tmp_path)
    proc = subprocess.run([sys.executable, "-c", TORCH_FREE, str(tmp_path)], capture_output=True, text=True,
                          cwd=REPO, timeout=120)
    assert proc.returncode == 0, proc.stderr
    n, nnz, toks = proc.stdout.split(maxsplit=2)
    assert n == "2" and int(nnz) > 0 and "'cat'" in toks


@pytest.fixture(scope="module")
def inference_free(splade_dir):
    from lsr.models import SparseEncoder

    enc = SparseEncoder.load(splade_dir, kind="inference-free", device="cpu")
    enc.fit_idf(CORPUS)
    return enc


def test_inference_free_encoder(inference_free, tmp_path):
    import torch

    enc = inference_free
    assert enc.kind == "inference-free"
    qs = ["the cat", "dogs fly down", ""]
    batch = enc.encode_queries(qs)
    with torch.inference_mode():
        dense = enc.forward_queries(qs).numpy()
    np.testing.assert_allclose(batch.to_dense(), dense, atol=1e-6)  # torch-free path == torch path
    docs = enc.encode_documents(["the cat sat on the mat"])
    assert {"cat", "mat"} <= {t for t, _ in enc.decode(docs, top_k=5)[0]}
    enc.save(tmp_path / "if")
    cfg = json.loads((tmp_path / "if" / "lsr_config.json").read_text())
    assert cfg["kind"] == "inference-free" and (tmp_path / "if" / cfg["query_weights"]).exists()
    from lsr.models import SparseEncoder

    again = SparseEncoder.load(tmp_path / "if", device="cpu")
    assert again.kind == "inference-free"
    np.testing.assert_array_equal(again.encode_queries(qs).to_dense(), batch.to_dense())
    np.testing.assert_array_equal(again.encode_documents(["the cat sat on the mat"]).to_dense(), docs.to_dense())
    # the torch-free encoder reads the same folder
    np.testing.assert_array_equal(IdfQueryEncoder.load(tmp_path / "if").encode_queries(qs).to_dense(), batch.to_dense())


def test_st_loads_lsr_inference_free_folder(inference_free, tmp_path):
    st = pytest.importorskip("sentence_transformers")
    inference_free.save(tmp_path / "if")
    model = st.SparseEncoder(str(tmp_path / "if"), device="cpu")
    qs, ds = ["the cat", "dogs fly down"], ["the cat sat on the mat", "birds fly south"]
    theirs_q = model.encode_query(qs, convert_to_tensor=True).to_dense().numpy()
    theirs_d = model.encode_document(ds, convert_to_tensor=True).to_dense().numpy()
    assert np.abs(inference_free.encode_queries(qs).to_dense() - theirs_q).max() <= 1e-4
    assert np.abs(inference_free.encode_documents(ds).to_dense() - theirs_d).max() <= 1e-4


def test_learned_query_weights_get_gradients(inference_free):
    enc = inference_free
    enc.query_weights.requires_grad_(True)
    try:
        enc.forward_queries(["cat dog"]).sum().backward()
        g = enc.query_weights.grad
        assert g is not None and int((g != 0).sum()) == 2
    finally:
        enc.query_weights.requires_grad_(False)
        enc.query_weights.grad = None


def test_st_router_folder(splade_dir, inference_free, tmp_path):
    st = pytest.importorskip("sentence_transformers")
    import torch
    from sentence_transformers.base.modules import Router
    from sentence_transformers.sparse_encoder.modules import SparseStaticEmbedding

    from lsr.models import SparseEncoder

    doc = st.SparseEncoder(str(splade_dir), device="cpu")
    doc.max_seq_length = 256
    weight = inference_free.query_weights.detach().clone()
    q = SparseStaticEmbedding(tokenizer=inference_free.tokenizer, weight=weight, frozen=True)
    model = st.SparseEncoder(modules=[Router.for_query_document(query_modules=[q], document_modules=[doc[0], doc[1]])],
                             similarity_fn_name="dot", device="cpu")
    model.save(str(tmp_path / "router"))
    enc = SparseEncoder.load(tmp_path / "router", device="cpu")
    assert enc.kind == "inference-free"
    qs, ds = ["the cat", "dogs fly down"], ["the cat sat on the mat", "birds fly south"]
    theirs_q = model.encode_query(qs, convert_to_tensor=True).to_dense().numpy()
    theirs_d = model.encode_document(ds, convert_to_tensor=True).to_dense().numpy()
    assert np.abs(enc.encode_queries(qs).to_dense() - theirs_q).max() <= 1e-4
    assert np.abs(enc.encode_documents(ds).to_dense() - theirs_d).max() <= 1e-4
    assert np.abs(IdfQueryEncoder.load(tmp_path / "router").encode_queries(qs).to_dense() - theirs_q).max() <= 1e-4
    del torch
