"""Shared by the HTTP benchmarks: a free loopback port, and waiting for a started server to be ready."""

from __future__ import annotations

import socket
import subprocess
import time

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_ready(proc: subprocess.Popen, port: int, timeout: float = 300) -> subprocess.Popen:
    """Return ``proc`` once ``GET /ready`` answers 200 (a first start compiles the kernels: minutes)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/ready", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        if proc.poll() is not None:
            raise SystemExit("server exited early")
        time.sleep(0.2)
    proc.kill()
    raise SystemExit("server not ready")
