"""Tests of `rmsprop.jax`: parity with `optax.rmsprop`, how a flavor and explicit
arguments combine, and the contracts an optax transformation must keep (jit,
inject_hyperparams, chain, multi_transform, MultiSteps, dtypes, sharding).

Every flavor against the NumPy oracle, eagerly and jitted, in every dtype and
with complex parameters: tests/test_oracle.py (its jax-eager and jax-jit rows)."""

from __future__ import annotations

import contextlib
import inspect
import itertools
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from tables import TOLERANCES

jax = pytest.importorskip("jax", reason="rmsprop.jax needs jax (pip install rmsprop[jax])")
optax = pytest.importorskip("optax", reason="rmsprop.jax needs optax (pip install rmsprop[jax])")

import jax.numpy as jnp  # noqa: E402

import rmsprop  # noqa: E402
import rmsprop.numpy as rnp  # noqa: E402
from rmsprop.jax import RMSpropState  # noqa: E402
from rmsprop.jax import rmsprop as jax_rmsprop  # noqa: E402

# How far a run may end from its reference: max |actual - expected| over an
# array, divided by max |expected| of that array (so a coordinate that passes
# near 0 is not held to relative precision it never had).
TOLERANCE = {
    # Against optax.rmsprop, 100 updates. Both compute the same operations in
    # the same order, but XLA on CPU fuses a*b + c into one FMA, in different
    # places in the two graphs (worst seen: 2.5 ε in float32, 3 ε in float64).
    ("optax", "float32"): 100 * 4 * float(np.finfo(np.float32).eps),  # 4.8e-5
    ("optax", "float64"): 1e-12,
    # Against the float64 NumPy oracle, in float64: the one table's.
    ("oracle", "float64"): TOLERANCES["float64"]["rtol"],
}

PARITY_STEPS = 100
CHUNK = 16  # optimizers compiled together: one compilation is cheaper than many


# -- helpers ------------------------------------------------------------------


@contextlib.contextmanager
def precision(dtype: Any) -> Iterator[None]:
    """Enables 64-bit JAX inside the block when ``dtype`` needs it, restoring it after."""
    if jnp.dtype(dtype) not in (np.float64, np.complex128):
        yield
        return
    # jax.enable_x64 is new in jax 0.7; jax.experimental.enable_x64 came before.
    enable_x64 = jax.enable_x64 if hasattr(jax, "enable_x64") else jax.experimental.enable_x64
    with enable_x64(True):
        yield


# A tree of several shapes; the many-configuration tests use one array
# (compilation time grows with the number of leaves, the checks do not).
SHAPES = {"v": (7,), "m": (2, 3), "s": ()}
ONE_ARRAY = {"w": (3, 4)}


def random_problem(
    seed: int, steps: int, *, zero_first: bool = False, shapes: dict = ONE_ARRAY
) -> tuple[dict, dict]:
    """Float64 params and a fixed sequence of gradients (leading axis: the step).

    Gradient entries span four orders of magnitude, so ε matters for some.
    """
    rng = np.random.default_rng(seed)
    params = {name: rng.normal(size=shape) for name, shape in shapes.items()}
    grads = {
        name: rng.normal(size=(steps, *p.shape)) * 10.0 ** rng.uniform(-3, 1, (steps, *p.shape))
        for name, p in params.items()
    }
    if zero_first:
        grads = {name: g.copy() for name, g in grads.items()}
        for g in grads.values():
            g[0] = 0
    return params, grads


def to_jax(tree: Any, dtype: Any) -> Any:
    return jax.tree.map(lambda x: jnp.asarray(x, dtype), tree)


def run_many(optimizers: list[Any], params: Any, grads: Any) -> list[tuple[Any, Any]]:
    """Final ``(params, state)`` of each optimizer over the gradient sequence.

    The optimizers are compiled in chunks, each chunk as one jitted function.
    """

    def run(opt: Any) -> tuple[Any, Any]:
        def step(carry: Any, g: Any) -> tuple[Any, None]:
            p, state = carry
            updates, state = opt.update(g, state, p)
            return (optax.apply_updates(p, updates), state), None

        final, _ = jax.lax.scan(step, (params, opt.init(params)), grads)
        return final

    results: list[tuple[Any, Any]] = []
    for start in range(0, len(optimizers), CHUNK):
        chunk = optimizers[start : start + CHUNK]
        results += jax.jit(lambda chunk=chunk: [run(opt) for opt in chunk])()
    return results


def relative_error(actual: Any, expected: Any) -> float:
    actual = np.asarray(actual, np.complex128 if np.iscomplexobj(actual) else np.float64)
    expected = np.asarray(expected)
    scale = np.max(np.abs(expected))
    return (
        float(np.max(np.abs(actual - expected)) / scale) if scale else float(np.max(np.abs(actual)))
    )


def oracle_run(config: rmsprop.Config, params: dict, grads: dict) -> tuple[dict, dict]:
    """The NumPy float64 reference over the gradient sequence: ``(params, state)``."""
    state = rnp.init(params, config)
    for t in range(len(next(iter(grads.values())))):
        params, state = rnp.update(params, {k: g[t] for k, g in grads.items()}, state, config)
    return params, state


def state_errors(state: RMSpropState, expected: dict) -> dict[str, float]:
    """Errors of our buffers against the oracle's, per buffer and parameter."""
    errors = {}
    for ours, theirs in (("nu", "square_avg"), ("mu", "grad_avg"), ("trace", "momentum_buffer")):
        tree = getattr(state, ours)
        for name, leaf in expected.items():
            reference = getattr(leaf, theirs)
            assert (tree is None) == (reference is None), f"{ours} present: {tree is not None}"
            if tree is not None:
                errors[f"{ours}[{name}]"] = relative_error(tree[name], reference)
    return errors


def optax_kwargs(config_overrides: dict[str, Any]) -> dict[str, Any]:
    """`Config` field names → `rmsprop.jax.rmsprop` argument names."""
    names = {"lr": "learning_rate", "initial_square_avg": "initial_scale"}
    return {names.get(k, k): v for k, v in config_overrides.items()}


# -- parity with optax.rmsprop --------------------------------------------------

SCHEDULE = optax.linear_schedule(0.02, 0.002, transition_steps=60)
# decay and eps vary with the combination (a full product of them would only
# multiply the run time): each value meets every other option.
DECAYS, EPSILONS = (0.9, 0.5, 0.99), (1e-8, 1e-3)


def optax_combinations(learning_rate: Any) -> list[dict[str, Any]]:
    """Every combination of optax.rmsprop's options, for one learning rate."""
    combinations = []
    flags = itertools.product((False, True), (None, 0.9), (False, True), (False, True), (0.0, 1.0))
    for i, (centered, momentum, bias_correction, eps_in_sqrt, initial_scale) in enumerate(flags):
        for nesterov in (False, True) if momentum else (False,):
            combinations.append(
                dict(
                    learning_rate=learning_rate,
                    decay=DECAYS[i % 3],
                    eps=EPSILONS[i % 2],
                    initial_scale=initial_scale,
                    eps_in_sqrt=eps_in_sqrt,
                    centered=centered,
                    momentum=momentum,
                    nesterov=nesterov,
                    bias_correction=bias_correction,
                )
            )
    return combinations


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("lr", ["constant", "schedule"])
def test_matches_optax_rmsprop_for_every_option(dtype: str, lr: str) -> None:
    # The first gradient is 0: when centered and bias-corrected with v
    # starting at 0, the first v̂ - m̂² is 0 in exact arithmetic, and rounding
    # makes it ±1 ulp, which optax passes to the root (NaN, or ε - δ) while
    # Config clamps it at 0 (test_centered_variance_is_clamped_where_optax_is_not).
    combinations = optax_combinations(0.01 if lr == "constant" else SCHEDULE)
    with precision(dtype):
        params, grads = (to_jax(t, dtype) for t in random_problem(0, PARITY_STEPS, zero_first=True))
        ours = run_many([jax_rmsprop(**kw) for kw in combinations], params, grads)
        theirs = run_many([optax.rmsprop(**kw) for kw in combinations], params, grads)
    tolerance = TOLERANCE["optax", dtype]
    failures = []
    for kwargs, (p, _), (expected, _) in zip(combinations, ours, theirs):
        for name in p:
            error = relative_error(p[name], expected[name])
            if not error <= tolerance:
                failures.append(f"{kwargs} [{name}]: {error:.3g}")
    assert not failures, f"{len(failures)} differ (tolerance {tolerance:.3g}):\n" + "\n".join(
        failures
    )


def test_centered_variance_is_clamped_where_optax_is_not() -> None:
    # At the first update v̂ - m̂² = ((1-ρ)/c - ((1-ρ)/c)²)·g², c = 1 - ρ¹: 0 in
    # exact arithmetic. In float32, 1 - ρ (rounded from float64) exceeds c
    # (computed in float32) for ρ = 0.99, so it comes out negative for every g.
    kwargs = dict(decay=0.99, centered=True, bias_correction=True, eps_in_sqrt=False)
    g = jnp.linspace(-3.0, 3.0, 12)
    ours, _ = jax_rmsprop(1.0, **kwargs).update(g, jax_rmsprop(1.0, **kwargs).init(g))
    theirs, _ = optax.rmsprop(1.0, **kwargs).update(g, optax.rmsprop(1.0, **kwargs).init(g))
    assert np.isnan(theirs).all(), "optax no longer returns NaN here"
    np.testing.assert_allclose(ours, -g / 1e-8, rtol=1e-6)  # u = g / (sqrt(0) + ε)


@pytest.mark.parametrize("jitted", [False, True], ids=["eager", "jit"])
def test_bias_correction_is_optax_in_and_out_of_jit(jitted: bool) -> None:
    # optax raises decay to the count inside a jitted function even when called eagerly;
    # an eager `decay ** count` is another computation, 1e-5 (relative) apart at ρ = 0.999.
    kwargs = dict(learning_rate=0.01, decay=0.999, bias_correction=True)
    rng = np.random.default_rng(3)
    start = {"w": jnp.asarray(rng.normal(size=(4, 5)), jnp.float32)}
    grads = [{"w": jnp.asarray(rng.normal(size=(4, 5)), jnp.float32)} for _ in range(5)]
    runs = []
    for opt in (jax_rmsprop(**kwargs), optax.rmsprop(**kwargs)):
        update = jax.jit(opt.update) if jitted else opt.update
        params, state, steps = start, opt.init(start), []
        for g in grads:
            updates, state = update(g, state, params)
            params = optax.apply_updates(params, updates)
            steps.append(np.asarray(updates["w"]))
        runs.append(steps)
    for step, (ours, theirs) in enumerate(zip(*runs)):
        # A few float32 ulps at most: the two graphs may fuse a multiply-add differently.
        np.testing.assert_allclose(ours, theirs, rtol=4 * np.finfo(np.float32).eps, err_msg=step)


def test_signature_is_optax_rmsprop_plus_keyword_only_extras() -> None:
    ours = inspect.signature(jax_rmsprop).parameters
    theirs = inspect.signature(optax.rmsprop).parameters
    assert list(ours)[: len(theirs)] == list(theirs)
    for name, parameter in theirs.items():
        assert ours[name].kind == parameter.kind
        if parameter.default is not inspect.Parameter.empty:
            assert repr(ours[name].default) == repr(parameter.default), name
    extras = [p for name, p in ours.items() if name not in theirs]
    assert {p.name for p in extras} == {
        "flavor",
        "weight_decay",
        "decoupled_weight_decay",
        "lr_in_momentum",
        "maximize",
        "state_dtype",
    }
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in extras)


def test_defaults_are_the_optax_flavor() -> None:
    params, grads = random_problem(1, 30)
    defaults = {
        name: p.default
        for name, p in inspect.signature(jax_rmsprop).parameters.items()
        if name not in ("learning_rate", "flavor", "state_dtype")  # (no Config field)
    }
    config = rmsprop.flavor("optax")
    for name, default in defaults.items():
        field = {"initial_scale": "initial_square_avg"}.get(name, name)
        expected = None if name == "momentum" else getattr(config, field)  # None: no momentum
        assert repr(default) == repr(expected), name
    assert config.momentum == 0
    with precision("float64"):
        [(p, _)] = run_many(
            [jax_rmsprop(1e-3)], to_jax(params, "float64"), to_jax(grads, "float64")
        )
    expected, _ = oracle_run(config, params, grads)
    for name in p:
        assert relative_error(p[name], expected[name]) <= TOLERANCE["oracle", "float64"]


# -- how flavor and explicit arguments combine ------------------------------------


@pytest.mark.parametrize(
    ("arguments", "config"),
    [
        # A flavor supplies whatever is not passed...
        ({"flavor": "tensorflow"}, rmsprop.flavor("tensorflow")),
        ({"flavor": "graves"}, rmsprop.flavor("graves")),
        # ...and what is passed wins, even when it equals optax's default.
        (
            {"learning_rate": 0.1, "decay": 0.9, "flavor": "pytorch"},
            rmsprop.flavor("pytorch", lr=0.1, decay=0.9),
        ),
        (
            {"flavor": "tensorflow", "initial_scale": 0.0},
            rmsprop.flavor("tensorflow", initial_square_avg=0.0),
        ),
        ({"flavor": "graves", "momentum": None}, rmsprop.flavor("graves", momentum=0.0)),
        ({"flavor": "keras", "weight_decay": 0.05}, rmsprop.flavor("keras", weight_decay=0.05)),
        # Without a flavor: optax's rule and defaults, plus the extra fields.
        (
            {"learning_rate": 0.1, "maximize": True, "lr_in_momentum": False, "momentum": 0.5},
            rmsprop.flavor("optax", lr=0.1, maximize=True, lr_in_momentum=False, momentum=0.5),
        ),
    ],
)
def test_passed_arguments_override_the_flavor(arguments: dict, config: rmsprop.Config) -> None:
    params, grads = random_problem(5, 20, shapes=SHAPES)
    with precision("float64"):
        opt = jax_rmsprop(**arguments)
        [(p, state)] = run_many([opt], to_jax(params, "float64"), to_jax(grads, "float64"))
    expected, expected_state = oracle_run(config, params, grads)
    for k in p:
        assert relative_error(p[k], expected[k]) <= TOLERANCE["oracle", "float64"], k
    assert max(state_errors(state, expected_state).values()) <= TOLERANCE["oracle", "float64"]


def test_momentum_zero_keeps_a_buffer_as_optax_does() -> None:
    params = {"w": jnp.ones(3)}
    assert jax_rmsprop(0.1, momentum=0.0).init(params).trace is not None
    assert jax_rmsprop(0.1).init(params).trace is None
    assert jax_rmsprop(flavor="graves").init(params).trace is not None
    with_buffer, without = jax_rmsprop(0.1, momentum=0.0), jax_rmsprop(0.1)
    updates, _ = with_buffer.update(params, with_buffer.init(params))
    plain, _ = without.update(params, without.init(params))
    np.testing.assert_array_equal(updates["w"], plain["w"])


# -- bad input ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("arguments", "error", "match"),
    [
        ({"flavor": "adam"}, ValueError, "unknown flavor 'adam'"),
        ({"learning_rate": -1.0}, ValueError, "Config.lr"),
        ({"learning_rate": 0.1, "decay": 1.5}, ValueError, "Config.decay"),
        ({"learning_rate": 0.1, "eps": "small"}, TypeError, "Config.eps"),
        ({"learning_rate": 0.1, "eps": float("nan")}, ValueError, "Config.eps"),
        ({"learning_rate": 0.1, "initial_scale": -1.0}, ValueError, "Config.initial_square_avg"),
        ({"learning_rate": 0.1, "centered": 1}, TypeError, "Config.centered"),
        ({"learning_rate": 0.1, "momentum": 2.0}, ValueError, "Config.momentum"),
        ({"learning_rate": 0.1, "nesterov": True}, ValueError, "nesterov"),
        ({"learning_rate": 0.1, "decay": 1, "bias_correction": True}, ValueError, "bias_corr"),
        ({"learning_rate": 0.1, "weight_decay": jnp.ones(3)}, TypeError, "Config.weight_decay"),
        ({"learning_rate": None}, TypeError, "Config.lr"),
        ({}, TypeError, "learning_rate"),
        ({"learning_rate": 0.1, "flavor": "pytorch", "alpha": 0.9}, TypeError, "alpha"),
    ],
)  # fmt: skip
def test_invalid_settings_raise_the_config_error(
    arguments: dict, error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        jax_rmsprop(**arguments)


def test_weight_decay_without_params_says_so() -> None:
    opt = jax_rmsprop(0.1, weight_decay=0.1)
    with pytest.raises(ValueError, match="needs params"):
        opt.update(jnp.ones(2), opt.init(jnp.ones(2)))


# -- JAX and optax contracts ------------------------------------------------------------


def test_jit_does_not_recompile() -> None:
    traces = []
    opt = jax_rmsprop(SCHEDULE, momentum=0.9, centered=True, bias_correction=True, weight_decay=0.1)

    @jax.jit
    def step(params: Any, state: Any, grads: Any) -> tuple[Any, Any]:
        traces.append(1)  # runs once per trace
        updates, state = opt.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    params = {"w": jnp.ones((3, 2)), "b": jnp.zeros(2, jnp.bfloat16)}
    grads = jax.tree.map(lambda p: jnp.full_like(p, 0.5), params)
    state = opt.init(params)
    for _ in range(4):
        params, state = step(params, state, grads)
    assert len(traces) == 1
    assert int(state.count) == 4


def test_state_dtypes_hold_when_gradients_are_wider_than_params() -> None:
    # float64 gradients for float32 params: computed in float64, the state
    # stays float32, so a jitted loop (or lax.scan) keeps one signature.
    with precision("float64"):
        opt = jax_rmsprop(0.1, momentum=0.9, centered=True)
        params = {"w": jnp.ones(3, jnp.float32)}
        state = opt.init(params)
        step = jax.jit(opt.update)
        for _ in range(2):
            updates, new_state = step({"w": jnp.full(3, 0.5, jnp.float64)}, state, params)
            assert jax.tree.map(lambda x: x.dtype, new_state) == jax.tree.map(
                lambda x: x.dtype, state
            )
            state = new_state
        assert updates["w"].dtype == jnp.float64  # the gradients' dtype, as in optax


def test_inject_hyperparams_learning_rate_matches_the_schedule() -> None:
    params, grads = (to_jax(t, "float32") for t in random_problem(6, 40, shapes=SHAPES))
    scheduled = jax_rmsprop(SCHEDULE, momentum=0.9, nesterov=True, weight_decay=0.01)
    [(expected, _)] = run_many([scheduled], params, grads)

    opt = optax.inject_hyperparams(jax_rmsprop)(
        learning_rate=0.0, momentum=0.9, nesterov=True, weight_decay=0.01
    )
    traces = []

    @jax.jit
    def step(params: Any, state: Any, grads: Any) -> tuple[Any, Any]:
        traces.append(1)
        updates, state = opt.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    state = opt.init(params)
    for t in range(40):
        # A strongly typed float32, as init made it: a weak type would retrace.
        state.hyperparams["learning_rate"] = jnp.asarray(SCHEDULE(t), jnp.float32)
        params, state = step(params, state, jax.tree.map(lambda g, t=t: g[t], grads))
    assert len(traces) == 1
    for k in params:
        assert relative_error(params[k], expected[k]) <= TOLERANCE["optax", "float32"]


def test_inject_hyperparams_can_change_every_number_at_run_time() -> None:
    numbers = dict(decay=0.8, eps=1e-6, initial_scale=0.5, momentum=0.5, weight_decay=0.1)
    flags = dict(centered=True, bias_correction=True, lr_in_momentum=False, flavor="pytorch")
    params, grads = random_problem(7, 10, shapes=SHAPES)
    grads = {k: g[0] for k, g in grads.items()}
    with precision("float64"):
        params, grads = to_jax(params, "float64"), to_jax(grads, "float64")
        opt = optax.inject_hyperparams(jax_rmsprop)(learning_rate=0.1, **numbers, **flags)
        state = opt.init(params)
        assert all(isinstance(v, jax.Array) for v in state.hyperparams.values())
        changed = dict(numbers, decay=0.6, momentum=0.7, eps=1e-4, weight_decay=0.0)
        traces = []

        @jax.jit
        def step(grads: Any, state: Any, params: Any) -> tuple[Any, Any]:
            traces.append(1)
            return opt.update(grads, state, params)

        updates, state = step(grads, state, params)
        # Strongly typed, as init made them: a weak type would retrace.
        state.hyperparams.update({k: jnp.asarray(v, jnp.float64) for k, v in changed.items()})
        updates, state = step(grads, state, params)
        assert len(traces) == 1

        static = jax_rmsprop(0.1, **numbers, **flags)
        static_changed = jax_rmsprop(0.1, **changed, **flags)
        inner = static.init(params)
        _, inner = static.update(grads, inner, params)
        expected, _ = static_changed.update(grads, inner, params)
    for k in params:
        np.testing.assert_allclose(updates[k], expected[k], rtol=1e-12)


def test_chain_matches_optax() -> None:
    params, grads = (to_jax(t, "float32") for t in random_problem(8, 30, shapes=SHAPES))
    ours = optax.chain(optax.clip_by_global_norm(1.0), jax_rmsprop(0.01, momentum=0.9))
    theirs = optax.chain(optax.clip_by_global_norm(1.0), optax.rmsprop(0.01, momentum=0.9))
    [(p, _), (expected, _)] = run_many([ours, theirs], params, grads)
    for k in p:
        assert relative_error(p[k], expected[k]) <= TOLERANCE["optax", "float32"]


def test_multi_transform_matches_optax() -> None:
    params, grads = (to_jax(t, "float32") for t in random_problem(9, 30, shapes=SHAPES))
    labels = {"v": "rms", "m": "sgd", "s": "rms"}

    def make(rms: Any) -> Any:
        return optax.multi_transform({"rms": rms, "sgd": optax.sgd(0.1)}, labels)

    ours, theirs = make(jax_rmsprop(0.01, centered=True)), make(optax.rmsprop(0.01, centered=True))
    [(p, state), (expected, _)] = run_many([ours, theirs], params, grads)
    for k in p:
        assert relative_error(p[k], expected[k]) <= TOLERANCE["optax", "float32"]
    inner = state.inner_states["rms"].inner_state
    assert isinstance(inner, RMSpropState)
    assert isinstance(inner.nu["m"], optax.MaskedNode)


def test_multi_steps_matches_optax() -> None:
    params, grads = (to_jax(t, "float32") for t in random_problem(10, 30, shapes=SHAPES))
    ours = optax.MultiSteps(jax_rmsprop(0.01, bias_correction=True), every_k_schedule=3)
    theirs = optax.MultiSteps(optax.rmsprop(0.01, bias_correction=True), every_k_schedule=3)
    [(p, state), (expected, _)] = run_many([ours, theirs], params, grads)
    assert int(state.inner_opt_state.count) == 10
    for k in p:
        assert relative_error(p[k], expected[k]) <= TOLERANCE["optax", "float32"]


def test_none_leaves_and_empty_trees() -> None:
    opt = jax_rmsprop(0.1, momentum=0.9, centered=True, weight_decay=0.1)
    params = {"w": jnp.ones(2), "frozen": None, "nested": [None, (jnp.ones(()),)]}
    state = opt.init(params)
    updates, state = jax.jit(opt.update)(params, state, params)
    assert updates["frozen"] is None and updates["nested"][0] is None
    assert jax.tree.structure(state.nu) == jax.tree.structure(params)
    config = rmsprop.flavor("optax", lr=0.1, momentum=0.9, centered=True, weight_decay=0.1)
    expected, _ = oracle_run(config, {"w": np.ones(2)}, {"w": np.ones((1, 2))})
    np.testing.assert_allclose(optax.apply_updates(params, updates)["w"], expected["w"], rtol=1e-6)

    # A gradient of None for an array: no update, its buffers unchanged.
    updates, later = opt.update({**params, "w": None}, state, params)
    assert updates["w"] is None
    np.testing.assert_array_equal(later.nu["w"], state.nu["w"])

    opt = jax_rmsprop(0.1, momentum=0.9, centered=True)
    for empty in ({}, [], (), None):
        empty_state = opt.init(empty)
        updates, empty_state = jax.jit(opt.update)(empty, empty_state, empty)
        assert updates == empty and int(empty_state.count) == 1


def test_bfloat16_params_get_bfloat16_updates_and_float32_state() -> None:
    opt = jax_rmsprop(0.01, momentum=0.9, centered=True)
    params = {"w": jnp.ones(4, jnp.bfloat16), "h": jnp.ones(2, jnp.float16)}
    state = opt.init(params)
    updates, state = jax.jit(opt.update)(jax.tree.map(lambda p: p * 3, params), state)
    assert {k: u.dtype for k, u in updates.items()} == {"w": jnp.bfloat16, "h": jnp.float16}
    for tree in (state.nu, state.mu, state.trace):
        assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(tree))
    # g/sqrt(0.1·g² - (0.1·g)² + ε) = 1/0.3 for every g; with momentum, -0.01/0.3 at first.
    for update in updates.values():
        np.testing.assert_allclose(np.asarray(update, np.float32), -0.01 / 0.3, rtol=2**-8)


def test_sharded_arrays_stay_sharded_and_unchanged() -> None:
    # The device count is read when jax starts, so this runs in a fresh process.
    env = python_env(XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu")
    result = subprocess.run(
        [sys.executable, "-c", SHARDING_SCRIPT],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip().endswith("OK")


SHARDING_SCRIPT = textwrap.dedent(
    """
    import jax, jax.numpy as jnp, numpy as np, optax
    from jax.sharding import Mesh, NamedSharding, PartitionSpec
    from rmsprop.jax import rmsprop

    assert jax.device_count() == 4, jax.devices()
    mesh = Mesh(np.array(jax.devices()), ("x",))
    rows, everywhere = NamedSharding(mesh, PartitionSpec("x")), NamedSharding(mesh, PartitionSpec())
    rng = np.random.default_rng(0)
    host = {"w": rng.normal(size=(8, 6)), "b": rng.normal(size=3)}
    host_grads = [{k: rng.normal(size=v.shape) for k, v in host.items()} for _ in range(3)]
    where = {"w": rows, "b": everywhere}

    def put(tree, sharded):
        place = where if sharded else dict.fromkeys(where, jax.devices()[0])
        return {k: jax.device_put(jnp.asarray(v, jnp.float32), place[k]) for k, v in tree.items()}

    opt = rmsprop(
        0.01, momentum=0.9, centered=True, bias_correction=True, flavor="pytorch", weight_decay=0.1
    )

    @jax.jit
    def step(params, state, grads):
        updates, state = opt.update(grads, state, params)
        return optax.apply_updates(params, updates), state, updates

    def run(sharded):
        params = put(host, sharded)
        state = opt.init(params)
        for g in host_grads:
            params, state, updates = step(params, state, put(g, sharded))
        return params, state, updates

    params, state, updates = run(sharded=True)
    for tree in (params, updates, state.nu, state.mu, state.trace):
        for k, leaf in tree.items():
            assert leaf.sharding.is_equivalent_to(where[k], leaf.ndim), (k, leaf.sharding)
    hlo = step.lower(params, state, put(host_grads[0], True)).compile().as_text()
    assert "all-gather" not in hlo and "all-reduce" not in hlo, "the update communicates"
    plain, _, _ = run(sharded=False)
    for k in params:
        np.testing.assert_allclose(np.asarray(params[k]), np.asarray(plain[k]), rtol=1e-6)
    print("OK")
    """
)


def test_importing_rmsprop_does_not_import_jax() -> None:
    code = "import sys, rmsprop, rmsprop.numpy; print(sorted({'jax', 'optax'} & set(sys.modules)))"
    result = subprocess.run(
        [sys.executable, "-c", code], env=python_env(), capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def python_env(**variables: str) -> dict[str, str]:
    """The environment for a child Python that imports this checkout's rmsprop."""
    source = os.path.dirname(os.path.dirname(os.path.abspath(rmsprop.__file__)))
    path = os.pathsep.join(p for p in (source, os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "PYTHONPATH": path, **variables}
