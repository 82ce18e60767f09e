"""The ``keras`` flavor against Keras 3's own ``keras.optimizers.RMSprop``, in every backend.

Keras runs on its JAX backend in a child process (see
`parity_problems.run_reference`: TensorFlow stays out of the test process,
and ``KERAS_BACKEND`` must be set before Keras is first imported), over
random settings with ``momentum``, ``centered`` and Keras 3's decoupled
``weight_decay`` (applied before the step, with the scheduled learning
rate), 120 steps of a warm-up-and-decay schedule, in float32 and float64.
"""

from __future__ import annotations

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
    run_reference,
)
from tables import TOLERANCES

import rmsprop
from rmsprop.translation import translate


def keras_settings() -> list[tuple[str, rmsprop.Config, dict[str, Any]]]:
    """Random Keras arguments, each structural choice (centered, momentum, decay) twice."""
    rng = np.random.default_rng(3)
    settings = []
    for centered in (False, True):
        for with_momentum in (False, True):
            for with_weight_decay in (False, True):
                for draw in range(2):
                    momentum = float(rng.choice([0.5, 0.9])) if with_momentum else 0.0
                    weight_decay = float(rng.choice([0.01, 0.3])) if with_weight_decay else None
                    arguments = {
                        "learning_rate": random_learning_rate(rng, momentum),
                        "rho": float(rng.choice([0.9, 0.95, 0.99, 0.999])),
                        "momentum": momentum,
                        "epsilon": random_epsilon(rng, 1e-7),
                        "centered": centered,
                        "weight_decay": weight_decay,
                    }
                    # The flavor, given Keras' arguments under its own names.
                    config = rmsprop.flavor(
                        "keras",
                        lr=arguments["learning_rate"],
                        decay=arguments["rho"],
                        momentum=arguments["momentum"],
                        eps=arguments["epsilon"],
                        centered=arguments["centered"],
                        weight_decay=weight_decay or 0.0,
                    )
                    name = (
                        f"{'centered' if centered else 'plain'}-mu{momentum:g}"
                        f"-wd{weight_decay or 0:g}-{draw}"
                    )
                    settings.append((name, config, arguments))
    return settings


SETTINGS = keras_settings()
CASES = cases_for_each_dtype(SETTINGS)


@pytest.fixture(scope="module")
def keras_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, np.ndarray]:
    for module, reason in (
        ("keras", "Keras 3 is not installed: pip install keras (CI installs it)"),
        ("jax", "Keras runs on its JAX backend here, and jax is not installed"),
    ):
        if importlib.util.find_spec(module) is None:
            pytest.skip(reason)
    return run_reference("keras", CASES, tmp_path_factory.mktemp("keras"))


@pytest.mark.parametrize("backend", list(BACKENDS))
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_flavor_matches_keras(case: Case, backend: str, keras_runs):
    require_backend(backend)
    ours = BACKENDS[backend](case)
    np.testing.assert_allclose(ours, keras_runs[case.name], **TOLERANCES[case.dtype])


def test_the_naive_port_does_not_match_keras(keras_runs):
    # Keras' hyperparameters in PyTorch's rule (ε outside the root, weight decay as L2):
    # what the comparison above must tell apart.
    assert_naive_port_is_told_apart(CASES, keras_runs, "pytorch")


@pytest.mark.parametrize(("name", "config", "arguments"), SETTINGS, ids=[s[0] for s in SETTINGS])
def test_translate_gives_keras_own_arguments(name, config, arguments):
    assert translate(config, to="keras") == arguments
