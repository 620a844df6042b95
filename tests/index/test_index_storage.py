"""save -> load (mmap) -> same results; damaged folders raise IndexFormatError naming the file."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from lsr.index import ExactIndex, IndexFormatError, SeismicIndex, load_index


@pytest.fixture(scope="module")
def saved(tmp_path_factory, small_random):
    docs, queries = small_random
    index = SeismicIndex.build(docs, ids=[f"d{i}" for i in range(len(docs))], nknn=3)
    index.delete(["d4"])
    index.add(docs[:5], ids=["e0", "e1", "e2", "e3", "e4"])
    path = tmp_path_factory.mktemp("idx") / "seismic"
    index.save(path)
    return index, path


@pytest.mark.parametrize("mmap", [True, False])
def test_roundtrip_same_results(saved, small_random, mmap):
    index, path = saved
    _, queries = small_random
    loaded = load_index(path, mmap=mmap)
    assert isinstance(loaded, SeismicIndex)
    if mmap:
        assert isinstance(loaded._a["post_off"], np.memmap)
    for kw in (dict(), dict(query_cut=3, heap_factor=0.7, n_knn=3), dict(threads=1)):
        a, b = index.search(queries, k=10, **kw), loaded.search(queries, k=10, **kw)
        assert np.array_equal(a.ids, b.ids)
        np.testing.assert_array_equal(a.scores, b.scores)
    assert loaded.ids == index.ids and len(loaded) == len(index)
    assert loaded.params == index.params
    # a loaded index still takes updates, and can be saved over its own folder
    loaded.delete(["d7"])
    loaded.add(queries[:1], ids=["q"])
    loaded.save(path.parent / "again")
    assert len(load_index(path.parent / "again")) == len(index)


def test_exact_roundtrip(tmp_path, small_random):
    docs, queries = small_random
    index = ExactIndex.build(docs.with_vocab([f"t{i}" for i in range(docs.dim)]))
    index.save(tmp_path / "ex")
    loaded = ExactIndex.load(tmp_path / "ex")
    assert loaded.vocab == index.vocab
    assert np.array_equal(loaded.search(queries, 10).ids, index.search(queries, 10).ids)
    with pytest.raises(IndexFormatError, match="not 'seismic'"):
        SeismicIndex.load(tmp_path / "ex")


def _copy(saved, tmp_path):
    _, path = saved
    dst = tmp_path / "copy"
    shutil.copytree(path, dst)
    return dst


def test_altered_byte_is_caught(saved, tmp_path):
    dst = _copy(saved, tmp_path)
    f = dst / "post_off.npy"
    raw = bytearray(f.read_bytes())
    raw[-3] ^= 0x40
    f.write_bytes(bytes(raw))
    with pytest.raises(IndexFormatError, match="post_off.npy.*sha256"):
        load_index(dst)


def test_truncated_file_is_caught(saved, tmp_path):
    dst = _copy(saved, tmp_path)
    f = dst / "fwd_val.npy"
    f.write_bytes(f.read_bytes()[:-10])
    with pytest.raises(IndexFormatError, match="fwd_val.npy.*truncated"):
        load_index(dst)
    with pytest.raises(IndexFormatError, match="fwd_val.npy"):
        load_index(dst, verify=False)  # the size check is never skipped


def test_missing_files_are_caught(saved, tmp_path):
    dst = _copy(saved, tmp_path)
    (dst / "sum_code.npy").unlink()
    with pytest.raises(IndexFormatError, match="sum_code.npy.*missing"):
        load_index(dst)
    (dst / "manifest.json").unlink()
    with pytest.raises(IndexFormatError, match="manifest.json.*missing"):
        load_index(dst)
    with pytest.raises(FileNotFoundError):
        load_index(tmp_path / "nowhere")


def test_newer_version_and_bad_manifest(saved, tmp_path):
    dst = _copy(saved, tmp_path)
    m = json.loads((dst / "manifest.json").read_text())
    m["format_version"] = 99
    (dst / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(IndexFormatError, match="manifest.json.*newer"):
        load_index(dst)
    (dst / "manifest.json").write_text("{not json")
    with pytest.raises(IndexFormatError, match="manifest.json.*JSON"):
        load_index(dst)


def test_consistent_checksums_but_wrong_structure(saved, tmp_path, replace_arrays):
    """A folder rewritten with valid checksums but inconsistent arrays is refused, not crashed on."""
    dst = _copy(saved, tmp_path)
    off = np.load(dst / "post_off.npy")
    off[0] = np.asarray(saved[0]._a["fwd_ptr"])[-1]  # one past the forward index
    replace_arrays(dst, post_off=off)
    with pytest.raises(IndexFormatError, match="post_off.npy.*out of range"):
        load_index(dst)
