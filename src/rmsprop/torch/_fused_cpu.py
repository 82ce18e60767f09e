"""The fused CPU path for torch: `rmsprop._fused_cpu` run on the memory of CPU tensors.

Tensors the kernel cannot take as they are (non-contiguous, or of a dtype
other than float32/float64/bfloat16/float16) go through the single-tensor
path instead, so every tensor gets the same rule.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from rmsprop import _fused_cpu
from rmsprop.torch._functional import _single_tensor_rmsprop, _view_as_real

_DIRECT = (torch.float32, torch.float64)  # the kernel works on their memory
_CONVERTED = (torch.bfloat16, torch.float16)  # float32 math, chunk by chunk


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
    *,
    lr: Any,
    decay: float,
    eps: float,
    eps_in_sqrt: bool,
    centered: bool,
    momentum: float,
    nesterov: bool,
    lr_in_momentum: bool,
    bias_correction: bool,
    weight_decay: float,
    decoupled_weight_decay: bool,
    maximize: bool,
    capturable: bool,
    differentiable: bool,
) -> None:
    if not params:
        return
    if differentiable:
        raise RuntimeError("the fused CPU path does not support differentiable=True")
    reason = unsupported_reason(params)
    if reason:
        raise RuntimeError(reason)
    hyper: dict[str, Any] = dict(
        lr=float(lr),
        decay=decay,
        eps=eps,
        eps_in_sqrt=eps_in_sqrt,
        centered=centered,
        momentum=momentum,
        nesterov=nesterov,
        lr_in_momentum=lr_in_momentum,
        bias_correction=bias_correction,
        weight_decay=weight_decay,
        decoupled_weight_decay=decoupled_weight_decay,
        maximize=maximize,
    )
    jobs: list[_fused_cpu.Job] = []
    leftover: list[int] = []
    for i, param in enumerate(params):
        tensors = [
            param,
            grads[i],
            square_avgs[i],
            grad_avgs[i] if centered else None,
            momentum_buffers[i] if momentum > 0 else None,
        ]
        flat = _flat_views(tensors)
        if flat is None:
            leftover.append(i)
            continue
        state_steps[i] += 1
        c = _fused_cpu.coefficients(**hyper, step=state_steps[i].item() if bias_correction else 1)
        if flat[0] is not None and flat[0].dtype in _DIRECT:
            jobs += _fused_cpu.array_jobs([None if t is None else t.numpy() for t in flat], c)
        else:
            jobs += _fused_cpu.converted_jobs(flat, c, _copy)
    _fused_cpu.run(jobs)

    if leftover:
        _single_tensor_rmsprop(
            [params[i] for i in leftover],
            [grads[i] for i in leftover],
            [square_avgs[i] for i in leftover],
            [grad_avgs[i] for i in leftover] if centered else [],
            [momentum_buffers[i] for i in leftover] if momentum > 0 else [],
            [state_steps[i] for i in leftover],
            **hyper,
            capturable=False,
            differentiable=False,
        )


def _flat_views(tensors: list[Tensor | None]) -> list[Tensor | None] | None:
    """1-D views of the tensors' memory (complex as pairs of reals), or None if impossible."""
    present = [t for t in tensors if t is not None]
    dtype = present[0].dtype
    if any(t.dtype != dtype or not t.is_contiguous() for t in present):
        return None
    views = [None if t is None else _view_as_real(t.detach())[0].view(-1) for t in tensors]
    return views if views[0].dtype in _DIRECT + _CONVERTED else None  # type: ignore[union-attr]


def _copy(destination: Any, source: Any) -> None:
    # One side is a float32 NumPy buffer, the other a 16-bit tensor.
    if not isinstance(destination, Tensor):
        destination = torch.from_numpy(destination)
    if not isinstance(source, Tensor):
        source = torch.from_numpy(source)
    destination.copy_(source)
