"""benchmarks/real_vectors.py pack / unpack: the compact copy that carries the real vectors to the
GPU machine restores every corpus file (term ids exact, document weights as float16, query weights
exact), through the script's command line."""

import subprocess
import sys
from pathlib import Path

import numpy as np

from lsr.index.sparse import SparseBatch, load_vectors, save_vectors

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "real_vectors.py"


def _batch(rng, n, dim, nnz):
    lens = rng.integers(0, nnz, n)
    ptr = np.concatenate([[0], np.cumsum(lens)]).astype(np.int64)
    idx = np.concatenate([np.sort(rng.choice(dim, k, replace=False)) for k in lens]).astype(np.int32)
    val = (rng.random(ptr[-1]) * 3).astype(np.float32)
    return SparseBatch(ptr, idx, val, dim, tuple(f"t{i}" for i in range(dim)))


def test_pack_unpack_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    src = tmp_path / "real"
    src.mkdir()
    want = {}
    for name in ("scifact", "nfcorpus", "msmarco-sample"):
        for kind, n in (("docs", 40), ("queries", 12)):
            b = _batch(rng, n, 30522, 60)
            ids = [f"{name}-{kind}-{i}" for i in range(n)]
            save_vectors(src / f"{name}-{kind}.npz", b, ids)
            want[f"{name}-{kind}"] = (b, ids)
    packed = tmp_path / "packed.npz"
    run = [sys.executable, str(SCRIPT)]
    subprocess.run(run + ["pack", "--vectors", str(src), "--out", str(packed)], check=True, timeout=300)
    assert packed.stat().st_size < sum(p.stat().st_size for p in src.iterdir())
    out = tmp_path / "unpacked"
    subprocess.run(run + ["unpack", "--packed", str(packed), "--out", str(out)], check=True, timeout=300)
    for key, (b, ids) in want.items():
        got, got_ids = load_vectors(out / f"{key}.npz")
        assert got_ids == ids
        np.testing.assert_array_equal(got.indptr, b.indptr)
        np.testing.assert_array_equal(got.indices, b.indices)
        assert got.dim == b.dim and got.vocab == b.vocab
        if key.endswith("docs"):  # document weights travel as float16, what the indexes store
            np.testing.assert_array_equal(got.values, b.values.astype(np.float16).astype(np.float32))
        else:
            np.testing.assert_array_equal(got.values, b.values)


def test_pack_names_a_missing_corpus(tmp_path):
    proc = subprocess.run([sys.executable, str(SCRIPT), "pack", "--vectors", str(tmp_path), "--out",
                           str(tmp_path / "p.npz")], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert "scifact-docs.npz: not found" in proc.stderr
