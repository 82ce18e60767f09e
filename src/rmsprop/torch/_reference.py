"""The reference paths: `rmsprop.Config`'s rule in torch ops, one tensor at a time or foreach.

The loop and foreach paths compute the rule with the same operations in the
same order, so they agree bitwise wherever the foreach kernels do what the
single-tensor ops do (always on CPU). For the settings `torch.optim.RMSprop`
has, the operations are PyTorch's own, in PyTorch's order. They take any
tensor (any device, dtype, layout or subclass) and are what the fused
kernels hand the tensors they cannot take.

State stored narrower than a parameter's math (8-bit codes, bfloat16 beside
float32 parameters) is stepped per parameter by `rmsprop.torch._lowmem.step_in_float`:
decoded into float32, through the single-tensor rule, and stored again.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from rmsprop.torch import _lowmem
from rmsprop.torch._step import Hyper, StepTensors, as_real_views, unscale_or_skip

__all__ = ["foreach_rmsprop", "reference_step", "single_tensor_rmsprop"]


def reference_step(
    tensors: StepTensors,
    hyper: Hyper,
    grad_scale: Tensor | None,
    found_inf: Tensor | None,
    *,
    foreach: bool,
) -> None:
    """The step of tensors a fused kernel can't take, by the foreach or single-tensor path
    (the GradScaler protocol read on the host; a device lr read on the host where the
    tensors lie elsewhere)."""
    if not unscale_or_skip(tensors.grads, grad_scale, found_inf):
        return
    lr = hyper.lr
    if isinstance(lr, Tensor) and any(p.device != lr.device for p in tensors.params):
        hyper = hyper._replace(lr=lr.item())  # the ops take a tensor on their own device only
    impl = foreach_rmsprop if foreach else single_tensor_rmsprop
    impl(tensors, hyper, capturable=isinstance(hyper.lr, Tensor), differentiable=False)


def _bias_correction(decay: float, step: Tensor, dtype: torch.dtype, capturable: bool) -> Any:
    """1 - decay^step: a Python float, or a device scalar when capturable."""
    if not capturable:
        return 1 - decay ** step.item()
    # Raise in the parameter's precision: in float32, decay itself is inexact.
    exponent = step.to(torch.float64 if dtype == torch.float64 else torch.float32)
    return 1 - torch.pow(decay, exponent)


def _step_narrow_state(
    tensors: StepTensors, hyper: Hyper, *, capturable: bool, differentiable: bool
) -> StepTensors:
    """Steps the parameters whose state is stored narrower than their math (decoded, the
    single-tensor rule, encoded); returns the others' lists."""
    narrow = _lowmem.float_step_indices(tensors, hyper)
    if not narrow:
        return tensors
    _lowmem.step_in_float(
        tensors.pick(narrow),
        hyper,
        single_tensor_rmsprop,
        capturable=capturable,
        differentiable=differentiable,
    )
    skipped = set(narrow)
    return tensors.pick([i for i in range(len(tensors.params)) if i not in skipped])


def single_tensor_rmsprop(
    tensors: StepTensors,
    hyper: Hyper,
    *,
    capturable: bool,
    differentiable: bool,
) -> None:
    tensors = _step_narrow_state(
        tensors, hyper, capturable=capturable, differentiable=differentiable
    )
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
            param, grad, square_avg = as_real_views(param, grad, square_avg)
            grad_avg, buf = as_real_views(grad_avg, buf)

        square_avg.mul_(decay).addcmul_(grad, grad, value=1 - decay)
        if grad_avg is not None:
            # lerp takes one dtype: the gradient in the state's (exact where the state is wider).
            grad_avg.lerp_(
                grad if grad.dtype == grad_avg.dtype else grad.to(grad_avg.dtype), 1 - decay
            )

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

        # A variance this step made (centered, bias-corrected) is worked on in place: a second
        # parameter-sized temporary per step would be allocated, and faulted in, for nothing.
        own = variance is not square_avg and not differentiable
        if eps_in_sqrt:
            avg = (variance.add_(eps) if own else variance.add(eps)).sqrt_()
        else:
            avg = variance.sqrt_() if own else variance.sqrt()
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


def foreach_rmsprop(
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
    # (One tensor at a time, through the single-tensor rule, which computes the same bits.)
    tensors = _step_narrow_state(tensors, hyper, capturable=capturable, differentiable=False)
    if not tensors.params:
        return
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

        params_, grads_, v, m, b = (as_real_views(*ts) for ts in (params_, grads_, v, m, b))

        torch._foreach_mul_(v, decay)
        torch._foreach_addcmul_(v, grads_, grads_, value=1 - decay)
        if centered:
            ends = [g if g.dtype == s.dtype else g.to(s.dtype) for g, s in zip(grads_, m)]
            torch._foreach_lerp_(m, ends, 1 - decay)

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

        own = centered or bias_correction  # the variance is this step's own: work in place
        if eps_in_sqrt:
            if own:
                torch._foreach_add_(variance, eps)
            avg = variance if own else list(torch._foreach_add(variance, eps))
            torch._foreach_sqrt_(avg)
        else:
            if own:
                torch._foreach_sqrt_(variance)
            avg = variance if own else list(torch._foreach_sqrt(variance))
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
