"""Paths made absolute once, when a configuration is built, so no later change of working directory matters.

Every console script builds one frozen config from its flags; its ``__post_init__`` calls
:func:`absolute_fields`. After that the program (and any child it starts with another working
directory, like the Kafka broker's JVM) sees only absolute paths.

Absolute, not resolved: :meth:`pathlib.Path.absolute` prefixes the working directory and keeps
symlinks (and ``..``) as typed, where :meth:`~pathlib.Path.resolve` would replace a symlink by
its target once, at start. A data or model folder that is a symlink (``models -> models-v2``,
re-pointed by a deployment) must keep following the link, and messages should name the folder
the user gave. Where a real location matters (a checkpoint bound to its output folder), the
caller resolves it there.
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path, PurePath
from typing import Any, TypeVar

P = TypeVar("P", str, Path, None)


def is_uri(location: str | os.PathLike[str]) -> bool:
    """True for a URI (``hdfs://...``, ``s3a://...``, ``file:...``): Spark reads it, the working directory plays no part."""
    text = os.fspath(location)
    return "://" in text or text.startswith("file:")


def absolute(location: P) -> P:
    """``location`` made absolute against the working directory, symlinks kept.

    A ``Path`` gives a ``Path``, a ``str`` a ``str``; ``None``, ``""`` and URIs come back unchanged.
    """
    if location is None or location == "" or is_uri(location):
        return location
    path = Path(location)
    if path.is_absolute():
        return location
    return path.absolute() if isinstance(location, PurePath) else str(path.absolute())


def absolute_fields(config: Any, *names: str) -> None:
    """In a (frozen) dataclass's ``__post_init__``: make the ``names`` fields absolute, or,
    without names, every field holding a ``Path``."""
    chosen = names or tuple(f.name for f in dataclasses.fields(config) if isinstance(getattr(config, f.name), PurePath))
    for name in chosen:
        value = getattr(config, name)
        if isinstance(value, (str, PurePath)):
            object.__setattr__(config, name, absolute(value))
