"""The demo's tables and written conclusion, computed from the measured numbers only.

Nothing here states a result in advance: every sentence is built from the
runs, and sentences whose premise the numbers don't support are left out.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np

import rmsprop
from rmsprop.cli._demo.optimizers import OptimizerSpec
from rmsprop.cli._demo.surfaces import CLOSE_GAP, SurfaceResult
from rmsprop.cli._demo.textbook import TextbookStep
from rmsprop.cli._demo.training import TrainingResult

__all__ = [
    "Table",
    "conclusions",
    "first_step_table",
    "surface_table",
    "training_table",
]


@dataclasses.dataclass(frozen=True)
class Table:
    """A table of strings, rendered by the terminal and by the report alike."""

    title: str
    headers: list[str]
    rows: list[list[str]]

    def markdown(self) -> str:
        def line(cells: list[str]) -> str:
            return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"

        rule = "|" + "---|" * len(self.headers)
        return "\n".join([line(self.headers), rule, *(line(row) for row in self.rows)])


def _steps(value: int | None, limit: int) -> str:
    return f"> {limit}" if value is None else str(value)


def _gap(value: float) -> str:
    return "diverged" if math.isinf(value) else f"{value:.1e}"


def rule_summary(name: str) -> str:
    """The flavor's rule in a few words: ρ, where ε goes, where v starts, centering."""
    config = rmsprop.flavor(name)
    parts = [
        f"ρ {config.decay:g}",
        f"ε {config.eps:g} {'inside' if config.eps_in_sqrt else 'outside'} the root",
        f"v₀ = {config.initial_square_avg:g}",
    ]
    if config.centered:
        parts.append("centered")
    if config.momentum:
        parts.append(f"momentum {config.momentum:g}")
    return ", ".join(parts)


def first_step_table(first: dict[str, np.ndarray], theta: np.ndarray, lr: float) -> Table:
    """θ after the textbook's first step in each flavor, at the same lr."""
    rows = []
    for name, new_theta in first.items():
        moved = np.abs(new_theta - theta) / lr
        rows.append(
            [
                name,
                rule_summary(name),
                np.array2string(new_theta, precision=8),
                " ".join(f"{value:.3g}" for value in moved),
            ]
        )
    return Table(
        f"The same first step in each flavor (η = {lr:g} for all; each flavor's own rule)",
        ["flavor", "rule", "θ after one step", "|Δθ| / η per coordinate"],
        rows,
    )


def surface_table(results: Sequence[SurfaceResult], specs: Sequence[OptimizerSpec]) -> Table:
    """Per optimizer and 2-D function: f − f* at the end · steps to get close · the lr chosen."""
    rows = []
    for spec in specs:
        row = [spec.label]
        for result in results:
            run = result.best[spec.label]
            steps = _steps(run.steps_to(CLOSE_GAP), result.steps)
            row.append(f"{_gap(run.final_gap)} · {steps} · lr {run.lr:g}")
        rows.append(row)
    headers = ["optimizer", *(result.surface.title for result in results)]
    return Table("2-D test functions, each optimizer at its best lr from the grid", headers, rows)


def _mean(values: Sequence[float]) -> float:
    return float(np.mean(values)) if values else math.nan


def training_table(
    result: TrainingResult, specs: Sequence[OptimizerSpec], target_loss: float
) -> Table:
    """Per optimizer: lr, final loss, held-out accuracy, steps to the target loss, wall time."""
    seeds = len(result.seeds)
    rows = []
    for spec in specs:
        runs = result.runs[spec.label]
        accuracy = [run.final("test_accuracy") for run in runs]
        reached = [step for step in (run.steps_to(target_loss) for run in runs) if step is not None]
        if not reached:
            steps_text = f"> {result.steps}"
        elif seeds == 1:
            steps_text = str(reached[0])
        else:
            steps_text = f"{_mean(reached):.0f} ({min(reached)}–{max(reached)})"
            if len(reached) < seeds:
                steps_text += f", {seeds - len(reached)} of {seeds} never"
        if any(run.diverged for run in runs):
            accuracy_text = "diverged"
        elif seeds > 1:
            accuracy_text = f"{_mean(accuracy):.2%} ({min(accuracy):.1%}–{max(accuracy):.1%})"
        else:
            accuracy_text = f"{accuracy[0]:.2%}"
        seconds = _mean([run.seconds for run in runs])
        loss = _mean([run.final("train_loss") for run in runs])
        rows.append(
            [
                spec.label,
                f"{result.best_lr[spec.label]:g}",
                f"{loss:.4f}" if math.isfinite(loss) else "—",
                accuracy_text,
                steps_text,
                f"{seconds:.2f}",
                f"{1e3 * seconds / result.steps:.3f}",
            ]
        )
    return Table(
        f"Digits network: {result.steps} steps, {seeds} seed{'s' * (seeds > 1)}"
        + (" (mean and range over seeds)" if seeds > 1 else ""),
        [
            "optimizer",
            "lr",
            "final train loss",
            "test accuracy",
            f"steps to loss ≤ {target_loss:g}",
            "s per run",
            "ms per step",
        ],
        rows,
    )


def _join(names: Sequence[str]) -> str:
    return ", ".join(names[:-1]) + (" and " if len(names) > 1 else "") + names[-1]


def _textbook_sentences(
    step: TextbookStep, first: dict[str, np.ndarray], series: dict[float, dict[str, np.ndarray]]
) -> list[str]:
    sentences = []
    moved = step.moved
    grads = np.abs(step.grad)
    theory = step.config.lr / math.sqrt(1 - step.config.decay)
    if np.allclose(moved, theory, rtol=1e-4):
        sentences.append(
            f"The textbook step moved every coordinate by the same {moved[0]:.4f} = η/√(1 − ρ), "
            f"although |g| ranged from {grads.min():g} to {grads.max():g}: with E[g²] starting "
            f"at 0, the first step is sign(g)·η/√(1 − ρ), whatever the gradient's size."
        )
    else:
        sentences.append(f"The textbook step moved the coordinates by {np.round(moved, 5)}.")
    if len(first) > 1:
        sizes = {name: float(np.mean(np.abs(theta - step.theta))) for name, theta in first.items()}
        big, small = max(sizes, key=sizes.__getitem__), min(sizes, key=sizes.__getitem__)
        if sizes[small] > 0 and sizes[big] / sizes[small] > 1.05:
            sentences.append(
                f"With the same η = {step.config.lr:g} and the same gradient, the first step "
                f"differs by a factor of {sizes[big] / sizes[small]:.3g} between flavors: "
                f"`{big}` moves θ by {sizes[big]:.3g} on average, `{small}` by {sizes[small]:.3g}."
            )
    for grad, by_flavor in series.items():
        if len(by_flavor) < 2:
            continue
        early = {name: float(np.mean(sizes[:10])) for name, sizes in by_flavor.items()}
        low, high = min(early, key=early.__getitem__), max(early, key=early.__getitem__)
        if early[high] / early[low] < 2:
            continue
        why = ""
        if rmsprop.flavor(low).initial_square_avg > 10 * grad**2:
            why = (
                f" (`{low}` starts E[g²] at {rmsprop.flavor(low).initial_square_avg:g}, "
                f"far above g² = {grad**2:g})"
            )
        sentences.append(
            f"Under a constant gradient g = {grad:g}, the mean step over the first 10 steps "
            f"was {early[low]:.3g}·η for `{low}`{why} and {early[high]:.3g}·η for `{high}`."
        )
    return sentences


def _surface_sentences(
    results: Sequence[SurfaceResult], specs: Sequence[OptimizerSpec]
) -> list[str]:
    sentences = []
    rmsprops = [spec for spec in specs if spec.is_rmsprop]
    for result in results:
        ranked = sorted(result.best, key=lambda label: result.best[label].rank_key)
        best = result.best[ranked[0]]
        # Runs that settled as close, as fast, are tied: name them all.
        tied = [label for label in ranked if result.best[label].rank_key[:2] == best.rank_key[:2]]
        settled = (
            f"{_join(tied)} tied for closest" if len(tied) > 1 else f"{tied[0]} settled closest"
        )
        text = (
            f"On {result.surface.title}, {settled} to the minimum "
            f"(f − f* = {_gap(best.final_gap)} after {result.steps} steps)"
        )
        if rmsprops:
            top = min(rmsprops, key=lambda spec: result.best[spec.label].rank_key)
            run = result.best[top.label]
            if top.label not in tied:
                text += f"; the best RMSprop, {top.label}, ended at {_gap(run.final_gap)}"
            sgd = result.best.get("SGD")
            rmsprop_steps = run.steps_to(CLOSE_GAP)
            sgd_steps = None if sgd is None else sgd.steps_to(CLOSE_GAP)
            if sgd is not None and (rmsprop_steps is not None or sgd_steps is not None):
                text += (
                    f". Steps to come within {CLOSE_GAP:g} of the minimum value: {top.label} "
                    f"{_steps(rmsprop_steps, result.steps)}, SGD {_steps(sgd_steps, result.steps)}"
                )
        sentences.append(text + ".")
    return sentences


def _training_sentences(
    result: TrainingResult, specs: Sequence[OptimizerSpec], target_loss: float
) -> list[str]:
    sentences = []
    accuracy = {
        spec.label: _mean([run.final("test_accuracy") for run in result.runs[spec.label]])
        for spec in specs
    }
    finite = {label: value for label, value in accuracy.items() if math.isfinite(value)}
    diverged = [label for label, value in accuracy.items() if not math.isfinite(value)]
    seeds = len(result.seeds)
    if finite:
        top = max(finite, key=finite.__getitem__)
        bottom = min(finite, key=finite.__getitem__)
        over = f"the mean of {seeds} seeds" if seeds > 1 else "one seed"
        sentences.append(
            f"On the digits, held-out accuracy ranged from {finite[bottom]:.1%} ({bottom}) "
            f"to {finite[top]:.1%} ({top}), {over}."
        )
        spreads = [
            max(run.final("test_accuracy") for run in runs)
            - min(run.final("test_accuracy") for run in runs)
            for runs in result.runs.values()
            if not any(run.diverged for run in runs)
        ]
        if seeds > 1 and spreads:
            noise = max(spreads)
            sentences.append(
                f"Across seeds one optimizer's accuracy varied by up to {noise:.1%}: gaps "
                f"smaller than that (here {finite[top] - finite[bottom]:.1%} from best to worst) "
                f"say little."
                if finite[top] - finite[bottom] <= noise
                else f"Across seeds one optimizer's accuracy varied by up to {noise:.1%}, less "
                f"than the {finite[top] - finite[bottom]:.1%} from best to worst."
            )
        elif seeds == 1:
            sentences.append(
                f"With one seed, one test digit is {1 / result.n_test:.2%}: small gaps are noise "
                f"(run without --quick for several seeds)."
            )
    always = [
        label
        for label, by_lr in result.tuning.items()
        if all(run.diverged for run in by_lr.values())
    ]
    for spec in specs:
        if spec.label in always:
            why = ""
            if spec.flavor is not None and rmsprop.flavor(spec.flavor).eps == 0:
                why = (
                    " (its ε is 0: wherever a gradient and its running average are both "
                    "exactly 0, the step is 0/0 = NaN)"
                )
            sentences.append(f"{spec.label} diverged at every learning rate tried{why}.")
    sometimes = [label for label in diverged if label not in always]
    if sometimes:
        sentences.append(
            f"{_join(sometimes)} diverged (non-finite or exploding loss) on at least one "
            f"seed at the lr chosen for it."
        )
    reached = {
        spec.label: [run.steps_to(target_loss) for run in result.runs[spec.label]] for spec in specs
    }
    all_reached = {
        label: _mean([float(step) for step in steps if step is not None])
        for label, steps in reached.items()
        if steps and None not in steps
    }
    if all_reached:
        fastest = min(all_reached, key=all_reached.__getitem__)
        never = [label for label in reached if label not in all_reached]
        text = (
            f"Fastest to a training loss of {target_loss:g}: {fastest}, in "
            f"{all_reached[fastest]:.0f} steps"
        )
        if "SGD" in all_reached and fastest != "SGD":
            text += f" (SGD: {all_reached['SGD']:.0f})"
        if never:
            text += f"; {_join(never)} did not get there within {result.steps} steps"
            text += " on every seed" if seeds > 1 else ""
        sentences.append(text + ".")
    rmsprops = [spec.label for spec in specs if spec.is_rmsprop and spec.label not in always]
    if len(rmsprops) > 1:
        lrs = {label: result.best_lr[label] for label in rmsprops}
        if max(lrs.values()) / min(lrs.values()) > 1.5:
            listed = ", ".join(f"{label.split('(')[1][:-1]} {lr:g}" for label, lr in lrs.items())
            sentences.append(
                f"The flavors' best learning rates differ by a factor of "
                f"{max(lrs.values()) / min(lrs.values()):.0f} ({listed}): a learning rate tuned "
                f"for one flavor is not the right one for another."
            )
        reference = rmsprops[0]
        reference_lr = result.best_lr[reference]
        costs = {}
        for label in rmsprops[1:]:
            at_reference = result.tuning[label][reference_lr].final("val_accuracy")
            at_own = result.tuning[label][result.best_lr[label]].final("val_accuracy")
            costs[label] = (at_own - at_reference if math.isfinite(at_reference) else math.inf,
                            at_reference, at_own)  # fmt: skip
        if costs:
            worst = max(costs, key=lambda label: costs[label][0])
            loss, at_reference, at_own = costs[worst]
            if loss > 0.005:
                at_text = "diverged" if not math.isfinite(at_reference) else f"{at_reference:.1%}"
                sentences.append(
                    f"Porting a recipe without retuning: at the lr chosen for {reference}, "
                    f"{reference_lr:g}, {worst} reached a validation accuracy of {at_text}, "
                    f"against {at_own:.1%} at its own best lr."
                )
    edges = [
        label
        for label, lr in result.best_lr.items()
        if lr in (min(result.tuning[label]), max(result.tuning[label])) and label not in always
    ]
    if edges:
        sentences.append(
            f"The lr chosen for {_join(edges)} is at the edge of the grid: "
            f"a value beyond it might do better."
        )
    return sentences


def conclusions(
    step: TextbookStep,
    first: dict[str, np.ndarray],
    series: dict[float, dict[str, np.ndarray]],
    surfaces: Sequence[SurfaceResult],
    training: TrainingResult,
    specs: Sequence[OptimizerSpec],
    target_loss: float,
) -> list[str]:
    """The written conclusion: one sentence per finding, each computed from the runs."""
    return [
        *_textbook_sentences(step, first, series),
        *_surface_sentences(surfaces, specs),
        *_training_sentences(training, specs, target_loss),
    ]
