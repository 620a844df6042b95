"""SeismicIndex: the blocked inverted index of Bruch, Nardini, Rulli and Venturini (SIGIR 2024).

Build: static pruning of posting lists, blocking by clustering, 8-bit block summaries cut to a
share of their mass, a float16 forward index; optional kNN graph (CIKM 2024). Search: the
query's heaviest terms, blocks visited by summary score against the heap, exact forward-index
scoring. The kernels live in ``kernels.py``; this module owns parameters, layout and the API.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, NoReturn, Sequence

import numpy as np

from .sparse import SparseBatch

from . import kernels as K
from .base import (BaseIndex, Hits, SearchParams, check_docs, check_k, coerce_queries, parallel_section, resolve_threads,
                   search_params)
from .filter import FILTER_EXACT_FRACTION, check_allowed
from .ids import IdMap, IdsLike, OneId
from .exact import _load_vocab
from .storage import IndexFormatError, save_folder

log = logging.getLogger(__name__)

_MAIN_ARRAYS = (
    "fwd_ptr", "fwd_comp", "fwd_val", "term_blk_ptr", "blk_ptr", "post_off", "post_len", "term_grp_ptr", "grp_ptr",
    "sum_term", "sum_tdir", "grp_tptr", "sum_dir", "sum_blk", "sum_code", "blk_min", "blk_quant", "knn",
)
_TAIL_ARRAYS = ("tail_ptr", "tail_comp", "tail_val")


def _plain(x: Any) -> Any:
    """An exact-ndarray view of a memory-mapped (ndarray subclass) array; anything else as is."""
    return x.view(np.ndarray) if isinstance(x, np.ndarray) and type(x) is not np.ndarray else x


@dataclass(frozen=True)
class SeismicParams:
    """Build parameters (saved in the manifest). Defaults follow pyseismic-lsr 0.5."""

    n_postings: int | None = 3500  # average postings kept per term (None: keep all)
    pruning: str = "global"  # "global": one value threshold for n_postings*dim postings; "fixed": top n per term
    max_fraction: float = 1.5  # global pruning: a list keeps at most n_postings*max_fraction
    centroid_fraction: float = 0.1  # centroids per list = fraction * list length
    min_cluster_size: int = 2  # smaller clusters are merged into the nearest large one
    summary_energy: float = 0.4  # a block summary keeps its largest entries up to this share of mass
    doc_cut: int | None = 15  # clustering compares a document's top doc_cut entries (None: all)
    nknn: int = 0  # neighbours per document in the kNN graph (0: no graph)
    knn_query_cut: int = 10
    knn_heap_factor: float = 0.9
    seed: int = 42
    # k-means steps after the random-centroid assignment (0: the peer's one-pass clustering); each
    # moves documents to the cluster of the nearest mean, so blocks are tighter and their summaries
    # rank them better (real SPLADE vectors: Recall@10 0.95 with about a quarter fewer documents scored)
    refine: int = 1

    def check(self) -> None:
        if self.n_postings is not None and (not isinstance(self.n_postings, (int, np.integer)) or self.n_postings < 1):
            raise ValueError(f"n_postings must be a positive int or None, got {self.n_postings!r}")
        if self.pruning not in ("global", "fixed"):
            raise ValueError(f"pruning must be 'global' or 'fixed', got {self.pruning!r}")
        if not self.max_fraction >= 1.0:
            raise ValueError(f"max_fraction must be >= 1, got {self.max_fraction!r}")
        if not 0.0 < self.centroid_fraction <= 1.0:
            raise ValueError(f"centroid_fraction must be in (0, 1], got {self.centroid_fraction!r}")
        if self.min_cluster_size < 1:
            raise ValueError(f"min_cluster_size must be >= 1, got {self.min_cluster_size!r}")
        if not 0.0 < self.summary_energy <= 1.0:
            raise ValueError(f"summary_energy must be in (0, 1], got {self.summary_energy!r}")
        if self.doc_cut is not None and self.doc_cut < 1:
            raise ValueError(f"doc_cut must be a positive int or None, got {self.doc_cut!r}")
        if self.nknn < 0:
            raise ValueError(f"nknn must be >= 0, got {self.nknn!r}")
        if not isinstance(self.refine, (int, np.integer)) or self.refine < 0:
            raise ValueError(f"refine must be an int >= 0, got {self.refine!r}")


class SeismicIndex(BaseIndex):
    """Approximate top-k retrieval over learned sparse vectors with a blocked inverted index.

    >>> import numpy as np
    >>> from lsr import SparseBatch
    >>> rng = np.random.default_rng(0)
    >>> docs = SparseBatch.from_dense(rng.random((200, 50)) * (rng.random((200, 50)) < 0.2))
    >>> index = SeismicIndex.build(docs)
    >>> hits = index.search(docs[:3], k=5, query_cut=10, heap_factor=0.8)
    >>> hits.ids.shape, hits.ids[:, 0].tolist()
    ((3, 5), [0, 1, 2])

    Document values are stored in float16 (as in the official Seismic), so scores and ``get``
    reflect float16-rounded weights; entries that round to zero are dropped.
    Search knobs: :class:`lsr.index.SearchParams` (``query_cut``, ``heap_factor``, ``n_knn``,
    ``sorted_blocks``).
    """

    kind = "seismic"

    def __init__(self, arrays: dict[str, np.ndarray], dim: int, params: SeismicParams, idmap: IdMap,
                 deleted: np.ndarray):
        self.dim = int(dim)
        self.params = params
        self._a = arrays
        self._idmap = idmap
        self._deleted = deleted
        self._n_main = int(arrays["fwd_ptr"].shape[0] - 1)
        tbp = arrays["term_blk_ptr"]
        self._max_blocks = int(np.diff(tbp).max()) if tbp.shape[0] > 1 else 0
        self._idmap.set_live(np.asarray(self._deleted) == 0)
        self._local = threading.local()
        self._kernel_args = None  # the index arrays as the kernels take them; reset on change
        self.build_seconds: dict[str, float] = {}  # wall seconds per build stage (an index built here)

    # ------------------------------------------------------------------ build
    @classmethod
    def build(cls, docs: SparseBatch, ids: IdsLike = None, *, n_postings: int | None = 3500, pruning: str = "global",
              max_fraction: float = 1.5, centroid_fraction: float = 0.1, min_cluster_size: int = 2,
              summary_energy: float = 0.4, doc_cut: int | None = 15, nknn: int = 0, knn_query_cut: int = 10,
              knn_heap_factor: float = 0.9, seed: int = 42, refine: int = 1, threads: int | None = None,
              progress: bool = False) -> "SeismicIndex":
        """Build from a SparseBatch. ``ids``: external ids (ints or strings), default 0..n-1.

        Parameters are those of pyseismic-lsr (see :class:`SeismicParams`); ``threads`` limits
        the build's threads (default: all), ``progress`` shows a bar over the build stages.
        """
        params = SeismicParams(n_postings, pruning, max_fraction, centroid_fraction, min_cluster_size,
                               summary_energy, doc_cut, nknn, knn_query_cut, knn_heap_factor, seed, refine)
        params.check()
        docs = check_docs(docs)
        if len(docs) == 0:
            raise ValueError("cannot build a SeismicIndex from an empty batch")
        idmap = IdMap.build(ids, len(docs))
        nthreads = resolve_threads(threads)
        stages = ["forward index", "pruning", "clustering", "summaries"] + (["knn graph"] if nknn else [])
        bar = _Stages(stages, progress)
        t0 = time.perf_counter()
        dim = docs.dim
        comp_dtype = np.uint16 if dim <= 65536 else np.int32

        # forward index: float16 values, zero entries dropped
        bits = K.to_f16_bits(docs.values)
        vals = K.F16_TABLE[bits]
        keep = vals > 0
        if keep.all():
            fwd_ptr = docs.indptr.copy()
            fwd_comp = docs.indices.astype(comp_dtype)
        else:
            counts = np.add.reduceat(keep.astype(np.int64), docs.indptr[:-1]) if docs.nnz else np.zeros(len(docs), np.int64)
            counts[np.diff(docs.indptr) == 0] = 0
            fwd_ptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
            fwd_comp = docs.indices[keep].astype(comp_dtype)
            bits, vals = bits[keep], vals[keep]
        fwd_val = np.ascontiguousarray(bits)
        nnz = int(fwd_ptr[-1])
        bar.next()

        with parallel_section(nthreads):
            # static pruning
            if n_postings is None:
                lam, cap = 0.0, nnz + 1
            elif pruning == "global":
                tot = min(dim * n_postings, nnz)
                lam = float(np.partition(vals, nnz - tot)[nnz - tot]) if tot > 0 else np.inf
                cap = int(n_postings * max_fraction)
            else:
                lam, cap = 0.0, int(n_postings)
            term_ptr, rows, pvals = K.invert_pruned(fwd_ptr, fwd_comp, vals, dim, np.float32(lam), cap, nthreads)
            bar.next()
            # blocking: one worker per thread, posting lists dealt to them by estimated cost
            # (clustering a list of P postings costs about P * centroids)
            cut = doc_cut if doc_cut is not None else int(np.diff(fwd_ptr).max(initial=1))
            cut_ptr, cut_comp, cut_val = K.top_components(fwd_ptr, fwd_comp, vals, cut)
            plen = np.diff(term_ptr).astype(np.float64)
            items, wptr = K.schedule(plen * (1.0 + centroid_fraction * plen), nthreads)
            n_blocks, blk_size, cap_ptr = K.cluster_lists(
                term_ptr, rows, pvals, float(centroid_fraction), int(min_cluster_size), int(seed),
                fwd_ptr, fwd_comp, vals, cut_ptr, cut_comp, cut_val, dim, items, wptr, int(refine))
            del cut_ptr, cut_comp, cut_val, pvals
            term_blk_ptr = np.concatenate([[0], np.cumsum(n_blocks)]).astype(np.int64)
            n_tot_blocks = int(term_blk_ptr[-1])
            local = np.arange(n_tot_blocks, dtype=np.int64) - np.repeat(term_blk_ptr[:-1], n_blocks)
            sizes = blk_size[np.repeat(cap_ptr[:-1], n_blocks) + local]
            blk_ptr = np.concatenate([[0], np.cumsum(sizes)])
            # offsets into the postings: 4 bytes while they fit (8 bytes per block before)
            blk_ptr = blk_ptr.astype(np.uint32 if blk_ptr[-1] < 2**32 else np.int64)
            bar.next()
            # summaries: per block the energy cut and 8-bit quantisation, then the entries of
            # each group of <= 256 blocks sorted by term (one list's summaries = small groups)
            blk_thr = np.empty(n_tot_blocks, np.float32)
            blk_ties = np.empty(n_tot_blocks, np.int64)
            blk_min = np.empty(n_tot_blocks, np.float32)
            blk_quant = np.empty(n_tot_blocks, np.float32)
            s_items, s_wptr = K.schedule(plen, nthreads)  # a block's summary costs its postings
            n_kept = K.summaries_count(term_ptr, rows, n_blocks, blk_size, cap_ptr, term_blk_ptr, fwd_ptr, fwd_comp,
                                       vals, np.float32(summary_energy), dim, s_items, s_wptr, blk_thr, blk_ties,
                                       blk_min, blk_quant)
            n_groups = (n_blocks + K.GROUP - 1) // K.GROUP
            term_grp_ptr = np.concatenate([[0], np.cumsum(n_groups)]).astype(np.int64)
            grp_of_block = np.repeat(term_grp_ptr[:-1], n_blocks) + local // K.GROUP
            grp_ent = np.bincount(grp_of_block, weights=n_kept, minlength=int(term_grp_ptr[-1])).astype(np.int64)
            grp_ptr = np.concatenate([[0], np.cumsum(grp_ent)]).astype(np.int64)
            n_ent = int(grp_ptr[-1])
            sum_low = np.empty(n_ent, np.uint8)
            # group-relative offsets: 2 bytes while a group holds < 64 Ki entries (all but huge summaries)
            dir_dtype = np.uint16 if grp_ent.size == 0 or grp_ent.max() <= np.iinfo(np.uint16).max else np.uint32
            sum_dir = np.empty((int(term_grp_ptr[-1]), K.n_buckets(dim) + 1), dir_dtype)
            sum_blk = np.empty(n_ent, np.uint8)
            sum_code = np.empty(n_ent, np.uint8)
            K.summaries_fill(term_ptr, rows, n_blocks, blk_size, cap_ptr, term_blk_ptr, term_grp_ptr, grp_ptr,
                             fwd_ptr, fwd_comp, vals, dim, s_items, s_wptr, blk_thr, blk_ties, blk_min, blk_quant,
                             sum_low, sum_dir, sum_blk, sum_code)
            del blk_thr, blk_ties
            # a term's entries in a group are contiguous: its low byte once, with their count
            sum_term, sum_tdir, grp_tptr = K.summary_terms(grp_ptr, sum_low, sum_dir)
            del sum_low
            post_off, post_len = _postings(fwd_ptr, rows)
            bar.next()
        arrays = {
            "fwd_ptr": fwd_ptr, "fwd_comp": fwd_comp, "fwd_val": fwd_val,
            "term_blk_ptr": term_blk_ptr, "blk_ptr": blk_ptr, "post_off": post_off, "post_len": post_len,
            "term_grp_ptr": term_grp_ptr, "grp_ptr": grp_ptr, "sum_term": sum_term, "sum_tdir": sum_tdir,
            "grp_tptr": grp_tptr, "sum_dir": sum_dir,
            "sum_blk": sum_blk,
            "sum_code": sum_code, "blk_min": blk_min, "blk_quant": blk_quant,
            "knn": np.full((0, 0), -1, np.int32),
            "tail_ptr": np.zeros(1, np.int64), "tail_comp": np.zeros(0, comp_dtype), "tail_val": np.zeros(0, np.uint16),
        }
        index = cls(arrays, dim, params, idmap, np.zeros(len(docs), np.uint8))
        index.vocab = docs.vocab
        if nknn:
            index._build_knn(nknn, knn_query_cut, knn_heap_factor, nthreads)
            bar.next()
        bar.close()
        index.build_seconds = bar.seconds
        log.info("built SeismicIndex: %d docs, %d postings, %d blocks, %d summary entries in %.2fs (%s; stages %s)",
                 len(docs), rows.shape[0], n_tot_blocks, n_ent, time.perf_counter() - t0, params,
                 ", ".join(f"{k} {v:.2f}s" for k, v in bar.seconds.items()))
        return index

    def _build_knn(self, nknn: int, query_cut: int, heap_factor: float, nthreads: int) -> None:
        a = self._a
        n = self._n_main
        q_val = K.F16_TABLE[a["fwd_val"]]
        k = min(nknn + 1, n)
        scores, rows = self._run(a["fwd_ptr"], a["fwd_comp"].astype(np.int32), q_val, k, query_cut, heap_factor,
                                 True, 0, nthreads)
        knn = np.full((n, nknn), -1, np.int32)
        for i in range(n):  # drop the document itself
            r = rows[i][(rows[i] != i) & (rows[i] >= 0)][:nknn]
            knn[i, : r.size] = r
        a["knn"] = knn
        self._changed()

    # ------------------------------------------------------------------ search
    def search(self, queries: SparseBatch, k: int = 10, *, query_cut: int | None = None,
               heap_factor: float | None = None, n_knn: int | None = None, sorted_blocks: bool | None = None,
               threads: int | None = None, allowed: np.ndarray | None = None,
               exact_below: float = FILTER_EXACT_FRACTION) -> Hits:
        """Top-``k`` documents per query; the knobs are :class:`SearchParams` (``None``: default).

        One query, or ``threads=1``, runs the single-thread low-latency path; a batch runs on
        ``threads`` threads (default: all). Empty batch: (0, k) arrays; a query with no terms, or
        fewer than ``k`` matches: the row is padded with -1 / -inf.

        ``allowed`` (bool per row, e.g. :meth:`lsr.index.filter.MetadataTable.mask`) restricts the
        search to those documents: the top-``k`` among them, not a post-filtered top-``k``. When at
        most ``exact_below`` of the live documents are allowed they are scored exactly on the
        forward index; otherwise the Seismic search skips the others (block summaries still bound
        the allowed documents) and opens ``query_cut / sqrt(allowed share)`` query terms, and a
        query left with fewer than ``k`` hits is answered exactly.
        """
        # cheap checks first: an already-validated SparseBatch and a plain int k take no further
        # validation, and the knobs' check is cached (the single-query latency is a few microseconds)
        if type(queries) is not SparseBatch or queries.dim != self.dim:
            queries = coerce_queries(queries, self.dim)
        if type(k) is not int or k <= 0:
            k = check_k(k)
        p = search_params(query_cut, heap_factor, n_knn, sorted_blocks)
        if p.n_knn and self._a["knn"].shape[1] == 0:
            raise ValueError(f"n_knn={p.n_knn} needs an index built with nknn > 0 (this one has no kNN graph)")
        if queries.indptr.shape[0] == 1:
            return self._empty_hits(k)
        if allowed is not None:
            return self._search_allowed(queries, k, p, resolve_threads(threads), allowed, exact_below)
        # one query runs on the calling thread whatever ``threads`` says (a valid value is not
        # resolved: reading Numba's thread count costs several microseconds, a tenth of a query)
        if queries.indptr.shape[0] == 2 and (threads is None or (type(threads) is int and threads > 0)):
            nthreads = 1
        else:
            nthreads = resolve_threads(threads)
        scores, rows = self._run(queries.indptr, queries.indices, queries.values, k, p.query_cut, p.heap_factor,
                                 p.sorted_blocks, p.n_knn, nthreads)
        return Hits(self._idmap.lookup(rows), scores, rows)

    def _search_allowed(self, queries: SparseBatch, k: int, p: SearchParams, nthreads: int, allowed: np.ndarray,
                        exact_below: float) -> Hits:
        allowed = check_allowed(allowed, self.n_rows)
        if not 0.0 <= exact_below <= 1.0:
            raise ValueError(f"exact_below must be in [0, 1], got {exact_below!r}")
        live = allowed & (np.asarray(self._deleted) == 0)
        rows_ok = np.flatnonzero(live)
        if rows_ok.size <= exact_below * len(self):
            scores, rows = self._run_rows(queries, k, rows_ok, nthreads)
            return Hits(self._idmap.lookup(rows), scores, rows)
        # the kernels skip a row whose "deleted" byte is set: pass the rows outside the filter as such
        skip = (~live).view(np.uint8)
        # the filtered top-k lies deeper in the posting lists (about the unfiltered top k/share):
        # open more of the query's terms, 1/sqrt(share) as many (2x at a quarter allowed)
        share = rows_ok.size / max(1, len(self))
        query_cut = min(2**31 - 1, int(np.ceil(p.query_cut / np.sqrt(share))))
        scores, rows = self._run(queries.indptr, queries.indices, queries.values, k, query_cut, p.heap_factor,
                                 p.sorted_blocks, p.n_knn, nthreads, deleted=skip)
        short = np.flatnonzero(rows[:, -1] < 0)
        if short.size and rows_ok.size > 0:
            # a query that found fewer than k allowed documents: the exact answer fills the holes
            # (it may hold more hits, never fewer)
            es, er = self._run_rows(queries[short], k, rows_ok, nthreads)
            scores[short], rows[short] = es, er
        return Hits(self._idmap.lookup(rows), scores, rows)

    def _run_rows(self, queries: SparseBatch, k: int, rows_ok: np.ndarray, nthreads: int
                  ) -> tuple[np.ndarray, np.ndarray]:
        """Exact top-k over ``rows_ok`` (ascending int64), scored on the forward index."""
        a = self._a
        q_idx = np.ascontiguousarray(queries.indices, np.int32)
        q_val = np.ascontiguousarray(queries.values, np.float32)
        args = (_plain(a["fwd_ptr"]), _plain(a["fwd_comp"]), _plain(a["fwd_val"]), K.F16_TABLE, _plain(a["tail_ptr"]),
                _plain(a["tail_comp"]), _plain(a["tail_val"]), self._n_main)
        nq = len(queries)
        if nthreads == 1 or nq == 1:
            sc = self._take_scratch()
            try:
                serial: Callable[..., tuple[np.ndarray, np.ndarray]] = K.rows_search_serial  # see _run
                return serial(queries.indptr, q_idx, q_val, k, rows_ok, *args, sc[0])
            finally:
                self._local.scratch = sc
        n_chunks = min(nq, 4 * nthreads)
        with parallel_section(nthreads):
            parallel: Callable[..., tuple[np.ndarray, np.ndarray]] = K.rows_search_parallel
            return parallel(queries.indptr, q_idx, q_val, k, rows_ok, *args, self.dim, n_chunks)

    def _run(self, q_ptr: np.ndarray, q_idx: np.ndarray, q_val: np.ndarray, k: int, query_cut: int, heap_factor: float,
             sort_blocks: bool, n_knn: int, nthreads: int, deleted: np.ndarray | None = None
             ) -> tuple[np.ndarray, np.ndarray]:
        if q_idx.dtype != np.int32 or not q_idx.flags.c_contiguous:
            q_idx = np.ascontiguousarray(q_idx, np.int32)
        if q_val.dtype != np.float32 or not q_val.flags.c_contiguous:
            q_val = np.ascontiguousarray(q_val, np.float32)
        arrays = self._kernel_args
        if arrays is None:
            a = self._a
            # memory-mapped arrays are passed as plain ndarray views of the same memory: Numba
            # unboxes an exact ndarray on its fast path, a np.memmap subclass costs ~0.3 us more each
            arrays = self._kernel_args = tuple(_plain(x) for x in (
                a["term_blk_ptr"], a["blk_ptr"], a["post_off"], a["post_len"], a["term_grp_ptr"], a["grp_ptr"],
                a["sum_term"], a["sum_tdir"], a["grp_tptr"], a["sum_dir"], a["sum_blk"], a["sum_code"], a["blk_min"], a["blk_quant"], a["fwd_ptr"],
                a["fwd_comp"], a["fwd_val"], K.F16_TABLE)) + (len(self) < self.n_rows, _plain(self._deleted)) + tuple(
                _plain(x) for x in (a["tail_ptr"], a["tail_comp"], a["tail_val"], self._n_main, self._knn_arg()))
        if deleted is not None:  # a filtered search: its own skip mask in the tombstones' place
            arrays = arrays[:18] + (True, deleted) + arrays[20:]
        nq = q_ptr.shape[0] - 1
        if nthreads == 1 or nq == 1:
            sc = self._take_scratch()
            if sc[3] + nq >= 2**31 - 1:
                sc[1][:] = 0
                sc[3] = 1
            sv0 = sc[3]
            sc[3] += nq
            # mypy maps a *tuple of unknown length onto every remaining parameter, so a call with
            # arguments after *arrays goes through an untyped alias (the kernels' own bodies are typed)
            serial: Callable[..., tuple[np.ndarray, np.ndarray]] = K.seismic_search_serial
            scores, rows = serial(q_ptr, q_idx, q_val, k, query_cut, np.float32(heap_factor), sort_blocks, n_knn,
                                  *arrays, sc[0], sc[1], np.int32(sv0), sc[2], sc[4])
            self._local.scratch = sc
            return scores, rows
        n_chunks = min(nq, 4 * nthreads)
        with parallel_section(nthreads):
            parallel: Callable[..., tuple[np.ndarray, np.ndarray]] = K.seismic_search_parallel  # as above
            scores, rows = parallel(q_ptr, q_idx, q_val, k, query_cut, np.float32(heap_factor), sort_blocks, n_knn,
                                    *arrays, self.dim, self._max_blocks, n_chunks)
        return scores, rows

    def _take_scratch(self) -> list[Any]:
        """This thread's search scratch [dense query, pushed-row stamps (k > 32), block scores, next stamp],
        reused between calls so a single query pays no O(collection) allocation."""
        sc = getattr(self._local, "scratch", None)
        self._local.scratch = None  # not shared while in use (re-entrancy)
        if sc is None or sc[1].shape[0] != self.n_rows or sc[2].shape[0] < max(self._max_blocks, 1):
            nb = max(self._max_blocks, 1)
            sc = [np.zeros(self.dim, np.float32), np.zeros(self.n_rows, np.int32), np.empty(nb, np.float32), 1,
                  np.empty(nb, np.int64)]
        return sc

    def _knn_arg(self) -> np.ndarray:
        knn = self._a["knn"]
        return knn if knn.shape[0] else np.full((1, 1), -1, np.int32)

    # ------------------------------------------------------------------ documents
    def get(self, ids: OneId | Sequence[Any] | np.ndarray) -> SparseBatch:
        """Stored vectors (float16-rounded, as scored) of live documents, in the order asked."""
        rows = self.rows_of(ids)
        a = self._a
        ptr = [0]
        comp, val = [], []
        for r in rows.tolist():
            if r < self._n_main:
                s, e = a["fwd_ptr"][r], a["fwd_ptr"][r + 1]
                c, v = a["fwd_comp"][s:e], a["fwd_val"][s:e]
            else:
                i = r - self._n_main
                s, e = a["tail_ptr"][i], a["tail_ptr"][i + 1]
                c, v = a["tail_comp"][s:e], a["tail_val"][s:e]
            comp.append(np.asarray(c, np.int32))
            val.append(K.F16_TABLE[v])
            ptr.append(ptr[-1] + (e - s))
        if not comp:
            return SparseBatch.empty(0, self.dim)
        return SparseBatch(np.asarray(ptr, np.int64), np.concatenate(comp), np.concatenate(val), self.dim)

    def add(self, docs: SparseBatch, ids: IdsLike = None) -> None:
        """Add documents without a rebuild: they are scored exhaustively at query time until the
        index is rebuilt (see :meth:`rebuild`), so results equal a rebuild's up to pruning."""
        docs = check_docs(docs, self.dim)
        if len(docs) == 0:
            return
        self._extend_ids(ids, len(docs))
        a = self._a
        bits = K.to_f16_bits(docs.values)
        keep = K.F16_TABLE[bits] > 0
        rows_of = np.repeat(np.arange(len(docs)), np.diff(docs.indptr))
        counts = np.bincount(rows_of[keep], minlength=len(docs))
        base = int(a["tail_ptr"][-1])
        a["tail_ptr"] = np.concatenate([np.asarray(a["tail_ptr"]), base + np.cumsum(counts)]).astype(np.int64)
        a["tail_comp"] = np.concatenate([np.asarray(a["tail_comp"]), docs.indices[keep].astype(a["fwd_comp"].dtype)])
        a["tail_val"] = np.concatenate([np.asarray(a["tail_val"]), bits[keep]])
        self._changed()

    def rebuild(self, **overrides: Any) -> "SeismicIndex":
        """A new index over the live documents (same ids and parameters unless overridden)."""
        live = np.nonzero(np.asarray(self._deleted) == 0)[0]
        ids = self._idmap.ext[live]
        docs = self.get(ids.tolist() if self._idmap.kind == "str" else ids)
        params = asdict(self.params)
        params.update(overrides)
        new = type(self).build(docs.with_vocab(self.vocab), ids.tolist() if self._idmap.kind == "str" else ids, **params)
        return new

    def summary_entries(self) -> dict[str, np.ndarray]:
        """The block summaries as flat arrays, independent of the packed layout (for the GPU path
        and analysis): ``term_blk_ptr`` (dim+1), ``blk_ptr`` (blocks+1, into ``post_rows``),
        ``post_rows`` (rebuilt from the postings' forward-index offsets), ``term_ent_ptr`` (dim+1,
        into the entry arrays), and per entry ``comp``
        (int32 term id), ``block`` (int64 global block id) and ``value`` (float32, dequantised
        exactly as the search kernel reads it). Entries of a term are contiguous."""
        a = self._a
        tbp = np.asarray(a["term_blk_ptr"], np.int64)
        tgp = np.asarray(a["term_grp_ptr"], np.int64)
        gp = np.asarray(a["grp_ptr"], np.int64)
        n_grp = int(tgp[-1])
        term_of_grp = np.repeat(np.arange(self.dim, dtype=np.int64), np.diff(tgp))
        first_blk = tbp[term_of_grp] + K.GROUP * (np.arange(n_grp, dtype=np.int64) - tgp[term_of_grp])
        block = np.repeat(first_blk, np.diff(gp)) + np.asarray(a["sum_blk"], np.int64)
        code = np.asarray(a["sum_code"]).astype(np.float32)
        value = (np.asarray(a["blk_min"])[block] + code * np.asarray(a["blk_quant"])[block]).astype(np.float32)
        return {
            "term_blk_ptr": tbp, "blk_ptr": np.asarray(a["blk_ptr"], np.int64), "post_rows": self.post_rows(),
            "term_ent_ptr": gp[tgp], "comp": K.summary_comps(a["sum_term"], a["sum_tdir"]).astype(np.int32), "block": block, "value": value,
        }

    def post_rows(self) -> np.ndarray:
        """The row of every posting (int32 or int64), in posting order: the postings store the
        document's forward-index offset, and offset order is row order (rebuilt, not stored)."""
        a = self._a
        fwd_ptr = np.asarray(a["fwd_ptr"])
        rows = np.searchsorted(fwd_ptr, np.asarray(a["post_off"]), side="right") - 1
        return rows.astype(np.int32 if self._n_main < 2**31 else np.int64)

    # ------------------------------------------------------------------ info
    def stats(self) -> dict[str, Any]:
        a = self._a
        nbytes = {name: int(np.asarray(arr).nbytes) for name, arr in a.items()}
        nbytes["deleted"] = int(np.asarray(self._deleted).nbytes)
        total = sum(nbytes.values())
        nnz = int(a["fwd_ptr"][-1] + a["tail_ptr"][-1])
        nb = int(a["term_blk_ptr"][-1])
        return {
            "kind": self.kind,
            "docs": len(self),
            "rows": self.n_rows,
            "deleted": self.n_rows - len(self),
            "unindexed": self.n_rows - self._n_main,
            "dim": self.dim,
            "nnz": nnz,
            "postings": int(a["post_off"].shape[0]),
            "blocks": nb,
            "summary_entries": int(a["sum_code"].shape[0]),
            "knn": int(a["knn"].shape[1]) if a["knn"].shape[0] else 0,
            "params": asdict(self.params),
            "bytes": nbytes,
            "bytes_total": total,
            "bytes_per_component": total / max(nnz, 1),
        }

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | Path) -> Path:
        """Write the index folder (manifest + arrays with checksums); load with :meth:`load`."""
        arrays = {name: np.asarray(arr) for name, arr in self._a.items()}
        arrays["deleted"] = np.asarray(self._deleted)
        arrays["ids"] = self._idmap.to_array()
        arrays.update(self._vocab_arrays())
        counts = {"rows": self.n_rows, "docs": len(self), "main_rows": self._n_main, "dim": self.dim,
                  "nnz": int(self._a["fwd_ptr"][-1] + self._a["tail_ptr"][-1]), "blocks": int(self._a["term_blk_ptr"][-1])}
        return save_folder(path, self.kind, asdict(self.params), counts, arrays, {"id_kind": self._idmap.kind})

    @classmethod
    def _from_arrays(cls, path: str | Path, manifest: dict[str, Any], a: dict[str, np.ndarray]) -> "SeismicIndex":
        if "sum_low" not in a and "sum_comp" in a:
            a = _compact_format1(Path(path), a, int(manifest["counts"]["dim"]))
        if "post_off" not in a and "post_rows" in a:
            a = _postings_format2(Path(path), a)
        if "sum_term" not in a and "sum_low" in a:
            a = _terms_format3(Path(path), a)
        missing = [n for n in _MAIN_ARRAYS + _TAIL_ARRAYS + ("deleted", "ids") if n not in a]
        if missing:
            raise IndexFormatError(f"{Path(path) / 'manifest.json'}: lists no array {missing[0]!r}")
        dim = int(manifest["counts"]["dim"])
        try:
            # folders written before ``refine`` existed were clustered in one pass
            params = SeismicParams(**{"refine": 0, **manifest["params"]})
        except TypeError as exc:
            raise IndexFormatError(f"{Path(path) / 'manifest.json'}: bad params ({exc})") from None
        _check_structure(Path(path), a, dim)
        idmap = IdMap.from_array(a["ids"], manifest.get("id_kind", "int"))
        arrays = {n: a[n] for n in _MAIN_ARRAYS}
        for n in _TAIL_ARRAYS:
            arrays[n] = np.array(a[n])  # small and growable
        index = cls(arrays, dim, params, idmap, np.array(a["deleted"]))
        index.vocab = _load_vocab(path, a, dim)
        return index


def _check_structure(folder: Path, a: dict[str, np.ndarray], dim: int) -> None:
    """Cheap consistency checks: a folder that passes cannot make a kernel read out of bounds."""

    def bad(name: str, why: str) -> NoReturn:
        raise IndexFormatError(f"{folder / (name + '.npy')}: {why}")

    n_main = a["fwd_ptr"].shape[0] - 1
    n_tail = a["tail_ptr"].shape[0] - 1
    n = n_main + n_tail
    for name, ptr, data in (("fwd_ptr", a["fwd_ptr"], a["fwd_comp"]), ("tail_ptr", a["tail_ptr"], a["tail_comp"])):
        if ptr.shape[0] < 1 or ptr[0] != 0 or ptr[-1] != data.shape[0] or (ptr.shape[0] > 1 and np.any(np.diff(ptr) < 0)):
            bad(name, "offsets do not match their data")
    if a["fwd_val"].shape != a["fwd_comp"].shape or a["tail_val"].shape != a["tail_comp"].shape:
        bad("fwd_val", "values and components differ in length")
    for name in ("fwd_comp", "tail_comp"):
        if a[name].size and int(a[name].max()) >= dim:
            bad(name, f"term id out of range for dim {dim}")
    if a["deleted"].shape[0] != n or a["ids"].shape[0] != n:
        bad("deleted", f"row count differs from the forward index ({n})")
    tbp, bp = a["term_blk_ptr"], a["blk_ptr"]
    if tbp.shape[0] != dim + 1 or np.any(np.diff(tbp) < 0) or tbp[0] != 0:
        bad("term_blk_ptr", "does not match dim")
    nb = int(tbp[-1])
    po, pl = a["post_off"], a["post_len"]
    if (bp.dtype.kind not in "iu" or bp.shape[0] != nb + 1 or bp[0] != 0 or bp[-1] != po.shape[0]
            or np.any(bp[1:] < bp[:-1])):
        bad("blk_ptr", "does not match the posting lists")
    if po.dtype.kind not in "iu" or pl.dtype.kind not in "iu" or pl.shape != po.shape:
        bad("post_len", "does not match post_off")
    if po.size and (int(po.min()) < 0 or int(pl.min()) < 0
                    or int((np.asarray(po, np.int64) + np.asarray(pl, np.int64)).max()) > int(a["fwd_ptr"][-1])):
        # (a wrong but in-range offset gives wrong scores, never a read out of bounds; the
        # checksums are what catch a corrupt file)
        bad("post_off", "offset out of range")
    tgp, gp = a["term_grp_ptr"], a["grp_ptr"]
    n_groups = (np.diff(tbp) + K.GROUP - 1) // K.GROUP
    if tgp.shape[0] != dim + 1 or tgp[0] != 0 or np.any(np.diff(tgp) != n_groups):
        bad("term_grp_ptr", "does not match the block counts")
    n_ent = a["sum_code"].shape[0]
    if gp.shape[0] != int(tgp[-1]) + 1 or gp[0] != 0 or gp[-1] != n_ent or np.any(np.diff(gp) < 0):
        bad("grp_ptr", "does not match sum_code")
    if a["sum_blk"].shape != (n_ent,):
        bad("sum_blk", "length differs from sum_code")
    # the directory bounds every entry a query term's bucket can reach (a term id is never an index)
    sd = a["sum_dir"]
    if (sd.dtype.kind != "u" or sd.shape != (int(tgp[-1]), K.n_buckets(dim) + 1)
            or not _directory_ok(sd, np.diff(gp))):
        bad("sum_dir", "does not match the summary groups")
    # the distinct terms' counts must add up to each bucket's entries (the kernel walks entries by them)
    st, td, tp = a["sum_term"], a["sum_tdir"], a["grp_tptr"]
    n_grp = int(tgp[-1])
    if (tp.shape != (n_grp + 1,) or tp[0] != 0 or tp[-1] != st.shape[0] or np.any(np.diff(tp) < 0)
            or st.dtype != np.uint16):
        bad("grp_tptr", "does not match sum_term")
    if td.dtype.kind != "u" or td.shape != sd.shape or not _directory_ok(td, np.diff(tp)):
        bad("sum_tdir", "does not match the summary groups")
    if td.size:
        nbk = td.shape[1] - 1
        per_term: np.ndarray = np.diff(np.asarray(td, np.int64), axis=1).ravel()
        bucket = np.repeat(np.arange(n_grp * nbk, dtype=np.int64), per_term)
        per_bucket = np.bincount(bucket, weights=(np.asarray(st, np.int64) >> K.BUCKET_BITS) + 1, minlength=n_grp * nbk)
        if not np.array_equal(per_bucket.astype(np.int64), np.diff(np.asarray(sd, np.int64), axis=1).ravel()):
            bad("sum_term", "entry counts do not match sum_dir")
    if a["blk_min"].shape[0] != nb or a["blk_quant"].shape[0] != nb:
        bad("blk_min", "length differs from the block count")
    if a["sum_blk"].size and gp.shape[0] > 1:
        # a group's block ids must stay inside the group's blocks
        gsize = np.minimum(K.GROUP, np.diff(tbp)[np.repeat(np.arange(dim), np.diff(tgp))]
                           - K.GROUP * (np.arange(int(tgp[-1])) - np.repeat(tgp[:-1], np.diff(tgp))))
        gmax = np.maximum.reduceat(np.asarray(a["sum_blk"]), gp[:-1][np.diff(gp) > 0])
        if np.any(gmax >= gsize[np.diff(gp) > 0]):
            bad("sum_blk", "block id out of range")
    knn = a["knn"]
    if knn.ndim != 2 or (knn.shape[0] and (knn.shape[0] != n_main or int(knn.max()) >= n_main)):
        bad("knn", "does not match the forward index")


def _compact_format1(folder: Path, a: dict[str, np.ndarray], dim: int) -> dict[str, np.ndarray]:
    """Arrays of a format-1 folder (full 2-byte term ids per summary entry, ``sum_comp``) in the
    compact layout (``sum_low`` + ``sum_dir``), converted in memory; the folder is not rewritten."""
    gp, comps = np.asarray(a["grp_ptr"]), np.asarray(a["sum_comp"])
    if gp.shape[0] < 1 or gp[0] != 0 or gp[-1] != comps.shape[0] or np.any(np.diff(gp) < 0):
        raise IndexFormatError(f"{folder / 'grp_ptr.npy'}: does not match sum_comp")
    if comps.size and int(comps.max()) >= dim:
        raise IndexFormatError(f"{folder / 'sum_comp.npy'}: term id out of range for dim {dim}")
    starts = np.zeros(comps.shape[0], bool)
    starts[gp[:-1][np.diff(gp) > 0]] = True
    if np.any((np.diff(comps.astype(np.int64)) < 0) & ~starts[1:]):
        raise IndexFormatError(f"{folder / 'sum_comp.npy'}: entries not sorted by term inside a group")
    out = {n: v for n, v in a.items() if n != "sum_comp"}
    out["sum_low"], out["sum_dir"] = K.summary_directory(gp, comps, dim)
    log.info("%s: format-1 summaries converted to the compact layout in memory (save the index to rewrite it)", folder)
    return out


def _directory_ok(d: np.ndarray, totals: np.ndarray) -> bool:
    """Whether ``d`` (one row per summary group) is a group directory: each row starts at 0, never
    decreases and ends at the group's total (its entries, or its distinct terms)."""
    if d.ndim != 2 or d.shape[0] != totals.shape[0]:
        return False
    return not d.size or bool(np.all(d[:, 0] == 0) and np.all(d[:, 1:] >= d[:, :-1]) and np.all(d[:, -1] == totals))


def _terms_format3(folder: Path, a: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Arrays of a format-3 folder (one term low byte per summary entry, ``sum_low``) with each group's
    distinct terms once (``sum_term``, ``sum_tdir``, ``grp_tptr``), converted in memory."""
    gp, low, sd = np.asarray(a["grp_ptr"], np.int64), np.asarray(a["sum_low"]), np.asarray(a["sum_dir"])
    if (gp.shape[0] < 1 or gp[0] != 0 or gp[-1] != low.shape[0] or sd.ndim != 2 or sd.shape[0] != gp.shape[0] - 1
            or not _directory_ok(sd, np.diff(gp))):
        raise IndexFormatError(f"{folder / 'sum_dir.npy'}: does not match sum_low")
    out = {n: v for n, v in a.items() if n != "sum_low"}
    out["sum_term"], out["sum_tdir"], out["grp_tptr"] = K.summary_terms(gp, low, sd)
    log.info("%s: format-3 summaries converted to distinct terms in memory (save the index to rewrite it)", folder)
    return out


def _postings(fwd_ptr: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Postings by row -> (forward-index offset, length): 4 + 2 bytes while the forward index
    holds < 4 Gi entries and no document has 64 Ki entries or more."""
    fwd_ptr = np.asarray(fwd_ptr, np.int64)
    rows = np.asarray(rows, np.int64)
    off = fwd_ptr[rows]
    length = fwd_ptr[rows + 1] - off
    off_dtype = np.uint32 if fwd_ptr[-1] < 2**32 else np.int64
    len_dtype = np.uint16 if length.size == 0 or int(length.max()) < 2**16 else np.int32
    return off.astype(off_dtype), length.astype(len_dtype)


def _postings_format2(folder: Path, a: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Arrays of a format-2 folder (postings by row, ``post_rows``) with postings by forward-index
    offset and length, converted in memory; the folder is not rewritten."""
    rows, fwd_ptr = np.asarray(a["post_rows"]), np.asarray(a["fwd_ptr"])
    if rows.size and (rows.dtype.kind not in "iu" or int(rows.min()) < 0 or int(rows.max()) >= fwd_ptr.shape[0] - 1):
        raise IndexFormatError(f"{folder / 'post_rows.npy'}: row out of range")
    out = {n: v for n, v in a.items() if n != "post_rows"}
    out["post_off"], out["post_len"] = _postings(fwd_ptr, rows)
    log.info("%s: format-2 postings (rows) converted to forward-index offsets in memory (save the index to "
             "rewrite it)", folder)
    return out


class _Stages:
    """A tqdm bar over named build stages (silent unless asked)."""

    def __init__(self, names: list[str], enabled: bool):
        self.names = names
        self.bar: Any = None  # a tqdm bar
        if enabled:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=len(names), desc=f"seismic: {names[0]}", unit="stage")
        self.i = 0
        self.seconds: dict[str, float] = {}  # wall seconds per finished stage
        self._t = time.perf_counter()

    def next(self) -> None:
        now = time.perf_counter()
        self.seconds[self.names[self.i]] = now - self._t
        self._t = now
        self.i += 1
        if self.bar is not None:
            self.bar.update(1)
            if self.i < len(self.names):
                self.bar.set_description(f"seismic: {self.names[self.i]}")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
