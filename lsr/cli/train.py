"""``lsr-train CONFIG.toml [--resume] [--queries-only] [--set section.key=value ...]``."""

from __future__ import annotations

import argparse
import logging
import sys

from lsr.index.cli import HelpFormatter


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="lsr-train", description="Train a sparse encoder from a TOML config.",
                                formatter_class=HelpFormatter)
    p.add_argument("config", help="TOML config (see configs/)")
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in output_dir")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set train.steps=100 (TOML syntax for the value)")
    p.add_argument("--stop-after", type=int, default=None, metavar="N",
                   help="stop this invocation after N optimiser steps (checkpointed); continue with --resume")
    p.add_argument("--queries-only", action="store_true",
                   help="label-free configs: generate the pseudo-queries into pseudo_queries.cache_dir and stop "
                        "(on a GPU machine; a later run anywhere starts from that cache)")
    p.add_argument("--log-level", default="INFO")
    args = p.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from lsr.train import ConfigError, train

    try:
        metrics = train(args.config, resume=args.resume, overrides=args.overrides, stop_after=args.stop_after,
                        queries_only=args.queries_only)
    except (ConfigError, FileNotFoundError) as exc:
        print(f"lsr-train: {exc}", file=sys.stderr)
        return 2
    if metrics:
        import json

        print(json.dumps(metrics, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
