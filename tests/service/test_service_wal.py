"""The write-ahead log's framing and recovery modes: a torn tail of the last log is dropped,
corruption anywhere else is reported (file + byte offset), never silently skipped."""

from __future__ import annotations

import struct

import pytest

from lsr.index import fileio
from lsr.service.wal import WalCorruption, WriteAheadLog, encode_record, read_records, replay, scan_log


def _log_of(folder, gen: int, n: int):
    """A closed log of generation ``gen`` holding upserts with seq 0..n-1; its path."""
    wal = WriteAheadLog.create(folder, gen)
    for i in range(n):
        wal.append({"seq": i, "op": "upsert", "docs": []})
    wal.close()
    return folder / f"{gen:06d}.log"


def _frame_starts(data: bytes) -> list[int]:
    out, pos = [], 0
    while pos < len(data):
        out.append(pos)
        pos += 8 + struct.unpack_from("<I", data, pos)[0]
    return out


def test_torn_tail_ignored_and_truncated(tmp_path):
    path = _log_of(tmp_path, 1, 5)
    assert path.name == "000001.log"
    whole = path.read_bytes()
    frame = encode_record({"seq": 5, "op": "delete", "ids": ["x"]})
    for tail in (frame[:1], frame[:7], frame[:-1], b"\0" * 40, b"\xff" * 3):  # a crash mid-append
        path.write_bytes(whole + tail)
        recs, valid = read_records(path)
        assert [r["seq"] for r in recs] == [0, 1, 2, 3, 4] and valid == len(whole)
    wal = WriteAheadLog(tmp_path, 1)  # reopening cuts the torn tail before appending
    wal.append({"seq": 5, "op": "delete", "ids": ["y"]})
    wal.close()
    assert [r["seq"] for _, r in replay(tmp_path, 1)] == [0, 1, 2, 3, 4, 5]


def test_corrupt_middle_record_is_an_error_not_a_short_log(tmp_path):
    """Old code: replay stopped at the bad record and returned the first one (silently fewer)."""
    path = _log_of(tmp_path, 3, 3)
    data = bytearray(path.read_bytes())
    second = _frame_starts(bytes(data))[1]
    data[second + 10] ^= 0xFF  # flip a byte inside the second record's payload: crc fails
    path.write_bytes(bytes(data))
    with pytest.raises(WalCorruption) as err:
        read_records(path)
    assert err.value.file == "000003.log" and err.value.offset == second
    assert "000003.log" in str(err.value) and f"byte {second}" in str(err.value)
    with pytest.raises(WalCorruption):
        list(replay(tmp_path, 3))


def test_corrupt_length_field_mid_log(tmp_path):
    path = _log_of(tmp_path, 1, 4)
    data = bytearray(path.read_bytes())
    second = _frame_starts(bytes(data))[1]
    struct.pack_into("<I", data, second, 1 << 29)  # a length running past the end of the file
    path.write_bytes(bytes(data))
    with pytest.raises(WalCorruption) as err:
        scan_log(path)
    assert err.value.offset == second


def test_torn_tail_of_a_non_last_log_is_corruption(tmp_path):
    first = _log_of(tmp_path, 1, 2)
    _log_of(tmp_path, 2, 2)
    first.write_bytes(first.read_bytes() + encode_record({"seq": 9, "op": "delete", "ids": []})[:5])
    with pytest.raises(WalCorruption) as err:
        list(replay(tmp_path, 1))
    assert err.value.file == "000001.log" and "not the last" in str(err.value)
    assert [r["seq"] for _, r in replay(tmp_path, 2)] == [0, 1]  # a start past it never reads it


def test_missing_current_log_is_an_error(tmp_path):
    _log_of(tmp_path, 2, 1)
    with pytest.raises(FileNotFoundError, match="000001.log"):
        list(replay(tmp_path, 1))
    with pytest.raises(FileNotFoundError):
        list(replay(tmp_path / "empty", 1))


def test_atomic_write(tmp_path):
    p = tmp_path / "manifest.json"
    fileio.atomic_write(p, b"one", site="test")
    fileio.atomic_write(p, b"two", site="test")
    assert p.read_bytes() == b"two" and not list(tmp_path.glob(".*.tmp"))
    assert p.stat().st_mode & 0o777 == 0o600


def test_vectors_as_arrays_replay_bit_exact_and_what_orjson_refuses_still_logs(tmp_path):
    import numpy as np

    from lsr.service.wal import parse_frame

    rng = np.random.default_rng(0)
    w = rng.random(4000).astype(np.float32) * np.float32(10) ** rng.integers(-12, 3, 4000).astype(np.float32)
    t = np.arange(4000, dtype=np.int32)
    strided = np.arange(20, dtype=np.float32)[::2]  # not contiguous: written through the fallback of lists
    rec = {"seq": 1, "op": "upsert", "docs": [
        {"id": "a", "t": t, "w": w, "text": "é ✓", "metadata": {"n": 1}},
        {"id": "b", "t": t[:10], "w": strided, "text": None, "metadata": {"big": 2**70, 3: "int key"}},
    ]}
    frame = encode_record(rec)
    back, end, why = parse_frame(frame, 0)
    assert why == "" and end == len(frame)
    a, b = back["docs"]
    assert np.array_equal(np.asarray(a["w"], np.float32), w)  # every float32 weight read back exactly
    assert a["t"] == t.tolist() and a["text"] == "é ✓"
    assert b["w"] == strided.tolist()
    assert b["metadata"] == {"big": 2**70, "3": "int key"}  # past 64 bits: the json fallback, keys as json writes them
    # a NaN in metadata (the Python API does not forbid it) is logged as NaN, as before, not as orjson's null
    nan_rec = {"seq": 2, "op": "upsert", "docs": [{"id": "c", "t": t[:3], "w": w[:3], "metadata": {"x": [float("nan")]}}]}
    back, _, why = parse_frame(encode_record(nan_rec), 0)
    assert why == "" and np.isnan(back["docs"][0]["metadata"]["x"][0])
    assert np.array_equal(np.asarray(back["docs"][0]["w"], np.float32), w[:3])
    wal = WriteAheadLog.create(tmp_path, 1)
    wal.append(rec)
    wal.close()
    recs, _ = read_records(tmp_path / "000001.log")
    assert np.array_equal(np.asarray(recs[0]["docs"][0]["w"], np.float32), w)
