"""Every lsr command line, as a user runs it: --help shows each option's default, and an oversized
k is refused in one line with the limit (exit 2) before anything loads."""

from __future__ import annotations

import subprocess
import sys

import pytest

from lsr.index.base import MAX_K

PY = [sys.executable, "-m"]


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*PY, *args], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("cmd,default", [
    (("lsr.cli.main", "serve"), "(default: 1000)"),            # --max-k
    (("lsr.cli.main", "ingest"), "(default: 300.0)"),          # --timeout
    (("lsr.cli.main", "repair"), "(default: "),                # --data
    (("lsr.cli.main", "export"), "(default: 100.0)"),          # --scale
    (("lsr.cli.main", "index", "build"), "(default: 3500)"),   # --n-postings
    (("lsr.cli.main", "index", "search"), "(default: 10)"),    # --k
    (("lsr.cli.main", "encode"), "(default: 32)"),             # --batch-size
    (("lsr.cli.main", "train"), "(default: INFO)"),            # --log-level
    (("lsr.cli.main", "eval", "run"), "(default: 1000)"),      # --k
    (("lsr.train.baselines",), "(default: 128)"),              # --batch-size
])
def test_help_shows_defaults(cmd, default):
    r = _run(*cmd, "--help")
    assert r.returncode == 0, r.stderr
    assert default in r.stdout, r.stdout
    assert "(default: None)" not in r.stdout and "(default: False)" not in r.stdout


@pytest.mark.parametrize("args,message", [
    (("lsr.cli.main", "index", "search", "idx", "q.jsonl", "--out", "run.trec", "--k", "100000"),
     f"lsr-index: error: --k 100000 exceeds the limit of {MAX_K}"),
    (("lsr.cli.main", "eval", "run", "--dataset", "nowhere", "--system", "bm25", "--k", "100000"),
     f"lsr-eval: error: --k 100000 exceeds the limit of {MAX_K}"),
    (("lsr.cli.main", "eval", "run", "--dataset", "nowhere", "--system", "bm25,k=100000"),
     f"k=100000 exceeds the limit of {MAX_K}"),
])
def test_oversized_k_is_one_line_exit_2(args, message, tmp_path):
    r = subprocess.run([*PY, *args], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and message in r.stderr, r.stderr
    assert not list(tmp_path.iterdir())  # nothing written
