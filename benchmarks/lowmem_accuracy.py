"""What low-memory optimizer state costs in accuracy: float32 against 8-bit and bfloat16 state.

Usage:
    python benchmarks/lowmem_accuracy.py           # 5 seeds, both tasks (2 min, 2 idle cores)
    python benchmarks/lowmem_accuracy.py --quick   # 1 seed, few steps: checks that it runs
    python benchmarks/lowmem_accuracy.py --tune    # the float32 lr sweep behind `LR`

Trains with `rmsprop.torch.RMSprop` (PyTorch's rule and defaults, ``fused=None``) on two
tasks whose data ship with the installed packages, nothing downloaded:

- digits: the network of ``rmsprop demo`` on scikit-learn's digits, with the demo's own
  data split and model. Its 64×64 first layer (4096 of its 4810 parameters) is at the
  8-bit threshold, so it is quantized; the rest stays float32, as the format says.
- chars: a next-character model of Python's own standard-library source (a fixed list
  of modules; the first 80 % of each file trains, the next 10 % validates, the last
  10 % is held out): 24 characters of context, each embedded in 32 dimensions, one
  hidden layer of 512 ReLU units, about 450k parameters.

Every state dtype gets the same seeds (so the same initial weights and batches), the same
learning rate and the same steps; the learning rates were chosen on float32 alone (with
``--tune``, on the validation split) and are not retuned per dtype. The table gives the
held-out accuracy and loss at the last step (mean ± standard deviation over seeds), the
change of their means from float32's, and the optimizer's state bytes per parameter,
summed from its state tensors.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import importlib
import inspect
import math
import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch

from rmsprop.benchmark.tasks import digits_model as make_digits_model
from rmsprop.benchmark.tasks import load_split_digits
from rmsprop.torch import RMSprop

CPU = torch.device("cpu")
SEEDS = (0, 1, 2, 3, 4)
QUICK_SEEDS = (0,)
# Chosen on float32 (`--tune`: validation accuracy, then loss, seed 0), the same for every dtype.
LR = {"digits": 1e-2, "chars": 3e-3}
TUNE_LRS = (3e-4, 1e-3, 3e-3, 1e-2, 3e-2)
# Held-out positions a chars evaluation reads (evenly spaced): the whole split costs seconds.
EVAL_POSITIONS = 16384

# Standard-library modules whose source the chars task reads, in this order.
STDLIB_MODULES = ("argparse", "dataclasses", "inspect", "typing", "textwrap", "functools")
CONTEXT = 16
EMBEDDING = 24
HIDDEN = 512
# Printable ASCII and newline; every other character (rare in the stdlib) is one more symbol.
ALPHABET = "\n" + "".join(chr(code) for code in range(32, 127))
OTHER = len(ALPHABET)


@dataclasses.dataclass(frozen=True)
class StateSetting:
    """One way of storing the optimizer's state: a name and its `RMSprop` options."""

    name: str
    options: dict[str, Any]


STATE_SETTINGS = (
    StateSetting("float32", {}),
    StateSetting(
        "bfloat16, stochastic", {"state_dtype": torch.bfloat16, "stochastic_rounding": True}
    ),
    StateSetting("8-bit", {"state_dtype": "8bit"}),
)


@dataclasses.dataclass(frozen=True)
class Split:
    """Inputs and targets, row by row (the chars inputs are a strided view of the text)."""

    inputs: torch.Tensor
    targets: torch.Tensor

    def evenly_spaced(self, count: int) -> Split:
        """At most ``count`` rows, evenly spaced: a fixed, cheaper evaluation set."""
        if len(self.targets) <= count:
            return self
        rows = torch.linspace(0, len(self.targets) - 1, count).long()
        return Split(self.inputs[rows], self.targets[rows])


@dataclasses.dataclass(frozen=True)
class Task:
    name: str
    train: Split
    validation: Split
    test: Split
    make_model: Callable[[int], torch.nn.Module]
    steps: int
    batch_size: int


@dataclasses.dataclass(frozen=True)
class Outcome:
    accuracy: float
    loss: float
    state_bytes_per_parameter: float


def digits_task(steps: int) -> Task:
    """The demo's digits, split and model; its batch size and default steps."""
    data = load_split_digits(CPU)
    return Task(
        "digits",
        Split(data.x_train, data.y_train),
        Split(data.x_val, data.y_val),
        Split(data.x_test, data.y_test),
        lambda seed: make_digits_model(seed, CPU),
        steps,
        64,
    )


def stdlib_sources() -> list[str]:
    """The source text of `STDLIB_MODULES`, one string per file."""
    sources = []
    for name in STDLIB_MODULES:
        path = inspect.getsourcefile(importlib.import_module(name))
        if path is None:
            raise RuntimeError(f"no source file for the standard-library module {name}")
        with open(path, encoding="utf-8") as file:
            sources.append(file.read())
    return sources


def encode_text(text: str) -> torch.Tensor:
    lookup = {char: index for index, char in enumerate(ALPHABET)}
    return torch.tensor([lookup.get(char, OTHER) for char in text], dtype=torch.int64)


def next_character_split(texts: Sequence[str]) -> Split:
    """Every position of the concatenated texts with `CONTEXT` characters before it."""
    tokens = encode_text("".join(texts))
    return Split(tokens[:-1].unfold(0, CONTEXT, 1), tokens[CONTEXT:])


def make_chars_model(seed: int) -> torch.nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return torch.nn.Sequential(
            torch.nn.Embedding(OTHER + 1, EMBEDDING),
            torch.nn.Flatten(),
            torch.nn.Linear(CONTEXT * EMBEDDING, HIDDEN),
            torch.nn.ReLU(),
            torch.nn.Linear(HIDDEN, OTHER + 1),
        )


def chars_task(steps: int, eval_positions: int) -> Task:
    """Each file split 80/10/10 in order, so held-out text is text the model never saw."""
    parts: dict[str, list[str]] = {"train": [], "validation": [], "test": []}
    for source in stdlib_sources():
        first, second = int(0.8 * len(source)), int(0.9 * len(source))
        parts["train"].append(source[:first])
        parts["validation"].append(source[first:second])
        parts["test"].append(source[second:])
    return Task(
        "chars",
        next_character_split(parts["train"]),
        next_character_split(parts["validation"]).evenly_spaced(eval_positions),
        next_character_split(parts["test"]).evenly_spaced(eval_positions),
        make_chars_model,
        steps,
        128,
    )


def evaluate(model: torch.nn.Module, split: Split) -> tuple[float, float]:
    """(accuracy, mean cross-entropy) over ``split``."""
    with torch.no_grad():
        logits = model(split.inputs)
        loss = torch.nn.functional.cross_entropy(logits, split.targets).item()
        accuracy = (logits.argmax(dim=1) == split.targets).float().mean().item()
    return accuracy, loss


def train(task: Task, setting: StateSetting, lr: float, seed: int, held_out: Split) -> Outcome:
    """A fresh model trained from ``seed`` (weights and batches), measured on ``held_out``."""
    model = task.make_model(seed)
    optimizer = RMSprop(model.parameters(), lr=lr, **setting.options)
    batches = torch.Generator().manual_seed(seed)
    for _ in range(task.steps):
        rows = torch.randint(len(task.train.targets), (task.batch_size,), generator=batches)
        optimizer.zero_grad()
        logits = model(task.train.inputs[rows])
        torch.nn.functional.cross_entropy(logits, task.train.targets[rows]).backward()
        optimizer.step()
    accuracy, loss = evaluate(model, held_out)
    parameters = sum(p.numel() for p in model.parameters())
    return Outcome(accuracy, loss, optimizer.state_nbytes() / parameters)


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def table_rows(task: Task, outcomes: dict[str, list[Outcome]]) -> list[str]:
    """One Markdown row per state setting; differences are of means, against float32's."""
    base_accuracy, _ = mean_std([o.accuracy for o in outcomes["float32"]])
    base_loss, _ = mean_std([o.loss for o in outcomes["float32"]])
    rows = []
    for name, runs in outcomes.items():
        accuracy, accuracy_std = mean_std([o.accuracy for o in runs])
        loss, loss_std = mean_std([o.loss for o in runs])
        points = 100 * (accuracy - base_accuracy)
        loss_change = 100 * (loss / base_loss - 1)
        rows.append(
            f"| {task.name} | {name} | {100 * accuracy:.2f} ± {100 * accuracy_std:.2f} "
            f"| {loss:.4f} ± {loss_std:.4f} | {points:+.2f} | {loss_change:+.2f} % "
            f"| {runs[0].state_bytes_per_parameter:.3f} |"
        )
    return rows


TABLE_HEADER = (
    "| task | state | held-out accuracy (%) | held-out loss | Δ accuracy (points) "
    "| Δ loss | state bytes / parameter |\n|---|---|---|---|---|---|---|"
)


def compare(tasks: Sequence[Task], seeds: Sequence[int]) -> None:
    print(TABLE_HEADER, flush=True)
    for task in tasks:
        outcomes = {
            setting.name: [train(task, setting, LR[task.name], seed, task.test) for seed in seeds]
            for setting in STATE_SETTINGS
        }
        print("\n".join(table_rows(task, outcomes)), flush=True)


def tune(tasks: Sequence[Task]) -> None:
    """Float32 state at each of `TUNE_LRS`, seed 0, measured on the validation split."""
    print("| task | lr | validation accuracy (%) | validation loss |\n|---|---|---|---|")
    for task in tasks:
        for lr in TUNE_LRS:
            outcome = train(task, STATE_SETTINGS[0], lr, SEEDS[0], task.validation)
            loss = outcome.loss if math.isfinite(outcome.loss) else math.inf
            print(
                f"| {task.name} | {lr:g} | {100 * outcome.accuracy:.2f} | {loss:.4f} |", flush=True
            )


def describe_machine(threads: int) -> str:
    return (
        f"{datetime.date.today()}, {platform.machine()} ({os.cpu_count()} cores, "
        f"{threads} torch threads), Python {platform.python_version()}, torch {torch.__version__}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="1 seed and few steps (a smoke test)")
    mode.add_argument("--tune", action="store_true", help="the float32 learning-rate sweep")
    parser.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(describe_machine(args.threads), end="\n\n")
    if args.quick:
        tasks = [digits_task(steps=60), chars_task(steps=40, eval_positions=2048)]
    else:
        tasks = [digits_task(steps=600), chars_task(steps=600, eval_positions=EVAL_POSITIONS)]
    started = time.perf_counter()
    if args.tune:
        tune(tasks)
    else:
        compare(tasks, QUICK_SEEDS if args.quick else SEEDS)
    print(f"\n{time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
