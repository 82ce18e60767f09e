"""Tensor subclasses in a fused step: which tensors are their memory, and DTensors' shards.

The fused kernels write memory through addresses, so they may only be handed
tensors whose memory holds their values. A DTensor (FSDP2's parameters and
state) is stepped through its local shard, which the elementwise rule updates
as it would the whole.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any, cast

import torch
from torch import Tensor

from rmsprop.torch._step import StepTensors

__all__ = ["as_memory", "dtensor_class"]


# Tensor types whose memory holds their values: what the fused kernels read and write.
_PLAIN_TUPLE = (Tensor, torch.nn.Parameter)
_PLAIN_TYPES = frozenset(_PLAIN_TUPLE)


def as_memory(tensors: StepTensors) -> tuple[StepTensors, list[int], list[int]]:
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
    dtensor = dtensor_class()
    if dtensor is None or not all(isinstance(t, dtensor) for t in tensors):
        return False
    first, *rest = cast(list[Any], tensors)
    return not any(placement.is_partial() for placement in first.placements) and all(
        t.device_mesh == first.device_mesh and t.placements == first.placements for t in rest
    )


def dtensor_class() -> Any:
    """torch's DTensor class, or None while no DTensor can exist (its module isn't imported)."""
    for name in ("torch.distributed.tensor", "torch.distributed._tensor"):  # torch >= 2.5, 2.4
        dtensor = getattr(sys.modules.get(name), "DTensor", None)
        if dtensor is not None:
            return dtensor
    return None
