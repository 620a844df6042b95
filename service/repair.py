"""``lsr repair COLLECTION --data DIR``: salvage a collection whose write-ahead log is damaged.

A collection with log corruption other than a torn tail opens in a ``failed`` state (see
:mod:`lsr.service.wal`). Repair, with the server stopped (it takes the data folder's lock):

* scans every log file the manifest has not folded in, frame by frame; at a bad frame it looks for
  the next valid frame and drops the bytes in between, keeping every good record (a record whose
  checksum holds but whose content fails validation is dropped too);
* rewrites each damaged log durably (temporary file, fsync, rename, fsync of ``wal/``);
* creates an empty log for a missing current one (its records are lost and reported as such);
* reports what was dropped (count, file, byte offset, bytes, why) and whether the collection opens.

Damaged segment files cannot be salvaged here (they are reported; restore them from a backup).
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import sys
from pathlib import Path
from typing import Any

from lsr.index import fileio
from lsr.index.cli import HelpFormatter

from .collection import Collection, MergePolicy, validate_name, validate_record
from .wal import parse_frame, log_name, log_numbers, next_valid_frame

__all__ = ["repair", "repair_main", "RepairError"]


class RepairError(RuntimeError):
    """The collection cannot be repaired here (no such collection, unreadable manifest, folder in use)."""


def _salvage(data: bytes, file: str, dim: int, last: bool) -> tuple[list[bytes], list[dict[str, Any]]]:
    """Good frames of one log and the dropped regions."""
    good: list[bytes] = []
    dropped: list[dict[str, Any]] = []
    pos = 0
    while pos < len(data):
        rec, end, why = parse_frame(data, pos)
        if rec is not None:
            try:
                validate_record(rec, dim)
            except ValueError as exc:
                dropped.append({"file": file, "offset": pos, "bytes": end - pos, "why": f"invalid record: {exc}"})
                pos = end
                continue
            good.append(bytes(data[pos:end]))
            pos = end
            continue
        nxt = next_valid_frame(data, pos)
        stop = len(data) if nxt is None else nxt
        kind = "torn tail" if nxt is None and last else "corrupt"
        dropped.append({"file": file, "offset": pos, "bytes": stop - pos, "why": f"{kind}: {why}"})
        pos = stop
    return good, dropped


def repair(data_dir: str | Path, name: str, *, dry_run: bool = False) -> dict[str, Any]:
    """Salvage collection ``name`` of ``data_dir`` (server stopped). Returns the report:

    ``{"collection", "dry_run", "logs_scanned", "records_kept", "dropped": [{"file", "offset",
    "bytes", "why"}], "dropped_count", "dropped_bytes", "missing_logs", "segment_errors", "ok",
    "documents", "error"}``. ``ok`` says whether the collection opens afterwards.
    """
    validate_name(name)
    data_dir = Path(data_dir)
    cdir = data_dir / "collections" / name
    if not (cdir / "manifest.json").is_file():
        raise RepairError(f"no collection {name!r} in {data_dir} (or its manifest.json is missing)")
    lock_fh = open(data_dir / "LOCK", "a+")
    try:
        try:
            fcntl.flock(lock_fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise RepairError(f"{data_dir} is in use by another lsr process (a running server?); stop it first") from None
        return _repair(cdir, name, dry_run)
    finally:
        lock_fh.close()


def _repair(cdir: Path, name: str, dry_run: bool) -> dict[str, Any]:
    try:
        manifest = json.loads((cdir / "manifest.json").read_bytes())
        start = int(manifest["wal_start"])
        dim = int(manifest["config"]["dim"])
    except (ValueError, KeyError, TypeError) as exc:
        raise RepairError(f"collection {name!r}: manifest.json is unreadable ({exc}); cannot repair") from None
    wal_dir = cdir / "wal"
    report: dict[str, Any] = {"collection": name, "dry_run": dry_run, "logs_scanned": [], "records_kept": 0, "dropped": [],
                    "missing_logs": [], "segment_errors": []}
    numbers = [n for n in (log_numbers(wal_dir) if wal_dir.is_dir() else []) if n >= start]
    wanted = list(range(start, (numbers[-1] if numbers else start) + 1))
    if not dry_run:
        fileio.makedirs(wal_dir)
    for n in wanted:
        path = wal_dir / log_name(n)
        if n not in numbers:
            report["missing_logs"].append(log_name(n))
            if not dry_run:
                fileio.atomic_write(path, b"", site="repair.log")
            continue
        data = path.read_bytes()
        good, dropped = _salvage(data, log_name(n), dim, last=(n == wanted[-1]))
        report["logs_scanned"].append(log_name(n))
        report["records_kept"] += len(good)
        report["dropped"].extend(dropped)
        if dropped and not dry_run:
            fileio.atomic_write(path, b"".join(good), site="repair.log")
    report["dropped_count"] = len(report["dropped"])
    report["dropped_bytes"] = sum(d["bytes"] for d in report["dropped"])
    from .segment import verify_segment  # noqa: PLC0415

    for s in manifest.get("segments", []):
        try:
            verify_segment(cdir / "segments" / s["name"])
        except Exception as exc:  # noqa: BLE001 - reported, not fixed
            report["segment_errors"].append(str(exc).replace(str(cdir) + "/", ""))
    report["ok"], report["documents"], report["error"] = False, None, None
    if dry_run:
        return report
    try:
        # only a check: the logs rewritten here are durable (atomic_write) and a server's open
        # syncs the replayed log before it serves it
        col = Collection.open(cdir, MergePolicy(), sync_log=False)
    except Exception as exc:  # noqa: BLE001 - the report says why
        report["error"] = f"{type(exc).__name__}: {exc}".replace(str(cdir) + "/", "")
    else:
        report["ok"], report["documents"] = True, len(col)
        col.close()
    return report


def repair_main(argv: list[str] | None = None, prog: str = "lsr repair") -> int:
    """CLI: print the repair report as JSON. Exit 0 when the collection opens afterwards, 1 when it
    still does not (see the report), 2 on a usage error or when the data folder is in use."""
    p = argparse.ArgumentParser(prog=prog, description="Salvage a collection whose write-ahead log is damaged "
                                                       "(keeps every good record, reports what was dropped); stop the server first.",
                                formatter_class=HelpFormatter)
    p.add_argument("collection", metavar="COLLECTION")
    p.add_argument("--data", metavar="DIR", default=os.environ.get("LSR_DATA", "./lsr-data"), help="the data folder")
    p.add_argument("--dry-run", action="store_true", help="only report what would be dropped")
    args = p.parse_args(argv)
    try:
        report = repair(args.data, args.collection, dry_run=args.dry_run)
    except (RepairError, ValueError, OSError) as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(report, indent=1))
    return 0 if report["ok"] or args.dry_run else 1


if __name__ == "__main__":
    sys.exit(repair_main())
