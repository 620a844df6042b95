"""schemathesis against the served OpenAPI spec: no generated request may get a 5xx."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from service_harness import API_KEY, Server

MAX_EXAMPLES = int(os.environ.get("LSR_FUZZ_EXAMPLES", "30"))


@pytest.mark.timeout(300)
def test_fuzz_no_server_errors(tmp_path):
    exe = shutil.which("schemathesis") or str(Path(sys.executable).parent / "schemathesis")
    if not Path(exe).exists():
        pytest.skip("schemathesis is not installed (pip install schemathesis)")
    srv = Server(tmp_path / "data", "--model", "none", "--merge-min-docs", "5", "--merge-idle", "0.2",
                 "--max-body-mb", "2").start()
    try:
        with srv.client() as c:
            # a real collection so generated reads and writes can land somewhere; the spec's pattern
            # for names makes the fuzzer try others (404s)
            c.post("/v1/collections", json={"name": "a", "model": None, "dim": 1000})
            c.post("/v1/collections/a/documents", json={"documents": [
                {"id": str(i), "vector_ids": {str(i): 1.0, "0": 0.5}, "metadata": {"i": i}} for i in range(20)]})
        cmd = [exe, "run", f"{srv.url}/openapi.json", "--checks", "not_a_server_error",
               "--max-examples", str(MAX_EXAMPLES), "--seed", "20261127", "--workers", "1",
               "--header", f"x-api-key: {API_KEY}", "--phases", "examples,coverage,fuzzing",
               "--request-timeout", "30", "--no-color", "--suppress-health-check", "all"]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=280, cwd=tmp_path)
        out = proc.stdout + proc.stderr
        print(out[-3000:])
        assert proc.returncode == 0, f"schemathesis found failures:\n{out[-6000:]}\nserver log:\n{srv.log()}"
        assert "500" not in srv.log(), srv.log()
    finally:
        srv.stop()
