"""Efficiency figures: throughput, latency percentiles, sizes and sparsity (FLOPS itself is
:func:`lsr.index.stats.flops`).
"""

from __future__ import annotations

import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from lsr.index.sparse import SparseBatch

__all__ = ["Timer", "timer", "latency_stats", "sparsity_stats", "folder_size"]


class Timer:
    """Collects wall-clock durations in seconds."""

    def __init__(self) -> None:
        self.times: list[float] = []

    @contextmanager
    def __call__(self) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.times.append(time.perf_counter() - t0)

    @property
    def total(self) -> float:
        return float(sum(self.times))


@contextmanager
def timer(out: dict, key: str) -> Iterator[None]:
    """``with timer(stats, "build_s"): ...`` stores the elapsed seconds under ``key``."""
    t0 = time.perf_counter()
    try:
        yield
    finally:
        out[key] = time.perf_counter() - t0


def latency_stats(seconds: Sequence[float], prefix: str = "") -> dict[str, float]:
    """Mean, p50, p90 and p99 in milliseconds of per-item durations given in seconds."""
    a = np.asarray(seconds, np.float64) * 1e3
    if a.size == 0:
        return {}
    return {
        f"{prefix}mean_ms": float(a.mean()),
        f"{prefix}p50_ms": float(np.percentile(a, 50)),
        f"{prefix}p90_ms": float(np.percentile(a, 90)),
        f"{prefix}p99_ms": float(np.percentile(a, 99)),
    }


def sparsity_stats(batch: SparseBatch, prefix: str) -> dict[str, float]:
    n = batch.row_nnz()
    if n.size == 0:
        return {}
    return {f"{prefix}_nnz_mean": float(n.mean()), f"{prefix}_nnz_max": int(n.max())}


def folder_size(path: str | Path) -> int:
    """Bytes of all files under ``path`` (or of ``path`` itself when it is a file)."""
    p = Path(path)
    if p.is_file():
        return p.stat().st_size
    return sum(f.stat().st_size for f in p.rglob("*") if f.is_file())


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1
