"""Label-free ablation pieces: random-span queries (``generator = "random-span"``), their cache key
(the generated queries' keys are unchanged: the shipped caches still match), and the miner reusing
an encoder it is given instead of loading one."""

import json
import os
from pathlib import Path

import numpy as np
import pytest

from lsr.data.label_free import LabelFreeSpec, mine_candidates
from lsr.data.pseudo_queries import (
    RANDOM_SPAN, SPAN_WORDS, GenerationSpec, cached_generate, corpus_hash, iter_doc_fields, random_spans,
)

ROOT = Path(__file__).resolve().parents[2]
DATA = Path(os.environ.get("LSR_DATA", ROOT.parent / "shared" / "data"))
SHIPPED = ROOT / "models" / "inference-free-label-free" / "pseudo_queries"

DOCS = {
    "d1": "Statin therapy lowered cardiovascular mortality in a cohort of ten thousand adults followed for "
          "twelve years, with the largest effect in patients with diabetes.",
    "d2": "Two words",
    "d3": "Vitamin D supplementation did not change bone density in older women after two years.",
}


def _is_window(span: str, text: str) -> bool:
    s, t = span.split(), text.split()
    return any(t[i:i + len(s)] == s for i in range(len(t) - len(s) + 1))


def test_random_spans_are_word_windows_of_the_document():
    out = random_spans(DOCS, n=5, seed=3)
    assert set(out) == set(DOCS) and all(len(v) == 5 for v in out.values())
    for d, spans in out.items():
        for s in spans:
            assert _is_window(s, DOCS[d])
            n_words = len(s.split())
            if len(DOCS[d].split()) >= SPAN_WORDS[1]:
                assert SPAN_WORDS[0] <= n_words <= SPAN_WORDS[1]
    assert out["d2"] == ["Two words"] * 5  # shorter than any span: the whole document
    lengths = [len(s.split()) for spans in random_spans({f"x{i}": DOCS["d1"] for i in range(400)}, seed=0).values()
               for s in spans]
    assert set(lengths) == set(range(SPAN_WORDS[0], SPAN_WORDS[1] + 1))  # every length occurs, none other


def test_random_spans_depend_on_seed_and_id_only():
    a = random_spans(DOCS, n=2, seed=7)
    b = random_spans(dict(reversed(list({**DOCS, "other": "an unrelated document " * 5}.items()))), n=2, seed=7)
    assert all(a[d] == b[d] for d in DOCS)  # neither order nor other documents change a document's spans
    assert random_spans(DOCS, n=2, seed=8)["d1"] != a["d1"]
    with pytest.raises(ValueError, match="span words"):
        random_spans(DOCS, words=(0, 3))


def test_random_span_cache_roundtrip_and_keys(tmp_path):
    spec = GenerationSpec(generator=RANDOM_SPAN, queries_per_doc=2, seed=5)
    out, path = cached_generate("toy", DOCS, spec, tmp_path)  # no model is loaded for spans
    assert out == random_spans(DOCS, n=2, seed=5)
    assert [json.loads(x)["doc_id"] for x in path.read_text().splitlines()] == list(DOCS)
    again, path2 = cached_generate("toy", DOCS, spec, tmp_path)
    assert again == out and path2 == path
    key = spec.key(corpus_hash(DOCS))
    assert key != GenerationSpec(generator=RANDOM_SPAN, queries_per_doc=2, seed=6).key(corpus_hash(DOCS))
    # one span per document: the seed still names the spans (a model's greedy output has no seed)
    one = GenerationSpec(generator=RANDOM_SPAN, seed=1).key(corpus_hash(DOCS))
    assert one != GenerationSpec(generator=RANDOM_SPAN, seed=2).key(corpus_hash(DOCS))
    assert GenerationSpec(seed=1).key(corpus_hash(DOCS)) == GenerationSpec(seed=2).key(corpus_hash(DOCS))


@pytest.mark.skipif(not (DATA / "beir" / "nfcorpus").exists(), reason="needs SciFact and NFCorpus copies")
def test_generated_query_keys_still_name_the_shipped_caches():
    """The shipped SmolLM2 queries are found by key: random-span support must not move those keys."""
    from lsr.index.corpus import read_corpus

    for name in ("scifact", "nfcorpus"):
        full, _, _ = iter_doc_fields(read_corpus(DATA / "beir" / name))
        key = GenerationSpec().key(corpus_hash(full))
        assert (SHIPPED / f"queries-{name}-{key}.jsonl").exists(), sorted(p.name for p in SHIPPED.iterdir())


class _Served:
    """Vectors computed beforehand, served by text (what a precomputing script hands the miner)."""

    def __init__(self, enc, docs, queries):
        from lsr.index import SparseBatch

        self.rows = {}
        for side, texts in (("d", docs), ("q", queries)):
            batch = enc.encode_documents(texts) if side == "d" else enc.encode_queries(texts)
            self.rows.update({(side, t): batch[i] for i, t in enumerate(texts)})
        self.concat = SparseBatch.concat
        self.loads = 0

    def encode_documents(self, texts, **_):
        self.loads += 1
        return self.concat([self.rows[("d", t)] for t in texts])

    def encode_queries(self, texts, **_):
        return self.concat([self.rows[("q", t)] for t in texts])


@pytest.mark.skipif(not (DATA / "beir" / "scifact").exists(), reason="needs a SciFact copy")
def test_miner_uses_the_encoder_it_is_given():
    from lsr.index.corpus import read_corpus
    from lsr.models import SparseEncoder
    from lsr.teachers.scorers import resolve_model

    docs = [d for _, d in zip(range(40), read_corpus(DATA / "beir" / "scifact"))]
    corpus = {d.id: d.full_text for d in docs}
    queries = {f"{d.id}#0": " ".join(d.full_text.split()[3:9]) for d in docs[:6]}
    sources = {q: q.split("#")[0] for q in queries}
    spec = LabelFreeSpec(miners=("splade",), mine_depth=5, device="cpu", progress=False)
    stock = mine_candidates(queries, sources, corpus, spec)  # loads spec.miner_model itself
    enc = SparseEncoder.load(str(resolve_model("splade-tiny")), kind="splade", device="cpu")
    served = _Served(enc, list(corpus.values()), list(queries.values()))
    given = mine_candidates(queries, sources, corpus, spec, encoder=served)
    assert served.loads == 1 and given == stock
    assert all(v[0] == sources[q] and len(v) == len(set(v)) > 1 for q, v in given.items())
    # brute force: the SPLADE top 5 by dot product, the source taken out and put first
    dv = enc.encode_documents(list(corpus.values())).to_dense()
    ids = list(corpus)
    for q, text in queries.items():
        s = dv @ enc.encode_queries([text]).to_dense()[0]
        top = [ids[i] for i in np.argsort(-s, kind="stable")[:6] if s[i] > 0]
        assert given[q] == [sources[q]] + [d for d in top if d != sources[q]]


def _cli():
    import shutil
    import sys

    exe = shutil.which("lsr-train")
    return [exe] if exe else [sys.executable, "-m", "lsr.cli.train"]


def test_queries_only_writes_the_cache_a_full_run_reads(tmp_path):
    """``lsr-train --queries-only`` (as a subprocess) generates each corpus's queries into the cache
    and stops: nothing mined, labelled or trained; the file is the one ``build_label_free`` finds."""
    import subprocess

    from lsr.data.label_free import generate_queries

    corpus = tmp_path / "beir" / "toy"
    corpus.mkdir(parents=True)
    (corpus / "corpus.jsonl").write_text("".join(
        json.dumps({"_id": d, "title": "", "text": t}) + "\n" for d, t in DOCS.items()))
    cfg = tmp_path / "lf.toml"
    cfg.write_text(f"""
[model]
kind = "inference-free"
init = "splade-tiny"
[data]
mode = "label-free"
[[data.train]]
path = "{corpus}"
[pseudo_queries]
generator = "random-span"
queries_per_doc = 2
seed = 4
cache_dir = "{tmp_path / 'cache'}"
[[teachers.models]]
kind = "bm25"
weight = 1.0
[train]
output_dir = "{tmp_path / 'run'}"
steps = 5
""")
    res = subprocess.run(_cli() + [str(cfg), "--queries-only", "--set", "train.progress=false"],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    report = json.loads(res.stdout)
    files = list((tmp_path / "cache").iterdir())
    assert [f.name for f in files] == [Path(report["toy"]["cache_file"]).name]  # queries only: no candidates
    assert report["toy"]["generated"] == 2 * len(DOCS)
    assert not (tmp_path / "run" / "final").exists()
    got = {json.loads(x)["doc_id"]: json.loads(x)["queries"] for x in files[0].read_text().splitlines()}
    assert got == random_spans(DOCS, n=2, seed=4)
    spec = LabelFreeSpec(generation=GenerationSpec(generator=RANDOM_SPAN, queries_per_doc=2, seed=4),
                         cache_dir=str(tmp_path / "cache"))
    assert generate_queries("toy", corpus, spec).path == files[0]  # what a full run reads

    # a judged config has no pseudo-queries to generate: a clear error, exit 2
    res = subprocess.run(_cli() + [str(ROOT / "configs" / "tiny-cpu.toml"), "--queries-only"], capture_output=True,
                         text=True, timeout=300, env=dict(os.environ, LSR_DATA=str(tmp_path)))
    assert res.returncode == 2 and "--queries-only needs data.mode" in res.stderr
