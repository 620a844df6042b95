"""What every lsr index shares: Hits, input coercion and checks, ids, tombstones, threading."""

from __future__ import annotations

import contextlib
import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numba
import numpy as np

from .sparse import SparseBatch, SparseBatchError

from .ids import IdMap, as_id_list
from .storage import IndexFormatError, load_folder

log = logging.getLogger(__name__)


def _layer_is_threadsafe() -> bool:
    for mod in ("tbbpool", "omppool"):
        try:
            __import__(f"numba.np.ufunc.{mod}")
            return True
        except Exception:  # the library behind the layer is absent
            continue
    return False


# Numba's fallback "workqueue" threading layer must not run two parallel kernels at once.
_PARALLEL_LOCK = threading.Lock() if not _layer_is_threadsafe() else None


@contextlib.contextmanager
def parallel_section(threads: int):
    """Run a prange kernel on ``threads`` threads (thread-local setting, restored afterwards)."""
    old = numba.get_num_threads()
    lock = _PARALLEL_LOCK
    if lock is not None:
        lock.acquire()
    try:
        numba.set_num_threads(threads)
        yield
    finally:
        numba.set_num_threads(old)
        if lock is not None:
            lock.release()


def resolve_threads(threads: int | None) -> int:
    if threads is None:
        return numba.config.NUMBA_NUM_THREADS
    if not isinstance(threads, (int, np.integer)) or isinstance(threads, bool) or threads < 1:
        raise ValueError(f"threads must be a positive int or None, got {threads!r}")
    return min(int(threads), numba.config.NUMBA_NUM_THREADS)


@dataclass(frozen=True)
class Hits:
    """Search results, one row per query, best first.

    ``ids``: (n_queries, k) external ids, int64 with -1 for a missing hit, or an object array of
    str with None when the index has string ids. ``scores``: float32, -inf when missing.
    ``rows``: int64 internal row numbers, -1 when missing. ``ids, scores = hits`` works.
    """

    ids: np.ndarray
    scores: np.ndarray
    rows: np.ndarray

    def __iter__(self) -> Iterator[np.ndarray]:
        yield self.ids
        yield self.scores

    def __len__(self) -> int:
        return self.scores.shape[0]

    def __repr__(self) -> str:
        return f"Hits(n_queries={self.scores.shape[0]}, k={self.scores.shape[1]})"


def coerce_queries(queries, dim: int) -> SparseBatch:
    """SparseBatch (or a scipy sparse matrix) with the index's dim; anything else is an error."""
    if isinstance(queries, SparseBatch):
        batch = queries
    else:
        try:
            import scipy.sparse as sp
        except ImportError:  # pragma: no cover
            sp = None
        if sp is not None and sp.issparse(queries):
            batch = SparseBatch.from_scipy(queries)
        else:
            raise TypeError(f"queries must be a SparseBatch (or scipy sparse matrix), got {type(queries).__name__}")
    batch.check_dim(dim, "queries")
    return batch


def check_k(k, n_live: int) -> int:
    if not isinstance(k, (int, np.integer)) or isinstance(k, bool):
        raise ValueError(f"k must be an int, got {k!r}")
    k = int(k)
    if k <= 0:
        raise ValueError(f"k must be positive, got {k}")
    if k > n_live:
        raise ValueError(f"k={k} is larger than the collection ({n_live} documents)")
    return k


def check_docs(docs, dim: int | None = None, what: str = "docs") -> SparseBatch:
    if not isinstance(docs, SparseBatch):
        try:
            import scipy.sparse as sp

            if sp.issparse(docs):
                docs = SparseBatch.from_scipy(docs)
        except ImportError:  # pragma: no cover
            pass
    if not isinstance(docs, SparseBatch):
        raise TypeError(f"{what} must be a SparseBatch, got {type(docs).__name__}")
    if dim is not None:
        docs.check_dim(dim, what)
    if docs.nnz and (docs.values < 0).any():
        raise SparseBatchError(f"{what}: negative weights cannot be indexed")
    return docs


class BaseIndex:
    """Ids, tombstones, Hits assembly and argument checks shared by ExactIndex and SeismicIndex."""

    kind = "base"
    dim: int
    vocab: tuple[str, ...] | None = None  # token strings of the documents' vocabulary, if known
    _idmap: IdMap
    _deleted: np.ndarray  # uint8 per row

    # ------------------------------------------------------------------ ids and size
    def __len__(self) -> int:
        n = getattr(self, "_n_live", None)
        if n is None:
            n = self._n_live = int(self._deleted.shape[0] - int(np.count_nonzero(self._deleted)))
        return n

    def _changed(self) -> None:
        """Forget what is cached about rows (live count, kernel argument tuples)."""
        self._n_live = None
        self._kernel_args = None

    @property
    def n_rows(self) -> int:
        return int(self._deleted.shape[0])

    @property
    def ids(self):
        """External ids of the live documents in row order (int64 array, or list of str)."""
        return self._idmap.live_ids(self._deleted == 0)

    def _make_hits(self, scores: np.ndarray, rows: np.ndarray) -> Hits:
        return Hits(self._idmap.lookup(rows), scores, rows)

    def _empty_hits(self, k: int) -> Hits:
        rows = np.zeros((0, k), np.int64)
        return self._make_hits(np.zeros((0, k), np.float32), rows)

    def rows_of(self, ids) -> np.ndarray:
        """Internal rows of live documents; unknown or deleted ids raise KeyError."""
        return self._idmap.rows_of(as_id_list(ids))

    def delete(self, ids) -> int:
        """Tombstone documents by external id; they are never returned again. Returns the count."""
        rows = self._idmap.rows_of(as_id_list(ids))
        if not self._deleted.flags.writeable:
            self._deleted = np.array(self._deleted)
        self._deleted[rows] = 1
        self._idmap.set_live(self._deleted == 0)
        self._changed()
        return int(rows.size)

    def _extend_ids(self, ids, n: int) -> None:
        self._idmap = self._idmap.extend(ids, n)
        self._deleted = np.concatenate([np.asarray(self._deleted), np.zeros(n, np.uint8)])
        self._idmap.set_live(self._deleted == 0)
        self._changed()

    def _vocab_arrays(self) -> dict:
        return {"vocab": np.asarray(self.vocab, dtype=str)} if self.vocab is not None else {}

    @classmethod
    def load(cls, path, mmap: bool = True, *, verify: bool = True):
        """Open a saved index of this kind. Arrays are memory-mapped unless ``mmap=False``;
        checksums are verified unless ``verify=False`` (see :func:`lsr.index.storage.load_folder`)."""
        manifest, a = load_folder(path, mmap=mmap, verify=verify)
        if manifest["kind"] != cls.kind:
            raise IndexFormatError(f"{Path(path) / 'manifest.json'}: holds a {manifest['kind']!r} index, not {cls.kind!r}")
        return cls._from_arrays(path, manifest, a)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(docs={len(self)}, dim={self.dim})"
