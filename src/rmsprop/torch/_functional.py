"""The RMSprop step on lists of tensors, dispatched: the reference paths or the fused kernels.

`rmsprop` sends a step to the single-tensor loop or the foreach path
(`rmsprop.torch._reference`), or to the fused kernels' registry
(`rmsprop.torch._fused`), which steps each device's tensors with its kernel
(Triton on CUDA, Numba on the CPU) in one pass over memory. Tensor
subclasses are resolved first (`rmsprop.torch._shards`): a DTensor is stepped
through its shard, others through the single-tensor path.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from rmsprop.torch import _fused
from rmsprop.torch._fused.settings import LaunchSettings
from rmsprop.torch._reference import foreach_rmsprop, reference_step, single_tensor_rmsprop
from rmsprop.torch._shards import as_memory
from rmsprop.torch._step import Hyper, StepTensors, mark_written, unscale_or_skip

__all__ = ["rmsprop"]


def rmsprop(
    params: list[Tensor],
    grads: list[Tensor],
    square_avgs: list[Tensor],
    grad_avgs: list[Tensor],
    momentum_buffers: list[Tensor],
    state_steps: list[Tensor],
    *,
    foreach: bool,
    fused: bool = False,
    capturable: bool = False,
    differentiable: bool = False,
    grad_scale: Tensor | None = None,
    found_inf: Tensor | None = None,
    stochastic_rounding: bool = False,
    launch: LaunchSettings | None = None,
    lr: float | Tensor,
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
) -> None:
    r"""Functional RMSprop: updates ``params`` and the state lists in place.

    ``grad_avgs`` is empty unless ``centered``, ``momentum_buffers`` unless
    ``momentum > 0``. The hyperparameters are `rmsprop.Config`'s fields; see
    :class:`rmsprop.torch.RMSprop` for the rule. ``fused`` runs the fused
    kernel for the tensors' device (Triton on CUDA, and on CPU tensors when
    ``TRITON_INTERPRET=1``; Numba on the CPU otherwise), ``foreach`` the
    multi-tensor path, neither the single-tensor loop.

    ``grad_scale`` and ``found_inf`` are `torch.amp.GradScaler`'s: the
    gradients are divided by ``grad_scale``, in place, and when ``found_inf``
    is nonzero nothing changes (the fused Triton kernel does both on the
    device; the other paths read ``found_inf`` on the host).
    ``stochastic_rounding`` rounds bfloat16 parameters stochastically (the
    fused Triton kernel only). ``launch`` sets the Triton kernel's elements and
    warps per program (`rmsprop.torch.LaunchSettings`; ``None``: its default).
    """
    if isinstance(lr, Tensor) and not capturable and not fused:
        # Reading a CPU scalar once per step is cheap; a device-resident lr is
        # only kept on the device where the caller asked for capturable steps
        # (the fused kernels take it as it is: the Triton kernel reads it there).
        lr = lr.item()
    hyper = Hyper(
        lr, decay, eps, eps_in_sqrt, centered, momentum, nesterov, lr_in_momentum,
        bias_correction, weight_decay, decoupled_weight_decay, maximize,
    )  # fmt: skip
    tensors = StepTensors(params, grads, square_avgs, grad_avgs, momentum_buffers, state_steps)
    if fused:
        if differentiable:
            raise RuntimeError("the fused kernels do not support differentiable=True")
        _fused_rmsprop(tensors, hyper, grad_scale, found_inf, stochastic_rounding, launch)
        return
    if stochastic_rounding:
        raise ValueError("stochastic_rounding=True needs the fused Triton kernel (fused=True)")
    if not unscale_or_skip(grads, grad_scale, found_inf):
        return
    impl = foreach_rmsprop if foreach else single_tensor_rmsprop
    impl(tensors, hyper, capturable=capturable, differentiable=differentiable)


def _fused_rmsprop(
    tensors: StepTensors,
    hyper: Hyper,
    grad_scale: Tensor | None,
    found_inf: Tensor | None,
    stochastic_rounding: bool,
    launch: LaunchSettings | None,
) -> None:
    """Runs each device type's tensors through its fused kernel (tensor subclasses that
    aren't their memory through the single-tensor path, first); a compiled step calls
    the ``rmsprop::fused_step`` op for that instead."""
    local, others, unwrapped = as_memory(tensors)
    fused = local
    if others:
        skipped = set(others)
        fused = local.pick([i for i in range(len(local.params)) if i not in skipped])
    _fused.check_fused(fused.params, stochastic_rounding)  # before anything changes
    if others:
        reference_step(local.pick(others), hyper, grad_scale, found_inf, foreach=False)
    if not fused.params:
        return
    # The kernels write the DTensors' shards: their own version counters must move too.
    wrappers = tensors.used_by(hyper).pick(unwrapped) if unwrapped else None
    if torch.compiler.is_compiling():
        if _fused.ONE_OP:
            _fused.call_op(fused, hyper, grad_scale, found_inf, stochastic_rounding)
        else:  # torch 2.4: the eager step, between two graphs
            _between_graphs(
                fused, wrappers, hyper, grad_scale, found_inf, stochastic_rounding, launch
            )
        return
    _fused_and_marked(fused, wrappers, hyper, grad_scale, found_inf, stochastic_rounding, launch)


def _fused_and_marked(
    fused: StepTensors,
    wrappers: StepTensors | None,
    hyper: Hyper,
    grad_scale: Tensor | None,
    found_inf: Tensor | None,
    stochastic_rounding: bool,
    launch: LaunchSettings | None,
) -> None:
    """The eager fused step, then the version bumps of the DTensors whose shards it wrote."""
    _fused.fused_step(fused, hyper, grad_scale, found_inf, stochastic_rounding, launch)
    if wrappers is not None:
        mark_written(wrappers.written(grad_scale is not None))


def _between_graphs(*args: Any) -> None:
    """The eager fused step behind a graph break (torch 2.4, whose compile can't take the
    op). Made on first use: `torch.compiler.disable` imports torch._dynamo, a second's
    import that every process would otherwise pay, compiling or not."""
    global _disabled
    if _disabled is None:
        _disabled = torch.compiler.disable(_fused_and_marked)  # type: ignore[no-untyped-call, unused-ignore]
    _disabled(*args)


_disabled: Any = None
