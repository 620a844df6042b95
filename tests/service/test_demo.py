"""`lsr serve --demo` as a new user runs it: first start indexes the bundled SciFact sample with a
progress bar and prints a curl line that returns hits and the page's address; `/ready` waits for the
model and a warm query; `lsr ingest --url` adds documents while the server runs; a second start
reuses the index. Everything through real processes and real HTTP.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from service_harness import free_port

REPO = Path(__file__).resolve().parents[2]
CORPUS = REPO / "tests" / "data" / "beir" / "scifact" / "corpus.jsonl.gz"
DEMO_MODEL = REPO / "models" / "inference-free-splade-tiny-scifact-nfcorpus"
LIMIT = 60  # the first 60 SciFact abstracts hold the one on vitamin D (275294) the printed query finds


def lsr(*args: str) -> list[str]:
    return [sys.executable, "-m", "lsr.cli.main", *args]


class DemoServer:
    """`lsr serve --demo` (or `lsr demo`) as a subprocess; ``start`` returns once it printed its banner."""

    def __init__(self, data: Path, *extra: str, command: str = "serve", env: dict[str, str] | None = None):
        self.data = Path(data)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        demo = ["serve", "--demo"] if command == "serve" else ["demo"]
        self.cmd = lsr(*demo, "--demo-limit", str(LIMIT), "--data", str(self.data), "--port", str(self.port),
                       "--log-level", "warning", *extra)
        self.env = {k: v for k, v in os.environ.items() if k not in ("LSR_API_KEYS", "LSR_DATA", "LSR_MODEL")}
        self.env.update(env or {})
        self.lines: list[str] = []
        self.err_path = self.data.parent / f"{self.data.name}-{self.port}.err"
        self.proc: subprocess.Popen[str] | None = None
        self.seconds = 0.0

    def start(self, timeout: float = 600) -> "DemoServer":  # first start: torch import, encoding, kernels
        t0 = time.monotonic()
        self._err = open(self.err_path, "w")
        self.proc = subprocess.Popen(self.cmd, stdout=subprocess.PIPE, stderr=self._err, text=True, env=self.env)
        reader = threading.Thread(target=self._read, daemon=True)
        reader.start()
        while time.monotonic() - t0 < timeout:
            if any(ln.startswith("  add documents") for ln in self.lines):
                self.seconds = time.monotonic() - t0
                return self
            if self.proc.poll() is not None:
                reader.join(5)
                raise RuntimeError(f"demo exited with {self.proc.returncode}: {self.stderr()[-3000:]}")
            time.sleep(0.05)
        raise RuntimeError(f"no banner after {timeout}s: {self.lines} {self.stderr()[-3000:]}")

    def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def banner(self, label: str) -> str:
        line = next(ln for ln in self.lines if ln.strip().startswith(label))
        return line.split(label, 1)[1].strip()

    def stderr(self) -> str:
        return self.err_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if getattr(self, "_err", None) is not None:
            self._err.close()


def run_curl(line: str) -> dict:
    """Run the banner's curl line as printed (no shell: its quoting must be right as it stands)."""
    argv = shlex.split(line)
    assert argv[0] == "curl", line
    if shutil.which("curl"):
        out = subprocess.run(argv, capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)
    # no curl binary here: send the same request (URL, headers, body) with httpx
    url = next(a for a in argv if a.startswith("http"))
    headers = dict(argv[i + 1].split(": ", 1) for i, a in enumerate(argv) if a == "-H")
    body = argv[argv.index("-d") + 1]
    return httpx.post(url, headers=headers, content=body, timeout=60).json()


@pytest.fixture(scope="module")
def demo_data(tmp_path_factory):
    return tmp_path_factory.mktemp("demo") / "lsr-demo"


@pytest.fixture(scope="module")
def demo(demo_data):
    srv = DemoServer(demo_data).start()
    yield srv
    srv.stop()


def test_first_start_indexes_with_a_bar_and_prints_a_working_curl(demo):
    err = demo.stderr()
    assert f"ingest scifact: 100%" in err and f"{LIMIT}/{LIMIT}" in err, err[-2000:]  # the tqdm bar ran to the end
    page = demo.banner("search page:")
    assert page == demo.url + "/"
    curl = demo.banner("try:")
    assert curl.startswith(f"curl -s {demo.url}/v1/collections/scifact/search")
    t0 = time.perf_counter()
    res = run_curl(curl)  # the first query this server answers
    first_query_s = time.perf_counter() - t0
    hits = res["hits"]
    assert len(hits) == 3
    assert hits[0]["id"] == "275294" and "vitamin D" in hits[0]["text"]
    assert [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)
    # ready means warm: the old cold path (model loaded by the first query) took about 7 s
    assert first_query_s < 2.0, first_query_s
    ready = httpx.get(demo.url + "/ready").json()
    assert ready["status"] == "ready" and ready["collections"] == 1
    assert ready["models"] == [str(DEMO_MODEL)]
    r = httpx.get(page)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert "script-src 'self'" in r.headers["content-security-policy"]
    assert '<script src="/ui/app.js"' in r.text


def test_ingest_url_while_the_server_runs(demo):
    key = (demo.data / "api_key").read_text().strip()
    add = demo.banner("add documents while it runs:")
    assert f"lsr ingest --url {demo.url} --api-key" in add and str(demo.data / "api_key") in add
    out = subprocess.run(lsr("ingest", "--url", demo.url, "--api-key", key, str(CORPUS), "--collection", "more",
                             "--limit", "50", "--batch-size", "20"), capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    assert summary == {"collection": "more", "sent": 50, "documents": 50}
    assert "ingest more: 100%" in out.stderr  # progress bar
    with httpx.Client(base_url=demo.url, timeout=60) as c:
        assert c.get("/v1/collections/more").json()["documents"] == 50
        hits = c.post("/v1/collections/more/search", json={"text": "vitamin D", "k": 3}).json()["hits"]
        assert hits and hits[0]["id"] == "275294"  # the 47th document of the corpus
        assert c.get("/v1/collections/more/documents/4983").json()["metadata"]["title"].startswith("Microstructural")

    bad = {  # each run must fail with exit 2 and one line saying why (run side by side: each pays a start-up)
        "refused the API key": ("--url", demo.url, "--api-key", "wrong"),
        "needs an API key": ("--url", demo.url),
        "cannot reach http://127.0.0.1:9": ("--url", "http://127.0.0.1:9", "--api-key", key),
        "--url must start with http": ("--url", "localhost:1", "--api-key", key),
        "would mix encodings": ("--url", demo.url, "--api-key", key, "--model", "splade-tiny"),
    }
    procs = {want: subprocess.Popen(lsr("ingest", *args, str(CORPUS), "--collection", "more", "--limit", "5"),
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                    env={**os.environ, "LSR_API_KEY": ""})
             for want, args in bad.items()}
    for want, proc in procs.items():
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 2, (want, proc.returncode, err)
        said = [ln for ln in err.splitlines() if ln.startswith("lsr ingest:")]
        assert len(said) == 1 and err.rstrip().endswith(said[0]), err  # one line, the last one
        assert want in said[0], (want, said[0])
    assert httpx.get(demo.url + "/v1/collections/more").json()["documents"] == 50  # the failures wrote nothing


def test_cross_origin_calls_are_refused_unless_configured(demo, tmp_path):
    preflight = {"origin": "http://elsewhere.example", "access-control-request-method": "POST",
                 "access-control-request-headers": "content-type,x-api-key"}
    r = httpx.options(demo.url + "/v1/collections/scifact/search", headers=preflight)
    assert "access-control-allow-origin" not in r.headers
    r = httpx.post(demo.url + "/v1/collections/scifact/search", json={"text": "vitamin", "k": 1},
                   headers={"origin": "http://elsewhere.example"})
    assert r.status_code == 200 and "access-control-allow-origin" not in r.headers


def test_second_start_reuses_the_index_and_ready_means_warm(demo, demo_data):
    first = demo.seconds
    demo.stop()
    srv = DemoServer(demo_data, "--cors-origin", "http://localhost:3000", command="demo")  # `lsr demo` alias
    first_ready: list[dict] = []

    def poll() -> None:  # what /ready says the first time it says ready
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and not first_ready:
            try:
                r = httpx.get(srv.url + "/ready", timeout=2)
                if r.status_code == 200:
                    first_ready.append(r.json())
                else:
                    assert r.json()["status"] == "loading"
            except httpx.TransportError:
                pass
            time.sleep(0.02)

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    try:
        srv.start()
        poller.join(60)
        assert first_ready and first_ready[0]["models"] == [str(DEMO_MODEL)]  # loaded before ready, not after
        assert "ingest scifact" not in srv.stderr()  # reused: nothing encoded again
        assert srv.seconds < first
        with httpx.Client(base_url=srv.url, timeout=60) as c:
            times = []
            for q in ("vitamin D deficiency", "stem cell transplantation", "cancer risk in women"):
                t0 = time.perf_counter()
                r = c.post("/v1/collections/scifact/search", json={"text": q, "k": 5, "explain": True})
                times.append(time.perf_counter() - t0)
                assert r.status_code == 200 and r.json()["hits"]
                assert all(h["explanation"]["terms"] for h in r.json()["hits"])
            assert times[0] < 2.0, times  # the first query after ready: no model load, no kernel compile
            assert c.get("/v1/collections/scifact").json()["documents"] == LIMIT
            assert c.get("/v1/collections/more").json()["documents"] == 50  # the live ingest survived the restart
            assert run_curl(srv.banner("try:"))["hits"][0]["id"] == "275294"
            pre = {"access-control-request-method": "POST", "access-control-request-headers": "content-type"}
            ok = c.options("/v1/collections/scifact/search", headers={"origin": "http://localhost:3000", **pre})
            assert ok.headers.get("access-control-allow-origin") == "http://localhost:3000"
            other = c.options("/v1/collections/scifact/search", headers={"origin": "http://evil.example", **pre})
            assert "access-control-allow-origin" not in other.headers
    finally:
        srv.stop()


def test_demo_errors_are_one_line_and_exit_2(tmp_path):
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    runs = [(["--demo-corpus", str(tmp_path / "no.jsonl")], "demo corpus"),
            (["--demo-limit", "-3"], "--demo-limit must be 0 (all) or a positive number"),
            (["--model", "no-such-model"], "is not a model folder or known name"),
            (["--port", str(busy.getsockname()[1])], "another server there? pass --port")]
    procs = [(subprocess.Popen(lsr("serve", "--demo", "--data", str(tmp_path / f"d{i}"), *args), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True), want) for i, (args, want) in enumerate(runs)]
    for proc, want in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 2 and want in err and len(err.strip().splitlines()) == 1, err
    busy.close()
    assert not any((tmp_path / f"d{i}").exists() for i in range(len(runs)))  # refused before anything was written
