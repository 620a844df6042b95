"""On-disk format of lsr indexes: a folder with ``manifest.json`` and one raw ``.npy`` per array.

The manifest holds the format version, the index kind, its parameters and counts, and for each
array its file name, dtype, shape, byte size and sha256. ``load_folder`` checks all of it before
an array is trusted: a missing, truncated or altered file, or a manifest written by a newer
format version, raises :class:`IndexFormatError` naming the file. Arrays load with memory mapping.
"""

from __future__ import annotations

import hashlib
import json
import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from . import fileio

log = logging.getLogger(__name__)

FORMAT = "lsr-index"
# 2: Seismic summaries store term ids as a low byte + group directory; 3: Seismic postings hold
# the forward-index offset and length (post_off, post_len) instead of the row (post_rows); 4: Seismic
# summaries store each group's distinct terms once (sum_term, sum_tdir, grp_tptr) instead of a term
# low byte per entry (sum_low)
FORMAT_VERSION = 4
MANIFEST = "manifest.json"
_CHUNK = 8 << 20


class IndexFormatError(ValueError):
    """An index folder that cannot be trusted: missing, truncated or altered file, newer version."""


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while True:
            buf = fh.read(_CHUNK)
            if not buf:
                break
            h.update(buf)  # releases the GIL: files hash in parallel threads
    return h.hexdigest()


def _write_array(folder: Path, name: str, arr: np.ndarray) -> dict[str, Any]:
    arr = np.ascontiguousarray(arr)
    if arr.dtype == object:
        raise TypeError(f"array {name!r} has dtype object; store ids as int64 or fixed-width str")
    fname = f"{name}.npy"
    tmp = folder / f".{fname}.tmp"
    # write to a temp file and rename: an index memory-mapped from this folder keeps its old inode
    with fileio.open_new(tmp) as fh:
        np.save(fh, arr, allow_pickle=False)
        fileio.fsync(fh, site="index.array")
    digest = sha256_file(tmp)
    size = tmp.stat().st_size
    fileio.replace(tmp, folder / fname)
    return {"file": fname, "dtype": arr.dtype.str, "shape": list(arr.shape), "bytes": size, "sha256": digest}


def save_folder(path: str | Path, kind: str, params: dict[str, Any], counts: dict[str, Any], arrays: dict[str, np.ndarray],
                extra: dict[str, Any] | None = None) -> Path:
    """Write ``arrays`` and a manifest into folder ``path`` (created if needed). Returns the path."""
    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise FileExistsError(f"{folder} exists and is not a folder")
    fileio.makedirs(folder)
    entries = {}
    with ThreadPoolExecutor(max_workers=min(4, max(1, len(arrays)))) as pool:
        futs = {name: pool.submit(_write_array, folder, name, arr) for name, arr in arrays.items()}
        for name, fut in futs.items():
            entries[name] = fut.result()
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "kind": kind,
        "params": params,
        "counts": counts,
        "arrays": entries,
    }
    if extra:
        manifest.update(extra)
    # the arrays' renames and the manifest reach the disk together: the manifest is written last
    fileio.atomic_write(folder / MANIFEST, json.dumps(manifest, indent=2, sort_keys=True).encode(), site="index.manifest")
    log.info("saved %s index to %s (%d arrays)", kind, folder, len(arrays))
    return folder


def read_manifest(path: str | Path) -> dict[str, Any]:
    folder = Path(path)
    mpath = folder / MANIFEST
    if not folder.exists():
        raise FileNotFoundError(f"no such index folder: {folder}")
    if not mpath.is_file():
        raise IndexFormatError(f"{mpath}: manifest is missing (not an lsr index folder?)")
    try:
        manifest = json.loads(mpath.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise IndexFormatError(f"{mpath}: manifest is not valid JSON ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise IndexFormatError(f"{mpath}: not an lsr index manifest (format={manifest.get('format') if isinstance(manifest, dict) else None!r})")
    version = manifest.get("format_version")
    if not isinstance(version, int):
        raise IndexFormatError(f"{mpath}: format_version missing or not an integer")
    if version > FORMAT_VERSION:
        raise IndexFormatError(
            f"{mpath}: format version {version} is newer than this lsr supports ({FORMAT_VERSION}); upgrade lsr"
        )
    for key in ("kind", "params", "counts", "arrays"):
        if key not in manifest:
            raise IndexFormatError(f"{mpath}: manifest lacks {key!r}")
    return manifest


def _check_file(folder: Path, name: str, entry: dict[str, Any], verify: bool) -> None:
    fpath = folder / entry["file"]
    if not fpath.is_file():
        raise IndexFormatError(f"{fpath}: array file {name!r} is missing")
    size = fpath.stat().st_size
    if size != entry["bytes"]:
        raise IndexFormatError(f"{fpath}: size {size} bytes, manifest says {entry['bytes']} (truncated or altered)")
    if verify and sha256_file(fpath) != entry["sha256"]:
        raise IndexFormatError(f"{fpath}: sha256 does not match the manifest (file altered or corrupt)")


def load_folder(path: str | Path, *, mmap: bool = True, verify: bool = True) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Read and check an index folder. Returns ``(manifest, arrays)``.

    ``verify=True`` (the default) hashes every file against the manifest before use: a corrupt
    file can never give wrong results. ``verify=False`` skips only the hashing (sizes, headers,
    dtypes and shapes are still checked); use it for a folder you just wrote yourself.
    """
    folder = Path(path)
    manifest = read_manifest(folder)
    entries = manifest["arrays"]
    with ThreadPoolExecutor(max_workers=min(4, max(1, len(entries)))) as pool:
        futs = [pool.submit(_check_file, folder, name, entry, verify) for name, entry in entries.items()]
        for fut in futs:
            fut.result()
    arrays = {}
    for name, entry in entries.items():
        fpath = folder / entry["file"]
        try:
            arr = np.load(fpath, mmap_mode="r" if mmap else None, allow_pickle=False)
        except (OSError, ValueError, EOFError) as exc:  # bad header, short data
            raise IndexFormatError(f"{fpath}: cannot read array {name!r} ({exc})") from None
        if arr.dtype.str != entry["dtype"] or list(arr.shape) != list(entry["shape"]):
            raise IndexFormatError(
                f"{fpath}: array {name!r} is {arr.dtype.str}{list(arr.shape)}, manifest says {entry['dtype']}{entry['shape']}"
            )
        arrays[name] = arr
    return manifest, arrays
