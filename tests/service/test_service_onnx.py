"""The lean serving path: SPLADE-tiny exported by ``lsr export-onnx`` (a subprocess), checked against the torch
encoder on SciFact documents, then served by an lsr-serve process in which torch and transformers cannot be
imported: text ingest and text search over real HTTP, and torch never loaded."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from service_harness import Server

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")
pytest.importorskip("torch")

REPO = Path(__file__).resolve().parents[2]
SCIFACT = REPO / "tests" / "data" / "beir" / "scifact"

# Put first on sys.meta_path by sitecustomize: importing torch or transformers fails as if they were not
# installed, and every attempt is written to $LSR_BLOCKED_LOG.
SITECUSTOMIZE = '''
import os, sys

class _Blocker:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "transformers"):
            with open(os.environ["LSR_BLOCKED_LOG"], "a") as fh:
                fh.write(name + "\\n")
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, _Blocker())
'''


def _splade_available() -> bool:
    try:
        from lsr.models.hub import model_path

        return Path(model_path("splade-tiny")).is_dir()
    except Exception:
        return False


@pytest.fixture(scope="module")
def splade_onnx(tmp_path_factory):
    if not _splade_available():
        pytest.skip("SPLADE-tiny is not in the lsr model cache")
    out = tmp_path_factory.mktemp("onnx") / "splade-tiny-onnx"
    proc = subprocess.run([sys.executable, "-m", "lsr.cli.main", "export-onnx", "splade-tiny", str(out)],
                          capture_output=True, text=True, timeout=600, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.startswith(f"wrote {out}: splade model, vocabulary 30522"), proc.stdout
    return out


@pytest.fixture(scope="module")
def splade_torch():
    from lsr.models import SparseEncoder

    return SparseEncoder.load("splade-tiny", device="cpu")


def _docs(n: int) -> list[dict]:
    from lsr.index.corpus import read_corpus

    return [{"id": d.id, "text": d.full_text, "metadata": {"title": d.title}} for d in read_corpus(SCIFACT, n)]


@pytest.mark.timeout(600)
def test_export_matches_torch_on_scifact(splade_onnx, splade_torch):
    from lsr.models.onnx import OnnxSparseEncoder

    texts = [d["text"] for d in _docs(20)] + ["", "fever"]
    torch_enc = splade_torch
    enc = OnnxSparseEncoder.load(splade_onnx)
    assert enc.kind == "splade" and enc.vocab == torch_enc.vocab
    assert enc.token_ids(texts, 256) == torch_enc._token_ids(texts, "document", None)
    ref = torch_enc.encode_documents(texts, batch_size=16).to_dense()
    got = enc.encode_documents(texts, batch_size=5)  # other batch shapes and paddings than at export
    assert np.abs(got.to_dense() - ref).max() <= 1e-4
    queries = ["what causes fever", "", "0-dimensional biomaterials show inductive properties"]
    assert np.abs(enc.encode_queries(queries).to_dense() - torch_enc.encode_queries(queries).to_dense()).max() <= 1e-4


@pytest.mark.timeout(600)
def test_serves_onnx_splade_tiny_without_torch(splade_onnx, splade_torch, tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE)
    blocked = tmp_path / "blocked.log"
    pythonpath = os.pathsep.join(p for p in (str(site), os.environ.get("PYTHONPATH", "")) if p)
    srv = Server(tmp_path / "data", "--model", str(splade_onnx), "--threads", "1",
                 env={"PYTHONPATH": pythonpath, "LSR_BLOCKED_LOG": str(blocked)})
    docs = _docs(24)
    srv.start()
    try:
        with srv.client() as c:
            r = c.post("/v1/collections", json={"name": "sci"})
            assert r.status_code == 201, r.text
            assert r.json()["dim"] == 30522
            r = c.post("/v1/collections/sci/documents", json={"documents": docs})
            assert r.status_code == 200, r.text
            for target in (docs[2], docs[11]):  # a document's own title finds it first
                r = c.post("/v1/collections/sci/search",
                           json={"text": target["metadata"]["title"], "k": 3, "explain": True})
                assert r.status_code == 200, r.text
                hits = r.json()["hits"]
                assert hits[0]["id"] == target["id"], hits
                terms = hits[0]["explanation"]["terms"]
                assert sum(t["contribution"] for t in terms) == pytest.approx(hits[0]["score"], rel=1e-5)
            enc = c.post("/v1/encode", json={"texts": [docs[5]["text"]], "kind": "document"})
            assert enc.status_code == 200, enc.text
            served = enc.json()["vectors"][0]
            metrics = c.get("/metrics").text
            assert "lsr_torch_loaded 0.0" in metrics, [ln for ln in metrics.splitlines() if "torch" in ln]
    finally:
        srv.stop()
    # nothing in the server even tried to import torch or transformers
    assert not blocked.exists() or blocked.read_text() == "", blocked.read_text()
    # the served document vector is the torch encoder's (this process has torch)
    ref = splade_torch.encode_documents([docs[5]["text"]]).to_dicts(tokens=True)[0]
    assert set(served) == set(ref)
    assert max(abs(served[t] - w) for t, w in ref.items()) <= 1e-4
    assert json.loads((splade_onnx / "lsr_config.json").read_text())["onnx"]["exporter"].startswith("torch.onnx")
