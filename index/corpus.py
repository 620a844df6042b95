"""BEIR-layout files and the one document-text rule every part of lsr encodes documents by.

``corpus.jsonl[.gz]`` (BEIR ``_id``/``title``/``text``/``metadata``, or Seismic ``id``/``content``/
``vector``), ``queries.jsonl`` and ``qrels/<split>.tsv``. Ingest, encode, training, evaluation and
the service all read documents here, so the text a model is evaluated on is the text it is served on.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from .jsonl import iter_jsonl, open_text

__all__ = ["CorpusError", "Doc", "doc_text", "find_file", "read_corpus", "read_queries", "read_qrels"]


class CorpusError(ValueError):
    """A malformed corpus, queries or qrels file; the message names the file and line."""


def doc_text(title: str | None, text: str | None) -> str:
    """The text a document is encoded by: ``title + " " + text`` (BEIR's and Pyserini's "flat" rule)."""
    title = (title or "").strip()
    text = text or ""
    return f"{title} {text}" if title and text else (title or text)


@dataclass
class Doc:
    id: str
    title: str
    text: str
    metadata: dict[str, Any] | None = None
    vector: dict[str, float] | None = None  # Seismic JSONL carries {token: weight}

    @property
    def full_text(self) -> str:
        return doc_text(self.title, self.text)


def find_file(folder: str | Path, stem: str) -> Path:
    """``folder/stem.jsonl`` or ``folder/stem.jsonl.gz``."""
    folder = Path(folder)
    for name in (f"{stem}.jsonl", f"{stem}.jsonl.gz"):
        if (folder / name).exists():
            return folder / name
    raise FileNotFoundError(f"{folder}: no {stem}.jsonl or {stem}.jsonl.gz (expected BEIR layout)")


def _records(path: Path, kind: str) -> Iterator[tuple[int, dict[str, Any]]]:
    try:
        for lineno, rec in iter_jsonl(path, error=CorpusError):
            if not isinstance(rec, dict):
                raise CorpusError(f"{path}:{lineno}: expected a JSON object in the {kind} file, got {type(rec).__name__}")
            yield lineno, rec
    except (UnicodeDecodeError, EOFError) as exc:
        raise CorpusError(f"{path}: cannot read ({exc})") from None
    except OSError as exc:
        if isinstance(exc, FileNotFoundError):
            raise
        raise CorpusError(f"{path}: cannot read ({exc})") from None


def read_corpus(path: str | Path, limit: int | None = None) -> Iterator[Doc]:
    """Yield the documents of a corpus file in order; a folder means its ``corpus.jsonl[.gz]``.

    Ids must be unique; ``title``/``text`` must be strings; ``limit`` (>= 1) stops early.
    """
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")
    path = Path(path)
    if path.is_dir():
        path = find_file(path, "corpus")
    seen: dict[str, int] = {}
    n = 0
    for lineno, rec in _records(path, "corpus"):
        doc_id = rec.get("_id", rec.get("id"))
        if doc_id is None:
            raise CorpusError(f"{path}:{lineno}: record has no '_id' or 'id'")
        doc_id = str(doc_id)
        if doc_id in seen:
            raise CorpusError(f"{path}:{lineno}: duplicate document id {doc_id!r} (first on line {seen[doc_id]})")
        seen[doc_id] = lineno
        title = rec.get("title") or ""
        text = rec.get("text", rec.get("content"))
        vector = rec.get("vector")
        if text is None and vector is None:
            raise CorpusError(f"{path}:{lineno}: document {doc_id!r} has no 'text' field")
        text = text or ""
        if not isinstance(title, str) or not isinstance(text, str):
            raise CorpusError(f"{path}:{lineno}: document {doc_id!r}: 'title' and 'text' must be strings")
        if vector is not None and not isinstance(vector, dict):
            raise CorpusError(f"{path}:{lineno}: document {doc_id!r}: 'vector' must be an object")
        meta = rec.get("metadata")
        if meta is not None and not isinstance(meta, dict):
            raise CorpusError(f"{path}:{lineno}: document {doc_id!r}: 'metadata' must be an object")
        yield Doc(doc_id, title, text, meta or None, vector)
        n += 1
        if limit is not None and n >= limit:
            return


def read_queries(path: str | Path) -> dict[str, str]:
    """``{query_id: text}`` from ``queries.jsonl[.gz]`` (a folder means its queries file)."""
    path = Path(path)
    if path.is_dir():
        path = find_file(path, "queries")
    queries: dict[str, str] = {}
    for lineno, rec in _records(path, "queries"):
        qid = rec.get("_id", rec.get("id"))
        text = rec.get("text")
        if qid is None:
            raise CorpusError(f"{path}:{lineno}: query record has no '_id'")
        if not isinstance(text, str):
            raise CorpusError(f"{path}:{lineno}: query {qid!r} has no 'text' string")
        queries[str(qid)] = text
    return queries


def read_qrels(path: str | Path) -> dict[str, dict[str, int]]:
    """BEIR ``query-id corpus-id score`` TSV (header optional) or TREC ``qid 0 docid grade``."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such qrels file: {path}")
    qrels: dict[str, dict[str, int]] = {}
    with open_text(path) as fh:
        for lineno, line in enumerate(fh, 1):
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            parts = line.split("\t") if "\t" in line else line.split()
            if lineno == 1 and parts and parts[0].strip().lower() in ("query-id", "query_id", "qid"):
                continue
            if len(parts) == 3:
                qid, did, grade = parts
            elif len(parts) == 4:
                qid, _, did, grade = parts
            else:
                raise CorpusError(f"{path}:{lineno}: expected 3 columns (query-id, corpus-id, score) or 4 (TREC), "
                                  f"got {len(parts)}: {line[:80]!r}")
            try:
                g = int(float(grade))
            except ValueError:
                raise CorpusError(f"{path}:{lineno}: relevance {grade!r} is not a number") from None
            qrels.setdefault(qid.strip(), {})[did.strip()] = g
    return qrels
