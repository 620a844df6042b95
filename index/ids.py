"""External document ids <-> internal rows: the one place where lsr.index maps between them.

Ids are either all integers (or None: rows 0..n-1) or all strings. Rows are never reused: a
deleted document keeps its row (tombstoned) and a re-added id gets a new row.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Sequence, Union

import numpy as np


# What callers pass as document ids: a sequence of ints or of strings, an integer array, or None
# (rows 0..n-1); one id alone is accepted where noted.
IdsLike = Union[Sequence[Any], np.ndarray, None]
OneId = Union[str, int, np.integer[Any]]


class IdMap:
    """Row -> external id array plus a lazily built id -> row dictionary for live rows."""

    def __init__(self, ext: np.ndarray, kind: str, live: np.ndarray | None = None):
        self.kind = kind  # "int" or "str"
        self.ext = ext  # int64 array or object array of str, one per row
        self._row_of: dict[Any, int] | None = None
        self._live = live
        self._pad: np.ndarray | bool | None = None  # lookup table: ext plus a missing marker at [-1] (True: ext is 0..n-1)

    # ------------------------------------------------------------------ construction
    @staticmethod
    def coerce(ids: IdsLike, n: int, *, start: int = 0, what: str = "ids") -> tuple[np.ndarray, str]:
        """Validate ``ids`` for ``n`` new rows; None gives ``start .. start+n-1``."""
        if ids is None:
            return np.arange(start, start + n, dtype=np.int64), "int"
        if isinstance(ids, np.ndarray) and ids.dtype.kind in "iu":
            arr = ids.astype(np.int64).ravel()
            kind = "int"
        else:
            seq = list(ids)
            is_int = [isinstance(x, (int, np.integer)) and not isinstance(x, bool) for x in seq]
            is_str = [isinstance(x, (str, np.str_)) for x in seq]
            if all(is_int):
                arr = np.asarray(seq, dtype=np.int64).reshape(-1)
                kind = "int"
            elif all(is_str):
                arr = np.empty(len(seq), dtype=object)
                arr[:] = [str(x) for x in seq]
                kind = "str"
            else:
                bad = [x for x, i, t in zip(seq, is_int, is_str) if not (i or t)]
                if bad:
                    raise ValueError(f"{what} must be ints or strings; got {type(bad[0]).__name__} {bad[0]!r}")
                raise ValueError(f"{what} must be all ints or all strings, not a mix")
        if arr.shape[0] != n:
            raise ValueError(f"got {arr.shape[0]} {what} for {n} documents")
        if kind == "int" and arr.size and arr.min() < 0:
            raise ValueError(f"{what} must be non-negative (-1 marks a missing hit), got {int(arr.min())}")
        if len(set(arr.tolist())) != arr.shape[0]:
            dup = next(x for x, c in Counter(arr.tolist()).items() if c > 1)
            raise ValueError(f"duplicate document id {dup!r} in {what}")
        return arr, kind

    @classmethod
    def build(cls, ids: IdsLike, n: int) -> "IdMap":
        arr, kind = cls.coerce(ids, n)
        return cls(arr, kind)

    # ------------------------------------------------------------------ lookups
    def _index(self) -> dict[Any, int]:
        if self._row_of is None:
            live = self._live if self._live is not None else np.ones(len(self.ext), bool)
            rows = np.nonzero(live)[0]
            self._row_of = dict(zip(self.ext[rows].tolist(), rows.tolist()))
        return self._row_of

    def set_live(self, live: np.ndarray) -> None:
        self._live = live
        self._row_of = None

    def rows_of(self, ids: OneId | Sequence[Any] | np.ndarray, *, missing: str = "raise") -> np.ndarray:
        """Rows of live documents with these external ids; unknown ids raise KeyError (or give -1)."""
        if isinstance(ids, (str, int, np.integer)):
            ids = [ids]
        index = self._index()
        out = np.empty(len(ids), np.int64)
        for i, x in enumerate(ids):
            key = str(x) if self.kind == "str" else (int(x) if isinstance(x, (int, np.integer)) else x)
            r = index.get(key)
            if r is None:
                if missing == "raise":
                    raise KeyError(f"unknown document id {x!r}")
                r = -1
            out[i] = r
        return out

    def lookup(self, rows: np.ndarray) -> np.ndarray:
        """External ids for an array of rows; -1 rows give -1 (int ids) or None (str ids)."""
        rows = np.asarray(rows, np.int64)
        pad = self._pad
        if pad is None:
            pad = self._pad = self._lookup_table()
        if pad is True:  # ids are the rows themselves
            return rows.copy()
        return np.asarray(pad).take(rows)  # row -1 reads the marker at the end

    def _lookup_table(self) -> np.ndarray | bool:
        n = len(self.ext)
        if self.kind == "int":
            ext = np.asarray(self.ext)
            if n == 0 or (ext[0] == 0 and ext[-1] == n - 1 and bool(np.all(np.diff(ext) == 1))):
                return True
            return np.concatenate([ext, np.full(1, -1, np.int64)])
        pad = np.empty(n + 1, dtype=object)
        pad[:n] = self.ext
        pad[n] = None
        return pad

    def extend(self, ids: IdsLike, n: int) -> "IdMap":
        """A new map with ``n`` more rows (the same id kind); ids must not collide with live ones."""
        start = int(self.ext.max()) + 1 if (self.kind == "int" and len(self.ext)) else len(self.ext)
        arr, kind = self.coerce(ids, n, start=start)
        if n and kind != self.kind:
            raise ValueError(f"index has {self.kind} ids but {kind} ids were given")
        index = self._index()
        for x in arr.tolist():
            if x in index:
                raise ValueError(f"document id {x!r} is already in the index (delete it first)")
        ext = np.concatenate([self.ext, arr]) if self.kind == "int" else np.concatenate([self.ext, arr]).astype(object)
        live = None if self._live is None else np.concatenate([self._live, np.ones(n, bool)])
        return IdMap(ext, self.kind, live)

    # ------------------------------------------------------------------ persistence
    def to_array(self) -> np.ndarray:
        """An array that np.save writes without pickle (int64, or fixed-width unicode)."""
        if self.kind == "int":
            return np.ascontiguousarray(self.ext, np.int64)
        if len(self.ext) == 0:
            return np.zeros(0, dtype="<U1")
        return np.asarray(self.ext.tolist(), dtype=str)

    @classmethod
    def from_array(cls, arr: np.ndarray, kind: str) -> "IdMap":
        if kind == "int":
            return cls(np.asarray(arr, np.int64), "int")
        ext = np.empty(arr.shape[0], dtype=object)
        ext[:] = arr.tolist()
        return cls(ext, "str")

    def live_ids(self, live: np.ndarray) -> np.ndarray | list[Any]:
        ext = self.ext[live]
        return ext if self.kind == "int" else list(ext.tolist())


def as_id_list(ids: OneId | Sequence[Any] | np.ndarray) -> list[Any]:
    return list(ids) if not isinstance(ids, (str, int, np.integer)) else [ids]
