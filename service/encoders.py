"""Lazy, shared encoders for the service: a model is loaded on first use, once, behind a lock.

A collection's vocabulary is read torch-free from the model folder's tokenizer files where
possible, so collections fed precomputed vectors never load a model.
"""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path
from typing import Any

from lsr.index.sparse import SparseBatch

log = logging.getLogger(__name__)


class ModelUnavailable(ValueError):
    """The named model cannot be resolved or loaded (a 4xx for the request that named it)."""


def _model_dir(name: str) -> Path | None:
    if not name or "\x00" in name:
        return None
    try:
        p = Path(name).expanduser()
        if p.is_dir():
            return p
    except (OSError, ValueError, RuntimeError):  # a name too long for a path, a bad ~user, ...
        return None
    try:
        from lsr.models.hub import model_path  # noqa: PLC0415

        return Path(model_path(name))
    except Exception as exc:  # not written yet, not cached, or an unknown short name
        log.debug("model_path(%r) failed: %s", name, exc)
        return None


def _vocab_from_folder(folder: Path) -> list[str] | None:
    tok = folder / "tokenizer.json"
    if tok.exists():
        data = json.loads(tok.read_text(encoding="utf-8"))
        vocab = (data.get("model") or {}).get("vocab")
        if isinstance(vocab, dict) and vocab:
            out = [""] * (max(vocab.values()) + 1)
            for t, i in vocab.items():
                out[i] = t
            return out
    txt = folder / "vocab.txt"
    if txt.exists():
        return txt.read_text(encoding="utf-8").split("\n")[:-1] or None
    return None


class ModelRegistry:
    """Resolves model names to vocabularies and encoders; encoders are cached per name."""

    def __init__(self, default: str | None = "splade-tiny", *, allow_load: bool = True):
        self.default = default
        self.allow_load = allow_load
        self._encoders: dict[str, Any] = {}
        self._vocabs: dict[str, list[str]] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def _lock_for(self, name: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(name, threading.Lock())

    def vocab(self, name: str) -> list[str]:
        if name in self._vocabs:
            return self._vocabs[name]
        folder = _model_dir(name)
        try:
            vocab = _vocab_from_folder(folder) if folder is not None else None
        except (OSError, ValueError) as exc:
            raise ModelUnavailable(f"model {name!r}: cannot read its vocabulary ({exc})") from exc
        if vocab is None:
            vocab = list(self.encoder(name).vocab)
        self._vocabs[name] = vocab
        return vocab

    def loaded(self) -> list[str]:
        return list(self._encoders)

    def encoder(self, name: str):
        enc = self._encoders.get(name)
        if enc is not None:
            return enc
        if not self.allow_load:
            raise ModelUnavailable(f"model {name!r} is not loaded and this server does not load models")
        with self._lock_for(name):
            enc = self._encoders.get(name)
            if enc is None:
                try:
                    from lsr.models import SparseEncoder  # noqa: PLC0415

                    log.info("loading encoder %s", name)
                    enc = SparseEncoder.load(name)
                except Exception as exc:
                    raise ModelUnavailable(f"model {name!r} cannot be loaded: {exc}") from exc
                self._encoders[name] = enc
                self._locks[name + ":run"] = threading.Lock()
        return enc

    def encode(self, name: str, texts: list[str], *, queries: bool) -> SparseBatch:
        enc = self.encoder(name)
        with self._lock_for(name + ":run"):  # torch already uses every core per call
            if queries:
                batch = enc.encode_queries(texts)
            else:
                batch = enc.encode_documents(texts)
        if batch.vocab is None:
            batch = batch.with_vocab(self.vocab(name))
        return batch
