"""The fused kernels' registry: which kernel serves a device, whether it can run, the op.

Every question of the form "which path steps these tensors, and if not the
fused one, why" is answered here, and only here: by the optimizer when it
chooses a path, by ``rmsprop info``, by ``rmsprop bench`` and the benchmark
scripts. Two kernels are registered:

- ``triton``: the Triton kernel (`rmsprop.kernels.triton`, launched by
  `rmsprop.torch._fused.triton`) serves CUDA tensors, and CPU tensors when
  Triton's interpreter is on (``TRITON_INTERPRET=1``, for tests);
- ``numba``: the Numba kernel (`rmsprop.kernels.numba_cpu`, launched by
  `rmsprop.torch._fused.numba_cpu`) serves CPU tensors otherwise.

The custom op ``rmsprop::fused_step`` is defined once below, with a kernel
registered per device type (``torch.library``); a compiled step calls it (it
is opaque to the compiler: the kernels write through address tables, which no
tracer can see). An eager step calls `fused_step`, the same function the op's
kernels run, directly: the dispatcher's own cost is not worth paying there.

Launchers are imported on first use: they load triton or Numba, which users of
the other device never need.
"""

from __future__ import annotations

import dataclasses
import inspect
import os
from operator import attrgetter
from typing import Any, get_type_hints

import torch
from torch import Tensor
from torch.optim.optimizer import _default_to_fused_or_foreach

from rmsprop._versions import release
from rmsprop.torch._fused.settings import LaunchSettings
from rmsprop.torch._step import Hyper, StepTensors, unscale_or_skip

__all__ = [
    "KERNELS",
    "ONE_OP",
    "FusedKernel",
    "call_op",
    "check_fused",
    "choose_path",
    "fused_kernel",
    "fused_step",
    "on_device",
    "prepare",
    "why_not_fused",
    "why_not_on",
]


@dataclasses.dataclass(frozen=True)
class FusedKernel:
    """A registered fused kernel.

    Attributes:
        name: ``"triton"`` or ``"numba"``.
        on_device: the kernel counts steps and reads GradScaler's scale and
            inf flag where the tensors lie (a step's counts then live there).
        stochastic_rounding: it can round bfloat16 parameters stochastically.
    """

    name: str
    on_device: bool
    stochastic_rounding: bool

    def why_not(self, device_type: str) -> str:
        """Why this kernel can't step tensors of ``device_type`` here ('' when it can)."""
        return str(_launcher(self.name).unsupported_reason(device_type))


TRITON = FusedKernel("triton", on_device=True, stochastic_rounding=True)
NUMBA = FusedKernel("numba", on_device=False, stochastic_rounding=False)
KERNELS = {kernel.name: kernel for kernel in (TRITON, NUMBA)}


def _launcher(name: str) -> Any:
    """The kernel's launcher module, imported on first use (a dict lookup after: every step
    asks several times, and an import statement costs a microsecond even when done)."""
    launcher = _LAUNCHERS.get(name)
    if launcher is None:
        if name == "triton":
            from rmsprop.torch._fused import triton as launcher
        else:
            from rmsprop.torch._fused import numba_cpu as launcher
        _LAUNCHERS[name] = launcher
    return launcher


_LAUNCHERS: dict[str, Any] = {}


def fused_kernel(device_type: str) -> FusedKernel:
    """The kernel registered for tensors of ``device_type`` (ask it `FusedKernel.why_not`)."""
    if device_type == "cuda" or (device_type == "cpu" and _interpreting()):
        return TRITON
    return NUMBA


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET") == "1"


def why_not_on(device_type: str) -> str:
    """Why no fused kernel can step tensors of ``device_type`` here ('' when one can)."""
    return fused_kernel(device_type).why_not(device_type)


def why_not_fused(params: list[Tensor]) -> str:
    """Why no fused kernel can step these parameters ('' when one can, for each device)."""
    for device_type in _device_types(params):
        reason = why_not_on(device_type)
        if reason:
            return reason
    return ""


def check_fused(params: list[Tensor], stochastic_rounding: bool) -> None:
    """Raises unless a fused kernel can step each of these parameters' device types."""
    reason = why_not_fused(params)
    if reason:
        raise RuntimeError(reason)
    if stochastic_rounding and not all(
        fused_kernel(device_type).stochastic_rounding for device_type in _device_types(params)
    ):
        raise ValueError(
            "stochastic_rounding=True needs the fused Triton kernel, which runs on CUDA tensors"
        )


def choose_path(
    params: list[Tensor], *, fused: bool | None, foreach: bool | None, differentiable: bool
) -> tuple[bool, bool]:
    """(fused, foreach) for a step of these parameters: what was asked for, else the fastest
    that can run (the fused kernel, else what torch would choose).

    Raises:
        RuntimeError: ``fused=True`` where no fused kernel can run (never a silent fallback).
    """
    if fused:
        reason = why_not_fused(params)
        if reason:
            raise RuntimeError(f"fused=True, but {reason}")
        return True, False
    automatic = fused is None and foreach is None and not differentiable
    if automatic and params and not why_not_fused(params):
        return True, False
    if foreach is None:
        _, foreach = _default_to_fused_or_foreach(params, differentiable, use_fused=False)
    return False, bool(foreach)


def on_device(
    device_type: str, *, fused: bool | None, foreach: bool | None, differentiable: bool
) -> bool:
    """Whether a step of ``device_type`` tensors with these options is (or may be) taken by a
    kernel that counts steps and reads GradScaler's values on the device."""
    if fused is False or foreach or differentiable:
        return False
    kernel = fused_kernel(device_type)
    return kernel.on_device and not kernel.why_not(device_type)


def prepare(params: list[Tensor], group: dict[str, Any]) -> None:
    """Starts loading, in the background, the kernels a step of a param group with these
    parameters and options may take (so that a new worker process's set-up hides it)."""
    if group["fused"] is False or group["foreach"] or group["differentiable"]:
        return
    for device_type in _device_types(params):
        kernel = fused_kernel(device_type)
        if not kernel.why_not(device_type):
            picked = [p for p in params if p.device.type == device_type]
            _launcher(kernel.name).prepare(picked, group["centered"], group["momentum"] > 0)


def _device_types(params: list[Tensor]) -> list[str]:
    """The parameters' device types, sorted (cheaply when they share one, as they usually do)."""
    if not params:
        return []
    first = params[0]
    if torch.compiler.is_compiling():  # a form torch.compile traces
        if first.is_cuda and all(p.is_cuda for p in params):
            return ["cuda"]
        if first.is_cpu and all(p.is_cpu for p in params):
            return ["cpu"]
    # Faster, eagerly (one mapped C call, no Python frame per tensor): every step asks.
    elif first.is_cuda and all(map(_IS_CUDA, params)):
        return ["cuda"]
    elif first.is_cpu and all(map(_IS_CPU, params)):
        return ["cpu"]
    return sorted({p.device.type for p in params})


_IS_CUDA = attrgetter("is_cuda")
_IS_CPU = attrgetter("is_cpu")


def fused_step(
    tensors: StepTensors,
    hyper: Hyper,
    grad_scale: Tensor | None,
    found_inf: Tensor | None,
    stochastic_rounding: bool,
    launch: LaunchSettings | None = None,
) -> None:
    """Runs each device type's tensors through its fused kernel (`check_fused` first).

    ``launch`` is the Triton kernel's `LaunchSettings` (``None``: its default).
    """
    device_types = _device_types(tensors.params)
    for device_type in device_types:
        picked = tensors
        if len(device_types) > 1:
            picked = tensors.pick(
                [i for i, p in enumerate(tensors.params) if p.device.type == device_type]
            )
        kernel = fused_kernel(device_type)
        launcher = _launcher(kernel.name)
        if kernel.on_device:
            settings = {} if launch is None else {"settings": launch}
            launcher.fused_rmsprop(
                picked, hyper, grad_scale, found_inf, stochastic_rounding, **settings
            )
        elif unscale_or_skip(picked.grads, grad_scale, found_inf):
            launcher.fused_rmsprop(picked, hyper)


# The op: its scalars are Hyper's fields (a schema takes no tuples), lr as a float or a tensor.
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
def _fused_step_op(*args: Any) -> None:
    # Devices without a registered kernel come here: say why, as an eager step would.
    _op_kernel(*args)


def _op_kernel(
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
    # (A list on several devices dispatches to the highest one's kernel: each device's
    # tensors still reach their own.)
    fused_step(tensors, hyper, grad_scale, found_inf, stochastic_rounding)


for _device_type in ("cpu", "cuda"):
    _fused_step_op.register_kernel(_device_type)(_op_kernel)


@_fused_step_op.register_fake  # type: ignore[misc]
def _(*args: Any) -> None:
    return None


# torch 2.4 can't functionalize an op that mutates lists of tensors: there a compiled
# step runs the eager fused step between two graphs instead (a graph break). By release
# number, so that 2.5's pre-releases (NGC's 2.5.0a0, nightlies) count as 2.5.
ONE_OP = release(torch.__version__) >= (2, 5)


def call_op(
    tensors: StepTensors,
    hyper: Hyper,
    grad_scale: Tensor | None,
    found_inf: Tensor | None,
    stochastic_rounding: bool,
) -> None:
    """Calls the op (what a compiled step does instead of `fused_step`)."""
    lr, *rule = hyper  # (torch 2.6-2.8 can't trace a slice of a NamedTuple)
    lr_value, lr_tensor = (0.0, lr) if isinstance(lr, Tensor) else (float(lr), None)
    torch.ops.rmsprop.fused_step(
        *tensors, lr_value, lr_tensor, *rule, grad_scale, found_inf, stochastic_rounding
    )
