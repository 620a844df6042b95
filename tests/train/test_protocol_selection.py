"""The GPU run's checkpoint selection (configs/gpu_issue17_run.py): the step with the best mean dev
nDCG@10 over the in-training evaluations, ties to the earlier step, only among steps whose model
folder exists; and the job list keeps test splits out of training and selection."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from lsr.train.config import ConfigError, load_config

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def driver():
    spec = importlib.util.spec_from_file_location("gpu_issue17_run", ROOT / "configs" / "gpu_issue17_run.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["gpu_issue17_run"] = mod
    spec.loader.exec_module(mod)
    return mod


def _run(tmp_path, evals, folders, steps=1600):
    run = tmp_path / "run"
    run.mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"train": {"steps": steps}}))
    (run / "eval.jsonl").write_text("".join(
        json.dumps({"step": s, "scifact": {"nDCG@10": a, "R@100": 0.9}, "nfcorpus": {"nDCG@10": b}}) + "\n"
        for s, a, b in evals))
    for f in folders:
        (run / f).mkdir(parents=True)
    return run


def test_selection_takes_the_best_mean_and_its_folder(driver, tmp_path):
    run = _run(tmp_path, [(400, 0.60, 0.30), (800, 0.66, 0.31), (1200, 0.70, 0.29), (1600, 0.64, 0.30)],
               ["checkpoint-400/model", "checkpoint-800/model", "checkpoint-1200/model", "final"])
    sel = driver.select_checkpoint(run)
    assert sel["chosen"]["step"] == 1200 and sel["chosen"]["model"] == str(run / "checkpoint-1200" / "model")
    assert sel["chosen"]["mean"] == pytest.approx((0.70 + 0.29) / 2)
    assert [c["step"] for c in sel["candidates"]] == [400, 800, 1200, 1600]


def test_selection_ties_go_to_the_earlier_step_and_the_last_step_is_final(driver, tmp_path):
    run = _run(tmp_path, [(400, 0.60, 0.30), (800, 0.50, 0.40), (1600, 0.70, 0.30)],
               ["checkpoint-400/model", "checkpoint-800/model", "final"])
    assert driver.select_checkpoint(run)["chosen"]["step"] == 1600
    assert driver.select_checkpoint(run)["chosen"]["model"] == str(run / "final")
    run2 = _run(tmp_path / "b", [(400, 0.60, 0.30), (800, 0.50, 0.40)], ["checkpoint-400/model", "checkpoint-800/model"])
    assert driver.select_checkpoint(run2)["chosen"]["step"] == 400


def test_selection_skips_steps_without_a_model(driver, tmp_path):
    run = _run(tmp_path, [(400, 0.60, 0.30), (800, 0.90, 0.40)], ["checkpoint-400/model"])
    sel = driver.select_checkpoint(run)
    assert sel["chosen"]["step"] == 400 and [c["exists"] for c in sel["candidates"]] == [True, False]
    assert driver.select_checkpoint(_run(tmp_path / "c", [], []))["chosen"] is None


def test_jobs_train_and_select_on_no_test_split(driver, monkeypatch):
    monkeypatch.setenv("LSR_DATA", "/data")
    for job in driver.JOBS:
        cfg, _ = load_config(ROOT / job.config, job.overrides + ['train.output_dir="x"'])
        assert all(d.split in (None, "train", "train-fit") for d in cfg.data.train), job.name
        assert all(e.split in ("dev", "train-dev") for e in cfg.eval), job.name
        assert (cfg.data.mode == "label-free") == job.name.startswith(("lf-", "abl-")), job.name
        assert bool(cfg.eval) == job.select, job.name  # only the selection job reads dev during training
    with pytest.raises(ConfigError, match="test judgments"):
        load_config(ROOT / "configs" / "xdomain-scifact-only.toml", ['data.train=[{path="x", split="test"}]'])
