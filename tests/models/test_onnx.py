"""ONNX export (``lsr export-onnx``) and the torch-free ONNX Runtime encoder on the shipped inference-free model:
parity with the torch encoder on SciFact documents, sentence-transformers parity of the shipped model, a torch-free
run, and the CLI's refusals. SPLADE-tiny's export is checked end to end in tests/service/test_service_onnx.py."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

from lsr.index.corpus import read_corpus, read_queries  # noqa: E402
from lsr.models.onnx import OnnxExportError, OnnxSparseEncoder, export_onnx, is_onnx_folder  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
SCIFACT = REPO / "tests" / "data" / "beir" / "scifact"  # the copy in the repository: same docs everywhere
SHIPPED = REPO / "models" / "inference-free-splade-tiny-scifact-nfcorpus"
N_DOCS = 30


@pytest.fixture(scope="module")
def docs():
    # a few dozen abstracts (many past 256 tokens, so truncation is exercised) plus edge cases
    return [d.full_text for d in read_corpus(SCIFACT, N_DOCS)] + ["", "a", "The cat sat on the mat."]


@pytest.fixture(scope="module")
def queries():
    return list(read_queries(SCIFACT).values())[:24] + ["", "what causes fever"]


@pytest.fixture(scope="module")
def shipped_torch():
    from lsr.models import SparseEncoder

    return SparseEncoder.load(SHIPPED, device="cpu")


@pytest.fixture(scope="module")
def shipped_onnx(tmp_path_factory):
    out = tmp_path_factory.mktemp("onnx") / "inference-free-onnx"
    summary = export_onnx(SHIPPED, out)
    assert summary["kind"] == "inference-free" and summary["max_abs_diff"] <= 1e-4
    return out


def test_export_folder_is_self_describing(shipped_onnx):
    import onnx

    names = {p.name for p in shipped_onnx.iterdir()}
    assert {"model.onnx", "tokenizer.json", "tokenizer_config.json", "lsr_config.json",
            "query_weights.safetensors"} <= names
    assert is_onnx_folder(shipped_onnx)
    cfg = json.loads((shipped_onnx / "lsr_config.json").read_text())
    assert cfg["kind"] == "inference-free" and cfg["dim"] == 30522 and cfg["onnx"]["output"] == "sparse"
    graph = onnx.load(str(shipped_onnx / "model.onnx"), load_external_data=False).graph
    dims = {i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim] for i in graph.input}
    out = [d.dim_param or d.dim_value for d in graph.output[0].type.tensor_type.shape.dim]
    # batch and length are symbolic: any batch size and text length run through one graph
    assert all(isinstance(d, str) for d in dims["input_ids"]) and dims["input_ids"] == dims["attention_mask"]
    assert isinstance(out[0], str) and out[1] == 30522


def test_shipped_inference_free_parity_on_scifact(shipped_onnx, shipped_torch, docs, queries):
    from lsr.models.inference_free import IdfQueryEncoder

    torch_enc = shipped_torch
    enc = OnnxSparseEncoder.load(shipped_onnx)
    assert enc.kind == "inference-free" and enc.vocab == torch_enc.vocab
    ref_ids = torch_enc._token_ids(docs, "document", None)
    assert enc.token_ids(docs, enc.max_doc_length) == ref_ids  # tokenizers alone == transformers' tokenizer
    assert max(len(x) for x in ref_ids) == 256  # truncation is exercised
    ref = torch_enc.encode_documents(docs, batch_size=16).to_dense()
    got = enc.encode_documents(docs, batch_size=7)  # other batch shapes and paddings than at export
    assert np.abs(got.to_dense() - ref).max() <= 1e-4
    assert got.vocab is not None and 50 < got.nnz / len(docs) < 500
    assert np.abs(enc.encode_documents(docs[3]).to_dense() - ref[3:4]).max() <= 1e-4  # a batch of one
    pruned = enc.encode_documents(docs[:4], top_k=10, min_weight=0.3)
    assert all(len(i) <= 10 and (v >= 0.3).all() for i, v in pruned)
    ref_top = torch_enc.encode_documents(docs[:4], top_k=10, min_weight=0.3).to_dicts()
    assert [set(r) for r in pruned.to_dicts()] == [set(r) for r in ref_top]
    q_ref = torch_enc.encode_queries(queries).to_dense()
    np.testing.assert_array_equal(enc.encode_queries(queries).to_dense(), q_ref)  # the same weight table
    np.testing.assert_array_equal(IdfQueryEncoder.load(shipped_onnx).encode_queries(queries).to_dense(), q_ref)


def test_shipped_model_loads_in_sentence_transformers_with_identical_vectors(shipped_torch, docs, queries):
    """The shipped model folder is also a sentence-transformers SparseEncoder (Router) with the same vectors."""
    st = pytest.importorskip("sentence_transformers")

    ours = shipped_torch
    theirs = st.SparseEncoder(str(SHIPPED), device="cpu")
    d = theirs.encode_document(docs[:6], convert_to_tensor=True).to_dense().numpy()
    q = theirs.encode_query(queries, convert_to_tensor=True).to_dense().numpy()
    assert np.abs(ours.encode_documents(docs[:6]).to_dense() - d).max() <= 1e-5
    assert np.abs(ours.encode_queries(queries).to_dense() - q).max() <= 1e-6


BLOCKER = """
import sys
class _Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "transformers"):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None
sys.meta_path.insert(0, _Block())
"""


def test_lsr_encode_takes_an_export_folder(shipped_onnx, shipped_torch, docs, tmp_path):
    """`SparseEncoder.load` (and so `lsr-encode --model`) opens an export folder as an ONNX Runtime encoder."""
    import json
    import subprocess
    import sys

    from lsr.index.sparse import load_vectors
    from lsr.models import SparseEncoder

    assert isinstance(SparseEncoder.load(shipped_onnx), OnnxSparseEncoder)
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"_id": f"d{i}", "title": "", "text": t}) + "\n"
                              for i, t in enumerate(docs[:6]) if t), encoding="utf-8")
    out = tmp_path / "docs.npz"
    r = subprocess.run([sys.executable, "-m", "lsr.cli.encode", "--model", str(shipped_onnx), "--input", str(corpus),
                        "--out", str(out), "--no-progress"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    got, ids = load_vectors(out)
    assert list(ids) == [f"d{i}" for i in range(6)]
    ref = shipped_torch.encode_documents(docs[:6]).to_dense()
    assert np.abs(got.to_dense() - ref).max() <= 1e-4


def test_onnx_encoder_runs_without_torch(shipped_onnx, shipped_torch):
    code = BLOCKER + textwrap.dedent(f"""
        import json
        from lsr.models.onnx import OnnxSparseEncoder
        enc = OnnxSparseEncoder.load({str(shipped_onnx)!r}, threads=1)
        b = enc.encode_documents(["the cat sat on the mat"])
        q = enc.encode_queries(["what causes fever"])
        print(json.dumps({{"torch": "torch" in sys.modules, "transformers": "transformers" in sys.modules,
                           "row": b.to_dicts()[0], "query": q.to_dicts()[0]}}))
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["torch"] is False and out["transformers"] is False
    torch_enc = shipped_torch
    for key, ref in (("row", torch_enc.encode_documents(["the cat sat on the mat"]).to_dicts()[0]),
                     ("query", torch_enc.encode_queries(["what causes fever"]).to_dicts()[0])):
        assert {int(k) for k in out[key]} == set(ref)
        assert max(abs(out[key][str(k)] - v) for k, v in ref.items()) <= 1e-4


def test_export_refuses_decoder_models_and_leaves_nothing(bert_tokenizer, tiny_decoder, tmp_path):
    from lsr.models import DecoderSpladeEncoder

    DecoderSpladeEncoder(tiny_decoder(bert_tokenizer), bert_tokenizer).save(tmp_path / "dec")
    with pytest.raises(OnnxExportError, match="decoder model cannot be exported"):
        export_onnx(tmp_path / "dec", tmp_path / "out")
    assert not (tmp_path / "out").exists() and [p.name for p in tmp_path.iterdir()] == ["dec"]


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lsr.cli.main", "export-onnx", *args], capture_output=True,
                          text=True, timeout=300, cwd=REPO)


def test_cli_refuses_bad_input_with_one_line(tmp_path):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    r = _cli("splade-tiny", str(tmp_path / "full"))
    assert r.returncode == 2 and "not empty" in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert (tmp_path / "full" / "keep.txt").read_text() == "mine"
    r = _cli("no-such-model", str(tmp_path / "out"))
    assert r.returncode == 2 and "no-such-model" in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert not (tmp_path / "out").exists()
    r = _cli("--help")
    assert r.returncode == 0 and "(default: 4096)" in r.stdout
