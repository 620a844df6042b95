"""Service settings: data folder, model, threads, API keys and request limits (validated once)."""

from __future__ import annotations

import logging
import os
import secrets
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


@dataclass
class Limits:
    """Hard caps on requests and connections; each has an ``lsr serve`` flag (service/README.md)."""

    max_k: int = 1000
    max_batch_documents: int = 1000
    max_batch_queries: int = 256
    max_text_chars: int = 100_000
    max_terms: int = 30_000  # non-zeros in one given vector
    max_body_bytes: int = 32 * 1024 * 1024
    max_metadata_bytes: int = 64 * 1024
    # connections and load (enforced by service/server.py and the ASGI guard in service/errors.py)
    max_connections: int = 4096  # open sockets; past it a new one gets 503 + close (fds stay bounded)
    max_in_flight: int = 256  # requests inside the app; past it 503 + Retry-After (load shedding)
    header_timeout_s: float = 10.0  # a request's headers must arrive within this (slow clients: 408 + close)
    body_timeout_s: float = 30.0  # and its body within this after the headers
    max_header_bytes: int = 64 * 1024  # request line + headers; past it 431 + close
    keep_alive_s: float = 5.0  # idle keep-alive connections close after this
    retry_after_s: int = 1  # the Retry-After of a shed request
    query_batch_max: int = 32  # texts per forward pass of a model's query batcher
    query_batch_wait_ms: float = 2.0  # how long the batcher waits for more queries
    query_queue: int = 1024  # queued query-encode requests per model; past it 503
    # torch threads per forward pass. Two OpenMP teams (torch's, the Numba search kernels') on the
    # same cores make each wait on the other: SPLADE text search measured 240-480 ms a query with
    # torch on 2 threads, 30 ms on 1, on a 2-core machine.
    encoder_threads: int = 1


@dataclass
class Settings:
    data_dir: Path = Path("./lsr-data")
    model: str | None = "splade-tiny"  # default model of new collections and of /v1/encode
    threads: int = max(1, os.cpu_count() or 1)
    api_keys: list[str] = field(default_factory=list)
    read_requires_key: bool = False
    load_models: bool = True
    preload_models: bool = True  # load the encoders of existing collections right after /ready
    limits: Limits = field(default_factory=Limits)
    merge_min_docs: int = 1000
    merge_idle_s: float = 10.0
    merge_interval_s: float = 1.0
    cors_origins: list[str] = field(default_factory=list)  # browser origins allowed to call the API (none: same origin only)

    def describe(self) -> dict[str, Any]:
        d = asdict(self)
        d["data_dir"] = str(self.data_dir)
        d["api_keys"] = f"<{len(self.api_keys)} keys>"
        return d


def read_keys_file(path: str | Path) -> list[str]:
    """One key per line; blank lines and ``#`` comments ignored."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"API keys file not found: {path}")
    keys = [ln.strip() for ln in path.read_text().split("\n")]
    return [k for k in keys if k and not k.startswith("#")]


def resolve_api_keys(keys_file: str | None, data_dir: Path) -> list[str]:
    """Keys from the file, else ``$LSR_API_KEYS`` (comma-separated), else a generated key.

    A generated key is kept in ``<data>/api_key`` (mode 0600) so it survives restarts; writes
    are never open without a key.
    """
    if keys_file:
        keys = read_keys_file(keys_file)
        if not keys:
            raise ValueError(f"API keys file {keys_file} holds no keys")
        return keys
    env = os.environ.get("LSR_API_KEYS", "")
    keys = [k.strip() for k in env.split(",") if k.strip()]
    if keys:
        return keys
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / "api_key"
    if path.exists():
        keys = read_keys_file(path)
        if keys:
            log.info("using the API key in %s", path)
            return keys
    key = secrets.token_urlsafe(24)
    fd = os.open(str(path), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(key + "\n")
    log.warning("no API keys configured: generated one for writes, stored in %s", path)
    return [key]
