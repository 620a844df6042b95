"""Label-free training data from corpora alone: pseudo-queries (:mod:`lsr.data.pseudo_queries`),
candidates mined with BM25 and a SPLADE model, teacher-ensemble scores, and a consistency filter
that keeps a query only when the ensemble ranks its source document near the top (InPars,
Promptagator). Nothing here reads queries or judgments of any split: only ``corpus.jsonl[.gz]``.

Every stage is cached under one folder (queries, candidates, teacher scores), each file keyed by
what fixes it, so a later run, on any machine, starts from the artefacts and trains the same model.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from lsr.index import fileio

from lsr.data.pseudo_queries import GenerationSpec, cached_generate, clean_queries, corpus_hash, iter_doc_fields

__all__ = ["LabelFreeSpec", "LabelFreeData", "CorpusQueries", "generate_queries", "build_label_free", "mine_candidates", "consistency_filter"]

logger = logging.getLogger(__name__)


@dataclass
class LabelFreeSpec:
    generation: GenerationSpec = field(default_factory=GenerationSpec)
    batch_size: int = 64              # generation batch
    max_docs: int | None = None       # generate for the first N documents of each corpus (others stay candidates)
    miners: tuple[str, ...] = ("bm25", "splade")
    miner_model: str = "splade-tiny"
    mine_depth: int = 30
    keep_rank: int = 3                # keep a query when its source is in the ensemble's top keep_rank (0: keep all)
    cache_dir: str = ".cache/label-free"
    bm25_tokenizer: str | None = "splade-tiny"
    device: str | None = None
    encode_batch_size: int = 128
    progress: bool = True


@dataclass
class LabelFreeData:
    corpus: dict[str, str]
    queries: dict[str, str]
    positives: dict[str, list[str]]
    negatives: dict[str, list[str]]
    teacher_scores: dict[str, dict[str, float]]
    stats: dict = field(default_factory=dict)


def _read_corpus_only(path: str | Path) -> list:
    """The documents of a BEIR folder (or a corpus file): ``corpus.jsonl[.gz]`` and nothing else."""
    from lsr.index.corpus import read_corpus

    return list(read_corpus(path))


def _json_cache(path: Path, compute):
    if path.exists():
        logger.info("from cache %s", path)
        return json.loads(path.read_text(encoding="utf-8"))
    value = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    fileio.atomic_write(path, json.dumps(value).encode("utf-8"), site="label-free.cache")
    logger.info("cached %s", path)
    return value


def mine_candidates(queries: dict[str, str], sources: dict[str, str], corpus: dict[str, str], spec: LabelFreeSpec,
                    encoder=None) -> dict[str, list[str]]:
    """``{qid: [source, other candidates...]}``: each miner's top ``mine_depth`` documents for the
    query, interleaved (BM25 first, then SPLADE), duplicates and the source removed, source first.

    ``encoder``: the SPLADE miner's encoder, already loaded (anything with ``encode_documents`` and
    ``encode_queries``, e.g. one that serves vectors computed earlier); without it ``spec.miner_model``
    is loaded."""
    from lsr.index import ExactIndex

    qids = list(queries)
    texts = [queries[q] for q in qids]
    ranked: list[list[list[str]]] = []
    if "bm25" in spec.miners:
        from lsr.teachers import BM25, wordpiece_tokenizer
        from lsr.teachers.bm25 import regex_tokenizer
        from lsr.teachers.scorers import resolve_model

        tok = wordpiece_tokenizer(resolve_model(spec.bm25_tokenizer)) if spec.bm25_tokenizer else regex_tokenizer()
        ids, _ = BM25(list(corpus.values()), list(corpus), tokenizer=tok).search(texts, k=spec.mine_depth + 1)
        ranked.append([[d for d in row if d is not None] for row in ids])
    if "splade" in spec.miners:
        from lsr.models import SparseEncoder
        from lsr.teachers.scorers import _device, resolve_model

        enc = encoder
        if enc is None:
            enc = SparseEncoder.load(str(resolve_model(spec.miner_model)), kind="splade", device=_device(spec.device))
            enc.eval()
        dids = list(corpus)
        dv = enc.encode_documents([corpus[d] for d in dids], batch_size=spec.encode_batch_size,
                                  show_progress_bar=spec.progress)
        qv = enc.encode_queries(texts, batch_size=spec.encode_batch_size, show_progress_bar=spec.progress)
        hits = ExactIndex.build(dv, ids=dids).search(qv, k=spec.mine_depth + 1)
        ranked.append([[d for d in row if d is not None] for row in hits.ids])
    if not ranked:
        raise ValueError("label-free mining needs at least one miner: bm25 and/or splade")
    out = {}
    for i, q in enumerate(qids):
        src = sources[q]
        seen, cands = {src}, [src]
        for r in range(spec.mine_depth + 1):
            for lists in ranked:
                row = lists[i]
                if r < len(row) and row[r] not in seen:
                    seen.add(row[r])
                    cands.append(row[r])
        out[q] = cands
    return out


def consistency_filter(teacher: dict[str, dict[str, float]], sources: dict[str, str], keep_rank: int) -> list[str]:
    """Query ids whose source document is among the ``keep_rank`` best-scored candidates (ties count
    against the source); all of them when ``keep_rank`` is 0."""
    keep = []
    for q, scores in teacher.items():
        if keep_rank <= 0:
            keep.append(q)
            continue
        s = scores[sources[q]]
        better = sum(1 for d, v in scores.items() if d != sources[q] and v >= s)
        if better < keep_rank:
            keep.append(q)
    return sorted(keep)


def _key(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


@dataclass
class CorpusQueries:
    """One corpus's documents (full text, title, body by id), the ids queries were generated for,
    the raw completions by id, and the cache file that holds them."""
    full: dict[str, str]
    titles: dict[str, str]
    bodies: dict[str, str]
    gen_ids: list[str]
    raw: dict[str, list[str]]
    path: Path


def generate_queries(name: str, folder: str | Path, spec: LabelFreeSpec) -> CorpusQueries:
    """Stage (a) alone for one corpus: its pseudo-queries, generated or read from
    ``spec.cache_dir`` (the same file :func:`build_label_free` reads, so queries made on a GPU
    machine and copied over let a CPU machine do the rest)."""
    docs = _read_corpus_only(folder)
    full, titles, bodies = iter_doc_fields(docs)
    gen_ids = [d.id for d in docs][: spec.max_docs] if spec.max_docs else [d.id for d in docs]
    raw, path = cached_generate(name, {d: full[d] for d in gen_ids}, spec.generation, Path(spec.cache_dir),
                                batch_size=spec.batch_size, device=spec.device, progress=spec.progress)
    return CorpusQueries(full, titles, bodies, gen_ids, raw, path)


def build_label_free(corpora: Sequence[tuple[str, str | Path]], spec: LabelFreeSpec, ensemble) -> LabelFreeData:
    """Training data for ``lsr-train``'s label-free mode from ``(name, BEIR folder)`` pairs.

    ``ensemble`` is a :class:`lsr.teachers.Ensemble` (its cache folder should be ``spec.cache_dir``).
    Document ids become ``name/id`` when there are several corpora; pseudo-query ids are
    ``<doc id>#<k>``. Candidates and filtering stay within each corpus.
    """
    cache = Path(spec.cache_dir)
    multi = len(corpora) > 1
    corpus_all: dict[str, str] = {}
    queries: dict[str, str] = {}
    positives: dict[str, list[str]] = {}
    negatives: dict[str, list[str]] = {}
    teacher_all: dict[str, dict[str, float]] = {}
    stats: dict = {}
    for name, folder in corpora:
        gq = generate_queries(name, folder, spec)
        full, gen_ids = gq.full, gq.gen_ids
        kept, counts = clean_queries(gq.raw, gq.titles, gq.bodies)
        pre = f"{name}/" if multi else ""
        corpus = {pre + d: t for d, t in full.items()}
        q_text, sources = {}, {}
        for d in gen_ids:
            for k, q in enumerate(kept.get(d, [])):
                qid = f"{pre}{d}#{k}"
                q_text[qid], sources[qid] = q, pre + d
        ckey = _key("candidates", corpus_hash(corpus), sorted(q_text.items()), list(spec.miners),
                    Path(spec.miner_model).name, spec.mine_depth,
                    spec.bm25_tokenizer and Path(spec.bm25_tokenizer).name)
        cands = _json_cache(cache / f"candidates-{name}-{ckey}.json",
                            lambda: mine_candidates(q_text, sources, corpus, spec))
        teacher = ensemble(q_text, corpus, cands)
        keep = consistency_filter(teacher, sources, spec.keep_rank)
        counts["consistent"] = len(keep)
        logger.info("%s: pseudo-queries %s", name, json.dumps(counts))
        stats[name] = counts
        for q in keep:
            queries[q] = q_text[q]
            positives[q] = [sources[q]]
            negatives[q] = [d for d in cands[q] if d != sources[q]]
            teacher_all[q] = teacher[q]
        corpus_all.update(corpus)
    if not positives:
        raise ValueError("label-free: no pseudo-query survived the filters; nothing to train on")
    logger.info("label-free training data: %d queries over %d documents", len(positives), len(corpus_all))
    return LabelFreeData(corpus_all, queries, positives, negatives, teacher_all, stats)


def source_rank(teacher: dict[str, float], source: str) -> int:
    """1-based rank of ``source`` among its candidates (ties count against it)."""
    s = teacher[source]
    return 1 + int(np.sum([v >= s for d, v in teacher.items() if d != source]))
