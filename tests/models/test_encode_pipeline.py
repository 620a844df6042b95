"""The encode pipeline (background tokenisation, length buckets, device-side sparse rows, CSR in input
order) against a plain reference: the transformers tokenizer, full ``(B, L, V)`` logits, SPLADE pooling
and pruning in numpy, batch by batch in input order. Real texts (the SciFact test corpus), real models
(SPLADE-tiny and the shipped inference-free model's SPLADE document side)."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from lsr.index.corpus import read_corpus
from lsr.models import SparseEncoder
from lsr.models.base import EncodeProfile, _prefetch, csr_in_input_order, plan_batches
from lsr.models.pooling import head_pool, splade_pool

REPO = Path(__file__).resolve().parents[2]
CORPUS = REPO / "tests" / "data" / "beir" / "scifact"
INFERENCE_FREE = REPO / "models" / "inference-free-splade-tiny-scifact-nfcorpus"
MAX_LEN = 96  # short documents keep the CPU run quick; the corpus still fills it and falls short of it


def _texts() -> list[str]:
    """Full abstracts (mostly truncated), titles (short), and edge cases, shuffled: 150 texts, more
    than the pipeline's first window, so the background thread runs."""
    docs = list(read_corpus(CORPUS, 90))
    texts = [d.full_text for d in docs[:75]] + [d.title for d in docs[75:]]
    texts += ["", "   ", "the cat sat on the mat", "[SEP] inside a text [CLS]", "naïve café, 東京 and Ωmega"]
    texts += [d.title for d in list(read_corpus(CORPUS, 150))[90:145]]
    rng = np.random.default_rng(7)
    return [texts[i] for i in rng.permutation(len(texts))]


TEXTS = _texts()


@pytest.fixture(scope="module", params=["splade-tiny", "inference-free"])
def enc(request):
    if request.param == "inference-free":
        e = SparseEncoder.load(INFERENCE_FREE, device="cpu", max_doc_length=MAX_LEN)
        assert e.kind == "inference-free"
    else:
        from lsr.models.hub import ModelFetchError, model_path

        try:
            folder = model_path("splade-tiny")
        except ModelFetchError as exc:
            pytest.skip(f"SPLADE-tiny unavailable: {exc}")
        e = SparseEncoder.load(folder, device="cpu", max_doc_length=MAX_LEN)
    return e


def reference(enc, texts, batch_size=16, top_k=None, min_weight=None) -> np.ndarray:
    """Dense ``(n, V)`` document weights: transformers tokenizer, full logits, ``splade_pool``, in input order."""
    out = []
    with torch.inference_mode():
        for s in range(0, len(texts), batch_size):
            t = enc.tokenizer(texts[s : s + batch_size], padding=True, truncation=True, max_length=enc.max_doc_length,
                              return_tensors="pt")
            logits = enc.model(input_ids=t["input_ids"], attention_mask=t["attention_mask"]).logits
            out.append(splade_pool(logits.float(), t["attention_mask"], enc.pooling, enc.activation).numpy())
    return prune(np.concatenate(out), top_k, min_weight)


def prune(dense: np.ndarray, top_k=None, min_weight=None) -> np.ndarray:
    """The pruning knobs in numpy: weights below ``min_weight`` dropped, then all but each row's ``top_k``."""
    dense = dense.copy()
    if min_weight is not None:
        dense[dense < min_weight] = 0.0
    if top_k is not None:
        drop = np.argsort(-dense, axis=1, kind="stable")[:, top_k:]
        np.put_along_axis(dense, drop, 0.0, axis=1)
    return dense


@pytest.fixture(scope="module")
def ref(enc):
    return reference(enc, TEXTS)


def assert_same(batch, ref_dense, atol=1e-4):
    """Same terms and weights: weights within ``atol``; a term present on one side only must weigh
    less than ``atol`` (a logit within rounding of 0)."""
    assert batch.shape == ref_dense.shape
    got = batch.to_dense()
    np.testing.assert_allclose(got, ref_dense, atol=atol, rtol=1e-4)
    only = (got != 0) != (ref_dense != 0)
    assert np.all(np.maximum(got, ref_dense)[only] < atol)
    for i in range(len(batch)):  # CSR rows hold ascending, distinct columns
        cols, _ = batch.row(i)
        assert np.all(np.diff(cols) > 0)


def test_token_ids_match_the_transformers_tokenizer(enc):
    long = " ".join(["pneumonoultramicroscopicsilicovolcanoconiosis"] * 200)
    texts = TEXTS + [long, "\u00a0\u200b", "A" * 5000]
    for max_length in (enc.max_doc_length, 8, 512):
        want = enc.tokenizer(texts, truncation=True, max_length=max_length, return_attention_mask=False,
                             return_token_type_ids=False)["input_ids"]
        assert enc._token_ids(texts, "document", max_length) == want
    if enc.kind == "inference-free":  # its queries: no special tokens
        want = enc.tokenizer(texts, truncation=True, max_length=enc.max_query_length, add_special_tokens=False,
                             return_attention_mask=False, return_token_type_ids=False)["input_ids"]
        assert enc._token_ids(texts, "query", None) == want
    # the shared tokenizer's own settings are untouched by the private copies
    assert enc.tokenizer(["x " * 600])["input_ids"][0].__len__() == 602


def test_matches_the_reference_in_input_order(enc, ref):
    profile = EncodeProfile()
    enc.encode_documents(TEXTS[:40], batch_size=8, profile=profile)  # one window: runs inline
    got = enc.encode_documents(TEXTS, batch_size=8)  # several windows: the background thread
    assert_same(got, ref)
    assert got.vocab == enc.vocab and got.indices.dtype == np.int32 and got.values.dtype == np.float32
    assert profile.docs == 40 and profile.batches == 5 and profile.padded_tokens >= profile.tokens > 0


def test_order_restored_for_any_input_order(enc, ref):
    perm = np.random.default_rng(3).permutation(len(TEXTS))
    got = enc.encode_documents([TEXTS[i] for i in perm], batch_size=16)
    assert_same(got, ref[perm])


def test_batch_larger_than_input_and_empty_strings(enc, ref):
    assert_same(enc.encode_documents(TEXTS[:20], batch_size=10_000), ref[:20])
    empty = enc.encode_documents(["", "", "x", ""], batch_size=3)
    assert_same(empty, reference(enc, ["", "", "x", ""]))
    assert empty.row_nnz()[0] > 0  # [CLS] [SEP] alone still expand to terms
    np.testing.assert_array_equal(empty.to_dense()[0], empty.to_dense()[1])
    assert len(enc.encode_documents([], batch_size=4)) == 0


def test_pruning_on_the_device_matches_numpy(enc, ref):
    sub = TEXTS[:40]
    got = enc.encode_documents(sub, batch_size=16, top_k=20)
    assert_same(got, prune(ref[:40], top_k=20))
    assert got.row_nnz().max() == 20
    assert_same(enc.encode_documents(sub, batch_size=16, min_weight=0.5), prune(ref[:40], min_weight=0.5))
    assert_same(enc.encode_documents(sub, batch_size=16, min_weight=0.5, top_k=10),
                prune(ref[:40], min_weight=0.5, top_k=10))


def test_token_budget(enc, ref):
    profile = EncodeProfile()
    got = enc.encode_documents(TEXTS, batch_size=64, max_tokens=1000, profile=profile)
    assert_same(got, ref)
    assert profile.max_batch_tokens <= 1000 and profile.docs == len(TEXTS)
    with pytest.raises(ValueError, match="max_tokens"):
        enc.encode_documents(TEXTS[:2], max_tokens=0)


def test_profile_accounts_for_the_call(enc):
    profile = EncodeProfile()
    enc.encode_documents(TEXTS[:30], batch_size=8, profile=profile)
    stages = sum(getattr(profile, s) for s in EncodeProfile.STAGES)
    assert profile.forward > 0 and profile.tokenize > 0 and 0 < stages <= profile.total
    assert profile.batches == 4 and profile.padded_tokens % 8 == 0


def test_plan_batches_by_hand():
    lens = np.array([250, 97, 96, 9, 8, 1])
    assert [list(b) for b in plan_batches(lens, 4, None)] == [[0, 1, 2, 3], [4, 5]]
    # budget 300 padded tokens: 256 x 1, then 104 x 2 (97 -> 104), then 96 x 3, then 8 x 1
    assert [list(b) for b in plan_batches(lens, 4, 300)] == [[0], [1, 2], [3, 4, 5]]
    assert [list(b) for b in plan_batches(lens, 2, 300)] == [[0], [1, 2], [3, 4], [5]]
    assert [list(b) for b in plan_batches(np.array([900, 5]), 8, 100)] == [[0], [1]]  # longer than the budget: alone


def test_csr_in_input_order_against_a_loop():
    rng = np.random.default_rng(0)
    n = 50
    rows = rng.permutation(n)
    counts = rng.integers(0, 6, n)
    cols = rng.integers(0, 1000, int(counts.sum())).astype(np.int64)
    vals = rng.random(int(counts.sum())).astype(np.float32)
    indptr, indices, values = csr_in_input_order(rows, counts, cols, vals, n)
    starts = np.concatenate([[0], np.cumsum(counts)])
    for j, r in enumerate(rows):
        np.testing.assert_array_equal(indices[indptr[r]:indptr[r + 1]], cols[starts[j]:starts[j + 1]])
        np.testing.assert_array_equal(values[indptr[r]:indptr[r + 1]], vals[starts[j]:starts[j + 1]])


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("activation", ["relu", "log1p_relu"])
def test_head_pool_padding_never_leaks(bias, activation):
    """Padding positions score 0 in the folded projection (the GPU default, run here on the CPU); real
    tokens whose logits are all negative still pool to 0, an all-padding row is 0; same as the masked path."""
    g = torch.Generator().manual_seed(1)
    B, L, H, V = 4, 6, 16, 300
    hidden = torch.randn(B, L, H, generator=g)
    hidden[:, 3:] = 50.0  # large padding states: a leak would show
    w = torch.randn(V, H, generator=g)
    b = torch.randn(V, generator=g) if bias else None
    mask = torch.ones(B, L, dtype=torch.long)
    mask[:, 3:] = 0
    mask[2] = 0
    if b is not None:
        b = -b.abs() - 0.1  # with a zero state, row 1's real logits are the bias: all negative
    hidden[1, :3] = 0.0
    logits = hidden @ w.T + (b if b is not None else 0)
    assert float(logits[1, :3].max()) <= 0 and float(logits[0, :3].max()) > 0
    want = splade_pool(logits, mask, "max", activation)
    got = head_pool(hidden, mask, w, b, "max", activation, chunk_bytes=4096, fold_bias=True)
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
    assert float(got[2].abs().max()) == 0.0
    torch.testing.assert_close(got, head_pool(hidden, mask, w, b, "max", activation, chunk_bytes=4096, fold_bias=False))


def test_prefetch_hands_over_items_and_errors():
    def items():
        yield 1
        yield 2
        raise KeyError("tokeniser failed")

    it = _prefetch(items(), 1, name="test-prefetch")
    assert next(it) == 1 and next(it) == 2
    with pytest.raises(KeyError, match="tokeniser failed"):
        next(it)
    assert not it._thread.is_alive()

    started = threading.Event()

    def endless():
        started.set()
        i = 0
        while True:
            yield i
            i += 1

    it = _prefetch(endless(), 2, name="test-prefetch")
    assert next(it) == 0 and started.is_set()
    it.close()  # the reader stops early: the thread stops too
    assert not it._thread.is_alive()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu(enc, ref):
    dev = SparseEncoder.load(enc.model.name_or_path or INFERENCE_FREE, device="cuda", max_doc_length=MAX_LEN)
    try:
        dev.amp = False
        torch.backends.cuda.matmul.allow_tf32 = False
        assert_same(dev.encode_documents(TEXTS, batch_size=16), ref, atol=1e-3)
        assert_same(dev.encode_documents(TEXTS, batch_size=64, max_tokens=2048, top_k=20), prune(ref, top_k=20),
                    atol=1e-3)
        dev.amp = True  # bf16: the same heavy terms
        got = dev.encode_documents(TEXTS, batch_size=16).to_dense()
        for i in range(len(TEXTS)):
            top = set(np.argsort(-ref[i])[:5]) if ref[i].any() else set()
            assert len(top & set(np.argsort(-got[i])[:10])) >= min(4, len(top))
    finally:
        del dev
        torch.cuda.empty_cache()
