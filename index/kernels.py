"""Numba kernels of lsr.index: exact scoring, Seismic build (pruning, clustering, summaries) and search.

Plain functions over arrays, no Python objects in hot loops. Each kernel has a pure-NumPy
reference (``*_ref``) beside it; the tests compare the two on small data.

Conventions shared by every kernel:
- a hit is a document with score > 0; rows are int64 internally (int32 in posting arrays);
- ties are broken by row ascending, so results are deterministic;
- forward-index values are IEEE half precision stored as their uint16 bit patterns and decoded
  through a 65,536-entry float32 table (Numba has no float16 arithmetic on the CPU).
"""

from __future__ import annotations

from typing import Any, Callable, TypeVar, cast

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

# float16 bit pattern -> float32 value; 256 KiB, stays in L2 during search.
F16_TABLE = np.arange(65536, dtype=np.uint16).view(np.float16).astype(np.float32)
# partial sums of a forward-index dot product: the vector width of _dot_lanes
DOT_LANES = 8

_NJ: dict[str, Any] = dict(cache=True, nogil=True)
_F = TypeVar("_F", bound=Callable[..., Any])
# Scalar arguments as the kernels receive them: Python numbers or NumPy scalars (Numba takes both).
Int = int | np.integer[Any]
Float = float | np.floating[Any]
Bool = bool | np.bool_


def _njit(**options: Any) -> Callable[[_F], _F]:
    """``numba.njit`` with lsr's options (``cache``, ``nogil``), typed: Numba's decorator is
    unannotated, so mypy would otherwise see every kernel as untyped. The dispatcher Numba returns
    is called with the kernel's own arguments, which is what the kernel's signature says."""
    jit: Callable[..., Any] = njit
    return cast(Callable[[_F], _F], jit(**_NJ, **options))


def to_f16_bits(values: np.ndarray) -> np.ndarray:
    """float32 values -> float16 bit patterns (uint16), rounding to nearest."""
    return np.ascontiguousarray(values, dtype=np.float32).astype(np.float16).view(np.uint16)


# ---------------------------------------------------------------------------------------- heap
# A bounded min-heap over (score, row) where the root is the *worst* kept hit: lower score, or
# equal score and larger row. Arrays hs (float32) / hr (int64) of length k.


@_njit(inline="always")
def _worse(s1: Float, r1: Int, s2: Float, r2: Int) -> Bool:
    return s1 < s2 or (s1 == s2 and r1 > r2)


@_njit(inline="always")
def _swap(hs: np.ndarray, hr: np.ndarray, i: Int, j: Int) -> None:
    ts = hs[i]
    tr = hr[i]
    hs[i] = hs[j]
    hr[i] = hr[j]
    hs[j] = ts
    hr[j] = tr


@_njit()
def heap_push(hs: np.ndarray, hr: np.ndarray, size: Int, k: Int, s: Float, r: Int) -> Int:
    """Offer (s, r); returns the new size. Keeps the k best by (score desc, row asc)."""
    if size < k:
        i = size
        hs[i] = s
        hr[i] = r
        while i > 0:
            p = (i - 1) >> 1
            if _worse(hs[i], hr[i], hs[p], hr[p]):
                _swap(hs, hr, i, p)
                i = p
            else:
                break
        return size + 1
    if not _worse(hs[0], hr[0], s, r):
        return size
    hs[0] = s
    hr[0] = r
    _sift_down(hs, hr, size)
    return size


@_njit(inline="always")
def _sift_down(hs: np.ndarray, hr: np.ndarray, size: Int) -> None:
    """Restore the heap (worst at the root) after its root was replaced."""
    i = 0
    while True:
        left = 2 * i + 1
        if left >= size:
            break
        c = left
        right = left + 1
        if right < size and _worse(hs[right], hr[right], hs[left], hr[left]):
            c = right
        if _worse(hs[c], hr[c], hs[i], hr[i]):
            _swap(hs, hr, i, c)
            i = c
        else:
            break


@_njit()
def heap_pop(hs: np.ndarray, hr: np.ndarray, size: Int) -> Int:
    """Remove the root (worst); returns the new size (the removed pair is left at hs[size])."""
    last = size - 1
    _swap(hs, hr, 0, last)
    size = last
    _sift_down(hs, hr, size)
    return size


@_njit()
def heap_drain(hs: np.ndarray, hr: np.ndarray, size: Int, out_s: np.ndarray, out_r: np.ndarray) -> None:
    """Write the heap's hits best-first into out_s/out_r (rest: -inf / -1)."""
    k = out_s.shape[0]
    for i in range(k):
        out_s[i] = -np.inf
        out_r[i] = -1
    n = size
    while n > 0:
        n = heap_pop(hs, hr, n)
        out_s[n] = hs[n]
        out_r[n] = hr[n]


def topk_ref(scores: np.ndarray, k: int, deleted: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """NumPy reference: top-k of a dense score vector (hits need score > 0), ties by row asc."""
    scores = np.asarray(scores, np.float32)
    ok = scores > 0
    if deleted is not None:
        ok &= ~deleted.astype(bool)
    rows = np.nonzero(ok)[0]
    order = np.lexsort((rows, -scores[rows]))[:k]
    out_s = np.full(k, -np.inf, np.float32)
    out_r = np.full(k, -1, np.int64)
    out_s[: order.size] = scores[rows[order]]
    out_r[: order.size] = rows[order]
    return out_s, out_r


# ---------------------------------------------------------------------------------------- exact
@_njit()
def _exact_one(q_idx: np.ndarray, q_val: np.ndarray, k: Int, inv_ptr: np.ndarray, inv_rows: np.ndarray,
               inv_vals: np.ndarray, deleted: np.ndarray, acc: np.ndarray, seen: np.ndarray, touched: np.ndarray,
               hs: np.ndarray, hr: np.ndarray, out_s: np.ndarray, out_r: np.ndarray) -> None:
    nt = 0
    for j in range(q_idx.shape[0]):
        t = q_idx[j]
        qv = q_val[j]
        for p in range(inv_ptr[t], inv_ptr[t + 1]):
            d = inv_rows[p]
            if seen[d] == 0:
                seen[d] = 1
                touched[nt] = d
                nt += 1
            acc[d] += qv * inv_vals[p]
    size: Int = 0
    for i in range(nt):
        d = touched[i]
        s = acc[d]
        acc[d] = 0.0
        seen[d] = 0
        if s > 0 and deleted[d] == 0:
            size = heap_push(hs, hr, size, k, s, np.int64(d))
    heap_drain(hs, hr, size, out_s, out_r)


@_njit(parallel=True)
def exact_search(q_ptr: np.ndarray, q_idx: np.ndarray, q_val: np.ndarray, k: Int, inv_ptr: np.ndarray,
                 inv_rows: np.ndarray, inv_vals: np.ndarray, deleted: np.ndarray, n_chunks: Int
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k for a batch of CSR queries against a term-major (inverted) copy of the docs.

    Term-at-a-time accumulation in query-term order (ascending term id), so the float32 sums
    equal a doc-at-a-time dot product over ascending terms bit for bit.
    """
    nq = q_ptr.shape[0] - 1
    n_docs = deleted.shape[0]
    out_s = np.empty((nq, k), np.float32)
    out_r = np.empty((nq, k), np.int64)
    chunk = (nq + n_chunks - 1) // n_chunks
    for c in prange(n_chunks):
        acc = np.zeros(n_docs, np.float32)
        seen = np.zeros(n_docs, np.uint8)
        touched = np.empty(n_docs, np.int32)
        hs = np.empty(k, np.float32)
        hr = np.empty(k, np.int64)
        for qi in range(c * chunk, min(nq, (c + 1) * chunk)):
            s, e = q_ptr[qi], q_ptr[qi + 1]
            _exact_one(q_idx[s:e], q_val[s:e], k, inv_ptr, inv_rows, inv_vals, deleted,
                       acc, seen, touched, hs, hr, out_s[qi], out_r[qi])
    return out_s, out_r


@_njit()
def csr_transpose(indptr: np.ndarray, indices: np.ndarray, values: np.ndarray, dim: Int
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """CSR (rows x dim) -> term-major CSR (dim x rows); rows ascending inside each term."""
    n = indptr.shape[0] - 1
    nnz = indices.shape[0]
    cnt = np.zeros(dim + 1, np.int64)
    for p in range(nnz):
        cnt[indices[p] + 1] += 1
    for t in range(dim):
        cnt[t + 1] += cnt[t]
    ptr = cnt.copy()
    pos = cnt[:dim].copy()
    rows = np.empty(nnz, np.int32)
    vals = np.empty(nnz, values.dtype)
    for r in range(n):
        for p in range(indptr[r], indptr[r + 1]):
            t = indices[p]
            q = pos[t]
            rows[q] = r
            vals[q] = values[p]
            pos[t] = q + 1
    return ptr, rows, vals


def exact_search_ref(q_ptr: np.ndarray, q_idx: np.ndarray, q_val: np.ndarray, k: int, d_ptr: np.ndarray,
                     d_idx: np.ndarray, d_val: np.ndarray, dim: int, deleted: np.ndarray | None = None
                     ) -> tuple[np.ndarray, np.ndarray]:
    """NumPy reference for exact_search: dense scores via scipy-free matrix product."""
    nq = q_ptr.shape[0] - 1
    n = d_ptr.shape[0] - 1
    D = np.zeros((n, dim), np.float32)
    D[np.repeat(np.arange(n), np.diff(d_ptr)), d_idx] = d_val
    Q = np.zeros((nq, dim), np.float32)
    Q[np.repeat(np.arange(nq), np.diff(q_ptr)), q_idx] = q_val
    S = Q @ D.T
    out_s = np.empty((nq, k), np.float32)
    out_r = np.empty((nq, k), np.int64)
    for i in range(nq):
        out_s[i], out_r[i] = topk_ref(S[i], k, deleted)
    return out_s, out_r


# ---------------------------------------------------------------------------------------- build
# Every stage runs in parallel: over row ranges (inversion, top components) or over posting lists
# through a schedule (`schedule`) that deals lists, heaviest first, to one worker per thread. Each
# worker allocates its scratch once and reuses it for all its lists: an allocation per list costs
# page faults that serialise the threads (and, on sandboxed kernels, most of the build).


@_njit(inline="always")
def _splitmix(x: np.uint64) -> tuple[np.uint64, np.uint64]:
    x = (x + np.uint64(0x9E3779B97F4A7C15)) & np.uint64(0xFFFFFFFFFFFFFFFF)
    z = x
    z = ((z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)) & np.uint64(0xFFFFFFFFFFFFFFFF)
    z = ((z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)) & np.uint64(0xFFFFFFFFFFFFFFFF)
    return x, z ^ (z >> np.uint64(31))


def schedule(cost: np.ndarray, n_workers: int) -> tuple[np.ndarray, np.ndarray]:
    """Deal items to ``n_workers`` by cost: heaviest first, each to the least-loaded worker
    (greedy LPT). Returns (items grouped by worker, worker offsets); items of zero cost are left out."""
    n_workers = max(1, int(n_workers))
    order = np.argsort(-cost, kind="stable")
    order = order[cost[order] > 0]
    return _deal(order.astype(np.int64), cost.astype(np.float64), n_workers)


@_njit()
def _deal(order: np.ndarray, cost: np.ndarray, n_workers: Int) -> tuple[np.ndarray, np.ndarray]:
    load = np.zeros(n_workers, np.float64)
    owner = np.empty(order.shape[0], np.int64)
    cnt = np.zeros(n_workers + 1, np.int64)
    for i in range(order.shape[0]):
        w = 0
        for j in range(1, n_workers):
            if load[j] < load[w]:
                w = j
        owner[i] = w
        load[w] += cost[order[i]]
        cnt[w + 1] += 1
    for w in range(n_workers):
        cnt[w + 1] += cnt[w]
    out = np.empty(order.shape[0], np.int64)
    pos = cnt[:n_workers].copy()
    for i in range(order.shape[0]):
        out[pos[owner[i]]] = order[i]
        pos[owner[i]] += 1
    return out, cnt


@_njit(parallel=True)
def invert_pruned(fwd_ptr: np.ndarray, fwd_comp: np.ndarray, fwd_val: np.ndarray, dim: Int, lam: Float, cap: Int,
                  n_workers: Int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Inverted lists of the entries with value >= lam, each sorted by value desc (row asc on
    ties) and cut to its ``cap`` largest. Returns (term_ptr, rows int32, values float32)."""
    n = fwd_ptr.shape[0] - 1
    W = max(1, min(n_workers, n))
    # counts per (worker's row range, term), then each worker scatters its rows: rows stay ascending
    cnt = np.zeros((W, dim), np.int64)
    rchunk = (n + W - 1) // W
    for w in prange(W):
        for r in range(w * rchunk, min(n, (w + 1) * rchunk)):
            for p in range(fwd_ptr[r], fwd_ptr[r + 1]):
                if fwd_val[p] >= lam:
                    cnt[w, fwd_comp[p]] += 1
    ptr = np.zeros(dim + 1, np.int64)
    acc = 0
    for t in range(dim):
        ptr[t] = acc
        for w in range(W):
            c = cnt[w, t]
            cnt[w, t] = acc
            acc += c
    ptr[dim] = acc
    rows = np.empty(acc, np.int32)
    vals = np.empty(acc, np.float32)
    for w in prange(W):
        pos = cnt[w]
        for r in range(w * rchunk, min(n, (w + 1) * rchunk)):
            for p in range(fwd_ptr[r], fwd_ptr[r + 1]):
                v = fwd_val[p]
                if v >= lam:
                    t = fwd_comp[p]
                    q = pos[t]
                    rows[q] = r
                    vals[q] = v
                    pos[t] = q + 1
    keep = np.empty(dim + 1, np.int64)
    keep[0] = 0
    maxlen = 0
    for t in range(dim):
        keep[t + 1] = keep[t] + min(ptr[t + 1] - ptr[t], cap)
        maxlen = max(maxlen, ptr[t + 1] - ptr[t])
    out_rows = np.empty(keep[dim], np.int32)
    out_vals = np.empty(keep[dim], np.float32)
    # sort each list on a worker of its own, by a schedule on list length
    cost = np.empty(dim, np.float64)
    for t in range(dim):
        cost[t] = ptr[t + 1] - ptr[t]
    order = np.argsort(-cost, kind="mergesort")
    nz = 0
    while nz < dim and cost[order[nz]] > 0:
        nz += 1
    items, wptr = _deal(order[:nz], cost, n_workers)
    for w in prange(n_workers):
        key = np.empty(maxlen, np.float32)
        for i in range(wptr[w], wptr[w + 1]):
            t = items[i]
            s, e = ptr[t], ptr[t + 1]
            for j in range(e - s):
                key[j] = -vals[s + j]
            o = np.argsort(key[: e - s], kind="mergesort")  # stable: rows stay ascending on ties
            m = keep[t + 1] - keep[t]
            b = keep[t]
            for j in range(m):
                out_rows[b + j] = rows[s + o[j]]
                out_vals[b + j] = vals[s + o[j]]
    return keep, out_rows, out_vals


@_njit(parallel=True)
def top_components(fwd_ptr: np.ndarray, fwd_comp: np.ndarray, fwd_val: np.ndarray, doc_cut: Int
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each row's ``doc_cut`` largest entries (sorted by term id): the rows as clustering sees them."""
    n = fwd_ptr.shape[0] - 1
    ptr = np.zeros(n + 1, np.int64)
    for r in range(n):
        ptr[r + 1] = ptr[r] + min(doc_cut, fwd_ptr[r + 1] - fwd_ptr[r])
    comp = np.empty(ptr[n], np.int32)
    val = np.empty(ptr[n], np.float32)
    for r in prange(n):
        s, e = fwd_ptr[r], fwd_ptr[r + 1]
        m = ptr[r + 1] - ptr[r]
        if e - s <= doc_cut:
            for i in range(m):
                comp[ptr[r] + i] = fwd_comp[s + i]
                val[ptr[r] + i] = fwd_val[s + i]
        else:
            order = np.argsort(-fwd_val[s:e], kind="mergesort")[:m]
            order = np.sort(order)
            for i in range(m):
                comp[ptr[r] + i] = fwd_comp[s + order[i]]
                val[ptr[r] + i] = fwd_val[s + order[i]]
    return ptr, comp, val


@_njit(inline="always")
def _best_centroid(d: Int, t: Int, cut_ptr: np.ndarray, cut_comp: np.ndarray, cut_val: np.ndarray, head: np.ndarray,
                   cnt_c: np.ndarray, cent_of: np.ndarray, cent_val: np.ndarray, score: np.ndarray,
                   touched: np.ndarray, sizes: np.ndarray, min_size: Int) -> int:
    """The centroid (of size >= min_size) with the largest dot product with document d's top
    entries other than term t (t < 0: all of them; ties: lowest id), or -1 when it shares nothing
    with any; scratch left zeroed."""
    nt = 0
    for p in range(cut_ptr[d], cut_ptr[d + 1]):
        c = cut_comp[p]
        h = head[c]
        if c == t or h < 0:
            continue
        v = cut_val[p]
        for q in range(h, h + cnt_c[c]):
            j = cent_of[q]
            if sizes[j] < min_size:
                continue
            if score[j] == 0.0:
                touched[nt] = j
                nt += 1
            score[j] += v * cent_val[q]
    best = -1
    bs = 0.0
    for i in range(nt):
        j = touched[i]
        s = score[j]
        if s > bs or (s == bs and j < best):
            bs = s
            best = j
        score[j] = 0.0
    return best


@_njit(inline="always")
def _best_dense(d: Int, cut_ptr: np.ndarray, cut_comp: np.ndarray, cut_val: np.ndarray, head: np.ndarray,
                cnt_c: np.ndarray, cent_of: np.ndarray, cent_val: np.ndarray, score: np.ndarray, n_cent: Int) -> int:
    """:func:`_best_centroid` for dense centroids (means, which share most terms): the scores
    accumulate without bookkeeping of the centroids touched, and one scan finds the best (largest
    score > 0, ties: lowest id; -1 when none); score[:n_cent] is left zeroed."""
    for p in range(cut_ptr[d], cut_ptr[d + 1]):
        c = cut_comp[p]
        h = head[c]
        if h < 0:
            continue
        v = cut_val[p]
        for q in range(h, h + cnt_c[c]):
            score[cent_of[q]] += v * cent_val[q]
    best = -1
    bs = np.float32(0.0)
    for j in range(n_cent):
        s = score[j]
        if s > bs:
            bs = s
            best = j
        score[j] = 0.0
    return best


@_njit()
def _dissolve_small(t: Int, rows: np.ndarray, n_cent: Int, min_size: Int, cut_ptr: np.ndarray, cut_comp: np.ndarray,
                    cut_val: np.ndarray, head: np.ndarray, cnt_c: np.ndarray, cent_of: np.ndarray,
                    cent_val: np.ndarray, score: np.ndarray, touched: np.ndarray, assign: np.ndarray,
                    sizes: np.ndarray) -> None:
    """Move the documents of clusters smaller than min_size to their best large cluster (by the
    centroid index in head/cnt_c/cent_of/cent_val, term t skipped), or to the first large one when
    they share nothing with any; everything to cluster 0 when no cluster is large. sizes[:n_cent]
    holds the cluster sizes on entry and is left stale (the caller recounts)."""
    P = rows.shape[0]
    n_large = 0
    for i in range(n_cent):
        if sizes[i] >= min_size:
            n_large += 1
    if n_large == 0:
        for x in range(P):
            assign[x] = 0
    elif n_large < n_cent:
        for x in range(P):
            if sizes[assign[x]] >= min_size:
                continue
            best = _best_centroid(rows[x], t, cut_ptr, cut_comp, cut_val, head, cnt_c, cent_of, cent_val,
                                  score, touched, sizes, min_size)
            if best < 0:
                for i in range(n_cent):
                    if sizes[i] >= min_size:
                        best = i
                        break
            assign[x] = best


@_njit()
def _mean_centroids(rows: np.ndarray, n_cent: Int, fwd_ptr: np.ndarray, fwd_comp: np.ndarray, fwd_val: np.ndarray,
                    cut_ptr: np.ndarray, cut_comp: np.ndarray, head: np.ndarray, cnt_c: np.ndarray,
                    cent_of: np.ndarray, cent_val: np.ndarray, assign: np.ndarray, sizes: np.ndarray,
                    order: np.ndarray, cstart: np.ndarray, acc: np.ndarray, want: np.ndarray, used: np.ndarray,
                    ent_c: np.ndarray, ent_v: np.ndarray) -> int:
    """Inverted index (head/cnt_c/cent_of/cent_val, as for random centroids) over the mean vector
    of each non-empty cluster of ``assign``: every member's full vector, summed in list order and
    divided by the cluster's size, kept only on the terms the index is asked about (the members'
    ``cut`` top entries). Fills sizes[:n_cent]; ``used`` gets the terms indexed (returns their
    count, so the caller can reset head/cnt_c); acc (dim floats) and want (dim bools) are left
    zeroed; ent_c/ent_v (longer than the members' entries together: every entry is written before
    it is kept or not) hold the means cluster by cluster before they go term by term."""
    P = rows.shape[0]
    for i in range(n_cent + 1):
        cstart[i] = 0
    for x in range(P):
        cstart[assign[x] + 1] += 1
    # members grouped by cluster, in list order (a stable counting sort)
    for i in range(n_cent):
        cstart[i + 1] += cstart[i]
        sizes[i] = 0
    for x in range(P):
        a = assign[x]
        order[cstart[a] + sizes[a]] = x
        sizes[a] += 1
    # a mean's other terms are never looked up: every look-up is one of a member's top entries
    for x in range(P):
        d = rows[x]
        for p in range(cut_ptr[d], cut_ptr[d + 1]):
            want[cut_comp[p]] = True
    # one pass over the members: each cluster's mean, entry by entry, counted per term; cstart[i]
    # becomes the start of cluster i's entries once its members are summed
    n_used = 0
    n_ent = 0
    for i in range(n_cent):
        first = n_ent
        for m in range(cstart[i], cstart[i + 1]):
            d = rows[order[m]]
            # without a branch: about half the entries are the first of their term in the
            # cluster, a branch on that would be mispredicted on them
            for p in range(fwd_ptr[d], fwd_ptr[d + 1]):
                c = fwd_comp[p]
                a = acc[c]
                acc[c] = a + fwd_val[p]
                ent_c[n_ent] = c
                n_ent += int(a == 0.0)
        inv = np.float32(1.0) / np.float32(sizes[i]) if sizes[i] > 0 else np.float32(0.0)
        # the wanted terms kept (again without a branch), then counted per term
        last = first
        for k in range(first, n_ent):
            c = ent_c[k]
            ent_c[last] = c
            ent_v[last] = acc[c] * inv
            acc[c] = 0.0
            last += int(want[c])
        n_ent = last
        for k in range(first, n_ent):
            c = ent_c[k]
            if cnt_c[c] == 0:
                used[n_used] = c
                n_used += 1
            cnt_c[c] += 1
        cstart[i] = first
    cstart[n_cent] = n_ent
    off = 0
    for j in range(n_used):
        c = used[j]
        head[c] = off
        off += cnt_c[c]
        cnt_c[c] = 0
    # term by term, clusters ascending within a term
    for i in range(n_cent):
        for k in range(cstart[i], cstart[i + 1]):
            c = ent_c[k]
            q = head[c] + cnt_c[c]
            cent_of[q] = i
            cent_val[q] = ent_v[k]
            cnt_c[c] += 1
    for x in range(P):
        d = rows[x]
        for p in range(cut_ptr[d], cut_ptr[d + 1]):
            want[cut_comp[p]] = False
    return n_used


@_njit()
def _cluster_list(t: Int, rows: np.ndarray, n_cent: Int, min_size: Int, seed: Int, fwd_ptr: np.ndarray,
                  fwd_comp: np.ndarray, fwd_val: np.ndarray, cut_ptr: np.ndarray, cut_comp: np.ndarray,
                  cut_val: np.ndarray, head: np.ndarray, cnt_c: np.ndarray, cent_of: np.ndarray, cent_val: np.ndarray,
                  score: np.ndarray, touched: np.ndarray, assign: np.ndarray, sizes: np.ndarray,
                  perm: np.ndarray, refine: Int, cstart: np.ndarray, acc: np.ndarray, want: np.ndarray,
                  used: np.ndarray, ent_c: np.ndarray, ent_v: np.ndarray) -> None:
    """Clustering of one posting list: random centroids, then ``refine`` k-means steps.

    Centroids are ``n_cent`` random documents of the list; every document joins the centroid with
    the largest dot product between its ``doc_cut`` top entries and the centroid's full vector
    (through a small inverted index over the centroids; the list's own term, which every document
    has, is left out). Clusters smaller than ``min_size`` are dissolved into the best remaining
    centroid. Each refinement step then moves every document to the cluster whose mean vector
    (its members' full vectors averaged, the list's term included) has the largest dot product
    with the document's top entries, and dissolves small clusters again. Fills assign[:P] with
    cluster ids; ``perm`` is scratch of length >= P, ``cstart`` >= n_cent + 1, ``acc`` (dim
    floats, zeros), ``want`` (dim bools, False) and ``used`` (dim ints) scratch, ``ent_c``/``ent_v``
    as long as cent_of.
    """
    P = rows.shape[0]
    # pick centroids: partial Fisher-Yates over positions, seeded by (seed, term)
    for i in range(P):
        perm[i] = i
    st = np.uint64(seed) * np.uint64(1000003) + np.uint64(t)
    for i in range(n_cent):
        st, z = _splitmix(st)
        j = i + np.int64(z % np.uint64(P - i))
        tmp = perm[i]
        perm[i] = perm[j]
        perm[j] = tmp
    # inverted index over the centroids' full vectors: head[c] .. start offsets (term -> entries)
    for i in range(n_cent):
        d = rows[perm[i]]
        for p in range(fwd_ptr[d], fwd_ptr[d + 1]):
            c = fwd_comp[p]
            if c != t:
                cnt_c[c] += 1
    # prefix over the components actually used (walk centroids again)
    off = 0
    for i in range(n_cent):
        d = rows[perm[i]]
        for p in range(fwd_ptr[d], fwd_ptr[d + 1]):
            c = fwd_comp[p]
            if c != t and head[c] < 0:
                head[c] = off
                off += cnt_c[c]
                cnt_c[c] = 0
    for i in range(n_cent):
        d = rows[perm[i]]
        for p in range(fwd_ptr[d], fwd_ptr[d + 1]):
            c = fwd_comp[p]
            if c != t:
                q = head[c] + cnt_c[c]
                cent_of[q] = i
                cent_val[q] = fwd_val[p]
                cnt_c[c] += 1
    for i in range(n_cent):
        sizes[i] = 0
    # assign
    for x in range(P):
        d = rows[x]
        best = _best_centroid(d, t, cut_ptr, cut_comp, cut_val, head, cnt_c, cent_of, cent_val, score, touched,
                              sizes, 0)
        if best < 0:
            best = 0
            # a document sharing nothing (beyond t) with any centroid: its own centroid if it is one
            for i in range(n_cent):
                if rows[perm[i]] == d:
                    best = i
                    break
        assign[x] = best
        sizes[best] += 1
    # dissolve small clusters into the best large one
    if min_size > 1:
        _dissolve_small(t, rows, n_cent, min_size, cut_ptr, cut_comp, cut_val, head, cnt_c, cent_of, cent_val, score,
                        touched, assign, sizes)
    # reset scratch
    for i in range(n_cent):
        d = rows[perm[i]]
        for p in range(fwd_ptr[d], fwd_ptr[d + 1]):
            c = fwd_comp[p]
            head[c] = -1
            cnt_c[c] = 0
    for _ in range(refine):
        n_used = _mean_centroids(rows, n_cent, fwd_ptr, fwd_comp, fwd_val, cut_ptr, cut_comp, head, cnt_c, cent_of,
                                 cent_val, assign, sizes, perm, cstart, acc, want, used, ent_c, ent_v)
        for x in range(P):
            best = _best_dense(rows[x], cut_ptr, cut_comp, cut_val, head, cnt_c, cent_of, cent_val, score, n_cent)
            if best >= 0:  # a document sharing nothing with any mean keeps its cluster
                assign[x] = best
        if min_size > 1:
            for i in range(n_cent):
                sizes[i] = 0
            for x in range(P):
                sizes[assign[x]] += 1
            _dissolve_small(-1, rows, n_cent, min_size, cut_ptr, cut_comp, cut_val, head, cnt_c, cent_of, cent_val,
                            score, touched, assign, sizes)
        for u in range(n_used):
            head[used[u]] = -1
            cnt_c[used[u]] = 0


@_njit(parallel=True)
def cluster_lists(term_ptr: np.ndarray, rows: np.ndarray, values: np.ndarray, centroid_fraction: Float,
                  min_cluster_size: Int, seed: Int, fwd_ptr: np.ndarray, fwd_comp: np.ndarray, fwd_val: np.ndarray,
                  cut_ptr: np.ndarray, cut_comp: np.ndarray, cut_val: np.ndarray, dim: Int, items: np.ndarray,
                  wptr: np.ndarray, refine: Int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Block every posting list by clustering, worker w taking lists items[wptr[w]:wptr[w+1]]
    (see :func:`schedule`). Reorders rows/values in place (blocks contiguous, value-desc order kept
    inside a block) and returns (n_blocks per term, block sizes in a per-term capacity layout,
    capacity offsets)."""
    nterms = term_ptr.shape[0] - 1
    cap_ptr = np.zeros(nterms + 1, np.int64)
    maxP = 0
    maxlen = 0
    for t in range(nterms):
        P = term_ptr[t + 1] - term_ptr[t]
        nc = max(1, np.int64(centroid_fraction * P)) if P > 0 else 0
        cap_ptr[t + 1] = cap_ptr[t] + nc
        maxP = max(maxP, P)
    for d in range(fwd_ptr.shape[0] - 1):
        maxlen = max(maxlen, fwd_ptr[d + 1] - fwd_ptr[d])
    maxC = np.int64(centroid_fraction * maxP)
    if maxC < 1:
        maxC = np.int64(1)
    n_blocks = np.zeros(nterms, np.int64)
    blk_size = np.zeros(cap_ptr[nterms], np.int64)
    for w in prange(wptr.shape[0] - 1):
        head = np.full(dim, -1, np.int64)
        cnt_c = np.zeros(dim, np.int64)
        score = np.zeros(maxP + 1, np.float32)
        touched = np.empty(maxP + 1, np.int64)
        assign = np.empty(maxP + 1, np.int64)
        sizes = np.empty(maxP + 1, np.int64)
        perm = np.empty(maxP + 1, np.int64)
        start = np.empty(maxC + 1, np.int64)
        tmp_r = np.empty(maxP + 1, np.int32)
        tmp_v = np.empty(maxP + 1, np.float32)
        # the centroids' entries: at most n_cent rows of at most maxlen entries, and the means' entries
        # of a list at most the sum of its documents' lengths (counted over this worker's lists)
        max_ent = int(maxC * maxlen)
        if refine > 0:
            for it in range(wptr[w], wptr[w + 1]):
                t = items[it]
                n_ent = 0
                for x in range(term_ptr[t], term_ptr[t + 1]):
                    d = rows[x]
                    n_ent += fwd_ptr[d + 1] - fwd_ptr[d]
                max_ent = max(max_ent, n_ent)
        cent_of = np.empty(max_ent + 1, np.int32)  # cluster ids (< maxC); 4 bytes: less to stream per document
        cent_val = np.empty(max_ent + 1, np.float32)
        cstart = np.empty(maxC + 2, np.int64)
        mean_acc = np.zeros(dim if refine > 0 else 1, np.float32)
        want = np.zeros(dim if refine > 0 else 1, np.bool_)
        used = np.empty(dim if refine > 0 else 1, np.int64)
        # the means cluster by cluster, before they go term by term into cent_of/cent_val
        ent_c = np.empty(max_ent + 1 if refine > 0 else 1, np.int32)
        ent_v = np.empty(max_ent + 1 if refine > 0 else 1, np.float32)
        for it in range(wptr[w], wptr[w + 1]):
            t = items[it]
            s, e = term_ptr[t], term_ptr[t + 1]
            P = e - s
            if P == 0:
                continue
            nc = cap_ptr[t + 1] - cap_ptr[t]
            if nc <= 1 or P <= min_cluster_size:
                n_blocks[t] = 1
                blk_size[cap_ptr[t]] = P
                continue
            _cluster_list(t, rows[s:e], nc, min_cluster_size, seed, fwd_ptr, fwd_comp, fwd_val,
                          cut_ptr, cut_comp, cut_val, head, cnt_c, cent_of, cent_val, score, touched,
                          assign, sizes, perm, refine, cstart, mean_acc, want, used, ent_c, ent_v)
            # stable counting sort of the list by cluster id
            for i in range(nc):
                sizes[i] = 0
            for x in range(P):
                sizes[assign[x]] += 1
            nb = 0
            for i in range(nc):
                if sizes[i] > 0:
                    blk_size[cap_ptr[t] + nb] = sizes[i]
                    nb += 1
            n_blocks[t] = nb
            acc = 0
            for i in range(nc):
                start[i] = acc
                acc += sizes[i]
            for x in range(P):
                tmp_r[x] = rows[s + x]
                tmp_v[x] = values[s + x]
            for x in range(P):
                a = assign[x]
                q = start[a]
                rows[s + q] = tmp_r[x]
                values[s + q] = tmp_v[x]
                start[a] = q + 1
    return n_blocks, blk_size, cap_ptr


GROUP = 256  # blocks per summary group: a block id inside a group fits a uint8
# A summary entry stores its block and code (2 bytes); its term is stored once per group
# (sum_term: low 8 bits and the term's entry count), the high bits being the term's bucket in the
# group's directories (sum_dir for entries, sum_tdir for distinct terms).
BUCKET_BITS = 8
BUCKET_MASK = (1 << BUCKET_BITS) - 1


def n_buckets(dim: int) -> int:
    """Buckets of a summary group's directory for vocabulary size ``dim``."""
    return (int(dim) + BUCKET_MASK) >> BUCKET_BITS


@_njit()
def _block_union(rows: np.ndarray, b0: Int, b1: Int, fwd_ptr: np.ndarray, fwd_comp: np.ndarray, fwd_val: np.ndarray,
                 maxv: np.ndarray, comps_buf: np.ndarray) -> int:
    """Coordinate-wise max of the rows[b0:b1] documents into maxv (which starts at -1);
    the distinct terms, in order of first appearance, go to comps_buf. Returns their count."""
    nu = 0
    for x in range(b0, b1):
        d = rows[x]
        for p in range(fwd_ptr[d], fwd_ptr[d + 1]):
            # branch-free (values are > 0): whether a term is new is a coin flip for the branch
            # predictor, and the mispredictions cost more than the unconditional stores
            c = fwd_comp[p]
            v = fwd_val[p]
            m = maxv[c]
            comps_buf[nu] = c
            nu += int(m < 0)
            maxv[c] = max(m, v)
    return nu


@_njit()
def _select_top(a: np.ndarray, n: Int, m: Int) -> None:
    """Rearrange a[:n] in place so that a[n-m:n] holds its m largest values (as np.partition at
    n-m): quickselect with a three-way partition, so runs of equal values cost no extra passes."""
    kth = n - m
    lo = 0
    hi = n - 1
    while hi > lo:
        mid = (lo + hi) >> 1
        x, y, z = a[lo], a[mid], a[hi]
        pv = max(min(x, y), min(max(x, y), z))  # median of three
        # a[lo:lt] < pv, a[lt:i] == pv, a[gt+1:hi+1] > pv
        lt = lo
        i = lo
        gt = hi
        while i <= gt:
            v = a[i]
            if v < pv:
                a[i] = a[lt]
                a[lt] = v
                lt += 1
                i += 1
            elif v > pv:
                a[i] = a[gt]
                a[gt] = v
                gt -= 1
            else:
                i += 1
        if kth < lt:
            hi = lt - 1
        elif kth > gt:
            lo = gt + 1
        else:
            return


@_njit()
def _energy_threshold(comps_buf: np.ndarray, nu: Int, maxv: np.ndarray, energy: Float, tmp: np.ndarray,
                      hist_m: np.ndarray, hist_n: np.ndarray) -> tuple[int, Any, int, Any]:
    """Energy cut of one summary: the largest entries until their sum reaches ``energy`` of the
    total (the crossing entry included). Returns (n_kept, threshold value, ties to keep at the
    threshold, max value); ties at the threshold are kept in order of first appearance.

    No sort: the values are float16-rounded and positive, so their float32 bit patterns order
    them and split them exactly into buckets of one value: a mass histogram over the exponent
    (256 bins) finds the bin the cut falls in, a second over that bin's top 10 mantissa bits
    finds the value. Two branch-free passes over the entries; sums are float64, exact for
    float16 values, so the cut equals a sort's whatever the order of summation. ``hist_m``
    (float64) and ``hist_n`` (int64) are scratch of length >= 1024; ``tmp`` of length >= nu."""
    for x in range(256):
        hist_m[x] = 0.0
        hist_n[x] = 0
    total = 0.0
    hi_v = np.float32(0.0)
    for i in range(nu):
        v = maxv[comps_buf[i]]
        tmp[i] = v
        eb = np.float32(v).view(np.uint32) >> np.uint32(23)
        hist_m[eb] += v
        hist_n[eb] += 1
        total += v
        hi_v = max(hi_v, v)
    until = total * energy
    taken = 0.0  # mass of the entries above the current bin
    n_above = 0
    ex = 255  # the exponent bin the cut falls in
    while ex > 0 and taken + hist_m[ex] < until:
        taken += hist_m[ex]
        n_above += hist_n[ex]
        ex -= 1
    for x in range(1024):
        hist_m[x] = 0.0
        hist_n[x] = 0
    for i in range(nu):
        bits = np.float32(tmp[i]).view(np.uint32)
        inside = np.int64((bits >> np.uint32(23)) == ex)
        xb = (bits >> np.uint32(13)) & np.uint32(1023)
        hist_m[xb] += tmp[i] * inside
        hist_n[xb] += inside
    xm = 1023  # the mantissa bin (one value) the cut falls in
    while xm > 0 and taken + hist_m[xm] < until:
        taken += hist_m[xm]
        n_above += hist_n[xm]
        xm -= 1
    thr = np.uint32((np.uint32(ex) << np.uint32(23)) | (np.uint32(xm) << np.uint32(13))).view(np.float32)
    acc = float(taken)
    j = 0
    while j < hist_n[xm] and acc < until:
        acc += float(thr)
        j += 1
    return n_above + j, thr, j, hi_v


@_njit(parallel=True)
def summaries_count(term_ptr: np.ndarray, rows: np.ndarray, n_blocks: np.ndarray, blk_size: np.ndarray,
                    cap_ptr: np.ndarray, term_blk_ptr: np.ndarray, fwd_ptr: np.ndarray, fwd_comp: np.ndarray,
                    fwd_val: np.ndarray, energy: Float, dim: Int, items: np.ndarray, wptr: np.ndarray,
                    blk_thr: np.ndarray, blk_ties: np.ndarray, blk_min: np.ndarray, blk_quant: np.ndarray
                    ) -> np.ndarray:
    """First pass over the blocks (worker w: lists items[wptr[w]:wptr[w+1]]): per block the
    energy-cut threshold, the ties kept at it and the 8-bit dequantisation (min, step); returns
    the summary entries per block."""
    nterms = term_ptr.shape[0] - 1
    n_kept = np.zeros(term_blk_ptr[nterms], np.int64)
    for w in prange(wptr.shape[0] - 1):
        maxv = np.full(dim, -1.0, np.float32)
        comps_buf = np.empty(dim + 1, np.int64)  # _block_union stores one past the distinct terms
        tmp = np.empty(dim, np.float32)
        hist_m = np.empty(1024, np.float64)
        hist_n = np.empty(1024, np.int64)
        for it in range(wptr[w], wptr[w + 1]):
            t = items[it]
            b0 = term_ptr[t]
            for b in range(n_blocks[t]):
                b1 = b0 + blk_size[cap_ptr[t] + b]
                nu = _block_union(rows, b0, b1, fwd_ptr, fwd_comp, fwd_val, maxv, comps_buf)
                n, thr, ties, hi = _energy_threshold(comps_buf, nu, maxv, energy, tmp, hist_m, hist_n)
                for i in range(nu):
                    maxv[comps_buf[i]] = -1.0
                gb = term_blk_ptr[t] + b
                n_kept[gb] = n
                blk_thr[gb] = thr
                blk_ties[gb] = ties
                # step slightly wider than (hi-lo)/255 and codes rounded up: dequantised values
                # never fall below the originals, so with energy = 1 a summary bounds its block
                q = np.float32((hi - thr) / 254.5)
                blk_min[gb] = thr
                blk_quant[gb] = q if q > 0 else np.float32(1e-30)
                b0 = b1
    return n_kept


@_njit(parallel=True)
def summaries_fill(term_ptr: np.ndarray, rows: np.ndarray, n_blocks: np.ndarray, blk_size: np.ndarray,
                   cap_ptr: np.ndarray, term_blk_ptr: np.ndarray, term_grp_ptr: np.ndarray, grp_ptr: np.ndarray,
                   fwd_ptr: np.ndarray, fwd_comp: np.ndarray, fwd_val: np.ndarray, dim: Int, items: np.ndarray,
                   wptr: np.ndarray, blk_thr: np.ndarray, blk_ties: np.ndarray, blk_min: np.ndarray,
                   blk_quant: np.ndarray, sum_low: np.ndarray, sum_dir: np.ndarray, sum_blk: np.ndarray,
                   sum_code: np.ndarray) -> None:
    """Second pass: the kept entries of each group of <= 256 blocks, sorted by (term, block):
    sum_low (term id & 255, uint8), sum_blk (block inside the group, uint8), sum_code (8-bit
    value), and per group the bucket directory sum_dir[g, h]: the offset (from the group's first
    entry) of its first entry whose term id >> 8 is >= h; sum_dir[g, -1] is the group's size."""
    n_buckets = sum_dir.shape[1] - 1
    max_ent = 1
    for g in range(grp_ptr.shape[0] - 1):
        max_ent = max(max_ent, grp_ptr[g + 1] - grp_ptr[g])
    for w in prange(wptr.shape[0] - 1):
        maxv = np.full(dim, -1.0, np.float32)
        comps_buf = np.empty(dim + 1, np.int64)
        cnt_lo = np.zeros(BUCKET_MASK + 1, np.int64)
        cnt_hi = np.zeros(n_buckets + 1, np.int64)
        e_comp = np.empty(max_ent, np.int64)
        e_blk = np.empty(max_ent, np.uint8)
        e_code = np.empty(max_ent, np.uint8)
        t_comp = np.empty(max_ent, np.int64)
        t_blk = np.empty(max_ent, np.uint8)
        t_code = np.empty(max_ent, np.uint8)
        for it in range(wptr[w], wptr[w + 1]):
            t = items[it]
            nb = n_blocks[t]
            if nb == 0:
                continue
            b0 = term_ptr[t]
            for g in range(term_grp_ptr[t], term_grp_ptr[t + 1]):
                e0, e1 = grp_ptr[g], grp_ptr[g + 1]
                ne = e1 - e0
                w_ = 0
                lb0 = (g - term_grp_ptr[t]) * GROUP
                for lb in range(lb0, min(nb, lb0 + GROUP)):
                    b1 = b0 + blk_size[cap_ptr[t] + lb]
                    nu = _block_union(rows, b0, b1, fwd_ptr, fwd_comp, fwd_val, maxv, comps_buf)
                    gb = term_blk_ptr[t] + lb
                    thr = blk_thr[gb]
                    ties = blk_ties[gb]
                    lo = blk_min[gb]
                    q = blk_quant[gb]
                    for i in range(nu):
                        c = comps_buf[i]
                        v = maxv[c]
                        maxv[c] = -1.0
                        if v > thr or (v == thr and ties > 0):
                            if v == thr:
                                ties -= 1
                            code = np.ceil((v - lo) / q + 1e-3)
                            if code > 255:
                                code = 255
                            e_comp[w_] = c
                            e_blk[w_] = np.uint8(lb - lb0)
                            e_code[w_] = np.uint8(code)
                            w_ += 1
                    b0 = b1
                # stable radix sort by term id (low byte, then high bits): entries come block by
                # block, so each term's entries stay in block order; the high-bits pass counts
                # are the group's directory. O(entries + 256 + buckets), no comparison sort.
                for x in range(BUCKET_MASK + 1):
                    cnt_lo[x] = 0
                for i in range(ne):
                    cnt_lo[e_comp[i] & BUCKET_MASK] += 1
                acc = 0
                for x in range(BUCKET_MASK + 1):
                    n_x = cnt_lo[x]
                    cnt_lo[x] = acc
                    acc += n_x
                for i in range(ne):
                    x = e_comp[i] & BUCKET_MASK
                    pos = cnt_lo[x]
                    t_comp[pos] = e_comp[i]
                    t_blk[pos] = e_blk[i]
                    t_code[pos] = e_code[i]
                    cnt_lo[x] = pos + 1
                for h in range(n_buckets + 1):
                    cnt_hi[h] = 0
                for i in range(ne):
                    cnt_hi[(t_comp[i] >> BUCKET_BITS) + 1] += 1
                for h in range(n_buckets):
                    cnt_hi[h + 1] += cnt_hi[h]
                for h in range(n_buckets + 1):
                    sum_dir[g, h] = cnt_hi[h]
                for i in range(ne):
                    c = t_comp[i]
                    h = c >> BUCKET_BITS
                    pos = e0 + cnt_hi[h]
                    sum_low[pos] = c & BUCKET_MASK
                    sum_blk[pos] = t_blk[i]
                    sum_code[pos] = t_code[i]
                    cnt_hi[h] += 1


def summary_comps(sum_term: np.ndarray, sum_tdir: np.ndarray) -> np.ndarray:
    """The full term id (int64) of every summary entry, from its group's distinct terms (low byte and
    entry count in ``sum_term``) and their directory ``sum_tdir``."""
    sizes: np.ndarray = np.diff(np.asarray(sum_tdir, np.int64), axis=1)
    buckets = np.broadcast_to(np.arange(sizes.shape[1], dtype=np.int64), sizes.shape)
    high = np.repeat(buckets.ravel(), sizes.ravel())
    st = np.asarray(sum_term, np.int64)
    return np.repeat((high << BUCKET_BITS) | (st & BUCKET_MASK), (st >> BUCKET_BITS) + 1)


@_njit(parallel=True)
def _count_terms(grp_ptr: np.ndarray, sum_low: np.ndarray, sum_dir: np.ndarray) -> np.ndarray:
    n_groups = grp_ptr.shape[0] - 1
    nbk = sum_dir.shape[1] - 1
    out = np.zeros(n_groups, np.int64)
    for g in prange(n_groups):
        e0 = grp_ptr[g]
        n = 0
        for h in range(nbk):
            lo, hi = e0 + sum_dir[g, h], e0 + sum_dir[g, h + 1]
            for e in range(lo, hi):
                if e == lo or sum_low[e] != sum_low[e - 1]:
                    n += 1
        out[g] = n
    return out


@_njit(parallel=True)
def _fill_terms(grp_ptr: np.ndarray, sum_low: np.ndarray, sum_dir: np.ndarray, grp_tptr: np.ndarray,
                sum_term: np.ndarray, sum_tdir: np.ndarray) -> None:
    n_groups = grp_ptr.shape[0] - 1
    nbk = sum_dir.shape[1] - 1
    for g in prange(n_groups):
        e0 = grp_ptr[g]
        d0 = grp_tptr[g]
        n = 0
        for h in range(nbk):
            sum_tdir[g, h] = n
            lo, hi = e0 + sum_dir[g, h], e0 + sum_dir[g, h + 1]
            e = lo
            while e < hi:
                x = sum_low[e]
                f = e + 1
                while f < hi and sum_low[f] == x:
                    f += 1
                sum_term[d0 + n] = np.uint16(x | ((f - e - 1) << BUCKET_BITS))
                n += 1
                e = f
        sum_tdir[g, nbk] = n


def summary_terms(grp_ptr: np.ndarray, sum_low: np.ndarray, sum_dir: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(sum_term, sum_tdir, grp_tptr) from one byte of term id per entry (``sum_low``, format 3): each
    group's distinct terms once, as uint16 ``low | (entries - 1) << 8`` (a term has at most one entry per
    block, so <= 256 in a group), ``sum_tdir[g, h]`` the offset (from the group's first distinct term,
    ``grp_tptr[g]``) of its first distinct term whose id >> 8 is >= h. The entries of a term stay
    contiguous in ``sum_blk`` / ``sum_code``, so a term is found by scanning its bucket's distinct terms
    and adding up their counts from the bucket's first entry (``sum_dir``)."""
    grp_ptr = np.asarray(grp_ptr, np.int64)
    sum_dir = np.asarray(sum_dir)
    n_dist = _count_terms(grp_ptr, sum_low, sum_dir)
    grp_tptr = np.concatenate([[0], np.cumsum(n_dist)]).astype(np.int64)
    sum_term = np.empty(int(grp_tptr[-1]), np.uint16)
    # distinct terms of a group <= dim, so the offsets fit 2 bytes for vocabularies < 64 Ki
    dtype = np.uint16 if n_dist.size == 0 or n_dist.max() <= np.iinfo(np.uint16).max else np.uint32
    sum_tdir = np.empty((grp_ptr.shape[0] - 1, sum_dir.shape[1]), dtype)
    _fill_terms(grp_ptr, sum_low, sum_dir, grp_tptr, sum_term, sum_tdir)
    return sum_term, sum_tdir, grp_tptr


def summary_directory(grp_ptr: np.ndarray, comps: np.ndarray, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """(sum_low, sum_dir) of entries given by full term ids ``comps`` (sorted inside each group of
    ``grp_ptr``): how an index of format 1, which stored the full ids, is read in the compact layout."""
    grp_ptr = np.asarray(grp_ptr, np.int64)
    comps = np.asarray(comps, np.int64)
    n_groups = grp_ptr.shape[0] - 1
    nbk = n_buckets(dim)
    grp_of = np.repeat(np.arange(n_groups, dtype=np.int64), np.diff(grp_ptr))
    counts = np.bincount(grp_of * (nbk + 1) + (comps >> BUCKET_BITS) + 1, minlength=n_groups * (nbk + 1))
    dir_ = np.cumsum(counts.reshape(n_groups, nbk + 1), axis=1)
    dtype = np.uint16 if dir_.size == 0 or dir_[:, -1].max() <= np.iinfo(np.uint16).max else np.uint32
    return (comps & BUCKET_MASK).astype(np.uint8), np.ascontiguousarray(dir_, dtype)


def block_summary_ref(doc_vectors: list[tuple[np.ndarray, np.ndarray]], energy: float) -> tuple[np.ndarray, np.ndarray]:
    """NumPy reference of one block's summary: (terms sorted asc, dequantised values)."""
    mx: dict[int, float] = {}
    for comp, val in doc_vectors:
        for c, v in zip(comp.tolist(), val.tolist()):
            mx[c] = max(mx.get(c, -1.0), v)
    first = {c: i for i, c in enumerate(mx)}
    items = sorted(mx.items(), key=lambda cv: (-cv[1], first[cv[0]]))
    total = 0.0  # float64: exact for float16-rounded values, whatever the order (as the kernel sums)
    for v in mx.values():
        total += float(np.float32(v))
    until = total * float(np.float32(energy))
    kept, acc = [], 0.0
    for c, v in items:
        kept.append((c, v))
        acc += float(np.float32(v))
        if acc >= until:
            break
    vals = np.array([v for _, v in kept], np.float32)
    lo, hi = vals.min(), vals.max()
    q = np.float32((hi - lo) / 254.5) or np.float32(1e-30)
    codes = np.minimum(np.ceil((vals - lo) / q + 1e-3), 255)
    deq = lo + codes.astype(np.float32) * q
    order = np.argsort([c for c, _ in kept])
    return np.array([kept[i][0] for i in order]), deq[order]


# ---------------------------------------------------------------------------------------- search
# Numba's code-generation helpers carry no annotations; typed aliases keep the calls below checked.
_item_pointer: Callable[..., Any] = cgutils.get_item_pointer
_insert_function: Callable[..., Any] = cgutils.get_or_insert_function


@intrinsic
def _prefetch(typingctx: Any, arr: Any, idx: Any) -> tuple[Any, Callable[..., Any]]:
    """Hint the CPU to pull arr[idx]'s cache line (no fault, no effect on results)."""
    sig = types.void(arr, idx)

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        aryty = signature.args[0]
        ary, i = args
        arystruct = context.make_array(aryty)(context, builder, ary)
        ptr = _item_pointer(context, builder, aryty, arystruct, [i], wraparound=False)
        i8p = ir.IntType(8).as_pointer()
        i32 = ir.IntType(32)
        fnty = ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32])
        fn = _insert_function(builder.module, fnty, "llvm.prefetch.p0i8")
        builder.call(fn, [builder.bitcast(ptr, i8p), i32(0), i32(3), i32(1)])
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def _dot_lanes(typingctx: Any, qdense: Any, comp: Any, val: Any, s: Any, e: Any) -> tuple[Any, Callable[..., Any]]:
    """sum(qdense[comp[p]] * half(val[p]) for p in [s, e)), e - s a multiple of DOT_LANES, in
    DOT_LANES partial sums (element p into sum (p - s) % DOT_LANES), added up as a tree at the end.

    A chunk's terms and values are loaded as one vector each, the values widened in one
    instruction (fpext half -> float: F16C's vcvtph2ps on x86, exact for every half), the query
    weights loaded one by one into a vector, then one multiply and one add per chunk. Written in
    LLVM IR because Numba has neither vectors nor float16 on the CPU."""
    sig = types.float32(qdense, comp, val, s, e)

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        qty, cty, vty = signature.args[:3]
        qa = context.make_array(qty)(context, builder, args[0])
        ca = context.make_array(cty)(context, builder, args[1])
        va = context.make_array(vty)(context, builder, args[2])
        i32, i64, W = ir.IntType(32), ir.IntType(64), DOT_LANES
        vec16, vecf = ir.VectorType(ir.IntType(16), W), ir.VectorType(ir.FloatType(), W)
        start = context.cast(builder, args[3], signature.args[3], types.int64)
        stop = context.cast(builder, args[4], signature.args[4], types.int64)
        pre = builder.block
        head = builder.append_basic_block("dot_lanes.head")
        body = builder.append_basic_block("dot_lanes.body")
        done = builder.append_basic_block("dot_lanes.done")
        builder.branch(head)
        builder.position_at_end(head)
        i = builder.phi(i64)
        acc = builder.phi(vecf)
        i.add_incoming(start, pre)
        acc.add_incoming(ir.Constant(vecf, [0.0] * W), pre)
        builder.cbranch(builder.icmp_signed("<", i, stop), body, done)
        builder.position_at_end(body)
        cptr = _item_pointer(context, builder, cty, ca, [i], wraparound=False)
        vptr = _item_pointer(context, builder, vty, va, [i], wraparound=False)
        cv = builder.load(builder.bitcast(cptr, vec16.as_pointer()), align=2)
        vv = builder.load(builder.bitcast(vptr, vec16.as_pointer()), align=2)
        wide = builder.fpext(builder.bitcast(vv, ir.VectorType(ir.HalfType(), W)), vecf)
        qv = ir.Constant(vecf, ir.Undefined)
        for j in range(W):
            cj = builder.zext(builder.extract_element(cv, i32(j)), i64)
            qj = builder.load(_item_pointer(context, builder, qty, qa, [cj], wraparound=False), align=4)
            qv = builder.insert_element(qv, qj, i32(j))
        nxt = builder.fadd(acc, builder.fmul(qv, wide))
        i.add_incoming(builder.add(i, i64(W)), body)
        acc.add_incoming(nxt, body)
        builder.branch(head)
        builder.position_at_end(done)
        lanes = [builder.extract_element(acc, i32(j)) for j in range(W)]
        while len(lanes) > 1:  # ((l0 + l1) + (l2 + l3)) + ((l4 + l5) + (l6 + l7))
            lanes = [builder.fadd(lanes[j], lanes[j + 1]) for j in range(0, len(lanes), 2)]
        return lanes[0]

    return sig, codegen


@_njit(inline="always")
def _prefetch_doc(fwd_comp: np.ndarray, fwd_val: np.ndarray, s: Int, n: Int) -> None:
    off = 0
    while off < n:
        # Numba supplies an intrinsic's typing context itself; mypy sees the declared three parameters
        _prefetch(fwd_comp, s + off)  # type: ignore[call-arg]
        _prefetch(fwd_val, s + off)
        off += 32


@_njit(inline="always")
def _row_of(ptr: np.ndarray, key: Int) -> Int:
    """The row whose stored vector starts at offset ``key`` of a CSR forward index: the last i
    with ptr[i] <= key (an empty row shares its offset with the next row, but has no postings
    and never scores above zero, so the non-empty row is the one meant)."""
    n = ptr.shape[0] - 1
    base = 0
    while n > 1:
        half = n >> 1
        base = base + half if ptr[base + half] <= key else base
        n -= half
    return base


@_njit(inline="always")
def _key_row(fwd_ptr: np.ndarray, tail_ptr: np.ndarray, n_main: Int, key: Int) -> Int:
    """The row of a heap key: a main row's forward-index offset, or n_main's offset plus a tail
    row's offset in the tail arrays (so key order is row order)."""
    nnz = fwd_ptr[n_main]
    if key < nnz:
        return _row_of(fwd_ptr, key)
    return n_main + _row_of(tail_ptr, key - nnz)


@_njit(inline="always")
def _is_new(hs: np.ndarray, hr: np.ndarray, size: Int, key: Int, fwd_ptr: np.ndarray, tail_ptr: np.ndarray,
            n_main: Int, stamp: np.ndarray, sv: Int) -> Bool:
    """Whether a document that would enter the heap is not already in it: a document met again
    in a later posting list scores the same, and one that left the heap can never come back (the
    k-th best only rises), so 'in the heap' is 'pushed before'. A small heap is scanned; a large
    one marks pushed rows in ``stamp``."""
    if hr.shape[0] <= 32:
        for i in range(size):
            if hr[i] == key:
                return False
        return True
    d = _key_row(fwd_ptr, tail_ptr, n_main, key)
    if stamp[d] == sv:
        return False
    stamp[d] = sv
    return True


@_njit()
def _score_block(p0: Int, p1: Int, post_off: np.ndarray, post_len: np.ndarray, stamp: np.ndarray, sv: Int,
                 has_del: bool, deleted: np.ndarray, qdense: np.ndarray, fwd_ptr: np.ndarray, fwd_comp: np.ndarray,
                 fwd_val: np.ndarray, tab: np.ndarray, tail_ptr: np.ndarray, n_main: Int, hs: np.ndarray,
                 hr: np.ndarray, size: Int, k: Int) -> Int:
    """Score the documents of postings p0..p1 into the heap; returns the heap size. A posting is
    the document's offset and length in the forward index, so a visit reads no per-row array;
    the heap is keyed by offset (offset order is row order). A document seen in an earlier list
    is scored again (cheaper than a seen-set lookup per document) and kept out of the heap by
    _is_new; tombstones are looked up only when something is deleted, and only for a document
    that would enter the heap. The next document is prefetched while the current one is scored."""
    if p0 < p1:
        _prefetch_doc(fwd_comp, fwd_val, post_off[p0], post_len[p0])
    for p in range(p0, p1):
        s0 = np.int64(post_off[p])
        e0 = s0 + np.int64(post_len[p])
        if p + 1 < p1:
            _prefetch_doc(fwd_comp, fwd_val, post_off[p + 1], post_len[p + 1])
        s = _dot_f16(qdense, fwd_comp, fwd_val, s0, e0, tab)
        if s > 0 and (size < k or not _worse(s, s0, hs[0], hr[0])):
            if not _is_new(hs, hr, size, s0, fwd_ptr, tail_ptr, n_main, stamp, sv):
                continue
            if has_del and deleted[_row_of(fwd_ptr, s0)] != 0:
                continue
            size = heap_push(hs, hr, size, k, s, s0)
    return size


@_njit(inline="always")
def _f16_widen(h: Int, tab: np.ndarray) -> np.float32:
    """A stored half (uint16 bits) as float32: a normal non-negative half by shifting its bits
    (exponent rebias 127-15), a subnormal or zero (rare) through the table."""
    if h >= 0x0400:
        return np.uint32((np.uint32(h) << np.uint32(13)) + np.uint32(0x38000000)).view(np.float32)
    return np.float32(tab[h])


@_njit(inline="always")
def _dot_f16(qdense: np.ndarray, fwd_comp: np.ndarray, fwd_val: np.ndarray, s: Int, e: Int, tab: np.ndarray
             ) -> np.float32:
    """Dot product of the dense query with one stored row: the first n - n % DOT_LANES elements
    in DOT_LANES partial sums (:func:`_dot_lanes`), the last few added to their total in order.
    One running sum is a chain of dependent float adds, a few cycles per element; partial sums in
    a vector cut a document's scoring time by about 1.5x on real SPLADE rows. The order is fixed,
    so scores are deterministic, and :func:`dot_f16_ref` reproduces it bit for bit."""
    m = e - (e - s) % DOT_LANES
    acc: np.float32 = _dot_lanes(qdense, fwd_comp, fwd_val, s, m)  # type: ignore[call-arg]  # see _prefetch_doc
    comp = fwd_comp[m:e]  # slices: indices from 0, so Numba emits no negative-index fix-up
    val = fwd_val[m:e]
    for i in range(comp.shape[0]):
        acc += qdense[comp[i]] * _f16_widen(val[i], tab)
    return acc


def dot_f16_ref(products: np.ndarray) -> np.float32:
    """NumPy reference of :func:`_dot_f16`'s summation: the sum of float32 ``products`` (query
    weight times stored value, in stored order) in the kernel's DOT_LANES partial sums."""
    p = np.asarray(products, np.float32)
    m = p.shape[0] - p.shape[0] % DOT_LANES
    lanes = np.zeros(DOT_LANES, np.float32)
    if m:  # a cumulative sum adds in order (a plain sum may pair terms up)
        lanes = np.cumsum(p[:m].reshape(-1, DOT_LANES), axis=0, dtype=np.float32)[-1]
    while lanes.shape[0] > 1:  # the kernel's tree: neighbours first
        lanes = lanes[0::2] + lanes[1::2]
    acc = lanes[0]
    for x in p[m:]:
        acc = np.float32(acc + x)
    return np.float32(acc)


@_njit(inline="always")
def _blk_better(acc: np.ndarray, a: Int, b: Int) -> Bool:
    return acc[a] > acc[b] or (acc[a] == acc[b] and a < b)


@_njit()
def _blk_sift(cand: np.ndarray, n: Int, i: Int, acc: np.ndarray) -> None:
    """Sift cand[i] down in a max-heap of block ids keyed by (acc desc, id asc)."""
    while True:
        left = 2 * i + 1
        if left >= n:
            break
        c = left
        if left + 1 < n and _blk_better(acc, cand[left + 1], cand[left]):
            c = left + 1
        if _blk_better(acc, cand[c], cand[i]):
            tmp = cand[c]
            cand[c] = cand[i]
            cand[i] = tmp
            i = c
        else:
            break


@_njit(inline="always")
def _lower_bound(a: np.ndarray, lo: Int, hi: Int, x: Float) -> Int:
    """First i in [lo, hi) with a[i] >= x (hi if none). Branch-free halving: the comparison
    feeds a select, so the loop costs no mispredictions."""
    n = hi - lo
    if n <= 0:
        return lo
    base = lo
    while n > 1:
        half = n >> 1
        base = base + half if a[base + half] < x else base
        n -= half
    return base + 1 if a[base] < x else base


@_njit()
def _summary_scores(t: Int, q_idx: np.ndarray, q_val: np.ndarray, term_blk_ptr: np.ndarray, term_grp_ptr: np.ndarray,
                    grp_ptr: np.ndarray, sum_term: np.ndarray, sum_tdir: np.ndarray, grp_tptr: np.ndarray,
                    sum_dir: np.ndarray, sum_blk: np.ndarray, sum_code: np.ndarray,
                    blk_min: np.ndarray, blk_quant: np.ndarray, blk_acc: np.ndarray) -> int:
    """Dot products of the query with every block summary of term t's list, into blk_acc[:nb]."""
    gb0 = term_blk_ptr[t]
    nb: int = term_blk_ptr[t + 1] - gb0
    for b in range(nb):
        blk_acc[b] = 0.0
    nq = q_idx.shape[0]
    g0 = term_grp_ptr[t]
    for g in range(g0, term_grp_ptr[t + 1]):
        base = (g - g0) * GROUP
        e0 = grp_ptr[g]
        d0 = grp_tptr[g]
        # the query terms' buckets lie far apart in the arrays: ask for all their cache lines
        # first, so the misses overlap instead of coming one search at a time
        for jj in range(nq):
            h = q_idx[jj] >> BUCKET_BITS
            lo = d0 + sum_tdir[g, h]
            if lo < d0 + sum_tdir[g, h + 1]:
                _prefetch(sum_term, lo)  # type: ignore[call-arg]  # see _prefetch_row
                e = e0 + sum_dir[g, h]
                _prefetch(sum_blk, e)
                _prefetch(sum_code, e)
        for jj in range(nq):
            c = q_idx[jj]
            h = c >> BUCKET_BITS
            i = d0 + sum_tdir[g, h]
            dhi = d0 + sum_tdir[g, h + 1]
            x = c & BUCKET_MASK
            pos = e0 + sum_dir[g, h]
            # the bucket's distinct terms (ascending low byte): skip those below x, their entries too
            while i < dhi and (sum_term[i] & BUCKET_MASK) < x:
                pos += (sum_term[i] >> BUCKET_BITS) + 1
                i += 1
            if i == dhi or (sum_term[i] & BUCKET_MASK) != x:
                continue
            end = pos + (sum_term[i] >> BUCKET_BITS) + 1
            qv = q_val[jj]
            while pos < end:
                b = base + sum_blk[pos]
                blk_acc[b] += qv * (blk_min[gb0 + b] + sum_code[pos] * blk_quant[gb0 + b])
                pos += 1
    return nb


@_njit(inline="always")
def _top_terms(q_val: np.ndarray, ncut: Int, order: np.ndarray) -> int:
    """Positions of the ``ncut`` largest query weights into order[:ncut], largest first, ties by
    position (what a stable argsort of -q_val starts with), by insertion: no sort of the whole
    query and no allocation for the few terms a search opens. Returns how many were written."""
    n = 0
    for j in range(q_val.shape[0]):
        v = q_val[j]
        if n == ncut and not v > q_val[order[n - 1]]:
            continue
        i = n if n < ncut else ncut - 1
        while i > 0 and v > q_val[order[i - 1]]:
            order[i] = order[i - 1]
            i -= 1
        order[i] = j
        if n < ncut:
            n += 1
    return n


@_njit()
def _seismic_one(q_idx: np.ndarray, q_val: np.ndarray, k: Int, query_cut: Int, heap_factor: Float, sort_blocks: bool,
                 n_knn: Int, term_blk_ptr: np.ndarray, blk_ptr: np.ndarray, post_off: np.ndarray,
                 post_len: np.ndarray, term_grp_ptr: np.ndarray, grp_ptr: np.ndarray, sum_term: np.ndarray, sum_tdir: np.ndarray, grp_tptr: np.ndarray,
                 sum_dir: np.ndarray, sum_blk: np.ndarray, sum_code: np.ndarray, blk_min: np.ndarray,
                 blk_quant: np.ndarray, fwd_ptr: np.ndarray, fwd_comp: np.ndarray, fwd_val: np.ndarray, tab: np.ndarray,
                 has_del: bool, deleted: np.ndarray,
                 tail_ptr: np.ndarray, tail_comp: np.ndarray, tail_val: np.ndarray, n_main: Int, knn: np.ndarray,
                 qdense: np.ndarray, stamp: np.ndarray, sv: Int, blk_acc: np.ndarray, blk_idx: np.ndarray,
                 hs: np.ndarray, hr: np.ndarray, out_s: np.ndarray, out_r: np.ndarray) -> None:
    nq = q_idx.shape[0]
    for j in range(nq):
        qdense[q_idx[j]] = q_val[j]
    size: Int = 0
    # query terms by weight desc (ties: term asc), the first query_cut of them
    ncut = min(query_cut, nq)
    if ncut <= 32:
        order = np.empty(max(ncut, 1), np.int64)
        ncut = _top_terms(q_val, ncut, order)
    else:
        order = np.argsort(-q_val, kind="mergesort")
    first = True  # the first non-empty list is visited best block first (sort_blocks)
    for oi in range(ncut):
        j = order[oi]
        t = q_idx[j]
        if q_val[j] <= 0:
            break
        nb = _summary_scores(t, q_idx, q_val, term_blk_ptr, term_grp_ptr, grp_ptr, sum_term, sum_tdir, grp_tptr, sum_dir, sum_blk, sum_code,
                             blk_min, blk_quant, blk_acc)
        if nb == 0:
            continue
        gb0 = term_blk_ptr[t]
        if sort_blocks and first:
            # the first list's blocks best-first (it fills the heap with good hits, so the bar
            # starts high), through a lazily popped max-heap; blocks already below the heap's bar
            # are dropped up front (the bar only rises). The other lists go in block order: once
            # the bar is near its final value, sorting them costs more than it saves (measured on
            # real SPLADE vectors, 50k docs: 3-8% less latency at equal knobs, recall +0.002)
            first = False
            nc = 0
            if size == k:
                bar = heap_factor * hs[0]
                for b in range(nb):
                    if blk_acc[b] >= bar:
                        blk_idx[nc] = b
                        nc += 1
            else:
                for b in range(nb):
                    blk_idx[b] = b
                nc = nb
            for i in range(nc // 2 - 1, -1, -1):
                _blk_sift(blk_idx, nc, i, blk_acc)
            while nc > 0:
                b = blk_idx[0]
                nc -= 1
                blk_idx[0] = blk_idx[nc]
                _blk_sift(blk_idx, nc, 0, blk_acc)
                if size == k and blk_acc[b] < heap_factor * hs[0]:
                    break
                size = _score_block(blk_ptr[gb0 + b], blk_ptr[gb0 + b + 1], post_off, post_len, stamp, sv, has_del,
                                    deleted, qdense, fwd_ptr, fwd_comp, fwd_val, tab, tail_ptr, n_main, hs, hr, size, k)
        else:
            for b in range(nb):
                if size == k and blk_acc[b] < heap_factor * hs[0]:
                    continue
                size = _score_block(blk_ptr[gb0 + b], blk_ptr[gb0 + b + 1], post_off, post_len, stamp, sv, has_del,
                                    deleted, qdense, fwd_ptr, fwd_comp, fwd_val, tab, tail_ptr, n_main, hs, hr, size, k)
    # kNN refinement: score the neighbours of the current results
    if n_knn > 0 and size > 0:
        cur = hr[:size].copy()
        nnz = fwd_ptr[n_main]
        for i in range(cur.shape[0]):
            if cur[i] >= nnz:
                continue
            r = _row_of(fwd_ptr, cur[i])
            if r >= knn.shape[0]:
                continue
            for jn in range(min(n_knn, knn.shape[1])):
                d = knn[r, jn]
                if d < 0 or deleted[d] != 0:
                    continue
                s0 = fwd_ptr[d]
                s = _dot_f16(qdense, fwd_comp, fwd_val, s0, fwd_ptr[d + 1], tab)
                if s > 0 and (size < k or not _worse(s, s0, hs[0], hr[0])):
                    if _is_new(hs, hr, size, s0, fwd_ptr, tail_ptr, n_main, stamp, sv):
                        size = heap_push(hs, hr, size, k, s, s0)
    # documents added after the build: scored exhaustively
    n_tail = tail_ptr.shape[0] - 1
    nnz = fwd_ptr[n_main]
    for i in range(n_tail):
        if deleted[n_main + i] != 0:
            continue
        s = _dot_f16(qdense, tail_comp, tail_val, tail_ptr[i], tail_ptr[i + 1], tab)
        key = nnz + tail_ptr[i]
        if s > 0 and (size < k or not _worse(s, key, hs[0], hr[0])):
            size = heap_push(hs, hr, size, k, s, key)
    for j in range(nq):
        qdense[q_idx[j]] = 0.0
    heap_drain(hs, hr, size, out_s, out_r)
    for i in range(size):  # forward-index offsets back to rows, for the k results only
        out_r[i] = _key_row(fwd_ptr, tail_ptr, n_main, out_r[i])


@_njit()
def _seismic_range(q0: Int, q1: Int, q_ptr: np.ndarray, q_idx: np.ndarray, q_val: np.ndarray, k: Int, query_cut: Int,
                   heap_factor: Float, sort_blocks: bool, n_knn: Int, term_blk_ptr: np.ndarray, blk_ptr: np.ndarray,
                   post_off: np.ndarray, post_len: np.ndarray, term_grp_ptr: np.ndarray, grp_ptr: np.ndarray,
                   sum_term: np.ndarray, sum_tdir: np.ndarray, grp_tptr: np.ndarray, sum_dir: np.ndarray, sum_blk: np.ndarray, sum_code: np.ndarray,
                   blk_min: np.ndarray, blk_quant: np.ndarray,
                   fwd_ptr: np.ndarray, fwd_comp: np.ndarray, fwd_val: np.ndarray, tab: np.ndarray,
                   has_del: bool, deleted: np.ndarray, tail_ptr: np.ndarray, tail_comp: np.ndarray, tail_val: np.ndarray,
                   n_main: Int, knn: np.ndarray, qdense: np.ndarray, stamp: np.ndarray, sv0: Int, blk_acc: np.ndarray,
                   blk_idx: np.ndarray, out_s: np.ndarray, out_r: np.ndarray) -> None:
    hs = np.empty(k, np.float32)
    hr = np.empty(k, np.int64)
    for qi in range(q0, q1):
        s, e = q_ptr[qi], q_ptr[qi + 1]
        _seismic_one(q_idx[s:e], q_val[s:e], k, query_cut, heap_factor, sort_blocks, n_knn,
                     term_blk_ptr, blk_ptr, post_off, post_len, term_grp_ptr, grp_ptr, sum_term, sum_tdir, grp_tptr, sum_dir, sum_blk,
                     sum_code, blk_min, blk_quant, fwd_ptr, fwd_comp, fwd_val, tab, has_del, deleted,
                     tail_ptr, tail_comp, tail_val, n_main, knn, qdense, stamp, np.int32(sv0 + qi - q0),
                     blk_acc, blk_idx, hs, hr, out_s[qi], out_r[qi])


@_njit()
def seismic_search_serial(q_ptr: np.ndarray, q_idx: np.ndarray, q_val: np.ndarray, k: Int, query_cut: Int,
                          heap_factor: Float, sort_blocks: bool, n_knn: Int, term_blk_ptr: np.ndarray,
                          blk_ptr: np.ndarray, post_off: np.ndarray, post_len: np.ndarray, term_grp_ptr: np.ndarray,
                          grp_ptr: np.ndarray, sum_term: np.ndarray, sum_tdir: np.ndarray, grp_tptr: np.ndarray, sum_dir: np.ndarray, sum_blk: np.ndarray,
                          sum_code: np.ndarray, blk_min: np.ndarray, blk_quant: np.ndarray, fwd_ptr: np.ndarray,
                          fwd_comp: np.ndarray, fwd_val: np.ndarray, tab: np.ndarray, has_del: bool, deleted: np.ndarray, tail_ptr: np.ndarray, tail_comp: np.ndarray,
                          tail_val: np.ndarray, n_main: Int, knn: np.ndarray, qdense: np.ndarray, stamp: np.ndarray,
                          sv0: Int, blk_acc: np.ndarray, blk_idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Seismic search on the calling thread (the low-latency path; releases the GIL).

    Scratch comes from the caller: qdense (dim, zeros), stamp (rows, int32; values below sv0
    only; used when k > 32), blk_acc (max blocks per list). Queries get stamps sv0, sv0+1, ...
    ``has_del``: whether any ``deleted`` byte is set (when not, no tombstone is read).
    """
    nq = q_ptr.shape[0] - 1
    out_s = np.empty((nq, k), np.float32)
    out_r = np.empty((nq, k), np.int64)
    _seismic_range(0, nq, q_ptr, q_idx, q_val, k, query_cut, heap_factor, sort_blocks, n_knn,
                   term_blk_ptr, blk_ptr, post_off, post_len, term_grp_ptr, grp_ptr, sum_term, sum_tdir, grp_tptr, sum_dir, sum_blk,
                   sum_code, blk_min, blk_quant, fwd_ptr, fwd_comp, fwd_val, tab, has_del, deleted,
                   tail_ptr, tail_comp, tail_val, n_main, knn, qdense, stamp, sv0, blk_acc, blk_idx, out_s, out_r)
    return out_s, out_r


@_njit(parallel=True)
def seismic_search_parallel(q_ptr: np.ndarray, q_idx: np.ndarray, q_val: np.ndarray, k: Int, query_cut: Int,
                            heap_factor: Float, sort_blocks: bool, n_knn: Int, term_blk_ptr: np.ndarray,
                            blk_ptr: np.ndarray, post_off: np.ndarray, post_len: np.ndarray, term_grp_ptr: np.ndarray,
                            grp_ptr: np.ndarray, sum_term: np.ndarray, sum_tdir: np.ndarray, grp_tptr: np.ndarray, sum_dir: np.ndarray, sum_blk: np.ndarray,
                            sum_code: np.ndarray, blk_min: np.ndarray, blk_quant: np.ndarray, fwd_ptr: np.ndarray,
                            fwd_comp: np.ndarray, fwd_val: np.ndarray, tab: np.ndarray, has_del: bool,
                            deleted: np.ndarray, tail_ptr: np.ndarray, tail_comp: np.ndarray,
                            tail_val: np.ndarray, n_main: Int, knn: np.ndarray, dim: Int, max_blocks: Int,
                            n_chunks: Int) -> tuple[np.ndarray, np.ndarray]:
    """Seismic search over a batch on all threads (queries split into n_chunks ranges)."""
    nq = q_ptr.shape[0] - 1
    out_s = np.empty((nq, k), np.float32)
    out_r = np.empty((nq, k), np.int64)
    chunk = (nq + n_chunks - 1) // n_chunks
    n_rows = deleted.shape[0]
    for c in prange(n_chunks):
        qdense = np.zeros(dim, np.float32)
        stamp = np.zeros(n_rows, np.int32)
        blk_acc = np.empty(max(max_blocks, 1), np.float32)
        blk_idx = np.empty(max(max_blocks, 1), np.int64)
        q0 = c * chunk
        _seismic_range(q0, min(nq, (c + 1) * chunk), q_ptr, q_idx, q_val, k, query_cut, heap_factor,
                       sort_blocks, n_knn, term_blk_ptr, blk_ptr, post_off, post_len, term_grp_ptr, grp_ptr,
                       sum_term, sum_tdir, grp_tptr, sum_dir, sum_blk, sum_code, blk_min, blk_quant, fwd_ptr, fwd_comp, fwd_val, tab,
                       has_del, deleted,
                       tail_ptr, tail_comp, tail_val, n_main, knn, qdense, stamp, np.int32(1), blk_acc,
                       blk_idx, out_s, out_r)
    return out_s, out_r


# ------------------------------------------------------------------------------- filtered exact
# A filter that allows few documents is answered by scoring exactly those rows on the forward index
# (the same float16 dot product as the Seismic visit, so scores equal the approximate path's).


@_njit()
def _rows_range(q0: Int, q1: Int, q_ptr: np.ndarray, q_idx: np.ndarray, q_val: np.ndarray, k: Int, rows: np.ndarray,
                fwd_ptr: np.ndarray, fwd_comp: np.ndarray, fwd_val: np.ndarray, tab: np.ndarray,
                tail_ptr: np.ndarray, tail_comp: np.ndarray, tail_val: np.ndarray, n_main: Int, qdense: np.ndarray,
                out_s: np.ndarray, out_r: np.ndarray) -> None:
    hs = np.empty(k, np.float32)
    hr = np.empty(k, np.int64)
    for qi in range(q0, q1):
        s0, e0 = q_ptr[qi], q_ptr[qi + 1]
        for j in range(s0, e0):
            qdense[q_idx[j]] = q_val[j]
        size: Int = 0
        for i in range(rows.shape[0]):
            d = rows[i]
            if d < n_main:
                s = _dot_f16(qdense, fwd_comp, fwd_val, fwd_ptr[d], fwd_ptr[d + 1], tab)
            else:
                t = d - n_main
                s = _dot_f16(qdense, tail_comp, tail_val, tail_ptr[t], tail_ptr[t + 1], tab)
            if s > 0 and (size < k or not _worse(s, d, hs[0], hr[0])):
                size = heap_push(hs, hr, size, k, s, np.int64(d))
        for j in range(s0, e0):
            qdense[q_idx[j]] = 0.0
        heap_drain(hs, hr, size, out_s[qi], out_r[qi])


@_njit()
def rows_search_serial(q_ptr: np.ndarray, q_idx: np.ndarray, q_val: np.ndarray, k: Int, rows: np.ndarray,
                       fwd_ptr: np.ndarray, fwd_comp: np.ndarray, fwd_val: np.ndarray, tab: np.ndarray,
                       tail_ptr: np.ndarray, tail_comp: np.ndarray, tail_val: np.ndarray, n_main: Int,
                       qdense: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k over ``rows`` only (int64, ascending; main rows then tail rows) on the calling
    thread; ``qdense`` is caller scratch (dim zeros, left zeroed). Ties by row ascending."""
    nq = q_ptr.shape[0] - 1
    out_s = np.empty((nq, k), np.float32)
    out_r = np.empty((nq, k), np.int64)
    _rows_range(0, nq, q_ptr, q_idx, q_val, k, rows, fwd_ptr, fwd_comp, fwd_val, tab, tail_ptr, tail_comp, tail_val,
                n_main, qdense, out_s, out_r)
    return out_s, out_r


@_njit(parallel=True)
def rows_search_parallel(q_ptr: np.ndarray, q_idx: np.ndarray, q_val: np.ndarray, k: Int, rows: np.ndarray,
                         fwd_ptr: np.ndarray, fwd_comp: np.ndarray, fwd_val: np.ndarray, tab: np.ndarray,
                         tail_ptr: np.ndarray, tail_comp: np.ndarray, tail_val: np.ndarray, n_main: Int, dim: Int,
                         n_chunks: Int) -> tuple[np.ndarray, np.ndarray]:
    """:func:`rows_search_serial` for a batch, queries split into n_chunks ranges over the threads."""
    nq = q_ptr.shape[0] - 1
    out_s = np.empty((nq, k), np.float32)
    out_r = np.empty((nq, k), np.int64)
    chunk = (nq + n_chunks - 1) // n_chunks
    for c in prange(n_chunks):
        qdense = np.zeros(dim, np.float32)
        _rows_range(c * chunk, min(nq, (c + 1) * chunk), q_ptr, q_idx, q_val, k, rows, fwd_ptr, fwd_comp, fwd_val,
                    tab, tail_ptr, tail_comp, tail_val, n_main, qdense, out_s, out_r)
    return out_s, out_r


def rows_search_ref(q_ptr: np.ndarray, q_idx: np.ndarray, q_val: np.ndarray, k: int, rows: np.ndarray,
                    vectors: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """NumPy reference of rows_search_*: ``vectors[d]`` is row d's (term ids, float32 values)."""
    nq = q_ptr.shape[0] - 1
    out_s = np.empty((nq, k), np.float32)
    out_r = np.empty((nq, k), np.int64)
    for i in range(nq):
        q = dict(zip(q_idx[q_ptr[i]:q_ptr[i + 1]].tolist(), q_val[q_ptr[i]:q_ptr[i + 1]].tolist()))
        scores = np.zeros(len(vectors), np.float32)
        for d in rows.tolist():
            qv = np.array([q.get(c, 0.0) for c in vectors[d][0].tolist()], np.float32)
            scores[d] = dot_f16_ref(qv * np.asarray(vectors[d][1], np.float32))
        out_s[i], out_r[i] = topk_ref(scores, k)
    return out_s, out_r


def seismic_one_ref(q_idx: np.ndarray, q_val: np.ndarray, k: int, query_cut: int, heap_factor: float,
                    arrays: dict[str, np.ndarray], n_knn: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Pure-Python/NumPy reference of the Seismic query algorithm (``sort_blocks``: the first
    non-empty list best block first, the others in block order).

    ``arrays`` holds the index arrays by their SeismicIndex names. Slow; for tests on tiny data.
    """
    a = arrays
    tab = F16_TABLE
    q = dict(zip(q_idx.tolist(), q_val.tolist()))
    n_main = a["fwd_ptr"].shape[0] - 1

    def score(d: int) -> np.float32:
        if d < n_main:
            s, e = a["fwd_ptr"][d], a["fwd_ptr"][d + 1]
            comp, val = a["fwd_comp"][s:e], tab[a["fwd_val"][s:e]]
        else:
            i = d - n_main
            s, e = a["tail_ptr"][i], a["tail_ptr"][i + 1]
            comp, val = a["tail_comp"][s:e], tab[a["tail_val"][s:e]]
        return dot_f16_ref(np.array([q.get(c, 0.0) for c in comp.tolist()], np.float32) * val)

    best: list[tuple[float, int]] = []  # kept sorted by (score desc, row asc)
    visited = set()

    def offer(d: int) -> None:
        if d in visited:
            return
        visited.add(d)
        if a["deleted"][d]:
            return
        s = score(d)
        if s > 0:
            best.append((float(s), int(d)))
            best.sort(key=lambda x: (-x[0], x[1]))
            del best[k:]

    comps = summary_comps(a["sum_term"], a["sum_tdir"])
    order = np.argsort(-q_val, kind="mergesort")[: min(query_cut, q_idx.size)]
    first = True
    for j in order:
        t = int(q_idx[j])
        if q_val[j] <= 0:
            break
        gb0, gb1 = a["term_blk_ptr"][t], a["term_blk_ptr"][t + 1]
        nb = gb1 - gb0
        if nb == 0:
            continue
        acc = np.zeros(nb, np.float32)
        g0 = a["term_grp_ptr"][t]
        for g in range(g0, a["term_grp_ptr"][t + 1]):
            for e in range(a["grp_ptr"][g], a["grp_ptr"][g + 1]):
                c = int(comps[e])
                if c in q:
                    b = (g - g0) * GROUP + int(a["sum_blk"][e])
                    deq = a["blk_min"][gb0 + b] + np.float32(a["sum_code"][e]) * a["blk_quant"][gb0 + b]
                    acc[b] += np.float32(q[c]) * deq
        # the first non-empty list best block first, the others in block order
        visit = np.argsort(-acc, kind="stable") if first else np.arange(nb)
        for b in visit:
            if len(best) == k and acc[b] < np.float32(heap_factor) * best[-1][0]:
                if first:
                    break
                continue
            for p in range(a["blk_ptr"][gb0 + b], a["blk_ptr"][gb0 + b + 1]):
                offer(int(np.searchsorted(a["fwd_ptr"], a["post_off"][p], side="right")) - 1)
        first = False
    if n_knn > 0 and best:
        for _, r in list(best):
            if r < n_main:
                for d in a["knn"][r, :n_knn]:
                    if d >= 0:
                        offer(int(d))
    for i in range(a["tail_ptr"].shape[0] - 1):
        offer(n_main + i)
    out_s = np.full(k, -np.inf, np.float32)
    out_r = np.full(k, -1, np.int64)
    for i, (s, r) in enumerate(best):
        out_s[i], out_r[i] = s, r
    return out_s, out_r
