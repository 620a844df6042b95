"""Sparse encoders: SPLADE (MLM), inference-free (SPLADE documents + IDF/learned query table) and
decoder-only "Mistral-SPLADE" (echo input, LoRA), behind one :class:`SparseEncoder` interface.

Importing ``lsr.models`` is torch-free; ``SparseEncoder`` (torch, transformers) loads on first use, and
``lsr.models.inference_free.IdfQueryEncoder`` never imports torch.

Inference API (returns ``lsr.SparseBatch``, CSR over the model vocabulary, with ``vocab`` set)::

    from lsr.models import SparseEncoder
    enc = SparseEncoder.load("splade-tiny")                 # short name -> cached HF folder (lsr.models.hub)
    enc = SparseEncoder.load(path, kind=None, device=None,   # any folder: lsr, HF *ForMaskedLM, ST v5+ SparseEncoder
                             top_k=None, min_weight=None, max_query_length=..., max_doc_length=...)
    docs = enc.encode_documents(texts, batch_size=32, show_progress_bar=False)   # SparseBatch
    qs = enc.encode_queries(texts, batch_size=32, show_progress_bar=False, top_k=None, min_weight=None)
    enc.decode(docs, top_k=10) -> list[list[(token, weight)]]
    enc.vocab (list[str]), enc.dim, enc.kind ("splade" | "inference-free" | "decoder"), enc.device
    enc.save(dir)      # HF layout (config.json, model.safetensors, tokenizer files) + lsr_config.json,
                       # plus sentence-transformers files so ST's SparseEncoder(dir) loads SPLADE and
                       # inference-free (Router) models
    Input: a list (or any iterable) of str; a single str is a batch of one. An empty list gives a
    batch of 0 rows; a non-str item raises TypeError naming its index. An empty string is allowed:
    SPLADE gives the vector of [CLS] [SEP] alone, decoder and inference-free queries an empty row.
    Texts longer than ``max_doc_length`` / ``max_query_length`` tokens (defaults 256 / 64; 512 for
    inference-free queries; decoder: per copy of the echo) are truncated; both are saved in
    lsr_config.json and settable as attributes. Encoding is thread-safe (the service's threads).

Training API (for ``lsr.train`` / ``lsr.losses``): a ``SparseEncoder`` *is* a ``torch.nn.Module``::

    enc.tokenizer                         # transformers PreTrainedTokenizerFast
    enc.model                             # the backbone (e.g. BertForMaskedLM / LlamaForCausalLM / PeftModel)
    feats = enc.tokenize(texts, side="document" | "query", max_length=None)   # dict of tensors on enc.device
    reps = enc.forward_documents(texts_or_feats)   # dense (B, V) float tensor: pooled log1p(relu(logits)),
    reps = enc.forward_queries(texts_or_feats)     # padding masked; differentiable (no inference_mode inside)
    scores = (q_reps * d_reps).sum(-1)             # dot product is the retrieval score
    enc.train(); enc.parameters(); enc.to(device); enc.save(dir)   # then SparseEncoder.load(dir)
    # inference-free: forward_queries = presence(tokens) * enc.query_weights (an nn.Parameter, (V,));
    #   enc.fit_idf(corpus_texts) sets BM25 IDF; enc.query_weights.requires_grad_(True) to learn it.
    # student from a dense backbone: SparseEncoder.load("minilm") -> BertForMaskedLM with a new MLM
    #   head (decoder tied to the word embeddings, transform randomly initialised).
    # decoder: tokenize() builds the echo input ("text" twice); pooling covers the second copy only.
    # LoRA: SparseEncoder.load(path, kind="decoder", lora={"r": 16, "lora_alpha": 32, ...}) or
    #   enc.add_lora(r=16, ...); enc.save(dir, merge_lora=True | False).

Pooling as a plain function: ``lsr.models.pooling.splade_pool(logits, mask, pooling="max"|"sum")``.
"""

from __future__ import annotations

__all__ = ["SparseEncoder", "SpladeEncoder", "InferenceFreeEncoder", "DecoderSpladeEncoder", "IdfQueryEncoder", "model_path"]


def __getattr__(name):
    # Keep `import lsr.models` torch-free: the torch-backed classes load on first access.
    if name in ("SparseEncoder", "SpladeEncoder", "InferenceFreeEncoder", "DecoderSpladeEncoder"):
        from lsr.models import base, decoder, splade  # importing the subclasses registers their kinds

        return getattr(base if name == "SparseEncoder" else decoder if name == "DecoderSpladeEncoder" else splade, name)
    if name == "IdfQueryEncoder":
        from lsr.models.inference_free import IdfQueryEncoder

        return IdfQueryEncoder
    if name == "model_path":
        from lsr.models.hub import model_path

        return model_path
    raise AttributeError(f"module 'lsr.models' has no attribute {name!r}")
