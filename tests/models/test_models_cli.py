"""lsr-encode as a subprocess: BEIR corpus and queries in, vectors that lsr.load_vectors reads out."""

import gzip
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lsr import load_vectors
from lsr.cli.encode import main

REPO = Path(__file__).resolve().parents[2]
DOCS = [{"_id": "d1", "title": "Cats", "text": "the cat sat on the mat"},
        {"_id": "d2", "title": "", "text": "Paris is the capital of France"},
        {"_id": "d3", "text": "fever and headache"}]


def _cli(*args, timeout=240):
    return subprocess.run([sys.executable, "-m", "lsr.cli.encode", *map(str, args)], capture_output=True, text=True,
                          cwd=REPO, timeout=timeout)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    d = tmp_path_factory.mktemp("beir")
    with gzip.open(d / "corpus.jsonl.gz", "wt", encoding="utf-8") as fh:
        fh.write("\n".join(json.dumps(r) for r in DOCS) + "\n")
    (d / "queries.jsonl").write_text('{"_id": "q1", "text": "cat on a mat"}\n\n{"_id": "q2", "text": "capital"}\n')
    return d


def test_encode_corpus_and_queries(splade_dir, corpus, tmp_path):
    r = _cli("--model", splade_dir, "--input", corpus / "corpus.jsonl.gz", "--out", tmp_path / "d.npz", "--top-k", 20,
             "--no-progress")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout.strip().splitlines()[-1])["n"] == 3
    batch, ids = load_vectors(tmp_path / "d.npz")
    assert ids == ["d1", "d2", "d3"] and batch.dim == 30522 and batch.row_nnz().max() <= 20
    assert "mat" in {batch.vocab[i] for i in batch.row(0)[0]}
    # the rest in-process: one subprocess start (torch + transformers imports) is the slow part
    assert main(["--model", str(splade_dir), "--input", str(corpus / "queries.jsonl"), "--out",
                 str(tmp_path / "q.jsonl"), "--queries", "--max-length", "8", "--no-progress"]) == 0
    qb, qids = load_vectors(tmp_path / "q.jsonl")
    assert qids == ["q1", "q2"] and len(qb) == 2
    scores = (qb.to_scipy() @ batch.with_vocab(None).to_scipy().T).toarray() if qb.dim == batch.dim else None
    if scores is not None:
        assert int(np.argmax(scores[0])) == 0


def test_bad_arguments(corpus, tmp_path, capsys):
    def run(*args):
        code = main([str(a) for a in args])
        return code, capsys.readouterr().err

    code, err = run("--model", "splade-tiny", "--input", corpus / "nope.jsonl", "--out", tmp_path / "x.npz")
    assert code == 2 and "no such file" in err and "nope.jsonl" in err
    code, err = run("--model", "splade-tiny", "--input", corpus / "queries.jsonl", "--out", tmp_path / "x.txt")
    assert code == 2 and ".npz or .jsonl" in err
    code, err = run("--model", tmp_path, "--input", corpus / "queries.jsonl", "--out", tmp_path / "x.npz")
    assert code == 2 and "cannot load model" in err
    code, err = run("--model", "splade-tiny", "--input", corpus / "queries.jsonl", "--out", tmp_path / "x.npz",
                    "--batch-size", 0)
    assert code == 2 and "--batch-size" in err
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"_id": "1", "text": "ok"}\nnot json\n')
    code, err = run("--model", "splade-tiny", "--input", bad, "--out", tmp_path / "x.npz")
    assert code == 2 and "bad.jsonl:2" in err


def _one_line_error(proc, *needles):
    """A user error: exit 2, one line on stderr naming what is wrong, no traceback."""
    err = proc.stderr.strip()
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    for n in needles:
        assert n in err, (n, err)


def test_unreadable_gzip_is_one_line(tmp_path):
    (tmp_path / "plain.jsonl.gz").write_text('{"_id": "1", "text": "not compressed"}\n')
    _one_line_error(_cli("--model", "splade-tiny", "--input", tmp_path / "plain.jsonl.gz", "--out", tmp_path / "x.npz"),
                    "plain.jsonl.gz", "not a gzip file")
    data = bytearray(gzip.compress(b'{"_id": "1", "text": "hello world"}\n' * 200))
    for i in range(20, 40):  # a damaged deflate stream: zlib.error, not an OSError
        data[i] ^= 0xFF
    (tmp_path / "damaged.jsonl.gz").write_bytes(bytes(data))
    _one_line_error(_cli("--model", "splade-tiny", "--input", tmp_path / "damaged.jsonl.gz", "--out", tmp_path / "x.npz",
                         "--queries"), "damaged.jsonl.gz", "cannot read")
    assert not (tmp_path / "x.npz").exists()


def test_cuda_device_without_cuda(corpus, tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    _one_line_error(_cli("--model", "splade-tiny", "--input", corpus / "queries.jsonl", "--out", tmp_path / "x.npz",
                         "--device", "cuda", "--queries"), "--device cuda", "CUDA is not available", "--device cpu")


def test_more_bad_arguments(corpus, tmp_path, capsys):
    def run(*args):
        code = main([str(a) for a in args])
        return code, capsys.readouterr().err

    code, err = run("--model", "splade-tiny", "--input", corpus / "queries.jsonl", "--out", tmp_path / "x.npz",
                    "--device", "banana")
    assert code == 2 and "--device 'banana' is not a device" in err
    (tmp_path / "empty.jsonl").write_text("\n")
    code, err = run("--model", "splade-tiny", "--input", tmp_path / "empty.jsonl", "--out", tmp_path / "x.npz")
    assert code == 2 and "empty.jsonl: no documents to encode" in err
    (tmp_path / "afile").write_text("x")
    code, err = run("--model", "splade-tiny", "--input", corpus / "queries.jsonl", "--out", tmp_path / "afile" / "x.npz",
                    "--queries")
    assert code == 2 and "cannot create the folder of --out" in err
    for flag in ("--top-k", "--limit", "--max-length"):
        code, err = run("--model", "splade-tiny", "--input", corpus / "queries.jsonl", "--out", tmp_path / "x.npz",
                        flag, -1)
        assert code == 2 and f"{flag} must be positive, got -1" in err


def test_help_shows_defaults():
    r = subprocess.run([sys.executable, "-m", "lsr.cli.encode", "--help"], capture_output=True, text=True, cwd=REPO,
                       timeout=120)
    assert r.returncode == 0 and "(default: 32)" in r.stdout and "(default: None)" not in r.stdout
