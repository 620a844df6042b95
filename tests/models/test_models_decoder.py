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


@pytest.mark.parametrize("echo", [True, False])
def test_head_projects_the_pooled_span_only(bert_tokenizer, tiny_decoder, echo):
    """The vocabulary head sees (B, W, H), W the longest pooled span (half the echoed row), and the
    pooled weights equal full-logit pooling over the padded batch."""
    model = tiny_decoder(bert_tokenizer, "llama", seed=2)
    enc = DecoderSpladeEncoder(model, bert_tokenizer, max_doc_length=24, echo=echo, logit_shift=2.0)
    feats = enc.tokenize(TEXTS)
    seen = []
    hook = model.get_output_embeddings().register_forward_hook(lambda m, a, o: seen.append(tuple(a[0].shape)))
    try:
        with torch.inference_mode():
            got = enc.forward_documents(TEXTS)
    finally:
        hook.remove()
    width = int(feats["pool_mask"].sum(1).max())
    assert seen == [(len(TEXTS), width, model.config.hidden_size)]
    if echo:
        assert 2 * width + 1 == feats["input_ids"].shape[1]  # the longest row: [bos] x x
    with torch.inference_mode():
        logits = model(input_ids=feats["input_ids"], attention_mask=feats["attention_mask"]).logits
        expected = splade_pool(torch.log_softmax(logits.float(), -1) + 2.0, feats["pool_mask"])
    assert torch.allclose(got, expected, atol=1e-5)
    assert float(got[2].abs().sum()) == 0.0  # the empty text pools nothing


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


# ---------------------------------------------------------------------- per-term bias (vocab_init)
from lsr.models.decoder import TERM_BIAS_FILE, corpus_term_statistics, solve_tau, term_surprisal  # noqa: E402

SAMPLE = ["the cat sat on the mat", "dogs bark at night in the city", "protein folding in living cells",
          "a b c", "", "the cell membrane and the cat", "night falls over the quiet city streets"]


def _hand_pbar_and_peaks(model, tokenizer, texts, max_length):
    """One text at a time, no padding: numpy softmax (float64) over the second echo copy."""
    bos = model.config.bos_token_id
    probs, peaks = [], []
    for t in texts:
        x = tokenizer(t, add_special_tokens=False)["input_ids"][:max_length]
        if not x:
            continue
        with torch.inference_mode():
            logits = model(input_ids=torch.tensor([[bos] + x + x])).logits[0, 1 + len(x):].double().numpy()
        logp = logits - logits.max(-1, keepdims=True)
        logp -= np.log(np.exp(logp).sum(-1, keepdims=True))
        probs.append(np.exp(logp))
        peaks.append(logp.max(0))
    return np.concatenate(probs).mean(0), np.stack(peaks)


def test_term_bias_init_against_numpy(bert_tokenizer, tiny_decoder):
    model = tiny_decoder(bert_tokenizer, "llama", seed=5)
    enc = DecoderSpladeEncoder(model, bert_tokenizer, max_doc_length=6)  # truncation applies to the statistics
    pbar_ref, peak_ref = _hand_pbar_and_peaks(model, bert_tokenizer, SAMPLE, 6)
    pbar, peak, tokens = corpus_term_statistics(enc, SAMPLE, batch_size=3)  # batched, padded, sorted by length
    assert tokens == sum(min(6, len(bert_tokenizer(t, add_special_tokens=False)["input_ids"])) for t in SAMPLE)
    np.testing.assert_allclose(pbar.numpy(), pbar_ref, rtol=1e-4, atol=1e-12)
    assert abs(float(pbar.sum()) - 1.0) < 1e-6
    assert sorted(peak.max(1).values.tolist()) == pytest.approx(sorted(peak_ref.max(1)), abs=1e-4)  # rows reordered
    fit = enc.fit_term_bias(SAMPLE, target_terms=30, max_surprisal=20.0, batch_size=3)
    assert fit.docs == 6 and fit.tokens == tokens and fit.clamped == 0  # this random LM predicts every term a little
    surprisal = np.minimum(-np.log(pbar_ref), 20.0)
    np.testing.assert_allclose(enc.term_bias.detach().numpy() + fit.tau, surprisal, atol=1e-4)
    assert enc.term_bias.requires_grad and enc.logit_shift is None
    assert fit.suppressed == [enc.vocab[i] for i in np.argsort(surprisal)[:10]]


def test_surprisal_clamp(bert_tokenizer, tiny_decoder):
    pbar = torch.tensor([0.5, 1e-3, 1e-12, 0.0], dtype=torch.float64)
    np.testing.assert_allclose(term_surprisal(pbar, 20.0).numpy(), [np.log(2), -np.log(1e-3), 20.0, 20.0], rtol=1e-6)
    assert torch.isfinite(term_surprisal(pbar, 5.0)).all() and float(term_surprisal(pbar, 5.0).max()) == 5.0
    for bad in (0.0, -1.0, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="max_surprisal"):
            term_surprisal(pbar, bad)
    # in a fit: a cap below the typical surprisal clamps those terms, and they share one bias value
    model = tiny_decoder(bert_tokenizer, "llama", seed=5)
    enc = DecoderSpladeEncoder(model, bert_tokenizer, max_doc_length=6)
    pbar_ref, _ = _hand_pbar_and_peaks(model, bert_tokenizer, SAMPLE, 6)
    cap = float(np.median(-np.log(pbar_ref)))
    fit = enc.fit_term_bias(SAMPLE, target_terms=30, max_surprisal=cap, batch_size=4)
    over = -np.log(pbar_ref) >= cap
    assert fit.clamped == int(over.sum()) > 0
    b = enc.term_bias.detach().numpy()
    np.testing.assert_allclose(b[over], cap - fit.tau, atol=1e-5)
    np.testing.assert_allclose(b[~over], -np.log(pbar_ref[~over]) - fit.tau, atol=1e-4)


def test_solve_tau_is_the_count_solution():
    g = torch.Generator().manual_seed(0)
    scores = torch.randn(37, 500, generator=g)
    for target in (1, 7.5, 60, 499):
        tau = solve_tau(scores, target)
        count = int((scores > tau).sum())
        assert count == round(37 * target)  # mean active terms = target, to the nearest 1/D
        # an independent bisection on the mean count (float64) stops at the same step, or the one below
        # where D * target falls between two steps
        lo, hi = float(scores.min()) - 1, float(scores.max()) + 1
        for _ in range(200):
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if int((scores.double() > mid).sum()) / 37 > target else (lo, mid)
        assert 0 <= count - int((scores > hi).sum()) <= 1
    for bad in (0, -3, 500, 1e9):
        with pytest.raises(ValueError, match="target_terms"):
            solve_tau(scores, bad)


@pytest.mark.parametrize("target", [12, 40])
def test_fit_reaches_the_target_active_terms(decoder, target):
    enc = DecoderSpladeEncoder(decoder.model, decoder.tokenizer, max_doc_length=12)
    fit = enc.fit_term_bias(SAMPLE, target_terms=target, batch_size=4)
    assert abs(fit.mean_active - target) <= 0.5  # round(D * target) / D
    nnz = enc.encode_documents(SAMPLE, batch_size=2).row_nnz()  # the inference path, measured independently
    real = [i for i, t in enumerate(SAMPLE) if t]
    assert nnz[SAMPLE.index("")] == 0
    assert abs(float(nnz[real].mean()) - target) <= 0.02 * target + 0.5
    np.testing.assert_allclose(enc.encode_documents(SAMPLE).to_dense(),
                               enc.forward_documents(SAMPLE).detach().numpy(), atol=1e-5)


def test_gradients_reach_the_term_bias_in_a_training_step(bert_tokenizer, tiny_decoder):
    enc = DecoderSpladeEncoder(tiny_decoder(bert_tokenizer, "llama", seed=6), bert_tokenizer, max_doc_length=12,
                               max_query_length=6)
    enc.add_lora(r=4, lora_alpha=8)
    enc.fit_term_bias(SAMPLE, target_terms=25, batch_size=4)
    before = enc.term_bias.detach().clone()
    lora_before = {n: p.detach().clone() for n, p in enc.named_parameters() if "lora_B" in n}
    opt = torch.optim.AdamW([p for p in enc.parameters() if p.requires_grad], lr=1e-2, weight_decay=0.0)
    enc.train()
    q = enc.forward_queries(["cat on a mat", "city at night"])
    d = enc.forward_documents(["the cat sat on the mat", "night falls over the quiet city streets"])
    scores = q @ d.T
    loss = torch.nn.functional.cross_entropy(scores, torch.arange(2)) + 1e-3 * (d.mean(0) ** 2).sum()
    loss.backward()
    grad = enc.term_bias.grad
    assert grad is not None
    active = ((q > 0).any(0) | (d > 0).any(0))
    # max pooling of log1p(relu(.)): only an active term gets a gradient, and every term active in a
    # document does (the FLOPS-like term reaches it; a query-only term meets a zero document weight)
    assert not bool((grad != 0)[~active].any())
    assert bool((grad != 0)[(d > 0).any(0)].all()) and int((d > 0).sum()) > 0
    opt.step()
    enc.eval()
    moved = enc.term_bias.detach() != before
    assert torch.equal(moved, grad != 0)
    assert any(not torch.equal(p.detach(), lora_before[n]) for n, p in enc.named_parameters() if "lora_B" in n)


@pytest.mark.parametrize("merge", [True, False])
def test_term_bias_save_load_round_trip(bert_tokenizer, tiny_decoder, tmp_path, merge):
    import json

    enc = DecoderSpladeEncoder(tiny_decoder(bert_tokenizer, "mistral", seed=7), bert_tokenizer, max_doc_length=12)
    enc.add_lora(r=4, lora_alpha=8)
    enc.fit_term_bias(SAMPLE, target_terms=25, batch_size=4)
    torch.manual_seed(8)
    with torch.no_grad():  # as after training: adapters and bias moved away from their start
        enc.term_bias.add_(torch.randn(enc.dim) * 0.3)
        for n, p in enc.model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.3)
    out = enc.encode_documents(TEXTS).to_dense()
    qout = enc.encode_queries(TEXTS).to_dense()
    enc.save(tmp_path / "m", merge_lora=merge)
    cfg = json.loads((tmp_path / "m" / "lsr_config.json").read_text())
    assert cfg["term_bias"] == TERM_BIAS_FILE and (tmp_path / "m" / TERM_BIAS_FILE).exists()
    again = SparseEncoder.load(tmp_path / "m", device="cpu")
    assert torch.equal(again.term_bias.detach(), enc.term_bias.detach()) and again.term_bias.requires_grad
    np.testing.assert_allclose(again.encode_documents(TEXTS).to_dense(), out, atol=1e-4)
    np.testing.assert_allclose(again.encode_queries(TEXTS).to_dense(), qout, atol=1e-4)
    assert (again.encode_documents(TEXTS).to_dense() > 0).sum() == (out > 0).sum()
    # without a bias the folder loads as a plain decoder: a stale file from an earlier save is removed
    plain = DecoderSpladeEncoder(tiny_decoder(bert_tokenizer, "mistral", seed=7), bert_tokenizer, logit_shift=3.0)
    plain.save(tmp_path / "m")
    assert not (tmp_path / "m" / TERM_BIAS_FILE).exists()
    reloaded = SparseEncoder.load(tmp_path / "m", device="cpu")
    assert reloaded.term_bias is None and reloaded.logit_shift == 3.0


def test_term_bias_errors(bert_tokenizer, tiny_decoder, tmp_path):
    import json

    model = tiny_decoder(bert_tokenizer, "llama", seed=9)
    V = len(bert_tokenizer)
    with pytest.raises(ValueError, match="entries but the vocabulary has"):
        DecoderSpladeEncoder(model, bert_tokenizer, term_bias=np.zeros(V - 1))
    with pytest.raises(ValueError, match="NaN or infinite"):
        DecoderSpladeEncoder(model, bert_tokenizer, term_bias=np.full(V, np.nan))
    with pytest.raises(ValueError, match="exclude each other"):
        DecoderSpladeEncoder(model, bert_tokenizer, term_bias=np.zeros(V), logit_shift=5.0)
    enc = DecoderSpladeEncoder(model, bert_tokenizer, max_doc_length=8)
    with pytest.raises(ValueError, match="no tokens"):
        enc.fit_term_bias(["", ""], target_terms=5)
    with pytest.raises(ValueError, match="target_terms"):
        enc.fit_term_bias(SAMPLE, target_terms=V)
    assert enc.term_bias is None  # a failed fit leaves the encoder as it was
    enc.set_term_bias(np.zeros(V))
    enc.save(tmp_path / "m")
    (tmp_path / "m" / TERM_BIAS_FILE).unlink()
    with pytest.raises(FileNotFoundError, match="term_bias.safetensors"):
        SparseEncoder.load(tmp_path / "m", device="cpu")
    cfg = json.loads((tmp_path / "m" / "lsr_config.json").read_text())
    assert cfg["term_bias"] == TERM_BIAS_FILE
