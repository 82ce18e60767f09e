"""The reinforcement-learning flavors against their sources, in every backend.

* ``sb3``: stable-baselines3's own ``RMSpropTFLike`` (installed by the dev extra), over
  random settings of every argument it has (lr, alpha, eps, weight_decay, momentum,
  centered), 120 steps of a warm-up-and-decay schedule, float32 and float64.
* ``pfrl``: PFRL's own ``SharedRMSpropEpsInsideSqrt``, the same way.
* ``a3c``: the A3C paper's update, written out here (the paper has no code to run).
* ``dopamine``: Dopamine's gin settings, as the ``tensorflow`` flavor with them (which
  test_tensorflow runs against TF1's own kernels).
"""

from __future__ import annotations

import warnings
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
    run_torch_optimizer,
)
from tables import TOLERANCES

import rmsprop
from rmsprop.translation import translate


def torch_style_settings(
    flavor: str, seed: int
) -> list[tuple[str, rmsprop.Config, dict[str, Any]]]:
    """Random arguments of a torch.optim.RMSprop-like class, each structural choice."""
    rng = np.random.default_rng(seed)
    settings = []
    for centered in (False, True):
        for with_momentum in (False, True):
            for with_decay in (False, True):
                momentum = float(rng.choice([0.5, 0.9])) if with_momentum else 0.0
                arguments = {
                    "lr": random_learning_rate(rng, momentum),
                    "alpha": float(rng.choice([0.9, 0.95, 0.99, 0.999])),
                    "eps": random_epsilon(rng, 1e-8),
                    "weight_decay": float(rng.choice([0.01, 0.3])) if with_decay else 0.0,
                    "momentum": momentum,
                    "centered": centered,
                }
                config = rmsprop.flavor(
                    flavor,
                    lr=arguments["lr"],
                    decay=arguments["alpha"],
                    eps=arguments["eps"],
                    weight_decay=arguments["weight_decay"],
                    momentum=momentum,
                    centered=centered,
                )
                name = f"{'centered' if centered else 'plain'}-mu{momentum:g}-wd{with_decay:d}"
                settings.append((name, config, arguments))
    return settings


SB3_SETTINGS = torch_style_settings("sb3", seed=3)
PFRL_SETTINGS = torch_style_settings("pfrl", seed=4)
SB3_CASES = cases_for_each_dtype(SB3_SETTINGS)
PFRL_CASES = cases_for_each_dtype(PFRL_SETTINGS)


def sb3_class() -> type:
    pytest.importorskip("torch", reason="RMSpropTFLike is a torch optimizer")
    module = pytest.importorskip(
        "stable_baselines3.common.sb2_compat.rmsprop_tf_like",
        reason="stable-baselines3 is not installed (the dev extra installs it)",
    )
    return module.RMSpropTFLike  # type: ignore[no-any-return]


def pfrl_class() -> type:
    pytest.importorskip("torch", reason="PFRL's optimizers are torch optimizers")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pfrl imports the retired gym, which says so
        module = pytest.importorskip(
            "pfrl.optimizers", reason="pfrl is not installed (the dev extra installs it)"
        )
    return module.SharedRMSpropEpsInsideSqrt  # type: ignore[no-any-return]


def run_class(optimizer_class: type, case: Case) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pfrl calls torch's deprecated add/addcmul forms
        return run_torch_optimizer(optimizer_class, case, **case.arguments)


def run_ours(case: Case, backend: str) -> np.ndarray:
    require_backend(backend)
    return BACKENDS[backend](case)


@pytest.mark.parametrize("backend", list(BACKENDS))
@pytest.mark.parametrize("case", SB3_CASES, ids=[c.name for c in SB3_CASES])
def test_sb3_flavor_matches_rmsprop_tf_like(case: Case, backend: str):
    expected = run_class(sb3_class(), case)
    np.testing.assert_allclose(run_ours(case, backend), expected, **TOLERANCES[case.dtype])


@pytest.mark.parametrize("backend", list(BACKENDS))
@pytest.mark.parametrize("case", PFRL_CASES, ids=[c.name for c in PFRL_CASES])
def test_pfrl_flavor_matches_shared_rmsprop_eps_inside_sqrt(case: Case, backend: str):
    expected = run_class(pfrl_class(), case)
    np.testing.assert_allclose(run_ours(case, backend), expected, **TOLERANCES[case.dtype])


@pytest.mark.parametrize(
    ("name", "config", "arguments"), SB3_SETTINGS, ids=[s[0] for s in SB3_SETTINGS]
)
def test_translate_gives_sb3s_own_arguments(name, config, arguments):
    assert translate(config, to="sb3") == arguments


@pytest.mark.parametrize(
    ("name", "config", "arguments"), PFRL_SETTINGS, ids=[s[0] for s in PFRL_SETTINGS]
)
def test_translate_gives_pfrls_own_arguments(name, config, arguments):
    assert translate(config, to="pfrl") == arguments


def test_the_naive_ports_are_told_apart():
    # RMSpropTFLike's arguments in torch.optim.RMSprop: what A2C users got before SB3 fixed it.
    assert_naive_port_is_told_apart(
        SB3_CASES, {c.name: run_class(sb3_class(), c) for c in SB3_CASES}, "pytorch"
    )
    # PFRL differs from PyTorch in ε's place alone, which shows where ε is not tiny (A3C's 0.1).
    large_eps = [c for c in PFRL_CASES if c.arguments["eps"] >= 1e-3]
    assert large_eps
    assert_naive_port_is_told_apart(
        large_eps, {c.name: run_class(pfrl_class(), c) for c in large_eps}, "pytorch"
    )


def a3c_rule(params: list[np.ndarray], grads: list[list[np.ndarray]], lr: float) -> np.ndarray:
    """The A3C paper's RMSProp (section 4): g ← αg + (1-α)Δθ²; θ ← θ - ηΔθ/√(g + ε), with
    α = 0.99 and ε = 0.1, the statistics g starting at 0."""
    alpha, eps = 0.99, 0.1
    params = [p.copy() for p in params]
    stats = [np.zeros_like(p) for p in params]
    trajectory = []
    for row in grads:
        for i, delta in enumerate(row):
            stats[i] = alpha * stats[i] + (1 - alpha) * delta**2
            params[i] = params[i] - lr * delta / np.sqrt(stats[i] + eps)
        trajectory.append(flat(params))
    return np.stack(trajectory)


@pytest.mark.parametrize("backend", list(BACKENDS))
def test_a3c_flavor_is_the_papers_update(backend: str):
    require_backend(backend)
    config = rmsprop.flavor("a3c")
    assert (config.decay, config.eps, config.eps_in_sqrt) == (0.99, 0.1, True)
    [case] = [
        c
        for c in cases_for_each_dtype([("a3c", config, {"lr": config.lr})])
        if c.dtype == "float64"
    ]
    case.lrs[:] = config.lr  # the paper's η is constant within a run
    expected = a3c_rule(case.params, case.grads, config.lr)
    np.testing.assert_allclose(BACKENDS[backend](case), expected, **TOLERANCES["float64"])


def test_dopamine_flavor_is_tf1_with_dqn_nature_gin():
    # dqn_nature.gin: learning_rate 0.00025, decay 0.95, momentum 0.0, epsilon 0.00001,
    # centered True, on tf.train.RMSPropOptimizer (the tensorflow flavor's rule).
    expected = rmsprop.flavor(
        "tensorflow", lr=0.00025, decay=0.95, momentum=0.0, eps=0.00001, centered=True
    )
    assert rmsprop.flavor("dopamine") == expected
    arguments = translate(rmsprop.flavor("dopamine"), to="tensorflow")
    assert arguments == {
        "learning_rate": 0.00025, "decay": 0.95, "momentum": 0.0, "epsilon": 1e-05,
        "centered": True,
    }  # fmt: skip


# -- stable-baselines3's A2C with this optimizer --------------------------------------


def train_a2c(optimizer_class: type, optimizer_kwargs: dict[str, Any], steps: int) -> Any:
    """SB3's A2C on CartPole (gymnasium's, no download), seeded; returns the trained model."""
    sb3 = pytest.importorskip("stable_baselines3", reason="stable-baselines3 is not installed")
    pytest.importorskip("gymnasium", reason="the A2C run needs gymnasium's CartPole")
    import torch

    torch.set_num_threads(1)  # one thread: the same reductions in both runs
    model = sb3.A2C(
        "MlpPolicy",
        "CartPole-v1",
        seed=0,
        device="cpu",
        policy_kwargs={"optimizer_class": optimizer_class, "optimizer_kwargs": optimizer_kwargs},
    )
    return model.learn(total_timesteps=steps)


# SB3's Atari A2C settings with RMSpropTFLike (the RL Zoo's), under SB3's own A2C defaults.
SB3_A2C = {"alpha": 0.99, "eps": 1e-5, "weight_decay": 0}


@pytest.mark.parametrize("path", ["single-tensor", "fused"])
def test_sb3_a2c_with_the_sb3_flavor_reproduces_rmsprop_tf_like(path):
    from rmsprop.torch import RMSprop

    steps = 1500  # 300 updates of 5 steps
    reference = train_a2c(sb3_class(), SB3_A2C, steps)
    options = {"foreach": False, "fused": False} if path == "single-tensor" else {"fused": True}
    ours = train_a2c(RMSprop, {"flavor": "sb3", **SB3_A2C, **options}, steps)
    expected = reference.policy.state_dict()
    got = ours.policy.state_dict()
    assert isinstance(ours.policy.optimizer, RMSprop)
    for name, value in expected.items():
        if path == "single-tensor":  # the same torch ops in the same order: the same bits
            assert got[name].equal(value), name
        else:  # one fused pass: float32 rounding apart, over 300 updates
            np.testing.assert_allclose(got[name].numpy(), value.numpy(), rtol=1e-4, atol=1e-5)
    assert not torch_equal(expected, train_a2c(torch_rmsprop(), SB3_A2C, steps).policy)


def torch_rmsprop() -> type:
    import torch

    return torch.optim.RMSprop


def torch_equal(state: dict[str, Any], policy: Any) -> bool:
    """Whether a policy's parameters equal ``state``'s (to tell the naive port apart)."""
    other = policy.state_dict()
    return all(
        np.allclose(other[k].numpy(), v.numpy(), rtol=1e-4, atol=1e-5) for k, v in state.items()
    )


def test_sb3_a2c_trains_with_rmsprop():
    # The same recipe learns CartPole (it reaches returns far above a random policy's ~20).
    pytest.importorskip("stable_baselines3", reason="stable-baselines3 is not installed")
    from stable_baselines3.common.evaluation import evaluate_policy

    from rmsprop.torch import RMSprop

    model = train_a2c(RMSprop, {"flavor": "sb3", **SB3_A2C}, 20_000)
    mean_return, _ = evaluate_policy(model, model.get_env(), n_eval_episodes=10)
    assert mean_return > 100


def dqn_lua_rule(params: list[np.ndarray], grads: list[list[np.ndarray]], lr: float) -> np.ndarray:
    """DeepMind's DQN update (``dqn/NeuralQLearner.lua``, ``qLearnMinibatch``), transcribed:
    ``dw`` is the ascent direction (minus the loss gradient), ``g`` and ``g2`` start at 0.

    .. code-block:: text

        g  ← 0.95·g  + 0.05·dw
        g2 ← 0.95·g2 + 0.05·dw²
        w  ← w + lr·dw / √(g2 - g² + 0.01)
    """
    params = [p.copy() for p in params]
    g = [np.zeros_like(p) for p in params]
    g2 = [np.zeros_like(p) for p in params]
    trajectory = []
    for row in grads:
        for i, gradient in enumerate(row):
            dw = -gradient
            g[i] = 0.95 * g[i] + 0.05 * dw
            g2[i] = 0.95 * g2[i] + 0.05 * dw * dw
            params[i] = params[i] + lr * dw / np.sqrt(g2[i] - g[i] * g[i] + 0.01)
        trajectory.append(flat(params))
    return np.stack(trajectory)


@pytest.mark.parametrize("backend", list(BACKENDS))
def test_dqn_flavor_is_the_lua_update(backend: str):
    require_backend(backend)
    config = rmsprop.flavor("dqn")
    [case] = [
        c
        for c in cases_for_each_dtype([("dqn", config, {"lr": config.lr})])
        if c.dtype == "float64"
    ]
    case.lrs[:] = config.lr  # run_gpu keeps lr constant (lr_end is not given)
    expected = dqn_lua_rule(case.params, case.grads, config.lr)
    np.testing.assert_allclose(BACKENDS[backend](case), expected, **TOLERANCES["float64"])
