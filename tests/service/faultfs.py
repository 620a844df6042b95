"""A fault-injecting :class:`lsr.index.fileio.FileSystem` for durability tests (after RocksDB's
FaultInjectionTestFS): only what was fsynced survives a simulated power cut.

* ``fsync(file)`` snapshots that file's bytes, keyed by inode; ``fsync_dir(dir)`` snapshots the
  folder's entries (name -> inode). Inodes are pinned with an open descriptor so the kernel cannot
  reuse one for another file while the double remembers it.
* :meth:`tree` / :meth:`power_cut` rebuild the data folder as the durable state says, starting from
  the state at construction (the baseline): a file keeps only its last fsynced bytes (empty if never
  fsynced), entries created, renamed or removed since their folder's last fsync revert, and a file
  or folder whose entry was never synced vanishes with everything under it.
* ``skip_sites`` turns the named fsyncs into no-ops (to show that each one matters);
  :meth:`fail_writes` makes ``write`` fail with ENOSPC (after writing part of the data);
  :meth:`on_site` runs a callback when a site is reached (a power cut "at" that point).
* ``writeback=True``: every write reaches the disk at once (as the kernel's writeback may do), while
  a truncation (not a fileio call) stays undone until an fsync: a partial record can survive a cut.
"""

from __future__ import annotations

import errno
import os
import shutil
from collections import Counter
from pathlib import Path
from typing import Callable

from lsr.index import fileio

Tree = dict  # name -> ("d", Tree) | ("f", bytes)


class FaultFS(fileio.FileSystem):
    def __init__(self, root: str | Path, *, skip_sites=(), writeback: bool = False):
        self.root = Path(root)
        self.writeback = writeback
        self.root.mkdir(parents=True, exist_ok=True)
        self.skip_sites = set(skip_sites)
        self.sites = Counter()  # fsync sites reached (skipped ones too)
        self._hooks: dict[str, list] = {}
        self._fail: dict | None = None
        self._reset()

    # ------------------------------------------------------------------ bookkeeping
    def _reset(self) -> None:
        for fd in getattr(self, "_fds", {}).values():
            os.close(fd)
        self._fds: dict[int, int] = {}  # inode -> pinned descriptor
        self._content: dict[int, bytes] = {}  # file inode -> durable bytes
        self._entries: dict[int, dict[str, int]] = {}  # folder inode -> durable entries
        self._is_dir: dict[int, bool] = {}
        self._root_ino = self._pin(self.root)
        for dirpath, dirnames, filenames in os.walk(self.root):  # the baseline is durable
            self._snap_dir(Path(dirpath))
            for f in filenames:
                self._snap_file(Path(dirpath) / f)

    def _pin(self, path: Path) -> int:
        st = os.stat(path)  # follows /proc/self/fd links to the file
        if st.st_ino not in self._fds:
            self._fds[st.st_ino] = os.open(path, os.O_RDONLY)
        self._is_dir[st.st_ino] = os.path.isdir(path)
        return st.st_ino

    def _snap_file(self, path: Path) -> None:
        ino = self._pin(path)
        with open(path, "rb") as fh:
            self._content[ino] = fh.read()

    def _snap_dir(self, path: Path) -> None:
        ino = self._pin(path)
        self._entries[ino] = {name: self._pin(path / name) for name in os.listdir(path)}

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds = {}

    # ------------------------------------------------------------------ faults
    def on_site(self, site: str, fn: Callable[[], None], nth: int | None = None) -> None:
        """Call ``fn()`` when fsync site ``site`` is reached (every time, or only the ``nth``), before it runs."""
        self._hooks.setdefault(site, []).append((fn, nth))

    def fail_writes(self, *, after_bytes: int = 0, match: str = "", err: int = errno.ENOSPC) -> None:
        """Make writes to files whose name contains ``match`` fail with ``err`` once ``after_bytes``
        more bytes were written (the failing write writes its allowed part first)."""
        self._fail = {"left": after_bytes, "match": match, "err": err}

    def clear_faults(self) -> None:
        self._fail = None

    def _site(self, site: str) -> bool:
        self.sites[site] += 1
        for fn, nth in self._hooks.get(site, []):
            if nth is None or nth == self.sites[site]:
                fn()
        return site not in self.skip_sites

    # ------------------------------------------------------------------ FileSystem
    def write(self, fh, data: bytes) -> None:
        f = self._fail
        if f is not None:
            name = os.readlink(f"/proc/self/fd/{fh.fileno()}")
            if f["match"] in os.path.basename(name):
                if len(data) > f["left"]:
                    part = data[: f["left"]]
                    f["left"] = 0
                    if part:
                        fh.write(part)
                        fh.flush()
                        if self.writeback:
                            self._written_back(fh)
                    raise OSError(f["err"], os.strerror(f["err"]), name)
                f["left"] -= len(data)
        fh.write(data)
        if self.writeback:
            self._written_back(fh)

    def _written_back(self, fh) -> None:
        fh.flush()
        self._snap_file(Path(f"/proc/self/fd/{fh.fileno()}"))

    def fsync(self, fh, site: str) -> None:
        if not self._site(site):
            return
        if isinstance(fh, (str, Path)):
            self._snap_file(Path(fh))
            return
        fd = fh if isinstance(fh, int) else fh.fileno()
        if not isinstance(fh, int):
            fh.flush()
        self._snap_file(Path(f"/proc/self/fd/{fd}"))

    def fsync_dir(self, path: Path, site: str) -> None:
        if not self._site(site):
            return
        self._snap_dir(Path(path))

    # ------------------------------------------------------------------ power cut
    def tree(self) -> Tree:
        """The data folder as it would be after a power cut now."""
        return self._tree_of(self._root_ino)

    def _tree_of(self, ino: int) -> Tree:
        out: Tree = {}
        for name, child in self._entries.get(ino, {}).items():
            if self._is_dir.get(child):
                out[name] = ("d", self._tree_of(child))
            else:
                out[name] = ("f", self._content.get(child, b""))
        return out

    @staticmethod
    def materialize(tree: Tree, dest: str | Path) -> Path:
        dest = Path(dest)
        dest.mkdir(parents=True, exist_ok=True, mode=fileio.DIR_MODE)
        for name, (kind, val) in tree.items():
            if kind == "d":
                FaultFS.materialize(val, dest / name)
            else:
                (dest / name).write_bytes(val)
                os.chmod(dest / name, fileio.FILE_MODE)
        return dest

    def power_cut(self) -> Tree:
        """Rebuild the data folder as the durable state says; that state is the new baseline.
        Close (or abandon) every store on the folder first."""
        tree = self.tree()
        for p in self.root.iterdir():
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            else:
                p.unlink()
        self.materialize(tree, self.root)
        self._reset()
        return tree
