"""Write-ahead log: length + crc32 framed JSON records, fsynced before a write is acknowledged.

Replay stops at the first torn or corrupt frame (a crash mid-append); everything before it is
returned. Files are numbered (``000001.log``) so a merge can start a new file and drop old ones.
"""

from __future__ import annotations

import json
import logging
import os
import struct
import zlib
from pathlib import Path
from typing import Iterator

log = logging.getLogger(__name__)

_HEADER = struct.Struct("<II")  # payload length, crc32 of payload
MAX_RECORD = 1 << 30


def fsync_dir(path: str | Path) -> None:
    """fsync a directory so a rename or create inside it survives a crash."""
    fd = os.open(str(path), os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: str | Path, data: bytes) -> None:
    """Replace ``path`` atomically: write a temporary file, fsync it, rename, fsync the folder."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def log_name(number: int) -> str:
    return f"{number:06d}.log"


def log_numbers(folder: Path) -> list[int]:
    out = []
    for p in folder.glob("*.log"):
        try:
            out.append(int(p.stem))
        except ValueError:
            continue
    return sorted(out)


def encode_record(record: dict) -> bytes:
    payload = json.dumps(record, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    return _HEADER.pack(len(payload), zlib.crc32(payload)) + payload


def read_records(path: str | Path) -> tuple[list[dict], int]:
    """Read a log file. Returns ``(records, valid_bytes)``; a torn tail is ignored (and logged)."""
    path = Path(path)
    data = path.read_bytes()
    out: list[dict] = []
    pos = 0
    while pos + _HEADER.size <= len(data):
        length, crc = _HEADER.unpack_from(data, pos)
        start = pos + _HEADER.size
        end = start + length
        if length > MAX_RECORD or end > len(data):
            break
        payload = data[start:end]
        if zlib.crc32(payload) != crc:
            break
        try:
            out.append(json.loads(payload))
        except ValueError:
            break
        pos = end
    if pos != len(data):
        log.warning("%s: ignoring %d bytes of torn tail after %d records", path, len(data) - pos, len(out))
    return out, pos


class WriteAheadLog:
    """Append-only log file; :meth:`append` returns only after the record is on disk."""

    def __init__(self, folder: str | Path, number: int):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.number = number
        self.path = self.folder / log_name(number)
        existed = self.path.exists()
        if existed:
            # Cut a torn tail so new records are not appended after garbage.
            _, valid = read_records(self.path)
            if valid != self.path.stat().st_size:
                with open(self.path, "r+b") as fh:
                    fh.truncate(valid)
                    os.fsync(fh.fileno())
        self._fh = open(self.path, "ab")
        if not existed:
            os.fsync(self._fh.fileno())
            fsync_dir(self.folder)

    def append(self, record: dict) -> int:
        frame = encode_record(record)
        self._fh.write(frame)
        self._fh.flush()
        os.fsync(self._fh.fileno())
        return len(frame)

    def size(self) -> int:
        return self._fh.tell()

    def close(self) -> None:
        try:
            self._fh.close()
        except OSError:
            pass


def replay(folder: str | Path, start: int) -> Iterator[tuple[int, dict]]:
    """Yield ``(log_number, record)`` for every log file numbered ``>= start``, in order."""
    folder = Path(folder)
    if not folder.exists():
        return
    for n in log_numbers(folder):
        if n < start:
            continue
        records, _ = read_records(folder / log_name(n))
        for rec in records:
            yield n, rec
