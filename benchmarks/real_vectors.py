"""Real SPLADE vectors for the index benchmarks: encode the local corpora once, then replicate them.

``encode`` writes SPLADE-tiny encodings of every corpus (documents and queries) under ``--data``
(BEIR folders: beir/scifact, beir/nfcorpus, msmarco-sample; about 13.8k documents and 4.4k queries
in all) to ``--out``, one ``NAME-docs.npz`` / ``NAME-queries.npz`` pair per corpus; files already
there are kept. It runs on the CPU or a GPU (``--device``).

``replicate`` (also :func:`load`) concatenates them and copies them up to ``--n-docs`` documents.
Copy ``c`` applies a term permutation ``P_c`` to its documents (copy 0 is the original); each
query is a random original query pushed through the permutation of a random copy, so it finds
its own neighbours in that copy. ``P_c`` only permutes terms among terms of similar document
frequency (windows of ``perm_window`` df ranks): weights, lengths, the df law (a few very frequent
terms, a long tail) and the overlap of frequent terms between copies stay those of real SPLADE
output, while each copy's rare terms are its own.

    python benchmarks/real_vectors.py encode --data ../shared/data --out .cache/bench/real --device cpu
    python benchmarks/real_vectors.py replicate --vectors .cache/bench/real --n-docs 1000000 --out /tmp/real1m

``pack`` writes the encodings as one compressed file a third their size (term ids as uint16 where the
vocabulary allows, document weights as float16, which is what the indexes store anyway) for a copy
to another machine; ``unpack`` restores the per-corpus files there.

    python benchmarks/real_vectors.py pack --vectors .cache/bench/real --out .devgpu/real-compact.npz
    python benchmarks/real_vectors.py unpack --packed .devgpu/real-compact.npz --out /tmp/real
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from lsr.index.sparse import SparseBatch, load_vectors, save_vectors

CORPORA = {"scifact": "beir/scifact", "nfcorpus": "beir/nfcorpus", "msmarco-sample": "msmarco-sample"}
ENCODER_NOTE = "encoder.txt"


def encoder_name(vectors: Path) -> str:
    """The model that encoded the vectors under ``vectors`` (``splade-tiny`` when not recorded, the default)."""
    note = Path(vectors) / ENCODER_NOTE
    return note.read_text().strip() if note.exists() else "splade-tiny"


def encode(data: Path, out: Path, *, device: str | None, model: str = "splade-tiny", batch_size: int = 32,
           limit: int | None = None) -> None:
    """Encode every corpus and its queries under ``data`` into ``out`` (skips files already written)."""
    from lsr.index.corpus import read_corpus, read_queries
    from lsr.models import SparseEncoder

    out.mkdir(parents=True, exist_ok=True)
    enc = SparseEncoder.load(model, device=device)
    (out / ENCODER_NOTE).write_text(f"{model}\n")  # which model made these vectors (benchmark reports name it)
    for name, sub in CORPORA.items():
        folder = data / sub
        for kind in ("queries", "docs"):
            path = out / f"{name}-{kind}.npz"
            if path.exists():
                print(f"{path}: exists, kept", file=sys.stderr)
                continue
            if kind == "docs":
                pairs = [(d.id, d.full_text) for d in read_corpus(folder, limit)]
                fn = enc.encode_documents
            else:
                pairs = list(read_queries(folder).items())[:limit]
                fn = enc.encode_queries
            t0 = time.perf_counter()
            batch = fn([t for _, t in pairs], batch_size=batch_size, show_progress_bar=True)
            dt = time.perf_counter() - t0
            tmp = path.with_name(path.stem + ".tmp.npz")
            save_vectors(tmp, batch, [i for i, _ in pairs])
            tmp.replace(path)
            print(f"{path}: {len(batch)} {kind}, {batch.nnz / max(len(batch), 1):.1f} nnz each, "
                  f"{dt:.1f}s ({len(batch) / dt:.1f}/s)", file=sys.stderr)


def originals(vectors: Path) -> tuple[SparseBatch, SparseBatch]:
    """All corpora's documents and all their queries, concatenated (corpus order as in CORPORA)."""
    docs, queries = [], []
    for name in CORPORA:
        for kind, acc in (("docs", docs), ("queries", queries)):
            path = vectors / f"{name}-{kind}.npz"
            if not path.exists():
                raise FileNotFoundError(f"{path}: not found; run `python benchmarks/real_vectors.py encode --out {vectors}`")
            acc.append(load_vectors(path)[0].with_vocab(None))
    return SparseBatch.concat(docs), SparseBatch.concat(queries)


def permutations(df: np.ndarray, n_copies: int, window: int, seed: int) -> np.ndarray:
    """(n_copies, dim) term maps: copy 0 the identity, the others shuffle terms inside windows of
    ``window`` consecutive document-frequency ranks (so the df law is kept)."""
    dim = df.shape[0]
    order = np.argsort(-df, kind="stable")  # df rank -> term
    rng = np.random.default_rng(seed)
    perms = np.empty((n_copies, dim), np.int32)
    perms[0] = np.arange(dim)
    for c in range(1, n_copies):
        shuffled = order.copy()
        for s in range(0, dim, window):
            rng.shuffle(shuffled[s : s + window])
        perms[c, order] = shuffled
    return perms


def _apply(batch: SparseBatch, perm: np.ndarray) -> SparseBatch:
    """The batch with every term t renamed perm[t] (each row re-sorted by term)."""
    n = len(batch)
    rows = np.repeat(np.arange(n, dtype=np.int64), np.diff(batch.indptr))
    idx = perm[batch.indices].astype(np.int64)
    order = np.lexsort((idx, rows))
    return SparseBatch(batch.indptr.copy(), idx[order].astype(np.int32), batch.values[order], batch.dim)


def replicate(docs: SparseBatch, queries: SparseBatch, n_docs: int, n_queries: int, *, window: int = 64,
              seed: int = 0) -> tuple[SparseBatch, SparseBatch]:
    """``n_docs`` documents from permuted copies of ``docs`` and ``n_queries`` queries, each a
    random query of ``queries`` mapped through a random copy's permutation."""
    n0 = len(docs)
    n_copies = -(-n_docs // n0)
    df = np.bincount(docs.indices, minlength=docs.dim)
    perms = permutations(df, n_copies, window, seed)
    parts = []
    for c in range(n_copies):
        part = docs if c == 0 else _apply(docs, perms[c])
        parts.append(part[: min(n0, n_docs - c * n0)])
    out_docs = SparseBatch.concat(parts)
    rng = np.random.default_rng([seed, 1])
    # a query copy whose documents were cut off by n_docs would have no own neighbours
    full = n_docs // n0 if n_docs >= n0 else 1
    src = rng.integers(0, len(queries), n_queries)
    copy = rng.integers(0, full, n_queries)
    qs = [_apply(queries[int(i) : int(i) + 1], perms[int(c)]) for i, c in zip(src, copy)]
    return out_docs, (SparseBatch.concat(qs) if qs else SparseBatch.empty(0, docs.dim))


def load(vectors: Path, n_docs: int, n_queries: int, *, window: int = 64, seed: int = 0
         ) -> tuple[SparseBatch, SparseBatch]:
    """The encoded corpora under ``vectors`` replicated to ``n_docs`` documents (see module doc)."""
    docs, queries = originals(vectors)
    return replicate(docs, queries, n_docs, n_queries, window=window, seed=seed)


def pack(vectors: Path, out: Path) -> None:
    """Every ``NAME-{docs,queries}.npz`` under ``vectors`` into one compressed file (see module doc)."""
    arrays: dict[str, np.ndarray] = {}
    vocab = None
    for name in CORPORA:
        for kind in ("docs", "queries"):
            path = vectors / f"{name}-{kind}.npz"
            if not path.exists():
                raise FileNotFoundError(f"{path}: not found; run `python benchmarks/real_vectors.py encode`")
            batch, ids = load_vectors(path)
            key = f"{name}-{kind}"
            arrays[f"{key}/indptr"] = batch.indptr.astype(np.int64)
            arrays[f"{key}/indices"] = batch.indices.astype(np.uint16 if batch.dim <= 1 << 16 else np.int32)
            arrays[f"{key}/values"] = batch.values.astype(np.float16 if kind == "docs" else np.float32)
            arrays[f"{key}/dim"] = np.asarray(batch.dim)
            arrays[f"{key}/ids"] = np.asarray(ids)
            vocab = batch.vocab if batch.vocab is not None else vocab
    if vocab is not None:
        arrays["vocab"] = np.asarray(vocab)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out, **arrays)  # type: ignore[arg-type]


def unpack(packed: Path, out: Path) -> None:
    """The per-corpus files of :func:`pack`'s output, under ``out``."""
    z = np.load(packed)
    vocab = tuple(z["vocab"].tolist()) if "vocab" in z.files else None
    out.mkdir(parents=True, exist_ok=True)
    for key in sorted({k.split("/")[0] for k in z.files if "/" in k}):
        batch = SparseBatch(z[f"{key}/indptr"].astype(np.int64), z[f"{key}/indices"].astype(np.int32),
                            z[f"{key}/values"].astype(np.float32), int(z[f"{key}/dim"]), vocab)
        save_vectors(out / f"{key}.npz", batch, z[f"{key}/ids"].tolist())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("encode", help="encode the corpora and queries once")
    e.add_argument("--data", type=Path, default=Path("../shared/data"), help="folder holding the BEIR folders")
    e.add_argument("--out", type=Path, default=Path(".cache/bench/real"))
    e.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda if available)")
    e.add_argument("--model", default="splade-tiny")
    e.add_argument("--batch-size", type=int, default=32)
    e.add_argument("--limit", type=int, default=None, help="first N records of each file (a speed check)")
    r = sub.add_parser("replicate", help="write a replicated collection (docs.npz, queries.npz)")
    r.add_argument("--vectors", type=Path, default=Path(".cache/bench/real"))
    r.add_argument("--n-docs", type=int, default=1_000_000)
    r.add_argument("--n-queries", type=int, default=1_000)
    r.add_argument("--perm-window", type=int, default=64)
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--out", type=Path, required=True)
    pk = sub.add_parser("pack", help="all encodings in one compressed file, for a copy to another machine")
    pk.add_argument("--vectors", type=Path, default=Path(".cache/bench/real"))
    pk.add_argument("--out", type=Path, required=True)
    up = sub.add_parser("unpack", help="restore the per-corpus files of a packed file")
    up.add_argument("--packed", type=Path, required=True)
    up.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    if args.cmd in ("pack", "unpack"):
        try:
            pack(args.vectors, args.out) if args.cmd == "pack" else unpack(args.packed, args.out)
        except FileNotFoundError as exc:
            print(f"real_vectors: {exc}", file=sys.stderr)
            return 2
        return 0
    if args.cmd == "encode":
        for name, sub_ in CORPORA.items():
            if not (args.data / sub_).is_dir():
                print(f"real_vectors: {args.data / sub_}: no such folder (--data)", file=sys.stderr)
                return 2
        encode(args.data, args.out, device=args.device, model=args.model, batch_size=args.batch_size, limit=args.limit)
        return 0
    if args.n_docs < 1 or args.n_queries < 0 or args.perm_window < 1:
        print("real_vectors: --n-docs and --perm-window must be >= 1, --n-queries >= 0", file=sys.stderr)
        return 2
    try:
        docs, queries = load(args.vectors, args.n_docs, args.n_queries, window=args.perm_window, seed=args.seed)
    except FileNotFoundError as exc:
        print(f"real_vectors: {exc}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    save_vectors(args.out / "docs.npz", docs)
    save_vectors(args.out / "queries.npz", queries)
    print(f"{len(docs)} docs ({docs.nnz / len(docs):.1f} nnz), {len(queries)} queries "
          f"({queries.nnz / max(len(queries), 1):.1f} nnz) in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
