"""SPLADE (any ``*ForMaskedLM``) and inference-free (SPLADE documents + a query weight table) encoders."""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path

import numpy as np
import torch

from lsr.models.base import SparseEncoder
from lsr.index.stats import bm25_idf, document_frequencies
from lsr.models.inference_free import QUERY_WEIGHTS_FILE, IdfQueryEncoder, check_texts, corpus_token_ids
from lsr.models.pooling import head_pool, splade_pool
from lsr.models.st_format import write_st_router_files, write_st_splade_files

__all__ = ["SparseEncoder", "SpladeEncoder", "InferenceFreeEncoder", "projection_input"]

logger = logging.getLogger(__name__)


class _Captured(Exception):
    pass


_TLS = threading.local()
_HOOK_LOCK = threading.Lock()


def _capture_hook(_mod, args):
    box = getattr(_TLS, "box", None)
    if box is not None:  # only while this thread runs projection_input; otherwise a no-op
        box.append(args[0])
        raise _Captured


def projection_input(model: torch.nn.Module, head: torch.nn.Module, **inputs) -> torch.Tensor:
    """Run ``model`` up to its vocabulary projection ``head`` and return that layer's input.

    A pre-hook stops the forward pass there, so the ``(B, L, V)`` logits are never built; the
    caller projects in chunks (:func:`lsr.models.pooling.head_pool`). Works for any model whose
    output embedding is an ``nn.Linear`` applied last (BERT/RoBERTa/DistilBERT MLM heads, causal LMs).
    The hook is registered once and reads a thread-local box, so concurrent threads (the service)
    each get their own tensor, and ordinary forward passes are untouched.
    """
    if not getattr(head, "_lsr_capture_hook", False):
        with _HOOK_LOCK:
            if not getattr(head, "_lsr_capture_hook", False):
                head.register_forward_pre_hook(_capture_hook)
                head._lsr_capture_hook = True
    box: list[torch.Tensor] = []
    _TLS.box = box
    try:
        model(**inputs)
    except _Captured:
        pass
    finally:
        _TLS.box = None
    if not box:
        raise RuntimeError("the model never reached its output embedding layer")
    return box[0]


class SpladeEncoder(SparseEncoder):
    """SPLADE over a masked LM: logits -> log1p(relu) -> max (or sum) over non-padding tokens."""

    kind = "splade"

    def _logits(self, feats) -> torch.Tensor:
        return self.model(input_ids=feats["input_ids"], attention_mask=feats["attention_mask"]).logits

    def _pooled_logits(self, feats) -> tuple[torch.Tensor, torch.Tensor]:
        """The ``(B, L, V)`` logits that ``forward_*`` pool and the ``(B, L)`` mask of the positions pooled."""
        return self._logits(feats), feats.get("pool_mask", feats["attention_mask"])

    def forward_documents(self, x) -> torch.Tensor:
        return splade_pool(*self._pooled_logits(self._features(x, "document")), self.pooling, self.activation)

    def forward_queries(self, x) -> torch.Tensor:
        return splade_pool(*self._pooled_logits(self._features(x, "query")), self.pooling, self.activation)

    def _pool_inference(self, feats, side):
        head = self.model.get_output_embeddings()
        if isinstance(head, torch.nn.Linear):
            h = projection_input(self.model, head, input_ids=feats["input_ids"], attention_mask=feats["attention_mask"])
            return head_pool(h, feats.get("pool_mask", feats["attention_mask"]), head.weight, head.bias,
                             self.pooling, self.activation)
        return super()._pool_inference(feats, side)

    # ------------------------------------------------------------------ persistence
    _auto_model = "AutoModelForMaskedLM"  # the transformers class that opens the backbone

    @classmethod
    def _load_backbone(cls, folder: Path, dtype=None):
        import transformers

        tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
        model = getattr(transformers, cls._auto_model).from_pretrained(folder, dtype=dtype or torch.float32)
        return model, tokenizer

    @classmethod
    def _backbone_from_settings(cls, folder: Path, settings: dict):
        """(model, tokenizer, ST layout or None) for a folder; pops the settings it consumes."""
        layout = settings.pop("st_layout", None)
        tdir = layout.transformer_dir if layout is not None else folder
        dtype = settings.pop("dtype", None)
        settings.pop("adapter", None)
        settings.pop("echo", None)
        settings.pop("logit_shift", None)
        model, tokenizer = cls._load_backbone(tdir, dtype)
        return model, tokenizer, layout

    @classmethod
    def _from_folder(cls, folder: Path, **settings) -> "SpladeEncoder":
        model, tokenizer, _ = cls._backbone_from_settings(folder, settings)
        return cls(model, tokenizer, **settings)

    def save(self, folder, **kw) -> Path:
        """HF layout + ``lsr_config.json`` + sentence-transformers' module files (ST's
        ``SparseEncoder(folder)`` loads it; ST uses ``max_doc_length`` for both sides)."""
        folder = super().save(folder, **kw)
        if self.kind == "splade":
            write_st_splade_files(folder, pooling=self.pooling, activation=self.activation,
                                  max_seq_length=self.max_doc_length, dim=self.dim)
        return folder


class InferenceFreeEncoder(SpladeEncoder):
    """Documents through SPLADE; queries through a weight table (``query_weights``, one per token id).

    ``encode_queries`` runs :class:`~lsr.models.inference_free.IdfQueryEncoder` (numpy, no model
    call); ``forward_queries`` is the same in torch (presence x ``query_weights``) for training.
    """

    kind = "inference-free"
    default_max_query_length = 512

    def __init__(self, model, tokenizer, *, query_weights=None, **kw):
        super().__init__(model, tokenizer, **kw)
        V = self.dim
        if query_weights is None:
            logger.warning("inference-free model without a query weight table: using 1.0 per token; "
                           "call fit_idf(corpus) to weight queries by IDF")
            query_weights = np.ones(V, np.float32)
        w = torch.as_tensor(np.asarray(query_weights, dtype=np.float32)).reshape(-1)
        if w.numel() != V:
            raise ValueError(f"query weight table has {w.numel()} entries but the vocabulary has {V}")
        special = self._special_ids()
        if special:
            w[torch.as_tensor(special)] = 0.0
        self.query_weights = torch.nn.Parameter(w, requires_grad=False)
        self._query_encoder: IdfQueryEncoder | None = None

    def _special_ids(self) -> list[int]:
        return sorted(i for i in set(self.tokenizer.all_special_ids) if i is not None and 0 <= i < self.dim)

    @property
    def query_encoder(self) -> IdfQueryEncoder:
        """The torch-free query encoder over the current weights (rebuilt when the weights change)."""
        w = self.query_weights.detach().float().cpu().numpy()
        q = self._query_encoder
        if q is None or not np.array_equal(q.weights, w):
            q = IdfQueryEncoder(self.tokenizer.backend_tokenizer, w, max_length=self.max_query_length,
                                special_ids=self._special_ids())
            self._query_encoder = q
        return q

    def fit_idf(self, texts, *, doc_max_length: int | None = None, show_progress_bar: bool = False) -> "InferenceFreeEncoder":
        """Set the query weights to BM25 IDF over ``texts`` (special tokens excluded)."""
        df, n = document_frequencies(corpus_token_ids(self.tokenizer.backend_tokenizer, check_texts(texts),
                                                      max_length=doc_max_length, show_progress_bar=show_progress_bar),
                                     self.dim)
        if n == 0:
            raise ValueError("cannot compute IDF from an empty corpus")
        w = torch.as_tensor(bm25_idf(df, n), device=self.query_weights.device)
        special = self._special_ids()
        if special:
            w[torch.as_tensor(special, device=w.device)] = 0.0
        with torch.no_grad():
            self.query_weights.copy_(w)
        return self

    def _token_ids(self, texts, side, max_length):
        if side == "query":  # as sentence-transformers' SparseStaticEmbedding: no special tokens
            return self._fast_token_ids(texts, self._max_length(side, max_length), add_special_tokens=False)
        return super()._token_ids(texts, side, max_length)

    def forward_queries(self, x) -> torch.Tensor:
        feats = self._features(x, "query")
        ids, mask = feats["input_ids"], feats["attention_mask"]
        presence = torch.zeros(ids.shape[0], self.dim, dtype=self.query_weights.dtype, device=ids.device)
        presence.scatter_reduce_(1, ids, mask.to(presence.dtype), reduce="amax")
        return presence * self.query_weights

    def encode_queries(self, texts, batch_size: int = 32, show_progress_bar: bool = False,
                       top_k: int | None = None, min_weight: float | None = None, *,
                       max_tokens: int | None = None, profile=None):
        """Queries through the weight table (no model call: ``max_tokens`` and ``profile`` do not apply)."""
        top_k = self.top_k if top_k is None else top_k
        min_weight = self.min_weight if min_weight is None else min_weight
        return self.query_encoder.encode_queries(texts, batch_size=max(batch_size, 256),
                                                 show_progress_bar=show_progress_bar, top_k=top_k,
                                                 min_weight=min_weight)

    def _pool_inference(self, feats, side):
        if side == "query":
            return self.forward_queries(feats)
        return super()._pool_inference(feats, side)

    def lsr_config(self):
        cfg = super().lsr_config()
        cfg["query_weights"] = QUERY_WEIGHTS_FILE
        return cfg

    def save(self, folder, **kw) -> Path:
        """HF layout + ``lsr_config.json`` + ``query_weights.safetensors`` + a sentence-transformers
        ``Router`` (SparseStaticEmbedding queries, SPLADE documents) so ST's ``SparseEncoder`` loads it."""
        folder = super().save(folder, **kw)
        write_st_router_files(folder, pooling=self.pooling, activation=self.activation,
                              max_seq_length=self.max_doc_length, dim=self.dim,
                              query_weights=self.query_weights.detach().float().cpu().numpy(),
                              query_max_length=self.max_query_length)
        return folder

    def _save_model(self, folder: Path, **kw) -> None:
        super()._save_model(folder, **kw)
        from safetensors.torch import save_file

        save_file({"weight": self.query_weights.detach().float().cpu().contiguous()}, str(folder / QUERY_WEIGHTS_FILE))

    @classmethod
    def _from_folder(cls, folder: Path, **settings) -> "InferenceFreeEncoder":
        weights = settings.pop("query_weights", None)
        model, tokenizer, layout = cls._backbone_from_settings(folder, settings)
        if weights is None:
            src = layout.query_dir if layout is not None else folder
            if layout is not None or (folder / QUERY_WEIGHTS_FILE).exists():
                weights = IdfQueryEncoder.load(src).weights
        if layout is not None and "max_query_length" not in settings:
            settings["max_query_length"] = _st_query_max_len(layout.query_dir)
        return cls(model, tokenizer, query_weights=weights, **settings)


def _st_query_max_len(folder: Path) -> int:
    p = folder / "tokenizer_config.json"
    if p.exists():
        m = json.loads(p.read_text(encoding="utf-8")).get("model_max_length")
        if isinstance(m, (int, float)) and m < 1e6:
            return int(m)
    return 512
