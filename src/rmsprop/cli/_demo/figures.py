"""The demo's figures, drawn with matplotlib's object API (no pyplot, no display needed)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure

from rmsprop.cli._demo.optimizers import OptimizerSpec
from rmsprop.cli._demo.surfaces import GAP_FLOOR, SurfaceResult
from rmsprop.cli._demo.training import TrainingResult

__all__ = ["plot_lr_sensitivity", "plot_step_sizes", "plot_surface", "plot_training"]

_DPI = 110


def _save(figure: Figure, path: Path) -> Path:
    figure.savefig(path, dpi=_DPI, metadata={"Software": None})
    return path


def _draw_contours(axes: Axes, result: SurfaceResult) -> None:
    surface = result.surface
    xs = np.linspace(*surface.xlim, 300)
    ys = np.linspace(*surface.ylim, 300)
    grid_x, grid_y = np.meshgrid(xs, ys)
    gaps = np.maximum(surface.function(grid_x, grid_y) - surface.min_value, 1e-6)
    levels = np.logspace(math.log10(gaps.min()), math.log10(gaps.max()), 25)
    axes.contourf(grid_x, grid_y, gaps, levels=levels, norm=LogNorm(), cmap="Greys_r", alpha=0.35)
    axes.contour(grid_x, grid_y, gaps, levels=levels, norm=LogNorm(), colors="0.55",
                 linewidths=0.4)  # fmt: skip
    axes.plot(*surface.start, "o", color="black", markersize=6, zorder=5, label="start")
    axes.plot(*surface.minimum, "*", color="gold", markeredgecolor="black", markersize=14,
              zorder=5, label="minimum")  # fmt: skip
    if surface.name == "saddle":
        axes.plot(0, 0, "x", color="black", markersize=8, zorder=5, label="saddle point")
    axes.set_xlim(*surface.xlim)
    axes.set_ylim(*surface.ylim)
    axes.set_xlabel("x")
    axes.set_ylabel("y")


def _draw_paths(axes: Axes, result: SurfaceResult, specs: Sequence[OptimizerSpec]) -> None:
    for spec in specs:
        run = result.best[spec.label]
        label = f"{spec.label}, lr {run.lr:g}"
        x, y = run.path[-1]
        (x_low, x_high), (y_low, y_high) = result.surface.xlim, result.surface.ylim
        if run.diverged:
            label += " (diverged)"
        elif not (x_low <= x <= x_high and y_low <= y <= y_high):
            label += f" (ends off the view, at ({x:.2g}, {y:.2g}))"
        axes.plot(run.path[:, 0], run.path[:, 1], "-", color=spec.color, linewidth=1.4,
                  alpha=0.9, label=label)  # fmt: skip
        axes.plot(run.path[-1, 0], run.path[-1, 1], "s", color=spec.color, markersize=4)


def plot_surface(
    result: SurfaceResult, specs: Sequence[OptimizerSpec], steps: int, path: Path
) -> Path:
    """Paths over contours (baselines, then RMSprop flavors) and f − f* against the step."""
    surface = result.surface
    rmsprops = [spec for spec in specs if spec.is_rmsprop]
    others = [spec for spec in specs if not spec.is_rmsprop]
    figure = Figure(figsize=(17, 5.4), layout="constrained")
    left, middle, right = figure.subplots(1, 3)
    for axes, group, title in (
        (left, [*others, *rmsprops[:1]], "RMSprop against other optimizers"),
        (middle, rmsprops, "RMSprop flavors"),
    ):
        _draw_contours(axes, result)
        _draw_paths(axes, result, group)
        axes.set_title(title)
        axes.legend(loc="best", fontsize=7.5, framealpha=0.85)
    for spec in specs:
        run = result.best[spec.label]
        gaps = np.maximum(run.gaps, GAP_FLOOR)
        style = "-" if spec.is_rmsprop else "--"
        right.plot(np.arange(len(gaps)), gaps, style, color=spec.color, linewidth=1.3,
                   label=spec.label)  # fmt: skip
    right.set_yscale("log")
    right.set_xlim(0, steps)
    right.set_xlabel("step")
    right.set_ylabel("f − f*  (log scale)")
    right.set_title("distance to the minimum value")
    right.grid(True, which="major", alpha=0.3)
    right.legend(loc="best", fontsize=7.5, framealpha=0.85)
    figure.suptitle(
        f"{surface.title}: f(x, y) = {surface.formula}, {steps} steps, "
        f"each optimizer at its best learning rate from the grid"
    )
    return _save(figure, path)


def plot_step_sizes(
    series: dict[float, dict[str, np.ndarray]], specs: Sequence[OptimizerSpec], path: Path
) -> Path:
    """|Δθ|/η per step under a constant gradient, one panel per gradient size."""
    colors = {spec.flavor: spec.color for spec in specs if spec.is_rmsprop}
    figure = Figure(figsize=(12, 4.6), layout="constrained")
    panels = figure.subplots(1, len(series), sharey=True, squeeze=False)[0]
    for axes, (grad, by_flavor) in zip(panels, series.items()):
        for name, sizes in by_flavor.items():
            steps = np.arange(1, len(sizes) + 1)
            axes.plot(steps, sizes, color=colors[name], linewidth=1.6, label=name)
        axes.axhline(1.0, color="black", linewidth=0.8, linestyle=":", label="η (the steady state)")
        axes.set_yscale("log")
        axes.set_xlabel("step")
        axes.set_title(f"constant gradient g = {grad:g}")
        axes.grid(True, which="major", alpha=0.3)
        axes.legend(fontsize=8)
    panels[0].set_ylabel("|Δθ| / η  (log scale)")
    figure.suptitle(
        "Step size of each flavor, in units of its learning rate, for the same constant gradient"
    )
    return _save(figure, path)


def _band(runs_values: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean, min and max over seeds, cut to the shortest run (a diverged run stops early)."""
    length = min(len(values) for values in runs_values)
    stacked = np.stack([values[:length] for values in runs_values])
    return stacked.mean(axis=0), stacked.min(axis=0), stacked.max(axis=0)


def plot_training(
    result: TrainingResult, specs: Sequence[OptimizerSpec], target_loss: float, path: Path
) -> Path:
    """Training loss (log scale) and held-out accuracy against the step, mean and seed range."""
    figure = Figure(figsize=(14, 5.2), layout="constrained")
    loss_axes, accuracy_axes = figure.subplots(1, 2)
    lowest_accuracy = 1.0
    for spec in specs:
        runs = result.runs[spec.label]
        length = min(len(run.steps) for run in runs)
        steps = runs[0].steps[:length]
        style = "-" if spec.is_rmsprop else "--"
        label = f"{spec.label}, lr {result.best_lr[spec.label]:g}"
        if any(run.diverged for run in runs):
            label += " (diverged)"
        for axes, metric in ((loss_axes, "train_loss"), (accuracy_axes, "test_accuracy")):
            mean, low, high = _band([getattr(run, metric) for run in runs])
            axes.plot(steps, mean, style, color=spec.color, linewidth=1.5, label=label)
            if len(runs) > 1:
                axes.fill_between(steps, low, high, color=spec.color, alpha=0.15, linewidth=0)
            if metric == "test_accuracy" and len(mean):
                lowest_accuracy = min(lowest_accuracy, float(np.min(mean[len(mean) // 4 :])))
    loss_axes.axhline(target_loss, color="black", linewidth=0.8, linestyle=":",
                      label=f"target loss {target_loss:g}")  # fmt: skip
    loss_axes.set_yscale("log")
    loss_axes.set_ylabel("cross-entropy on the whole training set (log scale)")
    loss_axes.set_title("training loss")
    accuracy_axes.set_ylabel("accuracy on the held-out test set")
    accuracy_axes.set_title("held-out accuracy")
    # Zoom on where the runs end up; the first quarter (the climb from 10%) would flatten it.
    accuracy_axes.set_ylim(max(0.0, lowest_accuracy - 0.02), 1.0)
    for axes in (loss_axes, accuracy_axes):
        axes.set_xlabel("step")
        axes.set_xlim(0, result.steps)
        axes.grid(True, which="major", alpha=0.3)
        axes.legend(fontsize=7.5, framealpha=0.85)
    seeds = len(result.seeds)
    spread = f"mean of {seeds} seeds, band: min to max" if seeds > 1 else "one seed"
    figure.suptitle(
        f"Digits, 64-64-10 network, batch 64, {result.steps} steps, each optimizer at the "
        f"learning rate that was best on the validation set ({spread})"
    )
    return _save(figure, path)


def plot_lr_sensitivity(result: TrainingResult, specs: Sequence[OptimizerSpec], path: Path) -> Path:
    """Final validation accuracy against the learning rate; the chosen lr marked."""
    rmsprops = [spec for spec in specs if spec.is_rmsprop]
    others = [spec for spec in specs if not spec.is_rmsprop]
    figure = Figure(figsize=(13, 4.8), layout="constrained")
    panels = figure.subplots(1, 2, sharey=True)
    for axes, group, title in (
        (panels[0], [*others, *rmsprops[:1]], "RMSprop against other optimizers"),
        (panels[1], rmsprops, "RMSprop flavors"),
    ):
        for spec in group:
            by_lr = result.tuning[spec.label]
            lrs = sorted(by_lr)
            accuracy = [by_lr[lr].final("val_accuracy") for lr in lrs]
            style = "-o" if spec.is_rmsprop else "--o"
            axes.plot(lrs, accuracy, style, color=spec.color, markersize=4, label=spec.label)
            best = result.best_lr[spec.label]
            axes.plot(best, by_lr[best].final("val_accuracy"), "o", color=spec.color,
                      markersize=11, markerfacecolor="none", markeredgewidth=1.8)  # fmt: skip
        axes.set_xscale("log")
        axes.set_xlabel("learning rate (log scale)")
        axes.set_title(title)
        axes.grid(True, which="major", alpha=0.3)
        axes.legend(fontsize=8)
    panels[0].set_ylabel("validation accuracy at the end")
    panels[0].set_ylim(0, 1)
    figure.suptitle(
        f"Digits: accuracy against the learning rate after {result.steps} steps "
        f"(seed {result.seeds[0]}; ringed: the lr chosen; a missing point diverged)"
    )
    return _save(figure, path)
