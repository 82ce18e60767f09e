"""The RMSprop step on lists of tensors: a single-tensor loop, a foreach path, fused kernels.

The loop and foreach paths compute `rmsprop.Config`'s rule with the same
operations in the same order, so they agree bitwise wherever the foreach
kernels do what the single-tensor ops do (always on CPU). For the settings
`torch.optim.RMSprop` has, the operations are PyTorch's own, in PyTorch's
order. The fused kernels (Triton on CUDA, Numba on the CPU) compute the same
rule in one pass over memory.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Sequence
from operator import attrgetter
from typing import Any, NamedTuple, cast

import torch
from torch import Tensor

__all__ = ["rmsprop"]


class Hyper(NamedTuple):
    """One param group's rule for one step: `rmsprop.Config`'s fields, built once per step.

    All but ``initial_square_avg``, which only matters when the state is
    created. ``lr`` is a float, or a scalar tensor on the parameters' device
    when the step is capturable.
    """

    lr: Any  # float | Tensor
    decay: float
    eps: float
    eps_in_sqrt: bool
    centered: bool
    momentum: float
    nesterov: bool
    lr_in_momentum: bool
    bias_correction: bool
    weight_decay: float
    decoupled_weight_decay: bool
    maximize: bool


class StepTensors(NamedTuple):
    """One step's tensor lists: entry i of each belongs to parameter i.

    ``grad_avgs`` is empty unless the rule is centered, ``momentum_buffers``
    unless it has momentum; ``state_steps`` are the step counts.
    """

    params: list[Tensor]
    grads: list[Tensor]
    square_avgs: list[Tensor]
    grad_avgs: list[Tensor]
    momentum_buffers: list[Tensor]
    state_steps: list[Tensor]

    def pick(self, indices: Sequence[int]) -> StepTensors:
        """The lists of the parameters at ``indices`` only (an empty list stays empty)."""
        return StepTensors(*([ts[i] for i in indices] if ts else [] for ts in self))

    def written(self, unscaled: bool) -> list[Tensor]:
        """What a step writes in place: parameters, state, step counts, and the gradients
        when it unscales them (autograd's version counters must hear of it)."""
        return [t for ts in (self if unscaled else self[:1] + self[2:]) for t in ts]

    def used_by(self, hyper: Hyper) -> StepTensors:
        """These lists, with the ones ``hyper``'s rule doesn't use emptied."""
        return self._replace(
            grad_avgs=self.grad_avgs if hyper.centered else [],
            momentum_buffers=self.momentum_buffers if hyper.momentum > 0 else [],
        )


def mark_written(tensors: list[Tensor]) -> None:
    """Tells autograd a kernel wrote these tensors in place, as an in-place op would."""
    if _INCREMENT_TAKES_LISTS:
        torch.autograd.graph.increment_version(tensors)
    else:
        for t in tensors:
            torch.autograd.graph.increment_version(t)


try:  # torch < 2.5 bumps one tensor per call
    torch.autograd.graph.increment_version([])
    _INCREMENT_TAKES_LISTS = True
except (RuntimeError, TypeError):
    _INCREMENT_TAKES_LISTS = False


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
    fused Triton kernel only).
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
        _fused_rmsprop(tensors, hyper, grad_scale, found_inf, stochastic_rounding)
        return
    if stochastic_rounding:
        raise ValueError("stochastic_rounding=True needs the fused Triton kernel (fused=True)")
    if not unscale_or_skip(grads, grad_scale, found_inf):
        return
    impl = _multi_tensor_rmsprop if foreach else _single_tensor_rmsprop
    impl(tensors, hyper, capturable=capturable, differentiable=differentiable)


def fused_unsupported_reason(params: list[Tensor]) -> str:
    """Why no fused kernel can run on these parameters ('' when one can, for each device)."""
    for device_type in _device_types(params):
        reason = _unsupported_on(device_type)
        if reason:
            return reason
    return ""


def _unsupported_on(device_type: str) -> str:
    """Why the fused kernel for this device type can't run ('' when it can)."""
    if _triton_serves(device_type):
        return cast(str, _triton().unsupported_reason(device_type))
    # Imported on first use: it loads Numba, which plain torch users never need.
    from rmsprop.torch._fused_cpu import unsupported_reason

    return unsupported_reason(device_type)


def _device_types(params: list[Tensor]) -> list[str]:
    """The parameters' device types, sorted (cheaply when they share one, as they usually do)."""
    if not params:
        return []
    first = params[0]
    if torch.compiler.is_compiling():  # a form torch.compile traces
        if first.is_cuda and all(p.is_cuda for p in params):
            return ["cuda"]
    elif first.is_cuda and all(map(_IS_CUDA, params)):  # faster, eagerly: every step asks
        return ["cuda"]
    if first.is_cpu and all(p.is_cpu for p in params):
        return ["cpu"]
    return sorted({p.device.type for p in params})


_IS_CUDA = attrgetter("is_cuda")


def _triton_serves(device_type: str) -> bool:
    """Whether tensors of this device type are the Triton kernel's (else the Numba kernel's)."""
    return device_type == "cuda" or (
        device_type == "cpu" and os.environ.get("TRITON_INTERPRET") == "1"
    )


def _triton() -> Any:
    # Imported on first use: it loads triton, which CPU users never need.
    from rmsprop.torch import _triton

    return _triton


def _fused_rmsprop(
    tensors: StepTensors,
    hyper: Hyper,
    grad_scale: Tensor | None,
    found_inf: Tensor | None,
    stochastic_rounding: bool,
) -> None:
    """Runs each device type's tensors through its fused kernel (tensor subclasses that
    aren't their memory through the single-tensor path, first); a compiled step calls
    the ``rmsprop::fused_step`` op for that instead."""
    local, others, unwrapped = _as_memory(tensors)
    fused = local
    if others:
        skipped = set(others)
        fused = local.pick([i for i in range(len(local.params)) if i not in skipped])
    check_fused(fused.params, stochastic_rounding)  # before anything changes
    if others:
        _unfused_step(local.pick(others), hyper, grad_scale, found_inf, foreach=False)
    if not fused.params:
        return
    # The kernels write the DTensors' shards: their own version counters must move too.
    wrappers = tensors.used_by(hyper).pick(unwrapped) if unwrapped else None
    if torch.compiler.is_compiling():
        from rmsprop.torch import _custom_op

        if _custom_op.ONE_OP:
            _custom_op.fused_step(fused, hyper, grad_scale, found_inf, stochastic_rounding)
        else:  # torch 2.4: the eager step, between two graphs
            _between_graphs(fused, wrappers, hyper, grad_scale, found_inf, stochastic_rounding)
        return
    _fused_and_marked(fused, wrappers, hyper, grad_scale, found_inf, stochastic_rounding)


def _fused_and_marked(
    fused: StepTensors,
    wrappers: StepTensors | None,
    hyper: Hyper,
    grad_scale: Tensor | None,
    found_inf: Tensor | None,
    stochastic_rounding: bool,
) -> None:
    """The eager fused step, then the version bumps of the DTensors whose shards it wrote."""
    fused_by_device(fused, hyper, grad_scale, found_inf, stochastic_rounding)
    if wrappers is not None:
        mark_written(wrappers.written(grad_scale is not None))


_between_graphs: Any = torch.compiler.disable(_fused_and_marked)  # type: ignore[no-untyped-call, unused-ignore]


def release(version: str) -> tuple[int, int]:
    """(major, minor) of a version string ("2.5.0a0+git…" → (2, 5); (0, 0) if there is none),
    so that pre-releases count as their release."""
    found = re.match(r"(\d+)\.(\d+)", version)
    return (int(found[1]), int(found[2])) if found else (0, 0)


def check_fused(params: list[Tensor], stochastic_rounding: bool) -> None:
    """Raises unless a fused kernel can step each of these parameters' device types."""
    reason = fused_unsupported_reason(params)
    if reason:
        raise RuntimeError(reason)
    if stochastic_rounding and not all(map(_triton_serves, _device_types(params))):
        raise ValueError(
            "stochastic_rounding=True needs the fused Triton kernel, which runs on CUDA tensors"
        )


def fused_by_device(
    tensors: StepTensors,
    hyper: Hyper,
    grad_scale: Tensor | None,
    found_inf: Tensor | None,
    stochastic_rounding: bool,
) -> None:
    """Runs each device type's tensors through its fused kernel (`check_fused` first)."""
    device_types = _device_types(tensors.params)
    for device_type in device_types:
        picked = tensors
        if len(device_types) > 1:
            picked = tensors.pick(
                [i for i, p in enumerate(tensors.params) if p.device.type == device_type]
            )
        if _triton_serves(device_type):
            _triton().fused_rmsprop(picked, hyper, grad_scale, found_inf, stochastic_rounding)
        elif unscale_or_skip(picked.grads, grad_scale, found_inf):
            # Imported on first use: it loads Numba, which plain torch users never need.
            from rmsprop.torch._fused_cpu import _fused_cpu_rmsprop

            _fused_cpu_rmsprop(picked, hyper)


# Tensor types whose memory holds their values: what the fused kernels read and write.
_PLAIN_TUPLE = (Tensor, torch.nn.Parameter)
_PLAIN_TYPES = frozenset(_PLAIN_TUPLE)


def _as_memory(tensors: StepTensors) -> tuple[StepTensors, list[int], list[int]]:
    """The step's tensors as memory the fused kernels may address, the positions of
    those that aren't, and the positions of the DTensors replaced by their shards.

    A tensor subclass that dispatches its own ops (a DTensor, a quantized or
    lazily materialized tensor) need not be its memory: it may have none (a
    data pointer of 0). A DTensor whose gradient and state have its mesh and
    placements, none of them partial (FSDP2's do), and whose local shards are
    memory, is stepped through its shard, which the elementwise rule updates as
    it would the whole. Any other such parameter is left to the single-tensor
    path, whose ops the subclass implements.
    """
    if _all_plain(tensors):
        return tensors, [], []  # the usual case, checked cheaply
    local = [list(ts) for ts in tensors]
    others, unwrapped = [], []
    for i, step in enumerate(tensors.state_steps):
        own = [ts[i] for ts in tensors[:-1] if ts]  # θ, g, v and m, b where the rule has them
        if _is_memory(step) and all(_is_memory(t) for t in own):
            continue
        shards = [cast(Any, t).to_local() for t in own] if _shards_alike(own) else []
        # (A shard may be a subclass in turn: a float8 weight's, say.)
        if not (_is_memory(step) and shards and all(_is_memory(s) for s in shards)):
            others.append(i)
            continue
        for ts, shard in zip((ts for ts in local[:-1] if ts), shards):
            ts[i] = shard
        unwrapped.append(i)
    return StepTensors(*local), others, unwrapped


def _all_plain(lists: Sequence[list[Tensor]]) -> bool:
    """Whether every tensor is a plain Tensor or Parameter."""
    if torch.compiler.is_compiling():  # a form torch.compile has traced since torch 2.5
        return all(type(t) in _PLAIN_TUPLE for ts in lists for t in ts)
    return all({*map(type, ts)} <= _PLAIN_TYPES for ts in lists)  # faster, eagerly


def _is_memory(t: Tensor) -> bool:
    # Parameter and plain subclasses inherit Tensor's (disabled) dispatch hook.
    return type(t).__torch_dispatch__ is Tensor.__torch_dispatch__


def _shards_alike(tensors: list[Tensor]) -> bool:
    """Whether these are DTensors on one mesh with one layout, none partial (a pending sum)."""
    dtensor = _dtensor_class()
    if dtensor is None or not all(isinstance(t, dtensor) for t in tensors):
        return False
    first, *rest = cast(list[Any], tensors)
    return not any(placement.is_partial() for placement in first.placements) and all(
        t.device_mesh == first.device_mesh and t.placements == first.placements for t in rest
    )


def _dtensor_class() -> Any:
    """torch's DTensor class, or None while no DTensor can exist (its module isn't imported)."""
    for name in ("torch.distributed.tensor", "torch.distributed._tensor"):  # torch >= 2.5, 2.4
        dtensor = getattr(sys.modules.get(name), "DTensor", None)
        if dtensor is not None:
            return dtensor
    return None


def _unfused_step(
    tensors: StepTensors,
    hyper: Hyper,
    grad_scale: Tensor | None,
    found_inf: Tensor | None,
    *,
    foreach: bool,
) -> None:
    """The step of tensors a fused kernel can't take, by the foreach or single-tensor path
    (the GradScaler protocol read on the host)."""
    if not unscale_or_skip(tensors.grads, grad_scale, found_inf):
        return
    lr = hyper.lr
    if isinstance(lr, Tensor) and any(p.device != lr.device for p in tensors.params):
        hyper = hyper._replace(lr=lr.item())  # the ops take a tensor on their own device only
    impl = _multi_tensor_rmsprop if foreach else _single_tensor_rmsprop
    impl(tensors, hyper, capturable=isinstance(hyper.lr, Tensor), differentiable=False)


def unscale_or_skip(
    grads: list[Tensor], grad_scale: Tensor | None, found_inf: Tensor | None
) -> bool:
    """GradScaler's protocol where no kernel reads it: False to skip the step, else unscale.

    A nonzero ``found_inf`` means the step must change nothing. Otherwise the
    gradients are multiplied in place by 1/``grad_scale`` (computed as
    `torch.amp.GradScaler.unscale_` computes it, so the results are the same),
    each once, even a parameter's listed twice.
    """
    if found_inf is not None and found_inf.item():
        return False
    if grad_scale is not None and grads:
        inv_scale = grad_scale.double().reciprocal().float()
        by_device: dict[torch.device, list[Tensor]] = {}
        for g in {id(g): g for g in grads}.values():
            by_device.setdefault(g.device, []).append(g)
        for device, device_grads in by_device.items():
            torch._foreach_mul_(device_grads, inv_scale.to(device))
    return True


def _bias_correction(decay: float, step: Tensor, dtype: torch.dtype, capturable: bool) -> Any:
    """1 - decay^step: a Python float, or a device scalar when capturable."""
    if not capturable:
        return 1 - decay ** step.item()
    # Raise in the parameter's precision: in float32, decay itself is inexact.
    exponent = step.to(torch.float64 if dtype == torch.float64 else torch.float32)
    return 1 - torch.pow(decay, exponent)


def _single_tensor_rmsprop(
    tensors: StepTensors,
    hyper: Hyper,
    *,
    capturable: bool,
    differentiable: bool,
) -> None:
    (
        lr, decay, eps, eps_in_sqrt, centered, momentum, nesterov, lr_in_momentum,
        bias_correction, weight_decay, decoupled_weight_decay, maximize,
    ) = hyper  # fmt: skip
    params, grads, square_avgs, grad_avgs, momentum_buffers, state_steps = tensors
    tensor_lr = isinstance(lr, Tensor)
    for i, param in enumerate(params):
        grad = grads[i]
        step = state_steps[i]
        square_avg = square_avgs[i]
        grad_avg = grad_avgs[i] if centered else None
        buf = momentum_buffers[i] if momentum > 0 else None

        grad = grad if not maximize else -grad
        step += 1
        if weight_decay != 0:
            if decoupled_weight_decay:
                param.mul_(1 - lr * weight_decay)
            else:
                grad = grad.add(param, alpha=weight_decay)

        if torch.is_complex(param):
            param, grad, square_avg = _view_as_real(param, grad, square_avg)
            grad_avg, buf = _view_as_real(grad_avg, buf)

        square_avg.mul_(decay).addcmul_(grad, grad, value=1 - decay)
        if grad_avg is not None:
            grad_avg.lerp_(grad, 1 - decay)

        second_moment, first_moment = square_avg, grad_avg
        if bias_correction:
            correction = _bias_correction(decay, step, param.dtype, capturable)
            second_moment = square_avg / correction
            first_moment = grad_avg / correction if grad_avg is not None else None
        if first_moment is not None:
            variance = second_moment.addcmul(first_moment, first_moment, value=-1)
            variance.clamp_(min=0)  # (older DTensors have clamp_ but no clamp_min_)
        else:
            variance = second_moment

        if eps_in_sqrt:
            avg = variance.add(eps).sqrt_()
        else:
            avg = variance.sqrt()
            avg = avg.add(eps) if differentiable else avg.add_(eps)

        if buf is None:
            if tensor_lr:
                param.sub_(grad.div(avg).mul_(lr))
            else:
                param.addcdiv_(grad, avg, value=-lr)
            continue

        buf.mul_(momentum)
        if lr_in_momentum:
            # b ← μ·b + η·u ; θ ← θ - (η·u + μ·b if nesterov else b)
            if tensor_lr:
                scaled = grad.div(avg).mul_(lr)
                buf.add_(scaled)
                param.sub_(scaled.add_(buf, alpha=momentum) if nesterov else buf)
            else:
                buf.addcdiv_(grad, avg, value=lr)
                if nesterov:
                    param.sub_(torch.addcdiv(buf * momentum, grad, avg, value=lr))
                else:
                    param.sub_(buf)
        else:
            # b ← μ·b + u ; θ ← θ - η·(u + μ·b if nesterov else b)
            buf.addcdiv_(grad, avg)
            direction = torch.addcdiv(buf * momentum, grad, avg) if nesterov else buf
            if tensor_lr:
                param.sub_(direction * lr)
            else:
                param.add_(direction, alpha=-lr)


def _multi_tensor_rmsprop(
    tensors: StepTensors,
    hyper: Hyper,
    *,
    capturable: bool,
    differentiable: bool,
) -> None:
    (
        lr, decay, eps, eps_in_sqrt, centered, momentum, nesterov, lr_in_momentum,
        bias_correction, weight_decay, decoupled_weight_decay, maximize,
    ) = hyper  # fmt: skip
    if not tensors.params:
        return
    if differentiable:
        raise RuntimeError("foreach=True does not support differentiable=True")
    tensor_lr = isinstance(lr, Tensor)
    groups = torch.optim.Optimizer._group_tensors_by_device_and_dtype(list(tensors))  # type: ignore[arg-type]
    for (group_params, group_grads, group_v, group_m, group_b, group_steps), _ in groups.values():
        params_: list[Any] = list(group_params)
        grads_: list[Any] = list(group_grads)
        v: list[Any] = list(group_v)
        m: list[Any] = list(group_m) if centered else []
        b: list[Any] = list(group_b) if momentum > 0 else []
        steps: list[Any] = list(group_steps)

        if maximize:
            grads_ = list(torch._foreach_neg(grads_))
        if steps[0].is_cpu:
            # One wrapped scalar instead of one per tensor (PyTorch does the same).
            torch._foreach_add_(steps, torch.tensor(1.0, device="cpu"), alpha=1.0)
        else:
            torch._foreach_add_(steps, 1)
        if weight_decay != 0:
            if decoupled_weight_decay:
                torch._foreach_mul_(params_, 1 - lr * weight_decay)
            elif maximize:  # the negated gradients are ours to overwrite
                torch._foreach_add_(grads_, params_, alpha=weight_decay)
            else:
                grads_ = list(torch._foreach_add(grads_, params_, alpha=weight_decay))

        params_, grads_, v, m, b = (_view_as_real(*ts) for ts in (params_, grads_, v, m, b))

        torch._foreach_mul_(v, decay)
        torch._foreach_addcmul_(v, grads_, grads_, value=1 - decay)
        if centered:
            torch._foreach_lerp_(m, grads_, 1 - decay)

        second_moment, first_moment = v, m
        if bias_correction:
            corrections = [
                _bias_correction(decay, s, p.dtype, capturable) for s, p in zip(steps, params_)
            ]
            second_moment = list(torch._foreach_div(v, corrections))
            if centered:
                first_moment = list(torch._foreach_div(m, corrections))
        if centered:
            variance = list(
                torch._foreach_addcmul(second_moment, first_moment, first_moment, value=-1)
            )
            torch._foreach_clamp_min_(variance, 0)
        else:
            variance = second_moment

        if eps_in_sqrt:
            avg = list(torch._foreach_add(variance, eps))
            torch._foreach_sqrt_(avg)
        else:
            avg = list(torch._foreach_sqrt(variance))
            torch._foreach_add_(avg, eps)

        if not b:
            if tensor_lr:
                update = list(torch._foreach_div(grads_, avg))
                torch._foreach_mul_(update, lr)
                torch._foreach_sub_(params_, update)
            else:
                torch._foreach_addcdiv_(params_, grads_, avg, value=-lr)
            continue

        torch._foreach_mul_(b, momentum)
        if lr_in_momentum:
            if tensor_lr:
                scaled = list(torch._foreach_div(grads_, avg))
                torch._foreach_mul_(scaled, lr)
                torch._foreach_add_(b, scaled)
                if nesterov:
                    torch._foreach_add_(scaled, b, alpha=momentum)
                torch._foreach_sub_(params_, scaled if nesterov else b)
            else:
                torch._foreach_addcdiv_(b, grads_, avg, value=lr)
                if nesterov:
                    direction = list(torch._foreach_mul(b, momentum))
                    torch._foreach_addcdiv_(direction, grads_, avg, value=lr)
                    torch._foreach_sub_(params_, direction)
                else:
                    torch._foreach_sub_(params_, b)
        else:
            torch._foreach_addcdiv_(b, grads_, avg)
            if nesterov:
                direction = list(torch._foreach_mul(b, momentum))
                torch._foreach_addcdiv_(direction, grads_, avg)
            else:
                direction = b
            if tensor_lr:
                torch._foreach_sub_(params_, torch._foreach_mul(direction, lr))
            else:
                torch._foreach_add_(params_, direction, alpha=-lr)


def _view_as_real(*tensors: Any) -> Any:
    """Complex tensors as (..., 2) real views, others (and None) unchanged."""
    return [torch.view_as_real(t) if t is not None and torch.is_complex(t) else t for t in tensors]
