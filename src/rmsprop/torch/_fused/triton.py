"""The Triton kernel's launcher: address tables, plans and one launch per group of tensors.

The kernel (`rmsprop.kernels.triton`) reaches every tensor of a (device,
parameter dtype, gradient dtype, state dtype, 16-byte alignment) group through
a device table of addresses and a block table mapping each program to
(tensor, chunk). Both are built once and cached, keyed by the launch settings
and the sizes and addresses of the parameters and their state; when only the
gradients moved (``zero_grad(set_to_none=True)`` may reallocate them), only
their row is uploaded again. A parameter or state off 16-byte alignment, such
as a view into a flat buffer, is launched apart with the others like it.

**Low-memory state.** Parameters whose state `rmsprop.torch._lowmem` stores in a
format (8-bit codes with block scales, stochastically rounded bfloat16) are
launched apart, with the kernel compiled for that format (``QUANTIZED``,
``STATE_STOCHASTIC``): float32 parameters (complex64 as pairs) with 8-bit state,
and float32 or float16 parameters with stochastic bfloat16 state. The plan holds
the block scales' addresses; a step whose scales were replaced (another tensor
under ``key + "_scales"``) gets a new plan, and a kept plan refuses it. Other
parameters with such state (float64, 16-bit parameters beside 8-bit state,
non-contiguous ones) are left to the reference path
(`rmsprop.torch._lowmem.step_in_float`).

**Capturable.** The learning rate may be a device tensor the kernel reads;
tables built while a CUDA graph is being captured are uploaded from pinned
memory inside the graph and kept for its lifetime, apart from the eager cache.

**torch.compile.** Under compilation the step is one call of the custom op
``rmsprop::fused_step`` (`rmsprop.torch._fused`), opaque to the compiler (the
kernel writes through its address tables, which no tracer can see).
"""

from __future__ import annotations

import functools
from collections import OrderedDict
from typing import Any

import torch
from torch import Tensor

from rmsprop import quantization as q
from rmsprop._lowering import Scalars, Switches, scalars, switches
from rmsprop.kernels import triton as kernel
from rmsprop.torch import _lowmem
from rmsprop.torch._fused.plans import (
    addressable,
    cached_plan,
    identity,
    listed_twice,
    real_dtype,
    same_dense_layout,
)
from rmsprop.torch._fused.settings import DEFAULT_LAUNCH, LaunchSettings
from rmsprop.torch._reference import reference_step
from rmsprop.torch._step import Hyper, StepTensors, mark_written

__all__ = [
    "fused_rmsprop",
    "plan_to_keep",
    "prepare",
    "run",
    "takes_stored_format",
    "unsupported_reason",
]


def prepare(
    params: list[Tensor], centered: bool, momentum: bool, state_formats: tuple[str, ...] = ()
) -> None:
    """Nothing to load ahead: Triton compiles each variant on its first launch."""


# Parameter, gradient and state dtypes the kernel reads and writes (complex64 as float32 pairs).
TENSOR_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
STEP_DTYPES = (torch.float32, torch.float64)
_TL_DTYPES: dict[torch.dtype, Any] = (
    {
        torch.float32: kernel.tl.float32,
        torch.bfloat16: kernel.tl.bfloat16,
        torch.float16: kernel.tl.float16,
        torch.float64: kernel.tl.float64,
        torch.uint8: kernel.tl.uint8,  # 8-bit state's codes
    }
    if kernel.AVAILABLE
    else {}
)


# How a launch's state is stored beyond its dtype (part of its key): as the dtype says,
# 8-bit codes with block scales, bfloat16 rounded stochastically.
_PLAIN, _EIGHT_BIT, _STOCHASTIC = "", "8bit", "stochastic"


def takes_stored_format(p: Tensor, grad: Tensor, state: list[Tensor]) -> bool:
    """Whether this kernel steps a parameter's low-memory state itself, as
    `rmsprop.torch._lowmem.keep_format` recorded it (the buffers its rule uses: v, m, b):
    8-bit codes and scales of a contiguous float32 or complex64 parameter, stochastically
    rounded bfloat16 state of a float32 or float16 parameter (the float kernel's layouts)."""
    key = _launch_key(p, grad, state, None)
    return key is not None and key[-1] != _PLAIN


def _stored(p: Tensor, g: Tensor, state: list[Tensor]) -> str | None:
    """How the kernel takes this parameter's state: `_PLAIN` (no format recorded),
    `_EIGHT_BIT`, `_STOCHASTIC`, or None where it takes no recorded format of it."""
    formats = [_lowmem.format_of(t) for t in state]
    if all(f is None for f in formats):
        return _PLAIN
    if any(f is None for f in formats):
        return None
    if all(f.scales is None and f.stochastic for f in formats):  # type: ignore[union-attr]
        if all(t.dtype == torch.bfloat16 for t in state) and p.dtype != torch.bfloat16:
            return _STOCHASTIC
        return None
    scales = [f.scales for f in formats]  # type: ignore[union-attr]
    n = _real_numel(p)
    if (
        real_dtype(p) != torch.float32  # (float32 math: a float64 step stays the reference's)
        or real_dtype(g) not in TENSOR_DTYPES
        or g.is_complex() != p.is_complex()
        or g.shape != p.shape
        or not (p.is_contiguous() and g.is_contiguous())
        or any(t.is_conj() or t.is_neg() for t in (p, g))
    ):
        return None
    for codes, found in zip(state, scales):
        if not (
            found is not None
            and codes.dtype == torch.uint8
            and codes.is_contiguous()
            and codes.numel() == n
            and codes.device == p.device
            and found.dtype == torch.float32
            and found.is_contiguous()
            and found.numel() == -(-n // q.BLOCK)
            and found.device == p.device
            and (not n or found.data_ptr())
        ):
            return None
    return _EIGHT_BIT


def _real_numel(p: Tensor) -> int:
    return p.numel() * (2 if p.is_complex() else 1)


@functools.lru_cache(maxsize=16)
def _maps(device: torch.device) -> tuple[Tensor, Tensor]:
    """The kernel's table of 8-bit maps (at `kernel.UNSIGNED_MAP_AT`, ...): its pinned host
    copy, kept for good (a CUDA graph captured uploading it replays that copy), and
    ``device``'s copy."""
    table = torch.zeros(3 * 256, dtype=torch.float32)
    for at, values in (
        (kernel.UNSIGNED_MAP_AT, q.UNSIGNED_MAP),
        (kernel.SIGNED_MAP_AT, q.SIGNED_MAP),
        (kernel.MAGNITUDES_AT, q.SIGNED_MAP[128:]),  # (k/127)⁴, k = 0..127
    ):
        table[at : at + values.size] = torch.from_numpy(values.copy())
    host = _pinned(table, device)
    return host, _upload(host, device)


def unsupported_reason(device_type: str) -> str:
    """Why the Triton kernel can't run on tensors of this device type ('' when it can)."""
    if not kernel.AVAILABLE:
        return kernel.WHY_UNAVAILABLE
    if device_type == "cuda":
        if kernel.INTERPRETED:
            return (
                "triton was imported with TRITON_INTERPRET=1, and its interpreter "
                "cannot reach CUDA memory through the kernel's address tables"
            )
        return ""
    if device_type == "cpu":
        if not kernel.INTERPRETED:
            return (
                "the Triton kernel runs on CPU tensors only through Triton's interpreter "
                "(set TRITON_INTERPRET=1 before triton is imported)"
            )
        return ""
    return f"the Triton kernel needs CUDA tensors, got {device_type} tensors"


class _Launch:
    """One kernel launch: the device tables of a group of tensors sharing a device and dtypes.

    ``indices`` are the group's positions in the step's tensor lists;
    ``columns`` the address table on the host: per tensor, the addresses of θ,
    g, v, m, b and the step count, and the element count (complex tensors
    count their reals), and for 8-bit state the block scales' addresses.
    ``like``, when given, is a launch over the same tensors whose block table
    (it depends only on their sizes) this one shares. 8-bit state is cut in
    blocks of at least 256 (``maps``: the kernel's table of its maps).

    The pinned host copies the device tables were uploaded from are kept and
    never written: a CUDA graph replays the upload from them.
    """

    n_blocks: int
    host_blocks: Tensor
    blocks: Tensor
    host_tables: Tensor

    def __init__(
        self,
        indices: list[int],
        key: tuple[Any, ...],
        columns: list[list[int]],
        settings: LaunchSettings,
        like: _Launch | None = None,
    ) -> None:
        self.indices = indices
        self.settings = settings
        self.device, self.param_dtype, self.grad_dtype, self.state_dtype, self.step_dtype = key[:5]
        self.stored = key[6]
        self.columns = columns
        # The tables below are cut in blocks of this size; 8-bit state's whole blocks of 256.
        self.block = settings.block
        self.maps = None
        if self.stored == _EIGHT_BIT:
            self.block = max(self.block, q.BLOCK)
            self.maps = _maps(self.device)[1]
        self.n_tensors = len(indices)
        if like is not None:
            self.n_blocks, self.host_blocks, self.blocks = (
                like.n_blocks,
                like.host_blocks,
                like.blocks,
            )
        else:
            counts = [max(1, -(-n // self.block)) for n in columns[kernel.NUMEL]]
            self.n_blocks = sum(counts)
            tensor_of_block = torch.arange(self.n_tensors).repeat_interleave(torch.tensor(counts))
            first_block = torch.tensor([0, *counts[:-1]]).cumsum(0)
            chunk_of_block = torch.arange(self.n_blocks) - first_block[tensor_of_block]
            blocks = torch.stack([tensor_of_block, chunk_of_block]).to(torch.int32)
            self.host_blocks = _pinned(blocks, self.device)
            self.blocks = _upload(self.host_blocks, self.device)
        self.block_tensor, self.block_chunk = self.blocks[0], self.blocks[1]
        if like is not None and like.columns == columns:
            self.host_tables = like.host_tables  # never written: see point_grads
        else:
            self.host_tables = _pinned(torch.tensor(columns, dtype=torch.int64), self.device)
        self.tables = _upload(self.host_tables, self.device)
        self.tickets = torch.zeros(self.n_tensors, dtype=torch.int32, device=self.device)
        self.aligned = _aligned(columns)
        # Compile-time arguments by (switches, flags): built once, most steps repeat them.
        self.compiled_for: dict[tuple[Any, ...], dict[str, Any]] = {}

    def point_grads(self, addresses: list[int]) -> None:
        """Uploads the gradients' row (``addresses``, in step order) if they moved."""
        new = [addresses[i] for i in self.indices]
        if new == self.columns[kernel.GRAD]:
            return
        columns = [*self.columns[: kernel.GRAD], new, *self.columns[kernel.GRAD + 1 :]]
        # A new host table rather than a write into the old one, which a copy (or a
        # captured graph) may still read; uploaded before anything here says it was.
        host_tables = _pinned(torch.tensor(columns, dtype=torch.int64), self.device)
        self.tables.copy_(host_tables, non_blocking=True)
        self.columns, self.host_tables, self.aligned = columns, host_tables, _aligned(columns)
        self.compiled_for = {}  # (ALIGNED may have changed)


def _pinned(values: Tensor, device: torch.device) -> Tensor:
    # Pinned, so the copy is asynchronous and may be captured in a CUDA graph.
    return values.pin_memory() if device.type == "cuda" else values


def _upload(host: Tensor, device: torch.device) -> Tensor:
    return host.to(device, non_blocking=True) if device.type == "cuda" else host.clone()


def _aligned(columns: list[list[int]]) -> bool:
    rows = (kernel.PARAM, kernel.GRAD, kernel.SQUARE_AVG, kernel.GRAD_AVG, kernel.BUFFER)
    return all(address % 16 == 0 for row in rows for address in columns[row])


class _Plan:
    """How one step's tensors are updated: launches for the kernel, the ``rest`` by
    foreach, parameters listed twice (``looped``) by the single-tensor loop.

    `rmsprop.torch._plans.cached_plan` keeps ``grads`` and ``signatures``: the
    gradients the tables point at; ``scales`` are the 8-bit block scales the tables
    point at (checked on every step: they live beside the state lists, not in them).
    """

    def __init__(
        self,
        launches: list[_Launch],
        rest: list[int],
        looped: list[int],
        grads: list[int],
        scales: list[Tensor] | None = None,
    ) -> None:
        self.launches = launches
        self.rest = rest
        self.looped = looped
        self.grads = grads  # the gradient addresses the tables hold, in step order
        self.signatures: tuple[list[Any], ...] = ()
        self.scales = scales or []
        self.scale_addresses = [t.data_ptr() for t in self.scales]
        self.quantized = [
            i for launch in launches if launch.maps is not None for i in launch.indices
        ]

    def scales_current(self, tensors: StepTensors) -> bool:
        """Whether every 8-bit buffer's recorded scales are still the tensors, at the
        addresses, the tables point at."""
        if not self.quantized:
            return True
        now = _scales_of(tensors, self.quantized)
        return (
            now is not None
            and len(now) == len(self.scales)
            and all(a is b for a, b in zip(now, self.scales))
            and [t.data_ptr() for t in now] == self.scale_addresses
        )

    def point_grads(self, addresses: list[int]) -> None:
        for launch in self.launches:
            launch.point_grads(addresses)
        self.grads = addresses


# Plans of eager steps, keyed by the sizes and addresses of the parameters and their state.
_plans: OrderedDict[tuple[Any, ...], _Plan] = OrderedDict()

# Plans built while a CUDA graph was captured: the graph reads their tables at every replay.
_graph_plans: list[_Plan] = []


def fused_rmsprop(
    tensors: StepTensors,
    hyper: Hyper,
    grad_scale: Tensor | None = None,
    found_inf: Tensor | None = None,
    stochastic_rounding: bool = False,
    settings: LaunchSettings = DEFAULT_LAUNCH,
) -> None:
    """The fused step on CUDA tensors (or, interpreted, CPU tensors): updates everything in place.

    ``tensors.state_steps`` are on the parameters' device. ``hyper.lr`` may
    be a tensor on that device (the kernel reads it, so a captured graph sees
    later changes). Tensors the kernel can't take (other dtypes, layouts or
    devices) go through the foreach path, same rule.
    """
    if not tensors.params:
        return
    tensors = tensors.used_by(hyper)
    plan = _plan_for(tensors, settings)  # (its scales current)
    run(plan, tensors, hyper, grad_scale, found_inf, stochastic_rounding, scales_checked=True)
    # The kernel writes behind autograd's back: tell it, as an in-place op would.
    mark_written(tensors.written(grad_scale is not None))


def run(
    plan: _Plan,
    tensors: StepTensors,
    hyper: Hyper,
    grad_scale: Tensor | None,
    found_inf: Tensor | None,
    stochastic_rounding: bool,
    *,
    scales_checked: bool = False,
) -> None:
    """Steps ``tensors`` (the lists ``hyper`` uses) by ``plan``, its gradient rows current;
    the caller marks what it wrote. ``scales_checked``: the caller found the plan's 8-bit
    scales current (`_Plan.scales_current`) this step."""
    if not scales_checked and not plan.scales_current(tensors):  # first: nothing written yet
        raise RuntimeError(
            "8-bit state's block scales were replaced since this step was planned: replace "
            "them through opt.state[p][key + '_scales'] = ..., which the optimizer follows"
        )
    lr = hyper.lr
    if isinstance(lr, Tensor) and lr.device.type != tensors.params[0].device.type:
        hyper = hyper._replace(lr=lr.item())  # a host scalar: no sync
    for launch in plan.launches:
        _launch(launch, hyper, grad_scale, found_inf, stochastic_rounding)
    if plan.rest:
        reference_step(tensors.pick(plan.rest), hyper, grad_scale, found_inf, foreach=True)
    if plan.looped:
        reference_step(tensors.pick(plan.looped), hyper, grad_scale, found_inf, foreach=False)


def plan_to_keep(tensors: StepTensors, settings: LaunchSettings) -> _Plan | None:
    """The plan a step of these tensors (the lists its rule uses) just took, for a caller that
    will step the same tensors again with `run` (None: it has no plan worth keeping, as one
    with tensors the kernel does not take, or one a CUDA graph is capturing)."""
    if tensors.params[0].is_cuda and torch.cuda.is_current_stream_capturing():
        return None
    plan = _plan_for(tensors, settings)
    return None if plan.rest or plan.looped else plan


def _plan_for(tensors: StepTensors, settings: LaunchSettings) -> _Plan:
    """The cached plan for these tensors, its gradient rows updated; built when new."""
    params, grads, square_avgs, grad_avgs, momentum_buffers, state_steps = tensors
    # The block size is part of the key: the block tables are cut with it.
    key = (settings, *identity(params, square_avgs, grad_avgs, momentum_buffers, state_steps))
    if params[0].is_cuda and torch.cuda.is_current_stream_capturing():
        # Tables the graph owns (eager steps may move the cached ones' gradient rows),
        # sharing the warm-up plan's pinned copies where they match: its block tables
        # always (they depend on sizes only), its address table if no gradient moved.
        plan = _build_plan(tensors, settings, like=_plans.get(key))
        _graph_plans.append(plan)
        return plan
    plan = cached_plan(_plans, key, grads, lambda: _build_plan(tensors, settings))
    if not plan.scales_current(tensors):  # the same codes, new scales: plan them
        _plans.pop(key, None)
        plan = cached_plan(_plans, key, grads, lambda: _build_plan(tensors, settings))
    return plan


def _build_plan(tensors: StepTensors, settings: LaunchSettings, like: _Plan | None = None) -> _Plan:
    """Groups the tensors into launches; with ``like``, an eager plan of the same tensors,
    reusing its host tables and block tables wherever they match."""
    params, grads, square_avgs, grad_avgs, momentum_buffers, state_steps = tensors
    groups: dict[tuple[Any, ...], list[int]] = {}
    rest, looped = [], []
    twice = listed_twice(params)
    for i, p in enumerate(params):
        if twice and p.numel() and p.data_ptr() in twice:
            looped.append(i)
            continue
        state = [square_avgs[i]]
        state += [grad_avgs[i]] if grad_avgs else []
        state += [momentum_buffers[i]] if momentum_buffers else []
        key = _launch_key(p, grads[i], state, state_steps[i])
        if key is None:
            rest.append(i)
        else:
            groups.setdefault(key, []).append(i)
    launches = []
    for key, indices in groups.items():
        columns = [[0] * len(indices) for _ in range(kernel.ROWS)]
        for column, i in enumerate(indices):
            columns[kernel.PARAM][column] = params[i].data_ptr()
            columns[kernel.GRAD][column] = grads[i].data_ptr()
            columns[kernel.SQUARE_AVG][column] = square_avgs[i].data_ptr()
            if grad_avgs:
                columns[kernel.GRAD_AVG][column] = grad_avgs[i].data_ptr()
            if momentum_buffers:
                columns[kernel.BUFFER][column] = momentum_buffers[i].data_ptr()
            columns[kernel.STEP][column] = state_steps[i].data_ptr()
            columns[kernel.NUMEL][column] = _real_numel(params[i])
        if key[6] == _EIGHT_BIT:
            for row, listed in _SCALE_ROWS:
                found = _scales_of(tensors, indices, (listed,))
                if found:
                    columns[row] = [t.data_ptr() for t in found]
        same = [old for old in (like.launches if like else []) if old.indices == indices]
        launches.append(_Launch(indices, key, columns, settings, same[0] if same else None))
    quantized = [i for key, indices in groups.items() if key[6] == _EIGHT_BIT for i in indices]
    scales = _scales_of(tensors, quantized) if quantized else []
    assert scales is not None  # (each launch key checked them)
    return _Plan(launches, rest, looped, list(map(Tensor.data_ptr, grads)), scales)


# Each 8-bit buffer's row of block scales, and its list in `StepTensors`.
_SCALE_ROWS = (
    (kernel.SQUARE_AVG_SCALES, "square_avgs"),
    (kernel.GRAD_AVG_SCALES, "grad_avgs"),
    (kernel.BUFFER_SCALES, "momentum_buffers"),
)


def _scales_of(
    tensors: StepTensors,
    indices: list[int],
    names: tuple[str, ...] = ("square_avgs", "grad_avgs", "momentum_buffers"),
) -> list[Tensor] | None:
    """The recorded block scales of these parameters' buffers (the lists named, where the
    step has them), buffer by buffer; None if one has none recorded."""
    found = []
    for name in names:
        listed = getattr(tensors, name)
        for i in indices if listed else ():
            stored = _lowmem.format_of(listed[i])
            if stored is None or stored.scales is None:
                return None
            found.append(stored.scales)
    return found


def _launch_key(
    p: Tensor, g: Tensor, state: list[Tensor], step: Tensor | None
) -> tuple[Any, ...] | None:
    """(device, parameter, gradient, state and step dtypes, whether p and its state are
    16-byte aligned, how the state is stored) if the kernel takes p, else None (``step``
    None: everything but the step count).

    Alignment is part of the key so that one tensor off it (a view into a flat
    buffer, say) costs its own launch scalar accesses, not everyone's.
    """
    device = p.device
    if unsupported_reason(device.type):
        return None
    counts = [] if step is None else [step]
    if any(t.device != device for t in (g, *state, *counts)):
        return None
    if not addressable(p, [g, *state, *counts]):
        return None
    stored = _stored(p, g, state)
    if stored is None:
        return None
    param_dtype, grad_dtype, state_dtype = real_dtype(p), real_dtype(g), real_dtype(state[0])
    if stored == _EIGHT_BIT:  # (its layout checked by _stored: codes in the real view's shape)
        if step is not None and (step.dtype not in STEP_DTYPES or step.numel() != 1):
            return None
        aligned = all(t.data_ptr() % 16 == 0 for t in (p, *state))
        return device, param_dtype, grad_dtype, torch.uint8, _step_dtype(step), aligned, stored
    if (
        param_dtype not in TENSOR_DTYPES
        or grad_dtype not in TENSOR_DTYPES
        or state_dtype not in TENSOR_DTYPES
        or any(t.dtype != state[0].dtype for t in state)
        or any(t.is_complex() != p.is_complex() for t in (g, *state))
        or any(t.is_conj() or t.is_neg() for t in (p, g, *state))  # memory ≠ values
        or (step is not None and (step.dtype not in STEP_DTYPES or step.numel() != 1))
        or not same_dense_layout(p, [g, *state])
    ):
        return None
    aligned = all(t.data_ptr() % 16 == 0 for t in (p, *state))
    return device, param_dtype, grad_dtype, state_dtype, _step_dtype(step), aligned, stored


def _step_dtype(step: Tensor | None) -> torch.dtype | None:
    return None if step is None else step.dtype


def _launch(
    launch: _Launch,
    hyper: Hyper,
    grad_scale: Tensor | None,
    found_inf: Tensor | None,
    stochastic_rounding: bool,
) -> None:
    device = launch.device
    lr = hyper.lr
    lr_ptr = None
    if isinstance(lr, Tensor):
        # Read where it lies, so a captured graph sees later changes (and nothing syncs).
        lr_ptr = lr if lr.dtype in STEP_DTYPES else lr.float()
        lr_ptr, hyper = lr_ptr.to(device, non_blocking=True), hyper._replace(lr=0.0)
    if grad_scale is not None:
        grad_scale = grad_scale.to(device, torch.float32, non_blocking=True)
    if found_inf is not None:
        found_inf = found_inf.to(device, torch.float32, non_blocking=True)
    s, on = _launch_arguments(hyper)
    flags = (
        on,
        lr_ptr is not None,
        grad_scale is not None,
        found_inf is not None,
        stochastic_rounding and launch.param_dtype == torch.bfloat16,
    )
    compiled_for = launch.compiled_for.get(flags)
    if compiled_for is None:
        compiled_for = launch.compiled_for[flags] = _compile_time_arguments(launch, *flags)
    arguments = (
        launch.tables,
        launch.block_tensor,
        launch.block_chunk,
        launch.tickets,
        launch.n_tensors,
        lr_ptr,
        grad_scale,
        found_inf,
        *s,
    )
    with _CurrentDevice(device):
        if launch.stored == _PLAIN:
            kernel.rmsprop_kernel[(launch.n_blocks,)](*arguments, **compiled_for)
        else:
            kernel.rmsprop_lowmem_kernel[(launch.n_blocks,)](
                *arguments, maps_ptr=launch.maps, **compiled_for
            )


def _compile_time_arguments(
    launch: _Launch,
    on: Switches,
    lr_on_device: bool,
    grad_scale: bool,
    found_inf: bool,
    stochastic: bool,
) -> dict[str, Any]:
    """The kernel's compile-time arguments for a launch: the rule's switches as MAXIMIZE=...,
    the tensors' dtypes, what the launch reads on the device, the launch settings, and for
    low-memory state its format."""
    arguments = dict(
        **{name.upper(): value for name, value in on._asdict().items()},
        PARAM=_TL_DTYPES[launch.param_dtype],
        GRAD=_TL_DTYPES[launch.grad_dtype],
        STATE=_TL_DTYPES[launch.state_dtype],
        STEP=_TL_DTYPES[launch.step_dtype],
        LR_ON_DEVICE=lr_on_device,
        GRAD_SCALE=grad_scale,
        FOUND_INF=found_inf,
        STOCHASTIC=stochastic,
        ALIGNED=launch.aligned,
        BLOCK=launch.block,
        num_warps=launch.settings.num_warps,
        enable_fp_fusion=False,
    )
    if launch.stored != _PLAIN:  # the low-memory kernel's formats
        arguments["QUANTIZED"] = launch.stored == _EIGHT_BIT
        arguments["STATE_STOCHASTIC"] = launch.stored == _STOCHASTIC
    return arguments


@functools.lru_cache(maxsize=64)
def _launch_arguments(hyper: Hyper) -> tuple[Scalars, Switches]:
    """The rule's scalars and switches; cached, since most steps repeat the last one's rule."""
    return scalars(hyper), switches(hyper)


class _CurrentDevice:
    """Makes the tensors' CUDA device current (Triton launches on the current one)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.previous: int | None = None

    def __enter__(self) -> None:
        if self.device.type == "cuda" and self.device.index != torch.cuda.current_device():
            self.previous = torch.cuda.current_device()
            torch.cuda.set_device(self.device)

    def __exit__(self, *_: object) -> None:
        if self.previous is not None:
            torch.cuda.set_device(self.previous)
