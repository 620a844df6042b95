"""The driver of ``configs/gpu_issue17_run.sh``: effectiveness without labels, on one GPU, in minutes.

Trains the jobs of :data:`JOBS` (the label-free v2, two cross-domain models, ablations, the
supervised recipe's selection under the protocol), a few at a time on one GPU, in the order of the
list; evaluates each model with ``lsr-eval`` (exact scoring) on SciFact test and NFCorpus dev as soon
as it is trained; and keeps ``$OUT/results.json`` / ``results.md`` up to date after every step, so a
run cut short still returns what finished. Every job has a deadline inside ``--end``: a training
still running then is stopped and its newest checkpoint evaluated (marked ``cut short``); a job
that cannot start in time is marked ``skipped``.

    python configs/gpu_issue17_run.py run --out $OUT --end <unix time> [--slots 4] [--smoke]
    python configs/gpu_issue17_run.py eval NAME MODEL_DIR [--smoke]      (one model, both data sets)

``--smoke`` runs every job on the CPU for a few steps on small batches and evaluates on a subset
(the same code paths and data preparation, for a check before the GPU run).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable


@dataclass
class Job:
    name: str
    config: str
    overrides: list[str]
    group: str
    what: str
    keep: bool = False       # an fp16 model tarball in $OUT
    select: bool = False     # choose the checkpoint on the in-training dev evaluation (eval.jsonl)


ABLATION_STEPS = 400  # the ablations' shorter schedule, the same for the reference and each variant
_ABL = [f"train.steps={ABLATION_STEPS}"]
_JUDGED = ['teachers.cache_dir=".cache/teachers"']

JOBS: list[Job] = [
    Job("lf-v2", "configs/label-free-v2.toml", [], "label-free",
        "label-free v2 (no judgments): BM25-heavier ensemble, lambda 5e-4, 1,200 steps", keep=True),
    Job("xd-nfcorpus", "configs/xdomain-nfcorpus-only.toml", _JUDGED, "cross-domain",
        "supervised recipe on NFCorpus train only (1,280 steps); SciFact test is out of domain", keep=True),
    Job("xd-scifact", "configs/xdomain-scifact-only.toml", _JUDGED, "cross-domain",
        "supervised recipe on SciFact train-fit only (320 steps); NFCorpus dev is out of domain", keep=True),
    Job("abl-ref", "configs/label-free-v2.toml", _ABL, "ablation",
        f"ablation reference: label-free v2 at {ABLATION_STEPS} steps"),
    Job("abl-plain-flops", "configs/label-free-v2.toml", _ABL + ['model.query_weights="ones"'], "ablation",
        "plain FLOPS: binary query weights (no IDF on the query side, in training or at search)"),
    Job("abl-single-teacher", "configs/label-free-v2.toml",
        _ABL + ['teachers.models=[{kind="dense", model="minilm", weight=1.0}]'], "ablation",
        "single teacher: MiniLM alone labels and filters the pseudo-queries"),
    Job("abl-random-span", "configs/label-free-v2.toml", _ABL + ['pseudo_queries.generator="random-span"'],
        "ablation", "no query generator: random 3-9 word spans of each document as queries (cropping)"),
    Job("abl-3q", "configs/label-free-v2.toml", _ABL + ["pseudo_queries.queries_per_doc=3"], "ablation",
        "3 queries per document (seeded sampling, temperature 0.8, top-p 0.95) instead of 1 (greedy)"),
    Job("lf-3q", "configs/label-free-v2.toml", ["pseudo_queries.queries_per_doc=3"], "label-free",
        "label-free v2 with 3 sampled queries per document (1,200 steps, settings fixed before the run)", keep=True),
    Job("sup-protocol", "configs/inference-free.toml",
        _JUDGED + ["train.save_every=400", "train.keep_checkpoints=4"], "protocol",
        "supervised recipe under the protocol: SciFact train-fit + NFCorpus train, 1,600 steps, the step "
        "chosen on SciFact train-dev + NFCorpus dev (mean nDCG@10), then SciFact test read once", keep=True,
        select=True),
]

EVALS = [("scifact", "test"), ("nfcorpus", "dev")]
# Figures measured earlier on the same data with exact scoring (models/inference-free-label-free/README.md)
REFERENCE = {
    "BM25, Pyserini Lucene": {"scifact/test": 0.6789, "nfcorpus/dev": 0.2886},
    "BM25, BERT word pieces (k1 0.9, b 0.4)": {"scifact/test": 0.6712, "nfcorpus/dev": 0.3026},
    "label-free v1 (models/inference-free-label-free)": {"scifact/test": 0.6741, "nfcorpus/dev": 0.2973},
    "supervised (models/inference-free-splade-tiny-scifact-nfcorpus)": {"scifact/test": 0.7189,
                                                                       "nfcorpus/dev": 0.3071},
}
SHIPPED_V1 = "models/inference-free-label-free"
SHIPPED_SUPERVISED = "models/inference-free-splade-tiny-scifact-nfcorpus"


def _smoke_overrides(job: Job) -> list[str]:
    o = ['train.device="cpu"', "train.batch_size=4", "train.log_every=1", "train.save_every=1", "train.warmup_steps=1",
         "loss.regularizer_warmup=1", "train.steps=3"]
    if job.select:
        ev = ('eval=[{path="$LSR_DATA/beir/scifact", split="train-dev", max_queries=8, corpus="candidates", '
              'depth=5}, {path="$LSR_DATA/beir/nfcorpus", split="dev", max_queries=8, corpus="candidates", depth=5}]')
        o += [ev, "train.eval_every=1", "train.save_every=1"]
    return o


def train_command(job: Job, smoke: bool) -> list[str]:
    sets = job.overrides + [f'train.output_dir="runs/{job.name}"', "train.progress=false"]
    if smoke:
        sets += _smoke_overrides(job)
    return [PY, "-m", "lsr.cli.train", job.config] + [a for s in sets for a in ("--set", s)]


def eval_command(name: str, model: str, smoke: bool, extra_systems: list[str] | None = None) -> list[str]:
    cmd = [PY, str(Path(__file__).resolve()), "eval", name, model] + (["--smoke"] if smoke else [])
    for s in extra_systems or []:
        cmd += ["--also", s]
    return cmd


# ---------------------------------------------------------------------------------------------- helpers
def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _write(path: Path, text: str) -> None:
    tmp = path.with_name("." + path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def _jsonl(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()]


def _newest_model(run: Path) -> tuple[Path | None, int | None]:
    if (run / "final").is_dir():
        steps = [r["step"] for r in _jsonl(run / "log.jsonl")]
        return run / "final", (max(steps) if steps else None)
    cks = sorted((p for p in run.glob("checkpoint-*") if (p / "model").is_dir()),
                 key=lambda p: int(p.name.split("-")[1]))
    if not cks:
        return None, None
    return cks[-1] / "model", int(cks[-1].name.split("-")[1])


def select_checkpoint(run: Path, names=("scifact", "nfcorpus"), measure: str = "nDCG@10") -> dict:
    """The step whose in-training evaluation has the highest mean ``measure`` over ``names`` (ties:
    the earlier step), among steps whose model folder still exists; what was compared, for the report."""
    rows = []
    for rec in _jsonl(run / "eval.jsonl"):
        step = int(rec["step"])
        if not all(n in rec and measure in rec[n] for n in names):
            continue
        model = run / "final" if (run / "final").is_dir() and step == _final_step(run) else \
            run / f"checkpoint-{step}" / "model"
        rows.append({"step": step, "mean": sum(rec[n][measure] for n in names) / len(names),
                     **{n: rec[n][measure] for n in names}, "model": str(model), "exists": model.is_dir()})
    usable = [r for r in rows if r["exists"]]
    if not usable:
        return {"candidates": rows, "chosen": None}
    best = max(usable, key=lambda r: (round(r["mean"], 12), -r["step"]))
    return {"criterion": f"mean {measure} over {', '.join(names)} (in-training evaluation: "
                         "SciFact train-dev, NFCorpus dev); ties to the earlier step",
            "candidates": rows, "chosen": best}


def _final_step(run: Path) -> int | None:
    cfg = run / "config.json"
    if not cfg.exists():
        return None
    return int(json.loads(cfg.read_text())["train"]["steps"])


def fp16_copy(src: Path, dst: Path) -> None:
    """A model folder with its float32 weights stored as float16 (lsr loads them back as float32).
    Through numpy, so the driver never waits on importing torch."""
    import numpy as np
    from safetensors.numpy import load_file, save_file

    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(src, dst)
    for f in dst.rglob("model.safetensors"):
        sd = load_file(str(f))
        save_file({k: np.ascontiguousarray(v.astype(np.float16) if v.dtype == np.float32 else v) for k, v in sd.items()},
                  str(f), metadata={"format": "pt"})


# ---------------------------------------------------------------------------------------------- eval
def lsr_eval_argv(name: str, model: str, ds: str, split: str, smoke: bool, also: list[str], data: str) -> list[str]:
    """The ``lsr-eval`` arguments that evaluate one model on one data set (exact scoring, top 100)."""
    argv = ["run", "--dataset", f"{data}/beir/{ds}", "--split", split, "--k", "100", "--latency-queries", "0",
            "--no-progress", "--out", f"runs/eval/{name}-{ds}.json",
            "--system", f"inference-free:{model},name={name},batch_size=256"]
    for s in also:
        argv += ["--system", s]
    if smoke:
        argv += ["--max-docs", "150", "--max-queries", "10"]
    return argv


def _also(name: str) -> list[str]:
    """Systems evaluated beside a job's model in the same report (paired tests against it)."""
    if name in ("lf-v2", "lf-3q"):
        return [f"inference-free:{SHIPPED_V1},name=label-free v1 (shipped),batch_size=256"]
    if name == "sup-protocol":
        return [f"inference-free:{SHIPPED_SUPERVISED},name=supervised (shipped; step chosen on test),batch_size=256"]
    return []


def cmd_eval(args) -> int:
    """Both data sets in one process (one interpreter start); reports in runs/eval/NAME-DATASET.json."""
    from lsr.eval.cli import main as lsr_eval

    (ROOT / "runs" / "eval").mkdir(parents=True, exist_ok=True)
    rc = 0
    for ds, split in EVALS:
        argv = lsr_eval_argv(args.name, args.model, ds, split, args.smoke, args.also, os.environ["LSR_DATA"])
        t0 = time.time()
        r = lsr_eval(argv)
        print(f"lsr-eval {ds}/{split} rc={r} {time.time() - t0:.1f}s: lsr-eval {' '.join(argv)}", flush=True)
        rc = rc or r
    return rc


# ---------------------------------------------------------------------------------------------- run
@dataclass
class State:
    job: Job
    status: str = "pending"   # pending, training, evaluating, done, cut short, failed, skipped
    proc: subprocess.Popen | None = None
    t_start: float = 0.0
    t_train: float | None = None
    t_eval: float | None = None
    rc: int | None = None
    cut: bool = False
    model: str | None = None
    shipped: str | None = None
    step: int | None = None
    selection: dict | None = None
    tarball: str | None = None
    eval_rc: int | None = None
    eval_cmd: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


class Runner:
    def __init__(self, args):
        self.args, self.out = args, Path(args.out)
        self.out.mkdir(parents=True, exist_ok=True)
        (ROOT / "runs" / "eval").mkdir(parents=True, exist_ok=True)
        jobs = [j for j in JOBS if not args.only or j.name in args.only]
        self.states = [State(j) for j in jobs]
        self.t0 = time.time()
        self.log_fh = open(self.out / "progress.log", "a", buffering=1)
        self.env = dict(os.environ, TOKENIZERS_PARALLELISM="true", RAYON_NUM_THREADS=str(args.rayon_threads),
                        OMP_NUM_THREADS="2", PYTORCH_CUDA_ALLOC_CONF="expandable_segments:True")

    def log(self, msg: str) -> None:
        line = f"[{time.time() - self.t0:6.1f}s] {msg}"
        print(line, flush=True)
        self.log_fh.write(line + "\n")

    # deadlines
    def train_deadline(self) -> float:
        return self.args.end - self.args.eval_reserve

    def eval_deadline(self) -> float:
        return self.args.end - self.args.pack_reserve

    def _spawn(self, cmd: list[str], log: Path) -> subprocess.Popen:
        fh = open(log, "a")
        fh.write(f"# {_now()} {' '.join(cmd)}\n")
        fh.flush()
        return subprocess.Popen(cmd, cwd=ROOT, env=self.env, stdout=fh, stderr=subprocess.STDOUT,
                                start_new_session=True)

    @staticmethod
    def _stop(p: subprocess.Popen) -> None:
        """SIGTERM to the process group, SIGKILL after 10 s."""
        try:
            os.killpg(p.pid, signal.SIGTERM)
            p.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
        except ProcessLookupError:
            pass

    def start_training(self, s: State) -> None:
        run = ROOT / "runs" / s.job.name
        if run.exists():
            shutil.rmtree(run)
        cmd = train_command(s.job, self.args.smoke)
        s.proc, s.t_start, s.status = self._spawn(cmd, ROOT / "runs" / f"{s.job.name}.log"), time.time(), "training"
        self.log(f"start {s.job.name}: {' '.join(cmd[2:])}")

    def finish_training(self, s: State) -> None:
        s.t_train = time.time() - s.t_start
        run = ROOT / "runs" / s.job.name
        model: Path | None
        if s.job.select:
            s.selection = select_checkpoint(run)
            chosen = s.selection.get("chosen")
            if chosen:
                model, step = Path(chosen["model"]), chosen["step"]
            else:
                model, step = _newest_model(run)
                s.notes.append("no in-training dev evaluation finished, so nothing was selected: the newest "
                               "checkpoint is evaluated instead, as a cut-short run")
                s.cut = True
        else:
            model, step = _newest_model(run)
        s.step = step
        final = _final_step(run)
        if s.rc not in (0, None) and not s.cut:
            s.notes.append(f"training exited with rc={s.rc} (see runs/{s.job.name}.log)")
        if s.cut or (final is not None and step is not None and not s.job.select and step < final):
            s.cut = True
            s.notes.append(f"cut short: training ended before its last step; evaluated step {step} of {final}, "
                           "which is not the model named in advance")
        if s.job.select and s.selection and s.selection.get("chosen"):
            s.notes.append("NFCorpus dev chose the step, so its NFCorpus dev figure is a selection figure; "
                           "SciFact test was read once, for the chosen step only")
        if model is None:
            s.status = "failed"
            self.log(f"{s.job.name}: no model (rc={s.rc}); see runs/{s.job.name}.log")
            return
        s.model = str(model.relative_to(ROOT))
        ship = run / "shipped"
        fp16_copy(model, ship)  # the evaluated folder is the one that travels
        s.shipped = str(ship.relative_to(ROOT))
        if s.job.keep:
            tgz = self.out / f"model-{s.job.name}.tgz"
            with tarfile.open(tgz, "w:gz") as tar:
                tar.add(ship, arcname=f"{s.job.name}")
                for extra in ("config.toml", "log.jsonl", "eval.jsonl", "label_free_stats.json"):
                    if (run / extra).exists():
                        tar.add(run / extra, arcname=f"{s.job.name}/training/{extra}")
            s.tarball = tgz.name
        self.log(f"{s.job.name}: trained rc={s.rc} in {s.t_train:.0f}s, model {s.model} (step {step})"
                 + (f" -> {s.tarball} {Path(self.out / s.tarball).stat().st_size / 2**20:.1f} MiB" if s.tarball else ""))
        s.status = "trained"

    def start_eval(self, s: State) -> None:
        s.eval_cmd = eval_command(s.job.name, s.shipped or "", self.args.smoke, _also(s.job.name))
        s.proc, s.t_start, s.status = self._spawn(s.eval_cmd, ROOT / "runs" / f"{s.job.name}.eval.log"), time.time(), \
            "evaluating"
        self.log(f"eval {s.job.name}")

    def run(self) -> int:
        slots, eval_slots = self.args.slots, self.args.eval_slots
        self.log(f"run start {_now()}; end in {self.args.end - time.time():.0f}s; slots {slots}; "
                 f"jobs {[s.job.name for s in self.states]}")
        self.write_summary()
        while True:
            now = time.time()
            training = [s for s in self.states if s.status == "training"]
            evaluating = [s for s in self.states if s.status == "evaluating"]
            for s in training:
                if s.proc.poll() is not None or now > self.train_deadline():
                    if s.proc.poll() is None:
                        self.log(f"{s.job.name}: training deadline reached, stopping")
                        self._stop(s.proc)
                        s.cut = True
                    s.rc = s.proc.returncode
                    self.finish_training(s)
                    self.write_summary()
            for s in evaluating:
                if s.proc.poll() is not None or now > self.eval_deadline():
                    if s.proc.poll() is None:
                        self.log(f"{s.job.name}: evaluation deadline reached, stopping")
                        self._stop(s.proc)
                        s.notes.append("evaluation stopped at the deadline")
                    s.eval_rc, s.t_eval = s.proc.returncode, time.time() - s.t_start
                    s.status = "cut short" if s.cut else "done"
                    self.log(f"{s.job.name}: evaluated rc={s.eval_rc} in {s.t_eval:.0f}s {self.metrics_line(s)}")
                    self.write_summary()
            n_train = sum(s.status == "training" for s in self.states)
            for s in self.states:
                if s.status != "pending" or n_train >= slots:
                    continue
                if time.time() > self.train_deadline() - self.args.min_train:
                    s.status = "skipped"
                    s.notes.append("not started: too little time left before the deadline")
                    self.log(f"{s.job.name}: skipped (too little time left)")
                    continue
                self.start_training(s)
                n_train += 1
            n_eval = sum(s.status == "evaluating" for s in self.states)
            for s in self.states:
                if s.status == "trained" and n_eval < eval_slots:
                    if time.time() > self.eval_deadline() - 15:
                        s.status = "cut short" if s.cut else "trained, not evaluated"
                        s.notes.append("not evaluated: too little time left")
                        continue
                    self.start_eval(s)
                    n_eval += 1
            if all(s.status not in ("pending", "training", "evaluating", "trained") for s in self.states):
                break
            time.sleep(1)
        self.pack_logs()
        self.write_summary()
        self.log(f"run end {_now()}")
        return 0

    # ------------------------------------------------------------------ results
    def eval_report(self, name: str, ds: str) -> dict | None:
        p = ROOT / "runs" / "eval" / f"{name}-{ds}.json"
        if not p.exists():
            return None
        rep = json.loads(p.read_text())
        out = {"split": rep["dataset"]["split"], "queries": rep["dataset"]["queries"],
               "documents": rep["dataset"]["documents"], "command": rep.get("command"), "systems": {}}
        for sysrep in rep["systems"]:
            eff = sysrep.get("efficiency") or {}
            out["systems"][sysrep["name"]] = {
                "metrics": sysrep["metrics"], "significance_vs_first": sysrep.get("significance"),
                "doc_nnz": eff.get("doc_nnz_mean"), "query_nnz": eff.get("query_nnz_mean"), "flops": eff.get("flops")}
        return out

    def metrics_line(self, s: State) -> str:
        parts = []
        for ds, split in EVALS:
            r = self.eval_report(s.job.name, ds)
            m = r and r["systems"].get(s.job.name)
            if m:
                parts.append(f"{ds}/{split} nDCG@10 {m['metrics'].get('nDCG@10', float('nan')):.4f}")
        return "; ".join(parts)

    def job_record(self, s: State) -> dict:
        run = ROOT / "runs" / s.job.name
        logs = _jsonl(run / "log.jsonl")
        rec = {
            "group": s.job.group, "what": s.job.what, "status": s.status, "notes": s.notes,
            "config": s.job.config, "overrides": s.job.overrides + (_smoke_overrides(s.job) if self.args.smoke else []),
            "train_command": "python -m lsr.cli.train " + shlex.join(train_command(s.job, self.args.smoke)[3:]),
            "config_as_run": (run / "config.toml").read_text() if (run / "config.toml").exists() else None,
            "train_rc": s.rc, "train_s": None if s.t_train is None else round(s.t_train, 1),
            "eval_rc": s.eval_rc, "eval_s": None if s.t_eval is None else round(s.t_eval, 1),
            "step": s.step, "final_step": _final_step(run), "model": s.model, "evaluated_folder": s.shipped,
            "weights": "float16 copy of the trained float32 weights (loaded as float32)", "tarball": s.tarball,
            "last_log": logs[-1] if logs else None,
            "label_free_stats": json.loads((run / "label_free_stats.json").read_text())
            if (run / "label_free_stats.json").exists() else None,
            "selection": s.selection,
            "eval_command": "python " + shlex.join(
                [str(Path(s.eval_cmd[1]).relative_to(ROOT))] + s.eval_cmd[2:]) if s.eval_cmd else None,
            "lsr_eval_commands": [
                "lsr-eval " + shlex.join(lsr_eval_argv(s.job.name, s.shipped, ds, split, self.args.smoke,
                                                       _also(s.job.name), "$LSR_DATA"))
                for ds, split in EVALS] if s.shipped else None,
            "eval": {f"{ds}/{split}": self.eval_report(s.job.name, ds) for ds, split in EVALS},
        }
        return rec

    def write_summary(self) -> None:
        doc = {
            "what": "lsr: effectiveness without labels (label-free v2, cross-domain, ablations, protocol "
                    "re-run of the supervised selection); lsr-eval exact scoring, SciFact test and NFCorpus dev",
            "command": "bash configs/gpu_issue17_run.sh" + (" --smoke" if self.args.smoke else ""),
            "updated": _now(), "elapsed_s": round(time.time() - self.t0, 1), "smoke": self.args.smoke,
            "machine": _machine(), "protocol": "eval/PROTOCOL.md",
            "reference_ndcg10": REFERENCE,
            "jobs": {s.job.name: self.job_record(s) for s in self.states},
        }
        _write(self.out / "results.json", json.dumps(doc, indent=1))
        _write(self.out / "results.md", render_markdown(doc))

    def pack_logs(self) -> None:
        names = []
        for s in self.states:
            run = ROOT / "runs" / s.job.name
            names += [ROOT / "runs" / f"{s.job.name}.log", ROOT / "runs" / f"{s.job.name}.eval.log"]
            names += [run / f for f in ("config.toml", "config.json", "log.jsonl", "eval.jsonl", "metrics.json",
                                        "label_free_stats.json")]
        names += sorted((ROOT / "runs" / "eval").glob("*.json")) + sorted((ROOT / "runs" / "eval").glob("*.md"))
        with tarfile.open(self.out / "logs.tgz", "w:gz") as tar:
            for p in names:
                if p.exists():
                    tar.add(p, arcname=str(p.relative_to(ROOT)))


_MACHINE: dict | None = None


def _machine() -> dict:
    global _MACHINE
    if _MACHINE is None:
        info: dict = {"python": sys.version.split()[0], "cores": os.cpu_count()}
        try:
            info["gpu"] = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader"],
                                         capture_output=True, text=True, timeout=20).stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            info["gpu"] = None
        _MACHINE = info
    return _MACHINE


def render_markdown(doc: dict) -> str:
    lines = [f"# {doc['what']}", "", f"Command: `{doc['command']}`; updated {doc['updated']} "
             f"({doc['elapsed_s']} s into the run){' — SMOKE RUN (CPU, a few steps): figures mean nothing' if doc['smoke'] else ''}.",
             f"Machine: {doc['machine']}.", "",
             "| job | group | status | step | train s | SciFact test nDCG@10 | R@100 | NFCorpus dev nDCG@10 | R@100 | doc nnz (SF) | FLOPS (SF) |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, r in doc["jobs"].items():
        cells = []
        sf = None
        for key in ("scifact/test", "nfcorpus/dev"):
            rep = r["eval"].get(key)
            m = rep and rep["systems"].get(name)
            if key == "scifact/test":
                sf = m
            cells += [f"{m['metrics']['nDCG@10']:.4f}" if m else "—", f"{m['metrics'].get('R@100', float('nan')):.4f}" if m else "—"]
        eff = [f"{sf['doc_nnz']:.0f}" if sf and sf["doc_nnz"] is not None else "—",
               f"{sf['flops']:.2f}" if sf and sf["flops"] is not None else "—"]
        step = f"{r['step']}/{r['final_step']}" if r["step"] is not None else "—"
        lines.append(f"| {name} | {r['group']} | {r['status']} | {step} | {r['train_s'] or '—'} | " + " | ".join(cells + eff) + " |")
    lines += ["", "Reference nDCG@10 measured earlier on the same data (exact scoring):", "",
              "| system | SciFact test | NFCorpus dev |", "|---|---|---|"]
    for k, v in doc["reference_ndcg10"].items():
        lines.append(f"| {k} | {v['scifact/test']:.4f} | {v['nfcorpus/dev']:.4f} |")
    lines += [""]
    for name, r in doc["jobs"].items():
        lines.append(f"- **{name}** ({r['group']}): {r['what']}. Config `{r['config']}`"
                     + (f", overrides {r['overrides']}" if r["overrides"] else "") + "."
                     + (" " + " ".join(r["notes"]) if r["notes"] else ""))
        if r.get("selection") and r["selection"].get("chosen"):
            c = r["selection"]["chosen"]
            lines.append(f"  - selection: step {c['step']} (mean {c['mean']:.4f}) among "
                         + ", ".join(f"{x['step']}: {x['mean']:.4f}" for x in r["selection"]["candidates"]))
        for key, rep in r["eval"].items():
            for other, m in (rep or {}).get("systems", {}).items():
                if other != name:
                    p = (m.get("significance_vs_first") or {}).get("nDCG@10")
                    lines.append(f"  - beside it on {key}: {other} {m['metrics']['nDCG@10']:.4f} "
                                 f"(paired t-test on nDCG@10 against {name}: p={p if p is None else f'{p:.3f}'})")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--out", required=True)
    r.add_argument("--end", type=float, required=True, help="unix time by which everything is written")
    r.add_argument("--slots", type=int, default=5, help="trainings at once on the GPU")
    r.add_argument("--eval-slots", type=int, default=2)
    r.add_argument("--eval-reserve", type=float, default=60, help="seconds kept after the last training")
    r.add_argument("--pack-reserve", type=float, default=12, help="seconds kept after the last evaluation")
    r.add_argument("--min-train", type=float, default=90, help="a job is started only with this much time left")
    r.add_argument("--rayon-threads", type=int, default=4)
    r.add_argument("--only", nargs="*")
    r.add_argument("--smoke", action="store_true")
    e = sub.add_parser("eval")
    e.add_argument("name")
    e.add_argument("model")
    e.add_argument("--also", action="append", default=[], help="another lsr-eval --system in the same report")
    e.add_argument("--smoke", action="store_true")
    args = ap.parse_args(argv)
    os.chdir(ROOT)
    if args.cmd == "eval":
        return cmd_eval(args)
    return Runner(args).run()


if __name__ == "__main__":
    sys.exit(main())
