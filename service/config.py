"""Service settings: data folder, model, threads, API keys and request limits (validated once)."""

from __future__ import annotations

import logging
import os
import secrets
from dataclasses import asdict, dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)


@dataclass
class Limits:
    max_k: int = 1000
    max_batch_documents: int = 1000
    max_batch_queries: int = 256
    max_text_chars: int = 100_000
    max_terms: int = 30_000  # non-zeros in one given vector
    max_body_bytes: int = 32 * 1024 * 1024
    max_metadata_bytes: int = 64 * 1024


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
    verify_on_load: bool = False

    def describe(self) -> dict:
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
