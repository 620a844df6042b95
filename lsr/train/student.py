"""The student seen by the trainer: ``lsr.models.SparseEncoder`` (its torch-module API), with a
thin local stand-in used only while ``lsr.models`` lacks a kind.

What the trainer needs of a student: ``tokenize(texts, side=, max_length=)``,
``forward_documents(feats)``, ``forward_queries(feats)`` (dense (B, V) pooled weights with
gradients), ``query_weights`` (inference-free), ``encode_documents/encode_queries`` → SparseBatch,
``save(dir)``, and being an ``nn.Module``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import torch
from torch import nn

__all__ = ["load_encoder", "LocalSparseEncoder", "set_query_weights"]

logger = logging.getLogger(__name__)


def load_encoder(path: str, kind: str, *, device=None, **kw):
    """``lsr.models.SparseEncoder.load(path, kind=kind)``; the local stand-in if that is missing."""
    try:
        from lsr.models import SparseEncoder

        enc = SparseEncoder.load(path, kind=kind, device=device, **kw)
        logger.info("student/teacher %s loaded through lsr.models (%s)", path, kind)
        return enc
    except (ImportError, AttributeError, NotImplementedError) as exc:
        if kind == "decoder":
            raise
        logger.warning("lsr.models unavailable (%s); using lsr.train's local SPLADE encoder", exc)
        return LocalSparseEncoder.load(path, kind=kind, device=device, **kw)


def set_query_weights(enc, weights, trainable: bool) -> nn.Parameter:
    """Overwrite an inference-free encoder's (V,) query table and set whether it trains."""
    w = torch.as_tensor(np.asarray(weights), dtype=torch.float32)
    qw = enc.query_weights
    if qw.shape != w.shape:
        raise ValueError(f"query table has shape {tuple(qw.shape)}, weights {tuple(w.shape)}")
    with torch.no_grad():
        qw.copy_(w.to(qw.device))
    qw.requires_grad_(trainable)
    return qw


class LocalSparseEncoder(nn.Module):
    """SPLADE (MLM logits → log(1 + relu) → max over tokens) and its inference-free variant."""

    def __init__(self, model, tokenizer, kind: str = "splade", max_query_length: int = 64,
                 max_doc_length: int = 256, query_weights=None):
        super().__init__()
        if kind not in ("splade", "inference-free"):
            raise ValueError(f"local encoder supports splade and inference-free, not {kind!r}")
        self.model, self.tokenizer, self.kind = model, tokenizer, kind
        self.max_query_length, self.max_doc_length = max_query_length, max_doc_length
        v = model.config.vocab_size
        self.dim = v
        self.vocab = [t for t, _ in sorted(tokenizer.get_vocab().items(), key=lambda kv: kv[1])][:v]
        qw = torch.ones(v) if query_weights is None else torch.as_tensor(query_weights, dtype=torch.float32)
        self.query_weights = nn.Parameter(qw, requires_grad=False)

    @classmethod
    def load(cls, path, kind="splade", device=None, max_query_length=64, max_doc_length=256, **_):
        from transformers import AutoModelForMaskedLM, AutoTokenizer

        path = Path(path)
        cfg = json.loads((path / "lsr_config.json").read_text()) if (path / "lsr_config.json").exists() else {}
        model = AutoModelForMaskedLM.from_pretrained(path)
        tok = AutoTokenizer.from_pretrained(path)
        qw = None
        if (path / "query_weights.npy").exists():
            qw = np.load(path / "query_weights.npy")
        enc = cls(model, tok, cfg.get("kind", kind), cfg.get("max_query_length", max_query_length),
                  cfg.get("max_doc_length", max_doc_length), qw)
        return enc.to(device or ("cuda" if torch.cuda.is_available() else "cpu"))

    @property
    def device(self):
        return self.query_weights.device

    def tokenize(self, texts, side="document", max_length=None):
        ml = max_length or (self.max_doc_length if side == "document" else self.max_query_length)
        special = side == "document" or self.kind == "splade"
        f = self.tokenizer(list(texts), padding=True, truncation=True, max_length=ml, return_tensors="pt",
                           add_special_tokens=special)
        return {k: v.to(self.device) for k, v in f.items() if k in ("input_ids", "attention_mask")}

    def _pool(self, feats):
        logits = self.model(**feats).logits
        w = torch.log1p(torch.relu(logits)) * feats["attention_mask"].unsqueeze(-1)
        return w.max(1).values

    def forward_documents(self, x):
        feats = x if isinstance(x, dict) else self.tokenize(x, "document")
        return self._pool(feats)

    def forward_queries(self, x):
        feats = x if isinstance(x, dict) else self.tokenize(x, "query")
        if self.kind == "splade":
            return self._pool(feats)
        ids, mask = feats["input_ids"], feats["attention_mask"]
        presence = torch.zeros(ids.shape[0], self.dim, device=ids.device)
        presence.scatter_add_(1, ids, mask.float())  # padding adds 0
        return presence.clamp(max=1.0) * torch.relu(self.query_weights)

    @torch.no_grad()
    def _encode(self, texts, fn, batch_size, show_progress_bar):
        from tqdm.auto import tqdm

        from lsr.index.sparse import SparseBatch

        was = self.training
        self.eval()
        parts = []
        for s in tqdm(range(0, len(texts), batch_size), disable=not show_progress_bar, desc="encode"):
            dense = fn(list(texts[s:s + batch_size])).float().cpu().numpy()
            parts.append(SparseBatch.from_dense(dense))
        self.train(was)
        out = SparseBatch.concat(parts) if parts else SparseBatch.empty(0, self.dim)
        return out.with_vocab(self.vocab)

    def encode_documents(self, texts, batch_size=32, show_progress_bar=False):
        return self._encode(texts, self.forward_documents, batch_size, show_progress_bar)

    def encode_queries(self, texts, batch_size=32, show_progress_bar=False):
        return self._encode(texts, self.forward_queries, batch_size, show_progress_bar)

    def save(self, path):
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(path)
        self.tokenizer.save_pretrained(path)
        if self.kind == "inference-free":
            np.save(path / "query_weights.npy", self.query_weights.detach().float().cpu().numpy())
        (path / "lsr_config.json").write_text(json.dumps(
            {"kind": self.kind, "max_query_length": self.max_query_length, "max_doc_length": self.max_doc_length}))
