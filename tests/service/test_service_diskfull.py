"""A real disk-full: the service's data folder on a small tmpfs, filled up, over real HTTP.

ENOSPC on a write is a 507 with nothing acknowledged and nothing stored lost, and writes work again
once space is freed. Needs permission to mount a tmpfs (root in CI); skipped where there is none.
"""

from __future__ import annotations

import os
import subprocess

import pytest

from service_harness import Server


@pytest.fixture
def small_disk(tmp_path):
    mnt = tmp_path / "disk"
    mnt.mkdir()
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mnt)], capture_output=True)
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {res.stderr.decode(errors='replace').strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def _fill(path, keep_free: int) -> None:
    """Write a filler file until at most ``keep_free`` bytes of the file system are left."""
    st = os.statvfs(path.parent)
    free = st.f_bavail * st.f_frsize
    with open(path, "wb") as fh:
        fh.write(b"\0" * max(0, free - keep_free))
        fh.flush()
        os.fsync(fh.fileno())


def _doc(i: int, pad: int = 0) -> dict:
    return {"id": f"d{i}", "vector_ids": {str(i % 60): 1.0, str(60 + i % 3): 0.5}, "text": "x" * pad}


def test_disk_full_is_507_and_recovers(small_disk):
    srv = Server(small_disk / "data", "--model", "none").start()
    try:
        c = srv.client()
        assert c.post("/v1/collections", json={"name": "c", "model": None, "dim": 64}).status_code == 201
        r = c.post("/v1/collections/c/documents", json={"documents": [_doc(i) for i in range(10)]})
        assert r.status_code == 200, r.text
        filler = small_disk / "filler"
        _fill(filler, keep_free=0)
        r = c.post("/v1/collections/c/documents", json={"documents": [_doc(100 + i, pad=20_000) for i in range(20)]})
        assert r.status_code == 507, r.text
        assert r.json()["error"] and "space" in r.json()["detail"]
        # nothing of the refused batch is visible, nothing stored before is lost
        assert c.get("/v1/collections/c/documents/d100").status_code == 404
        assert c.get("/v1/collections/c").json()["documents"] == 10
        hits = c.post("/v1/collections/c/search", json={"vector_ids": {"3": 1.0}, "k": 5}).json()["hits"]
        assert [h["id"] for h in hits] == ["d3"]
        filler.unlink()
        r = c.post("/v1/collections/c/documents", json={"documents": [_doc(200)]})
        assert r.status_code == 200, r.text
        assert c.get("/v1/collections/c").json()["documents"] == 11
        assert c.get("/health").status_code == 200
    finally:
        srv.stop()
    # the acknowledged state survives a restart on the same (now roomier) disk
    srv = Server(small_disk / "data", "--model", "none").start()
    try:
        c = srv.client()
        assert c.get("/v1/collections/c").json()["documents"] == 11
        assert c.get("/v1/collections/c/documents/d200").status_code == 200
    finally:
        srv.stop()
