"""Torch-free query side of inference-free models: a tokenizer plus one weight per vocabulary id.

A query's vector is ``weight[t]`` for each distinct token ``t`` it holds (no model call). The table is
IDF from a corpus (BM25 form) or learned; it is stored as a safetensors vector. Uses only numpy,
``tokenizers`` and ``safetensors.numpy``: never imports torch.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np

from lsr.index.sparse import SparseBatch
from lsr.index.stats import bm25_idf, document_frequencies

__all__ = ["IdfQueryEncoder", "check_texts", "encode_options", "corpus_token_ids", "QUERY_WEIGHTS_FILE"]

logger = logging.getLogger(__name__)

QUERY_WEIGHTS_FILE = "query_weights.safetensors"


def check_texts(texts, what: str = "texts") -> list[str]:
    """Coerce input to a list of str: a single str is a batch of one; anything else that is not a
    str raises TypeError naming its position."""
    if isinstance(texts, str):
        return [texts]
    if texts is None or isinstance(texts, (bytes, dict)) or not hasattr(texts, "__iter__"):
        raise TypeError(f"{what} must be a list of str, got {type(texts).__name__}")
    out = list(texts)
    for i, t in enumerate(out):
        if not isinstance(t, str):
            raise TypeError(f"{what}[{i}] must be a str, got {type(t).__name__}")
    return out


def encode_options(batch_size: int, top_k: int | None, min_weight: float | None,
                   default_top_k: int | None, default_min_weight: float | None) -> tuple[int | None, float | None]:
    """An encode call's pruning options, the encoder's defaults filled in; a batch size or top_k
    that is not positive raises ValueError. Shared by every encoder (torch and ONNX Runtime)."""
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    top_k = default_top_k if top_k is None else int(top_k)
    min_weight = default_min_weight if min_weight is None else float(min_weight)
    if top_k is not None and top_k <= 0:
        raise ValueError(f"top_k must be positive, got {top_k}")
    return top_k, min_weight


def _load_tokenizer(folder: Path):
    from tokenizers import Tokenizer

    path = folder / "tokenizer.json"
    if not path.exists():
        raise FileNotFoundError(f"{folder} has no tokenizer.json (the torch-free query path needs a fast tokenizer file)")
    return Tokenizer.from_file(str(path))


def _special_ids(tokenizer, folder: Path | None = None) -> list[int]:
    ids = set()
    for tok_id, added in tokenizer.get_added_tokens_decoder().items():
        if added.special:
            ids.add(int(tok_id))
    if folder is not None and (folder / "tokenizer_config.json").exists():
        cfg = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
        for key in ("cls_token", "sep_token", "pad_token", "unk_token", "mask_token", "bos_token", "eos_token"):
            tok = cfg.get(key)
            if isinstance(tok, dict):
                tok = tok.get("content")
            if isinstance(tok, str):
                tid = tokenizer.token_to_id(tok)
                if tid is not None:
                    ids.add(int(tid))
    return sorted(ids)


class IdfQueryEncoder:
    """Query encoder of an inference-free model: ``tokenizers.Tokenizer`` + a ``(V,)`` weight table.

    >>> q = IdfQueryEncoder.load("path/to/model")                 # doctest: +SKIP
    >>> q = IdfQueryEncoder.from_corpus("splade-tiny", doc_texts)   # doctest: +SKIP
    >>> q.encode_queries(["what causes fever"]).to_dicts(tokens=True)  # doctest: +SKIP
    [{'causes': 5.1, 'fever': 6.3, 'what': 1.2}]

    Tokens are taken without special tokens (as sentence-transformers' ``SparseStaticEmbedding``
    does); special tokens have weight 0. Queries longer than ``max_length`` tokens are truncated.
    """

    kind = "inference-free-query"

    def __init__(self, tokenizer, weights, *, max_length: int = 512, special_ids: Iterable[int] = ()):
        w = np.ascontiguousarray(np.asarray(weights, dtype=np.float32).reshape(-1))
        if w.size == 0:
            raise ValueError("query weight table is empty")
        if not np.isfinite(w).all() or (w < 0).any():
            raise ValueError("query weights must be finite and >= 0")
        self.tokenizer = tokenizer
        self.special_ids = sorted(int(i) for i in special_ids)
        if self.special_ids:
            w = w.copy()
            w[[i for i in self.special_ids if i < w.size]] = 0.0
        self.weights = w
        self.max_length = int(max_length)
        self._vocab: tuple[str, ...] | None = None

    # ------------------------------------------------------------------ construction
    @classmethod
    def load(cls, folder, *, max_length: int | None = None) -> "IdfQueryEncoder":
        """Load from an lsr inference-free folder (``query_weights.safetensors``), a sentence-transformers
        ``SparseStaticEmbedding`` folder (``model.safetensors`` with ``weight``, or ``idf.json``), or an
        ST Router folder (its query module is found through ``router_config.json``)."""
        from lsr.models.hub import model_path

        folder = model_path(folder)
        if not (folder / QUERY_WEIGHTS_FILE).exists():  # lsr's own table first, else an ST Router's
            sub = _st_query_folder(folder)
            if sub is not None:
                folder = sub
        tokenizer = _load_tokenizer(folder)
        dim = tokenizer.get_vocab_size(with_added_tokens=True)
        weights = None
        cfg_max = None
        lsr_cfg = folder / "lsr_config.json"
        if lsr_cfg.exists():
            cfg = json.loads(lsr_cfg.read_text(encoding="utf-8"))
            cfg_max = cfg.get("max_query_length")
        if (folder / QUERY_WEIGHTS_FILE).exists():
            weights = _read_vector(folder / QUERY_WEIGHTS_FILE)
        elif (folder / "idf.json").exists() or _st_config_path(folder) is not None:
            weights = _read_st_static(folder, tokenizer, dim)
        elif (folder / "model.safetensors").exists():
            weights = _read_vector(folder / "model.safetensors", key="weight")
        if weights is None:
            raise FileNotFoundError(f"{folder} holds no query weight table ({QUERY_WEIGHTS_FILE} or an ST SparseStaticEmbedding)")
        if max_length is None:
            max_length = cfg_max or _tokenizer_max_length(folder) or 512
        return cls(tokenizer, weights, max_length=max_length, special_ids=_special_ids(tokenizer, folder))

    @classmethod
    def from_corpus(
        cls,
        tokenizer,
        texts: Iterable[str],
        *,
        dim: int | None = None,
        max_length: int = 512,
        doc_max_length: int | None = None,
        batch_size: int = 1024,
        show_progress_bar: bool = False,
    ) -> "IdfQueryEncoder":
        """IDF table from a corpus: ``df`` counts documents holding each token (special tokens excluded),
        weight = ``ln(1 + (N - df + 0.5) / (df + 0.5))``. ``tokenizer`` is a ``tokenizers.Tokenizer``,
        a folder or a short model name; ``doc_max_length`` truncates documents before counting (None:
        whole documents)."""
        folder = None
        if not hasattr(tokenizer, "encode_batch"):
            from lsr.models.hub import model_path

            folder = model_path(tokenizer)
            tokenizer = _load_tokenizer(folder)
        special = _special_ids(tokenizer, folder)
        dim = int(dim or tokenizer.get_vocab_size(with_added_tokens=True))
        df, n = document_frequencies(corpus_token_ids(tokenizer, texts, max_length=doc_max_length, batch_size=batch_size,
                                                      show_progress_bar=show_progress_bar), dim)
        if n == 0:
            raise ValueError("cannot compute IDF from an empty corpus")
        return cls(tokenizer, bm25_idf(df, n), max_length=max_length, special_ids=special)

    def save(self, folder) -> Path:
        """Write ``tokenizer.json`` (if absent) and ``query_weights.safetensors`` into ``folder``."""
        from safetensors.numpy import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        if not (folder / "tokenizer.json").exists():
            self.tokenizer.save(str(folder / "tokenizer.json"))
        save_file({"weight": self.weights}, str(folder / QUERY_WEIGHTS_FILE))
        return folder

    # ------------------------------------------------------------------ encoding
    @property
    def dim(self) -> int:
        return int(self.weights.size)

    @property
    def vocab(self) -> tuple[str, ...]:
        if self._vocab is None:
            size = self.tokenizer.get_vocab_size(with_added_tokens=True)
            toks = [self.tokenizer.id_to_token(i) for i in range(min(size, self.dim))]
            toks = [t if t is not None else f"<id{i}>" for i, t in enumerate(toks)]
            toks += [f"<id{i}>" for i in range(len(toks), self.dim)]
            self._vocab = tuple(toks)
        return self._vocab

    def token_ids(self, texts: Sequence[str]) -> list[list[int]]:
        encs = self.tokenizer.encode_batch(list(texts), add_special_tokens=False)
        return [e.ids[: self.max_length] for e in encs]

    def encode_queries(self, texts, batch_size: int = 1024, show_progress_bar: bool = False,
                       top_k: int | None = None, min_weight: float | None = None) -> SparseBatch:
        """Queries -> ``SparseBatch`` (weights of the distinct tokens, zero-weight tokens dropped)."""
        texts = check_texts(texts)
        parts_i: list[np.ndarray] = []
        counts = np.zeros(len(texts), np.int64)
        rng = range(0, len(texts), batch_size)
        if show_progress_bar:
            from tqdm.auto import tqdm

            rng = tqdm(rng, desc="queries", unit="batch")
        for s in rng:
            for j, ids in enumerate(self.token_ids(texts[s : s + batch_size])):
                u = np.unique(np.asarray(ids, dtype=np.int64))
                u = u[(u < self.dim)]
                u = u[self.weights[u] > 0]
                parts_i.append(u)
                counts[s + j] = u.size
        indptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        indices = np.concatenate(parts_i).astype(np.int32) if parts_i else np.zeros(0, np.int32)
        batch = SparseBatch(indptr, indices, self.weights[indices], self.dim, self.vocab)
        if top_k is not None or min_weight is not None:
            batch = batch.prune(top_k=top_k, min_weight=min_weight)
        return batch

    encode = encode_queries

    def decode(self, batch: SparseBatch, top_k: int | None = None) -> list[list[tuple[str, float]]]:
        return decode_batch(batch, self.vocab, top_k)


def decode_batch(batch: SparseBatch, vocab: Sequence[str], top_k: int | None = None) -> list[list[tuple[str, float]]]:
    """Rows as ``(token, weight)`` lists, heaviest first (``top_k`` of each when given)."""
    out = []
    for idx, val in batch:
        order = np.argsort(-val, kind="stable")
        if top_k is not None:
            order = order[:top_k]
        out.append([(vocab[int(idx[o])], float(val[o])) for o in order])
    return out


def corpus_token_ids(tokenizer, texts: Iterable[str], *, max_length: int | None = None, batch_size: int = 1024,
                     show_progress_bar: bool = False) -> Iterator[list[int]]:
    """Each text's token ids (no special tokens, cut to ``max_length``), tokenised in batches: the
    input of :func:`lsr.index.stats.document_frequencies`."""
    from tqdm.auto import tqdm

    texts, done = iter(texts), 0
    with tqdm(desc="idf", unit="doc", disable=not show_progress_bar) as bar:
        while buf := list(itertools.islice(texts, batch_size)):
            bad = next((i for i, t in enumerate(buf) if not isinstance(t, str)), None)
            if bad is not None:
                raise TypeError(f"texts[{done + bad}] must be a str, got {type(buf[bad]).__name__}")
            yield from (e.ids[:max_length] for e in tokenizer.encode_batch(buf, add_special_tokens=False))
            done += len(buf)
            bar.update(len(buf))


# ---------------------------------------------------------------------- sentence-transformers layouts
def _st_query_folder(folder: Path) -> Path | None:
    rc = folder / "router_config.json"
    if not rc.exists():
        return None
    cfg = json.loads(rc.read_text(encoding="utf-8"))
    names = cfg.get("structure", {}).get("query", [])
    for name in names:
        if cfg.get("types", {}).get(name, "").endswith("SparseStaticEmbedding"):
            return folder / name
    raise ValueError(f"{folder}: the Router's query route {names} has no SparseStaticEmbedding (not inference-free)")


def _st_config_path(folder: Path) -> Path | None:
    p = folder / "config.json"
    if not p.exists():
        return None
    cfg = json.loads(p.read_text(encoding="utf-8"))
    if "model_type" in cfg or "architectures" in cfg:
        return None  # a transformers config, not SparseStaticEmbedding's
    return p


def _read_st_static(folder: Path, tokenizer, dim: int) -> np.ndarray:
    cfg_path = _st_config_path(folder)
    cfg = json.loads(cfg_path.read_text(encoding="utf-8")) if cfg_path else {}
    json_path = cfg.get("path")
    if json_path or (folder / "idf.json").exists():
        p = Path(json_path) if json_path and Path(json_path).is_absolute() else folder / (json_path or "idf.json")
        idf = json.loads(p.read_text(encoding="utf-8"))
        w = np.zeros(dim, np.float32)
        for tok, val in idf.items():
            tid = tokenizer.token_to_id(tok)
            if tid is not None and tid < dim:
                w[tid] = float(val)
        return w
    return _read_vector(folder / "model.safetensors", key="weight")


def _read_vector(path: Path, key: str | None = None) -> np.ndarray:
    from safetensors.numpy import load_file

    tensors = load_file(str(path))
    if key is None:
        key = "weight" if "weight" in tensors else next(iter(tensors))
    if key not in tensors:
        raise ValueError(f"{path} has no tensor {key!r} (has {sorted(tensors)})")
    return tensors[key].astype(np.float32).reshape(-1)


def _tokenizer_max_length(folder: Path) -> int | None:
    p = folder / "tokenizer_config.json"
    if not p.exists():
        return None
    m = json.loads(p.read_text(encoding="utf-8")).get("model_max_length")
    return int(m) if isinstance(m, (int, float)) and m < 1e9 and not math.isnan(m) else None
