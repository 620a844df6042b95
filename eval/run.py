"""Retrieval runs: encoder (or pre-encoded vectors) + index, or Pyserini BM25, over one dataset.

A system is named by a short spec string (see :func:`parse_system`); several systems share the
loaded corpus, and systems on the same encoder share its document vectors.
"""

from __future__ import annotations

import hashlib
import json
import logging
import platform
import re
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from lsr.index.base import MAX_K, SearchParams
from lsr.index.exact import top_rows
from lsr.index.sparse import SparseBatch, load_vectors, save_vectors
from lsr.index.stats import flops

from . import efficiency as eff
from .data import Dataset
from .metrics import evaluate, paired_test, write_trec_run

__all__ = ["SystemSpec", "SystemResult", "parse_system", "run_system", "run_systems"]

log = logging.getLogger(__name__)

ENCODER_KINDS = ("splade", "inference-free", "decoder", "encoder")
INDEX_KINDS = ("exact", "seismic")
SEARCH_KEYS = {*SearchParams.__dataclass_fields__, "threads"}
COMMON_KEYS = {"name", "index", "k", "batch_size", "docs", "queries", "query_encoder", "k1", "b"}
HYBRID_KEYS = {"dense", "alpha", "fusion", "rrf_k", "candidates"}


@dataclass
class SystemSpec:
    """One system. ``kind`` is ``bm25``, ``vectors`` or an encoder kind (``splade``, ``encoder``
    = detect from the folder, ...); ``model`` the encoder name/path; ``index`` the index type with
    its build and search parameters."""

    kind: str
    model: str | None = None
    name: str = ""
    index: str = "exact"
    build_params: dict = field(default_factory=dict)
    search_params: dict = field(default_factory=dict)
    options: dict = field(default_factory=dict)
    spec: str = ""

    def to_dict(self) -> dict:
        return {
            "spec": self.spec, "kind": self.kind, "model": self.model, "name": self.name,
            "index": self.index if self.kind != "bm25" else "lucene",
            "build_params": self.build_params, "search_params": self.search_params, "options": self.options,
        }


def _value(text: str) -> Any:
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("none", "null"):
        return None
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def parse_system(spec: str) -> SystemSpec:
    """Parse ``KIND[:MODEL][,key=value...]``.

    - ``bm25`` (options ``k1``, ``b``): Pyserini Lucene BM25;
    - ``splade:splade-tiny``, ``inference-free:DIR``, ``decoder:DIR``, ``encoder:DIR`` (kind read
      from the folder): ``lsr.models.SparseEncoder.load(MODEL)`` encodes documents and queries;
    - ``vectors:DOCS.npz`` with ``queries=QUERIES.npz`` or ``query_encoder=MODEL``: pre-encoded vectors;
    - ``dense:MODEL`` (e.g. ``dense:minilm``): a sentence-transformers bi-encoder, exact cosine scores;
    - ``hybrid:SPARSE`` where SPARSE is any of the sparse heads above (``hybrid:inference-free:DIR``,
      ``hybrid:vectors:DOCS.npz,queries=Q.npz``, or a folder), with ``dense=MODEL`` (default
      ``minilm``) and ``alpha=`` (weight of the dense side in a convex combination of per-query
      min-max normalised scores, default 0.5) or ``fusion=rrf`` (reciprocal rank fusion, ``rrf_k=60``),
      over the union of each side's top ``candidates=`` (default: the run depth ``k``).
    Options: ``name=`` (row label), ``index=exact|seismic``, ``k=`` (depth, default 1000),
    ``batch_size=``; ``query_cut``, ``heap_factor``, ``threads`` go to ``search``; any other key
    (``n_postings=``, ``centroid_fraction=``, ``summary_energy=``...) to the index's ``build``.

    >>> s = parse_system("splade:splade-tiny,index=seismic,query_cut=10,n_postings=2000")
    >>> s.kind, s.model, s.index, s.search_params, s.build_params
    ('splade', 'splade-tiny', 'seismic', {'query_cut': 10}, {'n_postings': 2000})
    """
    parts = [p.strip() for p in spec.split(",")]
    head, opts = parts[0], parts[1:]
    kind, _, model = head.partition(":")
    kind = kind.strip().lower()
    if kind not in ("bm25", "vectors", "dense", "hybrid") + ENCODER_KINDS:
        raise ValueError(
            f"system {spec!r}: unknown kind {kind!r}; expected bm25, vectors, dense, hybrid or one of "
            f"{', '.join(ENCODER_KINDS)}"
        )
    s = SystemSpec(kind=kind, model=model or None, spec=spec)
    if kind == "hybrid":
        sub, _, rest = (model or "").partition(":")
        if sub.strip().lower() in ENCODER_KINDS + ("vectors",):
            s.options["sparse_kind"], s.model = sub.strip().lower(), rest or None
        else:
            s.options["sparse_kind"] = "encoder"
    for o in opts:
        if not o:
            continue
        key, eq, val = o.partition("=")
        key = key.strip()
        if not eq or not key:
            raise ValueError(f"system {spec!r}: option {o!r} is not key=value")
        v = _value(val.strip())
        if key == "name":
            s.name = str(val.strip())
        elif key == "index":
            if v not in INDEX_KINDS:
                raise ValueError(f"system {spec!r}: index must be one of {INDEX_KINDS}, got {v!r}")
            s.index = v
        elif key in SEARCH_KEYS:
            s.search_params[key] = v
        elif key in COMMON_KEYS or (key in HYBRID_KEYS and kind == "hybrid"):
            s.options[key] = v
        else:
            s.build_params[key] = v
    for key in ("k", "batch_size"):
        v = s.options.get(key, 1)
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise ValueError(f"system {spec!r}: {key} must be an int >= 1, got {v!r}")
    if s.options.get("k", 1) > MAX_K:
        raise ValueError(f"system {spec!r}: k={s.options['k']} exceeds the limit of {MAX_K}")
    if kind in ENCODER_KINDS + ("dense", "hybrid") and not s.model:
        example = "minilm" if kind == "dense" else "inference-free:DIR,alpha=0.5" if kind == "hybrid" else "splade-tiny"
        raise ValueError(f"system {spec!r}: name the model, e.g. {kind}:{example} or {kind}:/path/to/checkpoint")
    if kind == "hybrid":
        _check_hybrid(s, spec)
    if kind == "vectors" or s.options.get("sparse_kind") == "vectors":
        s.options.setdefault("docs", s.model)
        if not s.options.get("docs"):
            raise ValueError(f"system {spec!r}: give the document vectors, e.g. vectors:docs.npz,queries=q.npz")
        if not s.options.get("queries") and not s.options.get("query_encoder"):
            raise ValueError(f"system {spec!r}: give queries=VECTORS or query_encoder=MODEL")
    if not s.name:
        if kind == "bm25":
            s.name = "BM25 (Pyserini)"
        elif kind == "dense":
            s.name = f"dense {Path(s.model).name if s.model and '/' in s.model else s.model}"
        elif kind == "hybrid":
            label = Path(s.model).name if s.model and "/" in s.model else s.model
            how = "RRF" if s.options["fusion"] == "rrf" else f"alpha={s.options['alpha']}"
            s.name = f"hybrid {label} + {s.options['dense']} ({how})"
        else:
            label = Path(s.model).name if s.model and ("/" in s.model) else s.model
            s.name = f"{label or kind}" + (f" [{s.index}]" if s.index != "exact" else "")
            extra = {**s.build_params, **s.search_params}
            if extra:
                s.name += " " + " ".join(f"{k}={v}" for k, v in extra.items())
    return s


def _check_hybrid(s: SystemSpec, spec: str) -> None:
    o = s.options
    o.setdefault("dense", "minilm")
    o.setdefault("fusion", "convex")
    if o["fusion"] not in ("convex", "rrf"):
        raise ValueError(f"system {spec!r}: fusion must be convex or rrf, got {o['fusion']!r}")
    if o["fusion"] == "convex":
        o.setdefault("alpha", 0.5)
        a = o["alpha"]
        if isinstance(a, bool) or not isinstance(a, (int, float)) or not 0.0 <= a <= 1.0:
            raise ValueError(f"system {spec!r}: alpha must be a number in [0, 1], got {a!r}")
    elif "alpha" in o:
        raise ValueError(f"system {spec!r}: alpha applies to fusion=convex, not rrf")
    else:
        o.setdefault("rrf_k", 60)
    for key in ("rrf_k", "candidates"):
        v = o.get(key, 1)
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise ValueError(f"system {spec!r}: {key} must be an int >= 1, got {v!r}")


@dataclass
class SystemResult:
    spec: SystemSpec
    metrics: dict[str, float] = field(default_factory=dict)
    per_query: dict[str, dict[str, float]] = field(default_factory=dict)
    efficiency: dict[str, Any] = field(default_factory=dict)
    significance: dict[str, float] = field(default_factory=dict)
    run_file: str | None = None
    skipped: str | None = None
    baseline: str | None = None  # the system the p-values compare against

    @property
    def name(self) -> str:
        return self.spec.name

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "system": self.spec.to_dict(),
            "metrics": self.metrics,
            "significance": self.significance,
            "baseline": self.baseline,
            "efficiency": self.efficiency,
            "run_file": self.run_file,
            "skipped": self.skipped,
            "per_query": self.per_query,
        }


# ---------------------------------------------------------------------------------- indexes
def _index_class(kind: str):
    from lsr.index import ExactIndex, SeismicIndex

    return {"exact": ExactIndex, "seismic": SeismicIndex}[kind]


def _same_ids(a, b) -> bool:
    # Equal-score ties may order differently between code paths: compare as sets.
    return set(x for x in a.tolist() if x is not None and x != -1) == set(x for x in b.tolist() if x is not None and x != -1)


def _hits_to_run(hits, qids: Sequence[str]) -> dict[str, dict[str, float]]:
    ids, scores = hits.ids, hits.scores
    run: dict[str, dict[str, float]] = {}
    for i, q in enumerate(qids):
        row = {}
        for d, s in zip(ids[i], scores[i]):
            if d is None or (not isinstance(d, str) and int(d) < 0) or not np.isfinite(s):
                continue
            row[str(d)] = float(s)
        run[q] = row
    return run


# ---------------------------------------------------------------------------------- the runner
class Runner:
    """Runs systems over one dataset, caching encoders and document vectors between systems."""

    def __init__(self, dataset: Dataset, *, k: int = 1000, measures=None, out_dir: str | Path | None = None,
                 cache_dir: str | Path | None = None, latency_queries: int | None = None,
                 show_progress: bool = True):
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        self.ds = dataset
        self.k = k
        self.measures = measures
        self.out_dir = Path(out_dir) if out_dir else None
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self.latency_queries = latency_queries
        self.show_progress = show_progress
        self.qids = dataset.query_ids()
        self.qtexts = [dataset.queries[q] for q in self.qids]
        self._doc_texts: list[str] | None = None
        self._encoders: dict[tuple, Any] = {}
        self._doc_vectors: dict[tuple, tuple[SparseBatch, dict]] = {}
        self._query_vectors: dict[tuple, tuple[SparseBatch, list[float] | None]] = {}
        self._indexes: dict[tuple, tuple[Any, dict]] = {}

    def _bar(self, items, desc: str, total: int | None = None):
        """A progress bar over ``items`` for one phase (hidden with ``show_progress=False``)."""
        from tqdm.auto import tqdm

        return tqdm(items, desc=desc, total=total, unit="q", leave=False, disable=not self.show_progress)

    @property
    def doc_texts(self) -> list[str]:
        if self._doc_texts is None:
            self._doc_texts = self.ds.doc_texts()
        return self._doc_texts

    def _fingerprint(self) -> str:
        h = hashlib.sha1()
        for d, t in zip(self.ds.doc_ids, self.doc_texts):
            h.update(d.encode())
            h.update(b"\0")
            h.update(t.encode())
            h.update(b"\n")
        return h.hexdigest()[:12]

    def encoder(self, kind: str, model: str):
        key = (kind, model)
        if key not in self._encoders:
            from lsr.models import SparseEncoder

            kw = {} if kind == "encoder" else {"kind": kind}
            t0 = time.perf_counter()
            self._encoders[key] = SparseEncoder.load(model, **kw)
            log.info("loaded encoder %s (%s) in %.1f s", model, kind, time.perf_counter() - t0)
        return self._encoders[key]

    def doc_vectors(self, spec: SystemSpec) -> tuple[SparseBatch, dict]:
        """Document vectors for ``spec`` and how they were obtained (encode timing or a path)."""
        if spec.kind == "vectors":
            key = ("vectors", spec.options["docs"])
        else:
            key = (spec.kind, spec.model, spec.options.get("batch_size", 32))
        if key in self._doc_vectors:
            return self._doc_vectors[key]
        info: dict[str, Any] = {}
        if spec.kind == "vectors":
            batch, ids = load_vectors(spec.options["docs"])
            batch = self._align(batch, ids, spec.options["docs"])
            info["doc_vectors"] = str(spec.options["docs"])
        else:
            cache = None
            if self.cache_dir is not None:
                slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{spec.kind}-{spec.model}")
                cache = self.cache_dir / f"{self.ds.name}-{self._fingerprint()}" / f"{slug}.npz"
            if cache is not None and cache.exists():
                batch, ids = load_vectors(cache)
                batch = self._align(batch, ids, cache)
                info["doc_vectors"] = str(cache)
                side = cache.with_suffix(".json")
                if side.exists():  # how and where the cached vectors were encoded
                    info["doc_vectors_encoded"] = json.loads(side.read_text(encoding="utf-8"))
                log.info("document vectors from cache %s", cache)
            else:
                enc = self.encoder(spec.kind, spec.model)
                bs = int(spec.options.get("batch_size", 32))
                t0 = time.perf_counter()
                batch = enc.encode_documents(self.doc_texts, batch_size=bs, show_progress_bar=self.show_progress)
                dt = time.perf_counter() - t0
                info.update(encode_docs_s=dt, docs_per_s=len(self.doc_texts) / dt if dt > 0 else None)
                if cache is not None:
                    cache.parent.mkdir(parents=True, exist_ok=True)
                    save_vectors(cache, batch, self.ds.doc_ids)
                    info["doc_vectors_saved"] = str(cache)
                    side = {**info, "device": str(getattr(enc, "device", "")), "batch_size": bs,
                            "model": spec.model, "kind": spec.kind, "machine": _machine_line(),
                            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
                    cache.with_suffix(".json").write_text(json.dumps(side, indent=1), encoding="utf-8")
        self._doc_vectors[key] = (batch, info)
        return batch, info

    def _align(self, batch: SparseBatch, ids, path) -> SparseBatch:
        """Reorder stored vectors to corpus order; ids absent from the file are an error."""
        if ids is None:
            if len(batch) != len(self.ds.doc_ids):
                raise ValueError(f"{path}: {len(batch)} vectors without ids for {len(self.ds.doc_ids)} documents")
            return batch
        pos = {str(d): i for i, d in enumerate(ids)}
        missing = [d for d in self.ds.doc_ids if d not in pos]
        if missing:
            raise ValueError(f"{path}: {len(missing)} corpus documents have no vector (e.g. {missing[:3]})")
        order = np.fromiter((pos[d] for d in self.ds.doc_ids), np.int64, len(self.ds.doc_ids))
        if np.array_equal(order, np.arange(len(order))) and len(batch) == len(order):
            return batch
        return batch[order]

    def query_vectors(self, spec: SystemSpec) -> tuple[SparseBatch, list[float] | None]:
        """All query vectors (batch) and per-query encode latencies (one query at a time);
        systems on the same query side share them."""
        key = (spec.kind, spec.model, spec.options.get("queries"), spec.options.get("query_encoder"))
        if key not in self._query_vectors:
            self._query_vectors[key] = self._encode_queries(spec)
        return self._query_vectors[key]

    def _encode_queries(self, spec: SystemSpec) -> tuple[SparseBatch, list[float] | None]:
        if spec.kind == "vectors" and spec.options.get("queries"):
            batch, ids = load_vectors(spec.options["queries"])
            if ids is None:
                if len(batch) != len(self.qids):
                    raise ValueError(f"{spec.options['queries']}: {len(batch)} vectors without ids for {len(self.qids)} queries")
                return batch, None
            pos = {str(q): i for i, q in enumerate(ids)}
            missing = [q for q in self.qids if q not in pos]
            if missing:
                raise ValueError(f"{spec.options['queries']}: no vector for queries {missing[:5]}")
            return batch[np.array([pos[q] for q in self.qids], np.int64)], None
        if spec.kind == "vectors":
            enc = self.encoder("encoder", spec.options["query_encoder"])
        else:
            enc = self.encoder(spec.kind, spec.model)
        bs = int(spec.options.get("batch_size", 32))
        batch = enc.encode_queries(self.qtexts, batch_size=bs, show_progress_bar=self.show_progress)
        n_lat = len(self.qtexts) if self.latency_queries is None else min(self.latency_queries, len(self.qtexts))
        times = []
        for t in self._bar(self.qtexts[:n_lat], f"{spec.name}: query encode latency"):
            t0 = time.perf_counter()
            enc.encode_queries([t], batch_size=1, show_progress_bar=False)
            times.append(time.perf_counter() - t0)
        return batch, times

    def index(self, spec: SystemSpec, docs: SparseBatch) -> tuple[Any, dict]:
        """Build (or reuse: same vectors, index type and build parameters) the system's index.

        Returns the index and its build figures; a reused index carries ``index_shared``."""
        dkey = ("vectors", spec.options["docs"]) if spec.kind == "vectors" else (spec.kind, spec.model, spec.options.get("batch_size", 32))
        key = (dkey, spec.index, tuple(sorted((k, repr(v)) for k, v in spec.build_params.items())))
        if key in self._indexes:
            index, build = self._indexes[key]
            return index, {**build, "index_shared": True}
        build: dict[str, Any] = {}
        cls = _index_class(spec.index)
        extra = {"progress": self.show_progress} if spec.index == "seismic" and "progress" not in spec.build_params else {}
        with eff.timer(build, "build_s"):
            index = cls.build(docs, ids=list(self.ds.doc_ids), **spec.build_params, **extra)
        with tempfile.TemporaryDirectory(prefix="lsr-eval-index-") as tmp:
            index.save(Path(tmp) / "index")
            build["index_bytes"] = eff.folder_size(Path(tmp) / "index")
        build["index_stats"] = {k2: v for k2, v in index.stats().items() if isinstance(v, (int, float, str, bool))}
        self._indexes[key] = (index, build)
        return index, build

    # ------------------------------------------------------------------ dense side (hybrid)
    def dense_encoder(self, model: str):
        key = ("dense", model)
        if key not in self._encoders:
            from lsr.models.dense import DenseEncoder

            self._encoders[key] = DenseEncoder.load(model)
        return self._encoders[key]

    def dense_doc_vectors(self, model: str, batch_size: int = 32) -> tuple[np.ndarray, dict]:
        """Dense document embeddings (corpus order, float32), cached under the cache folder in
        chunks of 512 documents, so an interrupted encoding resumes where it stopped."""
        key = ("dense-docs", model)
        if key in self._doc_vectors:
            return self._doc_vectors[key]  # type: ignore[return-value]
        info: dict[str, Any] = {}
        cache = None
        if self.cache_dir is not None:
            slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"dense-{model}")
            cache = self.cache_dir / f"{self.ds.name}-{self._fingerprint()}" / f"{slug}.npy"
        if cache is not None and cache.exists():
            emb = np.load(cache)
            info["dense_doc_vectors"] = str(cache)
            side = cache.with_suffix(".json")
            if side.exists():
                info["dense_doc_vectors_encoded"] = json.loads(side.read_text(encoding="utf-8"))
        else:
            enc = self.dense_encoder(model)
            texts = self.doc_texts
            chunk = 512
            parts = []
            t0 = time.perf_counter()
            encoded = 0
            from tqdm.auto import tqdm

            for start in tqdm(range(0, len(texts), chunk), desc=f"dense {model}: encode documents ({chunk} a step)",
                              disable=not self.show_progress):
                part = cache.with_suffix(f".part{start:07d}.npy") if cache is not None else None
                if part is not None and part.exists():
                    parts.append(np.load(part))
                    continue
                emb_part = enc.encode(texts[start:start + chunk], batch_size=batch_size)
                encoded += min(chunk, len(texts) - start)
                if part is not None:
                    part.parent.mkdir(parents=True, exist_ok=True)
                    np.save(part, emb_part)
                parts.append(emb_part)
            dt = time.perf_counter() - t0
            emb = np.concatenate(parts) if parts else np.zeros((0, enc.dim), np.float32)
            info.update(dense_encode_docs_s=dt, dense_docs_per_s=encoded / dt if dt > 0 and encoded else None)
            if cache is not None:
                np.save(cache, emb)
                side = {**info, "model": model, "batch_size": batch_size, "machine": _machine_line(),
                        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
                cache.with_suffix(".json").write_text(json.dumps(side, indent=1), encoding="utf-8")
                for part in cache.parent.glob(f"{cache.stem}.part*.npy"):
                    part.unlink()
        self._doc_vectors[key] = (emb, info)  # type: ignore[assignment]
        return emb, info

    def dense_query_vectors(self, model: str) -> np.ndarray:
        key = ("dense-queries", model)
        if key not in self._query_vectors:
            self._query_vectors[key] = (self.dense_encoder(model).encode(self.qtexts), None)  # type: ignore[assignment]
        return self._query_vectors[key][0]  # type: ignore[return-value]

    def _run_dense(self, spec: SystemSpec, k: int, e: dict) -> dict:
        docs, info = self.dense_doc_vectors(spec.model, int(spec.options.get("batch_size", 32)))
        e.update(info)
        queries = self.dense_query_vectors(spec.model)
        with eff.timer(e, "batch_search_s"):
            scores = queries @ docs.T
        return {q: dict(_top(scores[i], k, self.ds.doc_ids)) for i, q in enumerate(self.qids)}

    def _run_hybrid(self, spec: SystemSpec, k: int, e: dict) -> dict:
        """Sparse run and exact dense scores, fused per query over the union of each side's top
        ``candidates``; a candidate missing from one side's list is scored exactly on that side."""
        from lsr.index.fusion import fuse

        o = spec.options
        cand = min(int(o.get("candidates", k)), len(self.ds.doc_ids))
        sparse = SystemSpec(kind=o["sparse_kind"], model=spec.model, name=f"{spec.name} [sparse]", index=spec.index,
                            build_params=spec.build_params, search_params=spec.search_params,
                            options={key: v for key, v in o.items() if key in COMMON_KEYS and key != "name"})
        e_sparse: dict[str, Any] = {}
        sparse_run = self._run_sparse(sparse, cand, e_sparse)
        e.update({f"sparse_{key}": v for key, v in e_sparse.items() if isinstance(v, (int, float, str))})
        d_emb, info = self.dense_doc_vectors(o["dense"], int(o.get("batch_size", 32)))
        e.update(info)
        q_emb = self.dense_query_vectors(o["dense"])
        d_sp = self.doc_vectors(sparse)[0].to_scipy()
        q_sp = self.query_vectors(sparse)[0].to_scipy()
        row_of = {d: i for i, d in enumerate(self.ds.doc_ids)}
        run = {}
        t0 = time.perf_counter()
        dense_all = q_emb @ d_emb.T
        for i, q in enumerate(self.qids):
            dense = dense_all[i]
            s_list = sorted(sparse_run.get(q, {}).items(), key=lambda x: -x[1])[:cand]
            d_list = _top(dense, cand, self.ds.doc_ids)

            def sparse_of(ids, i=i):
                rows = [row_of[d] for d in ids]
                return np.asarray((d_sp[rows] @ q_sp[i].T).todense()).ravel()

            def dense_of(ids, dense=dense):
                return dense[[row_of[d] for d in ids]]

            fused = fuse(s_list, d_list, method=o["fusion"], alpha=float(o.get("alpha", 0.5)), k=k,
                         rrf_k=int(o.get("rrf_k", 60)), sparse_of=sparse_of, dense_of=dense_of)
            run[q] = dict(fused)
        e["fusion_s"] = time.perf_counter() - t0
        e["candidates"] = cand
        return run

    # ------------------------------------------------------------------ systems
    def run(self, spec: SystemSpec) -> SystemResult:
        res = SystemResult(spec)
        k = res.efficiency["k"] = self._depth(spec)
        try:
            if spec.kind == "bm25":
                run = self._run_bm25(spec, k, res.efficiency)
            elif spec.kind == "dense":
                run = self._run_dense(spec, k, res.efficiency)
            elif spec.kind == "hybrid":
                run = self._run_hybrid(spec, k, res.efficiency)
            else:
                run = self._run_sparse(spec, k, res.efficiency)
        except _Skip as exc:
            res.skipped = str(exc)
            log.warning("skipping %s: %s", spec.name, exc)
            return res
        ev = evaluate(run, self.ds.qrels, self.measures)
        res.metrics, res.per_query = ev.aggregate, ev.per_query
        if self.out_dir is not None:
            slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", spec.name).strip("_")
            path = self.out_dir / f"{slug}.trec"
            write_trec_run(path, run, tag=slug[:40] or "lsr")
            res.run_file = str(path)
        return res

    def _depth(self, spec: SystemSpec) -> int:
        """The system's retrieval depth, cut to the corpus size: deeper than the corpus cannot be
        filled, and Lucene refuses some depths that Python accepts. The cut is logged and the
        depth used goes in the report (``efficiency["k"]``)."""
        k = int(spec.options.get("k", self.k))
        if k < 1:
            raise ValueError(f"{spec.name}: k must be >= 1, got {k}")
        n = len(self.ds.doc_ids)
        if n and k > n:
            log.warning("%s: k=%d is more than the %d documents of %s; retrieving %d", spec.name, k, n, self.ds.name, n)
            k = n
        return k

    def _run_bm25(self, spec: SystemSpec, k: int, e: dict) -> dict:
        from . import bm25

        ok, why = bm25.pyserini_available()
        if not ok:
            raise _Skip(why)
        k1 = float(spec.options.get("k1", 0.9))
        b = float(spec.options.get("b", 0.4))
        threads = int(spec.search_params.get("threads", eff.cpu_count()))
        try:
            log.info("%s: starting the JVM (Pyserini)", spec.name)
            with eff.timer(e, "jvm_start_s"):
                bm25.start_jvm()
        except bm25.PyseriniUnavailable as exc:
            raise _Skip(str(exc)) from None
        with eff.timer(e, "build_s"):  # the JVM runs: an error here is the system's failure, not a skip
            searcher = bm25.BM25Searcher.build(self.ds.doc_ids, self.doc_texts, k1=k1, b=b, threads=threads,
                                               progress=self.show_progress)
        e["index_bytes"] = searcher.size_bytes()
        queries = dict(zip(self.qids, self.qtexts))
        if self.qtexts:
            searcher.search_one(self.qtexts[0], k=k)  # warm-up
        with eff.timer(e, "batch_search_s"):
            run = searcher.search(queries, k=k, threads=threads, progress=self.show_progress)
        e["qps"] = len(queries) / e["batch_search_s"] if e["batch_search_s"] > 0 else None
        n_lat = len(self.qtexts) if self.latency_queries is None else min(self.latency_queries, len(self.qtexts))
        times = []
        for t in self._bar(self.qtexts[:n_lat], f"{spec.name}: search latency"):
            t0 = time.perf_counter()
            searcher.search_one(t, k=k)
            times.append(time.perf_counter() - t0)
        e.update(eff.latency_stats(times, "search_"))
        e["threads"] = threads
        e["k1"], e["b"] = k1, b
        return run

    def _run_sparse(self, spec: SystemSpec, k: int, e: dict) -> dict:
        docs, info = self.doc_vectors(spec)
        e.update(info)
        queries, q_times = self.query_vectors(spec)
        if q_times:
            e.update(eff.latency_stats(q_times, "query_encode_"))
        e.update(eff.sparsity_stats(docs, "doc"))
        e.update(eff.sparsity_stats(queries, "query"))
        e["flops"] = flops(queries, docs)
        index, build = self.index(spec, docs)
        e.update(build)
        sp = dict(spec.search_params)
        if len(queries):
            # warm-up of both the one-query and the batch path: JIT compilation and thread start-up
            # stay out of the timings
            index.search(queries[:1], k=k, **sp)
            index.search(queries[: min(len(queries), 16)], k=k, **sp)
        with eff.timer(e, "batch_search_s"):
            hits = index.search(queries, k=k, **sp)
        e["qps"] = len(queries) / e["batch_search_s"] if e["batch_search_s"] > 0 else None
        n_lat = len(queries) if self.latency_queries is None else min(self.latency_queries, len(queries))
        sp1 = {**sp, "threads": 1}
        times = []
        mismatch = []
        for i in self._bar(range(n_lat), f"{spec.name}: search latency"):
            q = queries[i]
            t0 = time.perf_counter()
            one = index.search(q, k=k, **sp1)
            times.append(time.perf_counter() - t0)
            if not _same_ids(one.ids[0], hits.ids[i]):
                mismatch.append(i)
        e.update(eff.latency_stats(times, "search_"))
        run = _hits_to_run(hits, self.qids)
        if mismatch:
            # The batch (multi-thread) path and the one-query path must agree; where they don't,
            # trust the one-query path and say so (a lost-hits bug was seen in threaded batches).
            e["batch_mismatch_queries"] = len(mismatch)
            log.warning("%s: batch search disagrees with one-query search on %d queries (e.g. %s); "
                        "using the one-query results for those", spec.name, len(mismatch),
                        [self.qids[i] for i in mismatch[:5]])
            for i in mismatch:
                run.update(_hits_to_run(index.search(queries[i], k=k, **sp1), [self.qids[i]]))
        return run


def _top(scores: np.ndarray, k: int, doc_ids: Sequence[str]) -> list[tuple[str, float]]:
    """The ``k`` best (doc id, score) of a dense score row, best first (ties: corpus order)."""
    return [(doc_ids[j], float(scores[j])) for j in top_rows(scores, k)]


def _machine_line() -> str:
    cpu = platform.processor() or platform.machine()
    return f"{platform.node()} {cpu} {eff.cpu_count()} cores"


class _Skip(Exception):
    pass


def run_system(dataset: Dataset, spec: str | SystemSpec, **kw) -> SystemResult:
    return run_systems(dataset, [spec], **kw)[0]


def run_systems(
    dataset: Dataset,
    systems: Sequence[str | SystemSpec],
    *,
    k: int = 1000,
    measures=None,
    out_dir: str | Path | None = None,
    cache_dir: str | Path | None = None,
    baseline: int | str = 0,
    test: str = "t",
    latency_queries: int | None = None,
    show_progress: bool = True,
) -> list[SystemResult]:
    """Run each system over ``dataset`` and test each against ``baseline`` (index or name).

    >>> from lsr.eval.data import load_beir                                   # doctest: +SKIP
    >>> ds = load_beir("../shared/data/beir/scifact", "test")                 # doctest: +SKIP
    >>> rs = run_systems(ds, ["bm25", "splade:splade-tiny"], out_dir="runs")  # doctest: +SKIP
    >>> rs[1].metrics["nDCG@10"], rs[1].significance["nDCG@10"]               # doctest: +SKIP
    """
    specs = [parse_system(s) if isinstance(s, str) else s for s in systems]
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        # Same label twice (e.g. two seismic settings with a name=): number them.
        for i, s in enumerate(specs):
            if names.count(s.name) > 1:
                s.name = f"{s.name} #{i + 1}"
    runner = Runner(dataset, k=k, measures=measures, out_dir=out_dir, cache_dir=cache_dir,
                    latency_queries=latency_queries, show_progress=show_progress)
    results = []
    for s in specs:
        log.info("running %s", s.name)
        t0 = time.perf_counter()
        results.append(runner.run(s))
        results[-1].efficiency["wall_s"] = time.perf_counter() - t0
    add_significance(results, baseline=baseline, test=test)
    return results


def add_significance(results: list[SystemResult], baseline: int | str = 0, test: str = "t") -> None:
    """Fill ``significance[measure]`` of every non-baseline result with a paired p-value."""
    if isinstance(baseline, str):
        idx = [i for i, r in enumerate(results) if r.name == baseline]
        if not idx:
            raise ValueError(f"baseline {baseline!r} is not one of {[r.name for r in results]}")
        baseline = idx[0]
    if not results or results[baseline].skipped:
        ok = [i for i, r in enumerate(results) if not r.skipped]
        if not ok:
            return
        baseline = ok[0]
    base = results[baseline]
    for i, r in enumerate(results):
        r.significance = {}
        if i == baseline or r.skipped:
            continue
        r.baseline = base.name
        for m, pq in r.per_query.items():
            if m in base.per_query:
                r.significance[m] = paired_test(pq, base.per_query[m], test)
