"""Shared data for lsr.index tests: small SPLADE-like synthetic collections (module-scoped)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from lsr import SparseBatch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from synthetic import Generator  # noqa: E402


@pytest.fixture(scope="session")
def synth():
    """(docs, queries): 3,000 documents over a 30,522 vocabulary, 60 correlated queries."""
    g = Generator(seed=7)
    docs = g.documents(3000)
    return docs, g.queries(60, docs)


@pytest.fixture(scope="session")
def small_random():
    """(docs, queries) with dim 300 and ~15 nnz per row: lists long enough to form many blocks."""
    rng = np.random.default_rng(3)
    n, dim = 1500, 300
    D = rng.random((n, dim), dtype=np.float32) * (rng.random((n, dim)) < 0.05)
    Q = rng.random((40, dim), dtype=np.float32) * (rng.random((40, dim)) < 0.08)
    return SparseBatch.from_dense(D), SparseBatch.from_dense(Q)


@pytest.fixture(scope="session")
def recall_at():
    """recall_at(found_rows, true_rows) -> mean share of the true top-k found."""
    return _recall_at


def _recall_at(found: np.ndarray, truth: np.ndarray) -> float:
    k = truth.shape[1]
    return float(np.mean([len(set(f[f >= 0].tolist()) & set(t[t >= 0].tolist())) / k for f, t in zip(found, truth)]))


def rewrite_format(folder: Path, version: int | None, add: dict[str, np.ndarray], drop: tuple[str, ...] = ()) -> dict:
    """Rewrite a saved index folder as an older format wrote it: ``add`` arrays saved and listed in
    the manifest (with their size and digest), ``drop`` arrays removed, ``format_version`` set (None:
    kept). Returns the new manifest."""
    from lsr.index.storage import sha256_file

    m = json.loads((folder / "manifest.json").read_text())
    for name, arr in add.items():
        path = folder / f"{name}.npy"
        np.save(path, arr)
        m["arrays"][name] = {"file": path.name, "dtype": arr.dtype.str, "shape": list(arr.shape),
                             "bytes": path.stat().st_size, "sha256": sha256_file(path)}
    for name in drop:
        (folder / f"{name}.npy").unlink()
        del m["arrays"][name]
    if version is not None:
        m["format_version"] = version
    (folder / "manifest.json").write_text(json.dumps(m))
    return m


@pytest.fixture
def old_format():
    """:func:`rewrite_format`, for tests of loading earlier index formats."""
    return rewrite_format


@pytest.fixture
def replace_arrays():
    """Overwrite arrays of a saved index folder with the manifest's digests kept valid (a folder
    that passes its checksums but holds inconsistent data): ``replace_arrays(folder, name=array)``."""
    return lambda folder, **arrays: rewrite_format(folder, None, arrays)
