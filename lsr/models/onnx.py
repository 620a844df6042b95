"""SPLADE-style encoders as ONNX graphs: :func:`export_onnx` (needs torch) writes a self-describing folder;
:class:`OnnxSparseEncoder` runs it with ``onnxruntime`` and ``tokenizers`` alone (never imports torch).

The graph takes ``input_ids`` and ``attention_mask`` (int64, dynamic batch and length) and returns
``sparse``: the pooled ``(B, V)`` vector, ``log1p(relu(logits))`` max-pooled over the unmasked tokens
(or sum-pooled, as the model says), computed in the graph with the vocabulary projection applied in
fixed slices so the ``(B, L, V)`` logits never exist at once. An exported folder holds ``model.onnx``,
the tokenizer files, ``lsr_config.json`` (kind, pooling, lengths, pruning, ``dim`` and an ``onnx``
entry) and, for an inference-free model, its ``query_weights.safetensors``.

    lsr export-onnx splade-tiny splade-tiny-onnx/            # or export_onnx("splade-tiny", "splade-tiny-onnx")
    enc = OnnxSparseEncoder.load("splade-tiny-onnx")
    enc.encode_documents(texts)                               # SparseBatch, as SparseEncoder's
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from lsr.index.sparse import SparseBatch
from lsr.models.inference_free import QUERY_WEIGHTS_FILE, IdfQueryEncoder, check_texts, decode_batch, encode_options

__all__ = ["OnnxSparseEncoder", "export_onnx", "is_onnx_folder", "onnx_folder", "ONNX_FILE", "OnnxExportError"]

logger = logging.getLogger(__name__)

ONNX_FILE = "model.onnx"
LSR_CONFIG = "lsr_config.json"
ONNX_KINDS = ("splade", "inference-free")  # decoder models (echo input) are not exported


class OnnxExportError(ValueError):
    """The model cannot be exported (its kind, its head) or the export does not match the torch encoder."""


def _read_config(folder: Path) -> dict[str, Any] | None:
    p = folder / LSR_CONFIG
    if not p.is_file():
        return None
    try:
        cfg = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return cfg if isinstance(cfg, dict) else None


def is_onnx_folder(folder: str | os.PathLike[str]) -> bool:
    """True when ``folder`` is an :func:`export_onnx` folder (``lsr_config.json`` with an ``onnx`` entry)."""
    folder = Path(folder)
    cfg = _read_config(folder)
    return cfg is not None and isinstance(cfg.get("onnx"), dict) and (folder / str(cfg["onnx"].get("file", ONNX_FILE))).is_file()


def onnx_folder(folder: str | os.PathLike[str]) -> Path | None:
    """The ONNX export that serves ``folder``: the folder itself, or its ``onnx/`` subfolder; else None."""
    folder = Path(folder)
    for cand in (folder, folder / "onnx"):
        if is_onnx_folder(cand):
            return cand
    return None


class OnnxSparseEncoder:
    """lsr's encoder interface over an exported ONNX graph: ``encode_documents`` / ``encode_queries`` ->
    :class:`~lsr.index.sparse.SparseBatch` (CSR, ``vocab`` set), the same numbers as the torch encoder
    up to float rounding.

    >>> enc = OnnxSparseEncoder.load("splade-tiny-onnx")                      # doctest: +SKIP
    >>> enc.decode(enc.encode_documents(["the cat sat on the mat"]), top_k=3)  # doctest: +SKIP
    [[('mat', 2.3), ('cat', 2.2), ('sat', 2.0)]]

    Texts are sorted by token length and run in batches of ``batch_size``; documents (and SPLADE
    queries) are cut to ``max_doc_length`` (``max_query_length``) tokens. An inference-free model's
    queries go through its weight table (:class:`~lsr.models.inference_free.IdfQueryEncoder`).
    ``session.run`` is thread-safe, so one encoder serves the service's threads.
    """

    backend = "onnx"

    def __init__(self, folder: str | os.PathLike[str], *, threads: int | None = None,
                 providers: Sequence[str] | None = None, max_query_length: int | None = None,
                 max_doc_length: int | None = None, top_k: int | None = None, min_weight: float | None = None):
        import onnxruntime as ort
        from tokenizers import Tokenizer

        self.folder = Path(folder)
        cfg = _read_config(self.folder)
        if cfg is None or not isinstance(cfg.get("onnx"), dict):
            raise FileNotFoundError(f"{self.folder} is not an ONNX export (no {LSR_CONFIG} with an 'onnx' entry); "
                                    "write one with `lsr export-onnx MODEL OUT`")
        self.config = cfg
        self.kind = str(cfg.get("kind", "splade"))
        if self.kind not in ONNX_KINDS:
            raise ValueError(f"{self.folder}: kind {self.kind!r} has no ONNX encoder (expected one of {ONNX_KINDS})")
        meta = cfg["onnx"]
        self.dim = int(cfg["dim"])
        self.max_query_length = int(max_query_length or cfg.get("max_query_length") or 64)
        self.max_doc_length = int(max_doc_length or cfg.get("max_doc_length") or 256)
        top_k = cfg.get("top_k") if top_k is None else top_k
        if top_k is not None and int(top_k) <= 0:
            raise ValueError(f"top_k must be positive, got {top_k}")
        self.top_k = None if top_k is None else int(top_k)
        min_weight = cfg.get("min_weight") if min_weight is None else min_weight
        self.min_weight = None if min_weight is None else float(min_weight)
        self.pad_id = int(meta.get("pad_token_id") or 0)
        tok_path = self.folder / "tokenizer.json"
        if not tok_path.is_file():
            raise FileNotFoundError(f"{self.folder} has no tokenizer.json")
        self.tokenizer = Tokenizer.from_file(str(tok_path))
        self.tokenizer.no_padding()
        self.tokenizer.no_truncation()
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = int(threads)
        opts.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(self.folder / str(meta.get("file", ONNX_FILE))), opts,
                                            providers=list(providers or ["CPUExecutionProvider"]))
        self.input_names = [i.name for i in self.session.get_inputs()]
        self._query_table: IdfQueryEncoder | None = None
        if self.kind == "inference-free":
            self._query_table = IdfQueryEncoder.load(self.folder, max_length=max_query_length)
        self._vocab: tuple[str, ...] | None = None
        self._truncating: dict[int, Any] = {}
        self._lock = threading.Lock()

    @classmethod
    def load(cls, name_or_dir: str | os.PathLike[str], **opts: Any) -> "OnnxSparseEncoder":
        """Open an export folder, or a model folder whose ``onnx/`` subfolder is one (see :func:`onnx_folder`)."""
        from lsr.models.hub import model_path

        folder = model_path(name_or_dir)
        found = onnx_folder(folder)
        if found is None:
            raise FileNotFoundError(f"{folder} holds no ONNX export; write one with `lsr export-onnx {name_or_dir} OUT`")
        enc = cls(found, **opts)
        logger.info("loaded ONNX %s encoder from %s (dim %d)", enc.kind, found, enc.dim)
        return enc

    # ------------------------------------------------------------------ properties
    @property
    def vocab(self) -> tuple[str, ...]:
        """Token strings by id (ids past the tokenizer's size read ``<idN>``)."""
        if self._vocab is None:
            n = min(self.tokenizer.get_vocab_size(with_added_tokens=True), self.dim)
            toks = [self.tokenizer.id_to_token(i) for i in range(n)]
            out = [t if t is not None else f"<id{i}>" for i, t in enumerate(toks)]
            out += [f"<id{i}>" for i in range(n, self.dim)]
            self._vocab = tuple(out)
        return self._vocab

    # ------------------------------------------------------------------ encoding
    def token_ids(self, texts: Sequence[str], max_length: int) -> list[list[int]]:
        """Token ids with special tokens, cut to ``max_length`` (as the torch encoder's tokenizer call)."""
        tok = self._truncating.get(max_length)
        if tok is None:  # one tokenizer per length: truncation is tokenizer state, and threads share them
            with self._lock:
                tok = self._truncating.get(max_length)
                if tok is None:
                    from tokenizers import Tokenizer

                    tok = Tokenizer.from_str(self.tokenizer.to_str())
                    tok.enable_truncation(max_length=max_length)
                    self._truncating[max_length] = tok
        return [e.ids for e in tok.encode_batch(list(texts), add_special_tokens=True)]

    def encode_documents(self, texts: Any, batch_size: int = 32, show_progress_bar: bool = False,
                         top_k: int | None = None, min_weight: float | None = None) -> SparseBatch:
        """Documents -> ``SparseBatch``, rows in input order (see :class:`OnnxSparseEncoder`)."""
        return self._encode(check_texts(texts), self.max_doc_length, "document", batch_size, show_progress_bar,
                            top_k, min_weight)

    def encode_queries(self, texts: Any, batch_size: int = 32, show_progress_bar: bool = False,
                       top_k: int | None = None, min_weight: float | None = None) -> SparseBatch:
        """Queries -> ``SparseBatch``: the graph for SPLADE, the weight table for inference-free models."""
        if self._query_table is not None:
            return self._query_table.encode_queries(
                texts, batch_size=max(batch_size, 256), show_progress_bar=show_progress_bar,
                top_k=self.top_k if top_k is None else top_k,
                min_weight=self.min_weight if min_weight is None else min_weight)
        return self._encode(check_texts(texts), self.max_query_length, "query", batch_size, show_progress_bar,
                            top_k, min_weight)

    def encode(self, texts: Any, *, side: str = "document", **kw: Any) -> SparseBatch:
        return self.encode_queries(texts, **kw) if side == "query" else self.encode_documents(texts, **kw)

    def pooled(self, ids: Sequence[Sequence[int]]) -> np.ndarray:
        """One padded batch of token ids -> the graph's dense ``(B, V)`` float32 output."""
        L = max(1, max((len(x) for x in ids), default=1))
        input_ids = np.full((len(ids), L), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(ids), L), dtype=np.int64)
        for i, x in enumerate(ids):
            input_ids[i, : len(x)] = x
            mask[i, : len(x)] = 1
        feeds = {"input_ids": input_ids, "attention_mask": mask}
        out = self.session.run(["sparse"], {k: v for k, v in feeds.items() if k in self.input_names})[0]
        return np.asarray(out, dtype=np.float32)

    def _encode(self, texts: list[str], max_length: int, side: str, batch_size: int, show_progress_bar: bool,
                top_k: int | None, min_weight: float | None) -> SparseBatch:
        top_k, min_weight = encode_options(batch_size, top_k, min_weight, self.top_k, self.min_weight)
        n = len(texts)
        if n == 0:
            return SparseBatch.empty(0, self.dim).with_vocab(self.vocab)
        ids = self.token_ids(texts, max_length)
        order = np.argsort([-len(x) for x in ids], kind="stable")
        cols: list[np.ndarray] = [np.zeros(0, np.int32)] * n
        vals: list[np.ndarray] = [np.zeros(0, np.float32)] * n
        from tqdm.auto import tqdm

        with tqdm(total=n, desc=f"encode {side}s", unit="text", disable=not show_progress_bar) as bar:
            for s in range(0, n, batch_size):
                sel = order[s : s + batch_size]
                dense = self.pooled([ids[i] for i in sel])
                if min_weight is not None:
                    dense[dense < min_weight] = 0.0
                if top_k is not None and top_k < dense.shape[1]:
                    cut = np.argpartition(-dense, top_k - 1, axis=1)[:, top_k:]
                    np.put_along_axis(dense, cut, 0.0, axis=1)
                for j, row in enumerate(dense):
                    c = np.flatnonzero(row)
                    cols[sel[j]] = c.astype(np.int32)
                    vals[sel[j]] = row[c]
                bar.update(len(sel))
        indptr = np.concatenate([[0], np.cumsum([c.size for c in cols])]).astype(np.int64)
        return SparseBatch(indptr, np.concatenate(cols).astype(np.int32), np.concatenate(vals).astype(np.float32),
                           self.dim, self.vocab)

    def decode(self, batch: SparseBatch, top_k: int | None = None) -> list[list[tuple[str, float]]]:
        """Rows as ``(token, weight)`` lists, heaviest first."""
        return decode_batch(batch, self.vocab, top_k)


# ---------------------------------------------------------------------- export (torch)
CHECK_TEXTS = (
    "",
    "the cat sat on the mat",
    "Fever is a rise in body temperature, most often caused by an infection; the hypothalamus resets its "
    "set point in response to pyrogens such as interleukin-1 and prostaglandin E2.",
)


def export_onnx(model: str | os.PathLike[str], out: str | os.PathLike[str], *, opset: int | None = None,
                vocab_chunk: int = 4096, check: Sequence[str] = CHECK_TEXTS, tolerance: float = 1e-4,
                overwrite: bool = False) -> dict[str, Any]:
    """Export ``model`` (a short name or a SPLADE / inference-free folder) to an ONNX folder ``out``.

    The graph is traced with torch's ``torch.export``-based exporter (``torch.onnx.export(dynamo=True)``,
    needs ``onnx`` and ``onnxscript``: ``pip install 'lsr[onnx]'``) with dynamic batch and length axes.
    After writing, the graph is run on ``check`` texts (padded together in one batch) and compared with
    the torch encoder; a difference above ``tolerance`` raises :class:`OnnxExportError` and leaves no
    folder. The folder appears atomically (written beside ``out``, then renamed). Returns a summary
    (``out``, ``kind``, ``dim``, ``max_abs_diff``, ``seconds``, ``bytes``).
    """
    import time

    from lsr.models.hub import model_path

    t0 = time.perf_counter()
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise FileExistsError(f"{out} exists and is not empty (pass overwrite=True / --force to replace it)")
    folder = model_path(model)  # an unknown name fails here, before torch is imported

    import torch

    from lsr.models import SparseEncoder

    enc = SparseEncoder.load(folder, device="cpu")
    if enc.kind not in ONNX_KINDS:
        raise OnnxExportError(f"{model}: a {enc.kind} model cannot be exported to ONNX (only {', '.join(ONNX_KINDS)})")
    enc.amp = False
    wrapper = _PooledGraph(enc, vocab_chunk).eval()
    sample = enc._collate(enc._token_ids(["the cat sat on the mat", "a longer second text, padded less"],
                                         "document", None), "document")
    args = (sample["input_ids"], sample["attention_mask"])
    max_pos = int(getattr(enc.model.config, "max_position_embeddings", 0) or 0)
    seq = torch.export.Dim("seq", min=1, max=max_pos) if max_pos > 2 else torch.export.Dim("seq", min=1)
    batch = torch.export.Dim("batch", min=1)
    shapes = {"input_ids": {0: batch, 1: seq}, "attention_mask": {0: batch, 1: seq}}
    n_params = sum(p.numel() * p.element_size() for p in enc.parameters())
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        with _identity_head(enc.model) as head_ok:
            if not head_ok:
                raise OnnxExportError(f"{model}: its output embedding is not a linear layer; cannot export")
            program = torch.onnx.export(wrapper, args, dynamo=True, dynamic_shapes=shapes, opset_version=opset,
                                        input_names=["input_ids", "attention_mask"], output_names=["sparse"],
                                        optimize=True, verbose=False)
        program.save(str(tmp / ONNX_FILE), external_data=n_params > (1800 << 20))
        enc.tokenizer.save_pretrained(tmp)
        cfg = enc.lsr_config()
        cfg["dim"] = int(enc.dim)
        pad = enc.tokenizer.pad_token_id
        cfg["onnx"] = {"file": ONNX_FILE, "inputs": ["input_ids", "attention_mask"], "output": "sparse",
                       "opset": int(program.model.opset_imports.get("", 0)), "exporter": "torch.onnx (dynamo)",
                       "torch": torch.__version__, "vocab_chunk": int(vocab_chunk),
                       "pad_token_id": int(pad) if pad is not None else 0,
                       "architectures": list(getattr(enc.model.config, "architectures", None) or [])}
        if enc.kind == "inference-free":
            from safetensors.numpy import save_file

            weights = enc.query_weights.detach().float().cpu().numpy()
            save_file({"weight": np.ascontiguousarray(weights)}, str(tmp / QUERY_WEIGHTS_FILE))
            cfg["query_weights"] = QUERY_WEIGHTS_FILE
        (tmp / LSR_CONFIG).write_text(json.dumps(cfg, indent=2) + "\n", encoding="utf-8")
        diff = 0.0
        if check:
            ours = OnnxSparseEncoder(tmp, threads=torch.get_num_threads())
            ids = enc._token_ids(check_texts(list(check)), "document", None)
            got = ours.pooled(ids)
            with torch.inference_mode():
                ref = enc._pool_inference(enc._collate(ids, "document"), "document").float().numpy()
            diff = float(np.abs(got - ref).max())
            if not diff <= tolerance:
                raise OnnxExportError(f"ONNX output differs from the torch encoder by {diff:.2e} (> {tolerance:g})")
        umask = os.umask(0)
        os.umask(umask)
        for p in [tmp, *tmp.rglob("*")]:  # mkdtemp (and safetensors) create owner-only modes
            p.chmod((0o777 if p.is_dir() else 0o666) & ~umask)
        if out.exists():
            shutil.rmtree(out) if out.is_dir() else out.unlink()
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    summary = {"out": str(out), "kind": enc.kind, "dim": int(enc.dim), "max_abs_diff": diff,
               "seconds": time.perf_counter() - t0, "bytes": size}
    logger.info("exported %s to %s: %s", model, out, summary)
    return summary


def _identity_head(model: Any) -> Any:
    """Context manager: the model's output embedding passes its input through (so the traced model
    returns the projection's input) while the wrapper applies the projection in slices."""
    import contextlib

    import torch

    @contextlib.contextmanager
    def cm() -> Any:
        head = model.get_output_embeddings()
        if not isinstance(head, torch.nn.Linear):
            yield False
            return
        head.forward = lambda x: x  # an instance attribute shadows Linear.forward
        try:
            yield True
        finally:
            del head.forward

    return cm()


def _PooledGraph(enc: Any, vocab_chunk: int) -> Any:
    """The module that is traced: the backbone up to its vocabulary projection, then the projection in
    ``vocab_chunk``-wide slices, each reduced over the masked tokens at once (max pooling commutes with
    the monotone activation, as in :func:`lsr.models.pooling.head_pool`)."""
    import torch

    from lsr.models.pooling import activate

    head = enc.model.get_output_embeddings()

    class PooledGraph(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = enc.model
            self.weight = head.weight
            self.bias = head.bias
            V = int(head.weight.shape[0])
            step = max(1, min(int(vocab_chunk), V))
            self.slices = [(s, min(V, s + step)) for s in range(0, V, step)]

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            hidden = self.model(input_ids=input_ids, attention_mask=attention_mask).logits  # identity head
            keep = (attention_mask > 0).unsqueeze(-1)
            parts = []
            for s, e in self.slices:
                lc = torch.matmul(hidden, self.weight[s:e].t())
                if self.bias is not None:
                    lc = lc + self.bias[s:e]
                if enc.pooling == "max":
                    parts.append(lc.masked_fill(~keep, float("-inf")).amax(dim=1))
                else:
                    parts.append(activate(lc, enc.activation).masked_fill(~keep, 0.0).sum(dim=1))
            x = torch.cat(parts, dim=1)
            return activate(x, enc.activation) if enc.pooling == "max" else x

    return PooledGraph()
