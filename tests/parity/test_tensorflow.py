"""The ``tensorflow`` flavor against TensorFlow's own TF1 RMSProp, in every backend.

The reference is ``tf.compat.v1.train.RMSPropOptimizer`` (which runs the
``ResourceApplyRMSProp`` / ``ResourceApplyCenteredRMSProp`` kernels), run in
a child process (see `parity_problems.run_reference`), over random settings,
120 steps of a warm-up-and-decay schedule, in float32 and float64.

One TF1 quirk shapes the float64 comparison: ``RMSPropOptimizer`` turns its
Python-number hyperparameters into float32 tensors first and casts them to
the variable's dtype after, so a float64 model trains with ``decay``,
``momentum`` and ``epsilon`` rounded to float32 (0.9 becomes 0.899999976...,
and 1 - ρ is off by 2e-7 relative). `as_tf1_runs_it` gives the flavor the
same rounded numbers; `test_tf1_rounds_its_hyperparameters_to_float32` pins
the quirk itself.
"""

from __future__ import annotations

import dataclasses
import importlib.util
from typing import Any

import numpy as np
import pytest
from parity_problems import (
    BACKENDS,
    Case,
    assert_naive_port_is_told_apart,
    cases_for_each_dtype,
    random_epsilon,
    random_learning_rate,
    require_backend,
    run_numpy,
    run_reference,
)
from tables import TOLERANCES

import rmsprop
from rmsprop.translation import translate


def tensorflow_settings() -> list[tuple[str, rmsprop.Config, dict[str, Any]]]:
    """Random TF1 arguments, each structural choice (centered, momentum) three times."""
    rng = np.random.default_rng(2024)
    settings = []
    for centered in (False, True):
        for with_momentum in (False, True):
            for draw in range(3):
                momentum = float(rng.choice([0.5, 0.9])) if with_momentum else 0.0
                arguments = {
                    "learning_rate": random_learning_rate(rng, momentum),
                    "decay": float(rng.choice([0.9, 0.95, 0.99, 0.999])),
                    "momentum": momentum,
                    "epsilon": random_epsilon(rng, 1e-10),
                    "centered": centered,
                }
                # The flavor, given TF1's arguments under its own names.
                config = rmsprop.flavor(
                    "tensorflow",
                    lr=arguments["learning_rate"],
                    decay=arguments["decay"],
                    momentum=arguments["momentum"],
                    eps=arguments["epsilon"],
                    centered=arguments["centered"],
                )
                name = f"{'centered' if centered else 'plain'}-mu{momentum:g}-{draw}"
                settings.append((name, config, arguments))
    return settings


def as_tf1_runs_it(config: rmsprop.Config) -> rmsprop.Config:
    """The hyperparameters TF1 computes with: rounded to float32, whatever the dtype.

    (The learning rate here is a float64 variable, so it is not rounded.)
    """

    def rounded(x: float) -> float:
        return float(np.float32(x))

    return config.replace(
        decay=rounded(config.decay), momentum=rounded(config.momentum), eps=rounded(config.eps)
    )


SETTINGS = tensorflow_settings()
CASES = [
    dataclasses.replace(case, config=as_tf1_runs_it(case.config))
    for case in cases_for_each_dtype(SETTINGS)
]


@pytest.fixture(scope="module")
def tensorflow_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, np.ndarray]:
    if importlib.util.find_spec("tensorflow") is None:
        pytest.skip("TensorFlow is not installed: pip install tensorflow-cpu (CI installs it)")
    return run_reference("tensorflow", CASES, tmp_path_factory.mktemp("tensorflow"))


@pytest.mark.parametrize("backend", list(BACKENDS))
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_flavor_matches_tensorflow(case: Case, backend: str, tensorflow_runs):
    require_backend(backend)
    ours = BACKENDS[backend](case)
    np.testing.assert_allclose(ours, tensorflow_runs[case.name], **TOLERANCES[case.dtype])


def test_the_naive_port_does_not_match_tensorflow(tensorflow_runs):
    # TF1's hyperparameters in PyTorch's rule: what the comparison above must tell apart.
    assert_naive_port_is_told_apart(CASES, tensorflow_runs, "pytorch")


@pytest.mark.parametrize(("name", "config", "arguments"), SETTINGS, ids=[s[0] for s in SETTINGS])
def test_translate_gives_tensorflows_own_arguments(name, config, arguments):
    assert translate(config, to="tensorflow") == arguments


def test_tf1_rounds_its_hyperparameters_to_float32(tensorflow_runs):
    # The flavor given TF1's exact (unrounded) numbers misses its float64 runs.
    exact_configs = {f"{name}-float64": config for name, config, _ in SETTINGS}
    for case in CASES:
        if case.dtype == "float64" and case.config != exact_configs[case.name]:
            exact = dataclasses.replace(case, config=exact_configs[case.name])
            error = np.max(np.abs(run_numpy(exact) - tensorflow_runs[case.name]))
            assert error > 10 * TOLERANCES["float64"]["atol"], case.name
