"""Optimizer paths on classic 2-D test functions.

Each function comes with its gradient written out by hand: autograd on two
numbers costs more than the optimizer step it feeds, and the demo takes
tens of thousands of steps here.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from rmsprop.cli._demo.optimizers import OptimizerSpec

__all__ = ["SURFACES", "PathRun", "Surface", "SurfaceResult", "run_path", "tune_on_surface"]


@dataclasses.dataclass(frozen=True)
class Surface:
    """A 2-D test function with a known minimum, a start point and a view."""

    name: str
    title: str
    formula: str
    function: Callable[[Any, Any], Any]  # on floats or NumPy arrays
    gradient: Callable[[float, float], tuple[float, float]]
    start: tuple[float, float]
    minimum: tuple[float, float]
    min_value: float
    xlim: tuple[float, float]
    ylim: tuple[float, float]
    what_it_tests: str


def _rosenbrock(x: Any, y: Any) -> Any:
    return (1 - x) ** 2 + 100 * (y - x**2) ** 2


def _rosenbrock_gradient(x: float, y: float) -> tuple[float, float]:
    return -2 * (1 - x) - 400 * x * (y - x**2), 200 * (y - x**2)


def _beale(x: Any, y: Any) -> Any:
    return (1.5 - x + x * y) ** 2 + (2.25 - x + x * y**2) ** 2 + (2.625 - x + x * y**3) ** 2


def _beale_gradient(x: float, y: float) -> tuple[float, float]:
    a, b, c = 1.5 - x + x * y, 2.25 - x + x * y**2, 2.625 - x + x * y**3
    dx = 2 * a * (y - 1) + 2 * b * (y**2 - 1) + 2 * c * (y**3 - 1)
    dy = 2 * a * x + 2 * b * 2 * x * y + 2 * c * 3 * x * y**2
    return dx, dy


def _saddle(x: Any, y: Any) -> Any:
    return x**2 + (y**4 - 4 * y**2) / 400


def _saddle_gradient(x: float, y: float) -> tuple[float, float]:
    return 2 * x, (4 * y**3 - 8 * y) / 400


SURFACES: tuple[Surface, ...] = (
    Surface(
        "rosenbrock",
        "Rosenbrock",
        "(1 − x)² + 100·(y − x²)²",
        _rosenbrock,
        _rosenbrock_gradient,
        start=(-1.5, 2.0),
        minimum=(1.0, 1.0),
        min_value=0.0,
        xlim=(-2.0, 2.0),
        ylim=(-1.0, 3.0),
        what_it_tests="a narrow curved valley: steep across, nearly flat along",
    ),
    Surface(
        "beale",
        "Beale",
        "(1.5 − x + xy)² + (2.25 − x + xy²)² + (2.625 − x + xy³)²",
        _beale,
        _beale_gradient,
        start=(1.0, 1.4),
        minimum=(3.0, 0.5),
        min_value=0.0,
        xlim=(-1.0, 4.0),
        ylim=(-1.5, 2.0),
        what_it_tests="gradients that span several orders of magnitude, and flat plateaus",
    ),
    Surface(
        "saddle",
        "Saddle point",
        "x² + (y⁴ − 4y²)/400",
        _saddle,
        _saddle_gradient,
        start=(1.5, 1e-3),
        minimum=(0.0, math.sqrt(2.0)),
        min_value=-0.01,
        xlim=(-2.0, 2.0),
        ylim=(-1.0, 2.0),
        what_it_tests=(
            "a saddle at the origin, 100 times steeper in x than in y: "
            "the way down (y → √2) starts with a tiny gradient"
        ),
    ),
)


@dataclasses.dataclass
class PathRun:
    """One optimizer on one surface at one learning rate.

    Attributes:
        lr: the learning rate.
        path: the points visited, shape ``(steps + 1, 2)`` (fewer if it diverged).
        gaps: f − f* at each point of ``path``.
        diverged: it left every sane range (a non-finite or huge value).
        seconds: wall time of the steps.
    """

    lr: float
    path: np.ndarray
    gaps: np.ndarray
    diverged: bool
    seconds: float

    @property
    def final_gap(self) -> float:
        return math.inf if self.diverged else float(self.gaps[-1])

    @property
    def score(self) -> float:
        """log₁₀ of the largest f − f* over the last quarter of the run: lower is better.

        It says where the run has settled, so a lucky dip in a run that still
        bounces about does not win. Gaps below `GAP_FLOOR` count as equal; a
        run that diverged scores +inf.
        """
        if self.diverged:
            return math.inf
        tail = self.gaps[-max(1, len(self.gaps) // 4) :]
        return math.log10(max(float(tail.max()), GAP_FLOOR))

    @property
    def rank_key(self) -> tuple[float, float, float]:
        """How runs of one optimizer are ranked: score, then speed, then the smaller lr."""
        reached = self.steps_to(CLOSE_GAP)
        return self.score, math.inf if reached is None else reached, self.lr

    def steps_to(self, gap: float) -> int | None:
        """The first step at which f − f* ≤ ``gap`` (``None``: never)."""
        reached = np.flatnonzero(self.gaps <= gap)
        return int(reached[0]) if reached.size else None


@dataclasses.dataclass
class SurfaceResult:
    """Every optimizer's best run on one surface, and every lr it tried."""

    surface: Surface
    steps: int
    best: dict[str, PathRun]  # by optimizer label
    score_by_lr: dict[str, dict[float, float]]  # label -> lr -> PathRun.score


# Below this, f − f* is rounding: the score treats every smaller gap as equal.
GAP_FLOOR = 1e-12
# "Close to the minimum": the gap the tables count steps to.
CLOSE_GAP = 1e-3
# A run is stopped as diverged once a coordinate leaves this box (or is not finite).
_DIVERGED_AT = 1e6


def run_path(surface: Surface, spec: OptimizerSpec, lr: float, steps: int) -> PathRun:
    """Runs ``spec`` from the surface's start for ``steps`` steps, in float64."""
    point = torch.tensor(surface.start, dtype=torch.float64)
    optimizer = spec.build([point], lr)
    path = np.empty((steps + 1, 2))
    gaps = np.empty(steps + 1)
    diverged = False
    length = steps + 1
    started = time.perf_counter()
    for step in range(steps + 1):
        x, y = point.tolist()
        # Checked before f: a float power of a huge coordinate raises OverflowError.
        if not (abs(x) < _DIVERGED_AT and abs(y) < _DIVERGED_AT):
            diverged, length = True, step
            break
        path[step] = x, y
        gaps[step] = surface.function(x, y) - surface.min_value
        if step == steps:
            break
        point.grad = torch.tensor(surface.gradient(x, y), dtype=torch.float64)
        optimizer.step()
    seconds = time.perf_counter() - started
    # Rounding can put f a hair below its minimum; the plots use a log scale.
    gaps = np.maximum(gaps[:length], 0.0)
    return PathRun(lr, path[:length], gaps, diverged, seconds)


def tune_on_surface(
    surface: Surface,
    specs: Sequence[OptimizerSpec],
    lrs: Sequence[float],
    steps: int,
    advance: Callable[[], None] = lambda: None,
) -> SurfaceResult:
    """Runs every optimizer at every lr; keeps each one's run with the best `PathRun.score`."""
    best: dict[str, PathRun] = {}
    by_lr: dict[str, dict[float, float]] = {}
    for spec in specs:
        runs = []
        for lr in lrs:
            runs.append(run_path(surface, spec, lr, steps))
            advance()
        by_lr[spec.label] = {run.lr: run.score for run in runs}
        best[spec.label] = min(runs, key=lambda run: run.rank_key)
    return SurfaceResult(surface, steps, best, by_lr)
