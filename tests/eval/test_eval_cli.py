"""lsr-eval's argument errors as a user meets them: subprocesses, one line on stderr, exit 2."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from lsr import SparseBatch, save_vectors

DOCS = {"d1": "the cat sat on the mat", "d2": "paris is the capital of france", "d3": "fever and headache"}
QUERIES = {"q1": "cat mat", "q2": "capital of france"}
VOCAB = sorted({w for t in [*DOCS.values(), *QUERIES.values()] for w in t.split()})


def _vec(texts):
    return SparseBatch.from_dicts([{VOCAB.index(w): 1.0 for w in t.split()} for t in texts], dim=len(VOCAB))


@pytest.fixture(scope="module")
def beir(tmp_path_factory):
    """A three-document BEIR folder and its bag-of-words vectors."""
    d = tmp_path_factory.mktemp("tiny_beir")
    (d / "corpus.jsonl").write_text("".join(json.dumps({"_id": i, "title": "", "text": t}) + "\n"
                                            for i, t in DOCS.items()))
    (d / "queries.jsonl").write_text("".join(json.dumps({"_id": i, "text": t}) + "\n" for i, t in QUERIES.items()))
    (d / "qrels").mkdir()
    (d / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\nq2\td2\t1\n")
    save_vectors(d / "docs.npz", _vec(DOCS.values()), list(DOCS))
    save_vectors(d / "queries.npz", _vec(QUERIES.values()), list(QUERIES))
    return d


def _system(beir, extra=""):
    return f"vectors:{beir / 'docs.npz'},queries={beir / 'queries.npz'}{extra}"


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "lsr.eval.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=120)


def _one_line_error(proc, *needles):
    err = proc.stderr.strip()
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert "Traceback" not in err and "Exception" not in err and len(err.splitlines()) == 1, err
    assert err.startswith("lsr-eval: error: ")
    for n in needles:
        assert n in err, (n, err)


def test_k_below_one_is_refused_before_anything_starts(tmp_path):
    # bm25 on a folder that does not exist: the check on k comes first, before the dataset or the JVM
    _one_line_error(_cli("run", "--dataset", tmp_path / "nope", "--system", "bm25", "--k", "0"), "--k must be >= 1, got 0")
    _one_line_error(_cli("run", "--dataset", tmp_path / "nope", "--system", "bm25", "--k", "-3"), "got -3")


@pytest.mark.parametrize("args, needles", [
    (("--max-docs", "0"), ("--max-docs must be >= 1, got 0",)),
    (("--max-queries", "-1"), ("--max-queries must be >= 1, got -1",)),
    (("--latency-queries", "-1"), ("--latency-queries must be >= 0, got -1",)),
])
def test_other_counts_are_checked(beir, args, needles):
    _one_line_error(_cli("run", "--dataset", beir, "--system", _system(beir), *args, "--no-progress"), *needles)


def test_bad_system_options_and_paths(beir, tmp_path):
    _one_line_error(_cli("run", "--dataset", beir, "--system", _system(beir, ",k=0")), "k must be an int >= 1, got 0")
    _one_line_error(_cli("run", "--dataset", beir, "--system", _system(beir, ",batch_size=-2")),
                    "batch_size must be an int >= 1, got -2")
    _one_line_error(_cli("run", "--dataset", beir, "--system", _system(beir), "--out", tmp_path / "no" / "r.json"),
                    "no folder", str(tmp_path / "no"))
    _one_line_error(_cli("run", "--dataset", beir, "--system", _system(beir), "--out", tmp_path), "is a folder")
    _one_line_error(_cli("compare", tmp_path / "missing.json"), "missing.json")


def test_k_beyond_the_corpus_is_cut_with_a_notice(beir, tmp_path):
    out = tmp_path / "r.json"
    p = _cli("run", "--dataset", beir, "--system", _system(beir), "--k", "5000", "--measure", "R@1000",
             "--out", out, "--no-progress")
    assert p.returncode == 0, p.stderr
    assert "k=5000 is more than the 3 documents" in p.stderr and "retrieving 3" in p.stderr
    rep = json.loads(out.read_text())
    (system,) = rep["systems"]
    assert system["efficiency"]["k"] == 3 and rep["config"]["k"] == 5000
    assert system["metrics"]["R@1000"] == 1.0  # each query's judged document is in its 3 hits
    run = (tmp_path / "r.runs").glob("*.trec")
    assert all(len(line.split()) == 6 for f in run for line in f.read_text().splitlines())


def test_help_shows_defaults():
    p = _cli("run", "--help")
    assert p.returncode == 0 and "(default: 1000)" in p.stdout and "(default: test)" in p.stdout
    assert "(default: None)" not in p.stdout
