"""A small network on scikit-learn's handwritten digits, trained by each optimizer.

The digits (1,797 8×8 images, 10 classes) ship inside scikit-learn's wheel:
nothing is downloaded. They are split once, by class, into training,
validation (to choose each optimizer's learning rate) and test sets (the
held-out accuracy reported); the split does not depend on the seed.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Sequence

import numpy as np
import torch
from sklearn.datasets import load_digits  # type: ignore[import-untyped]

from rmsprop.cli._demo.optimizers import OptimizerSpec

__all__ = ["Digits", "TrainingResult", "TrainingRun", "load_split_digits", "train", "tune"]

BATCH_SIZE = 64
HIDDEN_UNITS = 64
# Fractions of each class that go to the validation and test sets.
VALIDATION_FRACTION = 0.2
TEST_FRACTION = 0.2
# How many times a run is measured on the whole sets (evenly spaced).
EVALUATIONS = 50
# A run is stopped as diverged once its training loss passes this (chance is ln 10 ≈ 2.3).
DIVERGED_LOSS = 100.0


@dataclasses.dataclass(frozen=True)
class Digits:
    """The digits, split and on the training device; pixels scaled to [0, 1]."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor

    @property
    def sizes(self) -> tuple[int, int, int]:
        return len(self.y_train), len(self.y_val), len(self.y_test)


def load_split_digits(device: torch.device) -> Digits:
    """Loads the digits bundled with scikit-learn and splits them 60/20/20 within each class."""
    bunch = load_digits()
    images = np.asarray(bunch.data, dtype=np.float32) / 16.0
    labels = np.asarray(bunch.target, dtype=np.int64)
    rng = np.random.default_rng(0)  # the split is fixed: every seed is tested on the same digits
    parts: dict[str, list[np.ndarray]] = {"train": [], "val": [], "test": []}
    for digit in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == digit))
        n_val = round(VALIDATION_FRACTION * len(members))
        n_test = round(TEST_FRACTION * len(members))
        parts["val"].append(members[:n_val])
        parts["test"].append(members[n_val : n_val + n_test])
        parts["train"].append(members[n_val + n_test :])
    index = {name: np.sort(np.concatenate(chunks)) for name, chunks in parts.items()}

    def tensors(name: str) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.from_numpy(images[index[name]]).to(device)
        y = torch.from_numpy(labels[index[name]]).to(device)
        return x, y

    return Digits(*tensors("train"), *tensors("val"), *tensors("test"))


def evaluation_interval(steps: int, evaluations: int = EVALUATIONS) -> int:
    """Every how many steps a run of ``steps`` steps is measured."""
    return max(1, steps // evaluations)


def make_model(seed: int, device: torch.device) -> torch.nn.Module:
    """The network: 64 pixels → 64 ReLU units → 10 logits, initialised from ``seed``."""
    with torch.random.fork_rng(devices=[]):  # leave the caller's global generator alone
        torch.manual_seed(seed)
        model = torch.nn.Sequential(
            torch.nn.Linear(64, HIDDEN_UNITS),
            torch.nn.ReLU(),
            torch.nn.Linear(HIDDEN_UNITS, 10),
        )
    return model.to(device)


@dataclasses.dataclass
class TrainingRun:
    """One optimizer, one learning rate, one seed; measured every few steps.

    Attributes:
        label: the optimizer.
        lr: its learning rate.
        seed: the seed of the initial weights and of the batch order.
        steps: the steps at which the metrics below were measured.
        train_loss, val_loss, test_loss: mean cross-entropy over each whole set.
        val_accuracy, test_accuracy: the fraction of each set classified right.
        diverged: the loss became non-finite or passed `DIVERGED_LOSS` (the
            run stopped there, so the arrays are shorter).
        seconds: wall time of the training steps alone (no evaluation).
    """

    label: str
    lr: float
    seed: int
    steps: np.ndarray
    train_loss: np.ndarray
    val_loss: np.ndarray
    val_accuracy: np.ndarray
    test_loss: np.ndarray
    test_accuracy: np.ndarray
    diverged: bool
    seconds: float

    def final(self, metric: str) -> float:
        """The metric at the last step (NaN where the run diverged)."""
        return math.nan if self.diverged else float(getattr(self, metric)[-1])

    def steps_to(self, target_loss: float) -> int | None:
        """The first measured step with training loss ≤ ``target_loss`` (``None``: never)."""
        reached = np.flatnonzero(self.train_loss <= target_loss)
        return int(self.steps[reached[0]]) if reached.size else None

    @property
    def selection_key(self) -> tuple[float, float]:
        """How runs at different lrs compare: validation accuracy, then validation loss."""
        if self.diverged:
            return (math.inf, math.inf)
        return (-self.final("val_accuracy"), self.final("val_loss"))


def _evaluate(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    with torch.no_grad():
        logits = model(x)
        loss = torch.nn.functional.cross_entropy(logits, y).item()
        accuracy = (logits.argmax(dim=1) == y).float().mean().item()
    return loss, accuracy


def train(
    spec: OptimizerSpec,
    lr: float,
    seed: int,
    data: Digits,
    steps: int,
    device: torch.device,
    evaluations: int = EVALUATIONS,
) -> TrainingRun:
    """Trains a fresh network for ``steps`` mini-batch steps; measures it ``evaluations`` times.

    The same ``seed`` gives every optimizer the same initial weights and the
    same batches in the same order.
    """
    model = make_model(seed, device)
    optimizer = spec.build(model.parameters(), lr)
    batches = torch.Generator().manual_seed(seed)
    n_train = len(data.y_train)
    eval_every = evaluation_interval(steps, evaluations)
    log: dict[str, list[float]] = {
        key: [] for key in ("steps", "train", "val", "val_acc", "test", "test_acc")
    }
    order = torch.empty(0, dtype=torch.int64)
    position = n_train
    seconds = 0.0
    diverged = False
    for step in range(steps + 1):
        if step % eval_every == 0 or step == steps:
            train_loss, _ = _evaluate(model, data.x_train, data.y_train)
            val_loss, val_accuracy = _evaluate(model, data.x_val, data.y_val)
            test_loss, test_accuracy = _evaluate(model, data.x_test, data.y_test)
            for key, value in zip(
                log, (step, train_loss, val_loss, val_accuracy, test_loss, test_accuracy)
            ):
                log[key].append(value)
            if not math.isfinite(train_loss) or train_loss > DIVERGED_LOSS:
                diverged = True
                break
        if step == steps:
            break
        if position + BATCH_SIZE > n_train:  # a new epoch: reshuffle, drop the ragged end
            order, position = torch.randperm(n_train, generator=batches), 0
        batch = order[position : position + BATCH_SIZE].to(device)
        position += BATCH_SIZE
        started = time.perf_counter()
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(data.x_train[batch]), data.y_train[batch])
        loss.backward()  # type: ignore[no-untyped-call]
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds += time.perf_counter() - started
    arrays = {key: np.asarray(values) for key, values in log.items()}
    return TrainingRun(
        spec.label,
        lr,
        seed,
        arrays["steps"].astype(np.int64),
        arrays["train"],
        arrays["val"],
        arrays["val_acc"],
        arrays["test"],
        arrays["test_acc"],
        diverged,
        seconds,
    )


@dataclasses.dataclass
class TrainingResult:
    """Every optimizer tuned on the validation set, then repeated over seeds.

    Attributes:
        tuning: label → lr → the run with the first seed (for the lr choice).
        best_lr: label → the chosen learning rate.
        runs: label → the runs at the chosen lr, one per seed (the first is
            the tuning run itself).
        seeds: the seeds, in order.
        steps: training steps per run.
        n_test: how many digits the test set holds.
    """

    tuning: dict[str, dict[float, TrainingRun]]
    best_lr: dict[str, float]
    runs: dict[str, list[TrainingRun]]
    seeds: list[int]
    steps: int
    n_test: int


def tune(
    specs: Sequence[OptimizerSpec],
    lrs: Sequence[float],
    seeds: Sequence[int],
    data: Digits,
    steps: int,
    device: torch.device,
    advance: Callable[[], None] = lambda: None,
) -> TrainingResult:
    """Chooses each optimizer's lr on the validation set (first seed), then runs the other seeds."""
    tuning: dict[str, dict[float, TrainingRun]] = {}
    best_lr: dict[str, float] = {}
    runs: dict[str, list[TrainingRun]] = {}
    for spec in specs:
        by_lr = {}
        for lr in lrs:
            by_lr[lr] = train(spec, lr, seeds[0], data, steps, device)
            advance()
        tuning[spec.label] = by_lr
        best = min(by_lr.values(), key=lambda run: (*run.selection_key, run.lr))
        best_lr[spec.label] = best.lr
        runs[spec.label] = [best]
    for spec in specs:
        for seed in seeds[1:]:
            runs[spec.label].append(train(spec, best_lr[spec.label], seed, data, steps, device))
            advance()
    return TrainingResult(tuning, best_lr, runs, list(seeds), steps, data.sizes[2])
