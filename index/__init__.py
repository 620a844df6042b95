"""lsr.index: Seismic-style blocked inverted index, exact index, on-disk format. No torch here.

>>> from lsr.index import SeismicIndex, ExactIndex, load_index
"""

from __future__ import annotations

from pathlib import Path

from .base import Hits, SearchParams
from .sparse import SparseBatch, SparseBatchError, load_vectors, save_vectors
from .exact import ExactIndex
from .seismic import SeismicIndex, SeismicParams
from .storage import IndexFormatError, read_manifest

__all__ = ["SparseBatch", "SparseBatchError", "load_vectors", "save_vectors", "ExactIndex", "SeismicIndex", "SeismicParams", "Hits", "SearchParams", "IndexFormatError", "load_index"]

_KINDS: dict[str, type[ExactIndex] | type[SeismicIndex]] = {"exact": ExactIndex, "seismic": SeismicIndex}


def load_index(path: str | Path, mmap: bool = True, *, verify: bool = True) -> ExactIndex | SeismicIndex:
    """Open any saved lsr index; the manifest's ``kind`` picks the class."""
    manifest = read_manifest(path)
    cls = _KINDS.get(manifest["kind"])
    if cls is None:
        raise IndexFormatError(f"{Path(path) / 'manifest.json'}: unknown index kind {manifest['kind']!r}")
    index: ExactIndex | SeismicIndex = cls.load(path, mmap=mmap, verify=verify)
    return index
