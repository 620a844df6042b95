"""The one encoder interface: :class:`SparseEncoder` (a ``torch.nn.Module``) and ``load`` dispatch.

Subclasses (SPLADE, inference-free, decoder) supply tokenisation and the pooled ``(B, V)`` forward;
this module owns the encode pipeline (tokenisation in a background thread, length buckets, pruning and
non-zero selection on the device, CSR in input order), ``save``/``load`` and the ``lsr_config.json``
that records kind, pooling, max lengths and pruning.
"""

from __future__ import annotations

import itertools
import json
import logging
import queue
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from lsr.models.inference_free import check_texts, decode_batch, encode_options
from lsr.models.pooling import check_pooling
from lsr.index.sparse import SparseBatch

__all__ = ["SparseEncoder", "EncodeProfile", "LSR_CONFIG", "KINDS"]

logger = logging.getLogger(__name__)

LSR_CONFIG = "lsr_config.json"
KINDS = ("splade", "inference-free", "decoder")
FORMAT_VERSION = 1
PAD_MULTIPLE = 8  # encode batches are padded to a multiple of 8 tokens (tensor-core friendly shapes)
PREFETCH_WINDOWS = 2  # tokenised windows (see _windows) the background thread may hold ahead of the device
_FAST_TOKENIZER_LOCK = threading.Lock()


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
        self._fast_tokenizers: dict[tuple, Any] = {}
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
        return self._fast_token_ids(texts, self._max_length(side, max_length), add_special_tokens=True)

    def _fast_token_ids(self, texts: list[str], max_length: int, *, add_special_tokens: bool) -> list[list[int]]:
        """Token ids as ``self.tokenizer(texts, truncation=True, max_length=...)`` gives them, through the
        fast tokenizer's batch call on a private copy set up once per length (``encode_batch`` runs on
        all cores without the GIL, so it overlaps the device; the copy keeps the shared tokenizer's
        truncation state out of it). A tokenizer without a ``tokenizers`` backend goes through its own call."""
        tok = self._fast_tokenizer(max_length)
        if tok is None:
            enc = self.tokenizer(texts, truncation=True, max_length=max_length, add_special_tokens=add_special_tokens,
                                 return_attention_mask=False, return_token_type_ids=False)
            return enc["input_ids"]
        encode = getattr(tok, "encode_batch_fast", tok.encode_batch)  # _fast skips the offsets (tokenizers >= 0.21)
        return [e.ids for e in encode(texts, add_special_tokens=add_special_tokens)]

    def _fast_tokenizer(self, max_length: int):
        backend = getattr(self.tokenizer, "backend_tokenizer", None)
        if backend is None:
            return None
        side = getattr(self.tokenizer, "truncation_side", "right")
        split = bool(getattr(self.tokenizer, "split_special_tokens", False))
        key = (id(backend), int(max_length), side, split)
        tok = self._fast_tokenizers.get(key)
        if tok is None:
            with _FAST_TOKENIZER_LOCK:
                tok = self._fast_tokenizers.get(key)
                if tok is None:
                    from tokenizers import Tokenizer

                    tok = Tokenizer.from_str(backend.to_str())
                    tok.no_padding()
                    tok.enable_truncation(int(max_length), stride=0, strategy="longest_first", direction=side)
                    tok.encode_special_tokens = split
                    self._fast_tokenizers[key] = tok
        return tok

    def _collate(self, ids: list[list[int]], side: str) -> dict[str, torch.Tensor]:
        dev = self.device
        return {k: v.to(dev) for k, v in self._collate_host(ids, side).items()}

    def _collate_host(self, ids: list[list[int]], side: str, pad_multiple: int = 1,
                      pin: bool = False) -> dict[str, torch.Tensor]:
        """Token id lists -> right-padded ``input_ids`` / ``attention_mask`` on the host, filled in
        one vectorised step; ``pin`` puts them in page-locked memory (asynchronous copies to a GPU)."""
        pad = self.tokenizer.pad_token_id
        pad = 0 if pad is None else pad
        lens = np.fromiter(map(len, ids), np.int64, len(ids))
        L = max(1, int(lens.max(initial=0)))
        L = -(-L // pad_multiple) * pad_multiple
        real = np.arange(L) < lens[:, None]
        input_ids = torch.empty((len(ids), L), dtype=torch.long, pin_memory=pin)
        mask = torch.empty((len(ids), L), dtype=torch.long, pin_memory=pin)
        a = input_ids.numpy()
        a.fill(pad)
        a[real] = np.fromiter(itertools.chain.from_iterable(ids), np.int64, int(lens.sum()))
        mask.numpy()[...] = real
        return {"input_ids": input_ids, "attention_mask": mask}

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
                       top_k: int | None = None, min_weight: float | None = None, *,
                       max_tokens: int | None = None, profile: "EncodeProfile | None" = None) -> SparseBatch:
        """Queries -> ``SparseBatch`` over the vocabulary (``vocab`` set). See :meth:`encode_documents`."""
        return self._encode(texts, "query", batch_size, show_progress_bar, top_k, min_weight, max_tokens, profile)

    def encode_documents(self, texts, batch_size: int = 32, show_progress_bar: bool = False,
                         top_k: int | None = None, min_weight: float | None = None, *,
                         max_tokens: int | None = None, profile: "EncodeProfile | None" = None) -> SparseBatch:
        """Documents -> ``SparseBatch``, rows in input order.

        Texts are bucketed by length (each batch padded to its own longest text, rounded up to a
        multiple of 8 tokens) and tokenised in a background thread while the model runs on the
        previous batch; texts longer than ``max_doc_length`` tokens are truncated. ``batch_size`` caps
        the texts per batch and ``max_tokens`` (optional) the padded tokens per batch (a text longer
        than the budget still forms a batch of one). ``top_k`` / ``min_weight`` override the model's
        pruning defaults. ``profile``: an :class:`EncodeProfile` to fill with each stage's time (the
        stages then run one after another, the device synchronised after each: slower, for analysis).
        An empty list gives a batch of 0 rows; a non-str item raises TypeError.
        """
        return self._encode(texts, "document", batch_size, show_progress_bar, top_k, min_weight, max_tokens, profile)

    def encode(self, texts, *, side: str = "document", **kw) -> SparseBatch:
        return self.encode_queries(texts, **kw) if side == "query" else self.encode_documents(texts, **kw)

    @torch.inference_mode()
    def _encode(self, texts, side, batch_size, show_progress_bar, top_k, min_weight, max_tokens=None,
                profile=None) -> SparseBatch:
        t_start = time.perf_counter()
        texts = check_texts(texts)
        top_k, min_weight = encode_options(batch_size, top_k, min_weight, self.top_k, self.min_weight)
        if max_tokens is not None and int(max_tokens) <= 0:
            raise ValueError(f"max_tokens must be positive, got {max_tokens}")
        n = len(texts)
        if n == 0:
            return SparseBatch.empty(0, self.dim).with_vocab(self.vocab)
        was_training = self.training
        self.eval()
        try:
            dev = self.device
            cuda = dev.type == "cuda"
            use_autocast = cuda and self.amp
            host_collate = type(self)._collate is SparseEncoder._collate  # else a subclass builds its own features
            batches = self._host_batches(texts, side, int(batch_size), max_tokens, host_collate, pin=cuda,
                                         profile=profile)
            windows = _windows(n, int(batch_size), max_tokens)
            if profile is None and len(windows) > 1:  # tokenise the next window while the device runs this one
                # room for whole windows: the thread tokenises window k+1 while window k's batches wait
                longest = -(-self._max_length(side, None) // PAD_MULTIPLE) * PAD_MULTIPLE
                rows = int(batch_size) if max_tokens is None else max(1, min(int(batch_size), int(max_tokens) // longest))
                per_window = -(-max(e - s for s, e in windows) // rows)
                batches = _prefetch(batches, PREFETCH_WINDOWS * per_window + 1, name="lsr-encode-tokenize")
            clock = _Clock(dev if profile is not None else None)
            rows_parts: list[np.ndarray] = []
            count_parts: list[np.ndarray] = []
            col_parts: list[np.ndarray] = []
            val_parts: list[np.ndarray] = []
            bar = None
            if show_progress_bar:
                from tqdm.auto import tqdm

                bar = tqdm(total=n, desc="encode queries" if side == "query" else "encode documents", unit="text")
            try:
                for hb in batches:
                    clock.start()
                    if hb.feats is not None:
                        feats = {k: v.to(dev, non_blocking=cuda) for k, v in hb.feats.items()}
                    else:
                        feats = self._collate(hb.ids, side)
                    clock.lap(profile, "h2d")
                    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=use_autocast):
                        dense = self._pool_inference(feats, side)
                    clock.lap(profile, "forward")
                    counts, cols, vals = sparse_rows(dense, top_k, min_weight)
                    clock.lap(profile, "sparse")
                    count_parts.append(counts.cpu().numpy())
                    col_parts.append(cols.to(torch.int32).cpu().numpy())
                    val_parts.append(vals.float().cpu().numpy())
                    clock.lap(profile, "d2h")
                    rows_parts.append(hb.rows)
                    if bar is not None:
                        bar.update(len(hb.rows))
            finally:
                if bar is not None:
                    bar.close()
                close = getattr(batches, "close", None)
                if close is not None:
                    close()  # stops the tokenising thread if the device side failed
            t0 = time.perf_counter()
            out = csr_in_input_order(np.concatenate(rows_parts), np.concatenate(count_parts),
                                     np.concatenate(col_parts), np.concatenate(val_parts), n)
            if profile is not None:
                profile.assemble += time.perf_counter() - t0
                profile.total += time.perf_counter() - t_start
                profile.docs += n
            indptr, indices, values = out
            return SparseBatch(indptr, indices, values, self.dim, self.vocab)
        finally:
            self.train(was_training)

    def _host_batches(self, texts: list[str], side: str, batch_size: int, max_tokens: int | None,
                      host_collate: bool, *, pin: bool, profile: "EncodeProfile | None") -> Iterator["_HostBatch"]:
        """Length-bucketed batches, tokenised window by window: texts are ordered by characters (known
        before tokenising), each window is tokenised in one batch call and re-sorted by tokens, and its
        batches are padded to their own longest row."""
        n = len(texts)
        order = np.argsort(-np.fromiter(map(len, texts), np.int64, n), kind="stable")
        for start, end in _windows(n, batch_size, max_tokens):
            t0 = time.perf_counter()
            window = order[start:end]
            ids = self._token_ids([texts[i] for i in window], side, None)
            lens = np.fromiter(map(len, ids), np.int64, len(ids))
            srt = np.argsort(-lens, kind="stable")
            if profile is not None:
                profile.tokenize += time.perf_counter() - t0
            for sel in plan_batches(lens[srt], batch_size, max_tokens, PAD_MULTIPLE):
                t1 = time.perf_counter()
                local = srt[sel]
                bids = [ids[j] for j in local]
                feats = self._collate_host(bids, side, PAD_MULTIPLE, pin) if host_collate else None
                hb = _HostBatch(window[local], feats, [] if host_collate else bids)
                if profile is not None:
                    L = -(-max(1, int(lens[local].max())) // PAD_MULTIPLE) * PAD_MULTIPLE
                    profile.collate += time.perf_counter() - t1
                    profile.batches += 1
                    profile.tokens += int(lens[local].sum())
                    profile.padded_tokens += L * len(local)
                    profile.max_batch_tokens = max(profile.max_batch_tokens, L * len(local))
                yield hb

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
                "logit_shift", "adapter", "term_bias")
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


@dataclass
class EncodeProfile:
    """Where an encode call's time went, in seconds per stage, summed over its batches.

    Filled by ``encode_documents(..., profile=EncodeProfile())``; the stages then run one after
    another with the device synchronised after each, so their sum is the serial cost (the normal
    call overlaps tokenisation with the device and is faster than ``total`` here).
    """

    tokenize: float = 0.0  # token ids (the fast tokenizer's batch call and its id lists), sorting by length
    collate: float = 0.0  # the padded host arrays (page-locked on CUDA)
    h2d: float = 0.0  # host -> device copies
    forward: float = 0.0  # the model and the pooled (B, V) weights
    sparse: float = 0.0  # pruning and the non-zero selection, on the device
    d2h: float = 0.0  # non-zeros (indices, values, row counts) back to the host
    assemble: float = 0.0  # CSR in input order on the host
    total: float = 0.0
    docs: int = 0
    batches: int = 0
    tokens: int = 0  # real tokens
    padded_tokens: int = 0  # tokens the model ran on, padding included
    max_batch_tokens: int = 0

    STAGES = ("tokenize", "collate", "h2d", "forward", "sparse", "d2h", "assemble")

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


@dataclass
class _HostBatch:
    rows: np.ndarray  # input positions of the batch's texts
    feats: dict[str, torch.Tensor] | None  # host tensors (base collation), or
    ids: list[list[int]]  # token ids for a subclass's own ``_collate`` (empty with ``feats``)


class _Clock:
    """Stage timer of a profiled encode call: synchronises ``device`` before each reading."""

    def __init__(self, device: torch.device | None):
        self.device = device
        self.t = 0.0

    def _now(self) -> float:
        if self.device is not None and self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter()

    def start(self) -> None:
        if self.device is not None:
            self.t = self._now()

    def lap(self, profile: EncodeProfile | None, stage: str) -> None:
        if profile is not None:
            t = self._now()
            setattr(profile, stage, getattr(profile, stage) + t - self.t)
            self.t = t


def _windows(n: int, batch_size: int, max_tokens: int | None) -> list[tuple[int, int]]:
    """``(start, end)`` of the texts tokenised per call: about one batch first (the device starts
    early), then windows four times larger each time up to 1,024 texts or four batches (better
    length buckets, fewer calls)."""
    rows = batch_size if max_tokens is None else max(1, min(batch_size, int(max_tokens) // 64))
    size, cap = max(64, rows), max(1024, 4 * rows)
    out, start = [], 0
    while start < n:
        out.append((start, min(n, start + size)))
        start += size
        size = min(cap, 4 * size)
    return out


def plan_batches(lengths: np.ndarray, batch_size: int, max_tokens: int | None,
                 pad_multiple: int = PAD_MULTIPLE) -> list[np.ndarray]:
    """Split rows sorted by length (longest first) into batches of at most ``batch_size`` rows and,
    with ``max_tokens``, at most that many padded tokens (a row longer than the budget goes alone)."""
    out = []
    n = len(lengths)
    i = 0
    while i < n:
        rows = batch_size
        if max_tokens is not None:
            L = -(-max(1, int(lengths[i])) // pad_multiple) * pad_multiple
            rows = max(1, min(batch_size, int(max_tokens) // L))
        out.append(np.arange(i, min(n, i + rows)))
        i += rows
    return out


def sparse_rows(dense: torch.Tensor, top_k: int | None = None,
                min_weight: float | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Pooled ``(B, V)`` weights -> ``(row counts, column ids, values)`` of their non-zeros, on
    ``dense``'s device, rows in order and columns ascending within a row. ``min_weight`` zeroes
    smaller weights, then ``top_k`` keeps each row's ``k`` largest (zeros dropped)."""
    dense = dense.float()
    if min_weight is not None:
        dense = dense.masked_fill(dense < min_weight, 0.0)
    cols: torch.Tensor | None = None
    vals = dense
    if top_k is not None and top_k < dense.shape[1]:
        vals, cols = dense.topk(top_k, dim=1)
        cols, perm = cols.sort(dim=1)
        vals = vals.gather(1, perm)
    keep = vals != 0
    nz = keep.nonzero()  # row-major: rows in order, columns ascending; the one host synchronisation
    picked = nz[:, 1] if cols is None else cols[nz[:, 0], nz[:, 1]]
    return keep.sum(dim=1), picked, vals[nz[:, 0], nz[:, 1]]


def csr_in_input_order(rows: np.ndarray, counts: np.ndarray, cols: np.ndarray, vals: np.ndarray,
                       n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """CSR ``(indptr, indices, values)`` with row ``rows[j]`` holding the ``j``-th run of
    ``counts[j]`` entries of ``cols`` / ``vals`` (runs laid end to end in processing order)."""
    counts_in = np.zeros(n, np.int64)
    counts_in[rows] = counts
    src_start = np.zeros(n, np.int64)
    src_start[rows] = np.cumsum(counts) - counts
    indptr = np.zeros(n + 1, np.int64)
    np.cumsum(counts_in, out=indptr[1:])
    nnz = int(indptr[-1])
    src = np.arange(nnz, dtype=np.int64) + np.repeat(src_start - indptr[:-1], counts_in)
    return indptr, np.ascontiguousarray(cols[src], np.int32), np.ascontiguousarray(vals[src], np.float32)


class _Failed:
    def __init__(self, exc: BaseException):
        self.exc = exc


_DONE = object()


class _prefetch:
    """Run the generator ``items`` in a daemon thread, at most ``depth`` items ahead of the reader.

    An exception in the thread is raised in the reader; ``close()`` (or the end of iteration) stops
    and joins the thread, so a failure on the reading side does not leave it running."""

    def __init__(self, items: Iterator, depth: int, name: str):
        self._q: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(items,), name=name, daemon=True)
        self._thread.start()

    def _put(self, item) -> bool:
        while not self._stop.is_set():
            try:
                self._q.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def _run(self, items: Iterator) -> None:
        try:
            for item in items:
                if not self._put(item):
                    return
        except BaseException as exc:  # handed to the reader, which raises it
            self._put(_Failed(exc))
            return
        self._put(_DONE)

    def __iter__(self):
        return self

    def __next__(self):
        if self._stop.is_set():
            raise StopIteration
        item = self._q.get()
        if item is _DONE:
            self.close()
            raise StopIteration
        if isinstance(item, _Failed):
            self.close()
            raise item.exc
        return item

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
