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


def unavailable() -> str:
    """Why DTensors can't be made here ('' when they can)."""
    if not torch.distributed.is_available():
        return "this torch build has no torch.distributed"
    try:
        importlib.import_module("torch.distributed.tensor")
    except ImportError as error:
        return f"torch.distributed.tensor does not import: {error}"
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
    from torch.distributed.tensor import DTensor, Partial, Replicate, Shard

    kind = {"shard": Shard(0), "replicate": Replicate(), "partial": Partial()}[placement]
    return DTensor.from_local(local, mesh, [kind], run_check=False)
