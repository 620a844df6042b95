"""notebooks/quickstart.ipynb runs top to bottom (nbclient, the venv's python3 kernel)."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

from eval_data_paths import DATA, SCIFACT

NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "quickstart.ipynb"


def test_quickstart_notebook_runs(monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    pytest.importorskip("matplotlib")
    if importlib.util.find_spec("torch") is None or importlib.util.find_spec("transformers") is None:
        pytest.skip("the notebook encodes with SPLADE-tiny: needs torch and transformers")
    if not SCIFACT.exists():
        pytest.skip(f"SciFact not found at {SCIFACT} (set LSR_DATA)")
    monkeypatch.setenv("LSR_DATA", str(DATA))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    # CI's 2 busy cores encode ~2-10 docs/s: a smaller slice than the notebook's default 200
    monkeypatch.setenv("QUICKSTART_DOCS", os.environ.get("QUICKSTART_DOCS", "120"))
    monkeypatch.setenv("QUICKSTART_QUERIES", os.environ.get("QUICKSTART_QUERIES", "20"))
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                                     resources={"metadata": {"path": str(NOTEBOOK.parent)}})
    client.execute()
    text = "\n".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "nDCG@10" in text and "recall@10" in text
    images = [o for c in nb.cells for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
    assert images, "the latency/recall plot was not rendered"
