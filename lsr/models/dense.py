"""Dense sentence embeddings for hybrid search: a sentence-transformers folder (e.g. all-MiniLM-L6-v2)
run through transformers, pooled as its ``1_Pooling`` config says and L2-normalised when its
``modules.json`` lists a Normalize module. Returns float32 NumPy arrays (n, dim).

>>> enc = DenseEncoder.load("minilm")                              # doctest: +SKIP
>>> enc.encode(["what causes fever"]).shape                        # doctest: +SKIP
(1, 384)
"""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path
from typing import Any, Sequence

import numpy as np

__all__ = ["DenseEncoder"]

log = logging.getLogger(__name__)


class DenseEncoder:
    """A bi-encoder's embeddings; queries and documents go through the same model."""

    def __init__(self, model: Any, tokenizer: Any, *, pooling: str = "mean", normalize: bool = True,
                 max_length: int = 256, device: str = "cpu", name: str = "") -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.pooling = pooling
        self.normalize = normalize
        self.max_length = int(max_length)
        self.device = device
        self.name = name
        self.dim = int(model.config.hidden_size)
        self._lock = threading.Lock()  # one forward pass at a time (the service's threads share it)

    @classmethod
    def load(cls, name_or_path: str | Path, *, device: str | None = None, max_length: int | None = None
             ) -> "DenseEncoder":
        """A short name (``minilm`` / ``all-MiniLM-L6-v2``, see :mod:`lsr.models.hub`) or a
        sentence-transformers folder (``config.json``, weights, tokenizer, ``1_Pooling/config.json``)."""
        import torch
        from transformers import AutoModel, AutoTokenizer

        from lsr.models.hub import model_path

        folder = Path(model_path(name_or_path))
        if not (folder / "config.json").exists():
            raise FileNotFoundError(f"{folder}: no config.json (expected a sentence-transformers model folder)")
        pooling = "mean"
        pool_cfg = folder / "1_Pooling" / "config.json"
        if pool_cfg.exists():
            cfg = json.loads(pool_cfg.read_text())
            if cfg.get("pooling_mode_cls_token"):
                pooling = "cls"
            elif not cfg.get("pooling_mode_mean_tokens", True):
                raise ValueError(f"{pool_cfg}: only mean or CLS pooling is supported")
        normalize = True
        modules = folder / "modules.json"
        if modules.exists():
            normalize = any(m.get("type", "").endswith("Normalize") for m in json.loads(modules.read_text()))
        length = 256
        st_cfg = folder / "sentence_bert_config.json"
        if st_cfg.exists():
            length = int(json.loads(st_cfg.read_text()).get("max_seq_length", length))
        dev = device or ("cuda" if torch.cuda.is_available() else "cpu")
        model = AutoModel.from_pretrained(str(folder)).to(dev).eval()
        tok = AutoTokenizer.from_pretrained(str(folder))
        log.info("loaded dense encoder %s (%s pooling, normalize=%s, dim %d, device %s)", folder, pooling, normalize,
                 model.config.hidden_size, dev)
        return cls(model, tok, pooling=pooling, normalize=normalize, max_length=max_length or length, device=dev,
                   name=str(name_or_path))

    def encode(self, texts: Sequence[str] | str, *, batch_size: int = 32, show_progress_bar: bool = False
               ) -> np.ndarray:
        """Embeddings (float32, (n, dim)) in input order; texts are batched by length."""
        import torch

        if isinstance(texts, str):
            texts = [texts]
        texts = list(texts)
        for i, t in enumerate(texts):
            if not isinstance(t, str):
                raise TypeError(f"texts[{i}] is {type(t).__name__}, expected str")
        out = np.zeros((len(texts), self.dim), np.float32)
        if not texts:
            return out
        order = np.argsort([-len(t) for t in texts], kind="stable")
        bar = None
        if show_progress_bar:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(texts), desc="encode dense", unit="text")
        with self._lock, torch.inference_mode():
            for s in range(0, len(texts), batch_size):
                idx = order[s:s + batch_size]
                feats = self.tokenizer([texts[i] for i in idx], padding=True, truncation=True,
                                       max_length=self.max_length, return_tensors="pt").to(self.device)
                hidden = self.model(**feats).last_hidden_state
                if self.pooling == "cls":
                    emb = hidden[:, 0]
                else:
                    mask = feats["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                    emb = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                if self.normalize:
                    emb = torch.nn.functional.normalize(emb, p=2, dim=1)
                out[idx] = emb.float().cpu().numpy()
                if bar is not None:
                    bar.update(len(idx))
        if bar is not None:
            bar.close()
        return out

    encode_queries = encode
    encode_documents = encode
