"""Fixtures: a vectors-only lsr-serve process shared by a test module."""

from __future__ import annotations

import pytest
from service_harness import Server

@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A vectors-only server (no model) with fast merges."""
    srv = Server(tmp_path_factory.mktemp("srv") / "data", "--model", "none", "--merge-min-docs", "20",
                 "--merge-idle", "0.5", "--max-k", "100", "--max-body-mb", "1", "--max-text-chars", "5000")
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def client(server):
    with server.client() as c:
        yield c


@pytest.fixture(scope="module")
def anon(server):
    with server.client(None) as c:
        yield c
