"""lsr-index as a user runs it: build -> search -> info, in subprocesses."""

from __future__ import annotations

import subprocess
import sys

import numpy as np

from lsr import save_vectors


def run(*args, ok=True):
    proc = subprocess.run([sys.executable, "-m", "lsr.index.cli", *map(str, args)], capture_output=True, text=True, timeout=300)
    if ok:
        assert proc.returncode == 0, proc.stderr
    return proc


def test_build_search_info(tmp_path, synth):
    docs, queries = synth
    vocab = [f"tok{i}" for i in range(docs.dim)]
    save_vectors(tmp_path / "docs.jsonl", docs[:500].with_vocab(vocab), ids=[f"D{i}" for i in range(500)])
    save_vectors(tmp_path / "queries.jsonl", queries[:5].with_vocab(vocab), ids=[f"Q{i}" for i in range(5)])
    save_vectors(tmp_path / "docs.npz", docs[:500])
    save_vectors(tmp_path / "queries.npz", queries[:5])

    out = run("build", tmp_path / "docs.jsonl", tmp_path / "idx", "-q").stdout
    assert "500 documents" in out
    run("search", tmp_path / "idx", tmp_path / "queries.jsonl", "--out", tmp_path / "run.trec", "--k", "5", "-q")
    lines = (tmp_path / "run.trec").read_text().splitlines()
    assert lines and len(lines) <= 25
    qid, q0, doc, rank, score, name = lines[0].split()
    assert (qid, q0, rank, name) == ("Q0", "Q0", "1", "lsr") and doc.startswith("D") and float(score) > 0
    # a token the index has never seen cannot match: it is dropped (and counted), not an error
    with open(tmp_path / "queries.jsonl", "a", encoding="utf-8") as fh:
        fh.write('{"id": "Qx", "vector": {"never-seen": 1.0, "tok5": 0.5}}\n')
    p = run("search", tmp_path / "idx", tmp_path / "queries.jsonl", "--out", tmp_path / "run2.trec", "--k", "5", "-q")
    assert "tokens outside the vocabulary" in p.stderr
    info = run("info", tmp_path / "idx").stdout
    assert "seismic index" in info and "500" in info

    run("build", tmp_path / "docs.npz", tmp_path / "ex", "--kind", "exact", "-q")
    run("search", tmp_path / "ex", tmp_path / "queries.npz", "--out", tmp_path / "ex.trec", "--k", "3", "-q")
    ex = [line.split() for line in (tmp_path / "ex.trec").read_text().splitlines()]
    S = queries[:5].to_dense() @ docs[:500].to_dense().T
    assert [int(r[2]) for r in ex if r[0] == "0"] == np.argsort(-S[0], kind="stable")[:3].tolist()

    bad = run("info", tmp_path / "missing", ok=False)
    assert bad.returncode == 2 and "no such index folder" in bad.stderr
