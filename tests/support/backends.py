"""One table of every backend and code path the oracle test runs, like torch's OptimizerInfo.

Each `Backend` says how to run a `Config` for some steps on a `Problem` (its
``run``), in which dtypes, under which key of `tables.TOLERANCES`, what it
supports, and whether it can run here (``unavailable()``: '' when it can, else
why not, naming what is missing). tests/test_oracle.py crosses the table with
the configurations and dtypes and compares every run with the float64 NumPy
oracle (`run_oracle`), under the schedule `tables.learning_rate_at`.

Only the public API is used. Frameworks are imported lazily, inside the
runners and checks, so this module imports with NumPy alone (and never
imports triton where it cannot run: TensorFlow and triton can't share a
process).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import importlib.util
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
from tables import ORACLE_STEPS, TOLERANCES, config_kwargs, learning_rate_at

import rmsprop.numpy as rnp
from rmsprop import Config

# ---- the problem -------------------------------------------------------------------------

# 0-d, empty, vector, matrix, and one laid out non-contiguously where a backend can.
SHAPES = [(), (0,), (7,), (3, 5), (6, 4)]
NONCONTIGUOUS = 4
COMPLEX_SHAPE = (3,)  # appended, complex, for float32 and float64 (no complex bfloat16)
NO_GRAD_AT = (3, 2)  # at step 3, parameter 2 has no gradient: it must not move or count a step
STATE_KEYS = ("square_avg", "grad_avg", "momentum_buffer")

# What a backend may support; every problem has all of it unless a backend lacks it.
COMPLEX = "complex"  # complex parameters (pairs of independent reals)
NON_CONTIGUOUS = "non-contiguous"  # a parameter laid out non-contiguously
MISSING_GRAD = "missing-grad"  # a parameter without a gradient at one step
STEP_COUNTS = "per-parameter-step-counts"  # counts each parameter's own steps (bias correction)
SCHEDULE = "schedule"  # a learning rate that changes at every step
STATE = "state"  # exposes its state (averages, buffer) for comparison
FEATURES = (COMPLEX, NON_CONTIGUOUS, MISSING_GRAD, STEP_COUNTS, SCHEDULE, STATE)


@dataclasses.dataclass(frozen=True, eq=False)
class Problem:
    """Initial parameters and a gradient sequence, as read-only float64 (or complex128)
    arrays whose values are exact in ``dtype``, so every backend starts from the same
    numbers as the oracle. Compared by identity: `make_problem` makes each one once."""

    dtype: str
    params: tuple[np.ndarray, ...]
    grads: tuple[tuple[np.ndarray | None, ...], ...]  # grads[step][param]; None: no gradient
    noncontiguous: int | None  # the parameter to lay out non-contiguously, if any


def round_to(x: np.ndarray, dtype: str) -> np.ndarray:
    """``x`` rounded to nearest (even) in ``dtype``, returned in float64 (complex: each part)."""
    x = np.asarray(x)
    if np.iscomplexobj(x):
        return round_to(x.real, dtype) + 1j * round_to(x.imag, dtype)
    if dtype == "float64":
        return np.array(x, dtype=np.float64)
    single = x.astype(np.float32)
    if dtype == "bfloat16":  # the upper half of float32's bits, rounded to nearest even
        bits = single.view(np.uint32)
        odd = (bits >> np.uint32(16)) & np.uint32(1)
        single = ((bits + np.uint32(0x7FFF) + odd) & np.uint32(0xFFFF0000)).view(np.float32)
    elif dtype != "float32":
        raise ValueError(f"no rounding to {dtype}")
    return np.array(single, dtype=np.float64)  # an array, 0-d ones too


@functools.cache
def make_problem(
    dtype: str, *, complex_param: bool = True, missing_grad: bool = True, seed: int = 0
) -> Problem:
    """The seeded problem every backend and the oracle run (the same one for equal arguments)."""
    rng = np.random.default_rng(seed)
    shapes: list[tuple[tuple[int, ...], bool]] = [(s, False) for s in SHAPES]
    if complex_param and dtype != "bfloat16":
        shapes.append((COMPLEX_SHAPE, True))

    def draw(shape: tuple[int, ...], is_complex: bool) -> np.ndarray:
        x = rng.normal(size=shape)
        if is_complex:
            x = x + 1j * rng.normal(size=shape)
        x = round_to(x, dtype)
        x.flags.writeable = False  # shared by every run: no backend may change it
        return x

    params = tuple(draw(s, c) for s, c in shapes)
    grads = []
    for step in range(ORACLE_STEPS):
        row: list[np.ndarray | None] = [draw(s, c) for s, c in shapes]
        if missing_grad and step == NO_GRAD_AT[0]:
            row[NO_GRAD_AT[1]] = None
        grads.append(tuple(row))
    return Problem(dtype, params, tuple(grads), NONCONTIGUOUS)


@dataclasses.dataclass
class Result:
    """Where a run ended, as float64 (or complex128) NumPy arrays."""

    params: list[np.ndarray]
    state: list[dict[str, np.ndarray]] | None  # per parameter, the buffers its rule keeps
    steps: list[int] | None  # per-parameter step counts (None: counted once for all)


def wide(x: Any) -> np.ndarray:
    """An array (NumPy, torch or JAX; any float dtype) as float64 or complex128 NumPy."""
    if hasattr(x, "detach"):  # a torch tensor: via float64 (NumPy has no bfloat16)
        import torch

        x = x.detach().cpu()
        x = x.to(torch.complex128) if x.is_complex() else x.double()
        return x.numpy().copy()
    x = np.asarray(x)
    return x.astype(np.complex128 if np.iscomplexobj(x) else np.float64)


def _leaf_state(leaf: rnp.LeafState) -> dict[str, np.ndarray]:
    buffers = zip(STATE_KEYS, (leaf.square_avg, leaf.grad_avg, leaf.momentum_buffer))
    return {key: wide(value) for key, value in buffers if value is not None}


@functools.lru_cache(maxsize=4096)
def run_oracle(config: Config, problem: Problem, steps: int) -> Result:
    """The float64 NumPy reference, `rmsprop.numpy.update`, under the shared schedule
    (computed once per configuration, problem and step count: treat it as read-only)."""
    params = list(problem.params)
    state = rnp.init(params, config)
    for step, grads in enumerate(problem.grads[:steps]):
        lr_config = config.replace(lr=learning_rate_at(config, step))
        params, state = rnp.update(params, list(grads), state, lr_config)
    return Result(
        [wide(p) for p in params], [_leaf_state(s) for s in state], [s.step for s in state]
    )


# ---- NumPy -------------------------------------------------------------------------------


def _numpy_params(problem: Problem) -> list[np.ndarray]:
    real = np.dtype(problem.dtype)
    params = []
    for i, p in enumerate(problem.params):
        array = p.astype(np.result_type(real, np.complex64) if np.iscomplexobj(p) else real)
        if i == problem.noncontiguous:
            array = np.ascontiguousarray(array.T).T  # the same values, in Fortran order
            assert not array.flags.c_contiguous
        params.append(array)
    return params


def _numpy_grads(params: list[np.ndarray], grads: Sequence[np.ndarray | None]) -> list[Any]:
    return [None if g is None else g.astype(p.dtype) for p, g in zip(params, grads)]


def run_numpy_reference(config: Config, problem: Problem, steps: int) -> Result:
    """`rmsprop.numpy.update` in the problem's dtype, one step at a time."""
    params = _numpy_params(problem)
    state = rnp.init(params, config)
    for step, grads in enumerate(problem.grads[:steps]):
        lr_config = config.replace(lr=learning_rate_at(config, step))
        params, state = rnp.update(params, _numpy_grads(params, grads), state, lr_config)
    return Result(
        [wide(p) for p in params], [_leaf_state(s) for s in state], [s.step for s in state]
    )


def run_numpy_fused(config: Config, problem: Problem, steps: int) -> Result:
    """`rmsprop.numpy.RMSprop(fused=True)`, its config's lr changed before each step."""
    params = _numpy_params(problem)
    opt = rnp.RMSprop(params, config, fused=True)
    assert opt.fused
    for step, grads in enumerate(problem.grads[:steps]):
        opt.config = config.replace(lr=learning_rate_at(config, step))
        opt.step(_numpy_grads(params, grads))
    return Result(
        [wide(p) for p in params], [_leaf_state(s) for s in opt.state], [s.step for s in opt.state]
    )


# ---- PyTorch -----------------------------------------------------------------------------


def _torch_params(problem: Problem, device: str = "cpu") -> list[Any]:
    import torch

    real = getattr(torch, problem.dtype)
    params = []
    for i, p in enumerate(problem.params):
        kind = {torch.float64: torch.complex128}.get(real, torch.complex64)
        t = torch.tensor(p, dtype=kind if np.iscomplexobj(p) else real)
        if i == problem.noncontiguous:
            t = t.t().contiguous().t()  # the same values, transposed in memory
            assert not t.is_contiguous()
        params.append(torch.nn.Parameter(t.to(device)))
    return params


def _torch_grad(param: Any, grad: np.ndarray) -> Any:
    """``grad`` as autograd would make it: the parameter's dtype, device and layout."""
    import torch

    return torch.empty_like(param).copy_(torch.tensor(grad))


def _torch_result(params: list[Any], states: list[dict[str, Any]]) -> Result:
    return Result(
        [wide(p) for p in params],
        [{k: wide(v) for k, v in s.items() if k in STATE_KEYS} for s in states],
        [int(s["step"].item()) for s in states],
    )


def torch_optimizer_runner(device: Callable[[], str] = lambda: "cpu", **path: Any) -> Runner:
    """Runs `rmsprop.torch.RMSprop` with these path switches (foreach, fused)."""

    def run(config: Config, problem: Problem, steps: int) -> Result:
        from rmsprop.torch import RMSprop

        params = _torch_params(problem, device())
        opt = RMSprop(params, **path, **config_kwargs(config))
        for step, grads in enumerate(problem.grads[:steps]):
            for p, g in zip(params, grads):
                p.grad = None if g is None else _torch_grad(p, g)
            opt.param_groups[0]["lr"] = learning_rate_at(config, step)
            opt.step()
        return _torch_result(params, [opt.state[p] for p in params])

    return run


def run_torch_functional(config: Config, problem: Problem, steps: int) -> Result:
    """`rmsprop.torch.rmsprop` (single-tensor) on state lists built here, as its docs say."""
    import torch

    from rmsprop.torch import rmsprop

    params = [p.detach() for p in _torch_params(problem)]
    start = config.initial_square_avg
    state = [
        {
            "square_avg": torch.full_like(p, complex(start, start) if p.is_complex() else start),
            "grad_avg": torch.zeros_like(p),
            "momentum_buffer": torch.zeros_like(p),
            "step": torch.zeros(()),
        }
        for p in params
    ]
    hyper = config_kwargs(config)
    del hyper["initial_square_avg"]  # only the state's creation (above) reads it
    for step, grads in enumerate(problem.grads[:steps]):
        present = [i for i, g in enumerate(grads) if g is not None]

        def column(key: str, present: list[int] = present) -> list[Any]:
            return [state[i][key] for i in present]

        rmsprop(
            [params[i] for i in present],
            [_torch_grad(params[i], grads[i]) for i in present],
            column("square_avg"),
            column("grad_avg") if config.centered else [],
            column("momentum_buffer") if config.momentum > 0 else [],
            column("step"),
            foreach=False,
            fused=False,
            **{**hyper, "lr": learning_rate_at(config, step)},
        )
    for s in state:
        if not config.centered:
            del s["grad_avg"]
        if config.momentum == 0:
            del s["momentum_buffer"]
    return _torch_result(params, state)


# ---- JAX ---------------------------------------------------------------------------------


@contextlib.contextmanager
def jax_precision(dtype: str) -> Iterator[None]:
    """64-bit JAX inside the block for float64 (restored after)."""
    import jax

    if dtype != "float64":
        yield
        return
    # jax.enable_x64 is new in jax 0.7; jax.experimental.enable_x64 came before.
    enable_x64 = jax.enable_x64 if hasattr(jax, "enable_x64") else jax.experimental.enable_x64
    with enable_x64(True):
        yield


def jax_transformation(config: Config) -> Any:
    """`rmsprop.jax.rmsprop` computing ``config`` under the shared schedule (of the count)."""
    from rmsprop.jax import rmsprop

    return rmsprop(
        lambda count: learning_rate_at(config, count),
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


def jax_runner(jit: bool) -> Runner:
    """Steps `rmsprop.jax.rmsprop` eagerly or through `jax.jit`, adding updates as
    `optax.apply_updates` does (in the parameters' dtype), none where a gradient is None."""

    def run(config: Config, problem: Problem, steps: int) -> Result:
        import jax
        import jax.numpy as jnp

        with jax_precision(problem.dtype):
            opt = jax_transformation(config)

            def step(params: Any, state: Any, grads: Any) -> Any:
                updates, state = opt.update(grads, state, params)
                new = [p if u is None else (p + u).astype(p.dtype) for p, u in zip(params, updates)]
                return new, state

            step = jax.jit(step) if jit else step
            real = jnp.dtype(problem.dtype)
            complex_kind = jnp.complex128 if problem.dtype == "float64" else jnp.complex64

            def as_jax(x: np.ndarray) -> Any:
                return jnp.asarray(x, complex_kind if np.iscomplexobj(x) else real)

            params = [as_jax(p) for p in problem.params]
            state = opt.init(params)
            for grads in problem.grads[:steps]:
                params, state = step(
                    params, state, [None if g is None else as_jax(g) for g in grads]
                )
            buffers = {"square_avg": state.nu, "grad_avg": state.mu, "momentum_buffer": state.trace}
            return Result(
                [wide(p) for p in params],
                [
                    {k: wide(v[i]) for k, v in buffers.items() if v is not None}
                    for i in range(len(params))
                ],
                None,  # one count for the whole tree, as optax keeps
            )

    return run


# ---- when each can run -------------------------------------------------------------------

EXTRAS = {"torch": "torch", "numba": "fast", "triton": "triton", "jax": "jax", "optax": "jax"}


def _missing(*modules: str) -> str:
    """Names the first module not installed ('' when all are)."""
    for module in modules:
        if importlib.util.find_spec(module) is None:
            return f"{module} is not installed (pip install rmsprop[{EXTRAS[module]}])"
    return ""


def interpreting() -> bool:
    """Whether this process runs Triton kernels through Triton's interpreter."""
    return os.environ.get("TRITON_INTERPRET") == "1"


def triton_device() -> str | None:
    """Where `fused=True` reaches the Triton kernel here: CPU tensors under the interpreter,
    CUDA tensors on a GPU, else nowhere."""
    if interpreting():
        return "cpu"
    import torch

    return "cuda" if torch.cuda.is_available() else None


def _refused_fused_step(device: str) -> str:
    """Why `RMSprop(fused=True)` refuses to step a tensor on ``device`` ('' when it steps it).

    A refusal comes before anything changes; an error after a change is a failure, raised.
    """
    import torch

    from rmsprop.torch import RMSprop

    p = torch.nn.Parameter(torch.ones(2, device=device))
    p.grad = torch.ones(2, device=device)
    try:
        RMSprop([p], fused=True).step()
    except RuntimeError as error:
        if not torch.equal(p.detach().cpu(), torch.ones(2)):
            raise
        return f"RMSprop(fused=True) refuses {device} tensors here: {error}"
    return ""


@functools.cache
def _numpy_fused_unavailable() -> str:
    missing = _missing("numba")
    if missing:
        return missing
    try:
        rnp.RMSprop([np.ones(1)], fused=True)
    except RuntimeError as error:
        return f"rmsprop.numpy.RMSprop(fused=True) refuses to run here: {error}"
    return ""


@functools.cache
def _torch_unavailable() -> str:
    return _missing("torch")


@functools.cache
def _torch_numba_unavailable() -> str:
    if interpreting():
        return (
            "TRITON_INTERPRET=1 sends fused=True on CPU tensors to the Triton kernel "
            "(the torch-fused-triton row), not to the Numba kernel"
        )
    return _missing("torch", "numba") or _refused_fused_step("cpu")


@functools.cache
def _triton_unavailable() -> str:
    missing = _missing("torch", "triton")
    if missing:
        return missing
    device = triton_device()
    if device is None:
        return (
            "the Triton kernel runs on CUDA tensors, or on CPU tensors under TRITON_INTERPRET=1 "
            "(ci/test.sh's second pytest run); this process has neither"
        )
    return _refused_fused_step(device)


@functools.cache
def _jax_unavailable() -> str:
    return _missing("jax", "optax")


# ---- the table ---------------------------------------------------------------------------

Runner = Callable[[Config, Problem, int], Result]

ALL_DTYPES = ("float64", "float32", "bfloat16")
EVERYTHING = frozenset(FEATURES)
# Rows that run every k-th configuration take k prime to the 10 cases of each
# flavor, so a subsample still meets every variation (test_oracle's meta-tests
# check that each backend's rows set every boolean field both ways, detectably).
EVERY_THIRD, EVERY_SEVENTH, EVERY_ELEVENTH = 3, 7, 11


@dataclasses.dataclass(frozen=True, eq=False)
class Backend:
    """A backend or code path, and how the oracle test runs it."""

    name: str
    run: Runner  # (config, problem, steps) -> where the run ended
    dtypes: tuple[str, ...]
    supports: frozenset[str]  # which of FEATURES its problem exercises
    unavailable: Callable[[], str]  # why it can't run here ('' when it can)
    # Keys into tables.TOLERANCES by dtype (a dtype absent here is its own key).
    tolerance_keys: Mapping[str, str] = dataclasses.field(default_factory=dict)
    # The dtypes in which its state is compared too: where it keeps state of float32 or
    # wider. (bfloat16 state, PyTorch's choice, rounds (1 - ρ)·g² against v ≈ 1: it
    # drifts from the float64 averages by more than a parameter-scaled tolerance.)
    state_dtypes: tuple[str, ...] = ("float64", "float32")
    steps: int = ORACLE_STEPS  # at most ORACLE_STEPS
    every: Mapping[str, int] = dataclasses.field(default_factory=dict)  # run every k-th case
    offset: int = 0  # ...starting with this one
    # Another backend this one must agree with bit for bit, and in which dtypes.
    same_bits_as: str | None = None
    same_bits_dtypes: tuple[str, ...] = ()

    def tolerance_key(self, dtype: str) -> str:
        return self.tolerance_keys.get(dtype, dtype)

    def tolerance(self, dtype: str) -> dict[str, float]:
        return TOLERANCES[self.tolerance_key(dtype)]

    def cases(self, dtype: str, cases: Sequence[tuple[str, Config]]) -> list[tuple[str, Config]]:
        """The configurations this backend runs in ``dtype``."""
        every = self.every.get(dtype, 1)
        return list(cases[self.offset % every :: every])

    def problem(self, config: Config, dtype: str) -> Problem:
        """The problem it runs ``config`` on: with every feature it supports."""
        missing = MISSING_GRAD in self.supports and (
            STEP_COUNTS in self.supports or not config.bias_correction
        )
        return make_problem(dtype, complex_param=COMPLEX in self.supports, missing_grad=missing)


BACKENDS: tuple[Backend, ...] = (
    Backend(
        "numpy-reference",
        run_numpy_reference,
        dtypes=("float32",),  # in float64 it is the oracle
        supports=EVERYTHING,
        unavailable=lambda: "",
    ),
    Backend(
        "numpy-fused",
        run_numpy_fused,
        dtypes=("float64", "float32"),  # NumPy has no bfloat16
        supports=EVERYTHING,
        unavailable=_numpy_fused_unavailable,
    ),
    Backend(
        "torch-single",
        torch_optimizer_runner(foreach=False, fused=False),
        dtypes=ALL_DTYPES,
        supports=EVERYTHING,
        unavailable=_torch_unavailable,
    ),
    Backend(
        "torch-foreach",
        torch_optimizer_runner(foreach=True, fused=False),
        dtypes=ALL_DTYPES,
        supports=EVERYTHING,
        unavailable=_torch_unavailable,
        # On the CPU the foreach kernels loop over the single-tensor ops. (In bfloat16,
        # torch's CPU foreach kernels keep some intermediates in float32.)
        same_bits_as="torch-single",
        same_bits_dtypes=("float64", "float32"),
    ),
    Backend(
        "torch-functional",
        run_torch_functional,
        dtypes=ALL_DTYPES,
        supports=EVERYTHING,
        unavailable=_torch_unavailable,
        same_bits_as="torch-single",  # what the optimizer's single-tensor path calls
        same_bits_dtypes=ALL_DTYPES,
    ),
    Backend(
        "torch-fused-numba",
        torch_optimizer_runner(fused=True),  # CPU tensors, without TRITON_INTERPRET
        dtypes=ALL_DTYPES,  # bfloat16: float32 math
        supports=EVERYTHING,
        unavailable=_torch_numba_unavailable,
    ),
    Backend(
        "torch-fused-triton",
        torch_optimizer_runner(device=lambda: triton_device() or "cpu", fused=True),
        dtypes=ALL_DTYPES,  # bfloat16: float32 math; float64: fused=True sends it to foreach
        supports=EVERYTHING,
        unavailable=_triton_unavailable,
        # The interpreter takes ~25 ms a step in float32, ~45 in bfloat16: fewer steps
        # (the missing gradient, at step 3, among them), bfloat16 every third case.
        steps=6,
        every={"float64": EVERY_THIRD, "bfloat16": EVERY_THIRD},
    ),
    Backend(
        "jax-eager",
        jax_runner(jit=False),
        dtypes=ALL_DTYPES,
        # JAX arrays have no layout; optax counts one step for the whole tree, so a
        # missing gradient goes with bias correction only where steps are per parameter.
        supports=EVERYTHING - {NON_CONTIGUOUS, STEP_COUNTS},
        unavailable=_jax_unavailable,
        state_dtypes=ALL_DTYPES,  # float32 state beside bfloat16 parameters
        # Op by op, ~5 ms a step: fewer steps (jax-jit's rows run them all), a subsample.
        steps=20,
        every={"float64": EVERY_SEVENTH, "float32": EVERY_THIRD, "bfloat16": EVERY_SEVENTH},
    ),
    Backend(
        "jax-jit",
        jax_runner(jit=True),
        dtypes=ALL_DTYPES,
        # Each configuration compiles its step (~150 ms), and a gradient of None changes
        # the step's tree, which compiles it again: jax-eager's rows have the missing
        # gradient, these don't.
        supports=EVERYTHING - {NON_CONTIGUOUS, STEP_COUNTS, MISSING_GRAD},
        unavailable=_jax_unavailable,
        state_dtypes=ALL_DTYPES,
        every=dict.fromkeys(ALL_DTYPES, EVERY_ELEVENTH),
        offset=2,  # other configurations than jax-eager's (and each flip detectable)
    ),
)

BY_NAME = {backend.name: backend for backend in BACKENDS}
