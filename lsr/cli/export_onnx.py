"""``lsr export-onnx MODEL OUT``: write a SPLADE or inference-free model as an ONNX folder that
``lsr serve`` runs through ONNX Runtime without torch (see :mod:`lsr.models.onnx`)."""

from __future__ import annotations

import argparse
import logging
import sys
import warnings

from lsr.index.cli import HelpFormatter

log = logging.getLogger("lsr.export_onnx")


def build_parser(prog: str = "lsr export-onnx") -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog=prog, formatter_class=HelpFormatter,
        description="Export a SPLADE or inference-free model to ONNX (dynamic batch and length; the pooled sparse "
                    "vector is computed in the graph) with its tokenizer, lsr config and query weight table, and "
                    "check the graph against the torch encoder.")
    ap.add_argument("model", help="a short model name (splade-tiny) or a model folder (lsr, sentence-transformers, HF)")
    ap.add_argument("out", help="the folder to write (must not exist or be empty, unless --force)")
    ap.add_argument("--opset", type=int, default=None, help="ONNX opset (default: the exporter's)")
    ap.add_argument("--vocab-chunk", type=int, default=4096,
                    help="vocabulary columns projected at once inside the graph (bounds its memory)")
    ap.add_argument("--tolerance", type=float, default=1e-4,
                    help="largest allowed |ONNX - torch| on the check texts")
    ap.add_argument("--force", action="store_true", help="replace a non-empty OUT")
    ap.add_argument("--log-level", default="warning", choices=["debug", "info", "warning", "error"])
    return ap


def main(argv: list[str] | None = None, prog: str = "lsr export-onnx") -> int:
    args = build_parser(prog).parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    if args.log_level in ("warning", "error"):  # the exporter's tracing notes say nothing about the result
        for mod in ("torch", "transformers", "onnxscript", "onnx_ir"):
            warnings.filterwarnings("ignore", module=mod)
        warnings.filterwarnings("ignore", category=FutureWarning)
    if args.vocab_chunk <= 0:
        print(f"{prog}: --vocab-chunk must be positive, got {args.vocab_chunk}", file=sys.stderr)
        return 2
    try:
        from lsr.models.onnx import export_onnx
    except ModuleNotFoundError as exc:
        print(f"{prog}: needs torch, transformers and onnx ({exc}); pip install 'lsr[onnx]'", file=sys.stderr)
        return 2
    if args.log_level in ("warning", "error"):
        try:
            import torch  # noqa: F401 - torch's logging set-up first, then quiet its exporter's notes
        except ModuleNotFoundError:
            pass  # export_onnx says what to install
        logging.getLogger("torch.onnx").setLevel(logging.ERROR)  # "torchvision is not installed", ...
    try:
        summary = export_onnx(args.model, args.out, opset=args.opset, vocab_chunk=args.vocab_chunk,
                              tolerance=args.tolerance, overwrite=args.force)
    except ModuleNotFoundError as exc:
        print(f"{prog}: needs torch, transformers, onnx and onnxscript ({exc}); pip install 'lsr[onnx]'",
              file=sys.stderr)
        return 2
    except (FileNotFoundError, FileExistsError, ValueError) as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {summary['out']}: {summary['kind']} model, vocabulary {summary['dim']}, "
          f"{summary['bytes'] / 2**20:.1f} MiB, max |onnx - torch| {summary['max_abs_diff']:.1e} on the check texts, "
          f"{summary['seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
