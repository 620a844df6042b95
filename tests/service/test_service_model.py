"""The service with the real SPLADE-tiny: documents and queries by text, encode, explain by token."""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import pytest
from service_harness import Server

SCIFACT = Path(os.environ["LSR_DATA"]) / "beir" / "scifact"  # set by tests/conftest.py


def _splade_available() -> bool:
    try:
        from lsr.models.hub import model_path

        return Path(model_path("splade-tiny")).is_dir()
    except Exception:
        return False


pytestmark = pytest.mark.skipif(not _splade_available(), reason="SPLADE-tiny is not in the lsr model cache")


@pytest.fixture(scope="module")
def model_server(tmp_path_factory):
    srv = Server(tmp_path_factory.mktemp("model") / "data", "--merge-min-docs", "1000", "--merge-idle", "3600")
    srv.start()  # default model: splade-tiny, loaded lazily on the first text request
    yield srv
    srv.stop()


def _corpus(n=24):
    out = []
    with gzip.open(SCIFACT / "corpus.jsonl.gz", "rt", encoding="utf-8") as fh:
        for line in fh:
            rec = json.loads(line)
            out.append({"id": rec["_id"], "text": f"{rec['title']}. {rec['text']}"[:1200],
                        "metadata": {"title": rec["title"]}})
            if len(out) == n:
                return out
    return out


@pytest.mark.timeout(240)
def test_text_round_trip(model_server):
    docs = _corpus()
    with model_server.client() as c:
        r = c.post("/v1/collections", json={"name": "sci"})
        assert r.status_code == 201, r.text
        assert r.json()["model"] == "splade-tiny" and r.json()["dim"] == 30522
        r = c.post("/v1/collections/sci/documents", json={"documents": docs})
        assert r.status_code == 200, r.text
        # a document's own title must find it first
        target = docs[7]
        r = c.post("/v1/collections/sci/search", json={"text": target["metadata"]["title"], "k": 3, "explain": True})
        assert r.status_code == 200, r.text
        hits = r.json()["hits"]
        assert hits[0]["id"] == target["id"]
        ex = hits[0]["explanation"]
        assert sum(t["contribution"] for t in ex["terms"]) == pytest.approx(hits[0]["score"], rel=1e-6)
        assert all(t["term"] and not t["term"].isdigit() for t in ex["terms"][:3])  # real word pieces
        # encode gives {token: weight}, and searching with it equals searching with the text
        enc = c.post("/v1/encode", json={"texts": [target["metadata"]["title"]]})
        assert enc.status_code == 200, enc.text
        vec = enc.json()["vectors"][0]
        assert vec and all(isinstance(w, float) and w > 0 for w in vec.values())
        r2 = c.post("/v1/collections/sci/search", json={"vector": vec, "k": 3}).json()["hits"]
        assert [h["id"] for h in r2] == [h["id"] for h in hits]
        assert c.post("/v1/encode", json={"texts": ["x"], "model": "other"}).status_code == 422
        top = c.post("/v1/encode", json={"texts": ["the cat sat on the mat"], "top_k": 3, "kind": "document"})
        assert len(top.json()["vectors"][0]) == 3
        bad = c.post("/v1/collections/sci/search", json={"vector": {"notatoken##xyz": 1.0}})
        assert bad.status_code == 422 and "vocabulary" in bad.json()["detail"]
        # merge into a Seismic segment: the text search still finds the document
        assert c.post("/v1/collections/sci/merge").json()["merged"] is True
        r3 = c.post("/v1/collections/sci/search", json={"text": target["metadata"]["title"], "k": 3}).json()
        assert r3["hits"][0]["id"] == target["id"]
