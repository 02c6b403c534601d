"""Reading one input file with a size cap: the first step of the one input path.

Spark's ``binaryFile`` reader fails the whole job on a file above its length limit, so
files are listed by Spark (path, length, mtime) and read here, inside the Python worker
that decodes them: an oversized, empty or vanished file becomes an error row, and the
bytes never travel through the JVM. No Spark import: workers and benchmarks use it.
"""
from __future__ import annotations

import os

from memestream.decode import EMPTY, OVERSIZED, READ_ERROR, BadImage

#: What the inbox mover writes in place of a zero-byte file: Spark's file listing drops
#: empty files, which would lose them silently. Only this exact content means "empty".
EMPTY_FILE_MARKER = b"memestream:empty-input-file\n"


def local_path(uri: str) -> str:
    """``file:/a/b c.png`` -> ``/a/b c.png``. Spark's file paths are not percent-encoded."""
    if uri.startswith("file://"):
        return uri[len("file://") :]
    if uri.startswith("file:"):
        return uri[len("file:") :]
    return uri


def read_capped(path: str, max_bytes: int) -> tuple[bytes | None, BadImage | None]:
    """File bytes, or ``(None, error)`` without reading files above ``max_bytes``."""
    try:
        size = os.path.getsize(path)
        if size > max_bytes:
            return None, BadImage(OVERSIZED, f"file is {size:,} bytes, above the {max_bytes:,}-byte cap (--max-bytes)")
        if size == 0:
            return None, BadImage(EMPTY, "file has 0 bytes")
        with open(path, "rb") as fh:
            data = fh.read(max_bytes + 1)
        if data == EMPTY_FILE_MARKER:
            return None, BadImage(EMPTY, "file had 0 bytes when it arrived")
        return data, None
    except OSError as exc:
        return None, BadImage(READ_ERROR, f"cannot read {path}: {exc.strerror or exc}")
