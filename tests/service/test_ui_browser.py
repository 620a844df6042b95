"""The search page at `/` in a real browser: headless Chromium (Debian's `chromium`, installed by
.ci/run) driven by Playwright against a real `lsr serve --demo` process. Types queries, checks the
rendered hits, expansions and term contributions against the API, that stored markup renders as
text with no script run, the key flow (typed once, kept in session storage) and the CSP header.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import httpx
import pytest
from test_demo import DemoServer

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
KEY = "ui-test-key-0123456789"
XSS_TEXT = "<img src=x onerror=alert(1)>"
XSS_TITLE = "<img src=y onerror=alert(3)>"
XSS_ID = "<script>alert(2)</script>"
QUERY = "vitamin D deficiency and the risk of fractures"

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -e '.[dev]')")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    if CHROMIUM is None:
        pytest.skip("no chromium binary: .ci/run installs Debian's `chromium` (apt-get needs root)")
    srv = DemoServer(tmp_path_factory.mktemp("ui") / "lsr-demo", "--read-requires-key", env={"LSR_API_KEYS": KEY})
    srv.start()
    with httpx.Client(base_url=srv.url, headers={"x-api-key": KEY}, timeout=120) as c:
        r = c.post("/v1/collections/scifact/documents",
                   json={"documents": [{"id": XSS_ID, "text": XSS_TEXT, "metadata": {"title": XSS_TITLE},
                                        "vector": {"image": 2.0, "alert": 2.0}}]})  # given: no model load here
        assert r.status_code == 200, r.text
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def browser(server):
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-dev-shm-usage"])
        yield b
        b.close()


def test_read_key_still_guards_the_data(server):
    assert httpx.get(server.url + "/v1/collections").status_code == 401
    assert httpx.post(server.url + "/v1/encode", json={"texts": ["x"]}).status_code == 401
    for path in ("/", "/ui/app.js", "/ui/style.css"):  # the page holds no data: open, like /health
        r = httpx.get(server.url + path)
        assert r.status_code == 200 and r.headers["x-content-type-options"] == "nosniff"
    assert httpx.get(server.url + "/ui/../cli.py").status_code == 404
    assert httpx.get(server.url + "/ui/secret.txt").status_code == 404


def test_search_page_in_chromium(server, browser, tmp_path):
    page = browser.new_page(viewport={"width": 1280, "height": 1100})
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    csp_violations: list[str] = []
    page.on("console", lambda m: csp_violations.append(m.text) if "Content Security Policy" in m.text else None)

    resp = page.goto(server.url + "/")
    csp = resp.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "script-src 'self'" in csp and "unsafe-inline" not in csp
    assert "frame-ancestors 'none'" in csp and "access-control-allow-origin" not in resp.headers

    # reads need a key: the page asks once, keeps it in sessionStorage, and a reload does not ask again
    page.wait_for_selector("#key-form:not([hidden])")
    page.fill("#key-input", KEY)
    page.click("#key-form button[type=submit]")
    page.wait_for_selector("#collection option[value=scifact]", state="attached")
    assert page.evaluate("sessionStorage.getItem('lsr.apiKey')") == KEY
    page.reload()
    page.wait_for_selector("#collection option[value=scifact]", state="attached")
    assert page.is_hidden("#key-form")

    # a real query typed into the box
    page.fill("#query", QUERY)
    page.press("#query", "Enter")
    page.wait_for_selector("#results .hit")
    api = httpx.post(server.url + "/v1/collections/scifact/search", headers={"x-api-key": KEY},
                     json={"text": QUERY, "k": 10, "explain": True}).json()["hits"]
    hits = page.locator("#results .hit")
    assert hits.count() == len(api) >= 3
    first = hits.nth(0)
    assert first.locator(".doc-id").inner_text() == "id " + api[0]["id"] == "id 275294"
    assert first.locator(".title").inner_text() == api[0]["metadata"]["title"]
    assert "vitamin D requirement" in first.locator(".text").inner_text()
    # per-hit matching terms with their contributions, in the API's order and values
    terms = first.locator(".contributions .term")
    want = api[0]["explanation"]["terms"]
    assert terms.count() == min(12, len(want)) >= 1
    for i in range(terms.count()):
        assert terms.nth(i).locator(".name").inner_text() == want[i]["term"]
        assert terms.nth(i).locator(".num").inner_text() == f"{want[i]['contribution']:.2f}"
    width = terms.nth(0).locator(".fill").evaluate("e => e.style.width")
    assert width == f"{100 * want[0]['contribution'] / api[0]['explanation']['score']:.1f}%"
    # the query's terms and weights, as /v1/encode gives them
    enc = httpx.post(server.url + "/v1/encode", headers={"x-api-key": KEY},
                     json={"texts": [QUERY], "model": _model(server), "kind": "query"})
    expansion = page.locator("#expansion .term .name").all_inner_texts()
    assert expansion == list(enc.json()["vectors"][0])[:40] and "vitamin" in expansion
    assert re.fullmatch(r"\d+ hits · server \d+\.\d ms · round trip \d+ ms", page.inner_text("#latency"))
    page.screenshot(path=str(tmp_path / "search.png"))
    if os.environ.get("LSR_SCREENSHOT"):
        page.screenshot(path=os.environ["LSR_SCREENSHOT"])

    # stored markup (id, title, text) renders as text: no element made from it, no script run
    page.fill("#query", "image alert")
    page.press("#query", "Enter")
    page.locator("#results .hit .doc-id", has_text="<script>").wait_for()  # (CSP: no eval for wait_for_function)
    hit = page.locator("#results .hit").nth(0)
    assert hit.locator(".text").inner_text() == XSS_TEXT
    assert hit.locator(".title").inner_text() == XSS_TITLE
    assert hit.locator(".doc-id").inner_text() == "id " + XSS_ID
    assert page.locator("#results img").count() == 0 and page.locator("#results script").count() == 0
    page.wait_for_timeout(300)  # an onerror handler would have fired by now
    assert dialogs == [] and errors == [] and csp_violations == []
    assert page.evaluate("location.search") == "?collection=scifact&q=image+alert"
    page.close()


def _model(server: DemoServer) -> str:
    return httpx.get(server.url + "/v1/collections/scifact", headers={"x-api-key": KEY}).json()["model"]
