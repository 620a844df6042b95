"""SparseBatch: the one currency between lsr's parts (CSR arrays over a fixed vocabulary).

Converters from and to scipy CSR, ``{id|token: weight}`` dicts and Seismic's JSONL live here and
nowhere else. Construction validates once; everything downstream trusts the arrays.
"""

from __future__ import annotations

import json
import logging
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

import numpy as np
import numpy.typing as npt

from .jsonl import iter_jsonl

__all__ = ["SparseBatch", "SparseBatchError", "load_vectors", "save_vectors"]

log = logging.getLogger(__name__)


class SparseBatchError(ValueError):
    """Raised for malformed sparse input; the message names the row (and file) at fault."""


def _vocab_lookup(vocab: Mapping[str, int] | Sequence[str] | None) -> dict[str, int] | None:
    if vocab is None:
        return None
    if isinstance(vocab, Mapping):
        return dict(vocab)
    return {tok: i for i, tok in enumerate(vocab)}


@dataclass(frozen=True, eq=False)
class SparseBatch:
    """A batch of sparse vectors as CSR arrays.

    ``indptr`` int64 (n + 1), ``indices`` int32 term ids (sorted, unique within each row),
    ``values`` float32 (finite, >= 0), ``dim`` the vocabulary size. ``vocab`` optionally holds
    the token strings (``vocab[i]`` is term ``i``) where a person must read them.

    Build one with :meth:`from_csr` (validates and normalises) or a converter; the plain
    constructor trusts its arguments and is for code that already holds valid arrays.

    >>> b = SparseBatch.from_dicts([{3: 1.0, 1: 0.5}, {}], dim=5)
    >>> b.indptr.tolist(), b.indices.tolist(), b.values.tolist()
    ([0, 2, 2], [1, 3], [0.5, 1.0])
    """

    indptr: np.ndarray
    indices: np.ndarray
    values: np.ndarray
    dim: int
    vocab: tuple[str, ...] | None = None

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_csr(
        cls,
        indptr: npt.ArrayLike,
        indices: npt.ArrayLike,
        values: npt.ArrayLike,
        dim: int,
        *,
        vocab: Sequence[str] | None = None,
        allow_negative: bool = False,
    ) -> "SparseBatch":
        """Validate and normalise CSR arrays: sort indices per row, sum duplicates, drop nothing else.

        Raises :class:`SparseBatchError` naming the row for out-of-range ids, NaN/inf values and
        negative weights (unless ``allow_negative``).
        """
        dim = int(dim)
        if dim <= 0:
            raise SparseBatchError(f"dim must be positive, got {dim}")
        indptr = np.ascontiguousarray(indptr, dtype=np.int64)
        indices_in = np.asarray(indices)
        values_in = np.asarray(values)
        if indptr.ndim != 1 or indptr.size == 0:
            raise SparseBatchError("indptr must be a 1-d array of length n_rows + 1")
        if indptr[0] != 0 or np.any(np.diff(indptr) < 0):
            raise SparseBatchError("indptr must start at 0 and be non-decreasing")
        nnz = int(indptr[-1])
        if indices_in.shape != (nnz,) or values_in.shape != (nnz,):
            raise SparseBatchError(
                f"indices and values must have length indptr[-1]={nnz}, "
                f"got {indices_in.shape} and {values_in.shape}"
            )
        if indices_in.size and not np.issubdtype(indices_in.dtype, np.integer):
            raise SparseBatchError(f"indices must be integers, got dtype {indices_in.dtype}")
        rows = np.repeat(np.arange(indptr.size - 1, dtype=np.int64), np.diff(indptr))
        if nnz:
            bad = (indices_in < 0) | (indices_in >= dim)
            if bad.any():
                r = int(rows[np.argmax(bad)])
                tid = int(indices_in[np.argmax(bad)])
                raise SparseBatchError(f"row {r}: term id {tid} is outside the vocabulary [0, {dim})")
        values_f = values_in.astype(np.float32, copy=False)
        if nnz:
            finite = np.isfinite(values_in.astype(np.float64, copy=False))
            if not finite.all():
                i = int(np.argmin(finite))
                raise SparseBatchError(f"row {int(rows[i])}: weight {values_in[i]!r} is not finite")
            if not allow_negative and (values_in < 0).any():
                i = int(np.argmax(values_in < 0))
                raise SparseBatchError(
                    f"row {int(rows[i])}: negative weight {float(values_in[i])} for term {int(indices_in[i])}"
                )
        indices_i = indices_in.astype(np.int32, copy=False)
        # Normalise: sort by (row, term) and sum duplicates; cheap when already sorted.
        if nnz:
            key = rows * dim + indices_i.astype(np.int64)
            if np.any(np.diff(key) <= 0):
                order = np.argsort(key, kind="stable")
                key = key[order]
                indices_i = indices_i[order]
                values_f = values_f[order]
                uniq, start = np.unique(key, return_index=True)
                if uniq.size != key.size:
                    values_f = np.add.reduceat(values_f.astype(np.float64), start).astype(np.float32)
                    indices_i = indices_i[start]
                    rows_u = (uniq // dim).astype(np.int64)
                    counts = np.bincount(rows_u, minlength=indptr.size - 1)
                    indptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        if vocab is not None:
            vocab = tuple(vocab)
            if len(vocab) != dim:
                raise SparseBatchError(f"vocab has {len(vocab)} tokens but dim is {dim}")
        return cls(
            np.ascontiguousarray(indptr, dtype=np.int64),
            np.ascontiguousarray(indices_i, dtype=np.int32),
            np.ascontiguousarray(values_f, dtype=np.float32),
            dim,
            vocab,
        )

    @classmethod
    def empty(cls, n: int, dim: int) -> "SparseBatch":
        return cls(np.zeros(n + 1, np.int64), np.zeros(0, np.int32), np.zeros(0, np.float32), int(dim))

    @classmethod
    def from_scipy(cls, matrix: Any, *, vocab: Sequence[str] | None = None) -> "SparseBatch":
        """From any scipy sparse matrix or array (converted to CSR once)."""
        import scipy.sparse as sp

        if not sp.issparse(matrix):
            raise SparseBatchError(f"expected a scipy sparse matrix, got {type(matrix).__name__}")
        m = sp.csr_matrix(matrix)
        return cls.from_csr(m.indptr, m.indices, m.data, m.shape[1], vocab=vocab)

    @classmethod
    def from_dense(cls, array: npt.ArrayLike, *, vocab: Sequence[str] | None = None) -> "SparseBatch":
        """From a dense (n, dim) array; zeros are dropped."""
        a = np.asarray(array)
        if a.ndim != 2:
            raise SparseBatchError(f"expected a 2-d array, got shape {a.shape}")
        rows, cols = np.nonzero(a)
        indptr = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=a.shape[0]))])
        return cls.from_csr(indptr, cols, a[rows, cols], a.shape[1], vocab=vocab)

    @classmethod
    def from_dicts(
        cls,
        rows: Iterable[Mapping[Any, Any]],
        *,
        dim: int | None = None,
        vocab: Mapping[str, int] | Sequence[str] | None = None,
    ) -> "SparseBatch":
        """From ``{term_id: weight}`` or ``{token: weight}`` dicts.

        Token keys need ``vocab`` (a token list or a ``{token: id}`` map); an unknown token is an
        error naming the row. ``dim`` defaults to ``len(vocab)``.
        """
        lookup = _vocab_lookup(vocab)
        if dim is None:
            if lookup is None:
                raise SparseBatchError("from_dicts needs dim= or vocab=")
            dim = len(lookup)
        indptr = [0]
        indices: list[int] = []
        values: list[float] = []
        for r, row in enumerate(rows):
            if not isinstance(row, Mapping):
                raise SparseBatchError(f"row {r}: expected a mapping of term to weight, got {type(row).__name__}")
            for key, w in row.items():
                if isinstance(key, str):
                    if lookup is None:
                        raise SparseBatchError(f"row {r}: token {key!r} given but no vocab to map it to an id")
                    tid = lookup.get(key)
                    if tid is None:
                        raise SparseBatchError(f"row {r}: unknown token {key!r}")
                elif isinstance(key, (int, np.integer)) and not isinstance(key, bool):
                    tid = int(key)
                else:
                    raise SparseBatchError(f"row {r}: term key {key!r} must be an int id or a token string")
                try:
                    wf = float(w)
                except (TypeError, ValueError):
                    raise SparseBatchError(f"row {r}: weight {w!r} for term {key!r} is not a number") from None
                indices.append(tid)
                values.append(wf)
            indptr.append(len(indices))
        token_list = None
        if vocab is not None and not isinstance(vocab, Mapping):
            token_list = list(vocab)
        elif lookup is not None and len(lookup) == dim:
            inv = [""] * dim
            ok = True
            for tok, i in lookup.items():
                if 0 <= i < dim:
                    inv[i] = tok
                else:
                    ok = False
            token_list = inv if ok else None
        return cls.from_csr(
            np.asarray(indptr, np.int64),
            np.asarray(indices, np.int64),
            np.asarray(values, np.float64),
            dim,
            vocab=token_list,
        )

    # ------------------------------------------------------------------ views and conversions
    def __len__(self) -> int:
        return self.indptr.size - 1

    @property
    def nnz(self) -> int:
        return int(self.indptr[-1])

    @property
    def shape(self) -> tuple[int, int]:
        return (len(self), self.dim)

    def row(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """``(indices, values)`` of row ``i`` (views, not copies)."""
        s, e = self.indptr[i], self.indptr[i + 1]
        return self.indices[s:e], self.values[s:e]

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for i in range(len(self)):
            yield self.row(i)

    def row_nnz(self) -> np.ndarray:
        return np.diff(self.indptr)

    def __getitem__(self, key: int | np.integer[Any] | slice | Sequence[int] | np.ndarray) -> "SparseBatch":
        """Row selection: an int, a slice or an index array gives a new SparseBatch."""
        if isinstance(key, (int, np.integer)):
            n = len(self)
            i = int(key) + (n if key < 0 else 0)
            if not 0 <= i < n:
                raise IndexError(f"row {key} out of range for a batch of {n}")
            key = slice(i, i + 1)
        if isinstance(key, slice):
            start, stop, step = key.indices(len(self))
            if step == 1:
                s, e = self.indptr[start], self.indptr[max(stop, start)]
                return SparseBatch(
                    self.indptr[start : max(stop, start) + 1] - s,
                    self.indices[s:e],
                    self.values[s:e],
                    self.dim,
                    self.vocab,
                )
            key = np.arange(start, stop, step)
        sel = np.asarray(key, dtype=np.int64)
        lens = np.diff(self.indptr)[sel]
        indptr = np.concatenate([[0], np.cumsum(lens)]).astype(np.int64)
        # position i of the new arrays reads old position starts[row] + (i - indptr[row])
        gather = np.arange(indptr[-1], dtype=np.int64) + np.repeat(self.indptr[sel] - indptr[:-1], lens)
        return SparseBatch(indptr, self.indices[gather], self.values[gather], self.dim, self.vocab)

    def to_scipy(self) -> Any:  # scipy.sparse.csr_matrix (scipy is imported only here)
        import scipy.sparse as sp

        return sp.csr_matrix((self.values, self.indices, self.indptr), shape=self.shape)

    def to_dense(self) -> np.ndarray:
        out = np.zeros(self.shape, np.float32)
        rows = np.repeat(np.arange(len(self)), self.row_nnz())
        out[rows, self.indices] = self.values
        return out

    def to_dicts(self, *, tokens: bool = False) -> list[dict[Any, float]]:
        """``[{term_id: weight}]``, or ``[{token: weight}]`` with ``tokens=True`` (needs vocab)."""
        if tokens and self.vocab is None:
            raise SparseBatchError("to_dicts(tokens=True) needs a batch that carries its vocab")
        out: list[dict[Any, float]] = []
        vocab = self.vocab or ()
        for idx, val in self:
            if tokens:
                out.append({vocab[int(t)]: float(w) for t, w in zip(idx, val)})
            else:
                out.append({int(t): float(w) for t, w in zip(idx, val)})
        return out

    def with_vocab(self, vocab: Sequence[str] | None) -> "SparseBatch":
        if vocab is not None and len(vocab) != self.dim:
            raise SparseBatchError(f"vocab has {len(vocab)} tokens but dim is {self.dim}")
        return SparseBatch(self.indptr, self.indices, self.values, self.dim, None if vocab is None else tuple(vocab))

    def astype(self, dtype: npt.DTypeLike) -> "SparseBatch":
        """Round the values through ``dtype`` (e.g. float16) and back to float32."""
        v = self.values.astype(dtype).astype(np.float32)
        return SparseBatch(self.indptr, self.indices, v, self.dim, self.vocab)

    def prune(self, *, top_k: int | None = None, min_weight: float | None = None) -> "SparseBatch":
        """Keep each row's ``top_k`` largest weights and/or weights ``>= min_weight``."""
        keep = np.ones(self.nnz, bool)
        if min_weight is not None:
            keep &= self.values >= min_weight
        if top_k is not None:
            if top_k <= 0:
                raise SparseBatchError(f"top_k must be positive, got {top_k}")
            rows = np.repeat(np.arange(len(self)), self.row_nnz())
            order = np.lexsort((-self.values, rows))  # by row, heaviest first; ties keep term order
            rank = np.empty(self.nnz, np.int64)
            rank[order] = np.arange(self.nnz) - self.indptr[rows[order]]
            keep &= rank < top_k
        if keep.all():
            return self
        rows = np.repeat(np.arange(len(self)), self.row_nnz())
        counts = np.bincount(rows[keep], minlength=len(self))
        indptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        return SparseBatch(indptr, self.indices[keep], self.values[keep], self.dim, self.vocab)

    @staticmethod
    def concat(batches: Sequence["SparseBatch"]) -> "SparseBatch":
        if not batches:
            raise SparseBatchError("concat needs at least one batch")
        dim = batches[0].dim
        for b in batches:
            if b.dim != dim:
                raise SparseBatchError(f"cannot concat batches of dim {dim} and {b.dim}")
        indptr = [np.zeros(1, np.int64)]
        off = 0
        for b in batches:
            indptr.append(b.indptr[1:] + off)
            off += b.nnz
        return SparseBatch(
            np.concatenate(indptr),
            np.concatenate([b.indices for b in batches]),
            np.concatenate([b.values for b in batches]),
            dim,
            batches[0].vocab,
        )

    def check_dim(self, dim: int, what: str = "queries") -> None:
        if self.dim != dim:
            raise SparseBatchError(f"{what} have dim {self.dim} but the index has dim {dim}")

    def __repr__(self) -> str:
        return f"SparseBatch(n={len(self)}, dim={self.dim}, nnz={self.nnz})"

    # ------------------------------------------------------------------ Seismic JSONL
    @classmethod
    def from_jsonl(
        cls,
        path: str | Path,
        *,
        vocab: Mapping[str, int] | Sequence[str] | None = None,
        dim: int | None = None,
        drop_unknown: bool = False,
    ) -> tuple["SparseBatch", list[str]]:
        """Read Seismic's JSONL input (``{"id", "content", "vector": {token: weight}}`` per line).

        Without ``vocab`` the tokens met are numbered in order of first appearance (the
        vocabulary is returned on the batch). A token outside ``vocab`` is an error, or with
        ``drop_unknown`` (queries: such a token cannot match) dropped with a count in the log.
        Returns ``(batch, ids)``; errors name file and line.
        """
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"no such vectors file: {path}")
        given = _vocab_lookup(vocab)
        grow = given is None
        lookup: dict[str, int] = {} if given is None else given
        ids: list[str] = []
        indptr = [0]
        indices: list[int] = []
        values: list[float] = []
        dropped = 0
        for lineno, rec in iter_jsonl(path, error=SparseBatchError):
            if not isinstance(rec, dict) or not isinstance(rec.get("vector"), dict):
                raise SparseBatchError(f"{path}:{lineno}: expected an object with a 'vector' mapping")
            ids.append(str(rec.get("id", len(ids))))
            for tok, w in rec["vector"].items():
                tid = lookup.get(tok)
                if tid is None and drop_unknown and not grow:
                    dropped += 1
                    continue
                if tid is None:
                    if not grow:
                        raise SparseBatchError(f"{path}:{lineno}: unknown token {tok!r}")
                    tid = lookup[tok] = len(lookup)
                if not isinstance(w, (int, float)) or isinstance(w, bool):
                    raise SparseBatchError(f"{path}:{lineno}: weight of {tok!r} is not a number")
                indices.append(tid)
                values.append(float(w))
            indptr.append(len(indices))
        if dim is None:
            dim = len(lookup) if grow or not isinstance(vocab, Sequence) else len(vocab)
            dim = max(dim, 1)
        token_list = [""] * dim
        for tok, i in lookup.items():
            if i < dim:
                token_list[i] = tok
        try:
            batch = cls.from_csr(
                np.asarray(indptr, np.int64), np.asarray(indices, np.int64), np.asarray(values), dim, vocab=token_list
            )
        except SparseBatchError as exc:
            raise SparseBatchError(f"{path}: {exc}") from None
        if dropped:
            log.warning("%s: dropped %d tokens outside the vocabulary", path, dropped)
        return batch, ids

    def to_jsonl(self, path: str | Path, ids: Sequence[Any] | None = None, contents: Sequence[str] | None = None) -> None:
        """Write Seismic's JSONL (token strings need a vocab; else ids are written as strings)."""
        path = Path(path)
        with open(path, "w", encoding="utf-8") as fh:
            for i, (idx, val) in enumerate(self):
                toks = [self.vocab[int(t)] for t in idx] if self.vocab is not None else [str(int(t)) for t in idx]
                rec = {
                    "id": ids[i] if ids is not None else i,
                    "content": contents[i] if contents is not None else "",
                    "vector": {t: float(w) for t, w in zip(toks, val)},
                }
                fh.write(json.dumps(rec, ensure_ascii=False) + "\n")


def save_vectors(path: str | Path, batch: SparseBatch, ids: Sequence[Any] | None = None) -> None:
    """Save a batch as ``.npz`` (CSR arrays, dim, optional ids and vocab) or Seismic ``.jsonl``."""
    path = Path(path)
    if path.suffix == ".jsonl":
        batch.to_jsonl(path, ids=ids)
        return
    if path.suffix != ".npz":
        raise ValueError(f"unsupported vectors file {path}: expected .npz or .jsonl")
    arrays: dict[str, Any] = dict(indptr=batch.indptr, indices=batch.indices, values=batch.values,
                            dim=np.asarray(batch.dim, np.int64))
    if ids is not None:
        arrays["ids"] = np.asarray([str(x) for x in ids])
    if batch.vocab is not None:
        arrays["vocab"] = np.asarray(batch.vocab)
    with open(path, "wb") as fh:
        np.savez(fh, **arrays)


def load_vectors(
    path: str | Path, *, vocab: Mapping[str, int] | Sequence[str] | None = None
) -> tuple[SparseBatch, list[str] | None]:
    """Load ``.npz`` (from :func:`save_vectors` or scipy's ``save_npz``) or Seismic ``.jsonl[.gz]``.

    Returns ``(batch, ids)``; ``ids`` is None when the file holds none.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such vectors file: {path}")
    name = path.name
    if name.endswith(".jsonl") or name.endswith(".jsonl.gz"):
        return SparseBatch.from_jsonl(path, vocab=vocab)
    if path.suffix != ".npz":
        raise ValueError(f"unsupported vectors file {path}: expected .npz or .jsonl")
    try:
        z = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:  # a damaged file
        raise SparseBatchError(f"{path}: cannot read npz ({exc})") from None
    with z:
        keys = set(z.files)
        if {"indptr", "indices", "values", "dim"} <= keys:
            vocab_arr = [str(t) for t in z["vocab"]] if "vocab" in keys else None
            batch = SparseBatch.from_csr(z["indptr"], z["indices"], z["values"], int(z["dim"]), vocab=vocab_arr)
            ids = [str(x) for x in z["ids"]] if "ids" in keys else None
            return batch, ids
        if {"indptr", "indices", "data", "shape"} <= keys:  # scipy.sparse.save_npz
            shape = tuple(int(x) for x in z["shape"])
            batch = SparseBatch.from_csr(z["indptr"], z["indices"], z["data"], shape[1])
            return batch, None
    raise SparseBatchError(f"{path}: npz lacks CSR arrays (indptr/indices/values/dim or scipy's save_npz layout)")
