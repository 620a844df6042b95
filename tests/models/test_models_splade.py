"""SPLADE on the real SPLADE-tiny: outputs, round trips, sentence-transformers parity, bad input."""

import numpy as np
import pytest
import torch

from lsr import SparseBatch
from lsr.models import SparseEncoder

TEXTS = ["the cat sat on the mat", "Paris is the capital of France", "", "fever and headache after travel"]


def test_sensible_expansion(splade):
    assert splade.kind == "splade" and splade.dim == 30522 == len(splade.vocab)
    top = [t for t, _ in splade.decode(splade.encode_documents(["the cat sat on the mat"]), top_k=5)[0]]
    assert {"mat", "cat", "sat"} <= set(top)


def test_encode_matches_differentiable_forward(splade):
    batch = splade.encode_documents(TEXTS, batch_size=3)
    assert isinstance(batch, SparseBatch) and len(batch) == len(TEXTS) and batch.vocab == splade.vocab
    with torch.inference_mode():
        dense = splade.forward_documents(TEXTS).numpy()
    np.testing.assert_allclose(batch.to_dense(), dense, atol=1e-5)
    assert np.all(np.diff(batch.indices[batch.indptr[0]:batch.indptr[1]]) > 0)


def test_order_independent_of_batching(splade):
    a = splade.encode_queries(TEXTS, batch_size=1).to_dense()
    b = splade.encode_queries(TEXTS[::-1], batch_size=4).to_dense()[::-1]
    np.testing.assert_allclose(a, b, atol=1e-5)


def test_gradients_flow_in_training_mode(splade):
    splade.train()
    try:
        reps = splade.forward_documents(["a short document"])
        q = splade.forward_queries(["document"])
        (q * reps).sum().backward()
        grads = [p.grad for p in splade.model.parameters() if p.grad is not None]
        assert grads and any(float(g.abs().sum()) > 0 for g in grads)
    finally:
        splade.zero_grad(set_to_none=True)
        splade.eval()


def test_pruning(splade):
    full = splade.encode_documents(TEXTS[:2])
    top = splade.encode_documents(TEXTS[:2], top_k=5)
    assert list(top.row_nnz()) == [5, 5]
    for i in range(2):
        fi, fv = full.row(i)
        ti, tv = top.row(i)
        assert set(ti) == set(fi[np.argsort(-fv)[:5]])
    mw = splade.encode_documents(TEXTS[:2], min_weight=1.0)
    assert mw.values.min() >= 1.0 and mw.nnz == int((full.values >= 1.0).sum())


def test_save_load_identical(splade, tmp_path):
    splade.top_k = 50
    try:
        splade.save(tmp_path / "m")
    finally:
        splade.top_k = None
    for name in ("config.json", "model.safetensors", "tokenizer.json", "lsr_config.json", "modules.json"):
        assert (tmp_path / "m" / name).exists(), name
    again = SparseEncoder.load(tmp_path / "m", device="cpu")
    assert again.top_k == 50 and again.max_doc_length == splade.max_doc_length
    a = splade.encode_documents(TEXTS, top_k=50)
    b = again.encode_documents(TEXTS)
    np.testing.assert_array_equal(a.indptr, b.indptr)
    np.testing.assert_array_equal(a.indices, b.indices)
    np.testing.assert_array_equal(a.values, b.values)


def test_over_long_text_is_truncated(splade):
    splade.max_doc_length = 16
    try:
        words = " ".join(f"word{i}" for i in range(400))
        ids = splade.tokenizer(words, add_special_tokens=False)["input_ids"][:14]  # 16 with [CLS]/[SEP]
        cut = splade.tokenizer.decode(ids)
        np.testing.assert_allclose(splade.encode_documents([words]).to_dense(),
                                   splade.encode_documents([cut]).to_dense(), atol=1e-5)
    finally:
        splade.max_doc_length = 256


def test_bad_input(splade):
    empty = splade.encode_documents([])
    assert len(empty) == 0 and empty.dim == splade.dim
    assert len(splade.encode_queries("one text")) == 1  # a single str is a batch of one
    blank = splade.encode_documents([""])
    assert len(blank) == 1  # [CLS] [SEP] alone: documented, not an error
    with pytest.raises(TypeError, match=r"texts\[1\]"):
        splade.encode_documents(["ok", 3])
    with pytest.raises(TypeError):
        splade.encode_documents(None)
    with pytest.raises(TypeError):
        splade.encode_queries([b"bytes"])
    with pytest.raises(ValueError, match="batch_size"):
        splade.encode_documents(["x"], batch_size=0)
    with pytest.raises(ValueError, match="top_k"):
        splade.encode_documents(["x"], top_k=0)


def test_unknown_kind_and_name(splade_dir):
    with pytest.raises(ValueError, match="kind"):
        SparseEncoder.load(splade_dir, kind="colbert")
    with pytest.raises(FileNotFoundError, match="known"):
        SparseEncoder.load("no-such-model-name")
    with pytest.raises(ValueError, match="unknown option"):
        SparseEncoder.load(splade_dir, bogus=1)


# ---------------------------------------------------------------------- sentence-transformers
@pytest.fixture(scope="module")
def st():
    return pytest.importorskip("sentence_transformers")


def test_st_loads_lsr_folder_with_parity(splade, st, tmp_path):
    splade.save(tmp_path / "m")
    model = st.SparseEncoder(str(tmp_path / "m"), device="cpu")
    ours = splade.encode_documents(TEXTS).to_dense()
    theirs = model.encode_document(TEXTS, convert_to_tensor=True, batch_size=2).to_dense().numpy()
    assert np.abs(ours - theirs).max() <= 1e-4


def test_lsr_loads_st_folder_with_parity(splade, splade_dir, st, tmp_path):
    model = st.SparseEncoder(str(splade_dir), device="cpu")
    model.max_seq_length = 256
    model.save(str(tmp_path / "st"))
    assert not (tmp_path / "st" / "lsr_config.json").exists()
    enc = SparseEncoder.load(tmp_path / "st", device="cpu")
    assert enc.kind == "splade" and enc.pooling == "max" and enc.max_doc_length == 256
    theirs = model.encode_document(TEXTS, convert_to_tensor=True).to_dense().numpy()
    assert np.abs(enc.encode_documents(TEXTS).to_dense() - theirs).max() <= 1e-4


def test_st_sum_pooling_folder(splade_dir, st, tmp_path):
    from sentence_transformers.sparse_encoder.modules import SpladePooling

    base = st.SparseEncoder(str(splade_dir), device="cpu")
    model = st.SparseEncoder(modules=[base[0], SpladePooling("sum")], device="cpu")
    model.save(str(tmp_path / "sum"))
    enc = SparseEncoder.load(tmp_path / "sum", device="cpu")
    assert enc.pooling == "sum"
    theirs = model.encode_document(TEXTS[:2], convert_to_tensor=True).to_dense().numpy()
    assert np.abs(enc.encode_documents(TEXTS[:2]).to_dense() - theirs).max() <= 1e-4


def test_concurrent_threads_get_their_own_results(splade):
    import threading

    texts = [f"text number {i} about cats and dogs" for i in range(24)]
    ref = splade.encode_queries(texts, batch_size=4).to_dense()
    outs, errors = {}, []

    def work(k):
        try:
            outs[k] = splade.encode_queries(texts[k::3], batch_size=2).to_dense()
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for k in range(3):
        np.testing.assert_allclose(outs[k], ref[k::3], atol=1e-5)
