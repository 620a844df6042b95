"""Label-free training (``data.mode = "label-free"``): the query filters, the consistency filter, the
config's refusals, and ``lsr-train`` end to end on a folder that holds a corpus and nothing else
(no queries, no qrels), with real SmolLM2 generation and the real teachers; a second run from the
cached artefacts (the models it would need to regenerate them made unreachable) trains the same
weights bit for bit."""

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lsr.data.label_free import consistency_filter, source_rank
from lsr.data.pseudo_queries import FEW_SHOT, GenerationSpec, build_prompt, clean_queries, corpus_hash, is_copy
from lsr.train.config import ConfigError, load_config

ROOT = Path(__file__).resolve().parents[2]
DATA = Path(os.environ.get("LSR_DATA", ROOT.parent / "shared" / "data"))
CONFIG = ROOT / "configs" / "label-free.toml"


def test_prompt_is_three_shot_and_ends_with_query():
    p = build_prompt("Aspirin lowers fever. " * 200, max_chars=120)
    assert p.count("Passage: ") == 4 and p.count("\nQuery: ") == 3 and p.endswith("\nQuery:")
    last = p.rsplit("Passage: ", 1)[1]
    assert len(last) <= 120 + len("\nQuery:") and last.startswith("Aspirin lowers fever.")


def test_clean_queries_drops_copies_echoes_duplicates_and_bad_lengths():
    titles = {"a": "Statins reduce cardiovascular mortality", "b": "Vitamin D and bone density", "c": "Gut flora",
              "d": "Sleep", "e": "Coffee"}
    texts = {"a": "We studied 10,000 patients. Statins helped.", "b": "Vitamin D supplementation in older adults was "
             "associated with higher bone density. Other text.", "c": "x", "d": "y", "e": "z"}
    generated = {
        "a": ["Query: statins reduce cardiovascular mortality", "statin effect on heart disease deaths",
              "statin effect on heart disease deaths"],
        "b": ["vitamin D supplementation in older adults was associated with higher bone density",
              '"vitamin D and fracture risk"\nPassage: more'],
        "c": [FEW_SHOT[0][1], "microbiome", "probiotics and gut bacteria"],
        "d": ["probiotics and gut bacteria", "sleep deprivation and memory consolidation in adults " + "x " * 30],
        "e": ["caffeine intake and blood pressure"],
    }
    kept, counts = clean_queries(generated, titles, texts)
    assert kept == {"a": ["statin effect on heart disease deaths"], "b": ["vitamin D and fracture risk"],
                    "e": ["caffeine intake and blood pressure"]}
    # a: title copy + repeat; b: first-sentence copy; c: echoed example, one word, shared with d; d: shared, too long
    assert counts == {"generated": 11, "length": 2, "copy": 2, "example": 1, "duplicate": 3, "kept": 3}
    assert is_copy("Gut flora", "Gut flora", "") and not is_copy("gut flora in infants with colic", "Gut flora", "")


def test_consistency_filter_keeps_queries_whose_source_ranks_high():
    teacher = {"q1": {"s1": 9.0, "x": 1.0, "y": 2.0},   # source first
               "q2": {"s2": 5.0, "x": 5.0, "y": 7.0},   # a tie counts against the source: rank 3
               "q3": {"s3": 0.5, "x": 4.0, "y": 3.0}}   # source last
    sources = {"q1": "s1", "q2": "s2", "q3": "s3"}
    assert [source_rank(teacher[q], sources[q]) for q in ("q1", "q2", "q3")] == [1, 3, 3]
    assert consistency_filter(teacher, sources, 1) == ["q1"]
    assert consistency_filter(teacher, sources, 3) == ["q1", "q2", "q3"]
    assert consistency_filter(teacher, sources, 0) == ["q1", "q2", "q3"]


def test_cache_key_follows_corpus_model_and_prompt():
    docs = {"d1": "a b", "d2": "c d"}
    spec = GenerationSpec()
    k = spec.key(corpus_hash(docs))
    assert k == GenerationSpec(generator="/elsewhere/smollm2-135m").key(corpus_hash(dict(reversed(docs.items()))))
    assert k != spec.key(corpus_hash({**docs, "d2": "c e"}))
    assert k != GenerationSpec(generator="gemma-3-270m").key(corpus_hash(docs))
    assert k != GenerationSpec(max_chars=500).key(corpus_hash(docs))


@pytest.mark.parametrize("override,message", [
    ('eval=[{path="x", split="dev"}]', "[[eval]] reads qrels"),
    ('data.train=[{path="x", split="train"}]', "reads corpora only"),
    ('data.triples="t.tsv"', "corpora only"),
    ("teachers.models=[]", "add [[teachers.models]]"),
])
def test_label_free_config_refuses_judgments(override, message):
    with pytest.raises(ConfigError, match=None) as exc:
        load_config(CONFIG, [override])
    assert message in str(exc.value)


def test_pseudo_queries_section_needs_label_free_mode():
    with pytest.raises(ConfigError, match="label-free"):
        load_config(ROOT / "configs" / "tiny-cpu.toml", ["pseudo_queries.max_docs=3"])


# ---------------------------------------------------------------- end to end on the CPU

needs_data = pytest.mark.skipif(not (DATA / "beir" / "scifact").exists(), reason="needs a SciFact copy")


def _corpus_only(root: Path, n: int = 40) -> Path:
    """The first ``n`` SciFact documents, alone in a BEIR-style folder: no queries.jsonl, no qrels/."""
    src = DATA / "beir" / "scifact"
    path = src / "corpus.jsonl.gz" if (src / "corpus.jsonl.gz").exists() else src / "corpus.jsonl"
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8", newline="\n") as fh:
        lines = [line for _, line in zip(range(n), fh)]
    dst = root / "corpus-only"
    dst.mkdir(parents=True)
    (dst / "corpus.jsonl").write_text("".join(lines), encoding="utf-8")
    return dst


def _teachers(prefix: str) -> str:
    return (f'teachers.models=[{{kind="dense", model="{prefix}minilm", weight=0.4}}, '
            f'{{kind="sparse", model="{prefix}splade-tiny", weight=0.4}}, {{kind="bm25", weight=0.2}}]')


def _train(folder: Path, cache: Path, out: Path, prefix: str = ""):
    args = [sys.executable, "-m", "lsr.cli.train", str(CONFIG),
            "--set", f'data.train=[{{path="{folder}"}}]',
            "--set", f'pseudo_queries.generator="{prefix}smollm2-135m"',
            "--set", f'pseudo_queries.miner_model="{prefix}splade-tiny"',
            "--set", _teachers(prefix),
            "--set", "pseudo_queries.max_docs=4", "--set", "pseudo_queries.mine_depth=4",
            "--set", "pseudo_queries.keep_rank=3",
            "--set", f'pseudo_queries.cache_dir="{cache}"', "--set", f'train.output_dir="{out}"',
            "--set", "train.steps=3", "--set", "train.batch_size=2", "--set", "train.warmup_steps=1",
            "--set", "train.log_every=1", "--set", "train.save_every=3", "--set", "train.progress=false",
            "--set", "train.device=\"cpu\"", "--set", "data.n_negatives=2", "--set", "loss.regularizer_warmup=2",
            "--set", "model.max_doc_length=48", "--set", "model.max_query_length=16"]
    env = dict(os.environ, OMP_NUM_THREADS="2", TOKENIZERS_PARALLELISM="false")
    res = subprocess.run(args, capture_output=True, text=True, timeout=900, env=env)
    assert res.returncode == 0, res.stderr[-4000:]
    return res


@needs_data
def test_label_free_from_corpus_alone_and_reproducible_from_cache(tmp_path):
    import torch
    from safetensors.torch import load_file

    folder = _corpus_only(tmp_path)
    assert sorted(p.name for p in folder.iterdir()) == ["corpus.jsonl"]  # nothing to read judgments from
    cache = tmp_path / "cache"
    _train(folder, cache, tmp_path / "first")
    names = sorted(p.name.rsplit("-", 1)[0] for p in cache.iterdir())  # name minus the key
    assert names == ["candidates-corpus-only", "queries-corpus-only", "teacher-scores-bm25", "teacher-scores-dense",
                     "teacher-scores-sparse"]
    raw = [json.loads(line) for line in next(cache.glob("queries-*.jsonl")).read_text().splitlines()]
    assert len(raw) == 4 and all(len(r["queries"]) == 1 for r in raw)  # the first 4 documents, one query each
    stats = json.loads((tmp_path / "first" / "label_free_stats.json").read_text())["corpus-only"]
    assert stats["generated"] == 4 and 1 <= stats["consistent"] <= stats["kept"] <= 4
    cands = json.loads(next(cache.glob("candidates-*.json")).read_text())
    for qid, docs in cands.items():  # source first, then distinct mined documents of this corpus
        assert docs[0] == qid.split("#")[0] and len(set(docs)) == len(docs) and len(docs) > 1

    # Second run: generator, miner and teachers point where nothing exists (same names, so the same
    # cache keys): it can only succeed from the cached artefacts, and must train the same weights.
    _train(folder, cache, tmp_path / "second", prefix=str(tmp_path / "nowhere") + "/")
    a = load_file(tmp_path / "first" / "final" / "model.safetensors")
    b = load_file(tmp_path / "second" / "final" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    la, lb = ([json.loads(x) for x in (tmp_path / run / "log.jsonl").read_text().splitlines()]
              for run in ("first", "second"))
    assert [(r["step"], r["loss"]) for r in la] == [(r["step"], r["loss"]) for r in lb]
    assert [r["step"] for r in la] == [1, 2, 3]
