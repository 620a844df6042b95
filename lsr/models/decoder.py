"""Decoder-only sparse encoder ("Mistral-SPLADE"): a causal LM's vocabulary logits pooled like SPLADE.

A causal token sees only its left context, so the text is fed twice (echo input,
``[bos] text text``) and only the second copy is pooled: each of its tokens has read the whole text.
LoRA adapters come through peft; ``save`` writes them merged into the weights or as a separate folder.
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path

import torch

from lsr.models.base import SparseEncoder
from lsr.models.splade import SpladeEncoder

__all__ = ["DecoderSpladeEncoder", "echo_batch", "ADAPTER_DIR"]

logger = logging.getLogger(__name__)

ADAPTER_DIR = "adapter"


def echo_batch(ids: list[list[int]], *, bos: int | None, pad: int, echo: bool = True):
    """Token id lists -> ``(input_ids, attention_mask, pool_mask)`` LongTensors, right-padded.

    With ``echo`` a row is ``[bos] x x`` and ``pool_mask`` covers the second ``x``; without it the row is
    ``[bos] x`` and ``pool_mask`` covers ``x``. An empty text pools nothing (a zero vector).
    """
    head = [bos] if bos is not None else []
    rows = [head + x + x if echo else head + x for x in ids]
    L = max(1, max((len(r) for r in rows), default=1))
    B = len(rows)
    input_ids = torch.full((B, L), pad, dtype=torch.long)
    attn = torch.zeros((B, L), dtype=torch.long)
    pool = torch.zeros((B, L), dtype=torch.long)
    for i, (r, x) in enumerate(zip(rows, ids)):
        if r:
            input_ids[i, : len(r)] = torch.as_tensor(r, dtype=torch.long)
            attn[i, : len(r)] = 1
        start = len(head) + (len(x) if echo else 0)
        pool[i, start : start + len(x)] = 1
    return input_ids, attn, pool


class DecoderSpladeEncoder(SpladeEncoder):
    """Any ``AutoModelForCausalLM`` (Mistral, Llama, Qwen, Gemma, ...) as a SPLADE-style encoder.

    ``forward_documents`` / ``forward_queries`` pool ``log1p(relu(logits))`` over the second copy of
    the echoed text. ``add_lora(...)`` wraps the backbone in a peft LoRA model.

    ``logit_shift``: a causal LM's logits are defined up to a per-position constant (softmax ignores
    it) and most of them are positive, so ``log1p(relu(logits))`` is dense: every one of SmolLM2's
    49,152 terms is active before training. With ``logit_shift = s`` the activation reads
    ``log1p(relu(log_softmax(logits) + s))``: a term is active where the LM gives it a probability
    above ``exp(-s)`` (for SmolLM2-135M, s = 6 leaves about 150-250 terms per document, s = 8 about
    800). ``None`` keeps the raw logits.
    """

    kind = "decoder"

    def __init__(self, model, tokenizer, *, echo: bool = True, logit_shift: float | None = None, **kw):
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token if tokenizer.eos_token is not None else tokenizer.convert_ids_to_tokens(0)
        super().__init__(model, tokenizer, **kw)
        self.echo = bool(echo)
        if logit_shift is not None and not (isinstance(logit_shift, (int, float)) and logit_shift == logit_shift):
            raise ValueError(f"logit_shift must be a number or None, got {logit_shift!r}")
        self.logit_shift = None if logit_shift is None else float(logit_shift)

    def _logits(self, feats) -> torch.Tensor:
        logits = super()._logits(feats)
        if self.logit_shift is None:
            return logits
        return torch.log_softmax(logits.float(), dim=-1) + self.logit_shift

    def _pool_inference(self, feats, side):
        if self.logit_shift is None:
            return super()._pool_inference(feats, side)
        return SparseEncoder._pool_inference(self, feats, side)  # the softmax needs every logit: no fused head

    @property
    def bos_token_id(self) -> int | None:
        """The tokenizer's BOS, else the model config's (a row starts with it when there is one)."""
        bos = self.tokenizer.bos_token_id
        if bos is None:
            cfg = getattr(self.model, "config", None)
            bos = getattr(cfg, "bos_token_id", None)
        return bos if isinstance(bos, int) and 0 <= bos < self.dim else None

    def _token_ids(self, texts, side, max_length):
        enc = self.tokenizer(texts, truncation=True, max_length=self._max_length(side, max_length),
                             add_special_tokens=False, return_attention_mask=False, return_token_type_ids=False)
        return enc["input_ids"]

    def _collate(self, ids, side):
        input_ids, attn, pool = echo_batch(ids, bos=self.bos_token_id, pad=self.tokenizer.pad_token_id,
                                           echo=self.echo)
        dev = self.device
        return {"input_ids": input_ids.to(dev), "attention_mask": attn.to(dev), "pool_mask": pool.to(dev)}

    # ------------------------------------------------------------------ LoRA
    @property
    def has_lora(self) -> bool:
        return hasattr(self.model, "peft_config")

    def add_lora(self, r: int = 16, lora_alpha: int = 32, lora_dropout: float = 0.0, target_modules="all-linear",
                 **kw) -> "DecoderSpladeEncoder":
        """Wrap the backbone in LoRA adapters (peft); only the adapters are trainable afterwards."""
        from peft import LoraConfig, get_peft_model

        cfg = LoraConfig(r=r, lora_alpha=lora_alpha, lora_dropout=lora_dropout, target_modules=target_modules, **kw)
        self.model = get_peft_model(self.model, cfg)
        return self

    # ------------------------------------------------------------------ persistence
    def lsr_config(self):
        cfg = super().lsr_config()
        cfg["echo"] = self.echo
        cfg["logit_shift"] = self.logit_shift
        cfg["adapter"] = getattr(self, "_saved_adapter", None)
        return cfg

    def save(self, folder, merge_lora: bool = True) -> Path:
        """Save in HF layout. With LoRA: ``merge_lora=True`` folds the adapters into the weights (a plain
        checkpoint); ``False`` saves the base weights plus ``adapter/`` (peft's adapter files)."""
        self._saved_adapter = ADAPTER_DIR if (self.has_lora and not merge_lora) else None
        try:
            return super().save(folder, merge_lora=merge_lora)
        finally:
            self._saved_adapter = None

    def _save_model(self, folder: Path, merge_lora: bool = True, **kw) -> None:
        if not self.has_lora:
            self.model.save_pretrained(folder, safe_serialization=True)
            return
        if merge_lora:
            merged = copy.deepcopy(self.model).merge_and_unload()
            merged.save_pretrained(folder, safe_serialization=True)
            return
        base = copy.deepcopy(self.model).unload()
        base.save_pretrained(folder, safe_serialization=True)
        self.model.save_pretrained(folder / ADAPTER_DIR, safe_serialization=True)

    _auto_model = "AutoModelForCausalLM"

    @classmethod
    def _from_folder(cls, folder: Path, **settings) -> "DecoderSpladeEncoder":
        settings.pop("st_layout", None)
        dtype = settings.pop("dtype", None)
        adapter = settings.pop("adapter", None)
        lora = settings.pop("lora", None)
        model, tokenizer = cls._load_backbone(folder, dtype)
        if adapter:
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, folder / adapter, is_trainable=True)
        enc = cls(model, tokenizer, **settings)
        if lora:
            enc.add_lora(**(lora if isinstance(lora, dict) else {}))
        return enc
