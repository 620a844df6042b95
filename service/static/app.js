// lsr search page: talks to the service's own REST API (same origin). Everything that comes from
// the store (ids, titles, texts, terms) is put into the page with textContent, never as HTML.
"use strict";

const KEY_NAME = "lsr.apiKey";
const $ = (id) => document.getElementById(id);

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}

function fmt(x, digits) {
  return Number(x).toFixed(digits === undefined ? 2 : digits);
}

class ApiError extends Error {
  constructor(status, detail) {
    super(detail);
    this.status = status;
  }
}

async function api(path, body) {
  const headers = { "content-type": "application/json" };
  const key = sessionStorage.getItem(KEY_NAME);
  if (key) headers["x-api-key"] = key;
  const init = body === undefined ? { headers } : { method: "POST", headers, body: JSON.stringify(body) };
  const resp = await fetch(path, init);
  let data = null;
  try {
    data = await resp.json();
  } catch (e) {
    data = null;
  }
  if (!resp.ok) {
    const detail = data && data.detail ? data.detail : "HTTP " + resp.status;
    throw new ApiError(resp.status, typeof detail === "string" ? detail : JSON.stringify(detail));
  }
  return data;
}

function setStatus(text, isError) {
  const s = $("status");
  s.textContent = text || "";
  s.className = isError ? "error" : "";
}

function showKeyForm(message) {
  $("key-form").hidden = false;
  $("key-input").focus();
  if (message) setStatus(message, true);
}

function handleError(err) {
  if (err instanceof ApiError && (err.status === 401 || err.status === 403)) {
    showKeyForm(err.status === 401 ? "This server needs an API key to read: enter it above."
                                   : "The server refused this API key: enter another.");
  } else {
    setStatus(err.message || String(err), true);
  }
}

let collections = [];

async function loadCollections() {
  const data = await api("/v1/collections");
  collections = data.collections.filter((c) => c.status === "ok");
  const pick = $("collection");
  const wanted = new URLSearchParams(location.search).get("collection") || pick.value;
  pick.replaceChildren();
  for (const c of collections) {
    const opt = el("option", null, c.name + " (" + c.documents.toLocaleString() + " docs)");
    opt.value = c.name;
    pick.appendChild(opt);
  }
  if (wanted && collections.some((c) => c.name === wanted)) pick.value = wanted;
  if (!collections.length) setStatus("No collections yet: add one with lsr ingest --url.", false);
  else setStatus("", false);
}

function bar(share) {
  const outer = el("span", "bar");
  const inner = el("span", "fill");
  inner.style.width = Math.max(1, Math.min(100, share * 100)).toFixed(1) + "%";
  outer.appendChild(inner);
  return outer;
}

function renderExpansion(vector) {
  const list = $("expansion");
  list.replaceChildren();
  const entries = Object.entries(vector);
  const top = entries.length ? entries[0][1] : 1;
  for (const [term, weight] of entries.slice(0, 40)) {
    const li = el("li", "term");
    li.appendChild(el("span", "name", term));
    li.appendChild(bar(weight / top));
    li.appendChild(el("span", "num", fmt(weight)));
    list.appendChild(li);
  }
  $("expansion-count").textContent = entries.length + " terms" + (entries.length > 40 ? ", top 40 shown" : "");
  $("expansion-box").hidden = false;
}

function renderHit(hit, rank) {
  const li = el("li", "hit");
  const head = el("div", "hit-head");
  head.appendChild(el("span", "rank", rank + "."));
  const title = hit.metadata && typeof hit.metadata.title === "string" ? hit.metadata.title : "";
  head.appendChild(el("span", "title", title || hit.id));
  head.appendChild(el("span", "score", "score " + fmt(hit.score, 3)));
  li.appendChild(head);
  li.appendChild(el("div", "doc-id", "id " + hit.id));
  let text = hit.text || "";
  if (title && text.startsWith(title)) text = text.slice(title.length).trimStart();
  const body = el("p", "text", text.length > 600 ? text.slice(0, 600) + " …" : text);
  li.appendChild(body);
  const terms = (hit.explanation && hit.explanation.terms) || [];
  const total = hit.explanation ? hit.explanation.score : hit.score;
  const list = el("ol", "terms contributions");
  for (const t of terms.slice(0, 12)) {
    const row = el("li", "term");
    row.title = fmt(t.query_weight) + " (query) × " + fmt(t.doc_weight) + " (document)";
    row.appendChild(el("span", "name", t.term));
    row.appendChild(bar(total > 0 ? t.contribution / total : 0));
    row.appendChild(el("span", "num", fmt(t.contribution)));
    list.appendChild(row);
  }
  const caption = el("div", "terms-caption",
    terms.length + " matching terms" + (terms.length > 12 ? ", top 12 shown" : "") + ": contribution to the score");
  li.appendChild(caption);
  li.appendChild(list);
  return li;
}

async function search(event) {
  if (event) event.preventDefault();
  const name = $("collection").value;
  const text = $("query").value.trim();
  if (!name || !text) return;
  const k = Number($("k").value);
  const params = new URLSearchParams({ collection: name, q: text });
  history.replaceState(null, "", "?" + params.toString());
  setStatus("Searching…", false);
  const col = collections.find((c) => c.name === name);
  const t0 = performance.now();
  try {
    const found = api("/v1/collections/" + encodeURIComponent(name) + "/search",
                      { text: text, k: k, explain: true, include_text: true });
    const expanded = col && col.model
      ? api("/v1/encode", { texts: [text], model: col.model, kind: "query" }) : Promise.resolve(null);
    const [res, enc] = await Promise.all([found, expanded]);
    const roundTrip = performance.now() - t0;
    if (enc) renderExpansion(enc.vectors[0]);
    else $("expansion-box").hidden = true;
    const list = $("results");
    list.replaceChildren();
    res.hits.forEach((hit, i) => list.appendChild(renderHit(hit, i + 1)));
    $("latency").textContent = res.hits.length + " hits · server " + fmt(res.took_ms, 1) + " ms · round trip "
      + fmt(roundTrip, 0) + " ms";
    $("results-box").hidden = false;
    setStatus(res.hits.length ? "" : "No hits.", false);
  } catch (err) {
    handleError(err);
  }
}

async function start() {
  $("key-button").addEventListener("click", () => showKeyForm());
  $("key-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const key = $("key-input").value.trim();
    if (key) sessionStorage.setItem(KEY_NAME, key);
    else sessionStorage.removeItem(KEY_NAME);
    $("key-input").value = "";
    $("key-form").hidden = true;
    await init();
  });
  $("search-form").addEventListener("submit", search);
  $("collection").addEventListener("change", () => search());
  $("k").addEventListener("change", () => search());
  await init();
}

async function init() {
  try {
    await loadCollections();
  } catch (err) {
    handleError(err);
    return;
  }
  const q = new URLSearchParams(location.search).get("q");
  if (q && !$("query").value) $("query").value = q;
  if ($("query").value) await search();
}

start();
