"""Decoder-only (Mistral-SPLADE) encoders on tiny random Llama/Mistral models: echo positions, pooling,
pruning, LoRA save/load merged and separate."""

import numpy as np
import pytest
import torch

from lsr.models import SparseEncoder
from lsr.models.decoder import DecoderSpladeEncoder, echo_batch
from lsr.models.pooling import splade_pool


def test_echo_positions_by_hand():
    ids, attn, pool = echo_batch([[5, 6, 7], [8], []], bos=1, pad=0)
    assert ids.tolist() == [[1, 5, 6, 7, 5, 6, 7], [1, 8, 8, 0, 0, 0, 0], [1, 0, 0, 0, 0, 0, 0]]
    assert attn.tolist() == [[1] * 7, [1, 1, 1, 0, 0, 0, 0], [1, 0, 0, 0, 0, 0, 0]]
    assert pool.tolist() == [[0, 0, 0, 0, 1, 1, 1], [0, 0, 1, 0, 0, 0, 0], [0] * 7]
    ids, attn, pool = echo_batch([[5, 6]], bos=None, pad=0, echo=False)
    assert ids.tolist() == [[5, 6]] and pool.tolist() == [[1, 1]]


@pytest.fixture(scope="module", params=["llama", "mistral"])
def decoder(request, bert_tokenizer, tiny_decoder):
    return DecoderSpladeEncoder(tiny_decoder(bert_tokenizer, request.param), bert_tokenizer, max_doc_length=24,
                                max_query_length=8)


TEXTS = ["the cat sat on the mat", "x", "", "a much longer text " * 10]


def test_pooling_covers_the_second_copy_only(decoder):
    text = "the cat sat"
    x = decoder.tokenizer(text, add_special_tokens=False)["input_ids"]
    bos = decoder.bos_token_id
    assert bos == decoder.tokenizer.cls_token_id  # from the model config: this tokenizer has no BOS
    ids = torch.tensor([[bos] + x + x])
    with torch.inference_mode():
        logits = decoder.model(input_ids=ids).logits
        mask = torch.zeros_like(ids)
        mask[0, 1 + len(x):] = 1
        expected = splade_pool(logits, mask)
        got = decoder.forward_documents([text])
        assert torch.allclose(got, expected, atol=1e-6)
        first_copy = torch.zeros_like(ids)
        first_copy[0, 1:1 + len(x)] = 1
        assert not torch.allclose(got, splade_pool(logits, first_copy), atol=1e-4)


def test_encode_matches_forward_and_prunes(decoder):
    batch = decoder.encode_documents(TEXTS, batch_size=2)
    with torch.inference_mode():
        dense = decoder.forward_documents(TEXTS).numpy()
    np.testing.assert_allclose(batch.to_dense(), dense, atol=1e-5)
    assert batch.row_nnz()[2] == 0  # an empty text pools nothing
    top = decoder.encode_queries(TEXTS, top_k=7)
    assert list(top.row_nnz()) == [7, 7, 0, 7]
    assert decoder.dim == len(decoder.tokenizer) and len(decoder.vocab) == decoder.dim


def test_truncation_applies_per_copy(decoder):
    long = " ".join(f"w{i}" for i in range(200))
    ids = decoder.tokenizer(long, add_special_tokens=False)["input_ids"][:24]
    feats = decoder.tokenize([long])
    assert feats["input_ids"].shape[1] == 1 + 2 * 24 and int(feats["pool_mask"].sum()) == 24
    np.testing.assert_allclose(decoder.encode_documents([long]).to_dense(),
                               decoder.encode_documents([decoder.tokenizer.decode(ids)]).to_dense(), atol=1e-5)


@pytest.mark.parametrize("merge", [True, False])
def test_lora_save_load(bert_tokenizer, tiny_decoder, tmp_path, merge):
    enc = DecoderSpladeEncoder(tiny_decoder(bert_tokenizer, "llama", seed=1), bert_tokenizer, max_doc_length=16)
    base_out = enc.encode_documents(TEXTS[:2]).to_dense()
    enc.add_lora(r=4, lora_alpha=8)
    assert enc.has_lora
    trainable = [n for n, p in enc.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    torch.manual_seed(3)
    with torch.no_grad():
        for n, p in enc.model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.3)
    out = enc.encode_documents(TEXTS[:2]).to_dense()
    assert np.abs(out - base_out).max() > 1e-3  # the adapters change the output
    enc.save(tmp_path / "m", merge_lora=merge)
    assert (tmp_path / "m" / "adapter").exists() is (not merge)
    again = SparseEncoder.load(tmp_path / "m", device="cpu")
    assert again.kind == "decoder" and again.has_lora is (not merge)
    np.testing.assert_allclose(again.encode_documents(TEXTS[:2]).to_dense(), out, atol=1e-4)


def test_plain_causal_lm_folder_is_detected(bert_tokenizer, tiny_decoder, tmp_path):
    model = tiny_decoder(bert_tokenizer, "mistral", seed=2)
    model.save_pretrained(tmp_path / "hf")
    bert_tokenizer.save_pretrained(tmp_path / "hf")
    enc = SparseEncoder.load(tmp_path / "hf", device="cpu")
    assert isinstance(enc, DecoderSpladeEncoder) and enc.echo


def test_gradients_flow(decoder):
    decoder.train()
    try:
        decoder.forward_queries(["cat"]).sum().backward()
        assert any(p.grad is not None and float(p.grad.abs().sum()) > 0 for p in decoder.model.parameters())
    finally:
        decoder.zero_grad(set_to_none=True)
        decoder.eval()


def test_logit_shift_by_hand_and_round_trip(bert_tokenizer, tiny_decoder, tmp_path):
    model = tiny_decoder(bert_tokenizer, "llama", seed=4)
    raw = DecoderSpladeEncoder(model, bert_tokenizer, max_doc_length=16)
    shifted = DecoderSpladeEncoder(model, bert_tokenizer, max_doc_length=16, logit_shift=3.0)
    text = "the cat sat on the mat"
    feats = shifted.tokenize([text])
    with torch.inference_mode():
        logits = model(input_ids=feats["input_ids"], attention_mask=feats["attention_mask"]).logits
        expected = splade_pool(torch.log_softmax(logits.float(), -1) + 3.0, feats["pool_mask"])
        got = shifted.forward_documents([text])
        assert torch.allclose(got, expected, atol=1e-6)
        # the shift is what sparsifies: raw logits of this random model are active far more often
        assert int((got > 0).sum()) < int((raw.forward_documents([text]) > 0).sum())
        # a term is active exactly where its probability exceeds exp(-shift) at some pooled position
        probs = torch.softmax(logits.float(), -1)[0][feats["pool_mask"][0].bool()]
        assert torch.equal(got[0] > 0, (probs > np.exp(-3.0)).any(0))
    np.testing.assert_allclose(shifted.encode_documents(TEXTS).to_dense(),
                               shifted.forward_documents(TEXTS).detach().numpy(), atol=1e-5)
    shifted.save(tmp_path / "m")
    again = SparseEncoder.load(tmp_path / "m", device="cpu")
    assert again.logit_shift == 3.0
    np.testing.assert_allclose(again.encode_documents([text]).to_dense(), got.numpy(), atol=1e-5)
    with pytest.raises(ValueError, match="logit_shift"):
        DecoderSpladeEncoder(model, bert_tokenizer, logit_shift=float("nan"))
