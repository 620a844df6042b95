"""``[model] vocab_init`` (the decoder's per-term bias): the config's refusals, and ``lsr-train`` in
process on a tiny random causal LM over a real SciFact sample: the bias is fitted before step 0 to
the target, trained at its own rate, saved with the model, and restored exactly by ``--resume``."""

import json
import logging
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from lsr.train.config import ConfigError, load_config

ROOT = Path(__file__).resolve().parents[2]
DATA = Path(os.environ.get("LSR_DATA", ROOT.parent / "shared" / "data"))
VOCAB = ROOT / "configs" / "decoder-vocab.toml"
PLAIN = ROOT / "configs" / "decoder.toml"


def test_configs():
    cfg, _ = load_config(VOCAB)
    vi = cfg.model.vocab_init
    assert (vi.docs, vi.target_terms, vi.max_surprisal, vi.trainable) == (512, 200, 20.0, True)
    assert cfg.model.logit_shift is None and cfg.train.output_dir == "runs/decoder-vocab"
    plain, _ = load_config(PLAIN)
    assert plain.model.vocab_init is None and plain.model.logit_shift == 5.0
    # the two differ only in the head and the output folder
    a, b = cfg.model_dump(), plain.model_dump()
    for d in (a, b):
        d["model"].pop("vocab_init"), d["model"].pop("logit_shift"), d["train"].pop("output_dir")
    assert a == b


@pytest.mark.parametrize("override, field", [
    ("model.vocab_init.docs=-1", "model.vocab_init.docs"),
    ("model.vocab_init.docs=0", "model.vocab_init.docs"),
    ("model.vocab_init.target_terms=0", "model.vocab_init.target_terms"),
    ("model.vocab_init.target_terms=-5", "model.vocab_init.target_terms"),
    ("model.vocab_init.target_terms=2.5", "model.vocab_init.target_terms"),
    ("model.vocab_init.max_surprisal=0.0", "model.vocab_init.max_surprisal"),
    ("model.vocab_init.max_surprisal=inf", "model.vocab_init.max_surprisal"),
    ("model.vocab_init.max_surprisal=nan", "model.vocab_init.max_surprisal"),
    ("model.vocab_init.bias_lr=0.0", "model.vocab_init.bias_lr"),
    ("model.vocab_init.tokens=3", "model.vocab_init.tokens"),  # an unknown key
])
def test_bad_values_are_clear_errors(override, field):
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        load_config(VOCAB, [override])


def test_refused_combinations():
    with pytest.raises(ConfigError, match="vocab_init replaces model.logit_shift"):
        load_config(VOCAB, ["model.logit_shift=5.0"])
    with pytest.raises(ConfigError, match="vocab_init applies to kind = 'decoder' only"):
        load_config(ROOT / "configs" / "tiny-cpu.toml", ["model.vocab_init={ docs = 8 }"])


# ---------------------------------------------------------------------- lsr-train, in process
needs_data = pytest.mark.skipif(not (DATA / "beir" / "scifact").exists(), reason="needs ../shared/data")


def _mini_scifact(root: Path) -> Path:
    """SciFact's first 8 train queries, their judged documents and the first 120 others."""
    import gzip

    src, dst = DATA / "beir" / "scifact", root / "beir" / "scifact"
    (dst / "qrels").mkdir(parents=True)
    lines = (src / "qrels" / "train.tsv").read_text().split("\n")
    rows = [r for r in lines[1:] if r]
    qids = list(dict.fromkeys(r.split("\t")[0] for r in rows))[:8]
    rows = [r for r in rows if r.split("\t")[0] in qids]
    keep = {r.split("\t")[1] for r in rows}
    (dst / "qrels" / "train.tsv").write_text("\n".join([lines[0]] + rows) + "\n")
    with gzip.open(src / "corpus.jsonl.gz", "rt", encoding="utf-8", newline="\n") as fh:
        out = [line for i, line in enumerate(fh) if i < 120 or json.loads(line)["_id"] in keep]
    (dst / "corpus.jsonl").write_text("".join(out))
    shutil.copy(src / "queries.jsonl", dst / "queries.jsonl")
    return root


def _tiny_decoder_folder(path: Path) -> Path:
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from lsr.models.hub import model_path

    tok = AutoTokenizer.from_pretrained(model_path("splade-tiny"))
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                                         bos_token_id=tok.cls_token_id, eos_token_id=tok.sep_token_id,
                                         pad_token_id=tok.pad_token_id))
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


def _overrides(data: Path, model: Path, out: Path) -> list[str]:
    return [f'model.init="{model}"', "model.max_query_length=8", "model.max_doc_length=16",
            "model.lora={ r = 4, lora_alpha = 8 }",
            "model.vocab_init={ docs = 40, target_terms = 30, max_surprisal = 20.0, bias_lr = 5e-2 }",
            f'data.train=[{{ path = "{data}/beir/scifact", split = "train" }}]',
            "data.depth=5", "data.n_negatives=1", "data.max_positives=2", 'data.bm25_tokenizer="splade-tiny"',
            'teachers.models=[{ kind = "bm25" }]', f'teachers.cache_dir="{out.parent / "tc"}"',
            "train.steps=4", "train.batch_size=2", "train.warmup_steps=1", "train.save_every=2", "train.log_every=1",
            "train.progress=false", 'train.device="cpu"', "loss.regularizer_warmup=0", "eval=[]",
            f'train.output_dir="{out}"']


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    from lsr.train import train

    base = tmp_path_factory.mktemp("vocab")
    data = _mini_scifact(base / "data")
    model = _tiny_decoder_folder(base / "tiny-llama")
    full, split = base / "full", base / "split"
    train(VOCAB, overrides=_overrides(data, model, full))
    train(VOCAB, overrides=_overrides(data, model, split), stop_after=2)
    train(VOCAB, overrides=_overrides(data, model, split), resume=True)
    return full, split


@needs_data
def test_bias_is_fitted_trained_and_saved(runs):
    from lsr.models import SparseEncoder
    from lsr.models.decoder import TERM_BIAS_FILE

    full, _ = runs
    fit = json.loads((full / "vocab_init.json").read_text())
    assert fit["docs"] == 40 and fit["target_terms"] == 30 and abs(fit["mean_active"] - 30) <= 0.5
    assert fit["seconds"] > 0 and np.isfinite(fit["tau"])
    first = json.loads((full / "log.jsonl").read_text().splitlines()[0])
    assert 0 < first["nnz_d"] < 200  # sparse from step 1
    at2 = torch.load(full / "checkpoint-2" / "student.pt")["term_bias"]
    at4 = torch.load(full / "checkpoint-4" / "student.pt")["term_bias"]
    assert at2.shape == at4.shape and not torch.equal(at2, at4)  # it trains
    final = full / "final"
    assert json.loads((final / "lsr_config.json").read_text())["term_bias"] == TERM_BIAS_FILE
    enc = SparseEncoder.load(final, device="cpu")
    assert torch.equal(enc.term_bias.detach(), at4)
    assert 0 < float(enc.encode_documents(["a protein in the cell membrane"]).row_nnz()[0]) < 1000


@needs_data
def test_resume_restores_the_bias_exactly(runs):
    full, split = runs
    assert json.loads((split / "vocab_init.json").read_text()) | {"seconds": 0} == \
        json.loads((full / "vocab_init.json").read_text()) | {"seconds": 0}
    a = torch.load(full / "checkpoint-4" / "student.pt")
    b = torch.load(split / "checkpoint-4" / "student.pt")
    assert a.keys() == b.keys() and "term_bias" in a
    for k in a:
        assert torch.equal(a[k], b[k]), k


@needs_data
def test_bias_has_its_own_learning_rate(tmp_path, caplog):
    """The optimiser gives the bias bias_lr and no weight decay; trainable = false freezes it."""
    from lsr.train.config import load_config as load
    from lsr.train.trainer import Trainer

    data = _mini_scifact(tmp_path / "data")
    model = _tiny_decoder_folder(tmp_path / "m")
    out = tmp_path / "frozen"
    cfg, text = load(VOCAB, _overrides(data, model, out) + ["model.vocab_init.trainable=false", "train.steps=2"])
    with caplog.at_level(logging.INFO, logger="lsr.models.decoder"):
        tr = Trainer(cfg, text)
        tr.run()
    assert any("term bias fitted on 40 documents" in r.getMessage() for r in caplog.records)
    assert all(p is not tr.accel.unwrap_model(tr.pair).enc.term_bias
               for g in tr.optimizer.param_groups for p in g["params"])
    a = torch.load(out / "checkpoint-2" / "student.pt")["term_bias"]
    from lsr.models import SparseEncoder

    assert torch.equal(SparseEncoder.load(out / "final", device="cpu").term_bias.detach(), a)
    cfg, text = load(VOCAB, _overrides(data, model, tmp_path / "lr") + ["train.steps=1"])
    tr = Trainer(cfg, text)
    tr.run()
    enc = tr.accel.unwrap_model(tr.pair).enc
    groups = [g for g in tr.optimizer.param_groups if any(p is enc.term_bias for p in g["params"])]
    assert len(groups) == 1 and len(groups[0]["params"]) == 1 and groups[0]["weight_decay"] == 0.0
    assert groups[0]["initial_lr"] == 5e-2
