"""An oversized k is refused with the limit in the message, over real HTTP: the server's --max-k
(default 1000) and the hard cap (lsr.index.base.MAX_K) that --max-k itself cannot pass."""

from __future__ import annotations

import subprocess
import sys

import pytest
from service_harness import Server

from lsr.index.base import MAX_K


@pytest.fixture(scope="module")
def default_server(tmp_path_factory):
    srv = Server(tmp_path_factory.mktemp("klimit") / "data", "--model", "none")  # the default --max-k
    srv.start()
    with srv.client() as c:
        assert c.post("/v1/collections", json={"name": "k", "model": None, "dim": 50}).status_code == 201
        docs = [{"id": f"d{i}", "vector_ids": {str(i % 49 + 1): 1.0, "0": 0.5}} for i in range(30)]
        assert c.post("/v1/collections/k/documents", json={"documents": docs}).status_code == 200
    yield srv
    srv.stop()


@pytest.mark.parametrize("route,body", [
    ("search", {"vector_ids": {"0": 1.0}}),
    ("search/batch", {"queries": [{"vector_ids": {"0": 1.0}}, {"vector_ids": {"3": 1.0}}]}),
])
def test_oversized_k_is_422_with_the_limit(default_server, route, body):
    with default_server.client(None) as c:
        r = c.post(f"/v1/collections/k/{route}", json={**body, "k": 1000})
        assert r.status_code == 200  # the default limit itself is fine (30 documents: 30 hits)
        hits = r.json()["hits"] if route == "search" else r.json()["results"][0]["hits"]
        assert len(hits) == 30
        r = c.post(f"/v1/collections/k/{route}", json={**body, "k": 1001})
        assert r.status_code == 422 and "exceeds the limit of 1000" in r.json()["detail"], r.text
        r = c.post(f"/v1/collections/k/{route}", json={**body, "k": 100_000})
        assert r.status_code == 422 and str(MAX_K) in r.json()["detail"] and "k" in r.json()["detail"], r.text


def test_max_k_beyond_the_hard_cap_is_refused(tmp_path):
    r = subprocess.run([sys.executable, "-m", "lsr.cli.main", "serve", "--data", str(tmp_path / "d"), "--model", "none",
                        "--max-k", str(MAX_K + 1)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stderr.count("\n") == 1
    assert f"--max-k must be between 1 and {MAX_K}, got {MAX_K + 1}" in r.stderr
    assert not (tmp_path / "d").exists()  # refused before anything was written
