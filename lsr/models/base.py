"""The one encoder interface: :class:`SparseEncoder` (a ``torch.nn.Module``) and ``load`` dispatch.

Subclasses (SPLADE, inference-free, decoder) supply tokenisation and the pooled ``(B, V)`` forward;
this module owns batching (length-sorted), inference mode / autocast, pruning, CSR assembly,
``save``/``load`` and the ``lsr_config.json`` that records kind, pooling, max lengths and pruning.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lsr.models.inference_free import check_texts, decode_batch, encode_options
from lsr.models.pooling import check_pooling
from lsr.index.sparse import SparseBatch

__all__ = ["SparseEncoder", "LSR_CONFIG", "KINDS"]

logger = logging.getLogger(__name__)

LSR_CONFIG = "lsr_config.json"
KINDS = ("splade", "inference-free", "decoder")
FORMAT_VERSION = 1


def default_device(device=None) -> torch.device:
    if device is not None:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


_ENCODERS: dict[str, type] = {}  # kind -> class: each subclass with a ``kind`` adds itself (base imports none)


class SparseEncoder(torch.nn.Module):
    """Base class of lsr's sparse encoders; :meth:`load` picks the subclass registered for the kind.

    >>> enc = SparseEncoder.load("splade-tiny")                        # doctest: +SKIP
    >>> enc.decode(enc.encode_documents(["the cat sat on the mat"]), top_k=3)  # doctest: +SKIP
    [[('mat', 2.3), ('cat', 2.2), ('sat', 2.0)]]
    """

    kind: str = ""
    default_max_query_length = 64
    default_max_doc_length = 256

    def __init_subclass__(cls, **kw):
        super().__init_subclass__(**kw)
        if cls.__dict__.get("kind"):
            _ENCODERS[cls.kind] = cls

    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer,
        *,
        pooling: str = "max",
        activation: str = "relu",
        max_query_length: int | None = None,
        max_doc_length: int | None = None,
        top_k: int | None = None,
        min_weight: float | None = None,
    ):
        super().__init__()
        check_pooling(pooling, activation)
        self.model = model
        self.tokenizer = tokenizer
        self.pooling = pooling
        self.activation = activation
        self.max_query_length = int(max_query_length or self.default_max_query_length)
        self.max_doc_length = int(max_doc_length or self.default_max_doc_length)
        if top_k is not None and int(top_k) <= 0:
            raise ValueError(f"top_k must be positive, got {top_k}")
        self.top_k = None if top_k is None else int(top_k)
        self.min_weight = None if min_weight is None else float(min_weight)
        self._vocab: tuple[str, ...] | None = None
        # bf16 autocast when encoding on a GPU; set False for float32 (e.g. bit-for-bit parity checks).
        self.amp = True

    # ------------------------------------------------------------------ properties
    @property
    def device(self) -> torch.device:
        for p in self.parameters():
            return p.device
        return torch.device("cpu")

    @property
    def dim(self) -> int:
        emb = self.model.get_output_embeddings()
        if emb is not None and getattr(emb, "weight", None) is not None:
            return int(emb.weight.shape[0])
        return int(self.model.config.vocab_size)

    @property
    def vocab(self) -> tuple[str, ...]:
        """Token strings by id (ids past the tokenizer's size read ``<idN>``)."""
        if self._vocab is None:
            n = min(len(self.tokenizer), self.dim)
            toks = self.tokenizer.convert_ids_to_tokens(list(range(n)))
            toks = [t if isinstance(t, str) else f"<id{i}>" for i, t in enumerate(toks)]
            toks += [f"<id{i}>" for i in range(n, self.dim)]
            self._vocab = tuple(toks)
        return self._vocab

    # ------------------------------------------------------------------ subclass hooks
    def tokenize(self, texts, side: str = "document", max_length: int | None = None) -> dict[str, torch.Tensor]:
        """Texts -> padded feature dict on ``self.device`` (``input_ids``, ``attention_mask`` and, where
        pooling covers fewer tokens than attention, ``pool_mask``)."""
        texts = check_texts(texts)
        ids = self._token_ids(texts, side, max_length)
        return self._collate(ids, side)

    def _max_length(self, side: str, max_length: int | None) -> int:
        if max_length is not None:
            return int(max_length)
        return self.max_query_length if side == "query" else self.max_doc_length

    def _token_ids(self, texts: list[str], side: str, max_length: int | None) -> list[list[int]]:
        enc = self.tokenizer(texts, truncation=True, max_length=self._max_length(side, max_length),
                             add_special_tokens=True, return_attention_mask=False, return_token_type_ids=False)
        return enc["input_ids"]

    def _collate(self, ids: list[list[int]], side: str) -> dict[str, torch.Tensor]:
        pad = self.tokenizer.pad_token_id
        pad = 0 if pad is None else pad
        L = max(1, max((len(x) for x in ids), default=1))
        input_ids = torch.full((len(ids), L), pad, dtype=torch.long)
        mask = torch.zeros((len(ids), L), dtype=torch.long)
        for i, x in enumerate(ids):
            if x:
                input_ids[i, : len(x)] = torch.as_tensor(x, dtype=torch.long)
                mask[i, : len(x)] = 1
        dev = self.device
        return {"input_ids": input_ids.to(dev), "attention_mask": mask.to(dev)}

    def _features(self, x, side: str) -> dict[str, torch.Tensor]:
        if isinstance(x, dict):
            return x
        return self.tokenize(x, side=side)

    def forward_documents(self, x) -> torch.Tensor:
        """Texts or a :meth:`tokenize` dict -> dense ``(B, V)`` pooled weights (differentiable)."""
        raise NotImplementedError

    def forward_queries(self, x) -> torch.Tensor:
        """Texts or a :meth:`tokenize` dict -> dense ``(B, V)`` pooled weights (differentiable)."""
        raise NotImplementedError

    def forward(self, x, side: str = "document") -> torch.Tensor:
        return self.forward_queries(x) if side == "query" else self.forward_documents(x)

    def _pool_inference(self, feats: dict[str, torch.Tensor], side: str) -> torch.Tensor:
        """The ``(B, V)`` float32 weights at inference; subclasses may use a faster path."""
        return (self.forward_queries(feats) if side == "query" else self.forward_documents(feats)).float()

    # ------------------------------------------------------------------ encoding
    def encode_queries(self, texts, batch_size: int = 32, show_progress_bar: bool = False,
                       top_k: int | None = None, min_weight: float | None = None) -> SparseBatch:
        """Queries -> ``SparseBatch`` over the vocabulary (``vocab`` set). See :meth:`encode_documents`."""
        return self._encode(texts, "query", batch_size, show_progress_bar, top_k, min_weight)

    def encode_documents(self, texts, batch_size: int = 32, show_progress_bar: bool = False,
                         top_k: int | None = None, min_weight: float | None = None) -> SparseBatch:
        """Documents -> ``SparseBatch``, rows in input order.

        Texts are sorted by token length before batching (less padding); texts longer than
        ``max_doc_length`` tokens are truncated. ``top_k`` / ``min_weight`` override the model's
        pruning defaults. An empty list gives a batch of 0 rows; a non-str item raises TypeError.
        """
        return self._encode(texts, "document", batch_size, show_progress_bar, top_k, min_weight)

    def encode(self, texts, *, side: str = "document", **kw) -> SparseBatch:
        return self.encode_queries(texts, **kw) if side == "query" else self.encode_documents(texts, **kw)

    @torch.inference_mode()
    def _encode(self, texts, side, batch_size, show_progress_bar, top_k, min_weight) -> SparseBatch:
        texts = check_texts(texts)
        top_k, min_weight = encode_options(batch_size, top_k, min_weight, self.top_k, self.min_weight)
        n = len(texts)
        if n == 0:
            return SparseBatch.empty(0, self.dim).with_vocab(self.vocab)
        was_training = self.training
        self.eval()
        try:
            ids = self._token_ids(texts, side, None)
            order = np.argsort([-len(x) for x in ids], kind="stable")
            dev = self.device
            use_autocast = dev.type == "cuda" and self.amp
            idx_parts: list[np.ndarray] = []
            val_parts: list[np.ndarray] = []
            counts = np.zeros(n, np.int64)
            starts = range(0, n, batch_size)
            bar = None
            if show_progress_bar:
                from tqdm.auto import tqdm

                bar = tqdm(total=n, desc="encode queries" if side == "query" else "encode documents", unit="text")
            for s in starts:
                sel = order[s : s + batch_size]
                feats = self._collate([ids[i] for i in sel], side)
                with torch.autocast("cuda", dtype=torch.bfloat16, enabled=use_autocast):
                    dense = self._pool_inference(feats, side)
                dense = dense.float()
                if min_weight is not None:
                    dense = dense.masked_fill_(dense < min_weight, 0.0)
                if top_k is not None and top_k < dense.shape[1]:
                    vals, cols = dense.topk(top_k, dim=1)
                    dense = torch.zeros_like(dense).scatter_(1, cols, vals)
                nz = torch.nonzero(dense)  # row-major: columns sorted within each row
                vals = dense[nz[:, 0], nz[:, 1]].cpu().numpy()
                nz = nz.cpu().numpy()
                rows_in_batch = np.bincount(nz[:, 0], minlength=len(sel)) if nz.size else np.zeros(len(sel), np.int64)
                splits = np.cumsum(rows_in_batch)[:-1]
                for j, (ci, vi) in enumerate(zip(np.split(nz[:, 1], splits), np.split(vals, splits))):
                    idx_parts.append(ci)
                    val_parts.append(vi)
                    counts[sel[j]] = ci.size
                if bar is not None:
                    bar.update(len(sel))
            if bar is not None:
                bar.close()
            # Parts are in sorted order; lay them out in input order.
            pos = np.empty(n, np.int64)
            pos[order] = np.arange(n)
            indptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
            indices = np.concatenate([idx_parts[pos[i]] for i in range(n)]).astype(np.int32)
            values = np.concatenate([val_parts[pos[i]] for i in range(n)]).astype(np.float32)
            return SparseBatch(indptr, indices, values, self.dim, self.vocab)
        finally:
            self.train(was_training)

    def decode(self, batch: SparseBatch, top_k: int | None = None) -> list[list[tuple[str, float]]]:
        """Rows as ``(token, weight)`` lists, heaviest first."""
        return decode_batch(batch, self.vocab, top_k)

    # ------------------------------------------------------------------ persistence
    def lsr_config(self) -> dict[str, Any]:
        return {
            "format": "lsr-sparse-encoder",
            "version": FORMAT_VERSION,
            "kind": self.kind,
            "pooling": self.pooling,
            "activation": self.activation,
            "max_query_length": self.max_query_length,
            "max_doc_length": self.max_doc_length,
            "top_k": self.top_k,
            "min_weight": self.min_weight,
        }

    def save(self, folder, **kw) -> Path:
        """Write the model in Hugging Face's layout plus ``lsr_config.json``; returns the folder."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self._save_model(folder, **kw)
        self.tokenizer.save_pretrained(folder)
        (folder / LSR_CONFIG).write_text(json.dumps(self.lsr_config(), indent=2) + "\n", encoding="utf-8")
        return folder

    def _save_model(self, folder: Path, **kw) -> None:
        self.model.save_pretrained(folder, safe_serialization=True)

    @staticmethod
    def load(name_or_dir, kind: str | None = None, device=None, **opts) -> "SparseEncoder":
        """Load a short name (``splade-tiny``, ``smollm2-135m``, ``minilm``) or a folder.

        Folders: an ``lsr export-onnx`` folder (an ``OnnxSparseEncoder``), an lsr folder (``lsr_config.json``), a sentence-transformers v5+ ``SparseEncoder``
        folder (``modules.json``: MLM transformer + ``SpladePooling``, or a ``Router`` whose query
        side is ``SparseStaticEmbedding``), or a plain transformers checkpoint (``*ForMaskedLM`` ->
        SPLADE, ``*ForCausalLM`` -> decoder). ``kind`` overrides the detected kind; ``opts`` override
        the saved settings (``pooling``, ``activation``, ``max_query_length``, ``max_doc_length``,
        ``top_k``, ``min_weight``; decoder: ``lora``, ``echo``; ``dtype``).
        """
        from lsr.models.hub import model_path

        folder = model_path(name_or_dir)
        if kind is None:
            from lsr.models.onnx import OnnxSparseEncoder, is_onnx_folder

            if is_onnx_folder(folder):  # an `lsr export-onnx` folder runs on ONNX Runtime (same verbs, no torch model)
                return OnnxSparseEncoder.load(folder, **opts)  # type: ignore[return-value]
        detected, saved = detect(folder)
        kind = kind or detected
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        settings = {**saved, **opts}
        cls = _ENCODERS.get(kind)
        if cls is None:  # the subclasses register themselves; `lsr.models.SparseEncoder` imports them all
            raise ValueError(f"no encoder class for kind {kind!r} is loaded: use `from lsr.models import SparseEncoder`")
        try:
            enc = cls._from_folder(folder, **settings)
        except TypeError as exc:
            if "unexpected keyword argument" in str(exc):
                raise ValueError(f"unknown option for a {kind} encoder: {exc}") from None
            raise
        enc.to(default_device(device))
        enc.eval()
        logger.info("loaded %s encoder from %s (dim %d, device %s)", kind, folder, enc.dim, enc.device)
        return enc

    @classmethod
    def _from_folder(cls, folder: Path, **settings) -> "SparseEncoder":
        raise NotImplementedError


def detect(folder: Path) -> tuple[str, dict[str, Any]]:
    """``(kind, saved settings)`` of a model folder (lsr, sentence-transformers or plain HF)."""
    folder = Path(folder)
    cfg_path = folder / LSR_CONFIG
    if cfg_path.exists():
        cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
        kind = cfg.get("kind")
        if kind not in KINDS:
            raise ValueError(f"{cfg_path}: unknown kind {kind!r}")
        keep = ("pooling", "activation", "max_query_length", "max_doc_length", "top_k", "min_weight", "echo",
                "logit_shift", "adapter")
        return kind, {k: cfg[k] for k in keep if k in cfg}
    if (folder / "modules.json").exists():
        from lsr.models.st_format import is_sparse_layout, read_st_layout

        if is_sparse_layout(folder):
            layout = read_st_layout(folder)
            return layout.kind, layout.settings()
        # A dense sentence-transformers folder (e.g. all-MiniLM-L6-v2): use its transformer as a
        # SPLADE backbone; a missing MLM head is created (decoder tied to the word embeddings).
        logger.info("%s is a dense sentence-transformers folder; loading its transformer as a backbone", folder)
    hf = folder / "config.json"
    if not hf.exists():
        raise FileNotFoundError(f"{folder} is not a model folder (no lsr_config.json, modules.json or config.json)")
    arch = json.loads(hf.read_text(encoding="utf-8")).get("architectures") or []
    if any(a.endswith("ForCausalLM") for a in arch):
        return "decoder", {}
    return "splade", {}
