"""The evaluation protocol (eval/PROTOCOL.md): the seeded SciFact hold-out is deterministic, disjoint
from and complementary to its training side, and training and model selection refuse test splits."""

import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from lsr.data.splits import HOLDOUT_FRACTION, ProtocolError, check_selection_split, heldout_split, is_test_split
from lsr.train.config import ConfigError, load_config

ROOT = Path(__file__).resolve().parents[2]
DATA = Path(os.environ.get("LSR_DATA", ROOT.parent / "shared" / "data"))
SCIFACT = DATA / "beir" / "scifact"
needs_scifact = pytest.mark.skipif(not (SCIFACT / "qrels" / "train.tsv").exists(), reason="needs SciFact train qrels")


def _train_qids():
    from lsr.index.corpus import read_qrels

    return list(read_qrels(SCIFACT / "qrels" / "train.tsv"))


@needs_scifact
def test_heldout_is_deterministic_disjoint_and_complete():
    qids = _train_qids()
    fit, dev = heldout_split(qids)
    assert (len(qids), len(fit), len(dev)) == (809, 647, 162)  # round(0.2 * 809) = 162
    assert not set(fit) & set(dev)
    assert set(fit) | set(dev) == set(qids)
    shuffled = qids[:]
    random.Random(5).shuffle(shuffled)
    assert heldout_split(shuffled) == (fit, dev)  # input order does not matter
    assert heldout_split(qids + qids[:10]) == (fit, dev)  # nor repeated ids
    # pinned: a change to the seed, the fraction or the procedure moves the hold-out and shows here
    assert dev[:6] == ["0", "10", "1005", "1006", "1008", "1015"]
    other_fit, other_dev = heldout_split(qids, seed=1)
    assert other_dev != dev and len(other_dev) == 162


def test_heldout_sizes_and_bad_fraction():
    ids = [f"q{i}" for i in range(10)]
    assert [len(heldout_split(ids, f)[1]) for f in (0.0, 0.05, 0.2, 0.5)] == [0, 1, 2, 5]
    assert heldout_split(["only"], HOLDOUT_FRACTION) == (["only"], [])
    with pytest.raises(ValueError, match="fraction"):
        heldout_split(ids, 1.0)


@needs_scifact
def test_virtual_splits_through_load_beir():
    from lsr.data import load_beir

    fit, dev = heldout_split(_train_qids())
    d = load_beir(SCIFACT, "train-dev")
    f = load_beir(SCIFACT, "train-fit")
    assert sorted(d.qrels) == dev and sorted(f.qrels) == fit
    assert not set(d.positives()) & set(f.positives())


def test_test_split_names():
    assert all(is_test_split(s) for s in ("test", "TEST", "test-b", "test_2019"))
    assert not any(is_test_split(s) for s in ("dev", "train", "train-dev", "train-fit", "latest"))
    assert check_selection_split("train-dev", "eval") == "train-dev"
    with pytest.raises(ProtocolError, match="never read"):
        check_selection_split("test", "eval")


@pytest.mark.parametrize("override,field", [
    ('eval=[{path="x", split="test"}]', "eval.0.split"),
    ('data.train=[{path="x", split="test"}]', "data.train.0.split"),
])
def test_config_refuses_test_for_training_and_selection(override, field):
    with pytest.raises(ConfigError) as exc:
        load_config(ROOT / "configs" / "tiny-cpu.toml", [override])
    assert field in str(exc.value) and "test judgments" in str(exc.value)
    # dev splits are accepted
    ok, _ = load_config(ROOT / "configs" / "tiny-cpu.toml", [override.replace('"test"', '"train-dev"')])
    assert ok is not None


def test_every_shipped_config_passes_the_protocol():
    for cfg in sorted((ROOT / "configs").glob("*.toml")):
        c, _ = load_config(cfg)
        assert not any(is_test_split(e.split) for e in c.eval), cfg
        assert not any(d.split and is_test_split(d.split) for d in c.data.train), cfg


def test_lsr_train_cli_refuses_a_test_split(tmp_path):
    res = subprocess.run([sys.executable, "-m", "lsr.cli.train", str(ROOT / "configs" / "tiny-cpu.toml"),
                          "--set", 'eval=[{path="x", split="test"}]',
                          "--set", f'train.output_dir="{tmp_path / "out"}"'],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 2
    assert "holds test judgments" in res.stderr
    assert not (tmp_path / "out").exists()  # refused before anything was written
