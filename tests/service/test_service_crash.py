"""kill -9 during a write loop, several times: every acknowledged write survives, nothing torn shows."""

from __future__ import annotations

import json
import random
import threading
import time
from pathlib import Path

import httpx
import pytest

from lsr.index import load_index
from lsr.service.segment import verify_segment

from service_harness import API_KEY, Server

DIM = 60_000
NOISE = 8  # the top NOISE term ids are shared "noise" terms; a document's own term stays below them
ROUNDS = 4


def _doc(n: int, rnd: int, batch: str) -> dict:
    # term 1 + n is unique to document n, so a search for it must return that document first
    assert 1 + n < DIM - NOISE, "the writers ran past the vocabulary: raise DIM"
    return {"id": f"c{n}", "vector_ids": {str(1 + n): 10.0, str(DIM - 1 - n % 7): 0.5},
            "metadata": {"round": rnd, "batch": batch}, "text": f"crash doc {n}"}


def _writer(url, rnd, start, stop_at, acked, deleted, inflight, counter, lock, seed):
    rng = random.Random(seed)
    with httpx.Client(base_url=url, headers={"x-api-key": API_KEY}, timeout=10) as c:
        while time.monotonic() < stop_at:
            if rng.random() < 0.15 and acked:
                with lock:
                    victim = rng.choice(sorted(acked))
                try:
                    r = c.post("/v1/collections/crash/documents/delete", json={"ids": [victim]})
                except httpx.HTTPError:
                    with lock:  # the server died mid-request: this delete may or may not have happened
                        acked.discard(victim)
                    return
                if r.status_code == 200:
                    with lock:
                        acked.discard(victim)
                        deleted.add(victim)
                continue
            with lock:
                n0 = counter[0]
                size = rng.randint(1, 12)
                if n0 + size + 1 >= DIM - NOISE:
                    return  # vocabulary used up (a very fast machine): stop writing
                counter[0] += size
            batch = f"r{rnd}-{n0}"
            docs = [_doc(n, rnd, batch) for n in range(n0, n0 + size)]
            ids = [d["id"] for d in docs]
            with lock:
                inflight[batch] = ids
            try:
                r = c.post("/v1/collections/crash/documents", json={"documents": docs})
            except httpx.HTTPError:
                return  # the server died mid-request: outcome unknown (must be all or nothing)
            assert r.status_code == 200, r.text
            with lock:
                del inflight[batch]
                acked.update(ids)
                deleted.difference_update(ids)


@pytest.mark.timeout(240)
def test_kill9_recovery(tmp_path):
    data = tmp_path / "data"
    srv = Server(data, "--model", "none", "--merge-min-docs", "40", "--merge-idle", "0.3").start()
    acked: set[str] = set()
    deleted: set[str] = set()
    unknown: dict[str, list[str]] = {}
    counter = [0]
    n_unknown = 0
    lock = threading.Lock()
    rng = random.Random(1234)
    try:
        with srv.client() as c:
            assert c.post("/v1/collections", json={"name": "crash", "model": None, "dim": DIM}).status_code == 201
        for rnd in range(ROUNDS):
            inflight: dict[str, list[str]] = {}
            life = rng.uniform(0.8, 2.5)
            threads = [
                threading.Thread(target=_writer, args=(srv.url, rnd, 0, time.monotonic() + 30, acked, deleted,
                                                       inflight, counter, lock, rnd * 10 + w))
                for w in range(2)
            ]
            for t in threads:
                t.start()
            time.sleep(life)
            srv.kill()  # SIGKILL at a random point: mid-append, mid-merge, mid-manifest-swap
            for t in threads:
                t.join(30)
            unknown.update(inflight)
            n_unknown += len(inflight)
            srv.start()
            try:
                _check(srv, acked, deleted, unknown)
            except AssertionError as exc:
                raise AssertionError(f"round {rnd}: {exc}\nserver log:\n{srv.log()}") from None
        n_acked = len(acked)
        assert n_acked > 100, f"only {n_acked} writes acknowledged: the loop did not run"
    finally:
        srv.kill()
    gen = _verify_files(data / "collections" / "crash")
    print(f"\ncrash test: {ROUNDS} kill -9 rounds, {len(acked)} live acked docs, {len(deleted)} acked deletes, "
          f"{n_unknown} batches in flight at kill time (all-or-nothing checked), {gen} merges")


def _check(srv: Server, acked: set, deleted: set, unknown: dict) -> None:
    with srv.client(None) as c:
        r = c.get("/v1/collections/crash")
        assert r.status_code == 200, f"collection unavailable after kill -9: {r.text}"  # never 'failed'
        info = r.json()
        ids = sorted(acked)
        for i in range(0, len(ids), 200):
            chunk = ids[i : i + 200]
            queries = [{"vector_ids": {str(1 + int(d[1:])): 1.0}} for d in chunk]
            r = c.post("/v1/collections/crash/search/batch", json={"queries": queries, "k": 1, "include_text": False})
            assert r.status_code == 200, r.text
            for d, res in zip(chunk, r.json()["results"]):
                assert res["hits"] and res["hits"][0]["id"] == d, f"acked document {d} not searchable"
        for d in rng_sample(ids, 50):
            doc = c.get(f"/v1/collections/crash/documents/{d}")
            assert doc.status_code == 200, f"acked document {d} lost"
            assert doc.json()["text"] == f"crash doc {d[1:]}"
        for d in deleted:
            assert c.get(f"/v1/collections/crash/documents/{d}").status_code == 404, f"acked delete of {d} undone"
        for batch, bids in unknown.items():
            present = [c.get(f"/v1/collections/crash/documents/{d}").status_code == 200 for d in bids]
            if any(present):  # a batch is all or nothing (later deletes aside)
                live = [d for d, p in zip(bids, present) if not p and d not in deleted]
                assert not live, f"batch {batch} half visible: {bids} -> {present}"
                acked.update(d for d, p in zip(bids, present) if p)
        unknown.clear()
        assert info["documents"] >= len(acked)


def rng_sample(ids, n):
    return random.Random(0).sample(ids, min(n, len(ids)))


def _verify_files(col_dir: Path) -> None:
    manifest = json.loads((col_dir / "manifest.json").read_text())
    assert manifest["segments"], "no merge happened during the crash loop"
    for s in manifest["segments"]:
        seg = col_dir / "segments" / s["name"]
        verify_segment(seg)
        if s["kind"] == "seismic":
            load_index(seg / "index", verify=True)
    on_disk = {p.name for p in (col_dir / "segments").iterdir()}
    assert on_disk <= {s["name"] for s in manifest["segments"]}
    return manifest["generation"]
