"""GPU scoring path: exact and Seismic-style approximate batch search with torch (CUDA or CPU).

torch is imported lazily here and nowhere else in ``lsr.index``. The same code runs on the CPU,
which is how CI tests it; ``device="cuda"`` without CUDA raises a clear error. On CUDA with Triton
installed, candidate scoring runs in the kernel of :mod:`lsr.index.gpu_kernels` (same sums; CI
checks it under Triton's CPU interpreter).
"""

from __future__ import annotations

import logging
import time
import warnings
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING, Any, ContextManager, Sequence, Union

import numpy as np
import numpy.typing as npt

from . import gpu_kernels
from .base import Hits, check_k, search_params
from .ids import IdMap
from .sparse import SparseBatch

if TYPE_CHECKING:  # torch stays a lazy import at run time
    from concurrent.futures import ThreadPoolExecutor

    import torch
    from torch import Tensor

    from .exact import ExactIndex
    from .seismic import SeismicIndex

# "cpu", "cuda", "cuda:1", "cuda:all", a torch.device, or a list of them (one shard each)
DeviceLike = Union[str, "torch.device", Sequence[Union[str, "torch.device"]]]

log = logging.getLogger(__name__)

__all__ = ["GpuIndex", "BlockLayout", "cuda_available"]


def _torch() -> ModuleType:
    try:
        import torch
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("the GPU scoring path needs torch: pip install 'lsr[gpu]'") from exc
    warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
    return torch


def cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def _resolve_devices(device: DeviceLike) -> list[torch.device]:
    torch = _torch()
    if isinstance(device, (list, tuple)):
        names = list(device)
    elif device in ("cuda:all", "all"):
        if not torch.cuda.is_available():
            raise RuntimeError("device='cuda:all' asked for, but CUDA is not available on this machine")
        names = [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    else:
        names = [device]
    out = []
    for name in names:
        d = torch.device(name)
        if d.type == "cuda":
            if not torch.cuda.is_available():
                raise RuntimeError(
                    f"device={name!r} asked for, but CUDA is not available (torch {torch.__version__}); "
                    "use device='cpu' for the same code path on the CPU"
                )
            if d.index is not None and d.index >= torch.cuda.device_count():
                raise RuntimeError(f"device={name!r} asked for, but only {torch.cuda.device_count()} GPUs are visible")
        out.append(d)
    return out


@dataclass
class BlockLayout:
    """Seismic's block structure as flat arrays (rows are the forward index's rows).

    ``term_ptr[t]:term_ptr[t+1]`` are term ``t``'s blocks; ``block_ptr[b]:block_ptr[b+1]`` index
    ``block_docs``. Summary entries are grouped by posting list, as Seismic stores them:
    ``ent_ptr[t]:ent_ptr[t+1]`` are the entries of term ``t``'s blocks, entry ``e`` says that
    block ``ent_blk[e]`` has weight ``ent_val[e]`` on component ``ent_comp[e]``. On the device
    they are re-sorted by (term, component) so queries join them by binary search.
    """

    term_ptr: np.ndarray
    block_ptr: np.ndarray
    block_docs: np.ndarray
    ent_ptr: np.ndarray
    ent_comp: np.ndarray
    ent_blk: np.ndarray
    ent_val: np.ndarray

    @classmethod
    def from_postings(
        cls, docs: SparseBatch, *, n_postings: int = 1000, block_size: int = 16, summary_energy: float = 1.0
    ) -> "BlockLayout":
        """A simple reference blocking: each term's top ``n_postings`` docs, in value order, cut into
        fixed-size blocks, summaries = coordinate-wise max cut to ``summary_energy`` of the mass.

        Used by tests and when no Seismic index is at hand; :meth:`GpuIndex.from_index` reuses the
        Seismic index's own clustered blocks instead.
        """
        csc = docs.to_scipy().tocsc()
        csr = docs.to_scipy()
        term_ptr = [0]
        block_ptr = [0]
        block_docs: list[np.ndarray] = []
        s_ptr = [0]
        s_idx: list[np.ndarray] = []
        s_val: list[np.ndarray] = []
        for t in range(docs.dim):
            lo, hi = csc.indptr[t], csc.indptr[t + 1]
            rows = csc.indices[lo:hi]
            vals = csc.data[lo:hi]
            if rows.size > n_postings:
                keep = np.argpartition(-vals, n_postings - 1)[:n_postings]
                rows, vals = rows[keep], vals[keep]
            order = np.argsort(-vals, kind="stable")
            rows = rows[order]
            for s in range(0, rows.size, block_size):
                blk = np.sort(rows[s : s + block_size])
                block_docs.append(blk)
                block_ptr.append(block_ptr[-1] + blk.size)
                sub = csr[blk]
                summ = np.asarray(sub.max(axis=0).todense()).ravel()
                nz = np.flatnonzero(summ)
                v = summ[nz]
                if summary_energy < 1.0 and v.size:
                    o = np.argsort(-v, kind="stable")
                    cum = np.cumsum(v[o])
                    n_keep = int(np.searchsorted(cum, summary_energy * cum[-1]) + 1)
                    sel = np.sort(o[:n_keep])
                    nz, v = nz[sel], v[sel]
                s_idx.append(nz.astype(np.int32))
                s_val.append(v.astype(np.float32))
                s_ptr.append(s_ptr[-1] + nz.size)
            term_ptr.append(len(block_ptr) - 1)

        def cat(xs: list[np.ndarray], dt: npt.DTypeLike) -> np.ndarray:
            return np.concatenate(xs).astype(dt) if xs else np.zeros(0, dt)

        term_ptr_a = np.asarray(term_ptr, np.int64)
        s_ptr_a = np.asarray(s_ptr, np.int64)
        # a term's blocks are consecutive, so their CSR rows are too: term-major for free
        return cls(
            term_ptr_a,
            np.asarray(block_ptr, np.int64),
            cat(block_docs, np.int64),
            s_ptr_a[term_ptr_a],
            cat(s_idx, np.int32),
            np.repeat(np.arange(s_ptr_a.size - 1, dtype=np.int64), np.diff(s_ptr_a)),
            cat(s_val, np.float32),
        )


@dataclass
class _Shard:
    device: Any
    row_offset: int
    n_rows: int
    fwd: Any  # torch sparse CSR (n_rows, dim), float32
    fwd_ptr: Any
    fwd_idx: Any
    fwd_val: Any
    fwd_idx32: Any = None  # int32 copy of fwd_idx for the Triton kernel (CUDA with Triton only)
    term_ptr: Any = None
    block_ptr: Any = None
    block_docs: Any = None
    ent_key: Any = None  # term * dim + component, sorted: the summaries joined by (term, component)
    ent_blk: Any = None
    ent_val: Any = None
    deleted: Any = None  # bool per row, or None
    always: Any = None  # rows scored for every query in approx mode, or None
    bytes: int = 0


class GpuIndex:
    """Batch scoring of a sparse collection on one or more devices.

    The forward index (and, for the approximate path, Seismic's block summaries) live on the
    device; documents are split into contiguous shards, one per device, and top-k lists merged.

    >>> gi = GpuIndex.build(docs, device="cpu")              # or "cuda", "cuda:all", ["cuda:0", "cuda:1"]
    >>> hits = gi.search(queries, k=10)                      # exact
    >>> hits = gi.search(queries, k=10, mode="approx", query_cut=10, heap_factor=0.9)
    """

    def __init__(self, shards: list[_Shard], dim: int, n_rows: int, idmap: IdMap, layout: BlockLayout | None = None):
        self._shards = shards
        self.dim = dim
        self.n_rows = n_rows
        self._idmap = idmap
        self.has_blocks = layout is not None
        self.upload_seconds = 0.0
        self._pool: ThreadPoolExecutor | None = None  # shard threads, made on the first multi-shard search

    # ------------------------------------------------------------------ construction
    @classmethod
    def build(
        cls,
        docs: SparseBatch,
        ids: Sequence[Any] | np.ndarray | IdMap | None = None,
        *,
        device: DeviceLike = "cuda",
        layout: BlockLayout | None = None,
        deleted: np.ndarray | None = None,
        always: np.ndarray | None = None,
    ) -> "GpuIndex":
        """Upload ``docs`` (and an optional :class:`BlockLayout`) to ``device``.

        ``deleted``: a boolean mask of rows never to return; ``always``: rows outside the blocks
        that the approximate path scores for every query (documents added after the build).
        """
        torch = _torch()
        if not isinstance(docs, SparseBatch):
            raise TypeError(f"docs must be a SparseBatch, got {type(docs).__name__}")
        idmap = ids if isinstance(ids, IdMap) else IdMap.build(ids, len(docs))
        devices = _resolve_devices(device)
        t0 = time.perf_counter()
        n = len(docs)
        bounds = np.linspace(0, n, len(devices) + 1).round().astype(np.int64)
        shards = []
        for i, dev in enumerate(devices):
            lo, hi = int(bounds[i]), int(bounds[i + 1])
            part = docs[lo:hi]
            ptr = torch.from_numpy(part.indptr.copy()).to(dev)
            idx = torch.from_numpy(part.indices.astype(np.int64)).to(dev)
            val = torch.from_numpy(part.values.copy()).to(dev)
            fwd = torch.sparse_csr_tensor(ptr, idx, val, size=(hi - lo, docs.dim), check_invariants=False)
            sh = _Shard(dev, lo, hi - lo, fwd, ptr, idx, val)
            sh.bytes = part.indptr.nbytes + part.nnz * (8 + 4)
            if gpu_kernels.available(dev):
                sh.fwd_idx32 = idx.to(torch.int32)
                sh.bytes += part.nnz * 4
            if layout is not None:
                _attach_blocks(sh, layout, lo, hi, torch)
            if deleted is not None:
                sh.deleted = torch.from_numpy(np.asarray(deleted[lo:hi], dtype=bool).copy()).to(dev)
            if always is not None:
                a = np.asarray(always, np.int64)
                a = a[(a >= lo) & (a < hi)] - lo
                if a.size:
                    sh.always = torch.from_numpy(a).to(dev)
            shards.append(sh)
        for d in devices:
            if d.type == "cuda":
                torch.cuda.synchronize(d)
        gi = cls(shards, docs.dim, n, idmap, layout)
        gi.upload_seconds = time.perf_counter() - t0
        return gi

    @classmethod
    def from_index(cls, index: SeismicIndex | ExactIndex, *, device: DeviceLike = "cuda") -> "GpuIndex":
        """Upload a built or loaded SeismicIndex (its clustered blocks and 8-bit summaries are
        reused as they are) or an ExactIndex (exact mode only). Tombstoned documents are never
        returned; documents added after the build are scored for every query."""
        from .seismic import SeismicIndex

        docs = _forward_batch(index)
        deleted = np.asarray(index._deleted).astype(bool)
        layout = None
        always = None
        if isinstance(index, SeismicIndex):
            layout = _seismic_layout(index)
            always = np.arange(index._n_main, index.n_rows)
        return cls.build(docs, index._idmap, device=device, layout=layout,
                         deleted=deleted if deleted.any() else None, always=always)

    # ------------------------------------------------------------------ search
    def memory_bytes(self) -> int:
        return int(sum(s.bytes for s in self._shards))

    def search(
        self,
        queries: SparseBatch,
        k: int = 10,
        *,
        mode: str = "exact",
        query_cut: int | None = None,
        heap_factor: float | None = None,
        probe_blocks: int = 2,
        tile: int = 256,
        doc_tile: int = 1 << 21,
    ) -> Hits:
        """Top-``k`` for every query; ``(n, k)`` arrays, missing hits ``-1`` / ``-inf``.

        ``mode="exact"``: sparse × dense product tiled over ``tile`` queries and ``doc_tile``
        documents, so memory stays bounded for any batch. ``mode="approx"``: Seismic's idea on
        the batch: score the block summaries of each query's top ``query_cut`` terms, estimate the
        k-th score from the ``probe_blocks`` best blocks per term, keep blocks whose summary score
        reaches ``heap_factor`` × that estimate, score their documents exactly, top-k
        (``query_cut``/``heap_factor``: :class:`lsr.index.SearchParams`, same defaults as the CPU).
        ``hits.timings`` reports seconds with and without host↔device copies.
        """
        torch = _torch()
        if not isinstance(queries, SparseBatch):
            raise TypeError(f"queries must be a SparseBatch, got {type(queries).__name__}")
        queries.check_dim(self.dim)
        k = check_k(k)
        knobs = search_params(query_cut, heap_factor)
        query_cut, heap_factor = knobs.query_cut, knobs.heap_factor
        if mode not in ("exact", "approx"):
            raise ValueError(f"mode must be 'exact' or 'approx', got {mode!r}")
        if mode == "approx" and not self.has_blocks:
            raise ValueError("mode='approx' needs block summaries: build with layout= or from a SeismicIndex")
        if tile <= 0 or doc_tile <= 0:
            raise ValueError("tile and doc_tile must be positive")
        nq = len(queries)
        out_rows = np.full((nq, k), -1, np.int64)
        out_scores = np.full((nq, k), -np.inf, np.float32)
        t_copy = 0.0
        t_compute = 0.0
        t_all = time.perf_counter()

        def run_shard(sh: _Shard, qb: SparseBatch) -> tuple[Tensor, Tensor, float, float]:
            with _on_device(sh.device, torch):
                tc = time.perf_counter()
                qdense = _dense_queries(qb, sh.device, torch)
                _sync(sh.device, torch)
                t1 = time.perf_counter()
                if mode == "exact":
                    s, r = _exact_shard(sh, qdense, k, doc_tile, torch)
                else:
                    s, r = _approx_shard(sh, qb, qdense, k, query_cut, heap_factor, probe_blocks, torch)
                _sync(sh.device, torch)
                return s, r + sh.row_offset, t1 - tc, time.perf_counter() - t1

        for q0 in range(0, nq, tile):
            qb = queries[q0 : q0 + tile]
            if len(self._shards) == 1:
                per_shard = [run_shard(self._shards[0], qb)]
            else:  # one host thread per device: the shards compute at the same time
                per_shard = list(self._executor().map(lambda sh: run_shard(sh, qb), self._shards))
            t_copy += max(x[2] for x in per_shard)
            t_compute += max(x[3] for x in per_shard)
            tc = time.perf_counter()
            dev0 = self._shards[0].device
            scores = torch.cat([x[0].to(dev0) for x in per_shard], dim=1)
            rows = torch.cat([x[1].to(dev0) for x in per_shard], dim=1)
            kk = min(k, scores.shape[1])
            top_s, pos = torch.topk(scores, kk, dim=1)
            top_r = torch.gather(rows, 1, pos)
            top_r = torch.where(torch.isfinite(top_s), top_r, torch.full_like(top_r, -1))
            s_np = top_s.float().cpu().numpy()
            r_np = top_r.cpu().numpy()
            t_copy += time.perf_counter() - tc
            _order_ties(s_np, r_np)
            out_scores[q0 : q0 + len(qb), :kk] = s_np
            out_rows[q0 : q0 + len(qb), :kk] = r_np
        total = time.perf_counter() - t_all
        timings = {"total_s": total, "compute_s": t_compute, "copy_s": t_copy}
        return Hits(self._idmap.lookup(out_rows), out_scores, out_rows, timings)

    def _executor(self) -> ThreadPoolExecutor:
        if self._pool is None:
            from concurrent.futures import ThreadPoolExecutor

            self._pool = ThreadPoolExecutor(max_workers=len(self._shards), thread_name_prefix="lsr-gpu-shard")
        return self._pool


def _on_device(device: torch.device, torch: ModuleType) -> ContextManager[Any]:
    """The device's context (kernels such as Triton's launch on the current CUDA device)."""
    import contextlib

    return torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()


def _sync(device: torch.device, torch: ModuleType) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _order_ties(scores: np.ndarray, rows: np.ndarray) -> None:
    """Make equal scores come out by row ascending, as ExactIndex does (in place)."""
    if scores.shape[1] < 2:
        return
    tied = np.nonzero(np.any((scores[:, 1:] == scores[:, :-1]) & np.isfinite(scores[:, 1:]), axis=1))[0]
    for i in tied:
        s, r = scores[i], rows[i]
        order = np.lexsort((np.where(r < 0, np.iinfo(np.int64).max, r), -s))
        scores[i] = s[order]
        rows[i] = r[order]


def _dense_queries(qb: SparseBatch, device: torch.device, torch: ModuleType) -> Tensor:
    """(n, dim) dense float32 query block built on ``device`` from the CSR arrays (only the
    non-zeros cross the bus)."""
    q: Tensor = torch.zeros((len(qb), qb.dim), dtype=torch.float32, device=device)
    if qb.nnz:
        rows = torch.from_numpy(np.repeat(np.arange(len(qb), dtype=np.int64), qb.row_nnz())).to(device, non_blocking=True)
        cols = torch.from_numpy(qb.indices.astype(np.int64)).to(device, non_blocking=True)
        vals = torch.from_numpy(qb.values).to(device, non_blocking=True)
        q[rows, cols] = vals
    return q


def _exact_shard(sh: _Shard, qdense: Tensor, k: int, doc_tile: int, torch: ModuleType) -> tuple[Tensor, Tensor]:
    """Top-k over one shard: (docs × dim) CSR @ (dim × tile) dense, tiled over documents."""
    nq = qdense.shape[0]
    best_s = torch.full((nq, 0), -float("inf"), device=sh.device)
    best_r = torch.zeros((nq, 0), dtype=torch.int64, device=sh.device)
    qt = qdense.t().contiguous()
    for d0 in range(0, sh.n_rows, doc_tile):
        d1 = min(sh.n_rows, d0 + doc_tile)
        if d0 == 0 and d1 == sh.n_rows:
            part = sh.fwd
        else:
            lo, hi = int(sh.fwd_ptr[d0]), int(sh.fwd_ptr[d1])
            part = torch.sparse_csr_tensor(
                sh.fwd_ptr[d0 : d1 + 1] - lo, sh.fwd_idx[lo:hi], sh.fwd_val[lo:hi],
                size=(d1 - d0, qdense.shape[1]), check_invariants=False,
            )
        scores = torch.sparse.mm(part, qt).t()  # (nq, docs in tile)
        # A document that shares no term with the query is not a hit (as in ExactIndex).
        scores = torch.where(scores > 0, scores, torch.full_like(scores, -float("inf")))
        if sh.deleted is not None:
            scores = scores.masked_fill(sh.deleted[d0:d1][None, :], -float("inf"))
        kk = min(k, d1 - d0)
        s, r = torch.topk(scores, kk, dim=1)
        best_s = torch.cat([best_s, s], dim=1)
        best_r = torch.cat([best_r, r + d0], dim=1)
        if best_s.shape[1] > k:
            best_s, pos = torch.topk(best_s, k, dim=1)
            best_r = torch.gather(best_r, 1, pos)
    return best_s, best_r


def _attach_blocks(sh: _Shard, layout: BlockLayout, lo: int, hi: int, torch: ModuleType) -> None:
    """Keep, for this shard, each block's documents that fall in rows [lo, hi)."""
    dev = sh.device
    docs = layout.block_docs
    keep = (docs >= lo) & (docs < hi)
    blk_of = np.repeat(np.arange(layout.block_ptr.size - 1), np.diff(layout.block_ptr))
    counts = np.bincount(blk_of[keep], minlength=layout.block_ptr.size - 1)
    block_ptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    sh.term_ptr = torch.from_numpy(layout.term_ptr.astype(np.int64)).to(dev)
    sh.block_ptr = torch.from_numpy(block_ptr).to(dev)
    sh.block_docs = torch.from_numpy((docs[keep] - lo).astype(np.int64)).to(dev)
    # Summary entries sorted by (term, component), so a query joins each of its components against
    # a posting list's summaries with one binary search instead of scanning all of them.
    dim = int(layout.term_ptr.size - 1)
    key_dtype = torch.int32 if dim * dim < 2**31 else torch.int64
    ent_ptr = torch.from_numpy(layout.ent_ptr.astype(np.int64)).to(dev)
    term_of = torch.repeat_interleave(torch.arange(dim, device=dev), ent_ptr[1:] - ent_ptr[:-1])
    key = (term_of * dim + torch.from_numpy(layout.ent_comp.astype(np.int64)).to(dev)).to(key_dtype)
    del term_of
    sh.ent_key, order = torch.sort(key, stable=True)
    del key
    sh.ent_blk = torch.from_numpy(layout.ent_blk.astype(np.int32)).to(dev)[order]
    sh.ent_val = torch.from_numpy(layout.ent_val.astype(np.float16)).to(dev)[order]
    del order
    sh.bytes += sum(int(x.numel() * x.element_size()) for x in (
        sh.term_ptr, sh.block_ptr, sh.block_docs, sh.ent_key, sh.ent_blk, sh.ent_val))


def _expand(ptr: Tensor, sel: Tensor, torch: ModuleType) -> tuple[Tensor, Tensor]:
    """For ranges ptr[sel]:ptr[sel+1], return (owner position, flat element index)."""
    starts = ptr[sel]
    return _ranges(starts, ptr[sel + 1] - starts, torch)


def _ranges(starts: Tensor, lens: Tensor, torch: ModuleType) -> tuple[Tensor, Tensor]:
    """Flatten ranges [starts[i], starts[i] + lens[i]): (owner i, element index) per element."""
    total = int(lens.sum())
    owner = torch.repeat_interleave(torch.arange(starts.numel(), device=starts.device), lens, output_size=total)
    first = torch.cumsum(lens, 0) - lens
    flat = starts[owner] + (torch.arange(total, device=starts.device) - first[owner])
    return owner, flat


def _score_pairs(pair_q: Tensor, pair_doc: Tensor, sh: _Shard, qdense: Tensor, torch: ModuleType) -> Tensor:
    """Exact scores of (query, document) pairs on the forward index."""
    if sh.fwd_idx32 is not None:
        return gpu_kernels.score_pairs(pair_q, pair_doc, sh.fwd_ptr, sh.fwd_idx32, sh.fwd_val, qdense)
    owner, flat = _expand(sh.fwd_ptr, pair_doc, torch)
    contrib = qdense[pair_q[owner], sh.fwd_idx[flat]] * sh.fwd_val[flat]
    out: Tensor = torch.zeros(pair_q.numel(), dtype=torch.float32, device=qdense.device)
    out.index_add_(0, owner, contrib)
    return out


class _Profile:
    """Per-stage device time and sizes of the approximate path, on when LSR_GPU_PROFILE=1."""

    def __init__(self) -> None:
        import os

        self.on = os.environ.get("LSR_GPU_PROFILE") == "1"
        self.times: dict[str, float] = {}
        self.sizes: dict[str, int] = {}
        self._t: float | None = None

    def start(self, device: torch.device, torch: ModuleType) -> None:
        if self.on:
            _sync(device, torch)
            self._t = time.perf_counter()

    def mark(self, name: str, device: torch.device, torch: ModuleType, **sizes: int) -> None:
        if self.on:
            assert self._t is not None, "start() comes before mark()"
            _sync(device, torch)
            now = time.perf_counter()
            self.times[name] = self.times.get(name, 0.0) + now - self._t
            for key, v in sizes.items():
                self.sizes[key] = self.sizes.get(key, 0) + int(v)
            self._t = now


PROFILE = _Profile()


def _approx_shard(sh: _Shard, qb: SparseBatch, qdense: Tensor, k: int, query_cut: int, heap_factor: float,
                  probe_blocks: int, torch: ModuleType) -> tuple[Tensor, Tensor]:
    dev = sh.device
    nq = len(qb)
    prof = PROFILE
    prof.start(dev, torch)
    # 1. each query's top `query_cut` terms
    qv = qdense
    c = min(query_cut, qv.shape[1])
    w, terms = torch.topk(qv, c, dim=1)
    q_of = torch.arange(nq, device=dev).repeat_interleave(c)
    terms = terms.reshape(-1)
    live = w.reshape(-1) > 0
    q_of, terms = q_of[live], terms[live]
    # 2. candidate blocks: all blocks of those terms, with their summary scores, accumulated
    #    over each posting list's summary entries (term-major, as Seismic stores them)
    tq_owner, blk = _expand(sh.term_ptr, terms, torch)
    pair_q = q_of[tq_owner]
    n_blk = sh.term_ptr[terms + 1] - sh.term_ptr[terms]
    pair_base = torch.cumsum(n_blk, 0) - n_blk
    # each (query, term) pair joined with every component of its query
    q_ptr = torch.from_numpy(qb.indptr).to(dev)
    q_idx = torch.from_numpy(qb.indices.astype(np.int64)).to(dev)
    q_val = torch.from_numpy(qb.values).to(dev)
    c_owner, j = _expand(q_ptr, q_of, torch)
    keys = (terms[c_owner] * qb.dim + q_idx[j]).to(sh.ent_key.dtype)
    lo = torch.searchsorted(sh.ent_key, keys)
    hi = torch.searchsorted(sh.ent_key, keys, right=True)
    m_owner, e = _ranges(lo, hi - lo, torch)
    p_of = c_owner[m_owner]
    target = pair_base[p_of] + (sh.ent_blk[e].long() - sh.term_ptr[terms[p_of]])
    contrib = q_val[j[m_owner]] * sh.ent_val[e].float()
    del c_owner, j, keys, lo, hi, m_owner, p_of
    ssum = torch.zeros(blk.numel(), dtype=torch.float32, device=dev)
    ssum.index_add_(0, target, contrib)
    prof.mark("summaries", dev, torch, query_terms=terms.numel(), blocks=blk.numel(), entries=e.numel())
    del e, target, contrib
    # 3. a first estimate of each query's k-th score from the best `probe_blocks` blocks per term
    o1 = torch.argsort(-ssum, stable=True)
    order = o1[torch.argsort(tq_owner[o1], stable=True)]  # by (query term, summary score desc)
    group_len = torch.bincount(tq_owner, minlength=terms.numel())
    group_start = torch.cumsum(group_len, 0) - group_len
    rank = torch.arange(blk.numel(), device=dev) - group_start[tq_owner[order]]
    probe = torch.zeros(blk.numel(), dtype=torch.bool, device=dev)
    probe[order[rank < probe_blocks]] = True
    prof.mark("probe_order", dev, torch)
    theta = _kth_scores(pair_q[probe], blk[probe], sh, qdense, k, nq, torch)
    prof.mark("probe_score", dev, torch, probe_blocks=int(probe.sum()))
    # 4. keep blocks that can still matter; score their documents exactly
    keep = ssum >= heap_factor * theta[pair_q]
    keep |= probe
    cand_q, cand_doc = _block_docs(pair_q[keep], blk[keep], sh, torch)
    prof.mark("candidates", dev, torch, kept_blocks=int(keep.sum()), candidates=cand_q.numel())
    if sh.always is not None:
        aq = torch.arange(nq, device=dev).repeat_interleave(sh.always.numel())
        ad = sh.always.repeat(nq)
        key = torch.unique(torch.cat([cand_q * sh.n_rows + cand_doc, aq * sh.n_rows + ad]))
        cand_q, cand_doc = key // sh.n_rows, key % sh.n_rows
    out = _topk_pairs(cand_q, cand_doc, sh, qdense, k, nq, torch)
    prof.mark("score_topk", dev, torch)
    return out


def _block_docs(pair_q: Tensor, blk: Tensor, sh: _Shard, torch: ModuleType) -> tuple[Tensor, Tensor]:
    owner, flat = _expand(sh.block_ptr, blk, torch)
    q = pair_q[owner]
    d = sh.block_docs[flat]
    key = torch.unique(q * sh.n_rows + d)  # de-duplicate documents met in several blocks
    return key // sh.n_rows, key % sh.n_rows


def _kth_scores(pair_q: Tensor, blk: Tensor, sh: _Shard, qdense: Tensor, k: int, nq: int,
                torch: ModuleType) -> Tensor:
    cq, cd = _block_docs(pair_q, blk, sh, torch)
    s, _ = _topk_pairs(cq, cd, sh, qdense, k, nq, torch)
    kth = s[:, -1]
    theta: Tensor = torch.where(torch.isfinite(kth), kth, torch.zeros_like(kth))
    return theta


def _topk_pairs(cand_q: Tensor, cand_doc: Tensor, sh: _Shard, qdense: Tensor, k: int, nq: int,
                torch: ModuleType) -> tuple[Tensor, Tensor]:
    """Per-query top-k over a flat list of (query, doc) candidates (sorted by query)."""
    dev = qdense.device
    if cand_q.numel() == 0:
        return (torch.full((nq, k), -float("inf"), device=dev), torch.full((nq, k), -1, dtype=torch.int64, device=dev))
    scores = _score_pairs(cand_q, cand_doc, sh, qdense, torch)
    scores = torch.where(scores > 0, scores, torch.full_like(scores, -float("inf")))
    if sh.deleted is not None:
        scores = scores.masked_fill(sh.deleted[cand_doc], -float("inf"))
    counts = torch.bincount(cand_q, minlength=nq)
    width = max(int(counts.max()), k)
    first = torch.cumsum(counts, 0) - counts
    col = torch.arange(cand_q.numel(), device=dev) - first[cand_q]
    mat = torch.full((nq, width), -float("inf"), device=dev)
    mat[cand_q, col] = scores
    rows = torch.full((nq, width), -1, dtype=torch.int64, device=dev)
    rows[cand_q, col] = cand_doc
    s, pos = torch.topk(mat, k, dim=1)
    return s, torch.gather(rows, 1, pos)


def _forward_batch(index: SeismicIndex | ExactIndex) -> SparseBatch:
    """All rows (built and added) of an lsr index as one SparseBatch, values as scored."""
    from . import kernels as K
    from .seismic import SeismicIndex

    if isinstance(index, SeismicIndex):
        a = index._a
        ptr = np.concatenate([np.asarray(a["fwd_ptr"]), np.asarray(a["tail_ptr"][1:]) + int(a["fwd_ptr"][-1])])
        comp = np.concatenate([np.asarray(a["fwd_comp"]), np.asarray(a["tail_comp"])]).astype(np.int32)
        val = K.F16_TABLE[np.concatenate([np.asarray(a["fwd_val"]), np.asarray(a["tail_val"])])]
        return SparseBatch(ptr.astype(np.int64), comp, val.astype(np.float32), index.dim)
    # ExactIndex: its forward CSR holds every row, deleted ones too (the mask hides those)
    return SparseBatch(np.asarray(index._d_ptr, np.int64), np.asarray(index._d_idx, np.int32),
                       np.asarray(index._d_val, np.float32), index.dim)


def _seismic_layout(index: SeismicIndex) -> BlockLayout:
    """The Seismic index's own blocks and dequantised summaries, term-major as it stores them."""
    e = index.summary_entries()
    return BlockLayout(
        e["term_blk_ptr"], e["blk_ptr"], np.asarray(e["post_rows"]).astype(np.int64),
        e["term_ent_ptr"], e["comp"], e["block"].astype(np.int32), e["value"],
    )
