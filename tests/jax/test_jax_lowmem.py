"""Tests of `rmsprop.jax`'s low-memory state (``state_dtype=jnp.bfloat16`` or ``"8bit"``).

Every flavor and option against `rmsprop.quantization`'s NumPy oracle (the same
format, seeds and rounding), jitted and eagerly; the state's structure and size;
what optax and JAX expect of a state (tree utilities, jit, inject_hyperparams,
sharding); and bad settings.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from typing import Any

import numpy as np
import pytest
from tables import flavor_cases, learning_rate_at

jax = pytest.importorskip("jax", reason="rmsprop.jax needs jax (pip install rmsprop[jax])")
optax = pytest.importorskip("optax", reason="rmsprop.jax needs optax (pip install rmsprop[jax])")

import jax.numpy as jnp  # noqa: E402

import rmsprop  # noqa: E402
from rmsprop import quantization as q  # noqa: E402
from rmsprop.jax import QuantizedArray, RMSpropState  # noqa: E402
from rmsprop.jax import rmsprop as jax_rmsprop  # noqa: E402

STEPS = 8
CHUNK = 16  # optimizers compiled together
SHAPES = {"w": (64, 70), "b": (3,)}  # 4480 reals: 17 blocks and a partial one; 3: float32
ONE_ARRAY = {"w": (64, 70)}  # the many-configuration test: compilation grows with leaves
FORMATS = {"8bit": "8bit", "bfloat16": jnp.bfloat16}
# How far the parameters may end from the oracle's over STEPS steps, over the distance
# they moved. The math is the same float32 rule in another order (and the scheduled
# learning rate is computed in float32 from the count, the oracle's in float64), so now
# and then a value is stored one code (or bfloat16 step) apart, and from there that
# element's path differs by about one code's worth (worst seen: 0.0044, 8-bit, Graves).
PARAM_TOLERANCE = 0.01
# Over STEPS steps, the share of stored values that differ from the oracle's: a block
# whose largest value took another path is rescaled, and all its codes move (seen: up to
# 4 %, one block of 18 in Dopamine's maximize case). A single step from the same state is
# at most one code or bfloat16 step apart (test_one_step_...).
MOST_DIFFERING = 1.5 / (4480 / 256)


def jax_arguments(config: rmsprop.Config) -> dict[str, Any]:
    """Every Config field as rmsprop.jax.rmsprop's arguments, with the test schedule."""
    return dict(
        learning_rate=lambda count: config.lr / (1 + 0.05 * count),
        decay=config.decay,
        eps=config.eps,
        initial_scale=config.initial_square_avg,
        eps_in_sqrt=config.eps_in_sqrt,
        centered=config.centered,
        momentum=config.momentum if config.momentum > 0 else None,
        nesterov=config.nesterov,
        bias_correction=config.bias_correction,
        weight_decay=config.weight_decay,
        decoupled_weight_decay=config.decoupled_weight_decay,
        lr_in_momentum=config.lr_in_momentum,
        maximize=config.maximize,
    )


def problem(seed: int, shapes: dict = SHAPES, dtype: Any = np.float32) -> tuple[dict, np.ndarray]:
    rng = np.random.default_rng(seed)

    def draw(*shape: int) -> np.ndarray:
        x = rng.normal(size=shape) * 10.0 ** rng.uniform(-1, 0, shape)
        if np.dtype(dtype).kind == "c":
            x = x + 1j * rng.normal(size=shape)
        return x.astype(dtype)

    params = {k: draw(*s) for k, s in shapes.items()}
    grads = {k: draw(STEPS, *s) for k, s in shapes.items()}
    return params, grads


def run_jax(optimizers: list[Any], params: dict, grads: dict, jit: bool) -> list[tuple]:
    """Final ``(params, state)`` of each optimizer; jitted: scanned, a chunk per compilation."""

    def run(opt: Any) -> tuple[Any, Any]:
        def step(carry: Any, g: Any) -> tuple[Any, None]:
            p, state = carry
            updates, state = opt.update(g, state, p)
            return (optax.apply_updates(p, updates), state), None

        if jit:
            final, _ = jax.lax.scan(step, (params, opt.init(params)), grads)
            return final
        carry = (params, opt.init(params))
        for t in range(STEPS):
            carry, _ = step(carry, jax.tree.map(lambda g, t=t: g[t], grads))
        return carry

    if not jit:
        return [run(opt) for opt in optimizers]
    results: list[tuple] = []
    for start in range(0, len(optimizers), CHUNK):
        chunk = optimizers[start : start + CHUNK]
        results += jax.jit(lambda chunk=chunk: [run(opt) for opt in chunk])()
    return results


def run_oracle(config: rmsprop.Config, params: dict, grads: dict, state_dtype: str) -> tuple:
    states = {k: q.init(p, config, state_dtype) for k, p in params.items()}  # type: ignore[arg-type]
    params = dict(params)
    for t in range(STEPS):
        rule = config.replace(lr=learning_rate_at(config, t))
        for k in params:
            params[k], states[k] = q.update(params[k], grads[k][t], states[k], rule)
    return params, states


def stored_units(buffer: Any, state_dtype: str) -> np.ndarray:
    """A stored buffer as integers one apart per representable step: codes, or bfloat16's
    bits as signed magnitudes (so -0 and +0, and two neighbours across 0, are adjacent)."""
    if isinstance(buffer, (QuantizedArray, q.QuantizedBuffer)):
        return np.asarray(buffer.codes).ravel().astype(np.int64)
    bits = np.asarray(buffer).view(np.uint16).ravel().astype(np.int64)
    return np.where(bits >= 0x8000, 0x8000 - bits, bits)


def compare(state: RMSpropState, params: dict, expected: tuple, start: dict, state_dtype: str):
    """The failures (strings) of one run against the oracle's ``(params, states)``."""
    expected_params, expected_states = expected
    failures = []
    for k in start:
        moved = np.max(np.abs(expected_params[k] - start[k]))
        error = np.max(np.abs(np.asarray(params[k]) - expected_params[k])) / moved
        if not error <= PARAM_TOLERANCE:
            failures.append(f"param {k}: {error:.3g}")
        for ours, theirs in (
            ("nu", "square_avg"),
            ("mu", "grad_avg"),
            ("trace", "momentum_buffer"),
        ):
            tree, reference = getattr(state, ours), getattr(expected_states[k], theirs)
            assert (tree is None) == (reference is None), ours
            if tree is None:
                continue
            if isinstance(reference, np.ndarray) and reference.dtype == np.float32:
                scale = np.max(np.abs(reference))  # too small to quantize: float32
                if not np.allclose(np.asarray(tree[k]).ravel(), reference, atol=1e-5 * scale):
                    failures.append(f"{ours}[{k}]: float32 state differs")
                continue
            if isinstance(reference, q.QuantizedBuffer):
                # A block's largest value is stored exactly, but may have taken another path.
                np.testing.assert_allclose(tree[k].scales, reference.scales, rtol=0.05)
            a, b = stored_units(tree[k], state_dtype), stored_units(reference, state_dtype)
            differing = np.mean(a != b)
            if differing > MOST_DIFFERING:
                failures.append(f"{ours}[{k}]: {differing:.2%} differ")
    return failures


def distinct_rules() -> list[tuple[str, rmsprop.Config]]:
    """The flavor table's cases with distinct rules: one per set of switches (and v₀ = 0 or
    not); the others differ only in numbers."""
    from rmsprop._lowering import switches

    seen: dict[Any, tuple[str, rmsprop.Config]] = {}
    for name, config in flavor_cases():
        seen.setdefault((switches(config), config.initial_square_avg > 0), (name, config))
    return list(seen.values())


CASES = distinct_rules()


@pytest.mark.parametrize("state_dtype", FORMATS)
def test_every_flavor_jitted_matches_the_numpy_oracle(state_dtype: str) -> None:
    params, grads = problem(0, ONE_ARRAY)
    optimizers = [
        jax_rmsprop(**jax_arguments(config), state_dtype=FORMATS[state_dtype])
        for _, config in CASES
    ]
    results = run_jax(optimizers, *(jax.tree.map(jnp.asarray, t) for t in (params, grads)), True)
    failures = []
    for (name, config), (p, state) in zip(CASES, results):
        expected = run_oracle(config, params, grads, state_dtype)
        failures += [f"{name}: {f}" for f in compare(state, p, expected, params, state_dtype)]
    assert not failures, "\n".join(failures)


ONE_STEP_CASES = [case for case in CASES if case[0] in (
    "pytorch-centered-momentum", "tensorflow-nesterov", "keras-decoupled", "dqn-bias-correction",
    "lasagne-maximize", "graves-l2", "dqn-ones-init", "pytorch-lr-in-momentum-flipped",
)]  # fmt: skip


def to_jax_buffer(buffer: Any, shape: tuple[int, ...]) -> Any:
    if isinstance(buffer, q.QuantizedBuffer):
        return QuantizedArray(jnp.asarray(buffer.codes.reshape(shape)), jnp.asarray(buffer.scales))
    if buffer.dtype == np.uint16:
        return jax.lax.bitcast_convert_type(jnp.asarray(buffer.reshape(shape)), jnp.bfloat16)
    return jnp.asarray(buffer.reshape(shape))


@pytest.mark.parametrize("state_dtype", FORMATS)
def test_one_step_from_the_same_state_is_within_one_code_of_the_oracle(state_dtype: str) -> None:
    params, grads = problem(3, ONE_ARRAY)
    differing: list[float] = []
    far: list[int] = []
    steps = 0
    for name, config in ONE_STEP_CASES:
        kwargs = dict(jax_arguments(config), learning_rate=config.lr)
        opt = jax_rmsprop(**kwargs, state_dtype=FORMATS[state_dtype])
        update = jax.jit(opt.update)
        theta, state = params["w"], q.init(params["w"], config, state_dtype)  # type: ignore[arg-type]
        for t in range(STEPS):
            ours = RMSpropState(
                jnp.asarray(t, jnp.int32),
                *(None if b is None else {"w": to_jax_buffer(b, theta.shape)} for b in state[1:]),
            )
            _, ours = update({"w": jnp.asarray(grads["w"][t])}, ours, {"w": jnp.asarray(theta)})
            theta, state = q.update(theta, grads["w"][t], state, config)
            for tree, reference in zip(ours[1:], state[1:]):
                if tree is None:
                    continue
                a, b = stored_units(tree["w"], state_dtype), stored_units(reference, state_dtype)
                # One step apart at most; but a centered rule's v - m² cancels, and there
                # float32 itself differs by more than a step (seen: one element, Graves).
                far.append(int(np.sum(np.abs(a - b) > 1)))
                assert far[-1] <= 1, (name, t)
                differing.append(np.mean(a != b))
                steps += 1
    assert steps > 2 * len(ONE_STEP_CASES) * STEPS
    assert np.mean(differing) < 1e-3  # seen: 0 (8-bit: the same codes), 2e-5 (bfloat16)
    assert sum(far) <= 2, far


EAGER_CASES = [case for case in CASES if case[0].startswith(("pytorch-", "tensorflow-"))]


@pytest.mark.parametrize("state_dtype", FORMATS)
def test_eagerly_matches_the_numpy_oracle(state_dtype: str) -> None:
    params, grads = problem(1)
    failures = []
    for name, config in EAGER_CASES:
        opt = jax_rmsprop(**jax_arguments(config), state_dtype=FORMATS[state_dtype])
        [(p, state)] = run_jax(
            [opt], *(jax.tree.map(jnp.asarray, t) for t in (params, grads)), False
        )
        expected = run_oracle(config, params, grads, state_dtype)
        failures += [f"{name}: {f}" for f in compare(state, p, expected, params, state_dtype)]
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("state_dtype", FORMATS)
def test_complex_parameters_are_pairs_of_reals(state_dtype: str) -> None:
    shapes = {"z": (40, 60), "s": (5,)}  # 4800 reals: quantized; 10: float32
    params, grads = problem(2, shapes, np.complex64)
    config = rmsprop.flavor("pytorch", momentum=0.9, centered=True, weight_decay=0.01)
    opt = jax_rmsprop(**jax_arguments(config), state_dtype=FORMATS[state_dtype])
    [(p, state)] = run_jax([opt], *(jax.tree.map(jnp.asarray, t) for t in (params, grads)), True)
    assert p["z"].dtype == jnp.complex64
    if state_dtype == "8bit":
        assert state.nu["z"].codes.shape == (40, 60, 2) and state.nu["s"].shape == (5, 2)
    expected = run_oracle(config, params, grads, state_dtype)
    assert compare(state, p, expected, params, state_dtype) == []


def test_state_structure_and_size() -> None:
    params = {"w": jnp.zeros((64, 80)), "b": jnp.zeros(7), "h": jnp.zeros(4096, jnp.bfloat16)}
    state = jax_rmsprop(1e-3, momentum=0.9, centered=True, state_dtype="8bit").init(params)
    for tree in (state.nu, state.mu, state.trace):
        assert isinstance(tree["w"], QuantizedArray) and isinstance(tree["h"], QuantizedArray)
        assert tree["w"].codes.dtype == jnp.uint8 and tree["w"].codes.shape == (64, 80)
        assert tree["w"].scales.dtype == jnp.float32 and tree["w"].scales.shape == (20,)
        assert tree["b"].dtype == jnp.float32  # 7 elements: float32
    nbytes = sum(leaf.nbytes for leaf in jax.tree.leaves(state.nu["w"]))
    assert nbytes == q.state_bytes(64 * 80, "8bit") and nbytes / (64 * 80) <= 1.017
    bf16 = jax_rmsprop(1e-3, centered=True, state_dtype=jnp.bfloat16).init(params)
    assert all(leaf.dtype == jnp.bfloat16 for leaf in jax.tree.leaves((bf16.nu, bf16.mu)))
    assert jax_rmsprop(1e-3, state_dtype="bfloat16").init(params).nu["w"].dtype == jnp.bfloat16
    # Tree utilities see arrays (codes and scales) as leaves.
    shapes = jax.tree.map(lambda x: x.shape, state)
    assert shapes.nu["w"] == QuantizedArray((64, 80), (20,))
    zeros = jax.tree.map(jnp.zeros_like, state)
    assert isinstance(zeros.nu["w"], QuantizedArray)


def test_initial_state_is_exact() -> None:
    params = {"w": jnp.zeros((64, 80))}
    for initial in (0.0, 1.0, 0.1):
        opt = jax_rmsprop(1e-3, initial_scale=initial, momentum=0.5, state_dtype="8bit")
        state = opt.init(params)
        codes, scales = state.nu["w"]
        np.testing.assert_array_equal(scales, np.float32(initial))
        assert np.all(np.asarray(codes) == 255) or initial == 0.0
        np.testing.assert_array_equal(state.trace["w"].codes, 128)  # 0 in the signed map
        expected = q.init(
            np.zeros((64, 80), np.float32), rmsprop.Config(initial_square_avg=initial)
        )
        np.testing.assert_array_equal(np.asarray(codes).ravel(), expected.square_avg.codes)


def test_jit_does_not_recompile_and_none_leaves() -> None:
    traces = []
    opt = jax_rmsprop(1e-2, momentum=0.9, centered=True, weight_decay=0.1, state_dtype="8bit")

    @jax.jit
    def step(params: Any, state: Any, grads: Any) -> tuple[Any, Any]:
        traces.append(1)
        updates, state = opt.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    params = {"w": jnp.ones((64, 80)), "frozen": None}
    state = opt.init(params)
    first = state
    for _ in range(3):
        params, state = step(params, state, {"w": jnp.full((64, 80), 0.5), "frozen": None})
    assert len(traces) == 1 and int(state.count) == 3
    assert jax.tree.structure(state) == jax.tree.structure(first)
    updates, later = opt.update({"w": None, "frozen": None}, state, params)
    assert updates["w"] is None
    np.testing.assert_array_equal(later.nu["w"].codes, state.nu["w"].codes)


def test_inject_hyperparams_and_chain() -> None:
    params = {"w": jnp.ones((64, 80))}
    grads = {"w": jnp.full((64, 80), 0.5)}
    opt = optax.inject_hyperparams(jax_rmsprop)(learning_rate=0.01, state_dtype="8bit")
    state = opt.init(params)
    updates, state = jax.jit(opt.update)(grads, state, params)
    plain = jax_rmsprop(0.01, state_dtype="8bit")
    expected, _ = plain.update(grads, plain.init(params), params)
    np.testing.assert_allclose(updates["w"], expected["w"], rtol=1e-6)
    chained = optax.chain(optax.clip(1.0), jax_rmsprop(0.01, state_dtype=jnp.bfloat16))
    updates, _ = chained.update(grads, chained.init(params), params)
    np.testing.assert_allclose(updates["w"], expected["w"], rtol=1e-6)


@pytest.mark.parametrize(
    "state_dtype", ["8-bit", "4bit", "float16", jnp.float32, jnp.float16, 8, "int8", True]
)
def test_unknown_state_dtype_is_refused_at_construction(state_dtype: Any) -> None:
    with pytest.raises(ValueError, match=r"state_dtype must be None, jnp\.bfloat16"):
        jax_rmsprop(0.1, state_dtype=state_dtype)


def test_sharded_arrays_give_the_unsharded_state() -> None:
    # The device count is read when jax starts, so this runs in a fresh process.
    env = {**python_env(), "XLA_FLAGS": "--xla_force_host_platform_device_count=4",
           "JAX_PLATFORMS": "cpu"}  # fmt: skip
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

    mesh = Mesh(np.array(jax.devices()), ("x",))
    rows = NamedSharding(mesh, PartitionSpec("x"))
    rng = np.random.default_rng(0)
    host = rng.normal(size=(64, 256)).astype(np.float32)  # a shard: 16 rows, 16 blocks
    host_grads = [rng.normal(size=host.shape).astype(np.float32) for _ in range(3)]
    opt = rmsprop(0.01, momentum=0.9, centered=True, state_dtype="8bit")

    @jax.jit
    def step(params, state, grads):
        updates, state = opt.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    def run(sharded):
        put = (lambda x: jax.device_put(x, rows)) if sharded else jnp.asarray
        params = put(host)
        state = opt.init(params)
        for g in host_grads:
            params, state = step(params, state, put(g))
        return params, state

    params, state = run(sharded=True)
    assert params.sharding.is_equivalent_to(rows, 2), params.sharding
    plain, plain_state = run(sharded=False)
    np.testing.assert_allclose(np.asarray(params), np.asarray(plain), rtol=1e-6)
    for ours, theirs in zip(jax.tree.leaves(state), jax.tree.leaves(plain_state)):
        np.testing.assert_array_equal(np.asarray(ours), np.asarray(theirs))
    print("OK")
    """
)


def python_env() -> dict[str, str]:
    import os

    source = os.path.dirname(os.path.dirname(os.path.abspath(rmsprop.__file__)))
    path = os.pathsep.join(p for p in (source, os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "PYTHONPATH": path}
