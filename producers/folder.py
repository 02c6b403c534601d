"""``meme-drop``: put files into the stream's inbox safely, or run the inbox mover.

``meme-drop FILES`` copies files into the inbox through a hidden temporary name and a
rename, so the mover never sees half a file (for scripts and people). ``meme-drop --watch``
runs the inbox mover (:class:`memestream.inbox.InboxMover`) on its own, e.g. on the file
server, when the stream runs with ``--no-watch``.
"""
from __future__ import annotations

import argparse
import logging
import os
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from memestream.abspath import absolute_fields
from memestream.cli import add_common_flags, env_flag, positive_float, run_main
from memestream.errors import ConfigError, DataError
from memestream.hidden import is_inbox_ignored
from memestream.inbox import InboxMover

log = logging.getLogger(__name__)


def drop_files(sources: Sequence[str | os.PathLike[str]], inbox: str | os.PathLike[str]) -> list[Path]:
    """Copy files (or folders, recursively) into ``inbox`` atomically; returns the new paths."""
    inbox = Path(inbox)
    inbox.mkdir(parents=True, exist_ok=True)
    files: list[Path] = []
    for src in map(Path, sources):
        if src.is_dir():
            files.extend(p for p in sorted(src.rglob("*")) if p.is_file() and not any(map(is_inbox_ignored, p.relative_to(src).parts)))
        elif src.is_file():
            files.append(src)
        else:
            raise DataError(f"cannot drop {src}: no such file or folder")
    out = []
    for f in files:
        target = inbox / f.name
        if target.exists():
            target = inbox / f"{f.stem}-{uuid.uuid4().hex[:8]}{f.suffix}"
        tmp = inbox / f".{target.name}.{uuid.uuid4().hex}.tmp"
        shutil.copyfile(f, tmp)
        os.replace(tmp, target)
        out.append(target)
        log.debug("dropped %s as %s", f, target)
    return out


@dataclass(frozen=True)
class DropConfig:
    """One ``meme-drop`` run, built from flags in :func:`main`; its folders absolute from here on
    (the files to drop are read at once and named as typed)."""

    inbox: Path
    spool: Path
    files: tuple[str, ...] = ()
    watch: bool = False
    settle: float = 0.5

    def __post_init__(self) -> None:
        absolute_fields(self)


def config_from_args(args: argparse.Namespace) -> DropConfig:
    data = Path(args.data_dir)
    return DropConfig(inbox=Path(args.inbox) if args.inbox else data / "inbox",
                      spool=Path(args.spool) if args.spool else data / "spool",
                      files=tuple(args.files), watch=bool(args.watch), settle=float(args.settle))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="meme-drop",
        description="Copy images into the stream's inbox safely (or, with --watch, run the folder producer "
        "that moves completed inbox files into the spool Spark reads).",
        epilog="examples:\n"
        "  meme-drop meme1.jpg memes/               # copy into ./memestream-data/inbox\n"
        "  meme-drop --inbox /srv/memes/inbox new/*.png\n"
        "  meme-drop --watch --inbox /srv/memes/inbox --spool /srv/memes/spool   # folder producer",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("files", nargs="*", help="image files or folders to copy into the inbox")
    env_flag(parser, "--data-dir", envvar="MEMESTREAM_DATA_DIR", default="memestream-data", help="base folder for defaults")
    env_flag(parser, "--inbox", envvar="MEMESTREAM_INBOX", default=None, help="inbox folder (default: DATA_DIR/inbox)")
    env_flag(parser, "--spool", envvar="MEMESTREAM_SPOOL", default=None, help="spool folder for --watch (default: DATA_DIR/spool)")
    parser.add_argument("--watch", action="store_true", help="run the folder producer: move completed inbox files into the spool until Ctrl-C")
    parser.add_argument("--settle", type=positive_float, default=0.5, help="seconds a file must stay unchanged to count as complete (default 0.5)")
    add_common_flags(parser)
    return parser


def _run(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    if cfg.watch:
        mover = InboxMover(cfg.inbox, cfg.spool, settle=cfg.settle)
        mover.sweep()
        mover.start()
        print(f"watching {cfg.inbox} -> {cfg.spool} (Ctrl-C to stop)")
        try:
            while True:
                time.sleep(1)
        except KeyboardInterrupt:
            pass
        finally:
            mover.stop()
        print(f"moved {mover.moved} file(s)")
        return 0
    if not cfg.files:
        raise ConfigError("nothing to drop: give image files or folders (or --watch to run the folder producer)")
    dropped = drop_files(cfg.files, cfg.inbox)
    print(f"dropped {len(dropped)} file(s) into {cfg.inbox}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_main(_run, build_parser(), argv)


if __name__ == "__main__":
    raise SystemExit(main())
