"""Plans of fused steps, cached by the identity of the tensors they update.

A fused path works out once how a step's tensors reach its kernel (an address
table, which tensors it cannot take) and keeps that plan while the step's
parameters and state are the same tensors; gradients, which training loops
replace every step, are followed instead.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from operator import attrgetter
from typing import Any, Protocol, TypeVar

from torch import Tensor

__all__ = ["Plan", "cached_plan", "identity"]

_dtype = attrgetter("dtype")
KEPT = 16  # plans kept per cache: a few optimizers, param groups and devices


class Plan(Protocol):
    grads: list[int]  # the gradient addresses the plan's tables hold

    def follow_grads(
        self, params: list[Tensor], grads: list[Tensor], addresses: list[int]
    ) -> bool: ...


P = TypeVar("P", bound=Plan)


def identity(
    params: list[Tensor],
    square_avgs: list[Tensor],
    grad_avgs: list[Tensor],
    momentum_buffers: list[Tensor],
    state_steps: list[Tensor],
) -> tuple[Any, ...]:
    """What a plan depends on: the tensors' addresses, and their sizes, dtypes and layouts.

    Sizes, dtypes and layouts too, because a new tensor may reuse a freed one's address.
    """
    return (
        len(grad_avgs),
        len(momentum_buffers),
        *map(Tensor.numel, params),
        *map(_dtype, params),
        *map(_dtype, square_avgs),
        *map(Tensor.is_contiguous, params),
        *map(Tensor.data_ptr, params),
        *map(Tensor.data_ptr, square_avgs),
        *map(Tensor.data_ptr, grad_avgs),
        *map(Tensor.data_ptr, momentum_buffers),
        *map(Tensor.data_ptr, state_steps),
    )


def cached_plan(
    cache: OrderedDict[tuple[Any, ...], P],
    key: tuple[Any, ...],
    params: list[Tensor],
    grads: list[Tensor],
    build: Callable[[], P],
) -> P:
    """The cache's plan for ``key``, following moved gradients; ``build()`` when new or stale."""
    addresses = list(map(Tensor.data_ptr, grads))
    plan = cache.get(key)
    if plan is not None and (
        plan.grads == addresses or plan.follow_grads(params, grads, addresses)
    ):
        cache.move_to_end(key)
        return plan
    plan = cache[key] = build()
    while len(cache) > KEPT:
        cache.popitem(last=False)
    return plan
