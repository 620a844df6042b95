"""The write-ahead log's framing: torn and corrupt tails are cut, whole records survive."""

from __future__ import annotations

import struct

from lsr.service.wal import WriteAheadLog, atomic_write, encode_record, read_records, replay


def _log_of(folder, gen: int, n: int):
    """A closed log of generation ``gen`` holding upserts with seq 0..n-1; its path."""
    wal = WriteAheadLog(folder, gen)
    for i in range(n):
        wal.append({"seq": i, "op": "upsert", "docs": []})
    wal.close()
    return folder / f"{gen:06d}.log"


def test_torn_tail_ignored_and_truncated(tmp_path):
    path = _log_of(tmp_path, 1, 5)
    assert path.name == "000001.log"
    whole = path.read_bytes()
    frame = encode_record({"seq": 5, "op": "delete", "ids": ["x"]})
    for cut in (1, 7, len(frame) - 1):  # a crash mid-append at several points
        path.write_bytes(whole + frame[:cut])
        recs, valid = read_records(path)
        assert [r["seq"] for r in recs] == [0, 1, 2, 3, 4] and valid == len(whole)
    wal = WriteAheadLog(tmp_path, 1)  # reopening cuts the torn tail before appending
    wal.append({"seq": 5, "op": "delete", "ids": ["y"]})
    wal.close()
    assert [r["seq"] for _, r in replay(tmp_path, 1)] == [0, 1, 2, 3, 4, 5]


def test_corrupt_record_stops_replay(tmp_path):
    path = _log_of(tmp_path, 3, 3)
    data = bytearray(path.read_bytes())
    first = struct.unpack_from("<I", data, 0)[0] + 8
    data[first + 10] ^= 0xFF  # flip a byte inside the second record's payload: crc fails
    path.write_bytes(bytes(data))
    recs, _ = read_records(path)
    assert [r["seq"] for r in recs] == [0]
    assert list(replay(tmp_path, 4)) == []  # files below the start are skipped


def test_atomic_write(tmp_path):
    p = tmp_path / "manifest.json"
    atomic_write(p, b"one")
    atomic_write(p, b"two")
    assert p.read_bytes() == b"two" and not list(tmp_path.glob(".*.tmp"))
