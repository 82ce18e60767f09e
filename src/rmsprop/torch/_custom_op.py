"""The fused step as one custom op, ``rmsprop::fused_step``, for torch.compile.

A compiled step calls it once over every tensor, whatever their device: it
is opaque to the compiler (the kernels write through address tables, which
no tracer can see), and runs the eager fused step inside (the Triton kernel,
or the Numba one on the CPU). Importing `rmsprop.torch` registers it. (With
torch 2.4 a compiled step calls the eager fused step through a graph break.)
"""

from __future__ import annotations

import inspect
from typing import Any, get_type_hints

import torch
from torch import Tensor

from rmsprop.torch._functional import Hyper, StepTensors, check_fused, fused_by_device, release

# Its scalars are Hyper's fields (a schema takes no tuples), lr as a float or a tensor.
_MUTATED = StepTensors._fields
_RULE = ", ".join(
    f"{get_type_hints(Hyper)[name].__name__} {name}"  # float and bool: the schema's names too
    for name in Hyper._fields[1:]
)
_SCHEMA = (
    "("
    + ", ".join(f"Tensor({chr(97 + i)}!)[] {name}" for i, name in enumerate(_MUTATED))
    + f", float lr, Tensor? lr_tensor, {_RULE}, "
    "Tensor? grad_scale, Tensor? found_inf, bool stochastic_rounding) -> ()"
)


# Not inside torch.compile's CUDA graphs (mode="reduce-overhead"): their pool reclaims
# memory at checkpoints, and the step keeps device tables across calls. Graph
# partitioning runs the op eagerly between the graphs instead (one launch anyway).
# (Both the tag and custom_op's tags argument are newer than torch 2.4.)
_TAGS: dict[str, Any] = (
    {"tags": (torch.Tag.cudagraph_unsafe,)}
    if hasattr(torch.Tag, "cudagraph_unsafe")
    and "tags" in inspect.signature(torch.library.custom_op).parameters
    else {}
)


@torch.library.custom_op("rmsprop::fused_step", mutates_args=_MUTATED, schema=_SCHEMA, **_TAGS)
def _fused_step_op(
    params: list[Tensor],
    grads: list[Tensor],
    square_avgs: list[Tensor],
    grad_avgs: list[Tensor],
    momentum_buffers: list[Tensor],
    state_steps: list[Tensor],
    lr: float,
    lr_tensor: Tensor | None,
    *rest: Any,  # Hyper's other fields, then grad_scale, found_inf, stochastic_rounding
) -> None:
    *rule, grad_scale, found_inf, stochastic_rounding = rest
    hyper = Hyper(lr if lr_tensor is None else lr_tensor, *rule)
    tensors = StepTensors(params, grads, square_avgs, grad_avgs, momentum_buffers, state_steps)
    check_fused(params, stochastic_rounding)
    fused_by_device(tensors, hyper, grad_scale, found_inf, stochastic_rounding)


@_fused_step_op.register_fake  # type: ignore[misc]
def _(*args: Any) -> None:
    return None


# torch 2.4 can't functionalize an op that mutates lists of tensors: there a compiled
# step runs the eager fused step between two graphs instead (a graph break). By release
# number, so that 2.5's pre-releases (NGC's 2.5.0a0, nightlies) count as 2.5.
ONE_OP = release(torch.__version__) >= (2, 5)


def fused_step(
    tensors: StepTensors,
    hyper: Hyper,
    grad_scale: Tensor | None,
    found_inf: Tensor | None,
    stochastic_rounding: bool,
) -> None:
    """Calls the op (what a compiled step does instead of the eager fused step)."""
    lr, *rule = hyper  # (torch 2.6-2.8 can't trace a slice of a NamedTuple)
    lr_value, lr_tensor = (0.0, lr) if isinstance(lr, Tensor) else (float(lr), None)
    torch.ops.rmsprop.fused_step(
        *tensors, lr_value, lr_tensor, *rule, grad_scale, found_inf, stochastic_rounding
    )
