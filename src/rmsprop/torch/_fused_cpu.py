"""The fused CPU path for torch: `rmsprop._fused_cpu` run on the memory of CPU tensors.

Tensors the kernel cannot take as they are (non-contiguous, or of a dtype
other than float32/float64/bfloat16/float16, or complex of those) go through
the single-tensor path instead, so every tensor gets the same rule.
"""

from __future__ import annotations

import weakref
from typing import Any

import numpy as np
import torch
from torch import Tensor

from rmsprop import _fused_cpu
from rmsprop.torch._functional import Hyper, _single_tensor_rmsprop, _view_as_real

_DIRECT = (torch.float32, torch.float64)  # the kernel works on their memory
_CONVERTED = (torch.bfloat16, torch.float16)  # float32 math, chunk by chunk

# Flat views of each parameter's and its state's memory, built once: making
# them costs microseconds per tensor, which small models would feel every step.
# Keyed by id (tensors compare elementwise), dropped when the parameter dies.
_views: dict[int, tuple[tuple[Any, ...], list[Any] | None]] = {}


def unsupported_reason(params: list[Tensor]) -> str:
    """Why the fused CPU path can't run on these parameters ('' when it can)."""
    if not _fused_cpu.AVAILABLE:
        return _fused_cpu.WHY_UNAVAILABLE
    devices = sorted({p.device.type for p in params} - {"cpu"})
    if devices:
        return f"the fused CPU kernel needs CPU tensors, got {', '.join(devices)} tensors"
    return ""


def _fused_cpu_rmsprop(
    params: list[Tensor],
    grads: list[Tensor],
    square_avgs: list[Tensor],
    grad_avgs: list[Tensor],
    momentum_buffers: list[Tensor],
    state_steps: list[Tensor],
    hyper: Hyper,
) -> None:
    if not params:
        return
    if not _fused_cpu.AVAILABLE:
        raise RuntimeError(_fused_cpu.WHY_UNAVAILABLE)
    # (A tensor off the CPU fails loudly in .numpy() below; RMSprop checks devices first.)
    hyper = hyper._replace(lr=float(hyper.lr))
    centered, momentum = hyper.centered, hyper.momentum
    work: list[tuple[int, list[Any], bool]] = []  # (index, arrays, direct)
    leftover: list[int] = []
    for i, param in enumerate(params):
        m = grad_avgs[i] if centered else None
        b = momentum_buffers[i] if momentum > 0 else None
        state = _state_views(param, square_avgs[i], m, b)
        grad = grads[i]
        if state is None or grad.dtype != param.dtype or not grad.is_contiguous():
            leftover.append(i)
            continue
        p_view, v_view, m_view, b_view = state
        direct = isinstance(p_view, np.ndarray)
        g_view = _view_as_real(grad.detach())[0].view(-1)
        work.append(
            (i, [p_view, g_view.numpy() if direct else g_view, v_view, m_view, b_view], direct)
        )

    steps = [state_steps[i] for i, _, _ in work]
    if steps:
        # One call for all; a wrapped CPU scalar spares a tensor per step count.
        torch._foreach_add_(steps, torch.tensor(1.0), alpha=1.0)
    shared: dict[Any, np.ndarray] = {}  # without bias correction: one array per dtype
    tasks: list[_fused_cpu.Task] = []
    for (_, arrays, direct), step in zip(work, steps):
        kernel_dtype = arrays[0].dtype if direct else np.float32
        if hyper.bias_correction:
            c = _coefficients(hyper, step.item(), kernel_dtype)
        elif kernel_dtype in shared:
            c = shared[kernel_dtype]
        else:
            c = shared[kernel_dtype] = _coefficients(hyper, 1, kernel_dtype)
        tasks.append(_fused_cpu.task(arrays, c, None if direct else _copy))
    _fused_cpu.run(tasks)

    if leftover:
        _single_tensor_rmsprop(
            [params[i] for i in leftover],
            [grads[i] for i in leftover],
            [square_avgs[i] for i in leftover],
            [grad_avgs[i] for i in leftover] if centered else [],
            [momentum_buffers[i] for i in leftover] if momentum > 0 else [],
            [state_steps[i] for i in leftover],
            hyper,
            capturable=False,
            differentiable=False,
        )


_coefficient_arrays: dict[tuple[Any, ...], np.ndarray] = {}


def _coefficients(hyper: Hyper, step: float, dtype: Any) -> np.ndarray:
    """The kernel's coefficient array, cached: most steps repeat the last ones' settings."""
    key = (*hyper, step, dtype)
    found = _coefficient_arrays.get(key)
    if found is None:
        if len(_coefficient_arrays) > 256:  # a schedule or bias correction: keep it small
            _coefficient_arrays.clear()
        c = _fused_cpu.coefficients(hyper, step)
        found = _coefficient_arrays[key] = _fused_cpu.as_array(c, dtype)
    return found


def _state_views(param: Tensor, *state: Tensor | None) -> list[Any] | None:
    """Flat views of the parameter's and its state's memory (cached), or None if impossible.

    float32/float64 memory comes as NumPy arrays, 16-bit as 1-D tensors;
    complex tensors as pairs of reals.
    """
    key = (
        param.data_ptr(),
        param.dtype,
        param.numel(),
        *(t.data_ptr() for t in state if t is not None),
    )
    cached = _views.get(id(param))
    if cached is not None and cached[0] == key:
        return cached[1]
    tensors = [param, *state]
    present = [t for t in tensors if t is not None]
    views: list[Any] | None = None
    if all(t.dtype == param.dtype and t.is_contiguous() for t in present):
        flat = [None if t is None else _view_as_real(t.detach())[0].view(-1) for t in tensors]
        dtype = flat[0].dtype  # type: ignore[union-attr]
        if dtype in _DIRECT:
            views = [None if t is None else t.numpy() for t in flat]
        elif dtype in _CONVERTED:
            views = flat
    if cached is None:
        weakref.finalize(param, _views.pop, id(param), None)
    _views[id(param)] = (key, views)
    return views


def _copy(destination: Any, source: Any) -> None:
    # One side is a float32 NumPy buffer, the other a 16-bit tensor.
    if not isinstance(destination, Tensor):
        destination = torch.from_numpy(destination)
    if not isinstance(source, Tensor):
        source = torch.from_numpy(source)
    destination.copy_(source)
