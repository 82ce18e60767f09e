"""The GPU section of BENCHMARKS.md from the JSON files of one GPU session's runs.

Usage:
    python benchmarks/gpu_report.py gpu-check/sweep.json gpu-check/bench.json gpu-check/compile.json

Reads what ``benchmarks/gpu_step.py --json`` wrote (benchmarks/gpu_check.sh
writes these three), needs no GPU, and prints Markdown: each run's card, date,
versions and launch settings, the sweep's table, each run's tables, and the
fused kernel's targets judged on all the runs' rows together (each speed-up
was measured side by side within its own run).
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
from typing import Any

from rmsprop.benchmark import _common, cuda


def report(runs: dict[str, dict[str, Any]]) -> str:
    """The Markdown for ``runs``: file name -> what gpu_step.py --json wrote."""
    out = []
    compared = []
    for name, run in runs.items():
        about = f"{run['card']}, {run['date']}; {run['versions']}; {run.get('launch', '')}"
        out.append(f"### {pathlib.Path(name).stem}\n\n{about.rstrip('; ')}")
        rows = run["rows"]
        if rows and "block" in rows[0]:
            lines = _common.markdown_header(cuda.SWEEP_COLUMNS)
            lines += [_common.markdown_row(cuda.SWEEP_COLUMNS, row) for row in rows]
            fastest = "BLOCK={}, NUM_WARPS={}".format(*cuda.best_launch(rows))
            out.append(f"\n**{rows[0]['shape']}** launch settings (fastest: {fastest})\n")
            out.append("\n".join(lines))
        else:
            out.append(cuda.markdown(rows))
            compared += rows
        out.append("")
    cards = {run["card"] for run in runs.values()}
    if len(cards) > 1:
        out.append(f"**These runs were on different cards ({', '.join(sorted(cards))}).**\n")
    out.append("### Targets\n")
    out.append(cuda.verdicts_markdown(compared))
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="+", help="JSON files of benchmarks/gpu_step.py --json")
    args = parser.parse_args()
    runs = {}
    for path in args.files:
        try:
            with open(path) as f:
                runs[path] = json.load(f)
        except (OSError, ValueError) as error:
            sys.exit(f"{path}: {error}")
    try:
        print(report(runs))
    except (KeyError, TypeError, ValueError) as error:
        sys.exit(f"these files are not what benchmarks/gpu_step.py --json writes: {error!r}")


if __name__ == "__main__":
    main()
