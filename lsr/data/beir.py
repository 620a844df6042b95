"""Training data from BEIR-layout folders (read by :mod:`lsr.index.corpus`, the one reader and
document-text rule) and MS MARCO-style triples, as plain dicts.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from lsr.index.corpus import read_corpus, read_qrels, read_queries
from lsr.index.jsonl import open_text

__all__ = ["BeirData", "load_beir", "load_triples"]

logger = logging.getLogger(__name__)


def _qrels_path(folder: Path, split: str) -> Path:
    for name in (f"{split}.tsv", f"{split}.tsv.gz"):
        if (folder / "qrels" / name).exists():
            return folder / "qrels" / name
    raise FileNotFoundError(f"no qrels for split {split!r}: {folder / 'qrels' / f'{split}.tsv'}")


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
    """Load a BEIR folder; with ``prefix`` every id becomes ``prefix/id`` (to merge datasets).

    ``split`` may be a virtual split of :mod:`lsr.data.splits`: ``train-dev`` (the seeded hold-out of
    the train queries, for model selection) or ``train-fit`` (the rest, for training).
    """
    from lsr.data.splits import heldout_split, resolve_split

    folder = Path(folder)
    corpus = {d.id: d.full_text for d in read_corpus(folder)}
    source, side = resolve_split(split)
    queries, qrels = read_queries(folder), read_qrels(_qrels_path(folder, source))
    if side is not None:
        fit, dev = heldout_split(qrels)
        keep = set(dev if side == "dev" else fit)
        qrels = {q: r for q, r in qrels.items() if q in keep}
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

    with open_text(path) as fh:
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
