"""`lsr ingest` and `lsr serve` / `lsr-serve` as a user runs them."""

from __future__ import annotations

import json
import subprocess
import sys

import httpx
import pytest
from service_harness import Server

LSR = [sys.executable, "-m", "lsr.cli.main"]


def _run(*args, **kw):
    return subprocess.run([*LSR, *args], capture_output=True, text=True, timeout=120, **kw)


def test_lsr_help():
    r = _run("--help")
    assert r.returncode == 0 and "serve" in r.stdout and "ingest" in r.stdout
    r = _run("serve", "--help")
    assert r.returncode == 0 and "--api-keys-file" in r.stdout and "--data" in r.stdout
    assert _run("nope").returncode == 2


@pytest.mark.timeout(180)
def test_ingest_then_serve(tmp_path):
    corpus = tmp_path / "corpus.jsonl"
    with open(corpus, "w") as fh:
        for i in range(50):
            fh.write(json.dumps({"id": f"doc{i}", "content": f"document number {i}",
                                 "vector": {str(i + 1): 2.0, "60": 0.5}}) + "\n")
    data = tmp_path / "data"
    r = _run("ingest", str(corpus), "--collection", "demo", "--data", str(data), "--model", "none", "--dim", "100")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout.strip().split("\n")[-1])["documents"] == 50
    bad = _run("ingest", str(tmp_path / "missing.jsonl"), "-c", "demo", "--data", str(data), "--model", "none")
    assert bad.returncode == 2 and "no such file" in bad.stderr and "missing.jsonl" in bad.stderr
    keys = tmp_path / "keys.txt"
    keys.write_text("# writers\nk-one\nk-two\n")
    srv = Server(data, "--model", "none", "--api-keys-file", str(keys)).start()
    try:
        r = httpx.post(srv.url + "/v1/collections/demo/search", json={"vector_ids": {"8": 1.0}, "k": 2}, timeout=60)
        hits = r.json()["hits"]
        assert hits[0]["id"] == "doc7" and hits[0]["text"] == "document number 7"
        info = httpx.get(srv.url + "/v1/collections/demo").json()
        assert info["documents"] == 50 and info["segments"][0]["kind"] in ("seismic", "exact")
        for key, code in [("k-two", 200), ("test-key-0123456789", 403)]:  # the file wins over $LSR_API_KEYS
            r = httpx.post(srv.url + "/v1/collections/demo/documents/delete", json={"ids": ["doc1"]},
                           headers={"x-api-key": key})
            assert r.status_code == code
        # the data folder is locked while the server runs
        r = _run("ingest", str(corpus), "-c", "demo", "--data", str(data), "--model", "none")
        assert r.returncode == 2 and "in use" in r.stderr
    finally:
        srv.stop()


def test_generated_key_and_read_keys(tmp_path):
    data = tmp_path / "data"
    srv = Server(data, "--model", "none", "--read-requires-key", env={"LSR_API_KEYS": ""}).start()
    try:
        key = (data / "api_key").read_text().strip()
        assert len(key) >= 24 and (data / "api_key").stat().st_mode & 0o077 == 0
        assert httpx.get(srv.url + "/v1/collections").status_code == 401
        assert httpx.get(srv.url + "/v1/collections", headers={"x-api-key": "x"}).status_code == 403
        assert httpx.get(srv.url + "/v1/collections", headers={"x-api-key": key}).status_code == 200
        assert httpx.get(srv.url + "/health").status_code == 200  # liveness stays open
        for path in ("/metrics", "/openapi.json", "/docs"):  # they describe the data and the API: reads too
            assert httpx.get(srv.url + path).status_code == 401, path
            assert httpx.get(srv.url + path, headers={"x-api-key": key}).status_code == 200, path
    finally:
        srv.stop()


def test_bad_keys_file(tmp_path):
    r = subprocess.run([sys.executable, "-m", "lsr.service.cli", "--data", str(tmp_path / "d"),
                        "--api-keys-file", str(tmp_path / "none.txt")], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "API keys file not found" in r.stderr


def test_serve_unknown_model_fails_fast(tmp_path):
    r = _run("serve", "--data", str(tmp_path / "d"), "--model", "splade-tinny", "--port", "0")
    assert r.returncode == 2, r.stderr
    lines = [ln for ln in r.stderr.strip().split("\n") if ln]
    assert len(lines) == 1 and "splade-tinny" in lines[0] and "model" in lines[0], r.stderr


def test_second_server_on_same_data_exits(tmp_path):
    data = tmp_path / "data"
    srv = Server(data, "--model", "none").start()
    try:
        r = _run("serve", "--data", str(data), "--model", "none", "--port", "0", env={**_env(), "LSR_API_KEYS": "k"})
        assert r.returncode == 2, (r.stdout, r.stderr)
        assert f"in use by PID {srv.proc.pid}" in r.stderr, r.stderr
    finally:
        srv.stop()


def _env():
    import os

    return dict(os.environ)


@pytest.mark.parametrize("limit", ["0", "-1"])
def test_ingest_bad_limit(tmp_path, limit):
    corpus = tmp_path / "c.jsonl"
    corpus.write_text(json.dumps({"id": "a", "content": "x", "vector": {"1": 1.0}}) + "\n")
    r = _run("ingest", str(corpus), "-c", "x", "--data", str(tmp_path / "d"), "--model", "none", "--dim", "5",
             "--limit", limit)
    assert r.returncode == 2
    lines = [ln for ln in r.stderr.strip().split("\n") if ln]
    assert len(lines) == 1 and "limit" in lines[0], r.stderr


def test_repair_is_a_subcommand():
    r = _run("--help")
    assert "repair" in r.stdout
    r = _run("repair", "--help")
    assert r.returncode == 0 and "--data" in r.stdout, (r.stdout, r.stderr)
