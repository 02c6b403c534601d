"""``meme-label``: correct the stream's labels from the shell (one image, or a CSV of many).

The same writer as the dashboard's review queue (:mod:`streaming.labels`): the image must be
in ``predictions``, the label name must be a valid class name, and the image's bytes are kept
in ``DATA_DIR/labelled/`` for training (``meme-train --labels OUTPUT``).
"""
from __future__ import annotations

import argparse
import csv
import getpass
import os
import sys
import uuid
from pathlib import Path
from typing import Sequence

from memestream.cli import add_common_flags, env_flag, run_main
from memestream.errors import ConfigError
from memestream.kafka import add_security_flags, security_from_args
from streaming.labels import KafkaRecords, LabelError, LabelRequest, LabelStore
from streaming.schema import check_output_dir

#: Rows read from one CSV at most (a typo'd file of millions of rows is refused, not half-read).
MAX_CSV_ROWS = 100_000


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="meme-label",
        description="Give images the stream classified the label a person says they have. Rows go to the "
        "append-only 'labels' table beside the outputs (the latest row per image wins); the image is copied into "
        "DATA_DIR/labelled/ so training can learn from it.",
        epilog="examples:\n"
        "  meme-label --output memestream-data/output 3f1c...e9 doom --labeller ana\n"
        "  meme-label --output memestream-data/output --csv corrections.csv   # columns image_id,label",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    env_flag(parser, "--output", envvar="MEMESTREAM_OUTPUT", required=True, help="meme-stream's --output folder")
    env_flag(parser, "--data-dir", envvar="MEMESTREAM_DATA_DIR", default=None,
             help="meme-stream's --data-dir: where archive/ and quarantine/ are, and labelled/ goes "
             "(default: the folder that contains --output)")
    parser.add_argument("image_id", nargs="?", help="the image's id (sha256, the predictions' image_id)")
    parser.add_argument("label", nargs="?", help="its label: 1-64 letters, digits, '_' or '-' (a new name makes a new class)")
    parser.add_argument("--csv", metavar="FILE", help="label many images: a CSV with columns image_id,label")
    env_flag(parser, "--labeller", envvar="MEMESTREAM_LABELLER", default=None,
             help="who labels (default: the login name)")
    parser.add_argument("--request-id", default=None,
                        help="an id that makes a retried command write its rows once (default: a new one per run)")
    env_flag(parser, "--bootstrap-servers", envvar="MEMESTREAM_KAFKA_BOOTSTRAP", default=None,
             help="the brokers of a Kafka stream: a labelled Kafka input's bytes are read back from its topic at its "
             "offset and kept for training (without: kept only for folder inputs and quarantined ones)")
    add_security_flags(parser)
    add_common_flags(parser)
    return parser


def read_csv(path: Path) -> list[tuple[str, str]]:
    """(image_id, label) rows of a CSV with a header naming both columns."""
    try:
        handle = path.open(newline="", encoding="utf-8-sig")
    except OSError as exc:
        raise ConfigError(f"--csv {path}: {exc.strerror or exc}") from None
    with handle:
        reader = csv.DictReader(handle)
        fields = [f.strip() for f in (reader.fieldnames or [])]
        if "image_id" not in fields or "label" not in fields:
            raise ConfigError(f"--csv {path}: expected a header with columns image_id,label, found {','.join(fields) or 'none'}")
        rows: list[tuple[str, str]] = []
        for number, row in enumerate(reader, start=2):
            row = {(k or "").strip(): (v or "").strip() for k, v in row.items()}
            if not row.get("image_id") and not row.get("label"):
                continue
            if len(rows) >= MAX_CSV_ROWS:
                raise ConfigError(f"--csv {path}: more than {MAX_CSV_ROWS} rows; split the file")
            rows.append((row.get("image_id", ""), row.get("label", "")))
    if not rows:
        raise ConfigError(f"--csv {path}: no rows below the header")
    return rows


def _run(args: argparse.Namespace) -> int:
    if args.csv and (args.image_id or args.label):
        raise ConfigError("give either IMAGE_ID LABEL or --csv FILE, not both")
    if not args.csv and not (args.image_id and args.label):
        raise ConfigError("expected IMAGE_ID LABEL (or --csv FILE with columns image_id,label)")
    output = Path(check_output_dir(os.path.abspath(args.output)))
    data_dir = Path(os.path.abspath(args.data_dir)) if args.data_dir else output.parent
    labeller = args.labeller or getpass.getuser()
    run_id = args.request_id or uuid.uuid4().hex
    pairs = read_csv(Path(args.csv)) if args.csv else [(args.image_id, args.label)]
    how = "import" if args.csv else "cli"
    requests = []
    for number, (image_id, label) in enumerate(pairs):
        try:
            requests.append(LabelRequest(image_id.lower(), label, labeller, how, f"{run_id}-{number}"))
        except LabelError as exc:
            where = f"--csv {args.csv} row {number + 2}: " if args.csv else ""
            raise LabelError(f"{where}{exc}") from None
    kafka = KafkaRecords(args.bootstrap_servers, security_from_args(args)) if args.bootstrap_servers else None
    results = LabelStore(output, data_dir, kafka).submit(requests)
    written = [r for r in results if r.written]
    for r in written:
        kept = r.image_path or "no stored copy (not in the archive, the quarantine or, with --bootstrap-servers, the topic)"
        if not args.csv or args.verbose:
            print(f"{r.request.image_id[:12]}: {r.previous_label or '-'} -> {r.request.label} "
                  f"(model {r.model_version or '-'}; image: {kept})")
    unkept = sum(1 for r in written if r.image_path is None)
    print(f"meme-label: {len(written)} label(s) written, {len(results) - len(written)} already recorded"
          + (f"; {unkept} without a stored image (training cannot use those)" if unkept else ""))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_main(_run, build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
