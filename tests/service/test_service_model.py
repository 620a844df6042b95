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


needs_splade = pytest.mark.skipif(not _splade_available(), reason="SPLADE-tiny is not in the lsr model cache")


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


@needs_splade
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


INFERENCE_FREE = Path(__file__).resolve().parents[2] / "models" / "inference-free-splade-tiny-scifact-nfcorpus"


@pytest.mark.timeout(240)
def test_inference_free_text_search_without_torch(tmp_path):
    """An inference-free collection answers text queries from the weight table: torch is never imported."""
    from lsr.models.inference_free import IdfQueryEncoder

    table = IdfQueryEncoder.load(INFERENCE_FREE)  # the same table, here only to make document vectors
    docs = _corpus(30)
    vecs = table.encode_queries([d["text"] for d in docs])  # IDF-weighted word pieces: any vectors will do
    body = [{"id": d["id"], "text": d["text"], "vector_ids": {str(int(t)): float(w) for t, w in zip(*vecs.row(i))}}
            for i, d in enumerate(docs)]
    srv = Server(tmp_path / "data", "--model", str(INFERENCE_FREE)).start()
    try:
        with srv.client() as c:
            assert c.post("/v1/collections", json={"name": "if"}).status_code == 201
            assert c.post("/v1/collections/if/documents", json={"documents": body}).status_code == 200
            title = docs[4]["metadata"]["title"]
            r = c.post("/v1/collections/if/search", json={"text": title, "k": 3, "explain": True})
            assert r.status_code == 200, r.text
            assert r.json()["hits"][0]["id"] == docs[4]["id"]
            r = c.post("/v1/collections/if/search/batch", json={"queries": [{"text": title}, {"text": "fever"}]})
            assert r.status_code == 200 and len(r.json()["results"]) == 2
            enc = c.post("/v1/encode", json={"texts": ["what causes fever"]})
            assert enc.status_code == 200 and "fever" in enc.json()["vectors"][0]
            for text in ["", "   \n\t", "\U0001F600\U0001F389", "[SEP] [CLS]"]:
                r = c.post("/v1/collections/if/search", json={"text": text})
                assert r.status_code == 422, (text, r.text)
                assert "empty" in r.json()["detail"] or "no terms" in r.json()["detail"], r.text
            r = c.post("/v1/collections/if/search/batch", json={"queries": [{"text": "fever"}, {"text": "\U0001F600"}]})
            assert r.status_code == 422 and "queries[1]" in r.json()["detail"]
            metrics = c.get("/metrics").text
            assert "lsr_torch_loaded 0.0" in metrics, [ln for ln in metrics.splitlines() if "torch" in ln]
    finally:
        srv.stop()


def test_query_batcher_joins_concurrent_requests_and_bounds_its_queue():
    import threading

    from lsr.index.sparse import SparseBatch
    from lsr.service.encoders import EncoderBusy, QueryBatcher

    calls: list[int] = []
    entered, gate = threading.Event(), threading.Event()

    def encode(texts):  # row i holds term len(text) with weight 1
        calls.append(len(texts))
        entered.set()
        gate.wait(10)
        return SparseBatch.from_dicts([{len(t): 1.0} for t in texts], dim=100)

    b = QueryBatcher(encode, max_batch=64, max_wait_ms=1, max_queue=6)
    plug = b.submit(["plug"])
    assert entered.wait(10)  # the batcher is busy with the plug: the next requests queue up
    futs = [b.submit(["x" * (i + 1)] * (1 + i % 2)) for i in range(6)]
    with pytest.raises(EncoderBusy):
        b.submit(["overflow"])
    gate.set()
    assert plug.result(10).row(0)[0].tolist() == [4]
    for i, f in enumerate(futs):
        rows = f.result(10)
        assert len(rows) == 1 + i % 2 and all(rows.row(j)[0].tolist() == [i + 1] for j in range(len(rows)))
    assert calls == [1, 9], calls  # the six queued requests (nine texts) share one forward pass
    b.close()
