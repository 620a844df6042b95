"""What every lsr index shares: Hits, input coercion and checks, ids, tombstones, threading."""

from __future__ import annotations

import contextlib
import functools
import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Self, Sequence

import numba
import numpy as np

from .sparse import SparseBatch, SparseBatchError

from .ids import IdMap, IdsLike, OneId, as_id_list
from .storage import IndexFormatError, load_folder

log = logging.getLogger(__name__)


def _layer_is_threadsafe() -> bool:
    for mod in ("tbbpool", "omppool"):
        try:
            __import__(f"numba.np.ufunc.{mod}")
            return True
        except (ImportError, OSError):  # the library behind the layer is absent
            continue
    return False


# Numba's fallback "workqueue" threading layer must not run two parallel kernels at once.
_PARALLEL_LOCK = threading.Lock() if not _layer_is_threadsafe() else None


@contextlib.contextmanager
def parallel_section(threads: int) -> Iterator[None]:
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
        return int(numba.config.NUMBA_NUM_THREADS)  # type: ignore[attr-defined]
    if not isinstance(threads, (int, np.integer)) or isinstance(threads, bool) or threads < 1:
        raise ValueError(f"threads must be a positive int or None, got {threads!r}")
    return min(int(threads), int(numba.config.NUMBA_NUM_THREADS))  # type: ignore[attr-defined]


@dataclass(frozen=True)
class Hits:
    """Search results, one row per query, best first: what every lsr index returns.

    ``ids``: (n_queries, k) external ids, int64 with -1 for a missing hit, or an object array of
    str with None when the index has string ids. ``scores``: float32, -inf when missing.
    ``rows``: int64 internal row numbers, -1 when missing. ``timings``: seconds spent where the
    path measures them (the GPU path: ``total_s``, ``compute_s``, ``copy_s``), else None.
    ``ids, scores = hits`` works.
    """

    ids: np.ndarray
    scores: np.ndarray
    rows: np.ndarray
    timings: dict[str, float] | None = None

    def __iter__(self) -> Iterator[np.ndarray]:
        yield self.ids
        yield self.scores

    def __len__(self) -> int:
        return int(self.scores.shape[0])

    def __repr__(self) -> str:
        return f"Hits(n_queries={self.scores.shape[0]}, k={self.scores.shape[1]})"


@dataclass(frozen=True)
class SearchParams:
    """Seismic's search knobs, validated here and only here; the CPU index and the GPU path share
    these defaults.

    ``query_cut`` (10): how many of the query's heaviest terms open posting lists.
    ``heap_factor`` (0.9, as pyseismic-lsr): a block is scored when its summary score reaches
    ``heap_factor`` x the current k-th best score; 1.0 is the tightest, smaller visits more blocks.
    ``n_knn`` (0): kNN-graph refinement (needs an index built with ``nknn``).
    ``sorted_blocks`` (True): visit the first opened list's blocks best summary first (the other
    lists go in block order, as pyseismic-lsr's ``sorted=True``).
    ``None`` means the default. :class:`ExactIndex` takes the same knobs and ignores them.

    >>> SearchParams.of(query_cut=5).heap_factor
    0.9
    >>> SearchParams.of(heap_facter=0.5)
    Traceback (most recent call last):
    TypeError: unknown search parameter 'heap_facter' (known: query_cut, heap_factor, n_knn, sorted_blocks)
    """

    query_cut: int = 10
    heap_factor: float = 0.9
    n_knn: int = 0
    sorted_blocks: bool = True

    def __post_init__(self) -> None:
        qc, hf, nk = self.query_cut, self.heap_factor, self.n_knn
        if not isinstance(qc, (int, np.integer)) or isinstance(qc, bool) or qc < 1:
            raise ValueError(f"query_cut must be a positive int, got {qc!r}")
        if not isinstance(hf, (int, float, np.integer, np.floating)) or isinstance(hf, bool) or not 0.0 < hf <= 1.0:
            raise ValueError(f"heap_factor must be in (0, 1], got {hf!r}")
        if not isinstance(nk, (int, np.integer)) or isinstance(nk, bool) or nk < 0:
            raise ValueError(f"n_knn must be an int >= 0, got {nk!r}")
        object.__setattr__(self, "query_cut", int(qc))
        object.__setattr__(self, "heap_factor", float(hf))
        object.__setattr__(self, "n_knn", int(nk))
        object.__setattr__(self, "sorted_blocks", bool(self.sorted_blocks))

    @classmethod
    def of(cls, **knobs: Any) -> "SearchParams":
        """The parameters from keyword knobs (``None``: default); an unknown name raises TypeError."""
        unknown = [k for k in knobs if k not in _KNOBS]
        if unknown:
            raise TypeError(f"unknown search parameter {unknown[0]!r} (known: {', '.join(_KNOBS)})")
        return search_params(*(knobs.get(k) for k in _KNOBS))


_KNOBS = tuple(SearchParams.__dataclass_fields__)
DEFAULT_SEARCH = SearchParams()


def search_params(query_cut: int | None = None, heap_factor: float | None = None, n_knn: int | None = None,
                  sorted_blocks: bool | None = None) -> SearchParams:
    """:class:`SearchParams` from an index's ``search`` arguments (``None``: default), cached so a
    single query pays a dict lookup rather than a validation."""
    try:
        return _cached_params(query_cut, heap_factor, n_knn, sorted_blocks)
    except TypeError:  # an unhashable value: not cached, and the checks name it
        return _cached_params.__wrapped__(query_cut, heap_factor, n_knn, sorted_blocks)


@functools.lru_cache(maxsize=256)
def _cached_params(query_cut: int | None, heap_factor: float | None, n_knn: int | None,
                   sorted_blocks: bool | None) -> SearchParams:
    d = DEFAULT_SEARCH
    return SearchParams(d.query_cut if query_cut is None else query_cut,
                        d.heap_factor if heap_factor is None else heap_factor,
                        d.n_knn if n_knn is None else n_knn,
                        d.sorted_blocks if sorted_blocks is None else sorted_blocks)


def coerce_queries(queries: Any, dim: int) -> SparseBatch:
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


#: The largest k the command-line tools and the REST API accept, with the limit in the message.
#: ``search`` itself takes any k: rows past the matching documents are padded (-1 / -inf).
MAX_K = 10_000


def check_k(k: object) -> int:
    """``k`` as an int >= 1. A ``k`` beyond the collection is allowed: the rows are padded with
    missing hits (-1 / -inf), as for a query that matches fewer than ``k`` documents."""
    if not isinstance(k, (int, np.integer)) or isinstance(k, bool):
        raise ValueError(f"k must be an int, got {k!r}")
    if k <= 0:
        raise ValueError(f"k must be positive, got {k}")
    return int(k)


def check_docs(docs: Any, dim: int | None = None, what: str = "docs") -> SparseBatch:
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
    _n_live: int | None = None
    _kernel_args: tuple[Any, ...] | None = None

    # ------------------------------------------------------------------ ids and size
    def __len__(self) -> int:
        n = self._n_live
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
    def ids(self) -> np.ndarray | list[Any]:
        """External ids of the live documents in row order (int64 array, or list of str)."""
        return self._idmap.live_ids(self._deleted == 0)

    def _make_hits(self, scores: np.ndarray, rows: np.ndarray) -> Hits:
        return Hits(self._idmap.lookup(rows), scores, rows)

    def _empty_hits(self, k: int) -> Hits:
        rows = np.zeros((0, k), np.int64)
        return self._make_hits(np.zeros((0, k), np.float32), rows)

    def rows_of(self, ids: OneId | Sequence[Any] | np.ndarray) -> np.ndarray:
        """Internal rows of live documents; unknown or deleted ids raise KeyError."""
        return self._idmap.rows_of(as_id_list(ids))

    def delete(self, ids: OneId | Sequence[Any] | np.ndarray) -> int:
        """Tombstone documents by external id; they are never returned again. Returns the count."""
        rows = self._idmap.rows_of(as_id_list(ids))
        if not self._deleted.flags.writeable:
            self._deleted = np.array(self._deleted)
        self._deleted[rows] = 1
        self._idmap.set_live(self._deleted == 0)
        self._changed()
        return int(rows.size)

    def _extend_ids(self, ids: IdsLike, n: int) -> None:
        self._idmap = self._idmap.extend(ids, n)
        self._deleted = np.concatenate([np.asarray(self._deleted), np.zeros(n, np.uint8)])
        self._idmap.set_live(self._deleted == 0)
        self._changed()

    def _vocab_arrays(self) -> dict[str, np.ndarray]:
        return {"vocab": np.asarray(self.vocab, dtype=str)} if self.vocab is not None else {}

    @classmethod
    def load(cls, path: str | Path, mmap: bool = True, *, verify: bool = True) -> Any:
        """Open a saved index of this kind. Arrays are memory-mapped unless ``mmap=False``;
        checksums are verified unless ``verify=False`` (see :func:`lsr.index.storage.load_folder`)."""
        # Any rather than Self for now: lsr.service.segment infers a SeismicIndex variable from
        # SeismicIndex.load and assigns an ExactIndex to it in another branch; Self once it annotates it.
        manifest, a = load_folder(path, mmap=mmap, verify=verify)
        if manifest["kind"] != cls.kind:
            raise IndexFormatError(f"{Path(path) / 'manifest.json'}: holds a {manifest['kind']!r} index, not {cls.kind!r}")
        return cls._from_arrays(path, manifest, a)

    @classmethod
    def _from_arrays(cls, path: str | Path, manifest: dict[str, Any], a: dict[str, np.ndarray]) -> Self:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(docs={len(self)}, dim={self.dim})"
