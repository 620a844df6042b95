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


def _one_line_error(proc, *needles):
    """A user error: exit 2, one line on stderr naming what is wrong, no traceback."""
    err = proc.stderr.strip()
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    assert err.startswith("lsr-index: error: ")
    for n in needles:
        assert n in err, (n, err)


def test_bad_arguments_fail_before_work(tmp_path, small_random):
    docs, queries = small_random
    save_vectors(tmp_path / "docs.npz", docs[:200])
    save_vectors(tmp_path / "q.npz", queries[:3])
    run("build", tmp_path / "docs.npz", tmp_path / "idx", "--kind", "exact", "-q")
    search = ("search", tmp_path / "idx", tmp_path / "q.npz", "--out", tmp_path / "run.trec", "-q")
    for extra, needles in [
        (("--k", "0"), ("--k must be >= 1, got 0",)),
        (("--batch-size", "-5"), ("--batch-size must be >= 1, got -5",)),
        (("--query-cut", "0"), ("--query-cut", "got 0")),
        (("--heap-factor", "1.5"), ("--heap-factor", "(0, 1]")),
        (("--threads", "0"), ("--threads", "got 0")),
    ]:
        _one_line_error(run(*search, *extra, ok=False), *needles)
    assert not (tmp_path / "run.trec").exists()  # nothing was started
    _one_line_error(run("search", tmp_path / "idx", tmp_path / "nope.npz", "--out", tmp_path / "r", "-q", ok=False),
                    "no such queries file", "nope.npz")
    _one_line_error(run("search", tmp_path / "idx", tmp_path / "q.npz", "--out", tmp_path / "no" / "r", "-q", ok=False),
                    "no folder", str(tmp_path / "no"))
    _one_line_error(run("build", tmp_path / "nope.npz", tmp_path / "i2", "-q", ok=False), "no such vectors file")
    (tmp_path / "afile").write_text("x")
    _one_line_error(run("build", tmp_path / "docs.npz", tmp_path / "afile", "-q", ok=False), "not a folder")
    for flag, value in [("--n-postings", "0"), ("--doc-cut", "0"), ("--nknn", "-1"), ("--summary-energy", "0"),
                        ("--centroid-fraction", "2"), ("--max-fraction", "0.5"), ("--min-cluster-size", "0")]:
        _one_line_error(run("build", tmp_path / "docs.npz", tmp_path / "i3", flag, value, "-q", ok=False), flag)
    assert not (tmp_path / "i3").exists()


def test_help_shows_defaults():
    out = run("search", "--help").stdout
    assert "(default: 10)" in out and "(default: 1000)" in out  # --k, --batch-size
    assert "(default: None)" not in out
    assert "(default: 3500)" in run("build", "--help").stdout
