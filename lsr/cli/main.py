"""``lsr``: one entry point; ``lsr serve`` and ``lsr ingest`` delegate to lsr.service, others to their CLIs."""

from __future__ import annotations

import importlib
import sys

COMMANDS = {
    "serve": ("lsr.service.cli", "main", "start the search service (lsr-serve)"),
    "ingest": ("lsr.service.cli", "ingest_main", "index a JSONL corpus into a collection"),
    "index": ("lsr.index.cli", "main", "build and search indexes (lsr-index)"),
    "encode": ("lsr.cli.encode", "main", "encode texts into sparse vectors (lsr-encode)"),
    "train": ("lsr.cli.train", "main", "train an encoder (lsr-train)"),
    "eval": ("lsr.eval.cli", "main", "evaluate on BEIR (lsr-eval)"),
}


def _usage() -> str:
    lines = ["usage: lsr COMMAND [ARGS...]", "", "commands:"]
    lines += [f"  {name:<8} {help_}" for name, (_, _, help_) in COMMANDS.items()]
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
    module, func, _ = COMMANDS[name]
    try:
        fn = getattr(importlib.import_module(module), func)
    except (ImportError, AttributeError) as exc:
        print(f"lsr {name}: not available ({exc})", file=sys.stderr)
        return 2
    if module == "lsr.service.cli":
        rc = fn(rest, prog=f"lsr {name}")
    else:
        sys.argv = [f"lsr {name}", *rest]
        rc = fn(rest)
    return int(rc or 0)


if __name__ == "__main__":
    sys.exit(main())
