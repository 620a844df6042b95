"""ExactIndex: exhaustive top-k by sparse dot product; the reference for recall and tests."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, NoReturn, Sequence

import numpy as np

from .sparse import SparseBatch

from . import kernels as K
from .base import BaseIndex, Hits, search_params, check_docs, check_k, coerce_queries, parallel_section, resolve_threads
from .filter import check_allowed
from .ids import IdMap, IdsLike, OneId
from .storage import IndexFormatError, save_folder

log = logging.getLogger(__name__)


def top_rows(scores: np.ndarray, k: int) -> np.ndarray:
    """Positions of the ``k`` largest entries of a 1-D score array, best first (ties: position
    ascending, the order every lsr index breaks them); all positions when ``k`` reaches the length."""
    if scores.shape[0] > k:  # every row scoring at least the k-th best, so a tie at the cut keeps the first rows
        part = np.flatnonzero(scores >= scores[np.argpartition(-scores, k - 1)[k - 1]])
    else:
        part = np.arange(scores.shape[0])
    out: np.ndarray = part[np.lexsort((part, -scores[part]))][:k]
    return out

class ExactIndex(BaseIndex):
    """Exact top-k over float32 document vectors (term-at-a-time over an inverted copy).

    >>> from lsr import SparseBatch
    >>> docs = SparseBatch.from_dicts([{0: 1.0, 2: 0.5}, {1: 2.0}, {0: 0.2, 1: 0.1}], dim=3)
    >>> idx = ExactIndex.build(docs, ids=["a", "b", "c"])
    >>> hits = idx.search(SparseBatch.from_dicts([{0: 1.0}], dim=3), k=2)
    >>> hits.ids.tolist(), hits.scores.tolist()
    ([['a', 'c']], [[1.0, 0.20000000298023224]])

    Hits are documents with a positive score; ties are broken by row (insertion order).
    """

    kind = "exact"
    _inv_ptr: np.ndarray  # the inverted copy: term -> (rows, values)
    _inv_rows: np.ndarray
    _inv_val: np.ndarray

    def __init__(self, d_ptr: np.ndarray, d_idx: np.ndarray, d_val: np.ndarray, dim: int, idmap: IdMap,
                 deleted: np.ndarray, inv: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None):
        self.dim = int(dim)
        self._d_ptr, self._d_idx, self._d_val = d_ptr, d_idx, d_val
        self._idmap = idmap
        self._deleted = deleted
        if inv is None:
            inv = K.csr_transpose(d_ptr, d_idx, d_val, self.dim)
        self._inv_ptr, self._inv_rows, self._inv_val = inv
        self._idmap.set_live(np.asarray(self._deleted) == 0)

    @classmethod
    def build(cls, docs: SparseBatch, ids: IdsLike = None) -> "ExactIndex":
        """Index ``docs``; ``ids`` are external ids (ints or strings), default 0..n-1."""
        docs = check_docs(docs)
        idmap = IdMap.build(ids, len(docs))
        index = cls(docs.indptr, docs.indices, docs.values, docs.dim, idmap, np.zeros(len(docs), np.uint8))
        index.vocab = docs.vocab
        return index

    def search(self, queries: SparseBatch, k: int = 10, *, query_cut: int | None = None,
               heap_factor: float | None = None, n_knn: int | None = None, sorted_blocks: bool | None = None,
               threads: int | None = None, allowed: np.ndarray | None = None) -> Hits:
        """Exact top-``k`` per query; ``threads`` splits a batch (default: all cores).

        Seismic's knobs (:class:`SearchParams`) are checked and then ignored, so callers can switch
        index types without changing the call; a misspelt knob is a TypeError. An empty index or
        a ``k`` beyond it gives rows padded with -1 / -inf. ``allowed`` (bool per row): only those
        documents are ranked (the reference for a filtered search).
        """
        queries = coerce_queries(queries, self.dim)
        k = check_k(k)
        search_params(query_cut, heap_factor, n_knn, sorted_blocks)  # checked, then ignored
        if len(queries) == 0:
            return self._empty_hits(k)
        nthreads = resolve_threads(threads)
        n_chunks = max(1, min(nthreads, len(queries)))
        skip = np.asarray(self._deleted)
        if allowed is not None:  # the rows outside the filter are skipped as tombstones are
            skip = ((skip != 0) | ~check_allowed(allowed, self.n_rows)).view(np.uint8)
        args = (queries.indptr, queries.indices, queries.values, k, self._inv_ptr, self._inv_rows, self._inv_val,
                skip, n_chunks)
        with parallel_section(n_chunks):
            scores, rows = K.exact_search(*args)
        return self._make_hits(scores, rows)

    def get(self, ids: OneId | Sequence[Any] | np.ndarray) -> SparseBatch:
        """The stored vectors of these documents (a SparseBatch in the order asked)."""
        rows = self.rows_of(ids)
        full = SparseBatch(self._d_ptr, self._d_idx, self._d_val, self.dim)
        return full[rows]

    def add(self, docs: SparseBatch, ids: IdsLike = None) -> None:
        """Append documents (ids must be new); the inverted copy is rebuilt (O(nnz))."""
        docs = check_docs(docs, self.dim)
        self._extend_ids(ids, len(docs))
        nnz0 = int(self._d_ptr[-1])
        self._d_ptr = np.concatenate([np.asarray(self._d_ptr), docs.indptr[1:] + nnz0])
        self._d_idx = np.concatenate([np.asarray(self._d_idx), docs.indices])
        self._d_val = np.concatenate([np.asarray(self._d_val), docs.values])
        self._inv_ptr, self._inv_rows, self._inv_val = K.csr_transpose(self._d_ptr, self._d_idx, self._d_val, self.dim)

    def stats(self) -> dict[str, Any]:
        arrays = self._arrays()
        nbytes = {k: int(v.nbytes) for k, v in arrays.items()}
        nnz = int(self._d_ptr[-1])
        total = sum(nbytes.values())
        return {
            "kind": self.kind,
            "docs": len(self),
            "rows": self.n_rows,
            "deleted": self.n_rows - len(self),
            "dim": self.dim,
            "nnz": nnz,
            "bytes": nbytes,
            "bytes_total": total,
            "bytes_per_component": total / max(nnz, 1),
        }

    def _arrays(self) -> dict[str, np.ndarray]:
        return {
            "d_ptr": self._d_ptr, "d_idx": self._d_idx, "d_val": self._d_val,
            "inv_ptr": self._inv_ptr, "inv_rows": self._inv_rows, "inv_val": self._inv_val,
            "deleted": np.asarray(self._deleted), "ids": self._idmap.to_array(), **self._vocab_arrays(),
        }

    def save(self, path: str | Path) -> Path:
        """Write the index folder (manifest + arrays with checksums)."""
        counts = {"rows": self.n_rows, "docs": len(self), "nnz": int(self._d_ptr[-1]), "dim": self.dim}
        return save_folder(path, self.kind, {}, counts, self._arrays(), {"id_kind": self._idmap.kind})

    @classmethod
    def _from_arrays(cls, path: str | Path, manifest: dict[str, Any], a: dict[str, np.ndarray]) -> "ExactIndex":
        dim = int(manifest["counts"]["dim"])
        n = a["d_ptr"].shape[0] - 1
        _check_structure(path, a, dim, n)
        idmap = IdMap.from_array(a["ids"], manifest.get("id_kind", "int"))
        index = cls(a["d_ptr"], a["d_idx"], a["d_val"], dim, idmap, np.array(a["deleted"]),
                    inv=(a["inv_ptr"], a["inv_rows"], a["inv_val"]))
        index.vocab = _load_vocab(path, a, dim)
        return index


def _load_vocab(path: str | Path, a: dict[str, np.ndarray], dim: int) -> tuple[str, ...] | None:
    if "vocab" not in a:
        return None
    if a["vocab"].shape[0] != dim:
        raise IndexFormatError(f"{Path(path) / 'vocab.npy'}: has {a['vocab'].shape[0]} tokens, dim is {dim}")
    return tuple(str(t) for t in a["vocab"].tolist())


def _check_structure(path: str | Path, a: dict[str, np.ndarray], dim: int, n: int) -> None:
    """Cheap consistency checks so a bad folder fails with a message, never an out-of-bounds read."""
    folder = Path(path)

    def bad(name: str, why: str) -> NoReturn:
        raise IndexFormatError(f"{folder / (name + '.npy')}: {why}")

    if a["deleted"].shape[0] != n:
        bad("deleted", f"has {a['deleted'].shape[0]} rows, expected {n}")
    if a["ids"].shape[0] != n:
        bad("ids", f"has {a['ids'].shape[0]} ids, expected {n}")
    if a["d_ptr"][-1] != a["d_idx"].shape[0] or a["d_idx"].shape != a["d_val"].shape:
        bad("d_ptr", "does not match d_idx/d_val")
    if a["inv_ptr"].shape[0] != dim + 1 or a["inv_ptr"][-1] != a["inv_rows"].shape[0]:
        bad("inv_ptr", "does not match inv_rows or dim")
    if a["d_idx"].size and (int(a["d_idx"].max()) >= dim or int(a["d_idx"].min()) < 0):
        bad("d_idx", "term id out of range")
    if a["inv_rows"].size and (int(a["inv_rows"].max()) >= n or int(a["inv_rows"].min()) < 0):
        bad("inv_rows", "row out of range")
