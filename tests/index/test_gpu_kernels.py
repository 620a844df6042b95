"""The Triton kernels of the approximate GPU path, run on the CPU under Triton's interpreter
(TRITON_INTERPRET=1, in a subprocess because Triton reads it at import), against the torch-op path
that computes the same sums. Skipped where Triton is not installed. Known to pass with Triton 3.9
and NumPy 2.4; Triton 3.6's interpreter with NumPy 2.5 cannot take data-dependent loop bounds (the
compiled kernels are unaffected)."""

import os
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("torch")
pytest.importorskip("triton")

SCRIPT = textwrap.dedent(
    """
    import numpy as np, scipy.sparse as sp, torch
    from lsr.index.sparse import SparseBatch
    from lsr.index import gpu, gpu_kernels

    rng = np.random.default_rng(3)
    # rows of 0 to 100 non-zeros: longer than one BLOCK_N (64), and empty rows
    n, dim = 240, 200
    lens = rng.integers(0, 100, n); lens[:5] = 0
    ptr = np.concatenate([[0], np.cumsum(lens)]).astype(np.int64)
    idx = np.concatenate([np.sort(rng.choice(dim, l, replace=False)) for l in lens]).astype(np.int32)
    val = rng.random(ptr[-1]).astype(np.float32)
    docs = SparseBatch(ptr, idx, val, dim)
    Q = sp.random(9, dim, density=0.08, random_state=rng, format="csr", dtype=np.float32).toarray()
    Q[0] = 0  # a query with no terms
    qs = SparseBatch.from_dense(Q)
    layout = gpu.BlockLayout.from_postings(docs, n_postings=40, block_size=8, summary_energy=0.7)
    deleted = rng.random(n) < 0.1
    always = np.arange(200, 240)  # a block of 40 rows (more than one BLOCK_C) also met in other blocks
    kw = dict(k=10, mode="approx", query_cut=4, heap_factor=0.8)
    ref = gpu.GpuIndex.build(docs, device="cpu", layout=layout, deleted=deleted, always=always)
    a = ref.search(qs, **kw)
    gpu_kernels.available = lambda device: True  # take the kernel path on the CPU (interpreter)
    tri = gpu.GpuIndex.build(docs, device="cpu", layout=layout, deleted=deleted, always=always)
    assert tri._shards[0].fwd_idx32 is not None and ref._shards[0].fwd_idx32 is None

    # 1. the summary join: the same padded scores as the torch ops
    sh = tri._shards[0]
    qd = gpu._PaddedQueries.of(qs, tri._pinned).to(sh.device, torch)
    w, pos = torch.topk(qd.val, 4, dim=1)
    terms = torch.where(w > 0, torch.gather(qd.comp, 1, pos), torch.full_like(pos, -1))
    tbase = sh.term_ptr[terms.clamp(min=0)]
    want = torch.zeros(terms.numel() * sh.max_blocks)
    gpu._summary_scores_ref(terms, tbase, qd, sh, want, torch)
    got = torch.zeros_like(want)
    gpu_kernels.summary_scores(terms, tbase, qd.comp, qd.val, qd.length, sh.ent_ptr, sh.ent_key, sh.ent_blk,
                               sh.ent_val, got, dim=dim, max_blocks=sh.max_blocks, steps=sh.search_steps)
    assert int((want != 0).sum()) > 50
    np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-5, atol=1e-6)

    # 2. the whole search through both kernels equals the torch-op path: deleted rows stay out,
    # rows met in several blocks (and in the always-scored block) come once
    # under both scoring layouts: chunks of each query's candidate row, and a program per block
    # and in the static step (no data-dependent size: every block slot a program, widest matrices)
    import os
    for mode, static in (("rows", "0"), ("blocks", "0"), ("rows", "1"), ("blocks", "1")):
        os.environ["LSR_GPU_SCORING"] = mode
        os.environ["LSR_GPU_STATIC"] = static
        b = tri.search(qs, **kw)
        np.testing.assert_array_equal(a.rows, b.rows)
        np.testing.assert_allclose(a.scores, b.scores, rtol=1e-5)
        assert (b.rows[0] == -1).all()
        assert not np.isin(b.rows, np.flatnonzero(deleted)).any()
        for r in b.rows:
            assert len(set(r[r >= 0].tolist())) == (r >= 0).sum()
        if static == "1":  # one query at a time (a batch of one once passed the kernels a stride-0 array)
            one = np.concatenate([tri.search(qs[i : i + 1], **kw).rows for i in range(len(qs))])
            np.testing.assert_array_equal(a.rows, one)
    os.environ["LSR_GPU_STATIC"] = "0"
    # tiles in flight: the sized step's tiles interleaved at each wait (two at once, three tiles)
    # give the rows of one tile after another
    for inflight in ("1", "2"):
        os.environ["LSR_GPU_INFLIGHT"] = inflight
        b = tri.search(qs, tile=3, **kw)
        np.testing.assert_array_equal(a.rows, b.rows)
        np.testing.assert_allclose(a.scores, b.scores, rtol=1e-5)
    os.environ["LSR_GPU_STATIC"] = "auto"
    # values that float16 holds exactly (as an index stores them) are read by the kernel as float16
    assert sh.fwd_valk.dtype == torch.float32
    half_docs = SparseBatch(ptr, idx, val.astype(np.float16).astype(np.float32), dim)
    h_tri = gpu.GpuIndex.build(half_docs, device="cpu", layout=layout, deleted=deleted, always=always)
    assert h_tri._shards[0].fwd_valk.dtype == torch.float16
    gpu_kernels.available = lambda device: False
    ha = gpu.GpuIndex.build(half_docs, device="cpu", layout=layout, deleted=deleted, always=always).search(qs, **kw)
    gpu_kernels.available = lambda device: True
    for static in ("0", "1"):
        os.environ["LSR_GPU_STATIC"] = static
        hb = h_tri.search(qs, **kw)
        np.testing.assert_array_equal(ha.rows, hb.rows)
        np.testing.assert_allclose(ha.scores, hb.scores, rtol=1e-5)
    for var, bad in (("LSR_GPU_STATIC", "sometimes"), ("LSR_GPU_SCORING", "neither"), ("LSR_GPU_INFLIGHT", "0")):
        os.environ[var] = bad
        try:
            h_tri.search(qs, **kw)
            raise AssertionError(f"a bad {var} was taken")
        except ValueError as exc:
            assert var in str(exc)
        del os.environ[var]  # back to the default

    # 3. one candidate stage, whole padded matrices: every block of every query's top terms is
    # selected (documents met in several blocks), both layouts write the same rows and scores, and
    # each score is the exact dot product
    c = terms.shape[1]
    nblk = torch.where(terms >= 0, sh.term_ptr[terms.clamp(min=0) + 1] - tbase, torch.zeros_like(tbase))
    sel = torch.arange(sh.max_blocks)[None, None, :] < nblk[:, :, None]
    q, blk = gpu._selected(sel, tbase, None, torch)
    size = sh.block_ptr[blk + 1] - sh.block_ptr[blk]
    per_q = torch.zeros(len(qs), dtype=torch.int64).index_add_(0, q, size)
    col = torch.cumsum(size, 0) - size - (torch.cumsum(per_q, 0) - per_q)[q]
    mats = {}
    for mode in ("rows", "blocks"):
        mat_s = torch.full((len(qs), int(per_q.max())), -float("inf"))
        mat_r = torch.full((len(qs), int(per_q.max())), -1, dtype=torch.int32)
        gpu_kernels.score_blocks(q, blk, col, sh.block_ptr, sh.block_docs, sh.fwd_ptr, sh.fwd_idx32, sh.fwd_val,
                                 qd.dense, gpu._seen_sets(sh, len(qs), torch), mat_s, mat_r,
                                 per_q=per_q if mode == "rows" else None, block_c=32 if mode == "rows" else 16)
        mats[mode] = (mat_s.numpy(), mat_r.numpy())
    np.testing.assert_array_equal(mats["rows"][1], mats["blocks"][1])
    np.testing.assert_array_equal(mats["rows"][0], mats["blocks"][0])
    try:  # a view the kernels would read out of bounds is refused
        gpu_kernels.score_blocks(q[:1].expand(q.numel()), blk, col, sh.block_ptr, sh.block_docs, sh.fwd_ptr,
                                 sh.fwd_idx32, sh.fwd_val, qd.dense, gpu._seen_sets(sh, len(qs), torch), mat_s, mat_r)
        raise AssertionError("a stride-0 sel_q was taken")
    except ValueError as exc:
        assert "sel_q must be contiguous" in str(exc)
    ms, mr = mats["rows"]
    dense_docs = sp.csr_matrix((val, idx, ptr), shape=(n, dim)).toarray()
    live = (mr >= 0) & ~deleted[np.maximum(mr, 0)]
    exact = np.einsum("qd,qnd->qn", Q, dense_docs[np.maximum(mr, 0)])
    want_s = np.where(live & (exact > 0), exact, -np.inf).astype(np.float32)
    np.testing.assert_allclose(ms, want_s, rtol=2e-3, atol=1e-4)  # forward values are stored as fp16
    assert int(np.isfinite(ms).sum()) > 200
    # 4. ties: every document four times over, few distinct weights; with every block kept the
    # kernel path returns exactly ExactIndex's rows, equal scores by row ascending
    from lsr.index import ExactIndex
    os.environ["LSR_GPU_SCORING"] = "rows"
    base = sp.random(50, dim, density=0.1, random_state=rng, format="csr", dtype=np.float32)
    base.data = np.round(base.data * 8) / 8 + 0.125
    D = sp.vstack([base] * 4).tocsr()
    tdocs = SparseBatch(D.indptr.astype(np.int64), D.indices.astype(np.int32), D.data.astype(np.float32), dim)
    TQ = sp.random(12, dim, density=0.15, random_state=rng, format="csr", dtype=np.float32).toarray()
    tqs = SparseBatch.from_dense((np.round(TQ * 4) / 4).astype(np.float32))
    want = ExactIndex.build(tdocs).search(tqs, k=10)
    assert (want.scores[:, 1:] == want.scores[:, :-1]).sum() > 20  # the data has ties
    ti = gpu.GpuIndex.build(tdocs, device="cpu", layout=gpu.BlockLayout.from_postings(tdocs, n_postings=1000,
                                                                                      block_size=8))
    for static in ("0", "1"):
        os.environ["LSR_GPU_STATIC"] = static
        got = ti.search(tqs, k=10, mode="approx", query_cut=1000, heap_factor=1e-6)
        np.testing.assert_array_equal(got.rows, want.rows)
    os.environ["LSR_GPU_STATIC"] = "auto"
    print("ok", int((a.rows >= 0).sum()))
    """
)


def test_triton_kernels_match_torch_path_under_interpreter():
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    proc = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().startswith("ok")
    assert int(proc.stdout.split()[-1]) > 50  # the searches found hits
