"""Encoding a corpus with Ray Data: ``map_batches`` on a pool of encoder actors (one GPU each where
the cluster has GPUs, CPU otherwise); rows come back as ``(position, term ids, weights)`` in any
order and are put back in input order by the caller when it needs that (``lsr-encode --cluster``).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from .runtime import require_ray

log = logging.getLogger(__name__)


class _Encoder:
    """One actor of the pool: a loaded encoder; a batch of texts in, packed sparse rows out."""

    def __init__(self, model: str, device: str | None, max_length: int | None, top_k: int | None,
                 min_weight: float | None, batch_size: int, threads: int, queries: bool = False) -> None:
        import torch

        from lsr.models import SparseEncoder

        torch.set_num_threads(max(1, threads))
        self.enc = SparseEncoder.load(model, device=device)
        if max_length is not None:
            self.enc.max_doc_length = max_length
        self.top_k, self.min_weight, self.batch_size = top_k, min_weight, batch_size
        self.fn = self.enc.encode_queries if queries else self.enc.encode_documents

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = self.fn([str(t) for t in batch["text"]], batch_size=self.batch_size, top_k=self.top_k,
                      min_weight=self.min_weight)
        t = np.empty(len(out), dtype=object)
        w = np.empty(len(out), dtype=object)
        for i in range(len(out)):
            idx, val = out.row(i)
            keep = val > 0
            t[i] = idx[keep].astype(np.int32).tobytes()
            w[i] = val[keep].astype(np.float32).tobytes()
        return {"pos": np.asarray(batch["pos"], np.int64), "t": t, "w": w}


def cluster_gpus() -> int:
    ray = require_ray()
    return int(ray.cluster_resources().get("GPU", 0))


def encode_stream(texts: list[str], model: str, *, actors: int | None = None, gpus_per_actor: float | None = None,
                  cpus_per_actor: float = 1.0, batch_size: int = 32, block_rows: int = 256,
                  max_length: int | None = None, top_k: int | None = None,
                  min_weight: float | None = None, device: str | None = None,
                  queries: bool = False) -> Iterator[list[tuple[int, np.ndarray, np.ndarray]]]:
    """Yield batches of ``(position, term ids, weights)`` as the actor pool finishes them.

    ``actors``: pool size (default: one per GPU, else one per CPU of the cluster);
    ``gpus_per_actor``: default 1 when the cluster has GPUs, else 0 (CPU encoding).
    """
    ray = require_ray()
    if Path(model).is_dir():  # a local folder: the actors' working folder is not ours
        model = str(Path(model).resolve())
    ray.data.DataContext.get_current().enable_progress_bars = False  # the caller shows one bar
    gpus = cluster_gpus()
    if gpus_per_actor is None:
        gpus_per_actor = 1.0 if gpus else 0.0
    if actors is None:
        actors = max(1, gpus if gpus_per_actor else int(ray.cluster_resources().get("CPU", 1) // max(cpus_per_actor, 1)))
    if device is None:
        device = "cuda" if gpus_per_actor else "cpu"
    ds = ray.data.from_items([{"pos": i, "text": t} for i, t in enumerate(texts)],
                             override_num_blocks=max(1, min(len(texts), -(-len(texts) // block_rows))))
    opts: dict[str, Any] = dict(
        fn_constructor_kwargs=dict(model=model, device=device, max_length=max_length, top_k=top_k,
                                   min_weight=min_weight, batch_size=batch_size, threads=int(max(1, cpus_per_actor)),
                                   queries=queries),
        batch_size=block_rows, concurrency=actors, num_cpus=cpus_per_actor, batch_format="numpy",
    )
    if gpus_per_actor:
        opts["num_gpus"] = gpus_per_actor
    log.info("encoding %d texts with %s on %d Ray Data actors (%s GPU each)", len(texts), model, actors, gpus_per_actor)
    out = ds.map_batches(_Encoder, **opts)
    for batch in out.iter_batches(batch_size=None, batch_format="numpy"):
        yield [(int(p), np.frombuffer(t, np.int32), np.frombuffer(w, np.float32))
               for p, t, w in zip(batch["pos"], batch["t"], batch["w"])]
