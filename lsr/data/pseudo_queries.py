"""Pseudo-queries from a corpus alone (doc2query with a small instruction-tuned causal LM).

A three-shot ``Passage: ... / Query: ...`` prompt whose examples come from other domains (so the
model learns the form, not the topic), greedy decoding, at most ``max_new_tokens`` new tokens,
batched on the GPU. :func:`clean_queries` then drops empty, overlong and duplicate queries, and
copies of the document's title or first sentence (what a plain instruction mostly yields). The
generated queries are cached as JSONL under a key made of the corpus, the model and the prompt.

``generator = "random-span"`` replaces the model with seeded random word spans of each document (the
cropping baseline of Contriever): the same pipeline without a query generator, for ablations.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from lsr.index import fileio

__all__ = [
    "FEW_SHOT", "PROMPT_TEMPLATE", "build_prompt", "QueryGenerator", "clean_query", "clean_queries",
    "is_copy", "corpus_hash", "generator_fingerprint", "cached_generate", "RANDOM_SPAN", "SPAN_WORDS",
    "random_spans",
]

logger = logging.getLogger(__name__)

# Made-up examples from domains far from the corpora lsr is evaluated on (cooking, astronomy,
# railways): they fix the form (a short keyword query), not the topic.
FEW_SHOT: tuple[tuple[str, str], ...] = (
    ("Slow fermentation of bread dough at low temperature lets yeast and lactic acid bacteria produce "
     "more flavour compounds. Doughs proofed for 48 hours at 4 C had a lower pH and a more open crumb "
     "than doughs proofed for 2 hours at room temperature.",
     "cold fermentation effect on bread flavour"),
    ("We report spectroscopic observations of twelve hot Jupiters transiting bright stars. Sodium "
     "absorption was detected in the atmospheres of five planets, and its strength correlated with "
     "the planets' equilibrium temperature.",
     "sodium absorption in hot Jupiter atmospheres"),
    ("Rail track buckling occurs when compressive stress from thermal expansion exceeds the lateral "
     "resistance of the ballast. Continuous welded rail laid at a higher neutral temperature buckled "
     "less often during heat waves.",
     "thermal buckling of continuous welded rail"),
)
PROMPT_TEMPLATE = "Passage: {passage}\nQuery: {query}\n\n"

# The generator name that takes random word spans instead of a model's completions. Span lengths
# are uniform over SPAN_WORDS (inclusive), the 10th to 90th percentile of the word counts of
# SmolLM2's cleaned queries for SciFact and NFCorpus (median 5), so both kinds of query are alike
# in length and differ in what a generator adds: words chosen to describe the document.
RANDOM_SPAN = "random-span"
SPAN_WORDS = (3, 9)


def _truncate(text: str, max_chars: int) -> str:
    text = " ".join(text.split())
    if len(text) <= max_chars:
        return text
    cut = text[:max_chars]
    return cut[: cut.rfind(" ")] if " " in cut else cut


def build_prompt(passage: str, max_chars: int = 1000) -> str:
    """The three-shot prompt for one passage, ending in ``Query:`` for the model to complete."""
    shots = "".join(PROMPT_TEMPLATE.format(passage=p, query=q) for p, q in FEW_SHOT)
    return shots + f"Passage: {_truncate(passage, max_chars)}\nQuery:"


def prompt_hash(max_chars: int) -> str:
    """A hash of the prompt (examples, template, passage cut) that names the cache."""
    spec = json.dumps({"shots": FEW_SHOT, "template": PROMPT_TEMPLATE, "max_chars": max_chars})
    return hashlib.sha256(spec.encode()).hexdigest()[:12]


def corpus_hash(docs: dict[str, str]) -> str:
    """A hash of the documents' ids and texts, in id order."""
    h = hashlib.sha256()
    for d in sorted(docs):
        h.update(d.encode() + b"\x00" + docs[d].encode() + b"\x01")
    return h.hexdigest()[:16]


def _resolve_generator(model: str) -> tuple[Path, str | None]:
    """``(folder, gguf file name or None)`` for a folder, a ``.gguf`` file or a short model name."""
    p = Path(model).expanduser()
    if p.is_file() and p.suffix == ".gguf":
        return p.parent, p.name
    if p.is_dir():
        if (p / "config.json").exists():
            return p, None
        ggufs = sorted(x.name for x in p.glob("*.gguf"))
        if ggufs:
            return p, ggufs[0]
        raise FileNotFoundError(f"generator folder {p} has neither config.json nor a .gguf file")
    from lsr.models.hub import model_path

    return Path(model_path(model)), None


def generator_fingerprint(model: str) -> str:
    """The generator's name in cache keys: the folder's (or GGUF file's parent folder's) name, so a
    short name, its cached folder and a folder holding the same GGUF agree."""
    p = Path(model).expanduser()
    if p.is_file():
        return p.parent.name
    return p.name


def random_spans(docs: dict[str, str], n: int = 1, seed: int = 0,
                 words: tuple[int, int] = SPAN_WORDS) -> dict[str, list[str]]:
    """``n`` random spans of ``words[0]..words[1]`` whitespace-separated words per document.

    Each document's spans depend on ``(seed, doc id)`` alone (not on the other documents or their
    order); a document shorter than the span is taken whole.

    >>> random_spans({"d1": "too short"}, words=(3, 9))
    {'d1': ['too short']}
    """
    lo, hi = words
    if not 1 <= lo <= hi:
        raise ValueError(f"span words must satisfy 1 <= min <= max, got {words}")
    out = {}
    for d, text in docs.items():
        toks = text.split()
        rng = np.random.default_rng([seed, int(hashlib.sha256(d.encode()).hexdigest()[:12], 16)])
        spans = []
        for _ in range(n):
            length = min(int(rng.integers(lo, hi + 1)), len(toks))
            start = int(rng.integers(0, len(toks) - length + 1)) if toks else 0
            spans.append(" ".join(toks[start:start + length]))
        out[d] = spans
    return out


class QueryGenerator:
    """Batched greedy (or, for several queries per document, seeded sampled) generation with a
    Hugging Face causal LM, left-padded, longest prompts first."""

    def __init__(self, model: str = "smollm2-135m", *, device: str | None = None, batch_size: int = 64,
                 max_new_tokens: int = 16, max_chars: int = 1000, dtype: str = "float32"):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        folder, gguf = _resolve_generator(model)
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        kw = {"gguf_file": gguf} if gguf else {}
        self.tok = AutoTokenizer.from_pretrained(folder, **kw)
        self.tok.padding_side = "left"
        if self.tok.pad_token is None:
            self.tok.pad_token = self.tok.eos_token
        lm = AutoModelForCausalLM.from_pretrained(folder, dtype=getattr(torch, dtype), **kw)
        self.model = lm.to(self.device)  # type: ignore[arg-type]  # transformers types .to as a wrapper
        self.model.eval()
        self.batch_size, self.max_new_tokens, self.max_chars = batch_size, max_new_tokens, max_chars
        logger.info("query generator %s%s on %s", folder, f" ({gguf})" if gguf else "", self.device)

    def generate(self, passages: Sequence[str], n: int = 1, seed: int = 0, progress: bool = True) -> list[list[str]]:
        """``n`` raw completions per passage (cut at the first line break)."""
        import torch
        from tqdm.auto import tqdm

        prompts = [build_prompt(p, self.max_chars) for p in passages]
        order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
        out: list[list[str]] = [[] for _ in prompts]
        bar = tqdm(total=len(prompts), desc="generate queries", unit="doc", disable=not progress)
        for s in range(0, len(order), self.batch_size):
            idx = order[s:s + self.batch_size]
            enc = self.tok([prompts[i] for i in idx], return_tensors="pt", padding=True).to(self.device)
            kw = dict(max_new_tokens=self.max_new_tokens, pad_token_id=self.tok.pad_token_id)
            if n == 1:
                kw.update(do_sample=False)
            else:
                torch.manual_seed(seed + s)
                kw.update(do_sample=True, temperature=0.8, top_p=0.95, num_return_sequences=n)
            with torch.no_grad():
                gen = self.model.generate(**enc, **kw)
            texts = self.tok.batch_decode(gen[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
            for j, i in enumerate(idx):
                out[i] = [t.split("\n", 1)[0].strip() for t in texts[j * n:(j + 1) * n]]
            bar.update(len(idx))
        bar.close()
        return out


_WORD = re.compile(r"[a-z0-9]+")


def _words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def _first_sentence(text: str) -> str:
    m = re.search(r"(?<=[.!?])\s", text)
    return text[: m.start()] if m else text


def is_copy(query: str, title: str, text: str, threshold: float = 0.75) -> bool:
    """True when the query's word set overlaps the title's or the first sentence's by Jaccard >= ``threshold``."""
    q = set(_words(query))
    if not q:
        return True
    for ref in (title, _first_sentence(text)):
        r = set(_words(ref))
        if r and len(q & r) / len(q | r) >= threshold:
            return True
    return False


def clean_query(raw: str) -> str:
    """Strip quotes, a repeated ``Query:`` label and a trailing ``Passage`` from one completion."""
    q = raw.split("\n", 1)[0].strip()
    q = re.sub(r"^(query|q)\s*:\s*", "", q, flags=re.I)
    q = re.split(r"\s*Passage\s*:", q)[0]
    return q.strip().strip("\"'`").strip()


def clean_queries(generated: dict[str, list[str]], titles: dict[str, str], texts: dict[str, str], *,
                  min_words: int = 2, max_words: int = 24) -> tuple[dict[str, list[str]], dict[str, int]]:
    """Filter raw completions per document: ``({doc_id: [queries]}, counts of what was dropped)``.

    Dropped: fewer than ``min_words`` or more than ``max_words`` words; a copy of the title or first
    sentence (:func:`is_copy`); a few-shot example's query echoed back; and any query (by its
    lower-cased words) produced for more than one document, which names no single source.
    """
    examples = {" ".join(_words(q)) for _, q in FEW_SHOT}
    counts = {"generated": 0, "length": 0, "copy": 0, "example": 0, "duplicate": 0, "kept": 0}
    owners: dict[str, set[str]] = {}
    cand: dict[str, list[tuple[str, str]]] = {}
    for d, qs in generated.items():
        seen = set()
        for raw in qs:
            counts["generated"] += 1
            q = clean_query(raw)
            key = " ".join(_words(q))
            n = len(key.split())
            if n < min_words or n > max_words:
                counts["length"] += 1
            elif key in examples:
                counts["example"] += 1
            elif is_copy(q, titles.get(d, ""), texts.get(d, "")):
                counts["copy"] += 1
            elif key in seen:
                counts["duplicate"] += 1
            else:
                seen.add(key)
                owners.setdefault(key, set()).add(d)
                cand.setdefault(d, []).append((key, q))
    out: dict[str, list[str]] = {}
    for d, pairs in cand.items():
        for key, q in pairs:
            if len(owners[key]) > 1:
                counts["duplicate"] += 1
                continue
            out.setdefault(d, []).append(q)
            counts["kept"] += 1
    return out, counts


@dataclass
class GenerationSpec:
    generator: str = "smollm2-135m"
    max_new_tokens: int = 16
    max_chars: int = 1000
    queries_per_doc: int = 1
    seed: int = 0

    def key(self, corpus_key: str) -> str:
        spec = {"corpus": corpus_key, "model": generator_fingerprint(self.generator), "prompt": prompt_hash(self.max_chars),
                "max_new_tokens": self.max_new_tokens, "n": self.queries_per_doc,
                "seed": self.seed if self.queries_per_doc > 1 else None}
        if self.generator == RANDOM_SPAN:  # no model and no prompt: the spans follow the seed and lengths
            spec = {"corpus": corpus_key, "model": RANDOM_SPAN, "n": self.queries_per_doc, "seed": self.seed,
                    "words": list(SPAN_WORDS)}
        return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


def cached_generate(name: str, docs: dict[str, str], spec: GenerationSpec, cache_dir: str | Path, *,
                    batch_size: int = 64, device: str | None = None, generator: QueryGenerator | None = None,
                    progress: bool = True) -> tuple[dict[str, list[str]], Path]:
    """Raw completions ``{doc_id: [query, ...]}`` for ``docs``, read from or written to
    ``cache_dir/queries-<name>-<key>.jsonl`` (key: corpus, model, prompt, decoding)."""
    path = Path(cache_dir) / f"queries-{name}-{spec.key(corpus_hash(docs))}.jsonl"
    if path.exists():
        out: dict[str, list[str]] = {}
        with open(path, encoding="utf-8") as fh:
            for line in fh.read().split("\n"):
                if line:
                    rec = json.loads(line)
                    out[rec["doc_id"]] = rec["queries"]
        if set(out) != set(docs):
            raise ValueError(f"{path}: cached queries cover {len(out)} documents, the corpus {len(docs)}; delete the file")
        logger.info("%s: %d documents' pseudo-queries from cache %s", name, len(out), path)
        return out, path
    if spec.generator == RANDOM_SPAN and generator is None:
        out = random_spans(docs, spec.queries_per_doc, spec.seed)
        _write_queries(path, out)
        logger.info("%s: random spans for %d documents cached at %s", name, len(out), path)
        return out, path
    gen = generator or QueryGenerator(spec.generator, device=device, batch_size=batch_size,
                                      max_new_tokens=spec.max_new_tokens, max_chars=spec.max_chars)
    ids = list(docs)
    texts = gen.generate([docs[d] for d in ids], n=spec.queries_per_doc, seed=spec.seed, progress=progress)
    out = dict(zip(ids, texts))
    _write_queries(path, out)
    logger.info("%s: pseudo-queries for %d documents cached at %s", name, len(out), path)
    return out, path


def _write_queries(path: Path, out: dict[str, list[str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = "".join(json.dumps({"doc_id": d, "queries": qs}, ensure_ascii=False) + "\n" for d, qs in out.items())
    fileio.atomic_write(path, lines.encode("utf-8"), site="pseudo-queries.cache")


def iter_doc_fields(docs: Iterable) -> tuple[dict[str, str], dict[str, str], dict[str, str]]:
    """``(full texts, titles, bodies)`` by id from :class:`lsr.index.corpus.Doc` records."""
    full, titles, bodies = {}, {}, {}
    for d in docs:
        full[d.id], titles[d.id], bodies[d.id] = d.full_text, d.title or "", d.text or ""
    return full, titles, bodies
