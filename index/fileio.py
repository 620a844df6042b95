"""Durable file I/O: the one place lsr writes, fsyncs and atomically replaces stored files.

Every durable write path (the service's write-ahead log, manifests, segments, index folders) goes
through the functions here, which delegate to a swappable :class:`FileSystem`. Tests install a
fault-injecting double with :func:`use` (drop what was not fsynced at a simulated power cut, fail a
write with ENOSPC); ``site`` names each fsync so a test can remove one and show what breaks.
Files are created 0600 and folders 0700.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import BinaryIO, Iterator

__all__ = ["FileSystem", "use", "current", "open_new", "open_append", "write", "fsync", "fsync_dir",
           "replace", "truncate", "atomic_write", "makedirs", "FILE_MODE", "DIR_MODE"]

FILE_MODE = 0o600
DIR_MODE = 0o700


class FileSystem:
    """Real storage I/O. Subclass and :func:`use` it to inject faults in tests."""

    def open_new(self, path: Path) -> BinaryIO:
        """Create (or truncate) ``path`` for writing, mode 0600."""
        fd = os.open(str(path), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
        return os.fdopen(fd, "wb")

    def open_append(self, path: Path) -> BinaryIO:
        fd = os.open(str(path), os.O_WRONLY | os.O_CREAT | os.O_APPEND, FILE_MODE)
        return os.fdopen(fd, "ab")

    def write(self, fh: BinaryIO, data: bytes) -> None:
        fh.write(data)

    def fsync(self, fh: BinaryIO | int | Path, site: str) -> None:
        """Flush and fsync an open file, a descriptor, or a file by path."""
        if isinstance(fh, (str, Path)):
            fd = os.open(str(fh), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            return
        if isinstance(fh, int):
            os.fsync(fh)
            return
        fh.flush()
        os.fsync(fh.fileno())

    def fsync_dir(self, path: Path, site: str) -> None:
        """fsync a folder so entries created, renamed or removed in it survive a power cut."""
        fd = os.open(str(path), os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def replace(self, src: Path, dst: Path) -> None:
        os.replace(src, dst)

    def truncate(self, path: Path, size: int) -> None:
        os.truncate(path, size)

    def makedirs(self, path: Path) -> None:
        os.makedirs(path, mode=DIR_MODE, exist_ok=True)


_FS: FileSystem = FileSystem()


def current() -> FileSystem:
    return _FS


@contextlib.contextmanager
def use(fs: FileSystem) -> Iterator[FileSystem]:
    """Route lsr's storage I/O through ``fs`` inside the block (tests)."""
    global _FS
    old, _FS = _FS, fs
    try:
        yield fs
    finally:
        _FS = old


def open_new(path: str | Path) -> BinaryIO:
    return _FS.open_new(Path(path))


def open_append(path: str | Path) -> BinaryIO:
    return _FS.open_append(Path(path))


def write(fh: BinaryIO, data: bytes) -> None:
    _FS.write(fh, data)


def fsync(fh: BinaryIO | int | str | Path, *, site: str) -> None:
    _FS.fsync(Path(fh) if isinstance(fh, str) else fh, site)


def fsync_dir(path: str | Path, *, site: str) -> None:
    _FS.fsync_dir(Path(path), site)


def replace(src: str | Path, dst: str | Path) -> None:
    _FS.replace(Path(src), Path(dst))


def truncate(path: str | Path, size: int) -> None:
    """Cut ``path`` to ``size`` bytes (durable only after :func:`fsync`)."""
    _FS.truncate(Path(path), size)


def makedirs(path: str | Path) -> None:
    _FS.makedirs(Path(path))


def atomic_write(path: str | Path, data: bytes, *, site: str) -> None:
    """Replace ``path`` atomically and durably: temporary file, fsync, rename, fsync the folder."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    with open_new(tmp) as fh:
        write(fh, data)
        fsync(fh, site=f"{site}:file")
    replace(tmp, path)
    fsync_dir(path.parent, site=f"{site}:dir")
