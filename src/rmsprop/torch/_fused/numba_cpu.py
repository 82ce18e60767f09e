"""The Numba kernel's launcher for torch: `rmsprop.kernels.numba_cpu` on the memory of CPU tensors.

float32 and float64 tensors (complex ones as pairs of reals; contiguous or
otherwise dense, laid out as their gradient and state) go through one
address `Table` per dtype, cached with a plan of the step, so a step costs a
few microseconds of host work however many tensors there are; bfloat16 and
float16 tensors (contiguous ones) are converted to float32 chunk by chunk.
float32 and float64 tensors whose state is 8-bit (`rmsprop.torch._lowmem`'s
codes and block scales, contiguous) go through a `QuantizedTable` per dtype,
which decodes, steps and encodes each block of 256 in one pass.
Tensors the kernel cannot take as they are (overlapping or gapped layouts, a
gradient or state laid out otherwise or of another dtype, lazily conjugated or
negated views; 8-bit state of 16-bit parameters) go through the single-tensor
path instead (`rmsprop.torch._lowmem.step_in_float` where the state is stored
narrower than the math), so every tensor gets the same rule.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import numpy as np
import torch
from torch import Tensor

from rmsprop import _lowering
from rmsprop import quantization as q
from rmsprop.kernels import numba_cpu as kernel
from rmsprop.torch import _lowmem
from rmsprop.torch._fused.plans import (
    addressable,
    cached_plan,
    identity,
    listed_twice,
    real_dtype,
    same_dense_layout,
)
from rmsprop.torch._reference import single_tensor_rmsprop
from rmsprop.torch._step import Hyper, StepTensors, as_real_views, mark_written

__all__ = [
    "counted_steps",
    "fused_rmsprop",
    "plan_to_keep",
    "prepare",
    "run",
    "takes_stored_format",
    "unsupported_reason",
]

# Real dtypes whose memory the kernel updates directly, and its dtype for them.
_DIRECT = {torch.float32: np.float32, torch.float64: np.float64}
_CONVERTED = (torch.bfloat16, torch.float16)  # float32 math, chunk by chunk
_ONE = torch.tensor(1.0)  # what every step count grows by: one wrapped scalar for all
_MAPS = q.SIGNED_MAP  # the quantized tables': m's and b's decoding (v's is computed)
assert kernel.QUANTIZED_BLOCK == q.BLOCK


def unsupported_reason(device_type: str) -> str:
    """Why the fused CPU kernel can't run on tensors of this device type ('' when it can)."""
    if not kernel.AVAILABLE:
        return kernel.WHY_UNAVAILABLE
    if device_type != "cpu":
        return (
            f"the fused CPU kernel needs CPU tensors, got {device_type} tensors "
            "(and the Triton kernel CUDA tensors)"
        )
    return ""


def prepare(
    params: list[Tensor], centered: bool, momentum: bool, state_formats: tuple[str, ...] = ()
) -> None:
    """Starts loading the kernel variants these parameters' steps take, in the background: a
    new worker's first step then finds them loaded, or waits only for the rest.
    ``state_formats``: the low-memory formats (``"8bit"``, ``"bfloat16"``) their state may
    take beside float state."""
    dtypes = {_DIRECT[d] for d in map(real_dtype, params) if d in _DIRECT}
    variants: list[tuple[Any, ...]] = [(dtype, centered, momentum) for dtype in dtypes]
    for state in state_formats:
        taken = dtypes if state == "8bit" else dtypes & {np.float32}
        variants += [(dtype, centered, momentum, state) for dtype in taken]
    kernel.warm_up_in_background(variants)


def fused_rmsprop(tensors: StepTensors, hyper: Hyper) -> None:
    """The fused step on CPU tensors: updates everything in place (the GradScaler protocol
    already applied by the caller)."""
    if not tensors.params:
        return
    if not kernel.AVAILABLE:
        raise RuntimeError(kernel.WHY_UNAVAILABLE)
    tensors = tensors.used_by(hyper)
    params, grads, square_avgs, m, b, state_steps = tensors
    key = identity(params, square_avgs, m, b, state_steps)
    plan = cached_plan(_plans, key, grads, lambda: _build_plan(tensors))
    if plan.quantized and not plan.scales_current(tensors):  # same codes, new scales
        _plans.pop(key, None)
        plan = cached_plan(_plans, key, grads, lambda: _build_plan(tensors))
    run(plan, tensors, hyper, scales_checked=True)
    # The kernel writes behind autograd's back: tell it, as an in-place op would
    # (16-bit tensors are written back by copy_, which does).
    mark_written(plan.written(params))


def run(
    plan: _Plan,
    tensors: StepTensors,
    hyper: Hyper,
    counted: list[Tensor] | None = None,
    *,
    scales_checked: bool = False,
) -> None:
    """Steps ``tensors`` (the lists ``hyper`` uses) by ``plan``, its gradient rows current;
    the caller marks what the tables wrote. ``counted``: the step counts the plan advances
    (`counted_steps`), if the caller kept them; ``scales_checked``: the caller found the
    plan's 8-bit scales current (`_Plan.scales_current`) this step."""
    lr = hyper.lr
    if not isinstance(lr, float):
        hyper = hyper._replace(lr=float(lr))
    # (A bad RMSPROP_NUM_THREADS fails here, before any write.)
    threads = kernel.num_threads(limit=torch.get_num_threads())
    state_steps = tensors.state_steps
    if not scales_checked and plan.quantized and not plan.scales_current(tensors):
        raise RuntimeError(  # (first: nothing written yet)
            "8-bit state's block scales were replaced since this step was planned: replace "
            "them through opt.state[p][key] = ..., which the optimizer follows"
        )
    if plan.leftover:  # first: if it raises, the kernel's tensors are still untouched
        _step_leftover(tensors.pick(plan.leftover), hyper)
    if counted is None:
        counted = counted_steps(plan, tensors)
    if counted:
        torch._foreach_add_(counted, _ONE, alpha=1.0)
    for seeded, indices in plan.seeded:  # the step counts after the update: the seeds
        seeded.steps[:] = torch.stack([state_steps[i] for i in indices]).numpy()
    if hyper.bias_correction or plan.rule != hyper:
        c = _lowering.coefficients(hyper, 1)
        for table, indices in plan.tables:
            bias = None
            if hyper.bias_correction:
                bias = (_lowering.bias(hyper.decay, state_steps[i].item()) for i in indices)
            table.set_coefficients(c, bias)
        plan.rule = None if hyper.bias_correction else hyper
    tasks = [_converted_task(tensors, i, hyper) for i in plan.converted]
    kernel.run(tasks, plan.kernel_tables, threads)


def plan_to_keep(tensors: StepTensors) -> _Plan | None:
    """The plan a step of these tensors (the lists its rule uses) just took, for a caller that
    will step the same tensors again with `run` (None: it has tensors the kernel does not
    take, which the single-tensor path steps)."""
    params, _, square_avgs, m, b, state_steps = tensors
    plan = _plans.get(identity(params, square_avgs, m, b, state_steps))
    return None if plan is None or plan.leftover else plan


def counted_steps(plan: _Plan, tensors: StepTensors) -> list[Tensor]:
    """The step counts ``plan`` advances (the kernel's tensors', not the leftovers')."""
    return [tensors.state_steps[i] for i in plan.counted]


def _step_leftover(tensors: StepTensors, hyper: Hyper) -> None:
    """The single-tensor path: through `_lowmem.step_in_float` where state is stored
    narrower than the math (8-bit codes the tables do not take), else the rule itself."""
    narrow = _lowmem.float_step_indices(tensors, hyper)
    if narrow:
        rest = [i for i in range(len(tensors.params)) if i not in set(narrow)]
        _lowmem.step_in_float(
            tensors.pick(narrow),
            hyper,
            single_tensor_rmsprop,
            capturable=False,
            differentiable=False,
        )
        tensors = tensors.pick(rest)
    if tensors.params:
        single_tensor_rmsprop(tensors, hyper, capturable=False, differentiable=False)


class _Plan:
    """How a step's tensors reach the kernel, kept while they are the same tensors.

    ``tables`` pairs each address table with the step-list positions of its
    tensors (``quantized``: the tables of 8-bit state among them, with the
    block scales their addresses point at, checked on every step; ``seeded``: those and
    the tables of bfloat16 state, which read the step counts); ``converted``
    are the 16-bit tensors, ``leftover`` those the single-tensor path takes.
    `rmsprop.torch._plans.cached_plan` keeps ``grads`` and ``signatures``: the gradients
    the tables point at.
    """

    def __init__(
        self,
        tables: list[tuple[kernel.Table, list[int]]],
        converted: list[int],
        leftover: list[int],
        quantized: list[tuple[kernel.QuantizedTable, list[int]]] | None = None,
        scales: list[Tensor] | None = None,
        bfloat16: list[tuple[kernel.Bfloat16StateTable, list[int]]] | None = None,
    ) -> None:
        self.quantized = quantized or []
        self.scales = scales or []
        self.scale_addresses = [t.data_ptr() for t in self.scales]
        # The tables whose random numbers are seeded by each tensor's step count.
        self.seeded: list[tuple[Any, list[int]]] = [*self.quantized, *(bfloat16 or [])]
        tables = [*tables, *self.seeded]
        self.tables = tables
        self.converted = converted
        self.leftover = leftover
        self.counted = sorted([i for _, indices in tables for i in indices] + converted)
        self.kernel_tables = [table for table, _ in tables]
        self.grads: list[int] = []
        self.signatures: tuple[list[Any], ...] = ()
        self.rule: Hyper | None = None  # the rule the tables' coefficients hold

    def point_grads(self, addresses: list[int]) -> None:
        for table, indices in self.tables:
            table.addresses[kernel.GRAD] = [addresses[i] for i in indices]
        self.grads = addresses

    def scales_current(self, tensors: StepTensors) -> bool:
        """Whether the quantized tables' scales are still each buffer's (the same tensors, at
        the same addresses): the kernel writes through them."""
        now = [
            scales
            for _, indices in self.quantized
            for listed in _quantized_lists(tensors)
            for scales in _scales_of(listed, indices)
        ]
        return (
            len(now) == len(self.scales)
            and all(a is b for a, b in zip(now, self.scales))
            and [t.data_ptr() for t in now] == self.scale_addresses
        )

    def written(self, params: list[Tensor]) -> list[Tensor]:
        """The parameters the tables update (see `StepTensors.written`)."""
        return [params[i] for _, indices in self.tables for i in indices]


# Plans keyed by the identity of the parameters and their state.
_plans: OrderedDict[tuple[Any, ...], _Plan] = OrderedDict()


def _build_plan(tensors: StepTensors) -> _Plan:
    params, grads, square_avgs, grad_avgs, momentum_buffers, _ = tensors
    named = {"square_avgs": square_avgs, "grad_avgs": grad_avgs}
    named["momentum_buffers"] = momentum_buffers
    for name, listed in named.items():
        for i, t in enumerate(listed):
            # The kernel would write past its end (state of another dtype, 8-bit codes among
            # them, is the single-tensor path's, below).
            if t.shape != params[i].shape and t.dtype == params[i].dtype:
                raise ValueError(
                    f"{name}[{i}] has shape {tuple(t.shape)}, "
                    f"its parameter {tuple(params[i].shape)}"
                )
    repeated = listed_twice(params)  # for the loop, which steps them twice in turn
    by_dtype: dict[Any, list[int]] = {}
    quantized_by_dtype: dict[Any, list[int]] = {}
    stochastic_bfloat16: list[int] = []
    nearest_bfloat16: list[int] = []
    converted: list[int] = []
    leftover: list[int] = []
    for i, p in enumerate(params):
        state = [square_avgs[i], *(ts[i] for ts in (grad_avgs, momentum_buffers) if ts)]
        g = grads[i]
        if state[0].dtype == torch.uint8:
            if p.data_ptr() not in repeated and takes_stored_format(p, g, state):
                quantized_by_dtype.setdefault(_DIRECT[real_dtype(p)], []).append(i)
            else:
                leftover.append(i)
            continue
        if p.dtype == torch.float32 and state[0].dtype == torch.bfloat16:
            if p.data_ptr() not in repeated and _takes_bfloat16_state(p, g, state):
                stochastic = _lowmem.format_of(state[0]) is not None
                (stochastic_bfloat16 if stochastic else nearest_bfloat16).append(i)
            else:
                leftover.append(i)
            continue
        fits = (
            p.data_ptr() not in repeated
            and addressable(p, [g, *state])
            and all(t.dtype == p.dtype and t.is_cpu for t in (p, g, *state))
            # Lazily conjugated or negated: the memory holds other values than the tensor.
            and not (p.is_conj() or p.is_neg() or g.is_conj() or g.is_neg())
            and same_dense_layout(p, [g, *state])
        )
        dtype = real_dtype(p) if fits else None
        if fits and dtype in _DIRECT:
            by_dtype.setdefault(_DIRECT[dtype], []).append(i)
        elif fits and dtype in _CONVERTED and all(t.is_contiguous() for t in (p, g, *state)):
            converted.append(i)  # (chunks are cut from flat views, which need contiguity)
        else:
            leftover.append(i)
    tables = []
    for dtype, indices in by_dtype.items():
        numels = [params[i].numel() * (2 if params[i].is_complex() else 1) for i in indices]
        table = kernel.Table(dtype, numels, bool(grad_avgs), bool(momentum_buffers))
        rows = [params, grads, square_avgs, grad_avgs, momentum_buffers]
        for row, listed in enumerate(rows):
            if listed:
                table.addresses[row] = [listed[i].data_ptr() for i in indices]
        tables.append((table, indices))
    quantized: list[tuple[kernel.QuantizedTable, list[int]]] = []
    scales: list[Tensor] = []
    for dtype, indices in quantized_by_dtype.items():
        numels = [_real_numel(params[i]) for i in indices]
        quantized_table = kernel.QuantizedTable(
            dtype, numels, _MAPS, bool(grad_avgs), bool(momentum_buffers)
        )
        quantized_table.addresses[kernel.PARAM] = [params[i].data_ptr() for i in indices]
        quantized_table.addresses[kernel.GRAD] = [grads[i].data_ptr() for i in indices]
        for code_row, scale_row, buffers in _QUANTIZED_ROWS:
            state = named[buffers]
            if state:
                quantized_table.addresses[code_row] = [state[i].data_ptr() for i in indices]
                found = _scales_of(state, indices)
                quantized_table.addresses[scale_row] = [t.data_ptr() for t in found]
        scales += [t for listed in _quantized_lists(tensors) for t in _scales_of(listed, indices)]
        quantized.append((quantized_table, indices))
    bfloat16 = []
    for stochastic, indices in ((True, stochastic_bfloat16), (False, nearest_bfloat16)):
        if indices:
            numels = [params[i].numel() for i in indices]
            bfloat16_table = kernel.Bfloat16StateTable(
                numels, stochastic, bool(grad_avgs), bool(momentum_buffers)
            )
            for row, listed in enumerate([params, grads, square_avgs, grad_avgs, momentum_buffers]):
                if listed:
                    bfloat16_table.addresses[row] = [listed[i].data_ptr() for i in indices]
            bfloat16.append((bfloat16_table, indices))
    return _Plan(tables, converted, leftover, quantized, scales, bfloat16)


# Each buffer's rows in a quantized table: its codes, its scales.
_QUANTIZED_ROWS = (
    (kernel.SQUARE_AVG, kernel.SQUARE_AVG_SCALES, "square_avgs"),
    (kernel.GRAD_AVG, kernel.GRAD_AVG_SCALES, "grad_avgs"),
    (kernel.BUFFER, kernel.BUFFER_SCALES, "momentum_buffers"),
)


def _real_numel(p: Tensor) -> int:
    return p.numel() * (2 if p.is_complex() else 1)


def _quantized_lists(tensors: StepTensors) -> list[list[Tensor]]:
    return [ts for ts in (tensors.square_avgs, tensors.grad_avgs, tensors.momentum_buffers) if ts]


def _scales_of(listed: list[Tensor], indices: list[int]) -> list[Tensor]:
    found = [_lowmem.format_of(listed[i]) for i in indices]
    return [f.scales for f in found if f is not None and f.scales is not None]


def _takes_bfloat16_state(p: Tensor, g: Tensor, state: list[Tensor]) -> bool:
    """Whether a `kernel.Bfloat16StateTable` takes a float32 parameter with this gradient and
    bfloat16 state: all contiguous CPU tensors of one shape, none lazily negated, every
    buffer rounded the same way (stochastically or to nearest)."""
    if g.dtype != torch.float32 or not all(t.dtype == torch.bfloat16 for t in state):
        return False
    tensors = [p, g, *state]
    if not all(t.is_cpu and t.is_contiguous() and t.shape == p.shape for t in tensors):
        return False
    if p.is_neg() or g.is_neg() or any(t.is_neg() for t in state):
        return False
    return len({_lowmem.format_of(t) is not None for t in state}) == 1


def takes_stored_format(p: Tensor, g: Tensor, state: list[Tensor]) -> bool:
    """Whether the kernel takes a parameter with this gradient and low-memory state (the
    lists its rule uses): stochastically rounded bfloat16 state of a float32 parameter
    (`kernel.Bfloat16StateTable`), or 8-bit state (`kernel.QuantizedTable`) of a contiguous
    float32 or float64 (complex64, complex128) CPU parameter and gradient, each buffer
    contiguous uint8 codes with their block scales recorded (`_lowmem.keep_format`),
    contiguous float32 on the CPU."""
    if p.dtype == torch.float32 and state[0].dtype == torch.bfloat16:
        return _takes_bfloat16_state(p, g, state)
    if real_dtype(p) not in _DIRECT or g.dtype != p.dtype:
        return False
    if not (p.is_cpu and g.is_cpu and p.is_contiguous() and g.is_contiguous()):
        return False
    if p.is_conj() or p.is_neg() or g.is_conj() or g.is_neg() or g.shape != p.shape:
        return False
    numel = _real_numel(p)
    blocks = -(-numel // q.BLOCK)
    for codes in state:
        stored = _lowmem.format_of(codes)
        if stored is None or stored.scales is None:
            return False
        scales = stored.scales
        if not (
            codes.dtype == torch.uint8
            and codes.is_cpu
            and codes.is_contiguous()
            and codes.numel() == numel
            and scales.dtype == torch.float32
            and scales.is_cpu
            and scales.is_contiguous()
            and scales.numel() == blocks
        ):
            return False
    return True


def _converted_task(tensors: StepTensors, i: int, hyper: Hyper) -> kernel.Task:
    """A 16-bit tensor's step: flat views of its memory, float32 coefficients."""
    *lists, state_steps = tensors  # θ, g, v, then m and b where the rule has them
    flat = [as_real_views(ts[i].detach())[0].view(-1) if ts else None for ts in lists]
    step = state_steps[i].item() if hyper.bias_correction else 1
    return kernel.task(flat, _coefficients(hyper, step, np.float32), _copy)


_coefficient_arrays: dict[tuple[Any, ...], np.ndarray] = {}


def _coefficients(hyper: Hyper, step: float, dtype: Any) -> np.ndarray:
    """The kernel's coefficient array, cached: most steps repeat the last ones' settings."""
    key = (*hyper, step, dtype)
    found = _coefficient_arrays.get(key)
    if found is None:
        if len(_coefficient_arrays) > 256:  # a schedule or bias correction: keep it small
            _coefficient_arrays.clear()
        c = _lowering.coefficients(hyper, step)
        found = _coefficient_arrays[key] = kernel.as_array(c, dtype)
    return found


def _copy(destination: Any, source: Any) -> None:
    # One side is a float32 NumPy buffer, the other a 16-bit tensor.
    if not isinstance(destination, Tensor):
        destination = torch.from_numpy(destination)
    if not isinstance(source, Tensor):
        source = torch.from_numpy(source)
    destination.copy_(source)
