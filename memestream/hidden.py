"""Which file names are not data: the hidden-file rules, all in one place.

There are three rules, not one, because the places that skip files differ on purpose:

- :func:`is_dot_hidden`: a name starting with ``.`` (the Unix convention, and our own
  staging names ``.<name>.<uuid>.tmp``). For places that take what a person points at:
  ``meme-publish`` walking a scraper's folder sends ``_cover.jpg`` too, and the dashboard
  never serves a dot file.
- :func:`is_reader_hidden`: ``.`` or ``_`` (the Spark/Hadoop convention: ``_SUCCESS``,
  ``_commits/``, staging files). For everything that reads a table or a data set folder:
  ``streaming.schema.data_files``, ``meme-compact``, training's file listing, the benchmarks.
- :func:`is_inbox_ignored`: the reader rule, plus names that say a writer has not finished:
  Office's ``~$`` lock files and the temporary suffixes of downloads and copies
  (``.part``, ``.crdownload``, ...). For the inbox mover, ``meme-drop`` and the spool
  listing, which must never take a half-written file.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Iterator

#: Suffixes browsers, download tools, editors and copy programs give a file until it is complete.
TEMP_SUFFIXES = (".tmp", ".part", ".partial", ".crdownload", ".download", ".swp", "~", ".filepart")
#: Prefixes of names readers skip (Spark, Hadoop, DuckDB through our file lists, pyarrow).
READER_HIDDEN_PREFIXES = (".", "_")
#: Office writes ``~$<name>`` beside a document while it is open.
LOCK_FILE_PREFIX = "~$"


def is_dot_hidden(name: str) -> bool:
    """A Unix hidden name (``.DS_Store``, ``.git``, our ``.x.tmp`` staging files)."""
    return name.startswith(".")


def is_reader_hidden(name: str) -> bool:
    """A name table and data set readers skip: ``.`` or ``_`` first (``_SUCCESS``, ``_commits``)."""
    return name.startswith(READER_HIDDEN_PREFIXES)


def is_inbox_ignored(name: str) -> bool:
    """A name the inbox mover leaves alone: hidden from readers, a lock file, or a file some
    writer has not finished (its temporary suffix)."""
    return is_reader_hidden(name) or name.startswith(LOCK_FILE_PREFIX) or name.lower().endswith(TEMP_SUFFIXES)


def walk_visible(root: str | os.PathLike[str], hidden: Callable[[str], bool]) -> Iterator[Path]:
    """Files under ``root`` whose name and folders pass ``hidden``, folder by folder in name
    order (a folder's own files before its sub-folders'); hidden folders are not entered."""
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not hidden(d))
        for name in sorted(filenames):
            if not hidden(name):
                yield Path(dirpath) / name
