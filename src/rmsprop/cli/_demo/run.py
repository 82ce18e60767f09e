"""The demo, start to finish: compute each part, print it, draw it, write the report."""

from __future__ import annotations

import dataclasses
import functools
import math
import platform
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.padding import Padding
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table as RichTable
from rich.text import Text

import rmsprop
from rmsprop.cli._demo import figures, report, summary, textbook
from rmsprop.cli._demo.optimizers import OptimizerSpec, optimizer_specs
from rmsprop.cli._demo.surfaces import CLOSE_GAP, SURFACES, SurfaceResult, tune_on_surface
from rmsprop.cli._demo.training import TrainingResult, load_split_digits, tune

__all__ = ["DemoResults", "DemoSettings", "make_settings", "run_demo"]

# The training loss the tables count steps to (chance level is ln 10 ≈ 2.3).
TARGET_LOSS = 0.1
# Constant gradients of the step-size figure: one of order 1, one small.
STEP_SIZE_GRADIENTS = (1.0, 0.001)
STEP_SIZE_STEPS = 100


def _half_decades(low: float, high: float) -> list[float]:
    """Powers of 10 and their √10 multiples (rounded to 3) from ``low`` to ``high``.

    Example:
        >>> _half_decades(3e-4, 3)
        [0.0003, 0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0]
    """
    first, last = round(2 * math.log10(low)), round(2 * math.log10(high))
    return [float(f"{10.0 ** (half / 2):.0e}") for half in range(first, last + 1)]


@dataclasses.dataclass(frozen=True)
class DemoSettings:
    """Everything that decides the demo's numbers (and where they go)."""

    out: Path
    seed: int
    steps: int  # training steps per run
    surface_steps: int
    n_seeds: int
    flavors: list[str]
    device: str
    surface_lrs: list[float]
    training_lrs: list[float]
    target_loss: float
    command_line: str


def make_settings(
    *,
    out: Path,
    quick: bool,
    steps: int | None,
    seed: int,
    flavors: Sequence[str],
    device: str,
    command_line: str,
) -> DemoSettings:
    """The default demo takes about a minute on two CPU cores; ``quick`` about ten seconds."""
    if quick:
        # Whole decades only: 4 learning rates instead of 8-9, 1 seed instead of 5.
        surface_lrs = training_lrs = [1e-3, 1e-2, 1e-1, 1.0]
        default_steps, surface_steps, n_seeds = 150, 150, 1
    else:
        surface_lrs = _half_decades(3e-4, 1.0)
        training_lrs = _half_decades(3e-4, 3.0)
        default_steps, surface_steps, n_seeds = 600, 400, 5
    return DemoSettings(
        out=out,
        seed=seed,
        steps=default_steps if steps is None else steps,
        surface_steps=surface_steps,
        n_seeds=n_seeds,
        flavors=list(flavors),
        device=device,
        surface_lrs=surface_lrs,
        training_lrs=training_lrs,
        target_loss=TARGET_LOSS,
        command_line=command_line,
    )


@dataclasses.dataclass
class DemoResults:
    """Everything the demo measured, and where it wrote its files."""

    settings: DemoSettings
    specs: list[OptimizerSpec]
    step: textbook.TextbookStep
    first: dict[str, np.ndarray]
    series: dict[float, dict[str, np.ndarray]]
    surfaces: list[SurfaceResult]
    training: TrainingResult
    data_sizes: tuple[int, int, int]
    tables: list[summary.Table]
    conclusions: list[str]
    figures: dict[str, Path]
    environment: dict[str, str]
    seconds: dict[str, float]


def _environment(device: torch.device) -> dict[str, str]:
    versions = {"python": platform.python_version(), "rmsprop": rmsprop.__version__}
    for package in ("numpy", "torch", "numba", "matplotlib", "scikit-learn", "rich"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:  # numba: rmsprop[fast], optional
            versions[package] = "not installed"
    if device.type == "cuda":
        versions["device"] = torch.cuda.get_device_name(device)
    else:
        versions["device"] = f"CPU, {torch.get_num_threads()} torch thread(s)"
    return versions


def _say(console: Console, text: str) -> None:
    """Prints text as it is: no markup, no highlighting (numbers in brackets stay as they are)."""
    console.print(text, markup=False, highlight=False)


def _print_table(console: Console, table: summary.Table) -> None:
    rich_table = RichTable(title=table.title, title_justify="left", header_style="bold")
    for index, header in enumerate(table.headers):
        rich_table.add_column(header, no_wrap=index == 0)
    for row in table.rows:
        rich_table.add_row(*row)
    console.print(rich_table)


def _progress(console: Console) -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("runs"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
    )


@contextmanager
def _one_torch_thread() -> Iterator[None]:
    # Tiny tensors: a second thread costs more than it gives, and one thread is deterministic.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def run_demo(settings: DemoSettings, console: Console) -> DemoResults:
    """Runs the four parts, printing as it goes; writes figures, report.md and results.json."""
    with _one_torch_thread():
        return _run(settings, console)


def _run(settings: DemoSettings, console: Console) -> DemoResults:
    s = settings
    device = torch.device(s.device)
    specs = optimizer_specs(s.flavors)
    seconds: dict[str, float] = {}
    figure_paths: dict[str, Path] = {}
    console.print(
        f"[bold]rmsprop demo[/bold]: RMSprop and its flavors on {device.type.upper()}, "
        f"seed {s.seed}, flavors {', '.join(s.flavors)}",
    )

    started = time.perf_counter()
    console.rule("1. The textbook step", align="left")
    step, first, series, first_table = _textbook_part(s, specs, console, figure_paths)
    seconds["textbook"] = time.perf_counter() - started

    started = time.perf_counter()
    console.rule("2. Optimizer paths on 2-D test functions", align="left")
    surfaces, surface_table = _surfaces_part(s, specs, console, figure_paths)
    seconds["2-D paths"] = time.perf_counter() - started

    started = time.perf_counter()
    console.rule("3. A small network on handwritten digits", align="left")
    training, data_sizes, training_table = _training_part(s, specs, device, console, figure_paths)
    seconds["training"] = time.perf_counter() - started

    console.rule("4. Conclusion", align="left")
    sentences = summary.conclusions(step, first, series, surfaces, training, specs, s.target_loss)
    for sentence in sentences:
        # Wrapped lines line up under the text, not under the bullet.
        console.print(Padding(Text(f"• {sentence}"), (0, 0, 0, 2), expand=False))

    results = DemoResults(
        settings=s,
        specs=specs,
        step=step,
        first=first,
        series=series,
        surfaces=surfaces,
        training=training,
        data_sizes=data_sizes,
        tables=[first_table, surface_table, training_table],
        conclusions=sentences,
        figures=figure_paths,
        environment=_environment(device),
        seconds=seconds,
    )
    report.write_json(results, s.out / "results.json")
    report_path = report.write_markdown(results, s.out / "report.md")
    console.rule(align="left")
    _say(console, f"Figures: {', '.join(path.name for path in figure_paths.values())}")
    _say(console, f"Report: {report_path.resolve()}")
    return results


def _textbook_part(
    s: DemoSettings, specs: list[OptimizerSpec], console: Console, figure_paths: dict[str, Path]
) -> tuple[
    textbook.TextbookStep, dict[str, np.ndarray], dict[float, dict[str, np.ndarray]], summary.Table
]:
    step = textbook.textbook_step()
    for line in step.lines():
        _say(console, "  " + line)
    first = textbook.first_steps(s.flavors)
    first_table = summary.first_step_table(first, step.theta, step.config.lr)
    _print_table(console, first_table)
    series = {
        grad: {name: textbook.step_size_series(name, grad, STEP_SIZE_STEPS) for name in s.flavors}
        for grad in STEP_SIZE_GRADIENTS
    }
    figure_paths["step_sizes"] = figures.plot_step_sizes(series, specs, s.out / "step_sizes.png")
    return step, first, series, first_table


def _surfaces_part(
    s: DemoSettings, specs: list[OptimizerSpec], console: Console, figure_paths: dict[str, Path]
) -> tuple[list[SurfaceResult], summary.Table]:
    surfaces = []
    with _progress(console) as progress:
        for surface in SURFACES:
            task = progress.add_task(f"{surface.title:<13}", total=len(specs) * len(s.surface_lrs))
            advance = functools.partial(progress.advance, task)
            surfaces.append(
                tune_on_surface(surface, specs, s.surface_lrs, s.surface_steps, advance)
            )
    surface_table = summary.surface_table(surfaces, specs)
    _say(console, f"each cell: f − f* at the end · steps to f − f* ≤ {CLOSE_GAP:g} · lr")
    _print_table(console, surface_table)
    for result in surfaces:
        name = f"paths_{result.surface.name}"
        path = s.out / f"{name}.png"
        figure_paths[name] = figures.plot_surface(result, specs, s.surface_steps, path)
    return surfaces, surface_table


def _training_part(
    s: DemoSettings,
    specs: list[OptimizerSpec],
    device: torch.device,
    console: Console,
    figure_paths: dict[str, Path],
) -> tuple[TrainingResult, tuple[int, int, int], summary.Table]:
    seeds = [s.seed + offset for offset in range(s.n_seeds)]
    data = load_split_digits(device)
    n_train, n_val, n_test = data.sizes
    _say(
        console,
        f"  scikit-learn digits: {n_train} train / {n_val} validation / {n_test} test; "
        f"64-64-10 network, {s.steps} steps; lr chosen on validation from "
        f"{len(s.training_lrs)} values, then {len(seeds)} seed(s)",
    )
    with _progress(console) as progress:
        runs = len(specs) * (len(s.training_lrs) + len(seeds) - 1)
        task = progress.add_task("training", total=runs)
        advance = functools.partial(progress.advance, task)
        training = tune(specs, s.training_lrs, seeds, data, s.steps, device, advance)
    training_table = summary.training_table(training, specs, s.target_loss)
    _print_table(console, training_table)
    figure_paths["training"] = figures.plot_training(
        training, specs, s.target_loss, s.out / "training_curves.png"
    )
    figure_paths["lr_sensitivity"] = figures.plot_lr_sensitivity(
        training, specs, s.out / "lr_sensitivity.png"
    )
    return training, data.sizes, training_table
