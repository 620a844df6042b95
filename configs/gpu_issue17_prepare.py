"""Build the ``.lsr-gpu/`` bundle for ``configs/gpu_issue17_run.sh``, on the CPU, ahead of the GPU run.

The GPU run has minutes, not hours, and all-MiniLM-L6-v2 (91 MB) does not fit in what travels to
it, so every teacher score the run will ask for is computed here, once, and travels as lsr's own
caches: the label-free candidates (``candidates-*.json``) and the teachers' ``teacher-scores-*.npz``
files, written by the real code paths (:func:`lsr.data.label_free.build_label_free`,
``Trainer._load_training_data``, :class:`lsr.teachers.Ensemble`) under the keys the run will look
up. Each document and query is encoded once by SPLADE-tiny and MiniLM (:class:`_Memo`) and reused by
every configuration; a teacher here differs from the stock one only in where its vectors come from
(its name and fingerprint are the stock teacher's, so the cache keys agree).

    .venv/bin/python configs/gpu_issue17_prepare.py encode   # SPLADE-tiny + MiniLM over both corpora (long)
    .venv/bin/python configs/gpu_issue17_prepare.py caches   # candidates + teacher scores for every run
    .venv/bin/python configs/gpu_issue17_prepare.py bundle   # .lsr-gpu/: data, SPLADE-tiny (fp16), caches
    PYTHON=.venv/bin/python bash configs/gpu_issue17_run.sh --smoke   # the run itself, from the bundle alone

``--work`` (default ``/work/cache-issue17``) holds the models used here and the encodings; ``--data``
the BEIR folders (default ``../shared/data``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
logger = logging.getLogger("issue17.prepare")



WHEELS = ("pydantic-2*.whl", "pydantic_core-*.whl", "annotated_types-*.whl", "typing_inspection-*.whl",
          "ir_measures-*.whl", "pytrec_eval_terrier-*.whl")


def _jobs():
    """The GPU run's job list (configs/gpu_issue17_run.py), the one place that names configs and overrides."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("issue17_run", ROOT / "configs" / "gpu_issue17_run.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["issue17_run"] = mod
    spec.loader.exec_module(mod)
    return mod.JOBS


class _Memo:
    """Vectors by text for one model and side, computed on first request, kept on disk."""

    def __init__(self, path: Path, encode, kind: str):
        self.path, self.encode, self.kind = path, encode, kind
        self.rows: dict[str, object] = {}
        if path.exists():
            self._load()

    def _load(self):
        from lsr.index import load_vectors

        if self.kind == "sparse":
            batch, texts = load_vectors(self.path)
            for i, t in enumerate(texts or []):
                self.rows[t] = batch[i]
        else:
            with np.load(self.path, allow_pickle=False) as z:
                for t, v in zip(z["texts"], z["vectors"]):
                    self.rows[str(t)] = v
        logger.info("%s: %d cached rows", self.path.name, len(self.rows))

    def _save(self):
        from lsr.index import SparseBatch, save_vectors

        texts = list(self.rows)
        tmp = self.path.with_suffix(".tmp.npz")
        if self.kind == "sparse":
            save_vectors(tmp, SparseBatch.concat([self.rows[t] for t in texts]), ids=texts)
        else:
            np.savez(tmp, texts=np.asarray(texts), vectors=np.stack([self.rows[t] for t in texts]))
        tmp.replace(self.path)

    def get(self, texts: list[str], chunk: int = 512):
        todo = list(dict.fromkeys(t for t in texts if t not in self.rows))
        for s in range(0, len(todo), chunk):
            part = todo[s:s + chunk]
            t0 = time.time()
            out = self.encode(part)
            for i, t in enumerate(part):
                self.rows[t] = out[i]
            self._save()
            logger.info("%s: %d/%d new rows (%.1f rows/s)", self.path.name, s + len(part), len(todo),
                        len(part) / max(time.time() - t0, 1e-9))
        return [self.rows[t] for t in texts]


class _Encoders:
    def __init__(self, work: Path):
        self.work = work
        self.enc_dir = work / "enc"
        self.enc_dir.mkdir(parents=True, exist_ok=True)
        self._splade = self._st = None
        self.memos: dict[tuple[str, str], _Memo] = {}

    def splade(self):
        if self._splade is None:
            from lsr.models import SparseEncoder

            # as lsr.teachers.SparseTeacher and the label-free miner load it (max_doc_length 256)
            self._splade = SparseEncoder.load(str(self.work / "splade-tiny"), kind="splade", device="cpu",
                                              max_doc_length=256)
            self._splade.eval()
        return self._splade

    def st(self):
        if self._st is None:
            from sentence_transformers import SentenceTransformer

            self._st = SentenceTransformer(str(self.work / "all-MiniLM-L6-v2"), device="cpu")
            self._st.max_seq_length = 256  # DenseTeacher's max_length
        return self._st

    def memo(self, model: str, side: str) -> _Memo:
        key = (model, side)
        if key not in self.memos:
            if model == "splade":
                fn = (lambda t: self.splade().encode_documents(t, batch_size=32)) if side == "document" else \
                    (lambda t: self.splade().encode_queries(t, batch_size=128))
                kind = "sparse"
            else:
                fn = lambda t: self.st().encode(t, batch_size=64 if side == "document" else 256,  # noqa: E731
                                                normalize_embeddings=True, convert_to_numpy=True)
                kind = "dense"
            self.memos[key] = _Memo(self.enc_dir / f"{model}-{side}.npz", fn, kind)
        return self.memos[key]


class _MemoSplade:
    """The SPLADE-tiny encoder surface the label-free miner uses, served from the memo."""

    def __init__(self, encoders: _Encoders):
        self.e = encoders

    def eval(self):
        return self

    def encode_documents(self, texts, **_):
        from lsr.index import SparseBatch

        return SparseBatch.concat(self.e.memo("splade", "document").get(list(texts)))

    def encode_queries(self, texts, **_):
        from lsr.index import SparseBatch

        return SparseBatch.concat(self.e.memo("splade", "query").get(list(texts)))


def _unique_docs(candidates):
    seen: dict[str, int] = {}
    for cands in candidates.values():
        for d in cands:
            seen.setdefault(d, len(seen))
    return seen


class _MemoSparseTeacher:
    def __init__(self, encoders: _Encoders, stock):
        self.e, self.name, self._fp = encoders, stock.name, stock.fingerprint()

    def fingerprint(self):
        return self._fp

    def score(self, queries, corpus, candidates):  # as lsr.teachers.SparseTeacher.score
        from lsr.index import SparseBatch

        docs = _unique_docs(candidates)
        qids = list(candidates)
        qv = SparseBatch.concat(self.e.memo("splade", "query").get([queries[q] for q in qids])).to_scipy()
        dv = SparseBatch.concat(self.e.memo("splade", "document").get([corpus[d] for d in docs])).to_scipy()
        out = {}
        for i, q in enumerate(qids):
            rows = [docs[d] for d in candidates[q]]
            out[q] = np.asarray((dv[rows] @ qv[i].T).toarray()).ravel().astype(np.float32)
        return out


class _MemoDenseTeacher:
    def __init__(self, encoders: _Encoders, stock):
        self.e, self.name, self._fp = encoders, stock.name, stock.fingerprint()

    def fingerprint(self):
        return self._fp

    def score(self, queries, corpus, candidates):  # as lsr.teachers.DenseTeacher.score
        docs = _unique_docs(candidates)
        qids = list(candidates)
        qe = np.stack(self.e.memo("minilm", "query").get([queries[q] for q in qids]))
        de = np.stack(self.e.memo("minilm", "document").get([corpus[d] for d in docs]))
        return {q: de[[docs[d] for d in candidates[q]]] @ qe[i] for i, q in enumerate(qids)}


def _ensemble_factory(encoders: _Encoders, cfg):
    """``Trainer._ensemble`` with the dense and sparse teachers served from the memo."""
    from lsr.teachers import Ensemble, build_teacher

    def make(cache_dir):
        tc = cfg.teachers
        teachers = []
        for t in tc.models:
            kw = {} if t.kind == "bm25" else {"batch_size": tc.batch_size, "max_length": t.max_length}
            stock = build_teacher(t.kind, t.model, **kw)
            teachers.append(_MemoDenseTeacher(encoders, stock) if t.kind == "dense" else
                            _MemoSparseTeacher(encoders, stock) if t.kind == "sparse" else stock)
        return Ensemble(teachers, [t.weight for t in tc.models], normalization=tc.normalization, scale=tc.scale,
                        cache_dir=cache_dir)
    return make


def _corpora(data: Path):
    from lsr.data.pseudo_queries import iter_doc_fields
    from lsr.index.corpus import read_corpus

    texts: list[str] = []
    for name in ("scifact", "nfcorpus"):
        full, _, _ = iter_doc_fields(read_corpus(data / "beir" / name))
        texts += list(full.values())
    return texts


def cmd_encode(args):
    enc = _Encoders(args.work)
    texts = _corpora(args.data)
    logger.info("%d documents", len(texts))
    for model in ("splade", "minilm"):
        enc.memo(model, "document").get(texts)


def _trainer(job, args):
    from lsr.train.config import load_config
    from lsr.train.trainer import Trainer

    sets = [f"train.output_dir=\"{args.work / 'runs' / job.name}\"", "train.device=\"cpu\"", "train.progress=false"]
    cfg, text = load_config(ROOT / job.config, job.overrides + sets)
    tr = Trainer(cfg, text)
    tr.out.mkdir(parents=True, exist_ok=True)
    return cfg, tr


def cmd_caches(args):
    """Every job's training data, through the stock code with the memo's vectors: what it writes
    under .cache/ is what the GPU run reads (a job that shares another's data finds it cached)."""
    from types import SimpleNamespace

    from lsr.data import label_free

    os.chdir(ROOT)
    enc = _Encoders(args.work)
    miner = _MemoSplade(enc)
    orig = label_free.mine_candidates
    # the label-free miner's SPLADE vectors come from the memo; everything else is the stock path
    label_free.mine_candidates = lambda q, s, c, spec, encoder=None: orig(q, s, c, spec, encoder=miner)
    try:
        jobs = [j for j in _jobs() if not args.only or j.name in args.only]
        # other configs whose teacher scores travel in the same bundle (e.g. configs/decoder-vocab.toml
        # for configs/gpu_decoder_run.sh with TEACHER_CACHE=.cache/teachers)
        jobs += [SimpleNamespace(name=Path(c).stem, config=c, overrides=['teachers.cache_dir=".cache/teachers"'])
                 for c in args.config]
        for job in jobs:
            cfg, tr = _trainer(job, args)
            tr._ensemble = lambda cache_dir, _c=cfg: _ensemble_factory(enc, _c)(cache_dir)
            t0 = time.time()
            if cfg.data.mode == "label-free":
                tr.accel = SimpleNamespace(is_main_process=True)
                _, queries, positives, _, _ = tr._label_free_data()
            else:
                corpus, queries, positives, negatives = tr._load_training_data()
                tr._teacher_scores(corpus, queries, positives, negatives)
            logger.info("%s: %d training queries (%.0fs)", job.name, len(positives), time.time() - t0)
    finally:
        label_free.mine_candidates = orig


def _fp16_copy(src: Path, dst: Path):
    import torch
    from safetensors.torch import load_file, save_file

    dst.mkdir(parents=True, exist_ok=True)
    for f in src.iterdir():
        if f.name != "model.safetensors":
            shutil.copy2(f, dst / f.name)
    sd = load_file(src / "model.safetensors")
    save_file({k: (v.half() if v.dtype == torch.float32 else v).contiguous() for k, v in sd.items()},
              dst / "model.safetensors", metadata={"format": "pt"})


def _size(p: Path) -> int:
    return sum(f.stat().st_size for f in p.rglob("*") if f.is_file()) if p.is_dir() else p.stat().st_size


def cmd_bundle(args):
    os.chdir(ROOT)
    b = ROOT / ".lsr-gpu"
    for sub in ("data", "models", "whl", "cache.tar.xz"):
        p = b / sub
        if p.is_dir():
            shutil.rmtree(p)
        elif p.exists():
            p.unlink()
    _fp16_copy(args.work / "splade-tiny", b / "models" / "splade-tiny")
    # the packages the GPU machine lacks for training and lsr-eval (the rest of .whl/ is not needed)
    (b / "whl").mkdir(exist_ok=True)
    for pattern in WHEELS:
        found = sorted((ROOT / ".whl").glob(pattern))
        if not found:
            raise FileNotFoundError(f"no wheel {pattern} in {ROOT / '.whl'}")
        shutil.copy2(found[-1], b / "whl" / found[-1].name)
    caches = [p for p in (Path(".cache/label-free"), Path(".cache/teachers")) if p.is_dir()]
    files = [f for c in caches for f in sorted(c.iterdir()) if f.is_file() and not f.name.startswith(".")]
    if args.newer_than:  # a lean bundle: only the caches written since (what a later run adds)
        t = args.newer_than.stat().st_mtime
        files = [f for f in files if f.stat().st_mtime > t]
    # NFCorpus rides in the archive too (its qrels compress tenfold); SciFact travels with the
    # repository (tests/data/beir/scifact, byte-identical to BEIR's)
    nf = args.data / "beir" / "nfcorpus"
    data = [str(p.relative_to(args.data)) for p in sorted(nf.rglob("*")) if p.is_file()]
    # one xz stream: the teacher files repeat the same candidate lists, which a large window folds
    with open(b / "cache.tar.xz", "wb") as fh:
        tar = subprocess.Popen(["tar", "cf", "-", *map(str, files), "-C", str(args.data), "--transform", "s,^beir/,data/beir/,",
                                *data], stdout=subprocess.PIPE)
        subprocess.run(["xz", "-T1", "--lzma2=preset=9,dict=192MiB"], stdin=tar.stdout, stdout=fh, check=True)
        if tar.wait() != 0:
            raise RuntimeError("tar failed")
    sizes = {str(p.relative_to(ROOT)): _size(p) for p in sorted(b.iterdir())}
    sizes["total"] = _size(b)
    print(json.dumps({k: f"{v / 2**20:.2f} MiB" for k, v in sizes.items()}, indent=1))
    print(f"{len(files)} cache files: " + ", ".join(f.name for f in files))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("cmd", choices=["encode", "caches", "bundle"])
    ap.add_argument("--work", type=Path, default=Path("/work/cache-issue17"))
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    ap.add_argument("--only", nargs="*", help="run names (default: all)")
    ap.add_argument("--newer-than", type=Path, help="bundle: only cache files modified after this file")
    ap.add_argument("--config", action="append", default=[], help="caches: also this training config's teacher scores")
    args = ap.parse_args(argv)
    args.work, args.data = args.work.resolve(), args.data.resolve()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("LSR_DATA", str(args.data))
    {"encode": cmd_encode, "caches": cmd_caches, "bundle": cmd_bundle}[args.cmd](args)


if __name__ == "__main__":
    main()
