"""The GPU section of BENCHMARKS.md from the JSON files of one GPU session's runs.

Usage:
    python benchmarks/gpu_report.py gpu-check/sweep.json gpu-check/bench.json gpu-check/compile.json
    python benchmarks/gpu_report.py --write BENCHMARKS.md gpu-check/*.json

Reads what ``rmsprop bench --device cuda --out FILE`` saved (benchmarks/gpu_check.sh
writes these three), needs no GPU, and prints Markdown: each run's card, date,
versions and launch settings, the sweep's table, each run's tables, and the
fused kernel's targets judged on all the runs' rows together (each speed-up
was measured side by side within its own run). With ``--write``, the runs
replace what stands between the file's ``<!-- gpu-results:start -->`` and
``end`` markers, and the targets what stands between its ``gpu-targets`` ones.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
from typing import Any

from rmsprop.benchmark import cuda


def report(runs: dict[str, dict[str, Any]]) -> str:
    """The Markdown for ``runs``: file name -> what ``rmsprop bench --out`` saved."""
    results, targets = sections(runs)
    return f"{results}\n### Targets\n\n{targets}"


def sections(runs: dict[str, dict[str, Any]]) -> tuple[str, str]:
    """The runs' Markdown, and the targets judged on their rows."""
    out = []
    compared = []
    for name, run in runs.items():
        about = f"{run['card']}, {run['date']}; {run['versions']}; {run.get('launch', '')}"
        out.append(f"### {pathlib.Path(name).stem}\n\n{about.rstrip('; ')}")
        rows = run["rows"]
        if rows and "block" in rows[0]:
            fastest = "BLOCK={}, NUM_WARPS={}".format(*cuda.best_launch(rows))
            out.append(f"\n**{rows[0]['shape']}** launch settings (fastest: {fastest})\n")
            out.append(cuda.sweep_markdown(rows))
        else:
            out.append(cuda.markdown(rows))
            compared += rows
        out.append("")
    cards = {run["card"] for run in runs.values()}
    if len(cards) > 1:
        out.append(f"**These runs were on different cards ({', '.join(sorted(cards))}).**\n")
    return "\n".join(out), cuda.verdicts_markdown(compared)


def write(path: str, runs: dict[str, dict[str, Any]]) -> None:
    """Puts the runs and their targets between the file's markers (both pairs must be there)."""
    with open(path) as f:
        text = f.read()
    for name, body in zip(("gpu-results", "gpu-targets"), sections(runs)):
        start, end = f"<!-- {name}:start -->\n", f"\n<!-- {name}:end -->"
        if text.count(start) != 1 or text.count(end) != 1 or text.index(start) > text.index(end):
            raise ValueError(f"{path} needs one {start.strip()} ... {end.strip()} pair")
        before, rest = text.split(start)
        text = before + start + body.strip("\n") + end + rest.split(end, 1)[1]
    with open(path, "w") as f:
        f.write(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "files", nargs="+", help="JSON files of rmsprop bench --device cuda --out FILE"
    )
    parser.add_argument("--write", metavar="MARKDOWN", help="fill this file's marked sections")
    args = parser.parse_args()
    runs = {}
    for path in args.files:
        try:
            with open(path) as f:
                runs[path] = json.load(f)
        except (OSError, ValueError) as error:
            sys.exit(f"{path}: {error}")
    try:
        text = report(runs)
    except (KeyError, TypeError, ValueError) as error:
        sys.exit(f"these files are not what rmsprop bench --device cuda --out saves: {error!r}")
    if not args.write:
        print(text)
        return
    try:
        write(args.write, runs)
    except (OSError, ValueError) as error:
        sys.exit(str(error))
    print(f"wrote the runs and their targets into {args.write}")


if __name__ == "__main__":
    main()
