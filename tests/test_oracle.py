"""Every backend and code path against the float64 NumPy oracle: one test over the table.

backends.BACKENDS × configurations (every flavor × variation, and random
ones) × dtypes, each run under the schedule `tables.learning_rate_at` (a new
learning rate at every step), compared with `rmsprop.numpy.update` in float64
on the same dtype-rounded problem, under the backend's key of
`tables.TOLERANCES`: parameters, state buffers and step counts.

The Triton rows run where the Triton kernel can (CUDA, or ci/test.sh's second
run with TRITON_INTERPRET=1) and skip elsewhere, saying so.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from backends import (
    BACKENDS,
    BY_NAME,
    COMPLEX,
    MISSING_GRAD,
    NO_GRAD_AT,
    SCHEDULE,
    Backend,
    Result,
    make_problem,
    round_to,
    run_oracle,
)
from tables import ORACLE_STEPS, TOLERANCES, flavor_cases, learning_rate_at, random_configs

import rmsprop.numpy as rnp
from rmsprop import Config

CASES = list(flavor_cases()) + list(random_configs(20))
ROWS = [
    (backend, dtype, desc, config)
    for backend in BACKENDS
    for dtype in backend.dtypes
    for desc, config in backend.cases(dtype, CASES)
]
BOOLEAN_FIELDS = [f.name for f in dataclasses.fields(Config) if f.type in (bool, "bool")]

_results: dict[tuple[str, str, Config], Result] = {}


def run(backend: Backend, dtype: str, config: Config) -> Result:
    """The backend's run of ``config`` (once per process: the bitwise test reuses it)."""
    why_not = backend.unavailable()
    if why_not:
        pytest.skip(why_not)
    key = (backend.name, dtype, config)
    if key not in _results:
        _results[key] = backend.run(config, backend.problem(config, dtype), backend.steps)
    return _results[key]


def as_real(x: np.ndarray) -> np.ndarray:
    return np.stack([x.real, x.imag], axis=-1) if np.iscomplexobj(x) else x


def assert_matches(
    got: Result, want: Result, tolerance: dict[str, float], where: str, state: bool = True
) -> None:
    assert len(got.params) == len(want.params), where
    for i, (a, b) in enumerate(zip(got.params, want.params)):
        assert a.shape == b.shape, f"{where}: params[{i}] has shape {a.shape}, not {b.shape}"
        np.testing.assert_allclose(as_real(a), as_real(b), **tolerance, err_msg=f"params[{i}]")
    if state and got.state is not None:
        for i, (a, b) in enumerate(zip(got.state, want.state)):
            assert sorted(a) == sorted(b), f"{where}: params[{i}]'s state"
            for key in b:
                message = f"params[{i}]'s {key}"
                np.testing.assert_allclose(as_real(a[key]), as_real(b[key]), **tolerance,
                                           err_msg=message)  # fmt: skip
    if got.steps is not None:
        assert got.steps == want.steps, f"{where}: per-parameter step counts"


@pytest.mark.parametrize(
    ("backend", "dtype", "desc", "config"),
    ROWS,
    ids=[f"{b.name}-{dtype}-{desc}" for b, dtype, desc, _ in ROWS],
)
def test_matches_the_float64_oracle(backend, dtype, desc, config):
    got = run(backend, dtype, config)
    want = run_oracle(config, backend.problem(config, dtype), backend.steps)
    where = f"{backend.name} {dtype} {desc}"
    assert_matches(got, want, backend.tolerance(dtype), where, dtype in backend.state_dtypes)


TWINS = [
    (backend, dtype, desc, config)
    for backend, dtype, desc, config in ROWS
    if backend.same_bits_as is not None and dtype in backend.same_bits_dtypes
]


@pytest.mark.parametrize(
    ("backend", "dtype", "desc", "config"),
    TWINS,
    ids=[f"{b.name}-is-{b.same_bits_as}-{dtype}-{desc}" for b, dtype, desc, _ in TWINS],
)
def test_paths_that_compute_the_same_ops_agree_bitwise(backend, dtype, desc, config):
    twin = BY_NAME[backend.same_bits_as]
    got, want = run(backend, dtype, config), run(twin, dtype, config)
    for a, b in zip(got.params + [s[k] for s in got.state for k in sorted(s)],
                    want.params + [s[k] for s in want.state for k in sorted(s)]):  # fmt: skip
        np.testing.assert_array_equal(a, b)


# ---- what the rows above cover --------------------------------------------------------


def groups() -> dict[tuple[str, str], list[tuple[Backend, str, Config]]]:
    """The oracle test's rows by backend and dtype."""
    by: dict[tuple[str, str], list[tuple[Backend, str, Config]]] = {}
    for backend, dtype, desc, config in ROWS:
        by.setdefault((backend.name, dtype), []).append((backend, desc, config))
    return by


@pytest.mark.parametrize(("name", "dtype"), list(groups()), ids=[f"{n}-{d}" for n, d in groups()])
def test_each_backend_s_rows_set_every_boolean_field_both_ways(name, dtype):
    assert len(BOOLEAN_FIELDS) >= 7, BOOLEAN_FIELDS  # the dataclass's bool fields were found
    rows = groups()[name, dtype]
    for field in BOOLEAN_FIELDS:
        seen = {getattr(config, field) for _, _, config in rows}
        assert seen == {False, True}, f"{name} {dtype}: {field} is only ever {seen}"


@pytest.mark.parametrize("backend", BACKENDS, ids=[b.name for b in BACKENDS])
def test_every_row_sees_a_new_learning_rate_at_every_step(backend):
    assert SCHEDULE in backend.supports
    assert 2 <= backend.steps <= ORACLE_STEPS  # the problems have ORACLE_STEPS gradients
    for dtype in backend.dtypes:
        for desc, config in backend.cases(dtype, CASES):
            lrs = [learning_rate_at(config, step) for step in range(backend.steps)]
            assert len(set(lrs)) == backend.steps and min(lrs) > 0, (desc, lrs)
            assert max(lrs) <= config.lr


@pytest.mark.parametrize("backend", BACKENDS, ids=[b.name for b in BACKENDS])
def test_each_backend_s_problems_have_what_it_supports(backend):
    for dtype in backend.dtypes:
        config = Config()
        problem = backend.problem(config, dtype)
        complex_params = [p for p in problem.params if np.iscomplexobj(p)]
        assert bool(complex_params) == (COMPLEX in backend.supports and dtype != "bfloat16")
        if MISSING_GRAD in backend.supports:
            step, param = NO_GRAD_AT
            assert step < backend.steps and problem.grads[step][param] is None
            steps = run_oracle(config, problem, backend.steps).steps
            assert steps[param] == backend.steps - 1 and steps[0] == backend.steps
        for p in problem.params:  # exact in the dtype: every backend starts where the oracle does
            np.testing.assert_array_equal(round_to(p, dtype), p)
            assert not p.flags.writeable  # and shared read-only by every run


def flipped(config: Config, field: str) -> Config | None:
    """``config`` with a boolean field flipped (None where that is not a valid Config)."""
    try:
        return config.replace(**{field: not getattr(config, field)})
    except ValueError:
        return None


def differs(a: Result, b: Result, tolerance: dict[str, float]) -> bool:
    try:
        for x, y in zip(a.params, b.params):
            np.testing.assert_allclose(as_real(x), as_real(y), **tolerance)
    except AssertionError:
        return True
    return False


# Flips that move parameters by about bfloat16's tolerance (6e-2) or less, so whether a
# row set shows them depends on its configurations: ε (at most 1e-2 here) inside or
# outside the root; Nesterov's look-ahead, whose extra movement telescopes to η·μ·b;
# where the changing lr sits relative to the momentum buffer; and the form of weight
# decay. Every backend's float32 rows must show each of them.
BLIND = {
    ("bfloat16", field)
    for field in ("eps_in_sqrt", "nesterov", "lr_in_momentum", "decoupled_weight_decay")
}


@pytest.mark.parametrize(("name", "dtype"), list(groups()), ids=[f"{n}-{d}" for n, d in groups()])
def test_flipping_each_boolean_field_moves_some_row_beyond_the_tolerance(name, dtype):
    # So that the rows can tell each field from its opposite: lr_in_momentum
    # included, which the schedule separates (under a constant lr the two agree).
    rows = groups()[name, dtype]
    backend = rows[0][0]
    for field in BOOLEAN_FIELDS:
        if (dtype, field) in BLIND:
            continue
        for _, _, config in rows:
            other = flipped(config, field)
            problem = backend.problem(config, dtype)
            if other is not None and differs(
                run_oracle(config, problem, backend.steps),
                run_oracle(other, problem, backend.steps),
                backend.tolerance(dtype),
            ):
                break
        else:
            pytest.fail(f"{name} {dtype}: no row's result moves when {field} is flipped")


def test_only_a_changing_lr_tells_lr_in_momentum_from_its_opposite():
    # Why every row runs the schedule: under a constant lr the two momentum forms agree.
    problem = make_problem("float64")
    pair = [Config(lr=0.01, momentum=0.9, lr_in_momentum=flag) for flag in (False, True)]
    ends = []
    for config in pair:
        params, state = list(problem.params), rnp.init(list(problem.params), config)
        for grads in problem.grads:
            params, state = rnp.update(params, list(grads), state, config)
        ends.append(params)
    for a, b in zip(*ends):
        np.testing.assert_allclose(a, b, **TOLERANCES["float64"])
    scheduled = [run_oracle(config, problem, ORACLE_STEPS) for config in pair]
    assert differs(*scheduled, TOLERANCES["float32"])
