"""One decoder training step (forward + backward through LoRA) with the vocabulary head on the pooled
span only (the echo's second copy, ``DecoderSpladeEncoder.forward_documents``) against the head on
every position of the row (``SpladeEncoder._pooled_logits``, the path before the span), same
weights, same documents; prints seconds per step and the largest difference between the two pooled
outputs as a markdown table.

    python benchmarks/decoder_step.py --data ../shared/data/beir/scifact --docs 4 --threads 1
"""

from __future__ import annotations

import argparse
import time


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="../shared/data/beir/scifact", help="a BEIR folder (its first documents)")
    ap.add_argument("--model", default="smollm2-135m", help="an lsr model name or a causal-LM folder")
    ap.add_argument("--docs", type=int, default=4, help="documents per step")
    ap.add_argument("--max-doc-length", type=int, default=192)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    ap.add_argument("--device", default=None)
    args = ap.parse_args(argv)

    import torch

    from lsr.index.corpus import read_corpus
    from lsr.models import SparseEncoder
    from lsr.models.pooling import splade_pool
    from lsr.models.splade import SpladeEncoder

    if args.threads:
        torch.set_num_threads(args.threads)
    docs = [d.full_text for _, d in zip(range(args.docs), read_corpus(args.data))]
    enc = SparseEncoder.load(args.model, kind="decoder", logit_shift=5.0, max_doc_length=args.max_doc_length,
                             device=args.device)
    enc.add_lora(r=16, lora_alpha=32, lora_dropout=0.0)
    enc.train()
    feats = enc.tokenize(docs, side="document")
    def every_position():  # the base hook, pooled with the encoder's own pooling and activation
        return splade_pool(*SpladeEncoder._pooled_logits(enc, feats), enc.pooling, enc.activation)

    paths = {"head on the pooled span (now)": lambda: enc.forward_documents(feats),
             "head on every position (before)": every_position}
    outs, secs = {}, {}
    for name, fwd in paths.items():
        for r in range(args.repeats + 1):  # the first step warms up
            t0 = time.perf_counter()
            d = fwd()
            d.sum().backward()
            enc.zero_grad(set_to_none=True)
            if r:
                secs[name] = secs.get(name, 0.0) + (time.perf_counter() - t0) / args.repeats
        outs[name] = d.detach()
    a, b = outs.values()
    tokens = int(feats["attention_mask"].sum())
    print(f"{args.docs} documents, {tokens} tokens with echo, threads {torch.get_num_threads()}, "
          f"device {enc.device}\n")
    print("| path | s per step (forward + backward) |\n|---|---:|")
    for name, s in secs.items():
        print(f"| {name} | {s:.2f} |")
    before, now = secs["head on every position (before)"], secs["head on the pooled span (now)"]
    print(f"\nspeed-up {before / now:.2f}x; largest difference of the pooled weights {float((a - b).abs().max()):.2e}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
