"""``python -m bench.render RESULT.json [...]``: results as a Markdown table for the docs."""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Sequence

_COLS = ("case", "images", "images_per_s", "images_per_cpu_s", "seconds", "p50", "p95", "p99", "peak_rss_mib", "cv_accuracy", "cv_std")
_TITLES = ("case", "images", "img/s", "img/CPU-s", "sec", "p50", "p95", "p99", "peak RSS MiB", "CV acc", "CV std")


def _fmt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"
    return str(value)


def render(report: dict[str, Any]) -> str:
    env = report["environment"]
    out = [f"Run {report['started_utc']}: {env['cpu_count']} cores, Python {env['python']}, PySpark {env['pyspark']}, "
           f"OpenCV {env['opencv']}; data: {report.get('data', {}).get('images')} images.", ""]
    for name, result in report["scenarios"].items():
        load = result.get("loadavg_1m", {})
        out.append(f"**{name}** ({result.get('status')}, {result.get('wall_s')} s, load average {load.get('before')} -> {load.get('after')})")
        if result.get("error"):
            out.append(f"error: `{result['error']}`")
        if result.get("rows"):
            out.append("")
            out.append("| " + " | ".join(_TITLES) + " | ratios |")
            out.append("|" + "---|" * (len(_TITLES) + 1))
            for row in result["rows"]:
                ratios = ", ".join(f"{k}={v}" for k, v in row.items() if ("_vs_" in k or k.startswith("vs_")) and v is not None)
                out.append("| " + " | ".join(_fmt(row.get(c)) for c in _COLS) + f" | {ratios} |")
        out.append("")
    return "\n".join(out)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.render", description=__doc__)
    parser.add_argument("results", nargs="+", help="bench/results/*.json files")
    args = parser.parse_args(argv)
    for path in args.results:
        print(render(json.loads(Path(path).read_text())))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
