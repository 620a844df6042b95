"""BEIR-layout folders (``corpus.jsonl[.gz]``, ``queries.jsonl``, ``qrels/<split>.tsv``) and
MS MARCO-style triples, read into plain dicts.
"""

from __future__ import annotations

import csv
import gzip
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["BeirData", "load_beir", "load_corpus", "load_queries", "load_qrels", "load_triples", "doc_text"]

logger = logging.getLogger(__name__)


def _open(path: Path):
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8", newline="\n")
    return open(path, "r", encoding="utf-8", newline="\n")


def _find(folder: Path, stem: str) -> Path:
    for name in (f"{stem}.jsonl", f"{stem}.jsonl.gz"):
        if (folder / name).exists():
            return folder / name
    raise FileNotFoundError(f"{folder}: no {stem}.jsonl or {stem}.jsonl.gz (expected BEIR layout)")


def doc_text(rec: dict) -> str:
    """BEIR's document text: ``title + " " + text`` (title omitted when empty)."""
    title = (rec.get("title") or "").strip()
    text = rec.get("text") or ""
    return f"{title} {text}" if title else text


def _jsonl(path: Path):
    # Split on "\n" only: some corpora hold Unicode line separators inside a record.
    with _open(path) as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                yield json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{lineno}: invalid JSON ({exc.msg})") from None


def load_corpus(folder: str | Path) -> dict[str, str]:
    """``{doc_id: title + " " + text}`` in file order."""
    path = _find(Path(folder), "corpus")
    return {str(r["_id"]): doc_text(r) for r in _jsonl(path)}


def load_queries(folder: str | Path) -> dict[str, str]:
    path = _find(Path(folder), "queries")
    return {str(r["_id"]): r["text"] for r in _jsonl(path)}


def load_qrels(folder: str | Path, split: str) -> dict[str, dict[str, int]]:
    """``{query_id: {doc_id: relevance}}`` from ``qrels/<split>.tsv[.gz]`` (header line skipped)."""
    path = Path(folder) / "qrels" / f"{split}.tsv"
    if not path.exists() and path.with_suffix(".tsv.gz").exists():
        path = path.with_suffix(".tsv.gz")
    if not path.exists():
        raise FileNotFoundError(f"no qrels for split {split!r}: {path}")
    out: dict[str, dict[str, int]] = {}
    opener = gzip.open(path, "rt", encoding="utf-8", newline="") if path.suffix == ".gz" else open(path, encoding="utf-8", newline="")
    with opener as fh:
        for i, row in enumerate(csv.reader(fh, delimiter="\t")):
            if not row or (i == 0 and not row[-1].strip().lstrip("-").isdigit()):
                continue
            if len(row) == 4:  # TREC qrels: qid 0 did rel
                row = [row[0], row[2], row[3]]
            qid, did, rel = row[0], row[1], int(row[2])
            out.setdefault(qid, {})[did] = rel
    return out


@dataclass
class BeirData:
    name: str
    corpus: dict[str, str]
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]] = field(default_factory=dict)

    def positives(self, min_rel: int = 1) -> dict[str, list[str]]:
        """Judged-relevant documents per query that has text and at least one positive."""
        out = {}
        for qid, docs in self.qrels.items():
            pos = [d for d, r in docs.items() if r >= min_rel and d in self.corpus]
            if pos and qid in self.queries:
                out[qid] = pos
        return out


def load_beir(folder: str | Path, split: str, *, prefix: str | None = None) -> BeirData:
    """Load a BEIR folder; with ``prefix`` every id becomes ``prefix/id`` (to merge datasets)."""
    folder = Path(folder)
    corpus, queries, qrels = load_corpus(folder), load_queries(folder), load_qrels(folder, split)
    if prefix:
        corpus = {f"{prefix}/{k}": v for k, v in corpus.items()}
        queries = {f"{prefix}/{k}": v for k, v in queries.items()}
        qrels = {f"{prefix}/{q}": {f"{prefix}/{d}": r for d, r in ds.items()} for q, ds in qrels.items()}
    logger.info("%s: %d documents, %d queries, %d judged (%s)", folder, len(corpus), len(queries), len(qrels), split)
    return BeirData(prefix or folder.name, corpus, queries, qrels)


def load_triples(path: str | Path, corpus: dict[str, str] | None = None, queries: dict[str, str] | None = None):
    """MS MARCO-style triples: TSV lines ``query<TAB>positive<TAB>negative``.

    With ``corpus`` and ``queries`` the columns are ids (``qid<TAB>pos_id<TAB>neg_id``, the
    ``qidpidtriples`` form); otherwise texts. Returns ``BeirData`` with synthetic ids plus a
    ``{qid: [neg ids]}`` map of the given negatives.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such triples file: {path}")
    c: dict[str, str] = {}
    q: dict[str, str] = {}
    qrels: dict[str, dict[str, int]] = {}
    negs: dict[str, list[str]] = {}
    text_ids: dict[tuple[str, str], str] = {}

    def ident(kind: str, text: str, store: dict) -> str:
        key = (kind, text)
        if key not in text_ids:
            text_ids[key] = f"{kind}{len(text_ids)}"
            store[text_ids[key]] = text
        return text_ids[key]

    opener = gzip.open(path, "rt", encoding="utf-8") if path.suffix == ".gz" else open(path, encoding="utf-8")
    with opener as fh:
        for lineno, line in enumerate(fh, 1):
            parts = line.rstrip("\n").split("\t")
            if len(parts) != 3:
                raise ValueError(f"{path}:{lineno}: expected 3 tab-separated columns, got {len(parts)}")
            if corpus is not None and queries is not None:
                qid, pid, nid = parts
                for did in (pid, nid):
                    if did not in corpus:
                        raise ValueError(f"{path}:{lineno}: unknown document id {did!r}")
                q[qid] = queries[qid]
                c[pid], c[nid] = corpus[pid], corpus[nid]
            else:
                qid, pid, nid = ident("q", parts[0], q), ident("d", parts[1], c), ident("d", parts[2], c)
            qrels.setdefault(qid, {})[pid] = 1
            if nid not in negs.setdefault(qid, []):
                negs[qid].append(nid)
    return BeirData(path.stem, c, q, qrels), negs
