"""Both torch paths against the float64 NumPy oracle: every flavor, variation and dtype."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from tables import ORACLE_STEPS, TOLERANCES, flavor_cases, learning_rate_at, random_configs

torch = pytest.importorskip("torch", reason="the torch backend needs the torch extra")

import rmsprop.numpy as rnp  # noqa: E402
from rmsprop import Config  # noqa: E402
from rmsprop.torch import RMSprop  # noqa: E402

DTYPES = {"float64": torch.float64, "float32": torch.float32, "bfloat16": torch.bfloat16}
COMPLEX = {torch.float64: torch.complex128, torch.float32: torch.complex64}
# 0-d, empty, vector, matrix, and one made non-contiguous in torch (NONCONTIGUOUS).
SHAPES = [(), (0,), (7,), (3, 5), (6, 4)]
NONCONTIGUOUS = 4
NO_GRAD_AT = (10, 2)  # at step 10, parameter 2 has no gradient (it must not move)


@dataclasses.dataclass
class Problem:
    params: list[np.ndarray]  # initial values, already rounded to the dtype
    grads: list[list[np.ndarray | None]]  # grads[step][param], rounded likewise


def rounded(x: np.ndarray, dtype: torch.dtype) -> np.ndarray:
    t = torch.from_numpy(np.asarray(x)).to(dtype)
    return (t.to(torch.complex128) if t.is_complex() else t.double()).numpy()


def make_problem(dtype: torch.dtype, seed: int = 0) -> Problem:
    rng = np.random.default_rng(seed)
    shapes = list(SHAPES)
    kinds = [dtype] * len(shapes)
    if dtype in COMPLEX:
        shapes.append((3,))
        kinds.append(COMPLEX[dtype])

    def draw(shape, kind):
        x = rng.normal(size=shape)
        if kind.is_complex:
            x = x + 1j * rng.normal(size=shape)
        return rounded(x, kind)

    params = [draw(s, k) for s, k in zip(shapes, kinds)]
    grads = []
    for step in range(ORACLE_STEPS):
        row = [draw(s, k) for s, k in zip(shapes, kinds)]
        if step == NO_GRAD_AT[0]:
            row[NO_GRAD_AT[1]] = None
        grads.append(row)
    return Problem(params, grads)


def torch_params(problem: Problem, dtype: torch.dtype) -> list[torch.Tensor]:
    params = []
    for i, p in enumerate(problem.params):
        kind = COMPLEX[dtype] if np.iscomplexobj(p) else dtype
        t = torch.tensor(p, dtype=kind)
        if i == NONCONTIGUOUS:
            t = torch.zeros(t.shape[::-1], dtype=kind).t().copy_(t)
            assert not t.is_contiguous()
        params.append(t.requires_grad_())
    return params


# The three code paths, as RMSprop arguments.
PATHS = {
    "forloop": {"foreach": False, "fused": False},
    "foreach": {"foreach": True, "fused": False},
    "fused": {"fused": True},
}


def run_torch(config: Config, problem: Problem, dtype: torch.dtype, path: str):
    params = torch_params(problem, dtype)
    opt = RMSprop(params, **PATHS[path], **dataclasses.asdict(config))
    for step, grads in enumerate(problem.grads):
        for p, g in zip(params, grads):
            p.grad = None if g is None else torch.tensor(g, dtype=p.dtype)
        opt.param_groups[0]["lr"] = learning_rate_at(config, step)
        opt.step()
    return params, opt


def run_oracle(config: Config, problem: Problem) -> list[np.ndarray]:
    params = list(problem.params)
    state = rnp.init(params, config)
    for step, grads in enumerate(problem.grads):
        lr_config = config.replace(lr=learning_rate_at(config, step))
        params, state = rnp.update(params, grads, state, lr_config)
    return params


def as_real_numpy(t: torch.Tensor) -> np.ndarray:
    t = t.detach()
    return (torch.view_as_real(t) if t.is_complex() else t).double().numpy()


def as_real(x: np.ndarray) -> np.ndarray:
    return np.stack([x.real, x.imag], axis=-1) if np.iscomplexobj(x) else x


CASES = list(flavor_cases()) + list(random_configs(20))


@pytest.mark.parametrize("dtype_name", list(DTYPES))
@pytest.mark.parametrize(("desc", "config"), CASES, ids=[d for d, _ in CASES])
def test_both_paths_match_the_float64_oracle(desc, config, dtype_name):
    dtype = DTYPES[dtype_name]
    problem = make_problem(dtype)
    expected = [as_real(p) for p in run_oracle(config, problem)]
    results = {}
    for path in PATHS:
        params, _ = run_torch(config, problem, dtype, path)
        results[path] = [as_real_numpy(p) for p in params]
        for got, want in zip(results[path], expected):
            np.testing.assert_allclose(got, want, **TOLERANCES[dtype_name])
    # On the CPU the foreach kernels loop over the same ops: bitwise equal in
    # float32/64. (In bfloat16 torch's own CPU foreach kernels keep some
    # intermediates in float32, so torch.optim.RMSprop's two paths differ too.)
    if dtype != torch.bfloat16:
        for single, multi in zip(results["forloop"], results["foreach"]):
            np.testing.assert_array_equal(single, multi)


def test_parameter_without_gradient_does_not_move_or_count_a_step():
    problem = make_problem(torch.float64)
    config = Config(momentum=0.9)
    params, opt = run_torch(config, problem, torch.float64, "fused")
    steps = [opt.state[p]["step"].item() for p in params]
    assert steps[NO_GRAD_AT[1]] == ORACLE_STEPS - 1
    assert steps[0] == ORACLE_STEPS
