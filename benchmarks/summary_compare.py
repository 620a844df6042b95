"""Where lsr's Seismic index and pyseismic-lsr's differ on the same vectors: blocks, summary entries,
bytes per part, and whether lsr's energy cut keeps what the peer's rule keeps.

    python benchmarks/summary_compare.py --vectors .cache/bench/real      # real SPLADE-tiny vectors
    python benchmarks/summary_compare.py --synthetic 20000                # benchmarks/synthetic.py

Prints both indexes' space (the peer's own report), lsr's blocks and summary entries, and, over a sample
of posting lists, lsr's summary entries per block against the peer's energy-preserving rule (the
block's component-wise maximum, sorted, kept until its running sum reaches ``summary_energy`` of the
total, the crossing component included) applied to lsr's own blocks.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import index as bench  # noqa: E402

from lsr.index import SeismicIndex  # noqa: E402
from lsr.index import kernels as K  # noqa: E402
from lsr.index.sparse import SparseBatch, load_vectors  # noqa: E402


def peer_rule_counts(ix: SeismicIndex, energy: float, n_lists: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """lsr's summary entries per block, and what the peer's rule keeps for the same blocks."""
    a = ix._a  # the index's arrays (read-only here)
    fwd_ptr, fwd_comp, vals = a["fwd_ptr"], a["fwd_comp"], K.F16_TABLE[a["fwd_val"]]
    tbp, bp, rows = a["term_blk_ptr"], a["blk_ptr"].astype(np.int64), ix.post_rows()
    tgp, gp, sblk = a["term_grp_ptr"], a["grp_ptr"], a["sum_blk"]
    lists = np.flatnonzero(np.diff(tbp) > 3)
    got, want = [], []
    for t in np.random.default_rng(seed).choice(lists, min(n_lists, len(lists)), replace=False):
        for g in range(tgp[t], tgp[t + 1]):
            per_block = np.bincount(sblk[gp[g]:gp[g + 1]], minlength=K.GROUP)
            first = tbp[t] + (g - tgp[t]) * K.GROUP
            for j in range(min(K.GROUP, tbp[t + 1] - first)):
                b = first + j
                d = rows[bp[b]:bp[b + 1]]
                comp = np.concatenate([fwd_comp[fwd_ptr[x]:fwd_ptr[x + 1]] for x in d])
                val = np.concatenate([vals[fwd_ptr[x]:fwd_ptr[x + 1]] for x in d])
                mx = np.zeros(ix.dim, np.float32)
                np.maximum.at(mx, comp.astype(np.int64), val)
                v = np.sort(mx[mx > 0])[::-1]
                acc = np.cumsum(v)
                want.append(min(int(np.searchsorted(acc, energy * acc[-1], side="left")) + 1, v.size))
                got.append(int(per_block[j]))
    return np.asarray(got), np.asarray(want)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--vectors", default=None, help="folder of benchmarks/real_vectors.py encode (all its *-docs.npz)")
    ap.add_argument("--synthetic", type=int, default=0, help="documents from benchmarks/synthetic.py instead")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--lists", type=int, default=300, help="posting lists sampled for the energy-cut check")
    args = ap.parse_args(argv)
    if args.vectors:
        docs = SparseBatch.concat([load_vectors(p)[0] for p in sorted(Path(args.vectors).glob("*-docs.npz"))])
    else:
        from synthetic import generate

        docs = generate(args.synthetic or 20000, 10, 0)[0]
    print(f"{len(docs):,} documents, {docs.nnz / len(docs):.1f} non-zeros each; parameters {bench.BUILD}")
    peer = bench.Peer(docs, args.threads)
    print("pyseismic-lsr:\n" + peer.space_text.strip())
    ix = SeismicIndex.build(docs, **bench.BUILD, threads=args.threads)
    st = ix.stats()
    b = st["bytes"]
    summary = sum(b[k] for k in ("sum_term", "sum_tdir", "grp_tptr", "sum_blk", "sum_code", "sum_dir"))
    postings = b["post_off"] + b["post_len"] + b["blk_ptr"]
    print(f"lsr: total {st['bytes_total']:,} bytes; summaries {summary:,}; postings {postings:,}; forward index "
          f"{b['fwd_comp'] + b['fwd_val'] + b['fwd_ptr']:,}; {st['blocks']:,} blocks, {st['summary_entries']:,} "
          f"summary entries ({st['summary_entries'] / max(st['blocks'], 1):.1f} per block)")
    # entries vs bytes per entry: the peer reports bytes, not entries; its block count follows from
    # block_offsets (8 bytes per offset, one more offset than blocks per non-empty list)
    n_ent = max(st["summary_entries"], 1)
    n_lists = int(np.count_nonzero(np.diff(np.asarray(ix._a["term_blk_ptr"]))))
    grab = {k: int(v) for k, v in re.findall(r"(\w+): (\d+) Bytes", peer.space_text)}
    print(f"lsr summary bytes per entry {summary / n_ent:.3f} (per entry: sum_blk + sum_code 2; per distinct "
          f"(group, term), {int(ix._a['grp_tptr'][-1]):,} of them: sum_term 2; directories "
          f"{(b['sum_dir'] + b['sum_tdir']) / n_ent:.3f})")
    if "block_offsets" in grab and "summaries" in grab:
        peer_blocks = grab["block_offsets"] // 8 - n_lists
        print(f"pyseismic-lsr: ~{peer_blocks:,} blocks ({n_lists:,} lists); summaries {grab['summaries']:,} bytes; at "
              f"lsr's {st['summary_entries'] / max(st['blocks'], 1):.1f} entries per block "
              f"~{grab['summaries'] / max(peer_blocks * st['summary_entries'] / max(st['blocks'], 1), 1):.3f} bytes per entry")
    got, want = peer_rule_counts(ix, bench.BUILD["summary_energy"], args.lists, 0)
    print(f"energy cut on {len(got):,} sampled blocks: lsr keeps {got.mean():.2f} entries per block, the peer's rule "
          f"{want.mean():.2f} (blocks that differ: {int((got != want).sum())})")


if __name__ == "__main__":
    main()
