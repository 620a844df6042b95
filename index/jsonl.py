"""Reading JSONL files (plain or gzip) line by line, with errors that name the file and line.

Lines are split on "\\n" only: some passages hold Unicode line separators that ``str.splitlines``
would break on.
"""

from __future__ import annotations

import gzip
import json
import zlib
from pathlib import Path
from typing import IO, Iterator


def open_text(path: str | Path) -> IO[str]:
    """Open a text file for reading, gunzipping ``*.gz``; newlines are "\\n" only."""
    path = Path(path)
    if path.name.endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8", newline="\n")
    return open(path, "r", encoding="utf-8", newline="\n")


def iter_jsonl(path: str | Path, *, error: type[Exception] = ValueError) -> Iterator[tuple[int, object]]:
    """Yield ``(line number, record)`` for every non-blank line; invalid JSON raises ``error``
    with ``path:line``, and so does a file that cannot be decoded (a ``.gz`` that is not gzip or
    is damaged, bytes that are not UTF-8). A missing file raises FileNotFoundError naming it."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such file: {path}")
    lineno = 0
    try:
        with open_text(path) as fh:
            for lineno, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise error(f"{path}:{lineno}: invalid JSON ({exc.msg})") from None
                yield lineno, rec
    # gzip raises BadGzipFile (an OSError) for a bad header, zlib.error for a damaged stream and
    # EOFError for a cut one; none of them names the file.
    except (OSError, EOFError, zlib.error, UnicodeDecodeError) as exc:
        if isinstance(exc, FileNotFoundError):
            raise
        where = f"{path}:{lineno + 1}" if lineno else str(path)
        if isinstance(exc, gzip.BadGzipFile):
            raise error(f"{where}: not a gzip file ({exc}); name it without .gz if it is plain text") from None
        raise error(f"{where}: cannot read ({exc})") from None
