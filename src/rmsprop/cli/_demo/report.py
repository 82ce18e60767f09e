"""The demo's written outputs: a Markdown report and the raw numbers as JSON."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from rmsprop.cli._demo.surfaces import CLOSE_GAP
from rmsprop.cli._demo.training import evaluation_interval

if TYPE_CHECKING:
    from rmsprop.cli._demo.run import DemoResults

__all__ = ["write_json", "write_markdown"]


def write_markdown(results: DemoResults, path: Path) -> Path:
    """Writes the report: every table, every figure (linked by relative path), the conclusion."""
    s = results.settings
    figures = {name: figure.name for name, figure in results.figures.items()}
    first_table, surface_table, training_table = results.tables
    seeds = ", ".join(map(str, results.training.seeds))
    n_train, n_val, n_test = results.data_sizes
    lines = [
        "# rmsprop demo: what RMSprop does, and why its flavors matter",
        "",
        f"`{s.command_line}` — rmsprop {results.environment['rmsprop']}, "
        f"torch {results.environment['torch']}, training on `{s.device}`, seed {s.seed}. "
        f"Flavors compared: {', '.join(f'`{name}`' for name in s.flavors)}.",
        "",
        "## 1. The textbook step",
        "",
        "One RMSprop step, computed by `rmsprop.numpy` (the reference implementation):",
        "",
        "```text",
        *results.step.lines(),
        "```",
        "",
        f"### {first_table.title}",
        "",
        first_table.markdown(),
        "",
        "How each flavor's step size starts, under a constant gradient, in units of its "
        "learning rate η:",
        "",
        f"![step sizes]({figures['step_sizes']})",
        "",
        "## 2. Optimizer paths on 2-D test functions",
        "",
        f"Each optimizer starts from the same point and takes {s.surface_steps} steps with the "
        f"exact gradient. Its learning rate is the best of the grid "
        f"{_grid(s.surface_lrs)}: the lowest largest f − f* over the last quarter of the run "
        f"(where it settled), ties broken by the fewest steps to f − f* ≤ {CLOSE_GAP:g}. "
        "SGD, momentum, Adagrad and Adam are `torch.optim`'s; RMSprop is "
        "`rmsprop.torch.RMSprop` with each flavor's own rule, ρ and ε, only the learning rate "
        "tuned.",
        "",
        f"### {surface_table.title}",
        "",
        "Each cell: f − f* at the end · steps to f − f* ≤ "
        f"{CLOSE_GAP:g} (> {s.surface_steps}: never) · the learning rate chosen.",
        "",
        surface_table.markdown(),
        "",
    ]
    for result in results.surfaces:
        surface = result.surface
        lines += [
            f"**{surface.title}**, f(x, y) = {surface.formula}: {surface.what_it_tests}. "
            f"Start {surface.start}, minimum f = {surface.min_value:g} at "
            f"({surface.minimum[0]:.4g}, {surface.minimum[1]:.4g}).",
            "",
            f"![{surface.title}]({figures['paths_' + surface.name]})",
            "",
        ]
    lines += [
        "## 3. A small network on handwritten digits",
        "",
        f"scikit-learn's digits (8×8 images, bundled with the package): {n_train} for training, "
        f"{n_val} for validation, {n_test} held out for testing, split once within each class. "
        f"A 64-64-10 ReLU network, mini-batches of 64, {s.steps} steps, float32 on `{s.device}`. "
        f"Each optimizer's learning rate is the one of the grid {_grid(s.training_lrs)} with the "
        f"best final validation accuracy (ties: lower validation loss) on seed "
        f"{results.training.seeds[0]}; then it runs on every seed ({seeds}). A seed fixes the "
        "initial weights and the batch order, the same for every optimizer. Losses and "
        f"accuracies are measured on the whole sets every {evaluation_interval(s.steps)} steps "
        "(so steps to the target loss are multiples of that). Wall time counts "
        "the training steps only (forward, backward, optimizer step); RMSprop takes "
        "`rmsprop.torch.RMSprop`'s default code path for the device (`rmsprop info` lists them).",
        "",
        f"### {training_table.title}",
        "",
        training_table.markdown(),
        "",
        f"![training curves]({figures['training']})",
        "",
        f"![learning-rate sensitivity]({figures['lr_sensitivity']})",
        "",
        "## 4. Conclusion",
        "",
        "Generated from the numbers above:",
        "",
        *[f"- {sentence}" for sentence in results.conclusions],
        "",
        "## How this was measured",
        "",
        *[f"- {name}: {version}" for name, version in results.environment.items()],
        "- wall time of each part: "
        + ", ".join(f"{part} {seconds:.1f} s" for part, seconds in results.seconds.items()),
        "- every number except the wall times is the same for the same seed, flavors, steps "
        "and device on the same machine and library versions (numba included: it selects "
        "RMSprop's fused CPU path, whose float32 rounding differs slightly); the raw numbers "
        "are in `results.json`.",
        "",
    ]
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def _grid(values: list[float]) -> str:
    return "{" + ", ".join(f"{value:g}" for value in values) + "}"


def _plain(value: Any) -> Any:
    """JSON-ready: arrays to lists, non-finite floats to None."""
    if isinstance(value, np.ndarray):
        return [_plain(item) for item in value.tolist()]
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if isinstance(value, dict):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


def write_json(results: DemoResults, path: Path) -> Path:
    """Writes every measured number (curves included) as JSON."""
    s = results.settings
    training = results.training
    data = {
        "settings": {
            "seed": s.seed,
            "steps": s.steps,
            "surface_steps": s.surface_steps,
            "seeds": training.seeds,
            "flavors": s.flavors,
            "device": s.device,
            "surface_lrs": s.surface_lrs,
            "training_lrs": s.training_lrs,
            "target_loss": s.target_loss,
        },
        "environment": results.environment,
        "textbook": {
            "config": repr(results.step.config),
            "theta": results.step.theta,
            "grad": results.step.grad,
            "square_avg": results.step.square_avg,
            "new_theta": results.step.new_theta,
            "first_step_by_flavor": results.first,
        },
        "surfaces": {
            result.surface.name: {
                label: {
                    "lr": run.lr,
                    "final_gap": run.final_gap,
                    "steps_to_close": run.steps_to(CLOSE_GAP),
                    "diverged": run.diverged,
                    "score_by_lr": result.score_by_lr[label],
                    "path": run.path,
                }
                for label, run in result.best.items()
            }
            for result in results.surfaces
        },
        "training": {
            label: {
                "best_lr": training.best_lr[label],
                "final_val_accuracy_by_lr": {
                    lr: run.final("val_accuracy") for lr, run in training.tuning[label].items()
                },
                "runs": [
                    {
                        "seed": run.seed,
                        "diverged": run.diverged,
                        "final_train_loss": run.final("train_loss"),
                        "final_test_accuracy": run.final("test_accuracy"),
                        "steps_to_target": run.steps_to(s.target_loss),
                        "seconds": run.seconds,
                        "steps": run.steps,
                        "train_loss": run.train_loss,
                        "test_accuracy": run.test_accuracy,
                    }
                    for run in runs
                ],
            }
            for label, runs in training.runs.items()
        },
        "conclusions": results.conclusions,
        "seconds": results.seconds,
    }
    path.write_text(json.dumps(_plain(data), indent=1, ensure_ascii=False), encoding="utf-8")
    return path
