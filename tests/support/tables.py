"""The data that drives the tests: configurations, bad inputs and tolerances.

Implementation switches (foreach, the backend, the dtype) are never part of a
configuration here: each test crosses them in itself.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator

import numpy as np

import rmsprop
from rmsprop import Config

# Every backend and code path (backends.BACKENDS) is compared with the float64
# NumPy oracle (tests/test_oracle.py), run on the same (dtype-rounded) initial
# parameters and gradients, after ORACLE_STEPS steps (fewer for slow paths).
ORACLE_STEPS = 50

# One table of tolerances, by dtype, for parameters and state of scale ~1. The
# worst errors seen over every backend's rows, under the schedule below:
# float64: only operation order differs from the oracle (worst 2.7e-15, 1e-3 of it).
# float32: rounding of state and parameters accumulates (worst 1.5e-6 on a
# parameter; the worst of any state buffer is 0.075 of the tolerance).
# bfloat16: each step rounds the parameter, whatever the math: PyTorch's loops
# compute in bfloat16, where a factor like 1 - lr·λ ≈ 0.999 rounds to 1 (worst
# 0.14 absolute on a parameter of ~3, 0.86 of it, torch-foreach); the fused
# kernels' and JAX's float32 math ends little closer (0.54 of it). So wide a
# tolerance can't tell some settings apart (test_oracle.BLIND): float32's can.
TOLERANCES: dict[str, dict[str, float]] = {
    "float64": {"rtol": 1e-12, "atol": 1e-12},
    "float32": {"rtol": 2e-5, "atol": 2e-5},
    "bfloat16": {"rtol": 6e-2, "atol": 6e-2},
}


def learning_rate_at(config: Config, step: int) -> float:
    """The schedule every oracle test uses: it makes lr-in/out-of-momentum differ."""
    return config.lr / (1 + 0.05 * step)


# Variations applied to every flavor: (description, Config fields to change).
VARIATIONS: list[tuple[str, dict[str, object]]] = [
    ("as-is", {}),
    ("momentum", {"momentum": 0.9}),
    ("nesterov", {"momentum": 0.9, "nesterov": True}),
    ("l2", {"weight_decay": 0.1}),
    ("decoupled", {"weight_decay": 0.1, "decoupled_weight_decay": True}),
    ("maximize", {"maximize": True, "weight_decay": 0.01}),
    ("bias-correction", {"bias_correction": True}),
    ("centered-momentum", {"centered": True, "momentum": 0.5}),
    ("ones-init", {"initial_square_avg": 1.0, "momentum": 0.3}),
]


def _flip_lr_in_momentum(config: Config) -> Config:
    return config.replace(momentum=0.5, lr_in_momentum=not config.lr_in_momentum)


def flavor_cases() -> Iterator[tuple[str, Config]]:
    """Every flavor × every variation, plus the other lr-in-momentum choice."""
    for name, preset in rmsprop.FLAVORS.items():
        for desc, changes in VARIATIONS:
            yield f"{name}-{desc}", _well_posed(preset.config.replace(**changes))
        yield f"{name}-lr-in-momentum-flipped", _well_posed(_flip_lr_in_momentum(preset.config))


def random_configs(count: int, seed: int = 0) -> Iterator[tuple[str, Config]]:
    """Seeded random settings over every field."""
    rng = np.random.default_rng(seed)
    for i in range(count):
        momentum = float(rng.choice([0.0, 0.0, 0.5, 0.9]))
        config = Config(
            lr=float(10 ** rng.uniform(-4, -1)),
            decay=float(rng.choice([0.9, 0.95, 0.99, 0.999])),
            eps=float(10 ** rng.uniform(-10, -2)),
            eps_in_sqrt=bool(rng.random() < 0.5),
            initial_square_avg=float(rng.choice([0.0, 1.0, 0.1])),
            centered=bool(rng.random() < 0.4),
            momentum=momentum,
            nesterov=bool(momentum > 0 and rng.random() < 0.4),
            lr_in_momentum=bool(rng.random() < 0.5),
            bias_correction=bool(rng.random() < 0.3),
            weight_decay=float(rng.choice([0.0, 0.0, 1e-2, 0.3])),
            decoupled_weight_decay=bool(rng.random() < 0.5),
            maximize=bool(rng.random() < 0.2),
        )
        yield f"random-{i}", _well_posed(config)


def _well_posed(config: Config) -> Config:
    """Keeps a case comparable across precisions without changing its rule.

    The tolerances are relative to the parameters' scale (~1), so the
    effective step lr/(1 - μ) is kept ≤ 0.1 (Lasagne's lr = 1 would move
    bfloat16 parameters far enough that their rounding alone exceeds it).

    Centered with bias correction makes the first step's variance
    v̂ - m̂² = g² - g² = 0 up to rounding, so the root of rounding noise
    decides that step unless ε inside the root dwarfs the noise. That is the
    rule's (and optax's) nature, not a backend's error.
    """
    config = config.replace(lr=min(config.lr, 0.1 * (1 - config.momentum)))
    if config.centered and config.bias_correction:
        config = config.replace(eps_in_sqrt=True, eps=max(config.eps, 0.1))
    return config


def config_kwargs(config: Config) -> dict[str, object]:
    """A Config as keyword arguments (every backend's optimizer takes them)."""
    return dataclasses.asdict(config)


# Bad settings: (Config fields, exception type, regex the message must match).
BAD_CONFIGS: list[tuple[dict[str, object], type[Exception], str]] = [
    ({"lr": -1e-3}, ValueError, r"Config\.lr = -0\.001 is out of range: it must be >= 0"),
    ({"lr": math.nan}, ValueError, r"Config\.lr = nan is not finite"),
    ({"lr": math.inf}, ValueError, r"Config\.lr = inf is not finite"),
    ({"lr": "0.1"}, TypeError, r"Config\.lr must be a real number, got str '0\.1'"),
    ({"lr": True}, TypeError, r"Config\.lr must be a real number, got bool True"),
    ({"lr": None}, TypeError, r"Config\.lr must be a real number, got NoneType None"),
    ({"decay": 1.5}, ValueError, r"Config\.decay = 1\.5 is out of range: it must be in \[0, 1\]"),
    ({"decay": -0.1}, ValueError, r"Config\.decay = -0\.1 is out of range"),
    ({"eps": -1e-8}, ValueError, r"Config\.eps = -1e-08 is out of range: it must be >= 0"),
    ({"eps": math.inf}, ValueError, r"Config\.eps = inf is not finite"),
    ({"initial_square_avg": -1.0}, ValueError, r"Config\.initial_square_avg = -1\.0 is out"),
    ({"momentum": 1.01}, ValueError, r"Config\.momentum = 1\.01 is out of range"),
    ({"momentum": -0.5}, ValueError, r"Config\.momentum = -0\.5 is out of range"),
    ({"weight_decay": -0.1}, ValueError, r"Config\.weight_decay = -0\.1 is out of range"),
    ({"weight_decay": math.nan}, ValueError, r"Config\.weight_decay = nan is not finite"),
    ({"centered": 1}, TypeError, r"Config\.centered must be a bool, got int 1"),
    ({"eps_in_sqrt": "yes"}, TypeError, r"Config\.eps_in_sqrt must be a bool, got str"),
    ({"maximize": None}, TypeError, r"Config\.maximize must be a bool, got NoneType"),
    ({"nesterov": True}, ValueError, r"Config\.nesterov = True needs momentum > 0"),
    (
        {"bias_correction": True, "decay": 1.0},
        ValueError,
        r"Config\.bias_correction = True needs decay < 1",
    ),
]
