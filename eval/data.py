"""Evaluation datasets: a local BEIR folder or an ir-datasets id, loaded once into memory.

A BEIR folder holds ``corpus.jsonl[.gz]``, ``queries.jsonl`` and ``qrels/<split>.tsv``. Lines are
split on "\\n" only (some passages hold Unicode line separators); errors name file and line.
"""

from __future__ import annotations

import gzip
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

__all__ = ["Dataset", "DatasetError", "load_dataset", "load_beir", "load_irds", "read_qrels"]

log = logging.getLogger(__name__)


class DatasetError(ValueError):
    """A malformed dataset file; the message names the file and line."""


@dataclass
class Dataset:
    """A corpus, the queries of one split and their relevance judgments.

    ``doc_ids``/``titles``/``texts`` are parallel lists in corpus order. ``queries`` maps query id
    to text and holds only the queries judged in ``qrels`` (``{qid: {doc_id: grade}}``).
    ``missing_docs`` lists ``(qid, doc_id)`` judgments whose document is not in the corpus;
    ``missing_queries`` the judged query ids without a text (those are dropped from ``qrels``).
    """

    name: str
    split: str | None
    doc_ids: list[str]
    titles: list[str]
    texts: list[str]
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]
    source: str = ""
    missing_docs: list[tuple[str, str]] = field(default_factory=list)
    missing_queries: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.doc_ids)

    def doc_texts(self) -> list[str]:
        """Title and text joined by a space, as BEIR's and Pyserini's "flat" runs index them."""
        return [f"{t} {x}" if t else x for t, x in zip(self.titles, self.texts)]

    def query_ids(self) -> list[str]:
        return list(self.queries)

    def summary(self) -> dict:
        return {
            "name": self.name,
            "split": self.split,
            "source": self.source,
            "documents": len(self.doc_ids),
            "queries": len(self.queries),
            "judgments": sum(len(v) for v in self.qrels.values()),
            "missing_docs": len(self.missing_docs),
            "missing_queries": len(self.missing_queries),
        }

    def subset(self, n_docs: int | None = None, n_queries: int | None = None) -> "Dataset":
        """A smaller dataset: the first ``n_queries`` judged queries, their judged documents first,
        then corpus documents in order until ``n_docs`` (for demos and tests)."""
        qids = list(self.queries)[: n_queries or len(self.queries)]
        pos = {d: i for i, d in enumerate(self.doc_ids)}
        keep: dict[int, None] = {}
        for q in qids:
            for d in self.qrels.get(q, {}):
                if d in pos:
                    keep[pos[d]] = None
        limit = n_docs or len(self.doc_ids)
        for i in range(len(self.doc_ids)):
            if len(keep) >= limit:
                break
            keep.setdefault(i, None)
        rows = sorted(keep)
        kept = {self.doc_ids[i] for i in rows}
        return Dataset(
            name=f"{self.name}[{len(rows)} docs, {len(qids)} queries]",
            split=self.split,
            doc_ids=[self.doc_ids[i] for i in rows],
            titles=[self.titles[i] for i in rows],
            texts=[self.texts[i] for i in rows],
            queries={q: self.queries[q] for q in qids},
            qrels={q: {d: g for d, g in self.qrels[q].items() if d in kept} for q in qids},
            source=self.source,
        )


# ---------------------------------------------------------------------------------- BEIR folder
def _open_lines(path: Path) -> Iterator[tuple[int, str]]:
    """Yield ``(line_number, line)``, splitting on "\\n" only (never on U+2028 and friends)."""
    if path.name.endswith(".gz"):
        fh = gzip.open(path, "rt", encoding="utf-8", newline="\n")
    else:
        fh = open(path, "r", encoding="utf-8", newline="\n")
    with fh:
        try:
            for lineno, line in enumerate(fh, 1):
                yield lineno, line
        except (UnicodeDecodeError, OSError, EOFError) as exc:
            raise DatasetError(f"{path}: cannot read ({exc})") from None


def _read_jsonl(path: Path, kind: str) -> Iterator[tuple[int, dict]]:
    for lineno, line in _open_lines(path):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DatasetError(f"{path}:{lineno}: invalid JSON ({exc.msg}) in the {kind} file") from None
        if not isinstance(rec, dict):
            raise DatasetError(f"{path}:{lineno}: expected a JSON object, got {type(rec).__name__}")
        if "_id" not in rec:
            raise DatasetError(f"{path}:{lineno}: {kind} record has no '_id' field")
        yield lineno, rec


def _find_corpus(folder: Path) -> Path:
    for name in ("corpus.jsonl", "corpus.jsonl.gz"):
        if (folder / name).exists():
            return folder / name
    raise FileNotFoundError(f"no corpus in {folder}: expected corpus.jsonl or corpus.jsonl.gz")


def read_corpus(path: Path) -> tuple[list[str], list[str], list[str]]:
    ids: list[str] = []
    titles: list[str] = []
    texts: list[str] = []
    seen: dict[str, int] = {}
    for lineno, rec in _read_jsonl(path, "corpus"):
        did = str(rec["_id"])
        if did in seen:
            raise DatasetError(f"{path}:{lineno}: duplicate document id {did!r} (first on line {seen[did]})")
        seen[did] = lineno
        title, text = rec.get("title") or "", rec.get("text")
        if text is None:
            raise DatasetError(f"{path}:{lineno}: document {did!r} has no 'text' field")
        if not isinstance(title, str) or not isinstance(text, str):
            raise DatasetError(f"{path}:{lineno}: document {did!r}: 'title' and 'text' must be strings")
        ids.append(did)
        titles.append(title)
        texts.append(text)
    return ids, titles, texts


def read_queries(path: Path) -> dict[str, str]:
    queries: dict[str, str] = {}
    for lineno, rec in _read_jsonl(path, "queries"):
        text = rec.get("text")
        if not isinstance(text, str):
            raise DatasetError(f"{path}:{lineno}: query {rec['_id']!r} has no 'text' string")
        queries[str(rec["_id"])] = text
    return queries


def read_qrels(path: str | Path) -> dict[str, dict[str, int]]:
    """BEIR ``query-id corpus-id score`` TSV (header optional) or TREC ``qid 0 docid grade``."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such qrels file: {path}")
    qrels: dict[str, dict[str, int]] = {}
    for lineno, line in _open_lines(path):
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
            raise DatasetError(
                f"{path}:{lineno}: expected 3 columns (query-id, corpus-id, score) or 4 (TREC), "
                f"got {len(parts)}: {line[:80]!r}"
            )
        try:
            g = int(float(grade))
        except ValueError:
            raise DatasetError(f"{path}:{lineno}: relevance {grade!r} is not a number") from None
        qrels.setdefault(qid.strip(), {})[did.strip()] = g
    return qrels


def load_beir(folder: str | Path, split: str = "test") -> Dataset:
    """Load a BEIR folder (``corpus.jsonl[.gz]``, ``queries.jsonl``, ``qrels/<split>.tsv``)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"no such dataset folder: {folder}")
    qrels_path = folder / "qrels" / f"{split}.tsv"
    if not qrels_path.exists():
        have = sorted(p.stem for p in (folder / "qrels").glob("*.tsv")) if (folder / "qrels").is_dir() else []
        raise FileNotFoundError(f"no qrels for split {split!r}: {qrels_path} is missing (splits here: {have})")
    queries_path = folder / "queries.jsonl"
    if not queries_path.exists():
        raise FileNotFoundError(f"no queries file: {queries_path}")
    corpus_path = _find_corpus(folder)
    qrels = read_qrels(qrels_path)
    all_queries = read_queries(queries_path)
    ids, titles, texts = read_corpus(corpus_path)
    return _assemble(folder.name, split, ids, titles, texts, all_queries, qrels, str(folder.resolve()))


def _assemble(name, split, ids, titles, texts, all_queries, qrels, source) -> Dataset:
    docs = set(ids)
    missing_docs = [(q, d) for q, rel in qrels.items() for d in rel if d not in docs]
    if missing_docs:
        show = ", ".join(f"{q}/{d}" for q, d in missing_docs[:5])
        log.warning(
            "%s: %d judged documents are not in the corpus (query/doc: %s%s)",
            name, len(missing_docs), show, ", ..." if len(missing_docs) > 5 else "",
        )
    missing_queries = [q for q in qrels if q not in all_queries]
    if missing_queries:
        log.warning("%s: %d judged queries have no text and are dropped: %s", name, len(missing_queries),
                    ", ".join(missing_queries[:5]))
    qrels = {q: rel for q, rel in qrels.items() if q in all_queries}
    queries = {q: all_queries[q] for q in qrels}
    return Dataset(name, split, ids, titles, texts, queries, qrels, source, missing_docs, missing_queries)


# ---------------------------------------------------------------------------------- ir-datasets
def load_irds(dataset_id: str, split: str | None = None) -> Dataset:
    """Load an ir-datasets id (``beir/scifact/test``, or ``beir/scifact`` plus ``split="test"``).

    Docs come from the id (subsets share their parent's corpus); a document's title, where the
    type has one, is kept apart from its text so both paths join them the same way.
    """
    try:
        import ir_datasets
    except ImportError as exc:  # pragma: no cover - optional dependency
        raise ImportError("ir-datasets ids need the ir-datasets package: pip install ir-datasets") from exc
    full = dataset_id
    registry = ir_datasets.registry
    if split and not dataset_id.rstrip("/").endswith("/" + split) and f"{dataset_id}/{split}" in registry:
        full = f"{dataset_id}/{split}"
    if full not in registry:
        raise ValueError(f"unknown dataset {dataset_id!r}: not a folder and not an ir-datasets id")
    ds = ir_datasets.load(full)
    if not (ds.has_docs() and ds.has_queries() and ds.has_qrels()):
        raise ValueError(f"ir-datasets id {full!r} lacks docs, queries or qrels (pick a split, e.g. {full}/test)")
    try:
        return _read_irds(ds, full, split)
    except (OSError, ConnectionError) as exc:
        raise RuntimeError(
            f"ir-datasets could not fetch {full!r} ({type(exc).__name__}: {str(exc)[:200]}); without network, "
            "pass a local BEIR folder (corpus.jsonl[.gz], queries.jsonl, qrels/<split>.tsv) instead"
        ) from None


def _read_irds(ds, full: str, split: str | None) -> Dataset:
    ids, titles, texts = [], [], []
    for doc in ds.docs_iter():
        ids.append(str(doc.doc_id))
        title = getattr(doc, "title", "") or ""
        text = getattr(doc, "text", None)
        if text is None:
            text = doc.default_text()
            title = ""
        titles.append(title)
        texts.append(text)
    queries = {}
    for q in ds.queries_iter():
        text = getattr(q, "text", None)
        queries[str(q.query_id)] = text if isinstance(text, str) else q.default_text()
    qrels: dict[str, dict[str, int]] = {}
    for r in ds.qrels_iter():
        qrels.setdefault(str(r.query_id), {})[str(r.doc_id)] = int(r.relevance)
    use_split = split or full.rsplit("/", 1)[-1]
    return _assemble(full, use_split, ids, titles, texts, queries, qrels, f"ir_datasets:{full}")


def load_dataset(spec: str | Path, split: str = "test") -> Dataset:
    """A BEIR folder path, or else an ir-datasets id."""
    p = Path(spec)
    if p.exists():
        return load_beir(p, split)
    if str(spec).startswith(("/", ".", "~")) or p.suffix:
        raise FileNotFoundError(f"no such dataset folder: {spec}")
    return load_irds(str(spec), split)
