"""Every route and error code of the API over real HTTP, on a vectors-only collection."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

DIM = 200


def _docs(n, start=0, rng=None):
    rng = rng or np.random.default_rng(start)
    out = []
    for i in range(start, start + n):
        terms = rng.choice(DIM - 1, size=8, replace=False) + 1
        vec = {str(int(t)): round(float(w), 4) for t, w in zip(terms, rng.uniform(0.1, 2.0, 8))}
        out.append({"id": f"d{i}", "text": f"document {i}", "vector_ids": vec, "metadata": {"n": i}})
    return out


@pytest.fixture(scope="module")
def coll(client):
    r = client.post("/v1/collections", json={"name": "api", "model": None, "dim": DIM})
    assert r.status_code == 201, r.text
    docs = _docs(60)
    r = client.post("/v1/collections/api/documents", json={"documents": docs})
    assert r.status_code == 200, r.text
    assert r.json()["upserted"] == 60
    return {"name": "api", "docs": {d["id"]: d for d in docs}}


def _exact_scores(query: dict, docs: dict) -> dict:
    out = {}
    for did, d in docs.items():
        s = sum(w * d["vector_ids"].get(t, 0.0) for t, w in query.items())
        if s > 0:
            out[did] = s
    return out


def test_health_ready_metrics(anon, coll):
    assert anon.get("/health").json()["status"] == "ok"
    r = anon.get("/ready")
    assert r.status_code == 200 and r.json()["status"] == "ready"
    anon.post("/v1/collections/api/search", json={"vector_ids": {"5": 1.0}})
    m = anon.get("/metrics")
    assert m.status_code == 200
    text = m.text
    assert 'lsr_requests_total{method="POST",route="/v1/collections/{name}/search",status="200"}' in text
    assert "lsr_request_duration_seconds_bucket" in text
    assert 'lsr_collection_documents{collection="api"} 60.0' in text
    assert 'lsr_collection_bytes{collection="api"}' in text


def test_openapi_and_docs(anon):
    spec = anon.get("/openapi.json").json()
    assert "/v1/collections/{name}/search" in spec["paths"]
    assert anon.get("/docs").status_code == 200


def test_collections_list_describe(anon, coll):
    names = [c["name"] for c in anon.get("/v1/collections").json()["collections"]]
    assert "api" in names
    info = anon.get("/v1/collections/api").json()
    assert info["documents"] == 60 and info["dim"] == DIM and info["model"] is None


def test_collection_errors(client, anon):
    assert client.post("/v1/collections", json={"name": "api", "model": None, "dim": DIM}).status_code == 409
    for bad in ["../etc", "a/b", "-x", "x" * 65, "", ".hidden"]:
        r = client.post("/v1/collections", json={"name": bad, "model": None, "dim": 5})
        assert r.status_code == 422, (bad, r.text)
        assert r.json()["error"] == "validation_error"
    r = client.post("/v1/collections", json={"name": "nodim", "model": None})
    assert r.status_code == 422 and "dim" in r.json()["detail"]
    r = client.post("/v1/collections", json={"name": "x1", "model": None, "dim": 5, "bogus": 1})
    assert r.status_code == 422
    r = client.post("/v1/collections", json={"name": "x2", "model": "no-such-model-anywhere"})
    assert r.status_code == 422 and r.json()["error"] == "model_unavailable"
    assert anon.get("/v1/collections/missing").status_code == 404
    assert anon.get("/v1/collections/..%2F..%2Fetc").status_code in (404, 422)
    assert client.delete("/v1/collections/missing").status_code == 404
    r = client.post("/v1/collections", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 422


def test_create_delete_collection(client, anon):
    r = client.post("/v1/collections", json={"name": "tmp-1", "model": None, "dim": 10,
                                             "index": {"n_postings": 100, "summary_energy": 0.5}})
    assert r.status_code == 201 and r.json()["index"] == {"n_postings": 100, "summary_energy": 0.5}
    assert client.delete("/v1/collections/tmp-1").json() == {"deleted": "tmp-1"}
    assert anon.get("/v1/collections/tmp-1").status_code == 404
    r = client.post("/v1/collections", json={"name": "tmp-1", "model": None, "dim": 10})
    assert r.status_code == 201 and r.json()["documents"] == 0
    client.delete("/v1/collections/tmp-1")


def test_auth(anon, server, coll):
    body = {"documents": _docs(1, 1000)}
    with server.client("wrong-key") as wrong:
        for method, path, kw in [
            ("post", "/v1/collections", {"json": {"name": "z", "model": None, "dim": 3}}),
            ("delete", "/v1/collections/api", {}),
            ("post", "/v1/collections/api/documents", {"json": body}),
            ("delete", "/v1/collections/api/documents/d1", {}),
            ("post", "/v1/collections/api/documents/delete", {"json": {"ids": ["d1"]}}),
            ("post", "/v1/collections/api/merge", {}),
        ]:
            r = getattr(anon, method)(path, **kw)
            assert r.status_code == 401, (path, r.text)
            assert "API key" in r.json()["detail"]
            r = getattr(wrong, method)(path, **kw)
            assert r.status_code == 403, (path, r.text)
    # Bearer form is accepted too; reads are open by default.
    import httpx

    r = httpx.post(server.url + "/v1/collections/api/merge",
                   headers={"authorization": "Bearer test-key-0123456789"}, timeout=180)
    assert r.status_code == 200
    assert anon.get("/v1/collections/api/documents/d1").status_code == 200


def test_search_matches_exact_and_explain_sums(anon, coll):
    rng = np.random.default_rng(7)
    found = wanted = 0
    for _ in range(5):
        terms = rng.choice(DIM - 1, size=6, replace=False) + 1
        q = {str(int(t)): float(w) for t, w in zip(terms, rng.uniform(0.2, 1.5, 6))}
        want = _exact_scores(q, coll["docs"])
        r = anon.post("/v1/collections/api/search", json={"vector_ids": q, "k": 5, "explain": True})
        assert r.status_code == 200, r.text
        hits = r.json()["hits"]
        top = sorted(want.items(), key=lambda kv: -kv[1])[:5]
        # sealed segments are Seismic (approximate): hits are a high-recall subset, ordered by exact score
        found += len({h["id"] for h in hits} & {d for d, _ in top})
        wanted += len(top)
        assert [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)
        for h in hits:
            ex = h["explanation"]
            assert sum(t["contribution"] for t in ex["terms"]) == pytest.approx(h["score"], rel=1e-6)
            assert ex["score"] == pytest.approx(want[h["id"]], rel=1e-5)
            for t in ex["terms"]:
                assert t["contribution"] == pytest.approx(t["query_weight"] * t["doc_weight"], rel=1e-6)
            assert h["metadata"] == {"n": int(h["id"][1:])}
            assert h["text"] == f"document {h['id'][1:]}"
    assert found / wanted >= 0.7


def test_fresh_segment_is_exact(client, anon):
    client.post("/v1/collections", json={"name": "fresh", "model": None, "dim": DIM})
    docs = {d["id"]: d for d in _docs(15, 0, np.random.default_rng(3))}
    client.post("/v1/collections/fresh/documents", json={"documents": list(docs.values())})
    q = {"3": 1.0, "40": 0.5, "77": 0.8, "120": 1.2}
    want = sorted(_exact_scores(q, docs).items(), key=lambda kv: (-kv[1], kv[0]))[:5]
    hits = anon.post("/v1/collections/fresh/search", json={"vector_ids": q, "k": 5, "explain": True}).json()["hits"]
    # merge-idle is 0.5 s, so these may already be sealed; with 15 documents either path is exact here
    assert [h["id"] for h in hits] == [d for d, _ in want]
    assert [h["score"] for h in hits] == pytest.approx([s for _, s in want], rel=1e-5)
    client.delete("/v1/collections/fresh")


def test_search_options_and_batch(anon, coll):
    q = {"vector_ids": {"5": 1.0, "9": 0.5}}
    r = anon.post("/v1/collections/api/search", json={**q, "k": 3, "include_text": False,
                                                     "query_cut": 5, "heap_factor": 0.9})
    assert r.status_code == 200
    assert all(h["text"] is None for h in r.json()["hits"]) and len(r.json()["hits"]) <= 3
    r = anon.post("/v1/collections/api/search", json={"vector": {"5": 1.0, "9": 0.5}, "k": 3})
    assert r.status_code == 200  # token keys are term ids on a collection without a vocabulary
    r = anon.post("/v1/collections/api/search/batch",
                  json={"queries": [q, {"vector_ids": {"7": 1.0}}, {"vector_ids": {}}], "k": 4, "explain": True})
    assert r.status_code == 200, r.text
    res = r.json()["results"]
    assert len(res) == 3 and res[2]["hits"] == []
    single = anon.post("/v1/collections/api/search", json={**q, "k": 4}).json()["hits"]
    assert [h["id"] for h in res[0]["hits"]] == [h["id"] for h in single]


@pytest.mark.parametrize("body,fragment", [
    ({"vector_ids": {"5": 1.0}, "k": 0}, "k"),
    ({"vector_ids": {"5": 1.0}, "k": 101}, "limit of 100"),
    ({"vector_ids": {"5": -1.0}}, "greater than 0"),
    ({"vector_ids": {"5": 0}}, "greater than 0"),
    ({"vector_ids": {"5": 1e300}}, "less than or equal"),
    ({"vector_ids": {"18446744073709551616": 1.0}}, "vector_ids"),
    ({"vector_ids": {"2147483648": 1.0}}, "vector_ids"),
    ({"vector": {"99999999999999999999999": 1.0}}, "no model vocabulary"),
    ({"text": "   "}, "empty"),
    ({"text": "\ud800 lone"}, "surrogate"),
    ({"vector_ids": {"500": 1.0}}, "outside the vocabulary"),
    ({"vector_ids": {"abc": 1.0}}, "vector_ids"),
    ({"vector": {"hello": 1.0}}, "no model vocabulary"),
    ({"vector_ids": {"5": 1.0}, "vector": {"5": 1.0}}, "not both"),
    ({}, "give text, vector or vector_ids"),
    ({"text": "hello"}, "has no model"),
    ({"text": "x" * 6000}, "limit 5000"),
    ({"vector_ids": {"5": 1.0}, "heap_factor": 0}, "heap_factor"),
    ({"vector_ids": {"5": 1.0}, "heap_factor": 1.5}, "heap_factor"),
    ({"vector_ids": {"5": 1.0}, "unknown": 1}, "unknown"),
    ({"vector_ids": {"5": "NaN"}}, "vector_ids"),
])
def test_search_errors(anon, coll, body, fragment):
    # json.dumps escapes a lone surrogate as \\ud800, as a client in another language may send it
    r = anon.post("/v1/collections/api/search", content=json.dumps(body), headers={"content-type": "application/json"})
    assert r.status_code == 422, r.text
    assert fragment in r.json()["detail"], r.json()


def test_search_unknown_collection_and_bad_json(anon):
    assert anon.post("/v1/collections/nope/search", json={"vector_ids": {"1": 1}}).status_code == 404
    r = anon.post("/v1/collections/api/search", content=b'{"k": ', headers={"content-type": "application/json"})
    assert r.status_code == 422 and r.json()["error"] == "validation_error"
    r = anon.post("/v1/collections/api/search/batch", json={"queries": []})
    assert r.status_code == 422


def test_body_limit(anon, client, coll):
    big = {"documents": [{"id": "big", "text": "x" * 4000, "vector_ids": {"1": 1.0}}] * 300}
    r = client.post("/v1/collections/api/documents", json=big)
    assert r.status_code == 413 and r.json()["error"] == "body_too_large"


def test_documents_crud(client, anon, coll):
    r = client.post("/v1/collections/api/documents", json={"documents": [
        {"id": "new1", "text": "fresh doc", "vector_ids": {"150": 3.0}, "metadata": {"tag": "a"}},
        {"id": 42, "vector": {"151": 1.0}},
    ]})
    assert r.status_code == 200 and r.json()["ids"] == ["new1", "42"]
    hits = anon.post("/v1/collections/api/search", json={"vector_ids": {"150": 1.0}}).json()["hits"]
    assert hits[0]["id"] == "new1" and hits[0]["metadata"] == {"tag": "a"}
    doc = anon.get("/v1/collections/api/documents/new1", params={"vector": True}).json()
    assert doc == {"id": "new1", "text": "fresh doc", "metadata": {"tag": "a"}, "vector": {"150": 3.0}}
    # replace: the old vector is gone
    client.post("/v1/collections/api/documents", json={"documents": [{"id": "new1", "vector_ids": {"152": 1.0}}]})
    hits = anon.post("/v1/collections/api/search", json={"vector_ids": {"150": 1.0}}).json()["hits"]
    assert "new1" not in [h["id"] for h in hits]
    assert anon.get("/v1/collections/api/documents/new1").json()["text"] is None
    # single and batch delete
    assert client.delete("/v1/collections/api/documents/new1").json() == {"deleted": ["new1"], "not_found": []}
    assert client.delete("/v1/collections/api/documents/new1").status_code == 404
    assert anon.get("/v1/collections/api/documents/new1").status_code == 404
    r = client.post("/v1/collections/api/documents/delete", json={"ids": ["42", "nope"]})
    assert r.json() == {"deleted": ["42"], "not_found": ["nope"]}
    assert anon.get("/v1/collections/nope/documents/x").status_code == 404


@pytest.mark.parametrize("doc,fragment", [
    ({"id": "a"}, "give text, vector or vector_ids"),
    ({"id": "a", "text": "no model here"}, "has no model"),
    ({"id": "", "vector_ids": {"1": 1}}, "id"),
    ({"id": "a", "vector_ids": {"9999": 1}}, "outside the vocabulary"),
    ({"id": "a", "vector_ids": {"1": 1}, "metadata": {"m": "x" * 70000}}, "metadata"),
    ({"id": "a", "vector_ids": {"1": 1}, "metadata": [1, 2]}, "metadata"),
    ({"id": "a", "vector_ids": {"1": 1}, "text": "y" * 5001}, "limit 5000"),
])
def test_document_errors(client, coll, doc, fragment):
    r = client.post("/v1/collections/api/documents", json={"documents": [doc]})
    assert r.status_code == 422, r.text
    assert fragment in r.json()["detail"]


def test_document_batch_errors(client, coll):
    r = client.post("/v1/collections/api/documents", json={"documents": []})
    assert r.status_code == 422
    r = client.post("/v1/collections/api/documents", json={"documents": [
        {"id": "dup", "vector_ids": {"1": 1}}, {"id": "dup", "vector_ids": {"2": 1}}]})
    assert r.status_code == 422 and "repeats" in r.json()["detail"]
    r = client.post("/v1/collections/api/documents/delete", json={"ids": []})
    assert r.status_code == 422


def test_encode_without_model(anon):
    r = anon.post("/v1/encode", json={"texts": ["hello"]})
    assert r.status_code == 422 and r.json()["error"] == "no_model"
    assert anon.post("/v1/encode", json={"texts": []}).status_code == 422


def test_unknown_route_and_method(anon):
    r = anon.get("/v1/nothing")
    assert r.status_code == 404 and r.json()["error"] == "not_found"
    r = anon.put("/v1/collections")
    assert r.status_code == 405


def test_merge_keeps_results_and_restart(server, client, anon, coll):
    q = {"vector_ids": {"5": 1.0, "17": 0.7, "33": 0.4}, "k": 10}
    before = anon.post("/v1/collections/api/search", json=q).json()["hits"]
    r = client.post("/v1/collections/api/merge", params={"compact": True})
    assert r.status_code == 200
    info = r.json()["collection"]
    assert info["fresh_documents"] == 0 and len(info["segments"]) == 1
    after = anon.post("/v1/collections/api/search", json=q).json()["hits"]
    assert [(h["id"], round(h["score"], 4)) for h in after] == [(h["id"], round(h["score"], 4)) for h in before]
    # writes after the merge, then a clean restart: everything is back
    client.post("/v1/collections/api/documents", json={"documents": _docs(5, 500)})
    client.delete("/v1/collections/api/documents/d3")
    n = anon.get("/v1/collections/api").json()["documents"]
    server.stop()
    server.start()
    assert anon.get("/v1/collections/api").json()["documents"] == n
    assert anon.get("/v1/collections/api/documents/d3").status_code == 404
    assert anon.get("/v1/collections/api/documents/d502").json()["metadata"] == {"n": 502}


def test_background_merge(client, anon, coll):
    # merge-min-docs is 20 and merge-idle 0.5 s in this server: fresh writes get sealed on their own
    client.post("/v1/collections/api/documents", json={"documents": _docs(25, 700)})
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if anon.get("/v1/collections/api").json()["fresh_documents"] == 0:
            break
        time.sleep(0.2)
    assert anon.get("/v1/collections/api").json()["fresh_documents"] == 0
    assert anon.get("/v1/collections/api/documents/d710").status_code == 200


def test_concurrent_writes_searches_and_delete(server, client):
    """Searches never fail while writes, background merges and a collection delete go on."""
    import threading

    import httpx

    client.post("/v1/collections", json={"name": "conc", "model": None, "dim": DIM})
    statuses: list[int] = []
    stop = time.monotonic() + 4
    lock = threading.Lock()

    def writer(w):
        with server.client() as c:
            i = 0
            while time.monotonic() < stop:
                r = c.post("/v1/collections/conc/documents", json={"documents": _docs(5, 10_000 * w + i)})
                with lock:
                    statuses.append(r.status_code)
                i += 5

    def searcher(s):
        with server.client(None) as c:
            rng = np.random.default_rng(s)
            while time.monotonic() < stop + 1:
                q = {str(int(t)): 1.0 for t in rng.choice(DIM - 1, 4, replace=False) + 1}
                try:
                    r = c.post("/v1/collections/conc/search", json={"vector_ids": q, "k": 5, "explain": True})
                except httpx.HTTPError:
                    continue
                with lock:
                    statuses.append(r.status_code)

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(2)]
    threads += [threading.Thread(target=searcher, args=(s,)) for s in range(2)]
    for t in threads:
        t.start()
    time.sleep(4.2)
    assert client.delete("/v1/collections/conc").status_code == 200  # searches still running
    for t in threads:
        t.join(60)
    assert statuses and all(s in (200, 404) for s in statuses), sorted(set(statuses))
    assert statuses.count(200) > 20


def test_document_ids_with_slashes_round_trip(client, anon, coll):
    from urllib.parse import quote

    ids = ["a/b", "/lead", "x/../y", "50%/off", "tail/", "sp ace"]
    r = client.post("/v1/collections/api/documents",
                    json={"documents": [{"id": i, "vector_ids": {"190": 1.0}} for i in ids]})
    assert r.status_code == 200, r.text
    for i in ids:
        path = "/v1/collections/api/documents/" + quote(i, safe="")
        r = anon.get(path)
        assert r.status_code == 200 and r.json()["id"] == i, (i, r.text)
        assert client.delete(path).json()["deleted"] == [i]
        assert anon.get(path).status_code == 404


def test_bad_model_name_shows_no_server_path(client):
    for name in ["no-such-model", "/etc/passwd/x", "../../x"]:
        r = client.post("/v1/collections", json={"name": "m1", "model": name})
        assert r.status_code == 422 and r.json()["error"] == "model_unavailable", r.text
        detail = r.json()["detail"]
        assert "/root" not in detail and ".cache" not in detail and "/tmp" not in detail, detail


def test_new_metrics(anon, coll):
    text = anon.get("/metrics").text
    for name in ['lsr_collection_wal_bytes{collection="api"}', 'lsr_collection_segments{collection="api"}',
                 'lsr_collection_merge_failures_total{collection="api"} 0.0', "lsr_collections_failed 0.0",
                 "lsr_requests_in_flight", "lsr_requests_shed_total"]:
        assert name in text, name


def test_client_hang_up_is_499(server, anon, coll):
    import socket

    with socket.create_connection(("127.0.0.1", server.port)) as s:  # promise 1000 bytes, send 10, hang up
        s.sendall(b"POST /v1/collections/api/search HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
                  b"content-length: 1000\r\n\r\n{\"k\": 10, ")
        time.sleep(0.3)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        text = anon.get("/metrics").text
        if 'route="unmatched",status="499"' in text or 'status="499"' in text:
            break
        time.sleep(0.2)
    assert 'status="499"' in text
    assert 'status="500"' not in text


def _recv_all(sock, timeout=5.0) -> bytes:
    sock.settimeout(timeout)
    out = b""
    try:
        while True:
            chunk = sock.recv(4096)
            if not chunk:
                break
            out += chunk
    except OSError:
        pass
    return out


def test_slow_clients_timeouts_connection_cap_and_shedding(tmp_path):
    """Half-sent headers get 408 and are closed; past the connection cap a socket gets 503 at once;
    past the in-flight cap a request gets 503 + Retry-After; a body that stops coming is a 499."""
    import socket

    import httpx
    from service_harness import Server

    srv = Server(tmp_path / "data", "--model", "none", "--header-timeout", "1", "--body-timeout", "1.5",
                 "--max-connections", "12", "--max-in-flight", "2").start()
    socks = []
    try:
        with socket.create_connection(("127.0.0.1", srv.port)) as s:
            t0 = time.monotonic()
            s.sendall(b"GET /health HTTP/1.1\r\nhost: x\r\nx-slow: ")
            reply = _recv_all(s)
            assert reply.startswith(b"HTTP/1.1 408") and 0.8 < time.monotonic() - t0 < 4, reply
        with socket.create_connection(("127.0.0.1", srv.port)) as s:  # endless headers, sent fast
            try:
                s.sendall(b"GET /health HTTP/1.1\r\nhost: x\r\n" + b"x-pad: " + b"a" * 70_000 + b"\r\n")
            except OSError:
                pass
            assert _recv_all(s).startswith(b"HTTP/1.1 431")
        big = {"name": "z" * 10, "model": None, "dim": 5, "index": {}, "pad": "p" * 200_000}  # a big body is no head
        r = httpx.post(srv.url + "/v1/collections", json=big, headers={"x-api-key": "test-key-0123456789"}, timeout=10)
        assert r.status_code == 422, r.text
        # two requests stuck in their bodies fill the in-flight cap; the third is shed
        for _ in range(2):
            s = socket.create_connection(("127.0.0.1", srv.port))
            s.sendall(b"POST /v1/collections HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
                      b"content-length: 100\r\n\r\n{")
            socks.append(s)
        time.sleep(0.3)
        r = httpx.get(srv.url + "/v1/collections", timeout=10)
        assert r.status_code == 503 and r.headers["retry-after"] == "1" and r.json()["error"] == "overloaded"
        assert httpx.get(srv.url + "/health", timeout=10).status_code == 200  # liveness is never shed
        for s in socks:
            assert _recv_all(s) == b""  # body deadline: closed without a response
            s.close()
        socks.clear()
        assert httpx.get(srv.url + "/v1/collections", timeout=10).status_code == 200
        assert 'status="499"' in httpx.get(srv.url + "/metrics", timeout=10).text
        # idle sockets up to the cap; the next one is told 503 and closed
        socks = [socket.create_connection(("127.0.0.1", srv.port)) for _ in range(14)]  # faster than the 1 s deadline
        replies = []
        for s in socks[::-1]:
            s.settimeout(0.1)
            try:
                replies.append(s.recv(4096))
            except OSError:
                replies.append(b"")
        assert any(r.startswith(b"HTTP/1.1 503") and b"retry-after" in r for r in replies), replies
        for s in socks:
            s.close()
        socks.clear()
        time.sleep(0.3)
        assert httpx.get(srv.url + "/ready", timeout=10).status_code == 200
    finally:
        for s in socks:
            s.close()
        srv.stop()


def test_failed_collection_is_visible(tmp_path):
    from service_harness import Server

    srv = Server(tmp_path / "data", "--model", "none").start()
    try:
        with srv.client() as c:
            for name in ("good", "bad"):
                assert c.post("/v1/collections", json={"name": name, "model": None, "dim": 10}).status_code == 201
                c.post(f"/v1/collections/{name}/documents", json={"documents": [{"id": "x", "vector_ids": {"1": 1}}]})
        srv.stop()
        (tmp_path / "data" / "collections" / "bad" / "manifest.json").write_text("{not json")
        srv.start()
        with srv.client() as c:
            ready = c.get("/ready")
            assert ready.status_code == 200 and ready.json()["status"] == "degraded", ready.text
            assert set(ready.json()["failed"]) == {"bad"}
            listed = {x["name"]: x for x in c.get("/v1/collections").json()["collections"]}
            assert listed["good"]["status"] == "ok" and listed["bad"]["status"] == "failed"
            assert listed["bad"]["reason"] and str(tmp_path) not in listed["bad"]["reason"]
            for r in (c.get("/v1/collections/bad"), c.post("/v1/collections/bad/search", json={"vector_ids": {"1": 1}})):
                assert r.status_code == 503 and r.json()["error"] == "collection_failed", r.text
                assert str(tmp_path) not in r.text
            assert c.post("/v1/collections/good/search", json={"vector_ids": {"1": 1}}).json()["hits"][0]["id"] == "x"
            text = c.get("/metrics").text
            assert "lsr_collections_failed 1.0" in text and 'lsr_collection_failed{collection="bad"' in text
    finally:
        srv.stop()
