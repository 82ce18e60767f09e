"""The ``timm`` flavor against timm's ``RMSpropTF``, in every backend.

Two references, over random settings (centered or not; no momentum, or
momentum with ``lr_in_momentum`` either way; no weight decay, L2, or
``decoupled_decay``), 120 steps of a warm-up-and-decay schedule, in float32
and float64:

* `rmsprop_tf_rule`: RMSpropTF's update as its documentation and source
  state it (TensorFlow's order of operations, the average of squares starting
  at 1, ε inside the root), written out here in NumPy. It needs nothing
  installed, so timm's semantics are pinned wherever the tests run.
* timm's own ``RMSpropTF``, when timm is installed. ``import timm`` imports
  torchvision (through ``timm.layers`` and ``timm.models``), and torchvision's
  registry wheels are CUDA builds that cannot load beside a CPU-only torch
  ("operator torchvision::nms does not exist"). The optimizer itself needs
  only torch, so `load_rmsprop_tf` loads timm's ``optim`` folder as a package
  of its own, without running ``timm/__init__.py``: timm's code, unchanged.
  Install it with ``pip install --no-deps timm``.
"""

from __future__ import annotations

import functools
import importlib
import importlib.metadata
import importlib.util
import pathlib
import sys
import types
from typing import Any

import numpy as np
import pytest
from parity_problems import (
    BACKENDS,
    Case,
    assert_naive_port_is_told_apart,
    cases_for_each_dtype,
    flat,
    random_epsilon,
    random_learning_rate,
    require_backend,
)
from tables import TOLERANCES

import rmsprop
from rmsprop.translation import translate


def timm_settings() -> list[tuple[str, rmsprop.Config, dict[str, Any]]]:
    """Random RMSpropTF arguments, one for each structural choice."""
    rng = np.random.default_rng(5)
    settings = []
    for centered in (False, True):
        for momentum_form in ("none", "lr-in-buffer", "lr-outside"):
            for decay_form in ("none", "l2", "decoupled"):
                momentum = 0.0 if momentum_form == "none" else float(rng.choice([0.5, 0.9]))
                weight_decay = 0.0 if decay_form == "none" else float(rng.choice([0.01, 0.3]))
                arguments = {
                    "lr": random_learning_rate(rng, momentum),
                    "alpha": float(rng.choice([0.9, 0.95, 0.99, 0.999])),
                    "eps": random_epsilon(rng, 1e-10),
                    "weight_decay": weight_decay,
                    "momentum": momentum,
                    "centered": centered,
                    "decoupled_decay": decay_form == "decoupled",
                    "lr_in_momentum": momentum_form != "lr-outside",
                }
                # The flavor, given RMSpropTF's arguments under its own names.
                config = rmsprop.flavor(
                    "timm",
                    lr=arguments["lr"],
                    decay=arguments["alpha"],
                    eps=arguments["eps"],
                    weight_decay=arguments["weight_decay"],
                    momentum=arguments["momentum"],
                    centered=arguments["centered"],
                    decoupled_weight_decay=arguments["decoupled_decay"],
                    lr_in_momentum=arguments["lr_in_momentum"],
                )
                name = f"{'centered' if centered else 'plain'}-{momentum_form}-{decay_form}"
                settings.append((name, config, arguments))
    return settings


SETTINGS = timm_settings()
CASES = cases_for_each_dtype(SETTINGS)


def rmsprop_tf_rule(case: Case) -> np.ndarray:
    """timm's RMSpropTF step, from its documented rule, computing in the case's dtype.

    Per parameter p with gradient g, learning rate η and arguments α, ε, μ, λ;
    the average starts at 1, the gradient average and the buffer at 0:

    .. code-block:: text

        p ← p·(1 - η·λ)                    if λ and decoupled_decay
        g ← g + λ·p                        if λ and not decoupled_decay
        v ← v + (g² - v)·(1 - α)           (TensorFlow's order of operations)
        m ← m + (g - m)·(1 - α)            if centered
        d ← √(v - m² + ε) if centered, else √(v + ε)
        b ← μ·b + η·g/d;  p ← p - b        if μ and lr_in_momentum
        b ← μ·b + g/d;    p ← p - η·b      if μ and not lr_in_momentum
        p ← p - η·g/d                      without momentum
    """
    a = case.arguments
    alpha, eps, mu, wd = a["alpha"], a["eps"], a["momentum"], a["weight_decay"]
    params = [p.astype(case.dtype) for p in case.params]
    square_avgs = [np.ones_like(p) for p in params]
    grad_avgs = [np.zeros_like(p) for p in params]
    buffers = [np.zeros_like(p) for p in params]
    trajectory = []
    for step, grads in enumerate(case.grads):
        lr = case.lrs[step]
        for i, grad in enumerate(grads):
            p, g = params[i], grad.astype(case.dtype)
            if wd != 0 and a["decoupled_decay"]:
                p = p * (1 - lr * wd)
            elif wd != 0:
                g = g + wd * p
            v = square_avgs[i] = square_avgs[i] + (g * g - square_avgs[i]) * (1 - alpha)
            if a["centered"]:
                m = grad_avgs[i] = grad_avgs[i] + (g - grad_avgs[i]) * (1 - alpha)
                d = np.sqrt(v - m * m + eps)
            else:
                d = np.sqrt(v + eps)
            if mu > 0 and a["lr_in_momentum"]:
                buffers[i] = mu * buffers[i] + lr * g / d
                p = p - buffers[i]
            elif mu > 0:
                buffers[i] = mu * buffers[i] + g / d
                p = p - lr * buffers[i]
            else:
                p = p - lr * g / d
            params[i] = p
        trajectory.append(flat(params))
    return np.stack(trajectory)


_PACKAGE = "_timm_optimizers"  # timm's optim folder, loaded under a name of its own


def load_rmsprop_tf() -> type:
    """timm's own ``RMSpropTF`` class, loaded without importing the rest of timm."""
    spec = importlib.util.find_spec("timm")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip(
            "timm is not installed: pip install --no-deps timm (its optimizers need only torch; "
            "`import timm` needs torchvision, whose registry wheels are CUDA builds that cannot "
            "load beside a CPU-only torch). Its rule is still pinned by rmsprop_tf_rule."
        )
    pytest.importorskip("torch", reason="timm's RMSpropTF is a torch optimizer")
    if _PACKAGE not in sys.modules:
        package = types.ModuleType(_PACKAGE)
        package.__path__ = [str(pathlib.Path(spec.submodule_search_locations[0]) / "optim")]
        sys.modules[_PACKAGE] = package
    module = importlib.import_module(f"{_PACKAGE}.rmsprop_tf")
    return module.RMSpropTF  # type: ignore[no-any-return]


def run_timm(case: Case, foreach: bool) -> np.ndarray:
    import torch

    rmsprop_tf = load_rmsprop_tf()
    dtype = getattr(torch, case.dtype)
    params = [torch.tensor(p, dtype=dtype, requires_grad=True) for p in case.params]
    optimizer = rmsprop_tf(params, foreach=foreach, **case.arguments)
    trajectory = []
    for step, grads in enumerate(case.grads):
        for param, grad in zip(params, grads):
            param.grad = torch.tensor(grad, dtype=dtype)
        optimizer.param_groups[0]["lr"] = float(case.lrs[step])
        optimizer.step()
        trajectory.append(flat(p.detach().numpy() for p in params))
    return np.stack(trajectory)


@functools.cache
def ours(case_name: str, backend: str) -> np.ndarray:
    """Each backend's run of a case, computed once for both references."""
    return BACKENDS[backend](next(c for c in CASES if c.name == case_name))


@pytest.mark.parametrize("backend", list(BACKENDS))
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_flavor_matches_timms_rule(case: Case, backend: str):
    require_backend(backend)
    expected = rmsprop_tf_rule(case)
    np.testing.assert_allclose(ours(case.name, backend), expected, **TOLERANCES[case.dtype])


@pytest.mark.parametrize("backend", list(BACKENDS))
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_flavor_matches_timm(case: Case, backend: str):
    expected = run_timm(case, foreach=False)
    require_backend(backend)
    np.testing.assert_allclose(ours(case.name, backend), expected, **TOLERANCES[case.dtype])


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_the_written_rule_is_timms(case: Case):
    # The transcription above, checked against timm itself, both of its code paths.
    for foreach in (False, True):
        expected = run_timm(case, foreach)
        np.testing.assert_allclose(rmsprop_tf_rule(case), expected, **TOLERANCES[case.dtype])


def test_the_naive_port_does_not_match_timm():
    # RMSpropTF's hyperparameters in PyTorch's rule: what the tests above must tell apart.
    runs = {case.name: rmsprop_tf_rule(case) for case in CASES}
    assert_naive_port_is_told_apart(CASES, runs, "pytorch")


@pytest.mark.parametrize(("name", "config", "arguments"), SETTINGS, ids=[s[0] for s in SETTINGS])
def test_translate_gives_timms_own_arguments(name, config, arguments):
    assert translate(config, to="timm") == arguments


def test_timm_version_is_the_one_read():
    # The flavor cites timm 1.0's rmsprop_tf.py; a later timm may change it.
    load_rmsprop_tf()
    assert importlib.metadata.version("timm").startswith("1.")
