"""DTensors in one process: a one-rank device mesh, and parameters sharded or replicated on it.

FSDP2 hands an optimizer DTensors whose gradients and state share their
layout; with one rank, their local shards are the whole tensors, so a test
can compare them with plain tensors holding the same values.
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Iterator
from typing import Any

import pytest
import torch


def _module() -> Any:
    """torch's DTensor module: torch.distributed.tensor, or torch.distributed._tensor before 2.5."""
    for name in ("torch.distributed.tensor", "torch.distributed._tensor"):
        module = importlib.import_module(name)
        if hasattr(module, "DTensor"):
            return module
    raise ImportError("neither torch.distributed.tensor nor torch.distributed._tensor has DTensor")


def unavailable() -> str:
    """Why DTensors can't be made here ('' when they can)."""
    if not torch.distributed.is_available():
        return "this torch build has no torch.distributed"
    try:
        _module()
    except ImportError as error:
        return f"torch's DTensor does not import: {error}"
    return ""


WHY_NOT = unavailable()
needed = pytest.mark.skipif(bool(WHY_NOT), reason=WHY_NOT or "DTensors can be made here")


@contextlib.contextmanager
def one_rank_mesh(device_type: str) -> Iterator[Any]:
    """A device mesh of this process alone (gloo for CPU tensors, NCCL for CUDA ones)."""
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh

    backend = "cuda:nccl" if device_type == "cuda" else "cpu:gloo"
    dist.init_process_group(backend, store=dist.HashStore(), rank=0, world_size=1)
    try:
        yield init_device_mesh(device_type, (1,))
    finally:
        dist.destroy_process_group()


def as_dtensor(local: torch.Tensor, mesh: Any, placement: str) -> torch.Tensor:
    """``local`` as the DTensor whose only shard it is: "shard" (dim 0), "replicate" or
    "partial" (a sum still to be taken)."""
    module = _module()
    kinds = {"shard": module.Shard(0), "replicate": module.Replicate(), "partial": module.Partial()}
    return module.DTensor.from_local(local, mesh, [kinds[placement]], run_check=False)
