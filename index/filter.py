"""Metadata filters: a parsed filter (equality, IN and ranges on flat metadata fields) and a
columnar table of documents' metadata that turns a filter into an allowed-row mask.

The mask is what the indexes take (``search(..., allowed=mask)``); this module never scores.

>>> table = MetadataTable.from_records([{"year": 2019, "lang": "en"}, {"year": 2021, "lang": "de"},
...                                     {"year": 2022, "lang": "en"}, None])
>>> table.mask({"lang": "en", "year": {"gte": 2020}}).tolist()
[False, False, True, False]
>>> table.mask({"lang": ["en", "de"]}).tolist()
[True, True, True, False]
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence, Union

import numpy as np

__all__ = ["FilterError", "MetadataFilter", "MetadataTable", "Scalar", "check_allowed", "FILTER_EXACT_FRACTION",
           "MAX_FILTER_FIELDS", "MAX_FILTER_VALUES"]

#: A filtered Seismic search scores the allowed documents exactly (forward index) when at most this
#: share of the rows is allowed; above it, the blocked search runs with the others skipped.
FILTER_EXACT_FRACTION = 0.1

Scalar = Union[str, int, float, bool]
MAX_FILTER_FIELDS = 32
MAX_FILTER_VALUES = 1024
MAX_FIELD_NAME = 128
MAX_STRING = 512
RANGE_OPS = ("gt", "gte", "lt", "lte")


class FilterError(ValueError):
    """A filter that cannot be read; the message names the field and what was expected."""


def check_allowed(allowed: object, n_rows: int) -> np.ndarray:
    """An allowed-row mask as a contiguous bool array of the index's row count."""
    if not isinstance(allowed, np.ndarray) or allowed.dtype != np.bool_ or allowed.ndim != 1:
        raise ValueError(f"allowed must be a 1-d bool array (one entry per index row), got "
                         f"{type(allowed).__name__}{'' if not isinstance(allowed, np.ndarray) else ' of ' + str(allowed.dtype)}")
    if allowed.shape[0] != n_rows:
        raise ValueError(f"allowed has {allowed.shape[0]} entries, the index has {n_rows} rows")
    return np.ascontiguousarray(allowed)


@dataclass(frozen=True)
class _Cond:
    field: str
    values: tuple[Scalar, ...] = ()  # equality / IN (any of)
    bounds: tuple[tuple[str, float | str], ...] = ()  # range: (op, bound), all numbers or all strings


def _scalar(field: str, v: Any) -> Scalar:
    if isinstance(v, bool):
        return v
    if isinstance(v, (int, np.integer)):
        return int(v)
    if isinstance(v, (float, np.floating)):
        if not math.isfinite(v):
            raise FilterError(f"filter field {field!r}: {v!r} is not a finite number")
        return float(v)
    if isinstance(v, str):
        if len(v) > MAX_STRING:
            raise FilterError(f"filter field {field!r}: a string value is longer than {MAX_STRING} characters")
        return v
    raise FilterError(f"filter field {field!r}: expected a string, number or boolean, got {type(v).__name__} {v!r}")


class MetadataFilter:
    """A conjunction of conditions on top-level metadata fields, parsed from JSON-like data:

    - ``{"lang": "en"}``: equality (string, number or boolean; ``1`` does not match ``true``);
    - ``{"lang": ["en", "de"]}``: any of the values (IN);
    - ``{"year": {"gte": 2015, "lt": 2020}}``: a range with ``gt``/``gte``/``lt``/``lte``, bounds all
      numbers (matching numeric values) or all strings (lexicographic, e.g. ISO dates).

    A document without the field, or with a non-scalar value there, matches no condition on it.

    >>> MetadataFilter.parse({"year": {"from": 2015}})
    Traceback (most recent call last):
    lsr.index.filter.FilterError: filter field 'year': unknown range operator 'from' (use gt, gte, lt, lte)
    """

    def __init__(self, conds: Sequence[_Cond]) -> None:
        self.conds = tuple(conds)

    @classmethod
    def parse(cls, spec: Mapping[str, Any] | "MetadataFilter") -> "MetadataFilter":
        if isinstance(spec, MetadataFilter):
            return spec
        if not isinstance(spec, Mapping):
            raise FilterError(f"a filter is an object of field conditions, got {type(spec).__name__}")
        if not spec:
            raise FilterError("a filter needs at least one field condition")
        if len(spec) > MAX_FILTER_FIELDS:
            raise FilterError(f"a filter has at most {MAX_FILTER_FIELDS} fields, got {len(spec)}")
        conds = []
        for field, cond in spec.items():
            if not isinstance(field, str) or not field or len(field) > MAX_FIELD_NAME:
                raise FilterError(f"filter field names are strings of 1-{MAX_FIELD_NAME} characters, got {field!r}")
            if isinstance(cond, Mapping):
                if not cond:
                    raise FilterError(f"filter field {field!r}: an empty range")
                bounds = []
                for op, b in cond.items():
                    if op not in RANGE_OPS:
                        raise FilterError(f"filter field {field!r}: unknown range operator {op!r} (use gt, gte, lt, lte)")
                    sb = _scalar(field, b)
                    if isinstance(sb, bool):
                        raise FilterError(f"filter field {field!r}: a range bound must be a number or a string, got {b!r}")
                    bounds.append((op, float(sb) if not isinstance(sb, str) else sb))
                if len({isinstance(b, str) for _, b in bounds}) > 1:
                    raise FilterError(f"filter field {field!r}: range bounds must be all numbers or all strings")
                conds.append(_Cond(field, bounds=tuple(bounds)))
            elif isinstance(cond, (list, tuple)):
                if not 1 <= len(cond) <= MAX_FILTER_VALUES:
                    raise FilterError(f"filter field {field!r}: a list of 1-{MAX_FILTER_VALUES} values, got {len(cond)}")
                conds.append(_Cond(field, values=tuple(_scalar(field, v) for v in cond)))
            elif cond is None:
                raise FilterError(f"filter field {field!r}: null is not a filter value")
            else:
                conds.append(_Cond(field, values=(_scalar(field, cond),)))
        return cls(conds)

    @property
    def fields(self) -> tuple[str, ...]:
        return tuple(c.field for c in self.conds)

    def __repr__(self) -> str:
        return f"MetadataFilter({self.conds!r})"


class _Column:
    """One field over all rows: numbers (float64, NaN elsewhere), strings (codes into a sorted
    vocabulary, -1 elsewhere) and booleans (-1 elsewhere)."""

    __slots__ = ("num", "codes", "strings", "bools")

    def __init__(self, n: int) -> None:
        self.num: np.ndarray | None = None
        self.codes: np.ndarray | None = None
        self.strings: np.ndarray = np.zeros(0, dtype=object)
        self.bools: np.ndarray | None = None


class MetadataTable:
    """Columns of the documents' top-level scalar metadata, one row per index row."""

    def __init__(self, n: int, columns: dict[str, _Column]) -> None:
        self.n = int(n)
        self._cols = columns

    @classmethod
    def from_records(cls, records: Sequence[Mapping[str, Any] | None]) -> "MetadataTable":
        """One record (a dict, or None for no metadata) per row. Nested values are not indexed."""
        n = len(records)
        nums: dict[str, tuple[list[int], list[float]]] = {}
        strs: dict[str, tuple[list[int], list[str]]] = {}
        bools: dict[str, tuple[list[int], list[bool]]] = {}
        for row, rec in enumerate(records):
            if not rec:
                continue
            for key, v in rec.items():
                if isinstance(v, bool):
                    r, vals_b = bools.setdefault(key, ([], []))
                    r.append(row)
                    vals_b.append(v)
                elif isinstance(v, (int, float, np.integer, np.floating)):
                    r, vals_f = nums.setdefault(key, ([], []))
                    r.append(row)
                    vals_f.append(float(v))
                elif isinstance(v, str):
                    r, vals_s = strs.setdefault(key, ([], []))
                    r.append(row)
                    vals_s.append(v)
        cols: dict[str, _Column] = {}
        for key, (r, vf) in nums.items():
            c = cols.setdefault(key, _Column(n))
            c.num = np.full(n, np.nan)
            c.num[np.asarray(r, np.int64)] = np.asarray(vf, np.float64)
        for key, (r, vs) in strs.items():
            c = cols.setdefault(key, _Column(n))
            vocab, inv = np.unique(np.asarray(vs, dtype=object), return_inverse=True)
            c.strings = vocab
            c.codes = np.full(n, -1, np.int32)
            c.codes[np.asarray(r, np.int64)] = inv.astype(np.int32)
        for key, (r, vb) in bools.items():
            c = cols.setdefault(key, _Column(n))
            c.bools = np.full(n, -1, np.int8)
            c.bools[np.asarray(r, np.int64)] = np.asarray(vb, np.int8)
        return cls(n, cols)

    def __len__(self) -> int:
        return self.n

    def mask(self, spec: Mapping[str, Any] | MetadataFilter) -> np.ndarray:
        """Boolean array: the rows whose metadata satisfies every condition of ``spec``."""
        flt = MetadataFilter.parse(spec)
        out = np.ones(self.n, bool)
        for cond in flt.conds:
            out &= self._cond_mask(cond)
        return out

    def _cond_mask(self, cond: _Cond) -> np.ndarray:
        col = self._cols.get(cond.field)
        m = np.zeros(self.n, bool)
        if col is None:
            return m
        if cond.values:
            for v in cond.values:
                if isinstance(v, bool):
                    if col.bools is not None:
                        m |= col.bools == int(v)
                elif isinstance(v, str):
                    if col.codes is not None:
                        i = int(np.searchsorted(col.strings, v))
                        if i < col.strings.shape[0] and col.strings[i] == v:
                            m |= col.codes == i
                elif col.num is not None:
                    m |= col.num == float(v)
            return m
        if isinstance(cond.bounds[0][1], str):
            if col.codes is None:
                return m
            # codes follow the sorted vocabulary: a string range is a code range
            lo, hi = 0, col.strings.shape[0]
            for op, b in cond.bounds:
                pos = int(np.searchsorted(col.strings, str(b), side="right" if op in ("gt", "lte") else "left"))
                if op in ("gt", "gte"):
                    lo = max(lo, pos)
                else:
                    hi = min(hi, pos)
            return np.asarray((col.codes >= lo) & (col.codes < hi), bool)
        if col.num is None:
            return m
        m = ~np.isnan(col.num)
        for op, b in cond.bounds:
            x = float(b)
            if op == "gt":
                m &= col.num > x
            elif op == "gte":
                m &= col.num >= x
            elif op == "lt":
                m &= col.num < x
            else:
                m &= col.num <= x
        return np.asarray(m, bool)
