"""The training loop behind ``lsr-train``: data and teachers prepared once, AdamW with linear
warm-up/decay, gradient accumulation, bf16 autocast on GPU, DDP through accelerate, checkpoints
that resume exactly (model, optimiser, scheduler, loss buffers, RNG, data position), dev eval.
"""

from __future__ import annotations

import json
import logging
import random
import shutil
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from lsr.train.config import ConfigError, TrainConfig

__all__ = ["Trainer", "build_loss"]

logger = logging.getLogger(__name__)


class _Pair(nn.Module):
    """Routes one forward through DDP: (query feats, document feats) → pooled (B, V) weights."""

    def __init__(self, enc):
        super().__init__()
        self.enc = enc

    def forward(self, q_feats, d_feats):
        return self.enc.forward_queries(q_feats), self.enc.forward_documents(d_feats)


def build_loss(cfg: TrainConfig, idf: np.ndarray | None, dim: int):
    from lsr import losses as L

    lc = cfg.loss
    if lc.ranking == "infonce":
        ranking = L.InfoNCELoss(lc.temperature, lc.in_batch)
    elif lc.ranking == "marginmse":
        ranking = L.MarginMSELoss()
    else:
        ranking = L.KLDivLoss(lc.temperature)

    def reg():
        if lc.regularizer == "none":
            return None
        if lc.regularizer == "flops":
            return L.FLOPSLoss(lc.l0_threshold)
        if lc.regularizer == "l1":
            return L.L1Loss(lc.l0_threshold)
        if lc.regularizer == "idf_flops":
            return L.WeightedFLOPSLoss(torch.as_tensor(idf), lc.idf_weight_fn, lc.l0_threshold)
        return L.DFFLOPSLoss(dim, lc.df_alpha, lc.df_beta, l0_threshold=lc.l0_threshold)

    # The inference-free query side is a table, not a model: no query regulariser.
    reg_q = reg() if cfg.model.kind != "inference-free" and lc.lambda_query > 0 else None
    aux = {}
    if lc.infonce_weight > 0 and lc.ranking != "infonce":
        aux["infonce"] = (L.InfoNCELoss(lc.infonce_temperature, lc.in_batch), lc.infonce_weight)
    return L.SparseRetrievalLoss(ranking, reg(), reg_q, lc.lambda_doc, lc.lambda_query, lc.regularizer_warmup,
                                 auxiliary=aux)


def _rng_state():
    st = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        st["cuda"] = torch.cuda.get_rng_state_all()
    return st


def _set_rng_state(st):
    random.setstate(st["python"])
    np.random.set_state(st["numpy"])
    torch.set_rng_state(st["torch"])
    if "cuda" in st and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(st["cuda"])


def _seed_all(seed: int):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class Trainer:
    def __init__(self, cfg: TrainConfig, source_text: str = ""):
        self.cfg, self.source_text = cfg, source_text
        self.out = Path(cfg.train.output_dir)

    # ------------------------------------------------------------------ preparation
    def _load_training_data(self):
        from lsr.data import load_beir, load_triples, mine_bm25
        from lsr.teachers import wordpiece_tokenizer
        from lsr.teachers.bm25 import regex_tokenizer
        from lsr.teachers.scorers import resolve_model

        dc = self.cfg.data
        corpus, queries, positives, negatives = {}, {}, {}, {}
        tok = wordpiece_tokenizer(resolve_model(dc.bm25_tokenizer)) if dc.bm25_tokenizer else regex_tokenizer()
        multi = len(dc.train) > 1
        for d in dc.train:
            name = d.name or Path(d.path).name
            data = load_beir(d.path, d.split, prefix=name if multi else None)
            pos = data.positives(dc.min_relevance)
            if d.max_queries:
                pos = {q: pos[q] for q in sorted(pos)[: d.max_queries]}
            # every judged document (any grade) is excluded from the negatives
            judged = {q: list(data.qrels[q]) for q in pos}
            negs = mine_bm25(data.queries, data.corpus, judged, depth=dc.depth, tokenizer=tok)
            # cap positives deterministically: highest relevance first, then id order
            pos = {q: sorted(p, key=lambda x: (-data.qrels[q][x], x))[: dc.max_positives] for q, p in pos.items()}
            corpus.update(data.corpus)
            queries.update(data.queries)
            positives.update(pos)
            negatives.update(negs)
        if dc.triples:
            data, negs = load_triples(dc.triples)
            corpus.update(data.corpus)
            queries.update(data.queries)
            positives.update(data.positives())
            for q, n in negs.items():
                negatives[q] = negatives.get(q, []) + n
        logger.info("training data: %d queries with positives, %d documents", len(positives), len(corpus))
        return corpus, queries, positives, negatives

    def _ensemble(self, cache_dir: str):
        from lsr.teachers import Ensemble, build_teacher

        tc = self.cfg.teachers
        teachers = []
        for t in tc.models:
            kw = {} if t.kind == "bm25" else {"batch_size": tc.batch_size, "max_length": t.max_length}
            teachers.append(build_teacher(t.kind, t.model, **kw))
        return Ensemble(teachers, [t.weight for t in tc.models], normalization=tc.normalization, scale=tc.scale,
                        cache_dir=cache_dir)

    def _teacher_scores(self, corpus, queries, positives, negatives):
        tc = self.cfg.teachers
        if not tc.models:
            return None
        cands = {q: list(dict.fromkeys(list(positives[q]) + list(negatives.get(q, ())))) for q in positives}
        ens = self._ensemble(tc.cache_dir or str(self.out / "teacher-cache"))
        return ens(queries, corpus, cands)

    def _label_free_spec(self):
        """The label-free stages' settings and the ``(name, folder)`` corpora, from the config."""
        from lsr.data.label_free import LabelFreeSpec
        from lsr.data.pseudo_queries import GenerationSpec

        pq, dc = self.cfg.pseudo_queries, self.cfg.data
        spec = LabelFreeSpec(
            generation=GenerationSpec(pq.generator, pq.max_new_tokens, pq.max_passage_chars, pq.queries_per_doc, pq.seed),
            batch_size=pq.batch_size, max_docs=pq.max_docs, miners=tuple(pq.miners), miner_model=pq.miner_model,
            mine_depth=pq.mine_depth, keep_rank=pq.keep_rank, cache_dir=pq.cache_dir, bm25_tokenizer=dc.bm25_tokenizer,
            device=None if self.cfg.train.device == "auto" else self.cfg.train.device,
            encode_batch_size=pq.encode_batch_size, progress=self.cfg.train.progress)
        return spec, [(d.name or Path(d.path).name, d.path) for d in dc.train]

    def generate_queries(self) -> dict:
        """Label-free stage (a) alone: each corpus's pseudo-queries generated (or found) in the cache,
        nothing mined, labelled or trained. For a GPU machine that has the generator but not the
        teachers: the cache files it writes are the ones a later full run starts from."""
        from lsr.data.label_free import generate_queries
        from lsr.data.pseudo_queries import clean_queries

        if self.cfg.data.mode != "label-free":
            raise ConfigError("--queries-only needs data.mode = \"label-free\"")
        spec, corpora = self._label_free_spec()
        out = {}
        for name, folder in corpora:
            gq = generate_queries(name, folder, spec)
            _, counts = clean_queries(gq.raw, gq.titles, gq.bodies)
            out[name] = {"cache_file": str(gq.path), **counts}
            logger.info("%s: pseudo-queries %s", name, json.dumps(out[name]))
        return out

    def _label_free_data(self):
        """Label-free mode: pseudo-queries, mined candidates and ensemble labels from the corpora
        alone (``lsr.data.label_free``); no queries file and no qrels are opened."""
        from lsr.data.label_free import build_label_free

        spec, corpora = self._label_free_spec()
        pq = self.cfg.pseudo_queries
        lf = build_label_free(corpora, spec, self._ensemble(self.cfg.teachers.cache_dir or pq.cache_dir))
        if self.accel.is_main_process:
            (self.out / "label_free_stats.json").write_text(json.dumps(lf.stats, indent=1))
        return lf.corpus, lf.queries, lf.positives, lf.negatives, lf.teacher_scores

    def _idf(self, enc, corpus) -> np.ndarray:
        from lsr.index.stats import bm25_idf, document_frequencies

        texts = list(corpus.values())
        token_ids = (row for s in range(0, len(texts), 1024)
                     for row in enc.tokenizer(texts[s:s + 1024], add_special_tokens=False, verbose=False)["input_ids"])
        return bm25_idf(*document_frequencies(token_ids, enc.dim))

    @staticmethod
    def _mean_query_idf(enc, idf, texts) -> float:
        """Mean IDF of the distinct tokens of each query, averaged over the queries."""
        ids = enc.tokenizer(list(texts), add_special_tokens=False, verbose=False)["input_ids"]
        vals = [float(idf[np.unique(np.asarray(r, np.int64))].mean()) for r in ids if len(r)]
        m = float(np.mean(vals)) if vals else 1.0
        logger.info("IDF query table divided by %.3f (mean query-token IDF)", m)
        return m if m > 0 else 1.0

    def _load_eval(self):
        from lsr.data import load_beir, mine_bm25

        sets = []
        for e in self.cfg.eval:
            data = load_beir(e.path, e.split)
            qrels = {q: r for q, r in data.qrels.items() if q in data.queries}
            if e.max_queries:
                qrels = {q: qrels[q] for q in sorted(qrels)[: e.max_queries]}
            corpus = data.corpus
            if e.corpus == "candidates":
                pool = mine_bm25(data.queries, data.corpus, {q: [] for q in qrels}, depth=e.depth)
                keep = {d for ds in pool.values() for d in ds} | {d for r in qrels.values() for d in r}
                corpus = {d: t for d, t in corpus.items() if d in keep}
            sets.append((e.name or Path(e.path).name, corpus, data.queries, qrels, e.batch_size))
        return sets

    # ------------------------------------------------------------------ checkpoints
    def _checkpoints(self):
        return sorted(self.out.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))

    def _save(self, step, epoch, offset):
        ck = self.out / f"checkpoint-{step}"
        tmp = self.out / f".tmp-checkpoint-{step}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        enc = self.accel.unwrap_model(self.pair).enc
        torch.save(enc.state_dict(), tmp / "student.pt")
        if self.cfg.train.save_model_in_checkpoints:
            enc.save(tmp / "model")  # a loadable model folder at every checkpoint
        torch.save(self.optimizer.state_dict(), tmp / "optimizer.pt")
        torch.save(self.scheduler.state_dict(), tmp / "scheduler.pt")
        torch.save(self.criterion.state_dict(), tmp / "loss.pt")
        torch.save(_rng_state(), tmp / "rng.pt")
        (tmp / "state.json").write_text(json.dumps({"step": step, "epoch": epoch, "offset": offset,
                                                     "config_digest": self.cfg.digest()}))
        (tmp / "config.toml").write_text(self.source_text)
        shutil.rmtree(ck, ignore_errors=True)
        tmp.rename(ck)
        for old in self._checkpoints()[: -self.cfg.train.keep_checkpoints]:
            shutil.rmtree(old, ignore_errors=True)
        logger.info("saved %s", ck)

    def _restore(self, ck: Path):
        enc = self.accel.unwrap_model(self.pair).enc
        enc.load_state_dict(torch.load(ck / "student.pt", map_location=self.device))
        self.optimizer.load_state_dict(torch.load(ck / "optimizer.pt", map_location=self.device))
        self.scheduler.load_state_dict(torch.load(ck / "scheduler.pt"))
        self.criterion.load_state_dict(torch.load(ck / "loss.pt", map_location=self.device))
        _set_rng_state(torch.load(ck / "rng.pt", weights_only=False))
        st = json.loads((ck / "state.json").read_text())
        if st.get("config_digest") != self.cfg.digest():
            logger.warning("resuming %s with a config that differs from the one it was saved with", ck)
        return st["step"], st["epoch"], st["offset"]

    # ------------------------------------------------------------------ run
    def run(self, resume: bool = False, stop_after: int | None = None) -> dict:
        """Train to ``train.steps``; ``stop_after`` ends this invocation after that many optimiser
        steps with a checkpoint (a pre-empted or time-sliced run), to be continued with ``resume``."""
        from accelerate import Accelerator
        from tqdm.auto import tqdm

        from lsr.data import TrainingSet
        from lsr.models import SparseEncoder

        cfg, tc = self.cfg, self.cfg.train
        cpu = tc.device == "cpu" or (tc.device == "auto" and not torch.cuda.is_available())
        self.accel = accel = Accelerator(cpu=cpu, mixed_precision="bf16" if (tc.bf16 and not cpu) else "no")
        self.device = accel.device
        self.out.mkdir(parents=True, exist_ok=True)
        if accel.is_main_process:
            (self.out / "config.toml").write_text(self.source_text)
            (self.out / "config.json").write_text(json.dumps(cfg.model_dump(), indent=1))
        logger.info("config (digest %s): %s", cfg.digest(), json.dumps(cfg.model_dump()))
        _seed_all(tc.seed)

        if cfg.data.mode == "label-free":
            if accel.is_main_process:
                corpus, queries, positives, negatives, teacher = self._label_free_data()
            accel.wait_for_everyone()
            if not accel.is_main_process:
                corpus, queries, positives, negatives, teacher = self._label_free_data()  # cache hits
        else:
            corpus, queries, positives, negatives = self._load_training_data()
            teacher = None
            if accel.is_main_process:
                teacher = self._teacher_scores(corpus, queries, positives, negatives)
            accel.wait_for_everyone()
            if not accel.is_main_process and cfg.teachers.models:
                teacher = self._teacher_scores(corpus, queries, positives, negatives)  # now a cache hit
        data = TrainingSet(queries, corpus, positives, negatives, n_negatives=cfg.data.n_negatives,
                           seed=cfg.data.seed, teacher_scores=teacher)

        from lsr.teachers.scorers import resolve_model

        kw = {"max_query_length": cfg.model.max_query_length, "max_doc_length": cfg.model.max_doc_length}
        if cfg.model.lora:
            kw["lora"] = cfg.model.lora
        if cfg.model.logit_shift is not None:
            kw["logit_shift"] = cfg.model.logit_shift
        _seed_all(tc.seed)  # fresh heads (if any) start the same whatever ran before
        enc = SparseEncoder.load(str(resolve_model(cfg.model.init)), kind=cfg.model.kind, device=str(self.device), **kw)
        idf = None
        if cfg.model.kind == "inference-free" or cfg.loss.regularizer == "idf_flops":
            idf = self._idf(enc, corpus)
        if cfg.model.kind == "inference-free":
            if cfg.model.query_weights == "idf":
                table = idf
                if cfg.model.normalize_query_weights:
                    table = idf / self._mean_query_idf(enc, idf, [queries[q] for q in positives])
                _set_query_weights(enc, table, cfg.model.trainable_query_weights)
            elif cfg.model.query_weights == "ones":  # binary queries: plain inference-free SPLADE-doc
                _set_query_weights(enc, np.ones(enc.dim, np.float32), cfg.model.trainable_query_weights)
            else:
                enc.query_weights.requires_grad_(cfg.model.trainable_query_weights)
        if cfg.model.vocab_init is not None:
            self._init_term_bias(enc, corpus, resume)
        self.criterion = build_loss(cfg, idf, enc.dim).to(self.device)

        qw = getattr(enc, "query_weights", None)
        tb = getattr(enc, "term_bias", None)
        own_lr = {id(t) for t in (qw, tb) if t is not None}  # tables with their own group
        body = [p for p in enc.parameters() if p.requires_grad and id(p) not in own_lr]
        decay = [p for p in body if p.ndim >= 2]
        no_decay = [p for p in body if p.ndim < 2]
        groups = [{"params": decay, "weight_decay": tc.weight_decay, "lr": tc.lr},
                  {"params": no_decay, "weight_decay": 0.0, "lr": tc.lr}]
        if qw is not None and qw.requires_grad:
            groups.append({"params": [qw], "weight_decay": 0.0, "lr": cfg.model.query_weights_lr})
        if tb is not None and tb.requires_grad:
            vi = cfg.model.vocab_init
            groups.append({"params": [tb], "weight_decay": 0.0,
                           "lr": vi.bias_lr if (vi is not None and vi.bias_lr is not None) else tc.lr})
        self.optimizer = torch.optim.AdamW([g for g in groups if g["params"]])
        warm, total = tc.warmup_steps, tc.steps

        def lr_lambda(step):
            if warm and step < warm:
                return (step + 1) / warm
            return max(0.0, (total - step) / max(1, total - warm))

        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lr_lambda)
        self.pair = _Pair(enc)
        self.pair, self.optimizer = accel.prepare(self.pair, self.optimizer)

        step, epoch, offset = 0, 0, 0
        if resume:
            cks = self._checkpoints()
            if not cks:
                raise FileNotFoundError(f"--resume: no checkpoint-* in {self.out}")
            step, epoch, offset = self._restore(cks[-1])
            logger.info("resumed from %s at step %d (epoch %d, offset %d)", cks[-1], step, epoch, offset)
        eval_sets = self._load_eval() if (cfg.eval and accel.is_main_process) else []

        world, rank = accel.num_processes, accel.process_index
        micro = tc.batch_size
        stream = data.batches(micro * world, epoch, offset)
        log_path = self.out / "log.jsonl"
        bar = tqdm(total=tc.steps, initial=step, disable=not (tc.progress and accel.is_main_process), desc="train")
        acc: dict[str, float] = {}
        n_acc = 0
        t0, seen = time.time(), 0
        self.pair.train()
        started = step
        while step < tc.steps:
            if stop_after is not None and step - started >= stop_after:
                if accel.is_main_process and not (self.out / f"checkpoint-{step}").exists():
                    self._save(step, epoch, offset)
                logger.info("stopping after %d steps at step %d (--stop-after)", stop_after, step)
                bar.close()
                return {}
            self.optimizer.zero_grad(set_to_none=True)
            for a in range(tc.grad_accum):
                epoch, offset, batch = next(stream)
                batch = batch[rank::world]
                terms, stats = self._micro_step(batch, step, last=a == tc.grad_accum - 1)
                for k, v in {**terms, **stats}.items():
                    acc[k] = acc.get(k, 0.0) + v / tc.grad_accum
                seen += len(batch) * world
            if tc.max_grad_norm:
                accel.clip_grad_norm_(self.pair.parameters(), tc.max_grad_norm)
            self.optimizer.step()
            self.scheduler.step()
            if qw is not None and qw.requires_grad:
                with torch.no_grad():
                    qw.clamp_(min=0)  # query weights are term weights: never negative
            step += 1
            n_acc += 1
            bar.update(1)
            if step % tc.log_every == 0 or step == tc.steps:
                rec = {k: v / n_acc for k, v in acc.items()}
                rec.update(step=step, epoch=epoch, lr=self.scheduler.get_last_lr()[0],
                           samples_per_s=seen / max(time.time() - t0, 1e-9))
                if accel.is_main_process:
                    with open(log_path, "a") as fh:
                        fh.write(json.dumps(rec) + "\n")
                    bar.set_postfix(loss=f"{rec['loss']:.4f}", nnz_d=f"{rec['nnz_d']:.0f}")
                    logger.info("step %d %s", step, " ".join(f"{k}={v:.4g}" for k, v in rec.items()
                                                           if isinstance(v, float)))
                acc, n_acc, t0, seen = {}, 0, time.time(), 0
            if step % tc.save_every == 0 or step == tc.steps:
                if accel.is_main_process:
                    self._save(step, epoch, offset)
                accel.wait_for_everyone()
            if tc.eval_every and step % tc.eval_every == 0 and step != tc.steps and eval_sets:
                self._evaluate(eval_sets, step)
        bar.close()
        metrics = {}
        if accel.is_main_process:
            final = self.out / "final"
            accel.unwrap_model(self.pair).enc.save(final)
            (final / "training_config.toml").write_text(self.source_text)
            if eval_sets:
                metrics = self._evaluate(eval_sets, step)
                (self.out / "metrics.json").write_text(json.dumps(metrics, indent=1))
        accel.wait_for_everyone()
        return metrics

    def _init_term_bias(self, enc, corpus: dict[str, str], resume: bool) -> None:
        """``[model] vocab_init``: fit the decoder's per-term bias on a seeded sample of the training
        corpus, on the training device and under the training autocast (a resumed run only makes room
        for the checkpoint's bias)."""
        vi, tc = self.cfg.model.vocab_init, self.cfg.train
        if resume and self._checkpoints():
            enc.set_term_bias(torch.zeros(enc.dim))  # overwritten by the checkpoint's state dict
        else:
            ids = list(corpus)
            if not ids:
                raise ValueError("model.vocab_init: the training corpus is empty")
            pick = np.sort(np.random.default_rng(tc.seed).choice(len(ids), size=min(vi.docs, len(ids)), replace=False))
            logger.info("term bias: fitting on %d of %d training documents (target %d active terms, max surprisal %g)",
                        len(pick), len(ids), vi.target_terms, vi.max_surprisal)
            with self.accel.autocast():
                fit = enc.fit_term_bias([corpus[ids[i]] for i in pick], target_terms=vi.target_terms,
                                        max_surprisal=vi.max_surprisal, batch_size=tc.batch_size,
                                        show_progress_bar=tc.progress and self.accel.is_main_process)
            if self.accel.is_main_process:
                (self.out / "vocab_init.json").write_text(json.dumps(fit.as_dict(), indent=1) + "\n")
        enc.term_bias.requires_grad_(vi.trainable)

    def _micro_step(self, batch, step, last):
        enc = self.accel.unwrap_model(self.pair).enc
        q_feats = enc.tokenize([e.query for e in batch], side="query")
        docs = [d for e in batch for d in e.docs]
        d_feats = enc.tokenize(docs, side="document")
        teacher = None
        if batch[0].teacher is not None:
            teacher = torch.as_tensor(np.stack([e.teacher for e in batch]), device=self.device)
        ctx = self.accel.no_sync(self.pair) if (not last and self.accel.num_processes > 1) else _null()
        with ctx:
            with self.accel.autocast():
                q, d = self.pair(q_feats, d_feats)
            q, d = q.float(), d.float()
            d = d.reshape(len(batch), -1, d.shape[-1])
            terms = self.criterion(q, d, teacher, step=step)
            self.accel.backward(terms["loss"] / self.cfg.train.grad_accum)
        with torch.no_grad():
            qn = (q > 0).float()
            dn = (d.reshape(-1, d.shape[-1]) > 0).float()
            stats = {"nnz_q": qn.sum(-1).mean().item(), "nnz_d": dn.sum(-1).mean().item(),
                     "flops": (qn.mean(0) * dn.mean(0)).sum().item()}
        return {k: float(v.detach()) for k, v in terms.items()}, stats

    def _evaluate(self, eval_sets, step):
        from lsr.train.evaluate import evaluate_encoder

        enc = self.accel.unwrap_model(self.pair).enc
        was = enc.training
        enc.eval()
        out = {}
        for name, corpus, queries, qrels, bs in eval_sets:
            with self.accel.autocast():
                m, _ = evaluate_encoder(enc, corpus, queries, qrels, batch_size=bs)
            out[name] = m
            logger.info("eval step %d %s: %s", step, name, " ".join(f"{k}={v:.4f}" for k, v in m.items()))
        with open(self.out / "eval.jsonl", "a") as fh:
            fh.write(json.dumps({"step": step, **out}) + "\n")
        enc.train(was)
        return out


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False


def _set_query_weights(enc, weights, trainable: bool) -> None:
    """Overwrite an inference-free encoder's (V,) query table and set whether it trains."""
    qw = enc.query_weights
    w = torch.as_tensor(np.asarray(weights), dtype=torch.float32)
    if qw.shape != w.shape:
        raise ValueError(f"query table has shape {tuple(qw.shape)}, weights {tuple(w.shape)}")
    with torch.no_grad():
        qw.copy_(w.to(qw.device))
    qw.requires_grad_(trainable)
