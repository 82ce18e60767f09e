"""Two source trees' CPU step side by side, in one run: did a change make the step slower?

Usage:
    git worktree add ../before <commit>
    python benchmarks/compare_revisions.py --before ../before --after . [--rounds 3]

Runs ``rmsprop bench --device cpu --size small --json`` (a Nature-DQN network, every
variant and implementation) from each tree's ``src/`` in fresh processes, the two trees
interleaved round by round, in alternating order (so the machine's drift hits both alike),
after one warm-up round each (Numba's on-disk cache). Prints, per variant and
implementation, the median over rounds of each tree's median step and their ratio, and the
same for the step relative to ``torch for-loop`` timed in the same process: code neither
tree changes, so that ratio cancels what the rest of a shared machine does to one process.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys
from typing import Any


def bench(tree: pathlib.Path, steps: int) -> list[dict[str, Any]]:
    env = {**os.environ, "PYTHONPATH": str(tree / "src")}
    command = [sys.executable, "-m", "rmsprop", "bench", "--device", "cpu", "--size", "small"]
    done = subprocess.run(
        [*command, "--steps", str(steps), "--json"],
        env=env, cwd=tree, check=True, capture_output=True, text=True,
    )  # fmt: skip
    rows = json.loads(done.stdout)
    return rows["rows"] if isinstance(rows, dict) else rows


REF = "torch for-loop"  # unchanged by either tree: the yardstick in each process

# The host's share of a fused CPU step: 148 two-element tensors (GPT-2's count), whose kernel
# work is nothing, so the step's time is the optimizer's own Python. Median microseconds.
HOST = """
import statistics, time, torch
from rmsprop.torch import RMSprop
params = [torch.nn.Parameter(torch.ones(2)) for _ in range(148)]
for p in params:
    p.grad = torch.ones(2)
results = []
for options in ({}, {"momentum": 0.9}, {"momentum": 0.9, "centered": True}):
    opt = RMSprop(params, fused=True, **options)
    for _ in range(50):
        opt.step()
    times = []
    for _ in range(2000):
        start = time.perf_counter(); opt.step(); times.append(time.perf_counter() - start)
    results.append(statistics.median(times) * 1e6)
print(*results)
"""


def host(tree: pathlib.Path) -> list[float]:
    env = {**os.environ, "PYTHONPATH": str(tree / "src")}
    done = subprocess.run(
        [sys.executable, "-c", HOST], env=env, check=True, capture_output=True, text=True
    )
    return [float(x) for x in done.stdout.split()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", type=pathlib.Path, required=True)
    parser.add_argument("--after", type=pathlib.Path, required=True)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    trees = {"before": args.before.resolve(), "after": args.after.resolve()}
    for tree in trees.values():
        bench(tree, 3)  # warm-up: Numba's cache, the files' pages
    times: dict[tuple[str, str], dict[str, list[float]]] = {}
    relative: dict[tuple[str, str], dict[str, list[float]]] = {}
    for round_ in range(args.rounds):
        order = list(trees.items()) if round_ % 2 == 0 else list(trees.items())[::-1]
        for name, tree in order:
            rows = bench(tree, args.steps)
            reference = {r["variant"]: r["median_ms"] for r in rows if r["implementation"] == REF}
            for row in rows:
                key = (row["variant"], row["implementation"])
                times.setdefault(key, {}).setdefault(name, []).append(row["median_ms"])
                ratio = row["median_ms"] / reference[row["variant"]]
                relative.setdefault(key, {}).setdefault(name, []).append(ratio)
    print(
        "| variant | implementation | before ms | after ms | after / before "
        f"| before / {REF} | after / {REF} | after / before, relative |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for (variant, implementation), by_tree in times.items():
        if set(by_tree) != set(trees) or implementation == REF:
            continue
        before, after = (statistics.median(by_tree[name]) for name in trees)
        ratios = relative[variant, implementation]
        rel_before, rel_after = (statistics.median(ratios[name]) for name in trees)
        print(
            f"| {variant} | {implementation} | {before:.3f} | {after:.3f} | {after / before:.2f} "
            f"| {rel_before:.2f} | {rel_after:.2f} | {rel_after / rel_before:.2f} |"
        )
    hosts: dict[str, list[list[float]]] = {name: [] for name in trees}
    for round_ in range(args.rounds):
        order = list(trees.items()) if round_ % 2 == 0 else list(trees.items())[::-1]
        for name, tree in order:
            hosts[name].append(host(tree))
    print("\nThe fused CPU step over 148 two-element tensors (the optimizer's own host time):\n")
    print("| variant | before µs | after µs | after / before |")
    print("|---|---|---|---|")
    for i, variant in enumerate(["plain", "momentum", "centered+momentum"]):
        before, after = (statistics.median(r[i] for r in hosts[name]) for name in trees)
        print(f"| {variant} | {before:.1f} | {after:.1f} | {after / before:.2f} |")


if __name__ == "__main__":
    main()
