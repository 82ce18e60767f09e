"""Shared by the parity tests: problems, the learning-rate schedule, and our backends' runs.

A *case* is one framework setting (the framework's own arguments), the flavor
`Config` that claims to reproduce it, a dtype, and a problem: initial
parameters, a fixed gradient sequence and a per-step learning rate. Every
run, the framework's and each backend's, returns the parameters after every
step as one array of shape (STEPS, number of parameter elements).

Frameworks are imported lazily, inside the functions that need them, so this
module imports with NumPy alone.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import subprocess
import sys
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
from tables import TOLERANCES

import rmsprop
import rmsprop.numpy as rnp
from rmsprop import Config

HERE = pathlib.Path(__file__).resolve().parent

STEPS = 120
SHAPES = [(5,), (2, 3)]
# Gradient sizes: much smaller than, near, and much larger than √ε for the
# usual ε, where ε's placement and the average's start matter most and least.
GRADIENT_SCALES = [1e-3, 0.1, 1.0, 10.0]
DTYPES = ["float32", "float64"]


def learning_rates(base_lr: float, dtype: str) -> np.ndarray:
    """The schedule every parity run uses: 10 steps of linear warm-up, then a cosine decay.

    Under any schedule, the learning rate inside the momentum buffer (TF) and
    outside it (PyTorch) give different steps; the warm-up makes that plain.
    Rounded to the dtype, so every implementation sees the same numbers.
    """
    t = np.arange(STEPS)
    warmup = np.minimum(1.0, (t + 1) / 10)
    cosine = 0.55 + 0.45 * np.cos(np.pi * t / STEPS)
    return (base_lr * warmup * cosine).astype(dtype).astype(np.float64)


@dataclasses.dataclass
class Case:
    """One setting of one framework, the flavor that claims to match it, and a problem."""

    name: str
    config: Config  # the flavor, with the framework's hyperparameters
    arguments: dict[str, Any]  # the framework's own arguments (learning rate: the base)
    dtype: str
    params: list[np.ndarray]  # float64 arrays holding values exact in ``dtype``
    grads: list[list[np.ndarray]]  # grads[step][param], likewise
    lrs: np.ndarray  # the learning rate at each step, likewise

    def spec(self) -> dict[str, Any]:
        """The case as JSON-able data, for a framework run in another process."""
        return {
            "name": self.name,
            "arguments": self.arguments,
            "dtype": self.dtype,
            "params": [p.tolist() for p in self.params],
            "grads": [[g.tolist() for g in row] for row in self.grads],
            "lrs": self.lrs.tolist(),
        }


def make_case(name: str, config: Config, arguments: dict[str, Any], dtype: str, seed: int) -> Case:
    """A case with a seeded problem; its gradient scale cycles with the seed."""
    rng = np.random.default_rng(seed)
    scale = GRADIENT_SCALES[seed % len(GRADIENT_SCALES)]

    def rounded(x: np.ndarray) -> np.ndarray:
        return np.asarray(x).astype(dtype).astype(np.float64)

    params = [rounded(rng.normal(size=shape)) for shape in SHAPES]
    # A mean besides the noise, so momentum builds up and the centered
    # variance differs from the second moment.
    grads = [
        [rounded(scale * (rng.normal(size=shape) + 0.3)) for shape in SHAPES] for _ in range(STEPS)
    ]
    return Case(name, config, arguments, dtype, params, grads, learning_rates(config.lr, dtype))


def cases_for_each_dtype(
    settings: Iterable[tuple[str, Config, dict[str, Any]]],
) -> list[Case]:
    """Every setting × every dtype, each with its own seeded problem."""
    return [
        make_case(f"{name}-{dtype}", config, arguments, dtype, seed)
        for seed, (name, config, arguments) in enumerate(settings)
        for dtype in DTYPES
    ]


def random_learning_rate(rng: np.random.Generator, momentum: float) -> float:
    """log-uniform in [1e-4, 1e-1], with the effective step lr/(1 - μ) at most 0.1.

    The tolerances are relative to the parameters' scale (~1); larger steps
    would carry the parameters far enough that float32 rounding alone
    outgrows them.
    """
    return min(float(10 ** rng.uniform(-4, -1)), 0.1 * (1 - momentum))


def random_epsilon(rng: np.random.Generator, default: float) -> float:
    """The framework's default, a log-uniform draw in [1e-10, 1e-2], or 1 (Inception's)."""
    return float(rng.choice([default, float(10 ** rng.uniform(-10, -2)), 1.0]))


def flat(params: Iterable[Any]) -> np.ndarray:
    return np.concatenate([np.asarray(p, dtype=np.float64).ravel() for p in params])


# -- our backends ---------------------------------------------------------------


def run_numpy(case: Case) -> np.ndarray:
    """`rmsprop.numpy`, computing in the case's dtype."""
    params = [p.astype(case.dtype) for p in case.params]
    state = rnp.init(params, case.config)
    trajectory = []
    for step, grads in enumerate(case.grads):
        config = case.config.replace(lr=float(case.lrs[step]))
        params, state = rnp.update(params, [g.astype(case.dtype) for g in grads], state, config)
        trajectory.append(flat(params))
    return np.stack(trajectory)


def run_torch_optimizer(optimizer_class: Any, case: Case, **arguments: Any) -> np.ndarray:
    """Any torch optimizer class over a case, built with ``arguments``, the learning rate set
    on the param group each step (the frameworks' torch classes run through this too)."""
    import torch

    dtype = getattr(torch, case.dtype)
    params = [torch.tensor(p, dtype=dtype, requires_grad=True) for p in case.params]
    optimizer = optimizer_class(params, **arguments)
    trajectory = []
    for step, grads in enumerate(case.grads):
        for param, grad in zip(params, grads):
            param.grad = torch.tensor(grad, dtype=dtype)
        optimizer.param_groups[0]["lr"] = float(case.lrs[step])
        optimizer.step()
        trajectory.append(flat(p.detach().numpy() for p in params))
    return np.stack(trajectory)


def run_torch(case: Case) -> np.ndarray:
    """`rmsprop.torch.RMSprop`."""
    from rmsprop.torch import RMSprop

    return run_torch_optimizer(RMSprop, case, **dataclasses.asdict(case.config))


def jax_arguments(config: Config) -> dict[str, Any]:
    """`rmsprop.jax.rmsprop`'s arguments for a Config (it takes optax's names for two)."""
    arguments = dataclasses.asdict(config)
    arguments["learning_rate"] = arguments.pop("lr")
    arguments["initial_scale"] = arguments.pop("initial_square_avg")
    if config.momentum == 0:
        arguments["momentum"] = None  # optax's "no momentum buffer"
    return arguments


def run_jax(case: Case) -> np.ndarray:
    """`rmsprop.jax.rmsprop`, the learning rate an optax schedule of the step count."""
    import jax
    import jax.numpy as jnp
    import optax

    import rmsprop.jax

    with jax_x64(case.dtype == "float64"):
        lrs = jnp.asarray(case.lrs, dtype=case.dtype)
        arguments = jax_arguments(case.config)
        arguments["learning_rate"] = lambda count: lrs[count]
        optimizer = rmsprop.jax.rmsprop(**arguments)

        def run(params: Any, grads: Any) -> Any:
            def step(carry: Any, grads_now: Any) -> Any:
                params, state = carry
                updates, state = optimizer.update(grads_now, state, params)
                params = optax.apply_updates(params, updates)
                return (params, state), params

            _, trajectory = jax.lax.scan(step, (params, optimizer.init(params)), grads)
            return trajectory

        params = [jnp.asarray(p, dtype=case.dtype) for p in case.params]
        grads = [jnp.asarray(np.stack(g), dtype=case.dtype) for g in zip(*case.grads)]
        trajectory = jax.jit(run)(params, grads)
        return np.concatenate(
            [np.asarray(t, dtype=np.float64).reshape(STEPS, -1) for t in trajectory], axis=1
        )


BACKENDS: dict[str, Callable[[Case], np.ndarray]] = {
    "numpy": run_numpy,
    "torch": run_torch,
    "jax": run_jax,
}

# Why a backend cannot run here, checked before running it.
_NEEDS = {
    "torch": ("torch", "the torch backend needs torch (pip install rmsprop[torch])"),
    "jax": ("rmsprop.jax", "the JAX backend, rmsprop.jax, needs jax and optax (rmsprop[jax])"),
}


def require_backend(backend: str) -> None:
    """Skips the calling test, saying why, when ``backend`` cannot be imported."""
    import pytest

    if backend in _NEEDS:
        module, reason = _NEEDS[backend]
        pytest.importorskip(module, reason=reason)
        if backend == "jax":
            pytest.importorskip("optax", reason=reason)


# -- the frameworks, each in a process of its own -------------------------------


def run_reference(framework: str, cases: list[Case], workdir: pathlib.Path) -> dict[str, Any]:
    """Runs ``framework`` over every case in one child process; returns its trajectories.

    TensorFlow and Triton each bundle LLVM, and loading both into one
    process aborts it (torch loads Triton lazily), so TensorFlow and Keras
    never run in the test process.
    """
    spec_path, out_path = workdir / f"{framework}.json", workdir / f"{framework}.npz"
    spec_path.write_text(json.dumps([case.spec() for case in cases]))
    script = HERE / "framework_reference.py"
    done = subprocess.run(
        [sys.executable, str(script), framework, str(spec_path), str(out_path)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{framework} reference run failed:\n{done.stderr[-4000:]}")
    with np.load(out_path) as results:
        return {name: results[name] for name in results.files}


def naive_config(config: Config, flavor: str) -> Config:
    """``config``'s hyperparameters in another flavor: the naive port."""
    numeric = ("lr", "decay", "eps", "momentum", "centered", "weight_decay")
    return rmsprop.flavor(flavor, **{f: getattr(config, f) for f in numeric})


def assert_naive_port_is_told_apart(
    cases: list[Case], runs: dict[str, np.ndarray], naive_flavor: str
) -> None:
    """The framework's hyperparameters in another flavor must miss its numbers.

    This is what the parity comparison has to tell apart. A case whose
    parameters barely move (tiny lr, tiny gradients, large ε) cannot tell
    any two rules apart, so it is not counted; most cases must count.
    """
    counted = 0
    for case in cases:
        tolerance = 10 * TOLERANCES[case.dtype]["atol"]
        reference = runs[case.name]
        if np.max(np.abs(reference - flat(case.params))) < 10 * tolerance:
            continue
        counted += 1
        naive = run_numpy(dataclasses.replace(case, config=naive_config(case.config, naive_flavor)))
        error = np.max(np.abs(naive - reference))
        assert error > tolerance, f"{case.name}: the {naive_flavor} rule matches too ({error:.2g})"
    assert counted >= 3 * len(cases) // 4, f"only {counted} of {len(cases)} cases move enough"


def jax_x64(enabled: bool) -> Any:
    """A block with 64-bit JAX on or off (jax.enable_x64 is new in jax 0.7; before it,
    jax.experimental.enable_x64)."""
    import jax
    import jax.experimental

    return (jax.enable_x64 if hasattr(jax, "enable_x64") else jax.experimental.enable_x64)(enabled)
