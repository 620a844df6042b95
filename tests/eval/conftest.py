"""Fixtures for lsr.eval tests: small BEIR folders cut from the real datasets."""

from __future__ import annotations

from pathlib import Path

import pytest

from eval_data_paths import MSMARCO, SCIFACT, make_beir_subset


@pytest.fixture(scope="session")
def scifact_small(tmp_path_factory) -> Path:
    if not SCIFACT.exists():
        pytest.skip(f"SciFact not found at {SCIFACT} (set LSR_DATA)")
    return make_beir_subset(SCIFACT, tmp_path_factory.mktemp("scifact_small"), n_queries=20, n_extra_docs=150)


@pytest.fixture(scope="session")
def scifact_small_gz(tmp_path_factory) -> Path:
    if not SCIFACT.exists():
        pytest.skip(f"SciFact not found at {SCIFACT} (set LSR_DATA)")
    return make_beir_subset(SCIFACT, tmp_path_factory.mktemp("scifact_small_gz"), n_queries=20, n_extra_docs=150,
                            gz=True)


@pytest.fixture(scope="session")
def msmarco_dir() -> Path:
    if not MSMARCO.exists():
        pytest.skip(f"msmarco-sample not found at {MSMARCO} (set LSR_DATA)")
    return MSMARCO
