"""``python -m bench.poison --model DIR``: what a poison pill costs a running stream.

Two ``meme-stream --available-now`` runs over the same images in one process tree each: a
baseline of N good images, then the same N plus one input that kills (or hangs) the Python
worker that decodes it (``memestream.testing.poison_hook``, turned on through
``MEMESTREAM_TEST_DECODER_HOOK`` for these runs only). Printed: images/second of both runs,
the poisoned batch's time against the median batch, the stream's own isolation time
("batch failure to stream running again"), and the extra wall time, with the core count.
The rows must come out right: N labelled rows and one ``decoder_crashed``/``decoder_timeout``
row, or the run fails.
"""
from __future__ import annotations

import argparse
import logging
import os
import re
import statistics
import time
from pathlib import Path
from typing import Any, Sequence

from bench.common import environment, write_result_file
from memestream.cli import add_common_flags, positive_float, positive_int, run_main
from memestream.decode import TEST_HOOK_ENV
from memestream.sample import sample_image_bytes
from memestream.testing import POISON_ABORT, POISON_HANG, POISON_HOOK, POISON_SEGFAULT, script_command, start_group, stop_group

log = logging.getLogger(__name__)

KINDS = {"abort": POISON_ABORT, "segfault": POISON_SEGFAULT, "hang": POISON_HANG}
_BATCH = re.compile(r"^\[batch (\d+)\] (\d+) images .* in ([0-9.]+)s")
_ISOLATED = re.compile(r"isolated (\d+) poison input\(s\) of (\d+) in ([0-9.]+)s")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.poison", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="model store (meme-train --model-dir)")
    parser.add_argument("--images", type=positive_int, default=300, help="good images per run (default: 300)")
    parser.add_argument("--kind", choices=sorted(KINDS), default="abort", help="how the poison input fails (default: abort)")
    parser.add_argument("--time-cap", type=positive_float, default=10.0, help="meme-stream --time-cap (default: 10)")
    parser.add_argument("--max-files-per-trigger", type=positive_int, default=100, help="batch size (default: 100)")
    parser.add_argument("--work-dir", default=None, help="where the runs' data folders go (default: a new temporary folder)")
    parser.add_argument("--results-dir", default="bench/results", help="where the JSON goes")
    add_common_flags(parser)
    return parser


def _run(root: Path, model: str, images: int, poison: bytes | None, args: argparse.Namespace) -> dict[str, Any]:
    inbox = root / "inbox"
    inbox.mkdir(parents=True)
    classes = ("doom", "cats", "animal_crossing")
    for i in range(images):
        (inbox / f"img{i:06d}.jpg").write_bytes(sample_image_bytes(classes[i % 3], 10_000 + i))
    if poison is not None:
        (inbox / f"img{images // 2:06d}_poison.jpg").write_bytes(poison)
    env = {**os.environ, TEST_HOOK_ENV: POISON_HOOK, "MEMESTREAM_NO_UI": "1"}
    cmd = script_command("meme-stream", "--data-dir", str(root), "--model", model, "--available-now", "--no-compact",
                         "--max-files-per-trigger", str(args.max_files_per_trigger), "--time-cap", str(args.time_cap))
    log_path = root / "meme-stream.log"
    started = time.monotonic()
    proc = start_group(cmd, log_path=log_path, env=env)
    try:
        code = proc.wait(timeout=1800)
    finally:
        stop_group(proc)
    wall = time.monotonic() - started
    text = log_path.read_text(errors="replace")
    if code != 0:
        raise RuntimeError(f"meme-stream exited {code}; log:\n" + "\n".join(text.splitlines()[-20:]))
    batches = [(int(m[1]), int(m[2]), float(m[3])) for m in map(_BATCH.match, text.splitlines()) if m]
    isolated = [(int(m[1]), int(m[2]), float(m[3])) for m in _ISOLATED.finditer(text)]
    rows = sum(n for _, n, _ in batches)
    expected = images + (poison is not None)
    if rows != expected:
        raise RuntimeError(f"expected {expected} rows, the stream reported {rows}; log:\n" + "\n".join(text.splitlines()[-20:]))
    return {"wall_s": round(wall, 2), "rows": rows, "batches": batches, "isolated": isolated}


def _codes(root: Path) -> dict[str, int]:
    from streaming.schema import read_table

    preds = read_table(root / "output", "predictions").to_pandas()
    return {str(k): int(v) for k, v in preds["error_code"].fillna("labelled").value_counts().items()}


def main(argv: Sequence[str] | None = None) -> int:
    return run_main(_main, build_parser(), argv)


def _main(args: argparse.Namespace) -> int:
    import tempfile

    work = Path(args.work_dir).absolute() if args.work_dir else Path(tempfile.mkdtemp(prefix="memestream-poison-"))
    model = str(Path(args.model).absolute())
    base = _run(work / "baseline", model, args.images, None, args)
    hit = _run(work / "poisoned", model, args.images, KINDS[args.kind], args)
    codes = _codes(work / "poisoned")
    want = "decoder_timeout" if args.kind == "hang" else "decoder_crashed"
    if codes.get(want) != 1 or codes.get("labelled") != args.images:
        raise RuntimeError(f"expected {args.images} labelled rows and one {want}, found {codes}")
    normal = [s for b, n, s in base["batches"] if b > 0]  # batch 0 includes the workers' first start
    poisoned = next(s for b, n, s in hit["batches"] if b == hit["isolated"][0][0]) if hit["isolated"] else None
    env = environment()
    out = {
        "cores": env["cpu_count"], "kind": args.kind, "images": args.images, "time_cap_s": args.time_cap,
        "batch_size": args.max_files_per_trigger, "baseline": base, "poisoned": hit, "codes": codes,
        "baseline_images_per_s": round(args.images / base["wall_s"], 2),
        "poisoned_images_per_s": round((args.images + 1) / hit["wall_s"], 2),
        "median_batch_s": round(statistics.median(normal), 2) if normal else None,
        "poisoned_batch_s": poisoned,
        "isolation_s": hit["isolated"][0][2] if hit["isolated"] else None,
        "extra_wall_s": round(hit["wall_s"] - base["wall_s"], 2),
        "wall_ratio": round(hit["wall_s"] / base["wall_s"], 3),
    }
    print(f"memestream poison bench  cores={out['cores']}  kind={args.kind}  images={args.images}+1  "
          f"batches of {args.max_files_per_trigger}  time cap {args.time_cap:g}s")
    print(f"  baseline : {base['wall_s']:7.2f} s wall  {out['baseline_images_per_s']:6.2f} img/s  median batch {out['median_batch_s']} s")
    print(f"  poisoned : {hit['wall_s']:7.2f} s wall  {out['poisoned_images_per_s']:6.2f} img/s  poisoned batch {poisoned} s")
    print(f"  recovery : isolation {out['isolation_s']} s (batch failure to the stream running again); "
          f"extra wall {out['extra_wall_s']} s; wall ratio {out['wall_ratio']}")
    print(f"  rows     : {codes}")
    path = write_result_file(out, args.results_dir, "poison-")
    print(f"results written to {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
