"""schemathesis against the served OpenAPI spec: no generated request may get a 5xx.

The server runs an inference-free model, so text searches, batch searches and /v1/encode really
encode what the fuzzer sends (torch-free for queries). A second run against a test-only route that
always raises proves the check (and the server log) would catch a 500.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from service_harness import API_KEY, Server

MAX_EXAMPLES = int(os.environ.get("LSR_FUZZ_EXAMPLES", "30"))
MODEL = Path(__file__).resolve().parents[2] / "models" / "inference-free-splade-tiny-scifact-nfcorpus"
CRASH_LOGGED = "(status 500)"  # what service/errors.py logs at ERROR for an unhandled exception


def _schemathesis() -> str:
    exe = shutil.which("schemathesis") or str(Path(sys.executable).parent / "schemathesis")
    if not Path(exe).exists():
        pytest.skip("schemathesis is not installed (pip install schemathesis)")
    return exe


def _full_log(srv: Server) -> str:
    return srv.log_path.read_text(errors="replace")


def _run(exe: str, srv: Server, cwd: Path, *extra: str, examples: int = MAX_EXAMPLES) -> tuple[int, str]:
    cmd = [exe, "run", f"{srv.url}/openapi.json", "--checks", "not_a_server_error",
           "--max-examples", str(examples), "--seed", "20261127", "--workers", "1",
           "--header", f"x-api-key: {API_KEY}", "--phases", "examples,coverage,fuzzing",
           "--request-timeout", "30", "--no-color", "--suppress-health-check", "all", *extra]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=280, cwd=cwd)
    return proc.returncode, proc.stdout + proc.stderr


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_fuzz_no_server_errors(tmp_path):
    exe = _schemathesis()
    # warning: the level at which service/errors.py's 500 log line (and uvicorn's own errors) show
    srv = Server(tmp_path / "data", "--model", str(MODEL), "--merge-min-docs", "5", "--merge-idle", "0.2",
                 "--max-body-mb", "2", "--max-text-chars", "2000", "--no-preload").start()
    try:
        with srv.client() as c:
            # a real collection with the model's vocabulary, so generated texts, vectors and ids land
            # somewhere; the fuzzer's other names are 404s
            assert c.post("/v1/collections", json={"name": "a"}).status_code == 201
            r = c.post("/v1/collections/a/documents", json={"documents": [
                {"id": str(i), "text": f"doc {i}", "vector_ids": {str(2000 + i): 1.0, "2003": 0.5},
                 "metadata": {"i": i}} for i in range(20)]})
            assert r.status_code == 200, r.text
        rc, out = _run(exe, srv, tmp_path)
        print(out[-3000:])
        assert rc == 0, f"schemathesis found failures:\n{out[-6000:]}\nserver log:\n{srv.log()}"
        with srv.client() as c:
            spec = c.get("/openapi.json").json()["paths"]
        for path in ("/v1/collections/{name}/search", "/v1/collections/{name}/search/batch", "/v1/encode"):
            assert path in spec
        n_ops = sum(len(methods) for methods in spec.values())
        assert f"Tested: {n_ops}" in out, out[-3000:]  # every operation, text and encode ones included
        assert CRASH_LOGGED not in _full_log(srv), srv.log()
    finally:
        srv.stop()


@pytest.mark.timeout(200)
def test_fuzz_check_catches_a_server_error(tmp_path):
    """The same run against a route that always raises must fail, and the server log must show it."""
    exe = _schemathesis()
    srv = Server(tmp_path / "data", "--model", "none", env={"LSR_TEST_ROUTES": "1"}).start()
    try:
        rc, out = _run(exe, srv, tmp_path, "--include-path", "/v1/test/crash", examples=3)
        assert rc != 0, out[-3000:]
        assert "Server error" in out or "500" in out, out[-3000:]
        assert CRASH_LOGGED in _full_log(srv), srv.log()
    finally:
        srv.stop()
