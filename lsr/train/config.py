"""``lsr-train``'s TOML config: pydantic models validated once, saved next to every checkpoint.

Relative paths are taken from the working directory; ``$VARS`` and ``~`` are expanded.
"""

from __future__ import annotations

import hashlib
import json
import os
import tomllib
from pathlib import Path
from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from lsr.data.splits import check_selection_split

__all__ = ["TrainConfig", "load_config", "ConfigError"]


class ConfigError(ValueError):
    """A config file that cannot be read or does not validate; the message names file and field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _path(p: str | None) -> str | None:
    return None if p is None else os.path.expanduser(os.path.expandvars(p))


class VocabInitConfig(_Strict):
    """Decoder: a per-term bias ``min(-log pbar_v, max_surprisal) - tau`` fitted on a sample of the
    training corpus before step 0 (``DecoderSpladeEncoder.fit_term_bias``), trained with the adapters."""

    docs: int = Field(512, gt=0)  # sample size: documents drawn (seeded) from the training corpus
    target_terms: int = Field(200, gt=0)  # tau is solved so the sample has this many active terms per document
    max_surprisal: float = Field(20.0, gt=0, allow_inf_nan=False)  # cap on -log pbar_v (never-predicted terms)
    trainable: bool = True
    bias_lr: Optional[float] = Field(None, gt=0, allow_inf_nan=False)  # the bias's learning rate; None: train.lr


class ModelConfig(_Strict):
    kind: Literal["splade", "inference-free", "decoder"] = "splade"
    init: str = Field(..., description="checkpoint folder or short name (splade-tiny, minilm, smollm2-135m)")
    max_query_length: int = Field(64, gt=0)
    max_doc_length: int = Field(256, gt=0)
    # inference-free: where the query table starts ("idf": BM25 IDF over the training corpora,
    # "ones": binary queries, "keep": the checkpoint's own table) and whether it trains, with its
    # own learning rate.
    query_weights: Literal["idf", "keep", "ones"] = "idf"
    trainable_query_weights: bool = False
    # Divide the IDF table by its mean over the training queries' tokens: ranking is unchanged, but
    # training scores keep the scale of binary queries (raw IDF multiplies the logits ~4x, and the
    # student then collapses its documents to a few dozen terms within 100 steps).
    normalize_query_weights: bool = True
    query_weights_lr: float = Field(1e-3, ge=0)
    lora: Optional[dict] = None  # decoder: peft LoraConfig keywords (r, lora_alpha, target_modules, ...)
    # decoder: activation log1p(relu(log_softmax(logits) + logit_shift)); None keeps the raw logits
    # (dense at initialisation for a causal LM; see lsr.models.decoder)
    logit_shift: Optional[float] = None
    # decoder: a per-term bias from the LM's corpus statistics instead of one shift (see VocabInitConfig)
    vocab_init: Optional[VocabInitConfig] = None


class DatasetConfig(_Strict):
    path: str
    # judged mode: the qrels split trained on ("train", or "train-fit": train without the seeded
    # hold-out that model selection reads); never a test split. Label-free mode: leave it out.
    split: Optional[str] = None
    name: Optional[str] = None
    max_queries: Optional[int] = Field(None, gt=0)

    @field_validator("split")
    @classmethod
    def _not_test(cls, v):
        return v if v is None else check_selection_split(v, "data.train")


class DataConfig(_Strict):
    # judged: queries and qrels of data.train[].split; label-free: the corpora alone (pseudo-queries,
    # see [pseudo_queries]); no queries file and no qrels of any split are opened.
    mode: Literal["judged", "label-free"] = "judged"
    train: list[DatasetConfig] = Field(..., min_length=1)
    triples: Optional[str] = None  # MS MARCO-style text triples (query, positive, negative) instead
    negatives: Literal["bm25"] = "bm25"
    depth: int = Field(50, gt=0)
    n_negatives: int = Field(7, ge=0)
    max_positives: int = Field(16, gt=0)
    min_relevance: int = 1
    bm25_tokenizer: Optional[str] = "splade-tiny"
    seed: int = 0


class LossConfig(_Strict):
    ranking: Literal["infonce", "marginmse", "kl"] = "infonce"
    temperature: float = Field(1.0, gt=0)
    in_batch: bool = True
    infonce_weight: float = Field(0.0, ge=0)  # with kl/marginmse: add InfoNCE on the judged positives
    infonce_temperature: float = Field(1.0, gt=0)
    regularizer: Literal["flops", "idf_flops", "df_flops", "l1", "none"] = "flops"
    idf_weight_fn: Literal["inverse", "inverse_sqrt", "exp", "none"] = "inverse"
    df_alpha: float = Field(0.1, gt=0, lt=1)
    df_beta: float = Field(5.0, gt=0)
    lambda_doc: float = Field(1e-3, ge=0)
    lambda_query: float = Field(1e-3, ge=0)
    regularizer_warmup: int = Field(0, ge=0)
    l0_threshold: Optional[float] = None


class TeacherConfig(_Strict):
    kind: Literal["dense", "sparse", "bm25"]
    model: Optional[str] = None
    weight: float = 1.0
    max_length: int = Field(256, gt=0)


class TeachersConfig(_Strict):
    models: list[TeacherConfig] = Field(default_factory=list)
    normalization: Literal["minmax", "zscore", "none"] = "minmax"
    scale: float = Field(1.0, gt=0)
    cache_dir: Optional[str] = None
    batch_size: int = Field(128, gt=0)


class PseudoQueriesConfig(_Strict):
    """Label-free mode: doc2query generation, mining, the consistency filter and the artefact cache."""

    generator: str = "smollm2-135m"  # folder, .gguf file or short name
    max_new_tokens: int = Field(16, gt=0)
    max_passage_chars: int = Field(1000, gt=0)
    queries_per_doc: int = Field(1, gt=0)  # 1: greedy; more: seeded sampling
    seed: int = 0
    batch_size: int = Field(64, gt=0)
    max_docs: Optional[int] = Field(None, gt=0)  # generate for the first N documents of each corpus
    miners: list[Literal["bm25", "splade"]] = Field(default_factory=lambda: ["bm25", "splade"], min_length=1)
    miner_model: str = "splade-tiny"
    mine_depth: int = Field(30, gt=0)
    keep_rank: int = Field(3, ge=0)  # keep a query if the ensemble ranks its source in the top keep_rank
    cache_dir: str = ".cache/label-free"
    encode_batch_size: int = Field(128, gt=0)


class TrainLoopConfig(_Strict):
    output_dir: str
    steps: int = Field(..., gt=0)
    batch_size: int = Field(32, gt=0)
    grad_accum: int = Field(1, gt=0)
    lr: float = Field(2e-5, gt=0)
    warmup_steps: int = Field(0, ge=0)
    weight_decay: float = Field(0.01, ge=0)
    max_grad_norm: Optional[float] = 1.0
    seed: int = 0
    bf16: bool = True  # autocast to bf16 on GPU; ignored on the CPU
    device: Literal["auto", "cpu", "cuda"] = "auto"
    log_every: int = Field(10, gt=0)
    save_every: int = Field(500, gt=0)
    eval_every: Optional[int] = Field(None, gt=0)
    keep_checkpoints: int = Field(2, gt=0)
    save_model_in_checkpoints: bool = True
    progress: bool = True


class EvalConfig(_Strict):
    path: str
    split: str = "dev"  # model selection reads dev splits only: "dev" or "train-dev" (never test)
    name: Optional[str] = None
    max_queries: Optional[int] = Field(None, gt=0)
    corpus: Literal["full", "candidates"] = "full"  # candidates: BM25 top-`depth` pool + judged docs
    depth: int = Field(100, gt=0)
    batch_size: int = Field(64, gt=0)

    @field_validator("split")
    @classmethod
    def _not_test(cls, v):
        return check_selection_split(v, "eval")


class TrainConfig(_Strict):
    model: ModelConfig
    data: DataConfig
    loss: LossConfig = Field(default_factory=LossConfig)
    teachers: TeachersConfig = Field(default_factory=TeachersConfig)
    pseudo_queries: Optional[PseudoQueriesConfig] = None
    train: TrainLoopConfig
    eval: list[EvalConfig] = Field(default_factory=list)

    @model_validator(mode="after")
    def _check(self):
        if self.loss.ranking in ("marginmse", "kl") and not self.teachers.models:
            raise ValueError(f"loss.ranking = {self.loss.ranking!r} distils teacher scores: add [[teachers.models]]")
        if self.loss.ranking in ("marginmse", "kl") and self.data.n_negatives == 0:
            raise ValueError("distillation needs data.n_negatives >= 1")
        if self.model.logit_shift is not None and self.model.kind != "decoder":
            raise ValueError("model.logit_shift applies to kind = 'decoder' only")
        if self.model.vocab_init is not None:
            if self.model.kind != "decoder":
                raise ValueError("model.vocab_init applies to kind = 'decoder' only")
            if self.model.logit_shift is not None:
                raise ValueError("model.vocab_init replaces model.logit_shift (its tau is the shift): remove logit_shift")
        if self.data.mode == "label-free":
            if self.eval:
                raise ValueError("data.mode = 'label-free' reads no judgments, and [[eval]] reads qrels: "
                                 "remove [[eval]] and evaluate the final model with lsr-eval")
            if self.data.triples:
                raise ValueError("data.mode = 'label-free' takes corpora only: remove data.triples")
            if any(d.split is not None or d.max_queries is not None for d in self.data.train):
                raise ValueError("data.mode = 'label-free' reads corpora only: remove split/max_queries "
                                 "from [[data.train]]")
            if not self.teachers.models:
                raise ValueError("data.mode = 'label-free' labels pseudo-queries with teachers: add [[teachers.models]]")
            if self.pseudo_queries is None:
                self.pseudo_queries = PseudoQueriesConfig()
            self.pseudo_queries.cache_dir = _path(self.pseudo_queries.cache_dir)
        else:
            if self.pseudo_queries is not None:
                raise ValueError("[pseudo_queries] applies to data.mode = 'label-free' only")
            for d in self.data.train:
                if d.split is None:
                    d.split = "train"
        for d in self.data.train:
            d.path = _path(d.path)
        for e in self.eval:
            e.path = _path(e.path)
        self.train.output_dir = _path(self.train.output_dir)
        self.teachers.cache_dir = _path(self.teachers.cache_dir)
        if self.data.triples:
            self.data.triples = _path(self.data.triples)
        return self

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.model_dump(), sort_keys=True).encode()).hexdigest()[:12]


def _set_path(d: dict, dotted: str, value):
    keys = dotted.split(".")
    cur = d
    for k in keys[:-1]:
        cur = cur.setdefault(k, {})
        if not isinstance(cur, dict):
            raise ConfigError(f"--set {dotted}: {k} is not a table")
    cur[keys[-1]] = value


def _parse_value(text: str):
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def load_config(path: str | Path, overrides: list[str] | None = None) -> tuple[TrainConfig, str]:
    """Read and validate a TOML config; ``overrides`` are ``section.key=value`` (TOML values).

    Returns ``(config, source_text)``; errors name the file and the offending field.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such config file: {path}")
    text = path.read_text(encoding="utf-8")
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML ({exc})") from None
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"--set expects section.key=value, got {item!r}")
        k, v = item.split("=", 1)
        _set_path(raw, k.strip(), _parse_value(v.strip()))
    try:
        cfg = TrainConfig.model_validate(raw)
    except ValidationError as exc:
        lines = [f"{'.'.join(str(x) for x in e['loc'])}: {e['msg']}" for e in exc.errors()]
        raise ConfigError(f"{path}: invalid config\n  " + "\n  ".join(lines)) from None
    if overrides:  # keep the saved copy faithful to what ran
        text += "\n# lsr-train --set overrides applied on top of this file:\n" + "".join(f"#   {o}\n" for o in overrides)
    return cfg, text
