"""Document-encoding throughput and parity: lsr's SPLADE encoder (torch) vs sentence-transformers' SparseEncoder on
the same weights and texts, one run, plus lsr's ONNX export on CPU and where lsr's time goes.

    python benchmarks/encode.py --limit 300                                   # CPU, first 300 SciFact docs
    python benchmarks/encode.py --limit 0 --device cuda --batch-sizes 32,512 --precisions fp32,bf16 \\
        --model .lsr-gpu/models/splade-tiny --json out.json                  # GPU, the whole corpus
    bash benchmarks/gpu_encode.sh                                             # the same on a GPU machine

Each configuration (batch size x precision) runs lsr and sentence-transformers in the same precision
(bf16: lsr autocasts, ST's model is cast to bf16; fp32 keeps TF32 off for both); all runners are timed in
turns, the order rotating each round, ``--repeats`` rounds, best round kept. ``--max-tokens`` adds lsr runs
batched by a padded-token budget. A last, profiled lsr run (stages one after another, the device
synchronised after each) gives the time breakdown: tokenise, host->device, forward, sparse selection,
device->host, CSR assembly. Parity (max |diff|, top-10 agreement) is taken on the first ``--parity-docs``
rows. Prints markdown tables with machine, versions and parameters; ``--json`` writes the figures.
Also the inference-free query path vs a plain BM25 tokenisation (``--skip-queries`` leaves it out).

Measured 2026-11-27, before the encode pipeline (SPLADE-tiny, batch 32, 256 tokens; SciFact corpus in file order):

| machine | docs | ST docs/s | lsr docs/s | ratio | max abs diff | top-10 agreement |
|---|---|---|---|---|---|---|
| 2-core AMD EPYC, shared (load ~8), torch 2.13 CPU, `--limit 500` | 500 | 3.2 | 5.8 | 1.79x | 5.2e-06 | 1.0000 |
| H200, `--device cuda --limit 5183 --repeats 3 --precision fp32` | 5183 | 1024 | 3291 | 3.21x | 0 | 1.0000 |
| H200, same, lsr bf16 autocast (`--precision auto`) | 5183 | 1026 | 3613 | 3.52x | 9.1e-02 | 0.9897 |
| H200, bf16 autocast, `--batch-size 128` | 5183 | 1236 | 4614 | 3.73x | 9.1e-02 | 0.9897 |

Measured 2026-12-02 with the encode pipeline, 2-core AMD EPYC, shared (load ~10), torch 2.13 CPU,
`--limit 200 --batch-sizes 32,128 --repeats 2 --skip-onnx --skip-queries`:

| batch | ST docs/s | lsr docs/s | ratio | max abs diff | top-10 agreement |
|---|---|---|---|---|---|
| 32 | 6.4 | 9.9 | 1.54x | 5.0e-06 | 1.0000 |
| 128 | 3.6 | 10.4 | 2.86x | 0 | 1.0000 |

On the CPU the model is 99% of lsr's time (tokenise 0.9%, padding 94% real tokens); the pipeline is
for GPUs, where the model's share is small: `bash benchmarks/gpu_encode.sh` measures it there.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def _sync(device: str):
    import torch

    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo", encoding="utf-8"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def top10_agreement(a: np.ndarray, b: np.ndarray) -> float:
    k = 10
    ta = np.argsort(-a, axis=1, kind="stable")[:, :k]
    tb = np.argsort(-b, axis=1, kind="stable")[:, :k]
    agree = []
    for i in range(a.shape[0]):
        na = min(k, int((a[i] > 0).sum()))
        nb = min(k, int((b[i] > 0).sum()))
        if max(na, nb) == 0:
            agree.append(1.0)
            continue
        agree.append(len(set(ta[i, :na]) & set(tb[i, :nb])) / max(na, nb))
    return float(np.mean(agree))


def onnx_encoder(args, folder, threads):
    """The ONNX Runtime encoder of ``args.model``: ``--onnx`` as given, else exported to a temporary folder."""
    import tempfile

    from lsr.models.onnx import OnnxSparseEncoder, export_onnx

    path = args.onnx
    if path is None:
        path = Path(tempfile.mkdtemp(prefix="lsr-onnx-bench-")) / "model"
        export_onnx(folder, path)
    return OnnxSparseEncoder.load(path, threads=threads, max_doc_length=args.max_length)


def _dense_rows(out, m: int) -> np.ndarray:
    """The first ``m`` rows of an encoder's output as a float32 numpy array."""
    if hasattr(out, "indptr"):  # SparseBatch
        return out[:m].to_dense()
    return out.to_dense()[:m].float().cpu().numpy()


def bench_encoders(args, texts):
    import torch
    import sentence_transformers as st_mod
    from sentence_transformers import SparseEncoder as STSparseEncoder

    from lsr.models import SparseEncoder
    from lsr.models.base import EncodeProfile
    from lsr.models.hub import model_path

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    cuda = device.startswith("cuda")
    torch.backends.cuda.matmul.allow_tf32 = False  # fp32 means fp32 for both encoders
    torch.backends.cudnn.allow_tf32 = False
    folder = model_path(args.model)
    ours = SparseEncoder.load(folder, device=device, max_doc_length=args.max_length)
    precisions = [p for p in args.precisions.split(",") if p]
    if not cuda and "bf16" in precisions:
        print("bf16 runs need CUDA (lsr autocasts on the GPU only): CPU runs fp32 only", file=sys.stderr)
        precisions = [p for p in precisions if p != "bf16"] or ["fp32"]
    batch_sizes = [int(b) for b in args.batch_sizes.split(",") if b]
    st_models = {}
    if not args.skip_st:
        for prec in precisions:
            m = STSparseEncoder(str(folder), device=device)
            m.max_seq_length = args.max_length
            if prec == "bf16":
                m = m.to(torch.bfloat16)
            st_models[prec] = m

    def lsr_run(bs, prec, max_tokens=None):
        def run(x):
            ours.amp = prec == "bf16"
            return ours.encode_documents(x, batch_size=bs, max_tokens=max_tokens)
        return run

    def st_run(bs, prec):
        return lambda x: st_models[prec].encode_document(x, batch_size=bs, convert_to_tensor=True)

    runs: dict[tuple, object] = {}
    for bs in batch_sizes:
        for prec in precisions:
            runs[("lsr", bs, prec, None)] = lsr_run(bs, prec)
            if prec in st_models:
                runs[("st", bs, prec, None)] = st_run(bs, prec)
    if args.max_tokens:
        for prec in precisions:
            runs[("lsr", max(batch_sizes), prec, args.max_tokens)] = lsr_run(max(batch_sizes), prec, args.max_tokens)
    onnx = None
    if not args.skip_onnx and not cuda:
        onnx = onnx_encoder(args, folder, torch.get_num_threads())
        for bs in batch_sizes:
            runs[("onnx", bs, "fp32", None)] = (lambda b: lambda x: onnx.encode_documents(x, batch_size=b))(bs)

    for key, fn in runs.items():  # warm-up: kernels, allocator, tokenizer copies
        fn(texts[: max(64, key[1])])
    names = list(runs)
    times: dict[tuple, list[float]] = {k: [] for k in names}
    outs = {}
    for r in range(args.repeats):
        for key in names[r % len(names):] + names[: r % len(names)]:
            _sync(device)
            t0 = time.perf_counter()
            res = runs[key](texts)
            _sync(device)
            times[key].append(time.perf_counter() - t0)
            if r == 0:
                outs[key] = res
    n = len(texts)
    m = min(n, args.parity_docs)
    rows = []
    for key in names:
        system, bs, prec, mt = key
        row = {"system": system, "batch_size": bs, "precision": prec, "max_tokens": mt,
               "docs_per_s": n / min(times[key]), "seconds": [round(t, 3) for t in times[key]]}
        peer = ("st", bs, prec, None)
        if peer in times and system != "st":
            row["ratio_vs_st"] = row["docs_per_s"] / (n / min(times[peer]))
            a = _dense_rows(outs[key], m)
            b = _dense_rows(outs[peer], m)
            row["max_abs_diff_vs_st"] = float(np.abs(a - b).max())
            row["top10_agreement_vs_st"] = top10_agreement(a, b)
        if system != "st":
            row["avg_nnz"] = outs[key].nnz / n
        rows.append(row)
    outs.clear()

    prof_prec = "bf16" if "bf16" in precisions else precisions[0]
    prof_bs = max(batch_sizes)
    profile = EncodeProfile()
    ours.amp = prof_prec == "bf16"
    ours.encode_documents(texts, batch_size=prof_bs, max_tokens=args.max_tokens, profile=profile)
    pipelined = min(times[("lsr", prof_bs, prof_prec, args.max_tokens if args.max_tokens else None)])
    versions = {"torch": torch.__version__, "sentence-transformers": st_mod.__version__,
                "transformers": __import__("transformers").__version__,
                "tokenizers": __import__("tokenizers").__version__}
    if onnx is not None:
        versions["onnxruntime"] = __import__("onnxruntime").__version__
    return {
        "device": torch.cuda.get_device_name() if cuda else "cpu",
        "docs": n, "max_length": args.max_length, "repeats": args.repeats, "parity_docs": m,
        "threads": torch.get_num_threads(), "versions": versions, "runs": rows,
        "profile": {"batch_size": prof_bs, "precision": prof_prec, "max_tokens": args.max_tokens,
                    "pipelined_seconds": pipelined, **profile.as_dict()},
    }


def bench_queries(args, queries):
    """Inference-free query encoding (IdfQueryEncoder) vs plain BM25 tokenisation (tokens + counts)."""
    from lsr.models.hub import model_path
    from lsr.models.inference_free import IdfQueryEncoder, _load_tokenizer

    folder = model_path(args.model)
    tok = _load_tokenizer(folder)
    q = IdfQueryEncoder.from_corpus(tok, queries)  # any table will do for timing

    def plain():
        return [Counter(e.ids) for e in tok.encode_batch(queries, add_special_tokens=False)]

    def ours():
        return q.encode_queries(queries)

    t_plain, t_ours = [], []
    for _ in range(args.query_repeats):
        t0 = time.perf_counter(); plain(); t_plain.append(time.perf_counter() - t0)  # noqa: E702
        t0 = time.perf_counter(); ours(); t_ours.append(time.perf_counter() - t0)  # noqa: E702
    return {"queries": len(queries), "bm25_tokenise_ms": 1e3 * min(t_plain), "idf_encode_ms": 1e3 * min(t_ours),
            "ratio": min(t_ours) / min(t_plain)}


def print_tables(out, args):
    enc = out["encode"]
    v = enc["versions"]
    print(f"Machine: {out['cpu']} ({out['cores']} cores, torch threads {enc['threads']}), device {enc['device']}; "
          + ", ".join(f"{k} {val}" for k, val in v.items()))
    print(f"Corpus {out['corpus']}: {enc['docs']} docs, model {args.model}, max {enc['max_length']} tokens, "
          f"best of {enc['repeats']} alternating rounds; parity on the first {enc['parity_docs']} docs")
    print()
    print("| encoder | batch | precision | docs/s | ratio vs ST | max abs diff vs ST | top-10 agreement | avg nnz |")
    print("|---|---|---|---|---|---|---|---|")
    label = {"lsr": "lsr SparseEncoder (torch)", "st": "sentence-transformers SparseEncoder",
             "onnx": "lsr OnnxSparseEncoder (ONNX Runtime)"}
    for r in sorted(enc["runs"], key=lambda r: (r["precision"], r["batch_size"], r["max_tokens"] or 0,
                                                ["st", "lsr", "onnx"].index(r["system"]))):
        name = label[r["system"]] + (f", <= {r['max_tokens']} tokens/batch" if r["max_tokens"] else "")
        ratio = f"{r['ratio_vs_st']:.2f}x" if "ratio_vs_st" in r else ("1.00x" if r["system"] == "st" else "-")
        diff = f"{r['max_abs_diff_vs_st']:.2e}" if "max_abs_diff_vs_st" in r else "-"
        agree = f"{r['top10_agreement_vs_st']:.4f}" if "top10_agreement_vs_st" in r else "-"
        nnz = f"{r['avg_nnz']:.1f}" if "avg_nnz" in r else "-"
        print(f"| {name} | {r['batch_size']} | {r['precision']} | {r['docs_per_s']:.1f} | {ratio} | {diff} | {agree} | {nnz} |")
    p = enc["profile"]
    stages = [("tokenize", "token ids (fast tokenizer batch call + id lists; background thread in normal runs)"),
              ("collate", "padded host arrays, page-locked on CUDA (background thread in normal runs)"),
              ("h2d", "host -> device copies"), ("forward", "model + pooled (B, V) weights"),
              ("sparse", "pruning + non-zero selection on the device"),
              ("d2h", "non-zeros back to the host"), ("assemble", "CSR in input order (host)")]
    serial = sum(p[s] for s, _ in stages)
    print()
    print(f"Where lsr's time goes: profiled run, batch {p['batch_size']}, {p['precision']}"
          + (f", <= {p['max_tokens']} tokens/batch" if p["max_tokens"] else "")
          + f", {p['batches']} batches, stages serialised and the device synchronised after each; "
          f"padding: {p['tokens']} real of {p['padded_tokens']} tokens run ({p['tokens'] / max(1, p['padded_tokens']):.1%})")
    print()
    print("| stage | seconds | share | docs/s if alone |")
    print("|---|---|---|---|")
    for s, what in stages:
        rate = p["docs"] / p[s] if p[s] > 0 else float("inf")
        print(f"| {s}: {what} | {p[s]:.4f} | {p[s] / max(serial, 1e-12):.1%} | {rate:,.0f} |")
    print(f"| sum of stages (serial) | {serial:.4f} | 100.0% | {p['docs'] / max(serial, 1e-12):,.0f} |")
    print(f"| profiled call, wall | {p['total']:.4f} | | {p['docs'] / max(p['total'], 1e-12):,.0f} |")
    print(f"| normal call (pipelined), best round | {p['pipelined_seconds']:.4f} | | "
          f"{p['docs'] / max(p['pipelined_seconds'], 1e-12):,.0f} |")
    if "queries" in out:
        q = out["queries"]
        print()
        print(f"| query path ({q['queries']} SciFact queries) | ms | ratio |")
        print("|---|---|---|")
        print(f"| plain BM25 tokenisation (tokenizers + counts) | {q['bm25_tokenise_ms']:.1f} | 1.00x |")
        print(f"| lsr IdfQueryEncoder (torch-free) | {q['idf_encode_ms']:.1f} | {q['ratio']:.2f}x |")


def main(argv=None):
    from lsr.index.corpus import read_corpus, read_queries

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=str(REPO / "tests" / "data" / "beir" / "scifact"),
                    help="BEIR folder (corpus.jsonl[.gz], queries.jsonl)")
    ap.add_argument("--corpus", default=None, help="a corpus file (BEIR JSONL, .gz allowed); default: --data's")
    ap.add_argument("--model", default="splade-tiny", help="short name or folder (SPLADE, loadable by both)")
    ap.add_argument("--limit", type=int, default=500, help="encode the first N documents (0: all)")
    ap.add_argument("--batch-sizes", default="32", help="comma-separated batch sizes")
    ap.add_argument("--precisions", default="fp32", help="comma-separated: fp32, bf16 (bf16 on CUDA only)")
    ap.add_argument("--max-tokens", type=int, default=None,
                    help="also run lsr batched by this many padded tokens (largest batch size as the row cap)")
    ap.add_argument("--max-length", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--parity-docs", type=int, default=500, help="rows compared against sentence-transformers")
    ap.add_argument("--query-repeats", type=int, default=5)
    ap.add_argument("--device", default=None)
    ap.add_argument("--skip-st", action="store_true", help="leave sentence-transformers out")
    ap.add_argument("--skip-queries", action="store_true")
    ap.add_argument("--onnx", default=None, help="an `lsr export-onnx` folder of --model (default: export to a temp folder)")
    ap.add_argument("--skip-onnx", action="store_true", help="leave ONNX Runtime out (it runs on CPU only)")
    ap.add_argument("--json", default=None, help="also write the results here")
    args = ap.parse_args(argv)

    corpus = Path(args.corpus or args.data)
    texts = [d.full_text for d in read_corpus(corpus, args.limit or None)]
    enc = bench_encoders(args, texts)
    out = {"encode": enc, "cpu": cpu_name(), "cores": os.cpu_count(), "corpus": str(corpus), "model": str(args.model),
           "command": "python benchmarks/encode.py " + " ".join(argv if argv is not None else sys.argv[1:])}
    if not args.skip_queries:
        queries = list(read_queries(Path(args.data)).values())
        out["queries"] = bench_queries(args, queries)
    print_tables(out, args)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
    return out


if __name__ == "__main__":
    main()
