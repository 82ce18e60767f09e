"""Plans of fused steps, cached by the identity of the tensors they update.

A fused path works out once how a step's tensors reach its kernel (address
tables, and which tensors it cannot take) and keeps that plan while the step's
parameters and state are the same tensors. Gradients, which training loops
replace every step, are followed instead: a plan is reused only while every
gradient still looks exactly as the one it was built for (dtype, shape,
strides, device, no lazy conjugate or negative bit), and its tables are then
pointed at the gradients' new addresses.

The kernels trust the addresses in a plan, so everything a plan assumed about
a tensor is either part of its key or checked on every step.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Callable
from operator import attrgetter
from typing import Any, Protocol, TypeVar

import torch
from torch import Tensor

__all__ = [
    "Plan",
    "addressable",
    "cached_plan",
    "identity",
    "listed_twice",
    "real_dtype",
    "same_dense_layout",
    "signatures",
]

# Plans kept per cache: one per param group and device, so enough for layer-wise
# learning rates over a deep model; a plan holds no tensor, only small tables.
KEPT = 128
_lock = threading.Lock()  # two optimizers may step at once in two threads


def _new_lock() -> None:
    # A child forked while another thread held the lock would inherit it held, forever.
    global _lock
    _lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_new_lock)


class Plan(Protocol):
    grads: list[int]  # the gradient addresses the plan's tables hold
    signatures: tuple[list[Any], ...]  # the gradients it was built for, as `signatures`

    def point_grads(self, addresses: list[int]) -> None: ...


P = TypeVar("P", bound=Plan)


_dtype = attrgetter("dtype")


def _state(tensors: list[Tensor]) -> tuple[Any, ...]:
    return (
        *map(Tensor.data_ptr, tensors),
        *map(Tensor.numel, tensors),
        *map(_dtype, tensors),
        *map(Tensor.is_contiguous, tensors),
    )


def identity(
    params: list[Tensor],
    square_avgs: list[Tensor],
    grad_avgs: list[Tensor],
    momentum_buffers: list[Tensor],
    state_steps: list[Tensor],
) -> tuple[Any, ...]:
    """What a plan depends on: each tensor's address, size, dtype and contiguity.

    Not the address alone: a new tensor may reuse a freed one's memory, or be
    another view of it.
    """
    return (
        len(grad_avgs),
        len(momentum_buffers),
        *_state(params),
        *_state(square_avgs),
        *_state(grad_avgs),
        *_state(momentum_buffers),
        *map(Tensor.data_ptr, state_steps),
        *map(_dtype, state_steps),
    )


_LAYOUT = attrgetter("dtype", "shape", "device")


def signatures(grads: list[Tensor]) -> tuple[list[Any], ...]:
    """All a plan assumed about each gradient but its address, as columns (dtype, shape and
    device; strides; conjugate bit; negative bit): mapped C calls, no Python frame per
    gradient, since this runs on every step."""
    return (
        list(map(_LAYOUT, grads)),
        list(map(Tensor.stride, grads)),
        list(map(Tensor.is_conj, grads)),
        list(map(Tensor.is_neg, grads)),
    )


def cached_plan(
    cache: OrderedDict[tuple[Any, ...], P],
    key: tuple[Any, ...],
    grads: list[Tensor],
    build: Callable[[], P],
) -> P:
    """The cache's plan for ``key``, pointed at the gradients; ``build()`` when new or stale."""
    addresses = list(map(Tensor.data_ptr, grads))
    assumed = signatures(grads)
    with _lock:
        plan = cache.get(key)
        if plan is not None and plan.signatures == assumed:
            cache.move_to_end(key)
            if plan.grads != addresses:
                plan.point_grads(addresses)
            return plan
    plan = build()
    plan.grads, plan.signatures = addresses, assumed
    with _lock:
        cache[key] = plan
        while len(cache) > KEPT:
            cache.popitem(last=False)
    return plan


def addressable(p: Tensor, others: list[Tensor]) -> bool:
    """Whether a non-empty p and the others have memory at an address (a tensor subclass
    with ops of its own may have none: address 0, which no kernel may be handed)."""
    return not p.numel() or all(t.data_ptr() for t in (p, *others))


def listed_twice(params: list[Tensor]) -> set[int]:
    """The addresses of non-empty parameters listed more than once.

    A loop steps such a parameter twice in turn; a kernel's programs (or threads) would
    update it at once, racing.
    """
    seen: set[int] = set()
    twice: set[int] = set()
    for p in params:
        if p.numel():
            (twice if p.data_ptr() in seen else seen).add(p.data_ptr())
    return twice


def same_dense_layout(p: Tensor, others: list[Tensor]) -> bool:
    """p fills its memory without gaps or overlaps, and the others have p's shape and layout.

    Then an elementwise step may walk all of them as flat memory, in the same order.
    """
    if any(t.shape != p.shape for t in others):
        return False  # a kernel reads as many elements of each as p has
    if p.is_contiguous() and all(t.is_contiguous() for t in others):
        return True
    if any(t.stride() != p.stride() for t in others):
        return False
    expected = 1
    for size, stride in sorted(zip(p.shape, p.stride()), key=lambda pair: pair[1]):
        if size != 1:
            if stride != expected:
                return False
            expected *= size
    return True


def real_dtype(t: Tensor) -> torch.dtype:
    """The dtype of t's memory as reals (a complex tensor holds pairs of them)."""
    return torch.view_as_real(t).dtype if t.is_complex() else t.dtype
