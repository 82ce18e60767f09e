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
from rmsprop.torch._fused.settings import DEFAULT_LAUNCH, LaunchSettings
from rmsprop.torch._step import Hyper, StepTensors, mark_written, unscale_or_skip

__all__ = [
    "KERNELS",
    "ONE_OP",
    "FusedKernel",
    "KeptStep",
    "call_op",
    "check_fused",
    "choose_path",
    "fused_kernel",
    "fused_step",
    "keep_step",
    "on_device",
    "prepare",
    "takes_stored_format",
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


def takes_stored_format(p: Tensor, grad: Tensor, state: list[Tensor]) -> bool:
    """Whether the fused kernel of ``p``'s device steps ``p``'s low-memory state itself
    (8-bit codes with their block scales, or stochastically rounded bfloat16, as
    `rmsprop.torch._lowmem.keep_format` recorded it); where it does not, the optimizer
    hands that parameter to the reference path.

    Args:
        p: the parameter.
        grad: its gradient.
        state: its buffers the rule uses (v, then m, then b).
    """
    kernel = fused_kernel(p.device.type)
    if kernel.why_not(p.device.type):
        return False
    return bool(_launcher(kernel.name).takes_stored_format(p, grad, state))


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


def prepare(
    params: list[Tensor], group: dict[str, Any], state_formats: tuple[str, ...] = ()
) -> None:
    """Starts loading, in the background, the kernels a step of a param group with these
    parameters and options may take (so that a new worker process's set-up hides it);
    ``state_formats``: the low-memory state formats (``"8bit"``, ``"bfloat16"``) of its
    state, whose CPU kernels take seconds to compile where Numba's cache is cold."""
    if group["fused"] is False or group["foreach"] or group["differentiable"]:
        return
    for device_type in _device_types(params):
        kernel = fused_kernel(device_type)
        if not kernel.why_not(device_type):
            picked = [p for p in params if p.device.type == device_type]
            centered, momentum = group["centered"], group["momentum"] > 0
            _launcher(kernel.name).prepare(picked, centered, momentum, state_formats)


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


class KeptStep:
    """A param group's fused step, kept to be taken again while its tensors stay the same.

    The optimizer keeps one per param group after a fused step, with the lists
    of parameters and state it gathered (gathering them costs a dict lookup per
    tensor) and the launcher's plan (address tables, launches). An unchanged
    step then costs a few mapped C calls per tensor, to check what the kernel
    trusts:

    - every parameter and state tensor still has the address it had (a
      parameter whose ``.data`` was replaced, or moved by ``model.to()``, has
      not; the optimizer builds a new kept step whenever its state dicts change);
    - every gradient has the dtype, size and layout it had and no lazy
      negation (or conjugation, for complex parameters), and its new address
      goes into the tables. Its device is the parameter's: autograd's ``.grad``
      setter refuses any other, and a tensor whose memory was replaced by
      ``grad.data = ...`` has another address and is checked as above.

    `run` returns False when any check fails, having changed nothing: the
    caller then takes the full step, which builds a new plan.
    """

    def __init__(self, kernel: FusedKernel, plan: Any, tensors: StepTensors) -> None:
        self.kernel = kernel
        self.launcher = _launcher(kernel.name)
        self.plan = plan
        params, grads, square_avgs, grad_avgs, buffers, steps = tensors
        self.tensors = tensors
        # Addresses the kernel trusts: the step counts' too where it counts on the device.
        held = [params, square_avgs, grad_avgs, buffers, *([steps] if kernel.on_device else [])]
        self.held = [t for ts in held for t in ts]
        self.addresses = list(map(Tensor.data_ptr, self.held))
        # Contiguous parameters have contiguous gradients (then checked as such, faster).
        self.contiguous = all(map(Tensor.is_contiguous, grads)) and all(
            map(Tensor.is_contiguous, params)
        )
        self.complex = any(map(Tensor.is_complex, params))
        self.layout = self._layout(grads)
        # What the step marks written (see `StepTensors.written`), by aliases that share
        # the parameters' version counters: moving a plain tensor's counter is 3x cheaper.
        written = params if kernel.on_device else plan.written(params)
        self.written = [p.detach() for p in written]
        self.counted = [] if kernel.on_device else self.launcher.counted_steps(plan, tensors)

    def _layout(self, grads: list[Tensor]) -> Any:
        """What is checked of the gradients beyond their addresses (mapped C calls): all a
        plan assumed, which ``grad.data = ...`` may change behind the ``.grad`` setter."""
        dtypes = list(map(_DTYPE, grads))
        if self.contiguous and not self.complex:
            # dtype, size, contiguity: the memory layout strides would give, cheaper.
            return (
                dtypes,
                list(map(Tensor.numel, grads)),
                all(map(Tensor.is_contiguous, grads)),
                any(map(Tensor.is_neg, grads)),
            )
        return (
            dtypes,
            list(map(_SHAPE, grads)),
            list(map(Tensor.stride, grads)),
            list(map(Tensor.is_neg, grads)),
            list(map(Tensor.is_conj, grads)),
        )

    def run(
        self,
        grads: list[Any],
        hyper: Hyper,
        grad_scale: Tensor | None,
        found_inf: Tensor | None,
        stochastic_rounding: bool,
    ) -> bool:
        """Takes the step with these gradients (the parameters' ``.grad``, in order) if nothing
        the plan assumed changed; False, having changed nothing, if anything did."""
        try:
            addresses = list(map(Tensor.data_ptr, grads))
        except (TypeError, RuntimeError):  # a None gradient, or one without memory
            return False
        if (
            self._layout(grads) != self.layout
            or list(map(Tensor.data_ptr, self.held)) != self.addresses
        ):
            return False
        plan = self.plan
        if plan.grads != addresses:
            plan.point_grads(addresses)
        params, _, square_avgs, grad_avgs, buffers, steps = self.tensors
        tensors = StepTensors(params, grads, square_avgs, grad_avgs, buffers, steps)
        if self.kernel.on_device:
            self.launcher.run(plan, tensors, hyper, grad_scale, found_inf, stochastic_rounding)
        elif unscale_or_skip(grads, grad_scale, found_inf):
            self.launcher.run(plan, tensors, hyper, self.counted)
        else:
            return True  # GradScaler found an inf: the step changes nothing
        mark_written(self.written if grad_scale is None else [*self.written, *grads])
        return True


def keep_step(
    tensors: StepTensors, hyper: Hyper, launch: LaunchSettings | None = None
) -> KeptStep | None:
    """A `KeptStep` of the fused step these tensors just took (the lists ``hyper``'s rule
    uses), or None where none can be kept: tensors on several device types, tensor
    subclasses, tensors the kernel does not take, a step being compiled or captured."""
    params = tensors.params
    if not params or torch.compiler.is_compiling():
        return None
    device_types = _device_types(params)
    if len(device_types) != 1:
        return None
    everything = [t for ts in tensors for t in ts]
    if not {*map(type, everything)} <= _PLAIN_TYPES:
        return None
    kernel = fused_kernel(device_types[0])
    launcher = _launcher(kernel.name)
    tensors = tensors.used_by(hyper)
    if kernel.on_device:
        plan = launcher.plan_to_keep(tensors, DEFAULT_LAUNCH if launch is None else launch)
    else:
        plan = launcher.plan_to_keep(tensors)
    return None if plan is None else KeptStep(kernel, plan, tensors)


_PLAIN_TYPES = frozenset((Tensor, torch.nn.Parameter))
_DTYPE = attrgetter("dtype")
_SHAPE = attrgetter("shape")


# The op: Hyper's fields as one list of floats (bools as 0 and 1; lr 0 when it is a tensor,
# then given apart). One list rather than a float per field: torch's Python wrapper of a
# custom op that mutates its inputs reads the schema's arguments once per argument, so its
# cost on every call grows with their count squared (about 0.1 ms at 22 arguments).
_MUTATED = StepTensors._fields
_BOOLS = tuple(get_type_hints(Hyper)[name] is bool for name in Hyper._fields)
_SCHEMA = (
    "("
    + ", ".join(f"Tensor({chr(97 + i)}!)[] {name}" for i, name in enumerate(_MUTATED))
    + ", float[] rule, Tensor? lr_tensor, "
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
    rule: list[float],
    lr_tensor: Tensor | None,
    grad_scale: Tensor | None,
    found_inf: Tensor | None,
    stochastic_rounding: bool,
) -> None:
    fields: list[Any] = [bool(v) if is_bool else v for v, is_bool in zip(rule, _BOOLS)]
    hyper = Hyper(*fields)
    if lr_tensor is not None:
        hyper = hyper._replace(lr=lr_tensor)
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
    lr, *rest = hyper  # (torch 2.6-2.8 can't trace a slice of a NamedTuple)
    lr_value, lr_tensor = (0.0, lr) if isinstance(lr, Tensor) else (float(lr), None)
    rule = [lr_value, *(float(v) for v in rest)]
    torch.ops.rmsprop.fused_step(
        *tensors, rule, lr_tensor, grad_scale, found_inf, stochastic_rounding
    )
