"""``lsr-train`` end to end on the CPU: the tiny config trains, checkpoints, evaluates, and a run
stopped half-way then ``--resume``d ends bit-identical to an uninterrupted one."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
DATA = Path(os.environ.get("LSR_DATA", ROOT.parent / "shared" / "data"))
CONFIG = ROOT / "configs" / "tiny-cpu.toml"
MINI = DATA

pytestmark = pytest.mark.skipif(not (DATA / "beir" / "scifact").exists(), reason="needs ../shared/data")


def _cmd():
    exe = shutil.which("lsr-train")
    return [exe] if exe else [sys.executable, "-m", "lsr.cli.train"]


def _mini_scifact(root: Path) -> Path:
    """A real but small BEIR folder: SciFact's first 24 train and 8 test queries, their judged
    documents and the first 300 others (keeps BM25 and encoding cheap on 2 cores)."""
    import gzip

    src = DATA / "beir" / "scifact"
    dst = root / "beir" / "scifact"
    (dst / "qrels").mkdir(parents=True)
    keep = set()
    for split, n in (("train", 24), ("test", 8)):
        lines = (src / "qrels" / f"{split}.tsv").read_text().split("\n")
        header, rows = lines[0], [r for r in lines[1:] if r]
        qids = list(dict.fromkeys(r.split("\t")[0] for r in rows))[:n]
        rows = [r for r in rows if r.split("\t")[0] in qids]
        keep |= {r.split("\t")[1] for r in rows}
        (dst / "qrels" / f"{split}.tsv").write_text("\n".join([header] + rows) + "\n")
    out = []
    with gzip.open(src / "corpus.jsonl.gz", "rt", encoding="utf-8", newline="\n") as fh:
        for i, line in enumerate(fh):
            if i < 300 or json.loads(line)["_id"] in keep:
                out.append(line)
    (dst / "corpus.jsonl").write_text("".join(out))
    shutil.copy(src / "queries.jsonl", dst / "queries.jsonl")
    return root


def _run(out: Path, *extra):
    env = dict(os.environ, LSR_DATA=str(MINI), OMP_NUM_THREADS="2")
    args = _cmd() + [str(CONFIG), "--set", f'train.output_dir="{out}"', *extra]
    res = subprocess.run(args, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    return res


def _log(out: Path):
    return [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    global MINI
    base = tmp_path_factory.mktemp("train")
    MINI = _mini_scifact(base / "data")
    full, split = base / "full", base / "split"
    _run(full)
    _run(split, "--stop-after", "3")
    first = _log(split)
    _run(split, "--resume")
    return full, split, first


def test_trains_checkpoints_and_evaluates(runs):
    full, _, _ = runs
    log = _log(full)
    assert [r["step"] for r in log] == [1, 2, 3, 4, 5, 6]
    for key in ("loss", "ranking", "reg_doc", "lambda_doc", "nnz_q", "nnz_d", "flops", "lr"):
        assert key in log[0]
    assert log[0]["lambda_doc"] == 0.0 and log[-1]["lambda_doc"] == pytest.approx(1e-3)
    assert sorted(p.name for p in full.glob("checkpoint-*")) == ["checkpoint-3", "checkpoint-6"]
    ck = full / "checkpoint-6"
    for f in ("student.pt", "optimizer.pt", "scheduler.pt", "rng.pt", "state.json", "config.toml"):
        assert (ck / f).exists(), f
    assert json.loads((ck / "state.json").read_text())["step"] == 6
    saved = (full / "config.toml").read_text()
    assert saved.startswith(CONFIG.read_text()) and "#   train.output_dir=" in saved
    metrics = json.loads((full / "metrics.json").read_text())["scifact"]
    assert 0.0 <= metrics["nDCG@10"] <= 1.0 and metrics["nnz_d"] > 0
    assert (full / "final" / "config.json").exists()
    assert list((full / "teacher-cache").glob("teacher-scores-*.npz"))


def test_resume_is_exact(runs):
    full, split, first = runs
    assert [r["step"] for r in first] == [1, 2, 3]
    a, b = _log(full), _log(split)
    assert [r["step"] for r in b] == [1, 2, 3, 4, 5, 6]
    for ra, rb in zip(a, b):
        for k in ("loss", "ranking", "reg_doc", "nnz_d", "lr"):
            assert ra[k] == rb[k], (ra["step"], k, ra[k], rb[k])
    sa = torch.load(full / "checkpoint-6" / "student.pt")
    sb = torch.load(split / "checkpoint-6" / "student.pt")
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


def test_bad_config_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text(CONFIG.read_text().replace('ranking = "kl"', 'ranking = "bogus"'))
    res = subprocess.run(_cmd() + [str(bad)], capture_output=True, text=True, timeout=120)
    assert res.returncode == 2
    assert "loss.ranking" in res.stderr
    # a decoder-only knob on another kind is refused at load, before any data is read
    res = subprocess.run(_cmd() + [str(CONFIG), "--set", "model.logit_shift=5.0"], capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 2
    assert "logit_shift applies to kind = 'decoder' only" in res.stderr


def test_ddp_two_cpu_processes(runs, tmp_path):
    """The same config through torchrun with 2 processes (gloo on the CPU): DDP via accelerate."""
    torchrun = shutil.which("torchrun")
    if torchrun is None:
        pytest.skip("torchrun not on PATH")
    out = tmp_path / "ddp"
    env = dict(os.environ, LSR_DATA=str(MINI), OMP_NUM_THREADS="1")
    args = [torchrun, "--standalone", "--nproc_per_node", "2", "-m", "lsr.cli.train", str(CONFIG),
            "--set", f'train.output_dir="{out}"', "--set", 'train.device="cpu"', "--set", "train.steps=2",
            "--set", "eval=[]"]
    res = subprocess.run(args, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    assert [r["step"] for r in _log(out)] == [1, 2]
    assert (out / "final" / "lsr_config.json").exists()
