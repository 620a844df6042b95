"""``lsr export``: write a collection's (or a vectors file's) sparse vectors for another engine.

    lsr export scifact --data ./lsr-data --format anserini --out runs/export/scifact-anserini/docs.jsonl
    lsr export scifact --data ./lsr-data --format qdrant --out runs/export/scifact-qdrant.jsonl
    lsr export --vectors docs.npz --corpus corpus.jsonl.gz --format anserini --out runs/export/docs.jsonl

Anserini: give the file a folder of its own (Anserini reads every JSON file in it), index that folder with Pyserini
(``python -m pyserini.index.lucene --collection JsonVectorCollection --input DIR --index IDX
--generator DefaultLuceneDocumentGenerator --impact --pretokenized``) and search it with
``LuceneImpactSearcher`` and query weights quantised with the same ``--scale``
(``lsr.service.export.anserini_query``). Qdrant: each line is one point of a REST upsert, with a
named sparse vector (``--vector-name``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from lsr.index.cli import HelpFormatter

__all__ = ["main"]


def build_parser(prog: str = "lsr export") -> argparse.ArgumentParser:
    from lsr.service.export import DEFAULT_SCALE, DEFAULT_VECTOR_NAME, FORMATS

    p = argparse.ArgumentParser(prog=prog, description="Write a collection's (or a vectors file's) sparse vectors "
                                "for another engine: Anserini/Pyserini or Qdrant.", epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=HelpFormatter)
    p.add_argument("collection", nargs="?", metavar="COLLECTION",
                   help="collection of --data to export (stop the server first), or use --vectors")
    p.add_argument("--data", metavar="DIR", default=os.environ.get("LSR_DATA", "./lsr-data"),
                   help="the service's data folder")
    p.add_argument("--vectors", metavar="FILE", help="export a vectors file (.npz or .jsonl with ids) instead")
    p.add_argument("--corpus", metavar="FILE", help="with --vectors: corpus.jsonl[.gz] for the documents' texts")
    p.add_argument("--vocab-model", metavar="MODEL",
                   help="with --vectors: model whose vocabulary names the terms, when the file has none")
    p.add_argument("--format", required=True, choices=FORMATS, help="anserini: JsonVectorCollection; "
                   "qdrant: sparse-vector points")
    p.add_argument("--out", required=True, metavar="PATH", help="JSON-lines file to write")
    p.add_argument("--scale", type=float, default=DEFAULT_SCALE,
                   help="anserini: integer impact = round(weight x scale); use the same on the query side")
    p.add_argument("--vector-name", default=DEFAULT_VECTOR_NAME, help="qdrant: name of the sparse vector")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return p


def main(argv: list[str] | None = None, prog: str = "lsr export") -> int:
    args = build_parser(prog).parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from lsr.service.export import ExportError, export_collection, export_vectors

    if (args.collection is None) == (args.vectors is None):
        print(f"{prog}: give a COLLECTION or --vectors FILE (one of them)", file=sys.stderr)
        return 2
    if args.vectors is None and (args.corpus or args.vocab_model):
        print(f"{prog}: --corpus and --vocab-model go with --vectors", file=sys.stderr)
        return 2
    try:
        if args.vectors is not None:
            stats = export_vectors(args.vectors, args.out, args.format, corpus=args.corpus,
                                   vocab_model=args.vocab_model, scale=args.scale, vector_name=args.vector_name,
                                   progress=not args.no_progress)
        else:
            stats = export_collection(args.data, args.collection, args.out, args.format, scale=args.scale,
                                      vector_name=args.vector_name, progress=not args.no_progress)
    except (ExportError, ValueError, FileNotFoundError, RuntimeError) as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        msg = f"{exc.strerror}: {exc.filename}" if exc.strerror and exc.filename else str(exc)
        print(f"{prog}: {msg}", file=sys.stderr)
        return 2
    print(json.dumps(stats))
    return 0


if __name__ == "__main__":
    sys.exit(main())
