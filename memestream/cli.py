"""Helpers every console script shares: env-var defaults, logging, one-line errors."""
from __future__ import annotations

import argparse
import logging
import contextlib
import os
import signal
import sys
import threading
from typing import Callable, Iterator, Sequence

from memestream.errors import MemestreamError

log = logging.getLogger(__name__)

SECRET_HINTS = ("PASSWORD", "SECRET", "TOKEN", "KEY")


class EnvDefault(argparse.Action):
    """A flag whose default comes from an environment variable, shown in ``--help``.

    Secrets (env names containing PASSWORD/SECRET/TOKEN/KEY) show only whether they are set.
    """

    def __init__(self, envvar: str, required: bool = False, default=None, help: str | None = None, **kwargs) -> None:
        from_env = os.environ.get(envvar)
        secret = any(h in envvar.upper() for h in SECRET_HINTS)
        if from_env is not None:
            default = from_env
        if help is not None:
            shown = "set" if (secret and default is not None) else default
            help = f"{help} [env: {envvar}" + (f"; default: {shown}" if shown not in (None, "") else "") + "]"
        super().__init__(default=default, required=required and default is None, help=help, **kwargs)
        self.envvar = envvar

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        setattr(namespace, self.dest, values)


def env_flag(parser: argparse.ArgumentParser, *names: str, envvar: str, **kwargs) -> argparse.Action:
    """``parser.add_argument`` with an env-var fallback."""
    return parser.add_argument(*names, action=EnvDefault, envvar=envvar, **kwargs)


def _positive(text: str, kind: type, noun: str):
    """``text`` as a ``kind`` above zero, or an argparse error saying what was expected."""
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {noun}, found {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected {noun}, found {value}")
    return value


def positive_int(text: str) -> int:
    return _positive(text, int, "a positive integer")


def positive_float(text: str) -> float:
    return _positive(text, float, "a positive number")


_SIZE_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def byte_size(text: str) -> int:
    """``"4g"``, ``"512m"``, ``"1048576"`` -> bytes; ``"0"`` -> 0 (the caller's "off")."""
    t = text.strip().lower().removesuffix("b").removesuffix("i")
    unit = t[-1:] if t[-1:] in _SIZE_UNITS else ""
    try:
        value = float(t[: len(t) - len(unit)])
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a size like 4g, 512m or 0 (off), found {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a size of 0 or more, found {text!r}")
    return int(value * _SIZE_UNITS[unit])


def add_common_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")


def setup_logging(verbose: int = 0, quiet: bool = False) -> None:
    level = logging.WARNING if quiet else (logging.DEBUG if verbose >= 2 else logging.INFO)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    for noisy in ("py4j", "kafka", "watchdog"):
        logging.getLogger(noisy).setLevel(logging.WARNING if verbose < 2 else logging.INFO)


def one_line(exc: BaseException) -> str:
    """First meaningful line of an exception, without a Java stack trace."""
    text = str(exc).strip()
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith(("at ", "Traceback", "JVM stacktrace")):
            return line[:500]
    return type(exc).__name__


@contextlib.contextmanager
def stop_signals() -> Iterator[threading.Event]:
    """SIGINT/SIGTERM set the yielded event instead of raising ``KeyboardInterrupt``.

    Why: a native library running on the main thread (DuckDB, Py4J) can swallow a
    ``KeyboardInterrupt`` as its own "query interrupted" error, so a server that relies on
    the exception may never stop. The event cannot be swallowed. Previous handlers come back
    on exit.
    """
    stop = threading.Event()
    caught: dict[int, int] = {}

    def _handler(signum: int, _frame: object) -> None:
        caught.setdefault(signum, 0)
        caught[signum] += 1
        if caught[signum] > 1:  # a second Ctrl-C means "now"
            raise KeyboardInterrupt
        stop.set()

    previous = {sig: signal.signal(sig, _handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def run_main(body: Callable[[argparse.Namespace], int], parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> int:
    """Parse ``argv``, configure logging, run ``body`` and map errors to one line + exit code."""
    args = parser.parse_args(argv)
    setup_logging(getattr(args, "verbose", 0), getattr(args, "quiet", False))
    try:
        return int(body(args) or 0)
    except MemestreamError as exc:
        if getattr(args, "debug", False):
            raise
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"{parser.prog}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - last resort: Spark/Py4J errors as one line
        if getattr(args, "debug", False):
            raise
        print(f"{parser.prog}: error: {type(exc).__name__}: {one_line(exc)} (rerun with --debug for the full trace)", file=sys.stderr)
        return 1
