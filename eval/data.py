"""Evaluation datasets: a local BEIR folder or an ir-datasets id, loaded once into memory.

BEIR files are read by :mod:`lsr.index.corpus` (the one reader, with the one document-text rule).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from lsr.index.corpus import CorpusError, doc_text, find_file, read_corpus, read_qrels, read_queries

__all__ = ["Dataset", "DatasetError", "load_dataset", "load_beir", "load_irds", "read_qrels"]

log = logging.getLogger(__name__)


DatasetError = CorpusError  # a malformed dataset file; the message names the file and line


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
        """The texts documents are encoded by (:func:`lsr.index.corpus.doc_text`)."""
        return [doc_text(t, x) for t, x in zip(self.titles, self.texts)]

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
def load_beir(folder: str | Path, split: str = "test") -> Dataset:
    """Load a BEIR folder (``corpus.jsonl[.gz]``, ``queries.jsonl``, ``qrels/<split>.tsv``)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"no such dataset folder: {folder}")
    qrels_path = folder / "qrels" / f"{split}.tsv"
    if not qrels_path.exists():
        have = sorted(p.stem for p in (folder / "qrels").glob("*.tsv")) if (folder / "qrels").is_dir() else []
        raise FileNotFoundError(f"no qrels for split {split!r}: {qrels_path} is missing (splits here: {have})")
    queries_path, corpus_path = find_file(folder, "queries"), find_file(folder, "corpus")
    qrels = read_qrels(qrels_path)
    all_queries = read_queries(queries_path)
    docs = list(read_corpus(corpus_path))
    return _assemble(folder.name, split, [d.id for d in docs], [d.title for d in docs], [d.text for d in docs],
                     all_queries, qrels, str(folder.resolve()))


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
