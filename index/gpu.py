"""GPU scoring path: exact and Seismic-style approximate batch search with torch (CUDA or CPU).

torch is imported lazily here and nowhere else in ``lsr.index``. The same code runs on the CPU,
which is how CI tests it; ``device="cuda"`` without CUDA raises a clear error. On CUDA with Triton
installed, the approximate path's summary join and candidate scoring run in the kernels of
:mod:`lsr.index.gpu_kernels` (same sums; CI checks them under Triton's CPU interpreter).
"""

from __future__ import annotations

import functools
import logging
import os
import threading
import time
import warnings
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING, Any, Callable, ContextManager, Generator, Sequence, TypeVar, Union, cast

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
    fwd_valk: Any = None  # the values the Triton kernel reads: float16 where that is lossless, else fwd_val
    term_ptr: Any = None
    block_ptr: Any = None
    block_docs: Any = None
    ent_key: Any = None  # term * dim + component, sorted: the summaries joined by (term, component)
    ent_blk: Any = None
    ent_val: Any = None
    ent_ptr: Any = None  # term t's summary entries are ent_key[ent_ptr[t]:ent_ptr[t+1]]
    max_blocks: int = 0  # most blocks of any one term: the width of the padded summary scores
    search_steps: int = 1  # binary-search steps that cover any term's summary entries
    deleted: Any = None  # bool per row, or None
    deleted_words: Any = None  # the same as a bitmap (int32 words), the start of every query's seen-set
    always_blk: int | None = None  # block holding the rows scored for every query (added after the build)
    empty_blk: int = 0  # a block with no rows (the last entry of block_ptr repeated): unselected slots
    blk_size: Any = None  # rows per block (int64), empty_blk's 0 included
    list_rows: int = 0  # most rows in any one term's blocks: a static bound on a term's candidates
    always_rows: int = 0  # rows of always_blk
    block_rows: int = 0  # most rows in any one block (always_blk aside)
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
        # page-locked host buffers reused by every search (asynchronous copies need them)
        self._pinned = _Pinned(any(sh.device.type == "cuda" for sh in shards))
        self._graphs = _Graphs()
        self._streams = _Streams()
        # the page-locked buffers and the captured graphs are shared by every search: one at a time
        self._lock = threading.Lock()

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
                half = val.half()
                # an index's stored values are float16 already: the kernel then reads 6 bytes a non-zero, not 8
                if bool(torch.equal(half.float(), val)):
                    sh.fwd_valk = half
                    sh.bytes += part.nnz * 2
                else:
                    sh.fwd_valk = val
            rows_always = None
            if always is not None:
                a = np.asarray(always, np.int64)
                rows_always = a[(a >= lo) & (a < hi)] - lo
            if layout is not None:
                _attach_blocks(sh, layout, lo, hi, torch, rows_always)
            if deleted is not None:
                mask = np.asarray(deleted[lo:hi], dtype=bool)
                sh.deleted = torch.from_numpy(mask.copy()).to(dev)
                sh.deleted_words = torch.from_numpy(_bitmap_words(mask)).to(dev)
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
        tile: int | None = None,
        doc_tile: int | None = None,
    ) -> Hits:
        """Top-``k`` for every query; ``(n, k)`` arrays, missing hits ``-1`` / ``-inf``.

        ``mode="exact"``: sparse × dense product tiled over ``tile`` queries and ``doc_tile``
        documents, so memory stays bounded for any batch. ``mode="approx"``: Seismic's idea on
        the batch: score the block summaries of each query's top ``query_cut`` terms, estimate the
        k-th score from the ``probe_blocks`` best blocks per term, keep blocks whose summary score
        reaches ``heap_factor`` × that estimate, score their documents exactly, top-k
        (``query_cut``/``heap_factor``: :class:`lsr.index.SearchParams`, same defaults as the CPU).
        ``tile=None`` picks the query tile from the memory it needs (approx: the whole batch
        where it fits). ``hits.timings`` reports seconds with and without host↔device copies.
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
        if (tile is not None and tile <= 0) or (doc_tile is not None and doc_tile <= 0):
            raise ValueError("tile and doc_tile must be positive")
        if probe_blocks <= 0:
            raise ValueError(f"probe_blocks must be positive, got {probe_blocks}")
        nq = len(queries)
        inflight = _inflight(self._shards) if mode == "approx" else 1  # exact: device-bound, and its score
        # blocks are large (two tiles at once would double them)
        tile = self._tile(nq, mode, query_cut, inflight) if tile is None else tile
        out_rows = np.full((nq, k), -1, np.int64)
        out_scores = np.full((nq, k), -np.inf, np.float32)
        clock = {"copy_s": 0.0, "compute_s": 0.0}
        t_all = time.perf_counter()

        def shard_steps(sh: _Shard, qp: _PaddedQueries, static: bool) -> Steps[tuple[Tensor, Tensor]]:
            """One shard's search of a tile, run with ``sh.device`` current (by the caller)."""
            tc = time.perf_counter()
            qd = qp.to(sh.device, torch)
            if PROFILE.on:
                _sync(sh.device, torch)
            clock["copy_s"] += time.perf_counter() - tc
            if mode == "exact":
                dt = doc_tile or max(1, (1 << 32) // (4 * max(1, len(qp))))
                s, r = _exact_shard(sh, qd.dense, k, dt, torch)
            else:
                s, r = yield from _approx_steps(sh, qd, k, query_cut, heap_factor, probe_blocks, torch, static=static)
            return s, r + sh.row_offset

        def on_shard(sh: _Shard, qp: _PaddedQueries, static: bool) -> tuple[Tensor, Tensor]:
            with _on_device(sh.device, torch):
                return _finish(shard_steps(sh, qp, static))

        def tile_steps(q0: int, slot: int) -> Steps[None]:
            """One query tile: pad, copy, search every shard, merge, bring the top-k home. It
            yields where the host is about to wait for the device, so that another tile's work
            (queued on its own stream) keeps the device busy meanwhile."""
            qp = _PaddedQueries.of(queries[q0 : q0 + tile], self._pinned, slot)
            c = min(query_cut, int(qp.comp.shape[1]))
            static = mode == "approx" and all(_static_ok(sh, len(qp), c, probe_blocks, k) for sh in self._shards)
            sh0 = self._shards[0]
            graphed = static and len(self._shards) == 1 and _graphs_on(sh0)
            if graphed:
                top_s, top_r = self._graphs.run(sh0, qp, (k, query_cut, heap_factor, probe_blocks), torch)
                top_r = top_r + sh0.row_offset
            elif len(self._shards) == 1:
                top_s, top_r = yield from shard_steps(sh0, qp, static)
            else:  # one host thread per device: the shards compute at the same time
                per_shard = list(self._executor().map(lambda sh: on_shard(sh, qp, static), self._shards))
                scores = torch.cat([x[0].to(sh0.device) for x in per_shard], dim=1)
                rows = torch.cat([x[1].to(sh0.device) for x in per_shard], dim=1)
                top_s, pos = torch.topk(scores, min(k, scores.shape[1]), dim=1)
                top_r = torch.gather(rows, 1, pos)
            kk = top_s.shape[1]
            top_r = torch.where(torch.isfinite(top_s), top_r, torch.full_like(top_r, -1))
            done = self._start_to_host(top_s, top_r, slot, torch)
            if not graphed:  # a replayed graph's input and output buffers serve every tile of its shape:
                yield  # the tile ends before another may replay it
            s_np, r_np = done()  # the tile's one wait for its whole step
            if mode == "exact" or len(self._shards) > 1:  # one shard's approximate top-k comes ordered
                _order_ties(s_np, r_np)
            out_scores[q0 : q0 + len(qp), :kk] = s_np
            out_rows[q0 : q0 + len(qp), :kk] = r_np

        with self._lock:
            t0 = time.perf_counter()
            jobs = [functools.partial(tile_steps, q0) for q0 in range(0, nq, tile)]
            self._streams.run(jobs, inflight, self._shards[0].device, torch)
            clock["compute_s"] = time.perf_counter() - t0 - clock["copy_s"]
        total = time.perf_counter() - t_all
        timings = {"total_s": total, "compute_s": clock["compute_s"], "copy_s": clock["copy_s"]}
        return Hits(self._idmap.lookup(out_rows), out_scores, out_rows, timings)

    def _tile(self, nq: int, mode: str, query_cut: int, inflight: int = 1) -> int:
        """Queries per tile: exact, 256 on the CPU and 1,024 on a GPU (the score block is
        tile × doc_tile); approx, the whole batch unless its seen-sets (a bit per query and
        document), dense query block or padded summary scores would pass their caps, and with
        tiles in flight (:func:`_inflight`) a batch of at least ``PIPELINE_QUERIES`` in at least
        that many tiles."""
        if mode == "exact":
            return 1024 if any(sh.device.type == "cuda" for sh in self._shards) else 256
        rows = max(sh.n_rows for sh in self._shards)
        blocks = max(sh.max_blocks for sh in self._shards)
        cap = min((2 << 30) * 8 // max(rows, 1), (2 << 30) // (4 * self.dim),
                  (1 << 30) // (4 * max(1, min(query_cut, self.dim) * blocks)), 16384)
        cap = max(cap, 1)
        n_tiles = max(1, -(-nq // cap))
        if inflight > 1 and nq >= PIPELINE_QUERIES:
            n_tiles = max(n_tiles, inflight)
        return max(1, -(-nq // n_tiles))

    def _start_to_host(self, s: Tensor, r: Tensor, slot: int, torch: ModuleType) -> Callable[[], tuple[np.ndarray, np.ndarray]]:
        """Start copying a tile's top-k home (page-locked buffers of ``slot``, on the current
        stream); the returned function waits for it and gives NumPy copies."""
        if s.device.type != "cuda":
            return lambda: (s.float().numpy().copy(), r.numpy().astype(np.int64))
        hs = self._pinned.buffer(f"out_s{slot}", s.shape, torch.float32, torch)
        hr = self._pinned.buffer(f"out_r{slot}", r.shape, r.dtype, torch)
        hs.copy_(s, non_blocking=True)
        hr.copy_(r, non_blocking=True)
        ready = torch.cuda.Event()
        ready.record()

        def done() -> tuple[np.ndarray, np.ndarray]:
            ready.synchronize()
            return hs.numpy().copy(), hr.numpy().astype(np.int64)

        return done

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


T = TypeVar("T")
Steps = Generator[None, None, T]  # work that yields where the host is about to wait for the device
PIPELINE_QUERIES = 2048  # approximate batches from this size go in tiles, ``_inflight`` of them at once


def _finish(steps: Steps[T]) -> T:
    """Run ``steps`` to the end (nothing else to do while it waits) and give its result."""
    while True:
        try:
            next(steps)
        except StopIteration as stop:
            return cast(T, stop.value)


def _inflight(shards: Sequence[_Shard]) -> int:
    """Query tiles in flight at once (``LSR_GPU_INFLIGHT``; default 2 on a CUDA device, 1 on the
    CPU, where nothing runs beside the host; 1 where the index has several shards, whose threads
    already overlap, and while ``LSR_GPU_PROFILE`` times stages). With two, one tile's kernels run
    while the host waits for the other's sizes, pads its queries or takes its results home."""
    raw = os.environ.get("LSR_GPU_INFLIGHT", "2" if shards[0].device.type == "cuda" else "1")
    if not raw.isdigit() or int(raw) < 1:
        raise ValueError(f"LSR_GPU_INFLIGHT must be a positive integer, got {raw!r}")
    return int(raw) if len(shards) == 1 and not PROFILE.on else 1


class _Streams:
    """Runs query tiles as :data:`Steps`, up to ``inflight`` at once, round robin: each tile is
    resumed on its own CUDA stream (slot) until its next wait, so the device always has queued
    work from another tile while the host waits for one. Slots' streams are made once per device."""

    def __init__(self) -> None:
        self._by_device: dict[Any, list[Any]] = {}

    def run(self, jobs: Sequence[Callable[[int], Steps[None]]], inflight: int, device: torch.device,
            torch: ModuleType) -> None:
        import collections
        import contextlib

        inflight = min(inflight, len(jobs))
        streams = self._streams(device, inflight, torch)
        for st in streams:  # after whatever the caller queued on the current stream
            st.wait_stream(torch.cuda.current_stream(device))
        todo = collections.deque(jobs)
        free = collections.deque(range(inflight))
        active: collections.deque[tuple[int, Steps[None]]] = collections.deque()
        try:
            while todo or active:
                while todo and free:
                    active.append((slot := free.popleft(), todo.popleft()(slot)))
                slot, steps = active.popleft()
                with _on_device(device, torch), (torch.cuda.stream(streams[slot]) if streams else contextlib.nullcontext()):
                    try:
                        next(steps)
                    except StopIteration:
                        free.append(slot)
                        continue
                active.append((slot, steps))
        finally:
            for _, steps in active:
                steps.close()

    def _streams(self, device: torch.device, inflight: int, torch: ModuleType) -> list[Any]:
        """The slots' streams on a CUDA device (none for one slot or on the CPU: the current stream)."""
        if device.type != "cuda" or inflight == 1:
            return []
        have = self._by_device.setdefault(device, [])
        while len(have) < inflight:
            have.append(torch.cuda.Stream(device))
        return have[:inflight]


STATIC_CELLS = 1 << 22  # the static approximate step is taken while its widest candidate matrix stays under this


def _static_ok(sh: _Shard, nq: int, c: int, probe_blocks: int, k: int) -> bool:
    """Whether this tile takes the static approximate step (``LSR_GPU_STATIC``: ``auto``, the
    default, while the candidate matrices stay small (small batches, where the host's waits and
    launches are the cost); ``1`` always; ``0`` never). Triton kernels only."""
    choice = os.environ.get("LSR_GPU_STATIC", "auto")
    if choice not in ("auto", "0", "1"):
        raise ValueError(f"LSR_GPU_STATIC must be 'auto', '0' or '1', got {choice!r}")
    if sh.fwd_idx32 is None or sh.blk_size is None or choice == "0":
        return False
    return choice == "1" or _static_cells(sh, nq, c, probe_blocks, k) <= STATIC_CELLS


def _graphs_on(sh: _Shard) -> bool:
    """CUDA graphs for the static step: on a CUDA device unless ``LSR_GPU_GRAPHS=0`` or profiling."""
    return sh.device.type == "cuda" and os.environ.get("LSR_GPU_GRAPHS", "1") != "0" and not PROFILE.on


@dataclass
class _Captured:
    graph: Any
    comp: Tensor  # the graph's input buffers on the device, filled before each replay
    val: Tensor
    length: Tensor
    out: tuple[Tensor, Tensor]


class _Graphs:
    """The static approximate step captured once per (shard, query-tile shape, settings) as a CUDA
    graph and replayed: a batch then costs one graph launch instead of a hundred kernel launches
    and the torch ops around them. The newest ``limit`` graphs are kept."""

    def __init__(self, limit: int = 8) -> None:
        self.limit = limit
        self._cache: dict[tuple[Any, ...], _Captured] = {}

    def run(self, sh: _Shard, qp: _PaddedQueries, knobs: tuple[int, int, float, int],
            torch: ModuleType) -> tuple[Tensor, Tensor]:
        key = (sh.row_offset, tuple(qp.comp.shape), knobs)
        cap = self._cache.pop(key, None)
        if cap is None:
            cap = self._capture(sh, qp, knobs, torch)
        else:
            for dst, src in ((cap.comp, qp.comp), (cap.val, qp.val), (cap.length, qp.length)):
                dst.copy_(src, non_blocking=True)
        self._cache[key] = cap  # newest last
        while len(self._cache) > self.limit:
            self._cache.pop(next(iter(self._cache)))
        cap.graph.replay()
        return cap.out

    @staticmethod
    def _capture(sh: _Shard, qp: _PaddedQueries, knobs: tuple[int, int, float, int],
                 torch: ModuleType) -> _Captured:
        dev = sh.device
        comp = qp.comp.to(dev, non_blocking=True)
        val = qp.val.to(dev, non_blocking=True)
        length = qp.length.to(dev, non_blocking=True)
        k, query_cut, heap_factor, probe_blocks = knobs

        def step() -> tuple[Tensor, Tensor]:
            qd = _device_queries(comp, val, length, qp.dim, torch)
            return _approx_shard(sh, qd, k, query_cut, heap_factor, probe_blocks, torch, static=True)

        side = torch.cuda.Stream(dev)  # capture wants a warm-up (Triton compiles there) off the default stream
        side.wait_stream(torch.cuda.current_stream(dev))
        with torch.cuda.stream(side):
            step()
        torch.cuda.current_stream(dev).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            out = step()
        log.debug("captured the static approximate step for %s queries x %s terms", *qp.comp.shape)
        return _Captured(graph, comp, val, length, out)


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


class _Pinned:
    """Named page-locked host buffers, grown on demand and reused, so host↔device copies run
    asynchronously and no search allocates page-locked memory (slow) per batch. Off on the CPU."""

    def __init__(self, on: bool) -> None:
        self.on = on
        self._bufs: dict[str, Tensor] = {}

    def buffer(self, name: str, shape: Sequence[int], dtype: Any, torch: ModuleType) -> Tensor:
        n = int(np.prod(shape))
        buf = self._bufs.get(name)
        if buf is None or buf.dtype != dtype or buf.numel() < n:
            buf = torch.empty(max(n, 1024), dtype=dtype, pin_memory=True)
            self._bufs[name] = buf
        return buf[:n].view(*shape)

    def array(self, name: str, shape: Sequence[int], dtype: npt.DTypeLike, torch: ModuleType) -> Tensor:
        """A host tensor to fill through ``.numpy()``: a reused page-locked buffer when on, else new."""
        if not self.on:
            t: Tensor = torch.from_numpy(np.empty(shape, dtype))
            return t
        return self.buffer(name, shape, torch.from_numpy(np.empty(0, dtype)).dtype, torch)


@dataclass
class _DeviceQueries:
    comp: Tensor  # (n, L) int64 component ids, padded with 0
    val: Tensor  # (n, L) float32 weights, padded with 0
    length: Tensor  # (n,) int32 non-zeros per query
    dense: Tensor  # (n, dim) float32


@dataclass
class _PaddedQueries:
    """A query tile as (n, L) padded arrays built once on the host (L = most non-zeros in the
    tile): one copy per array to each device, and fixed shapes for the selection steps there."""

    comp: Tensor
    val: Tensor
    length: Tensor
    dim: int

    @classmethod
    def of(cls, qb: SparseBatch, pinned: _Pinned, slot: int = 0) -> "_PaddedQueries":
        torch = _torch()
        n = len(qb)
        lens = qb.row_nnz().astype(np.int32)
        # padded to a power of two: batches of one size then share a few shapes (and CUDA graphs)
        width = 1 << max(0, int(lens.max()) - 1).bit_length() if n else 1
        # filled in place (page-locked when a GPU takes them), each non-zero put at its flat position
        comp = pinned.array(f"q_comp{slot}", (n, width), np.int32, torch)
        val = pinned.array(f"q_val{slot}", (n, width), np.float32, torch)
        length = pinned.array(f"q_len{slot}", (n,), np.int32, torch)
        pos = np.arange(qb.nnz, dtype=np.int64) + np.repeat(np.arange(n, dtype=np.int64) * width - qb.indptr[:-1], lens)
        for t, values in ((comp, qb.indices), (val, qb.values)):
            flat = t.numpy().reshape(-1)
            flat.fill(0)
            flat[pos] = values
        length.numpy()[:] = lens
        return cls(comp, val, length, qb.dim)

    def __len__(self) -> int:
        return int(self.comp.shape[0])

    def to(self, device: torch.device, torch: ModuleType) -> _DeviceQueries:
        return _device_queries(self.comp.to(device, non_blocking=True), self.val.to(device, non_blocking=True),
                               self.length.to(device, non_blocking=True), self.dim, torch)


def _device_queries(comp: Tensor, val: Tensor, length: Tensor, dim: int, torch: ModuleType) -> _DeviceQueries:
    """Padded query arrays already on the device, with their dense rows."""
    comp = comp.long()
    dense = torch.zeros((comp.shape[0], dim), dtype=torch.float32, device=comp.device)
    dense.scatter_add_(1, comp, val)  # padding adds 0.0 to column 0
    return _DeviceQueries(comp, val, length, dense)


def _bitmap_words(mask: np.ndarray) -> np.ndarray:
    """A boolean row mask as int32 words, bit ``r % 32`` of word ``r // 32`` for row ``r``."""
    n_words = max(1, -(-mask.size // 32))
    bits = np.zeros(n_words * 32, bool)
    bits[: mask.size] = mask
    return np.packbits(bits, bitorder="little").view("<u4").view(np.int32)


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


def _attach_blocks(sh: _Shard, layout: BlockLayout, lo: int, hi: int, torch: ModuleType,
                   always: np.ndarray | None = None) -> None:
    """Keep, for this shard, each block's documents that fall in rows [lo, hi); rows in
    ``always`` (shard-local) become one more block, selected for every query."""
    dev = sh.device
    docs = layout.block_docs
    keep = (docs >= lo) & (docs < hi)
    blk_of = np.repeat(np.arange(layout.block_ptr.size - 1), np.diff(layout.block_ptr))
    counts = np.bincount(blk_of[keep], minlength=layout.block_ptr.size - 1)
    block_docs = docs[keep] - lo
    if always is not None and always.size:
        sh.always_blk = int(counts.size)
        counts = np.concatenate([counts, [always.size]])
        block_docs = np.concatenate([block_docs, always])
    block_ptr = np.concatenate([[0], np.cumsum(counts), [counts.sum()]]).astype(np.int64)
    sh.empty_blk = int(counts.size)
    sh.always_rows = int(always.size) if sh.always_blk is not None and always is not None else 0
    starts = block_ptr[layout.term_ptr.astype(np.int64)]
    sh.list_rows = int(np.diff(starts).max(initial=0))
    sh.block_rows = int(counts[: layout.block_ptr.size - 1].max(initial=0))
    sh.term_ptr = torch.from_numpy(layout.term_ptr.astype(np.int64)).to(dev)
    sh.block_ptr = torch.from_numpy(block_ptr).to(dev)
    sh.blk_size = sh.block_ptr[1:] - sh.block_ptr[:-1]
    sh.block_docs = torch.from_numpy(block_docs.astype(np.int64)).to(dev)
    sh.max_blocks = max(1, int(np.diff(layout.term_ptr).max(initial=0)))
    # Summary entries sorted by (term, component), so a query joins each of its components against
    # a posting list's summaries with one binary search instead of scanning all of them. The
    # large arrays cross the bus in the dtype they come in and are converted on the device.
    dim = int(layout.term_ptr.size - 1)
    key_dtype = torch.int32 if dim * dim < 2**31 else torch.int64
    ent_ptr = torch.from_numpy(layout.ent_ptr.astype(np.int64)).to(dev)
    sh.ent_ptr = ent_ptr
    longest = int(np.diff(layout.ent_ptr).max(initial=0))
    sh.search_steps = max(1, int(longest).bit_length() + 1)
    term_of = torch.repeat_interleave(torch.arange(dim, device=dev), ent_ptr[1:] - ent_ptr[:-1])
    key = (term_of * dim + torch.from_numpy(np.ascontiguousarray(layout.ent_comp)).to(dev)).to(key_dtype)
    del term_of
    sh.ent_key, order = torch.sort(key, stable=True)
    del key
    sh.ent_blk = torch.from_numpy(np.ascontiguousarray(layout.ent_blk)).to(dev)[order].to(torch.int32)
    sh.ent_val = torch.from_numpy(np.ascontiguousarray(layout.ent_val)).to(dev)[order].to(torch.float16)
    del order
    sh.bytes += sum(int(x.numel() * x.element_size()) for x in (
        sh.term_ptr, sh.block_ptr, sh.blk_size, sh.block_docs, sh.ent_key, sh.ent_blk, sh.ent_val, sh.ent_ptr))


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
    """Exact scores of (query, document) pairs on the forward index (torch ops)."""
    owner, flat = _expand(sh.fwd_ptr, pair_doc, torch)
    contrib = qdense[pair_q[owner], sh.fwd_idx[flat]] * sh.fwd_val[flat]
    out: Tensor = torch.zeros(pair_q.numel(), dtype=torch.float32, device=qdense.device)
    out.index_add_(0, owner, contrib)
    return out


class _Profile:
    """Per-stage device time and sizes of the approximate path, on when LSR_GPU_PROFILE=1
    (each mark waits for the device, so profiled runs are slower)."""

    def __init__(self) -> None:
        self.on = os.environ.get("LSR_GPU_PROFILE") == "1"
        self.times: dict[str, float] = {}
        self.sizes: dict[str, int] = {}
        self._t: float | None = None

    def start(self, device: torch.device, torch: ModuleType) -> None:
        if self.on:
            _sync(device, torch)
            self._t = time.perf_counter()

    def mark(self, name: str, device: torch.device, torch: ModuleType, **sizes: Any) -> None:
        if self.on:
            assert self._t is not None, "start() comes before mark()"
            _sync(device, torch)
            now = time.perf_counter()
            self.times[name] = self.times.get(name, 0.0) + now - self._t
            self.count(**sizes)
            self._t = now

    def count(self, **sizes: Any) -> None:
        for key, v in sizes.items():
            self.sizes[key] = self.sizes.get(key, 0) + int(v)


PROFILE = _Profile()


def _approx_shard(sh: _Shard, qd: _DeviceQueries, k: int, query_cut: int, heap_factor: float,
                  probe_blocks: int, torch: ModuleType, static: bool = False) -> tuple[Tensor, Tensor]:
    """:func:`_approx_steps` run to the end."""
    return _finish(_approx_steps(sh, qd, k, query_cut, heap_factor, probe_blocks, torch, static))


def _approx_steps(sh: _Shard, qd: _DeviceQueries, k: int, query_cut: int, heap_factor: float,
                  probe_blocks: int, torch: ModuleType, static: bool = False) -> Steps[tuple[Tensor, Tensor]]:
    """Seismic on a query tile, in fixed-shape steps: every (query, kept term) pair owns a row
    of ``max_blocks`` summary scores, so choosing probe and kept blocks is one top-k and one
    comparison over a padded tensor, with no sort, and the host waits for the device only to
    size the candidate lists (twice). With the Triton kernels, the summary join is one kernel and
    each candidate stage two (mark the query's seen-set, a bit per query and document, then score
    the documents met for the first time), so no candidate list is de-duplicated by sorting and the documents of the
    probe blocks are not scored again.

    ``static=True`` (Triton only) takes no data-dependent size at all: every (query, term, block)
    slot is a program of the candidate stages (unselected slots point at an empty block) and the
    candidate matrices are as wide as any query could need (:func:`_static_widths`), so the host
    never waits for the device and the whole step can be captured in a CUDA graph. It yields
    before each wait of the sized step (:data:`Steps`)."""
    dev = sh.device
    nq = qd.comp.shape[0]
    prof = PROFILE
    prof.start(dev, torch)
    fused = sh.fwd_idx32 is not None
    mb = sh.max_blocks
    # 1. each query's top `query_cut` terms
    terms, tbase, nblk = _query_terms(sh, qd, query_cut, torch)
    c = terms.shape[1]
    # 2. summary scores, (nq, c, max_blocks): 0 before the join for a term's real blocks
    ssum = torch.zeros(nq * c * mb, dtype=torch.float32, device=dev)
    if fused:
        gpu_kernels.summary_scores(terms, tbase, qd.comp, qd.val, qd.length, sh.ent_ptr, sh.ent_key, sh.ent_blk,
                                   sh.ent_val, ssum, dim=qd.dense.shape[1], max_blocks=mb, steps=sh.search_steps)
    else:
        _summary_scores_ref(terms, tbase, qd, sh, ssum, torch)
    ssum = ssum.view(nq, c, mb)
    valid = torch.arange(mb, device=dev)[None, None, :] < nblk[:, :, None]
    ssum = torch.where(valid, ssum, torch.full_like(ssum, -float("inf")))
    prof.mark("summaries", dev, torch, pairs=int((terms >= 0).sum()) if prof.on else 0)
    # 3. a first estimate of each query's k-th score from the best `probe_blocks` blocks per term
    pv, pb = torch.topk(ssum.view(nq * c, mb), min(probe_blocks, mb), dim=1)
    probe = torch.zeros((nq * c, mb), dtype=torch.bool, device=dev)
    probe.scatter_(1, pb, torch.isfinite(pv))
    probe = probe.view(nq, c, mb)
    seen = _seen_sets(sh, nq, torch) if fused else None
    widths = _static_widths(sh, c, probe_blocks, k) if static and seen is not None else None
    if widths is not None and seen is not None:
        ps, pr = _score_slots(probe, tbase, None, sh, qd.dense, k, seen, widths[0], torch)
    elif seen is not None:
        ps, pr = yield from _score_blocks_fused(probe, tbase, None, sh, qd.dense, k, seen, torch)
    else:
        ps, pr = _score_blocks_ref(probe, tbase, None, sh, qd.dense, k, torch)
    kth = ps[:, -1]
    theta = torch.where(torch.isfinite(kth), kth, torch.zeros_like(kth))
    prof.mark("probe", dev, torch)
    # 4. keep blocks that can still matter; score their documents exactly
    keep = ssum >= heap_factor * theta[:, None, None]
    if seen is not None:  # the probe blocks' documents are scored already (and in the seen-sets)
        if widths is not None:  # the static step
            s2, r2 = _score_slots(keep & ~probe, tbase, sh.always_blk, sh, qd.dense, k, seen, widths[1], torch)
        else:
            s2, r2 = yield from _score_blocks_fused(keep & ~probe, tbase, sh.always_blk, sh, qd.dense, k, seen,
                                                    torch)
        s, r = _topk_rows(torch.cat([ps, s2], dim=1), torch.cat([pr, r2], dim=1), k, torch)
    else:
        s, r = _score_blocks_ref(keep | probe, tbase, sh.always_blk, sh, qd.dense, k, torch)
    prof.mark("candidates", dev, torch, kept_blocks=int(keep.sum()) if prof.on else 0)
    return s, r.long()


def _query_terms(sh: _Shard, qd: _DeviceQueries, query_cut: int, torch: ModuleType) -> tuple[Tensor, Tensor, Tensor]:
    """Each query's top ``query_cut`` terms ``(nq, c)`` (``-1`` beyond a query's non-zeros: a dead
    pair), the first block of each term's posting list and its block count (0 for dead pairs)."""
    c = min(query_cut, qd.comp.shape[1])
    w, pos = torch.topk(qd.val, c, dim=1)
    terms = torch.where(w > 0, torch.gather(qd.comp, 1, pos), torch.full_like(pos, -1))
    t0 = terms.clamp(min=0)
    tbase = sh.term_ptr[t0]
    nblk = torch.where(terms >= 0, sh.term_ptr[t0 + 1] - tbase, torch.zeros_like(tbase))
    return terms, tbase, nblk


def _summary_scores_ref(terms: Tensor, tbase: Tensor, qd: _DeviceQueries, sh: _Shard, ssum: Tensor,
                        torch: ModuleType) -> None:
    """Torch-op join of each (query, term) pair's query components with the term's summary
    entries, accumulated into ``ssum`` at (pair, block - first block of the term)."""
    nq, c = terms.shape
    pairs = (terms >= 0).view(-1).nonzero().squeeze(1)
    if pairs.numel() == 0:
        return
    q_of = pairs // c
    t = terms.view(-1)[pairs]
    width = qd.comp.shape[1]
    live = torch.arange(width, device=terms.device)[None, :] < qd.length[q_of].long()[:, None]
    keys = (t[:, None] * qd.dense.shape[1] + qd.comp[q_of])[live].to(sh.ent_key.dtype)
    wq = qd.val[q_of][live]
    owner = pairs[:, None].expand(-1, width)[live]
    lo = torch.searchsorted(sh.ent_key, keys)
    hi = torch.searchsorted(sh.ent_key, keys, right=True)
    m, e = _ranges(lo, hi - lo, torch)
    p = owner[m]
    target = p * sh.max_blocks + (sh.ent_blk[e].long() - tbase.view(-1)[p])
    ssum.index_add_(0, target, wq[m] * sh.ent_val[e].float())


def _selected(sel: Tensor, tbase: Tensor, extra_blk: int | None, torch: ModuleType) -> tuple[Tensor, Tensor]:
    """(query, block) of the selected slots of (nq, c, max_blocks), query-major; ``extra_blk``
    is added for every query."""
    nq, c, mb = sel.shape
    idx = sel.view(nq, c * mb).nonzero()
    q = idx[:, 0].contiguous()  # a column of the (n, 2) result: the kernels read it flat
    blk = tbase.view(-1)[q * c + idx[:, 1] // mb] + idx[:, 1] % mb
    if extra_blk is not None:
        q = torch.cat([q, torch.arange(nq, device=sel.device)])
        blk = torch.cat([blk, torch.full((nq,), extra_blk, dtype=blk.dtype, device=sel.device)])
        order = torch.argsort(q, stable=True)
        q, blk = q[order], blk[order]
    return q, blk


def _score_blocks_ref(sel: Tensor, tbase: Tensor, extra_blk: int | None, sh: _Shard, qdense: Tensor, k: int,
                      torch: ModuleType) -> tuple[Tensor, Tensor]:
    """Per-query top-k over the documents of the selected blocks (torch ops: de-duplicated by
    sorting (query, document) keys)."""
    q, blk = _selected(sel, tbase, extra_blk, torch)
    owner, flat = _expand(sh.block_ptr, blk, torch)
    key = torch.unique(q[owner] * sh.n_rows + sh.block_docs[flat])
    return _topk_pairs(key // sh.n_rows, key % sh.n_rows, sh, qdense, k, sel.shape[0], torch)


def _seen_sets(sh: _Shard, nq: int, torch: ModuleType) -> Tensor:
    """One bit per (query, row), set for rows already scored or deleted."""
    words = max(1, -(-sh.n_rows // 32))
    if sh.deleted_words is not None:
        seen: Tensor = sh.deleted_words[None, :].repeat(nq, 1)
        return seen
    out: Tensor = torch.zeros((nq, words), dtype=torch.int32, device=sh.device)
    return out


def _score_blocks_fused(sel: Tensor, tbase: Tensor, extra_blk: int | None, sh: _Shard, qdense: Tensor, k: int,
                        seen: Tensor, torch: ModuleType) -> Steps[tuple[Tensor, Tensor]]:
    """Per-query top-k over the documents of the selected blocks not yet in ``seen`` (Triton: one
    program per selected block writes its documents' rows into the query's row of a padded
    (nq, width) matrix, then fixed-width chunks of those rows are scored; see
    :func:`gpu_kernels.scoring`). Yields before each of its two waits for the device."""
    nq = sel.shape[0]
    dev = sel.device
    yield
    q, blk = _selected(sel, tbase, extra_blk, torch)  # the selection's size: the first wait
    size = sh.blk_size[blk]
    per_q = torch.zeros(nq, dtype=torch.int64, device=dev).index_add_(0, q, size)
    most = per_q.max() if nq else None
    yield
    width = max(int(most) if most is not None else 0, k)  # the second and last wait of a stage
    q_first = torch.cumsum(per_q, 0) - per_q
    col = torch.cumsum(size, 0) - size - q_first[q]
    return _score_candidates(q, blk, col, per_q, width, sh, qdense, seen, k, torch)


def _score_candidates(q: Tensor, blk: Tensor, col: Tensor, per_q: Tensor, width: int, sh: _Shard, qdense: Tensor,
                      seen: Tensor, k: int, torch: ModuleType) -> tuple[Tensor, Tensor]:
    """Block ``blk[i]``'s documents from column ``col[i]`` of query ``q[i]``'s row of ``(nq, width)``
    candidate matrices (``per_q``: each row's filled width), scored by the Triton kernels, and each
    query's top-k of them."""
    nq = per_q.shape[0]
    if PROFILE.on:  # how full the padded candidate matrix is
        PROFILE.count(candidates=int(per_q.sum()), matrix_cells=nq * width)
    mat_s = torch.full((nq, width), -float("inf"), dtype=torch.float32, device=qdense.device)
    mat_r = torch.full((nq, width), -1, dtype=torch.int32, device=qdense.device)
    by_rows = gpu_kernels.scoring() == "rows"
    gpu_kernels.score_blocks(q, blk, col, sh.block_ptr, sh.block_docs, sh.fwd_ptr, sh.fwd_idx32, sh.fwd_valk,
                             qdense, seen, mat_s, mat_r, per_q=per_q if by_rows else None,
                             block_c=32 if by_rows else 16)
    return _topk_rows(mat_s, mat_r, k, torch)


def _topk_rows(mat_s: Tensor, mat_r: Tensor, k: int, torch: ModuleType) -> tuple[Tensor, Tensor]:
    """Per-row top-``k`` of scores ``mat_s`` (positive or ``-inf``) with their rows ``mat_r``
    (int32, ``-1`` for none), equal scores taken by row ascending as the CPU indexes take them
    (a top-k over the scores alone keeps an arbitrary one of several tied documents): one top-k
    over int64 keys, the score's bits above the complemented row."""
    hi = mat_s.contiguous().view(torch.int32).to(torch.int64) << 32  # monotonic for positive floats
    lo = 0x7FFFFFFF - mat_r.to(torch.int64)  # in [0, 2**32): row -1 comes last
    key, _ = torch.topk(hi + lo, k, dim=1)
    s = (key >> 32).to(torch.int32).view(torch.float32)
    r = (0x7FFFFFFF - (key & 0xFFFFFFFF)).to(torch.int32)
    return s, r


def _static_widths(sh: _Shard, c: int, probe_blocks: int, k: int) -> tuple[int, int]:
    """Candidate-matrix widths no query of a static step can pass: the probe stage holds at most
    ``probe_blocks`` blocks of each of ``c`` terms, the kept stage at most every row of ``c``
    posting lists and the always-scored block."""
    kept = c * sh.list_rows + sh.always_rows
    return max(k, min(kept, c * probe_blocks * sh.block_rows)), max(k, kept)


def _static_cells(sh: _Shard, nq: int, c: int, probe_blocks: int, k: int) -> int:
    """Cells of the wider candidate matrix of a static step over ``nq`` queries."""
    return nq * max(_static_widths(sh, c, probe_blocks, k))


def _score_slots(sel: Tensor, tbase: Tensor, extra_blk: int | None, sh: _Shard, qdense: Tensor, k: int,
                 seen: Tensor, width: int, torch: ModuleType) -> tuple[Tensor, Tensor]:
    """:func:`_score_blocks_fused` in fixed shapes: one program per (query, term, block) slot of
    ``sel`` (unselected ones read the empty block), columns from a per-query running sum of the
    selected blocks' sizes, into ``(nq, width)`` matrices."""
    nq, c, mb = sel.shape
    dev = sel.device
    blk = (tbase[:, :, None] + torch.arange(mb, device=dev)).view(nq, c * mb)
    blk = torch.where(sel.view(nq, c * mb), blk, torch.full_like(blk, sh.empty_blk))
    if extra_blk is not None:
        blk = torch.cat([blk, torch.full((nq, 1), extra_blk, dtype=blk.dtype, device=dev)], dim=1)
    size = sh.blk_size[blk]
    col = torch.cumsum(size, 1) - size
    per_q = col[:, -1] + size[:, -1]
    q = torch.arange(nq, device=dev).repeat_interleave(blk.shape[1])  # a real array: kernels read it flat
    return _score_candidates(q, blk.reshape(-1), col.reshape(-1), per_q, width, sh, qdense, seen, k, torch)


def _topk_pairs(cand_q: Tensor, cand_doc: Tensor, sh: _Shard, qdense: Tensor, k: int, nq: int,
                torch: ModuleType) -> tuple[Tensor, Tensor]:
    """Per-query top-k over a flat list of (query, doc) candidates (sorted by query)."""
    dev = qdense.device
    if cand_q.numel() == 0:
        return (torch.full((nq, k), -float("inf"), device=dev), torch.full((nq, k), -1, dtype=torch.int32, device=dev))
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
    rows = torch.full((nq, width), -1, dtype=torch.int32, device=dev)
    rows[cand_q, col] = cand_doc.to(torch.int32)
    return _topk_rows(mat, rows, k, torch)


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
