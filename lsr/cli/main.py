"""``lsr``: one entry point; each subcommand imports its CLI only when it runs (``lsr --help`` stays fast)."""

from __future__ import annotations

import sys


def _wants_cluster(argv: list[str]) -> bool:
    return any(a == "--cluster" or a.startswith("--cluster=") for a in argv)


def _serve(argv: list[str]) -> int:
    from lsr.service.cli import main

    if _wants_cluster(argv):  # only then is ray imported (lsr.cluster)
        from lsr.cluster.cli import open_cluster_store

        return main(argv, prog="lsr serve", cluster=open_cluster_store)
    return main(argv, prog="lsr serve")


def serve_entry() -> int:
    """The ``lsr-serve`` script: ``lsr serve`` (so ``--cluster`` works there too)."""
    return _serve(sys.argv[1:])


def _demo(argv: list[str]) -> int:
    from lsr.service.cli import main

    return main(["--demo", *argv], prog="lsr demo")


def _ingest(argv: list[str]) -> int:
    if _wants_cluster(argv):
        from lsr.cluster.cli import ingest_main as cluster_ingest_main

        return cluster_ingest_main(argv, prog="lsr ingest")
    from lsr.service.cli import ingest_main

    return ingest_main(argv, prog="lsr ingest")


def _repair(argv: list[str]) -> int:
    from lsr.service.repair import repair_main

    return repair_main(argv)


def _export(argv: list[str]) -> int:
    from lsr.cli.export import main

    return main(argv)


def _export_onnx(argv: list[str]) -> int:
    from lsr.cli.export_onnx import main

    return main(argv)


def _index(argv: list[str]) -> int:
    from lsr.index.cli import main

    return main(argv)


def _encode(argv: list[str]) -> int:
    from lsr.cli.encode import main

    return main(argv)


def _train(argv: list[str]) -> int:
    from lsr.cli.train import main

    return main(argv)


def _eval(argv: list[str]) -> int:
    from lsr.eval.cli import main

    return main(argv)


COMMANDS = {
    "serve": (_serve, "start the search service (lsr-serve)"),
    "demo": (_demo, "serve the bundled SciFact sample with a search page (= lsr serve --demo)"),
    "ingest": (_ingest, "index a JSONL corpus into a collection"),
    "repair": (_repair, "repair a failed collection: lsr repair COLLECTION --data DIR"),
    "export": (_export, "write a collection's vectors for Anserini/Pyserini or Qdrant"),
    "export-onnx": (_export_onnx, "export a SPLADE/inference-free model to ONNX for torch-free serving"),
    "index": (_index, "build and search indexes (lsr-index)"),
    "encode": (_encode, "encode texts into sparse vectors (lsr-encode)"),
    "train": (_train, "train an encoder (lsr-train)"),
    "eval": (_eval, "evaluate on BEIR (lsr-eval)"),
}


def _usage() -> str:
    lines = ["usage: lsr COMMAND [ARGS...]", "", "commands:"]
    lines += [f"  {name:<11} {help_}" for name, (_, help_) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"lsr: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    fn, _ = COMMANDS[name]
    sys.argv = [f"lsr {name}", *rest]  # argparse in the subcommand names itself "lsr NAME"
    try:
        rc = fn(rest)
    except ModuleNotFoundError as exc:  # an optional extra is not installed
        print(f"lsr {name}: not available ({exc}); install the extra it needs, e.g. pip install 'lsr[service]'",
              file=sys.stderr)
        return 2
    return int(rc or 0)


if __name__ == "__main__":
    sys.exit(main())
