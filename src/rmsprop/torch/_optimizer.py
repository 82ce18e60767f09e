"""`RMSprop`: a drop-in `torch.optim.RMSprop` that computes every flavor."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from operator import attrgetter, itemgetter
from typing import Any, NamedTuple, cast

import torch
from torch import Tensor
from torch.optim.optimizer import Optimizer, ParamsT, _use_grad_for_differentiable

from rmsprop import flavors
from rmsprop import quantization as q
from rmsprop._config import FIELD_NAMES, STEP_FIELDS, Config
from rmsprop._not_given import NotGiven
from rmsprop.torch import _fused, _lowmem
from rmsprop.torch._functional import rmsprop
from rmsprop.torch._fused.settings import LaunchSettings
from rmsprop.torch._reference import reference_step
from rmsprop.torch._state import Generation, State
from rmsprop.torch._step import Hyper, StepTensors
from rmsprop.translation import TARGETS

__all__ = ["RMSprop"]

# Config fields under the names torch.optim.RMSprop gives them in param groups.
_GROUP_KEY = {name: ("alpha" if name == "decay" else name) for name in FIELD_NAMES}
_BUFFER_KEYS = ("square_avg", "momentum_buffer", "grad_avg")
_SCALES_KEYS = tuple(map(_lowmem.scales_key, _BUFFER_KEYS))  # an 8-bit buffer's block scales
_STATE_KEYS = ("step", *_BUFFER_KEYS, *_SCALES_KEYS)
# The param-group keys torch.optim.RMSprop lacks, with the value its rule implies: a
# state dict leaves a key out where it holds that value, and a missing one means it.
_TORCH_VALUES: dict[str, Any] = {_GROUP_KEY[f]: v for f, v in TARGETS["pytorch"].fixed.items()}
# The code path a group takes: this optimizer's choice, never a checkpoint's.
_PATH_KEYS = ("foreach", "fused", "capturable", "differentiable")
# torch.optim.RMSprop's checks, in its order: (group key, Config field, what its message calls it).
_TORCH_CHECKS = (
    ("lr", "lr", "learning rate"),
    ("eps", "eps", "epsilon value"),
    ("momentum", "momentum", "momentum value"),
    ("weight_decay", "weight_decay", "weight_decay value"),
    ("alpha", "decay", "alpha value"),
)


class RMSprop(Optimizer):
    r"""RMSprop, drop-in for `torch.optim.RMSprop`, in every framework's flavor.

    With no ``flavor`` it computes ``torch.optim.RMSprop``'s rule, with the
    same arguments, defaults, state keys and ``state_dict`` layout:

    .. math::

        v_t = \rho v_{t-1} + (1-\rho) g_t^2, \qquad
        \theta_t = \theta_{t-1} - \eta \, \frac{g_t}{\sqrt{v_t} + \epsilon}

    Which bits: ``foreach=False`` (the single-tensor path) computes bitwise what
    torch's single-tensor path computes (its default on the CPU), and
    ``foreach=True`` bitwise what torch's foreach path computes (its default on
    CUDA). With neither given, the fused kernel runs where it can (CPU tensors
    with ``rmsprop[fast]`` installed, CUDA tensors with ``rmsprop[triton]``):
    the same rule, to float rounding, not bit for bit. Pass ``foreach=False``
    for torch's exact bits.

    Checkpoints: `load_state_dict` takes the hyperparameters and the state from
    a state dict (of this class or of ``torch.optim.RMSprop``), never the code
    path (``foreach``, ``fused``, ``capturable``, ``differentiable`` stay this
    optimizer's); `state_dict` writes only torch's param-group keys where the
    rule is torch's, so ``torch.distributed.checkpoint`` moves checkpoints both
    ways; and the zero-gradient, zero-lr step its ``get_state_dict`` takes on an
    optimizer without state only creates the state (see `step`).

    ``flavor="tensorflow"`` (or ``"keras"``, ``"optax"``, ``"timm"``, ``"dqn"``,
    ... see `rmsprop.FLAVORS`) switches to that framework's exact rule and
    defaults; any argument you pass overrides the flavor's value. The full rule,
    in the order it is computed, is in `rmsprop.Config`.

    Args:
        params: parameters or named parameters, or dicts defining param groups.
            A group may override any hyperparameter below.
        lr: learning rate η, a float or a 1-element tensor (default: 1e-2).
        alpha: ρ, decay of the running averages (default: 0.99).
        eps: ε, added to the denominator (default: 1e-8).
        weight_decay: λ (default: 0), L2 on the gradient unless
            ``decoupled_weight_decay``.
        momentum: μ (default: 0).
        centered: divide by the estimated variance (default: False).
        capturable: keep ``step`` (and a tensor ``lr``) on the parameters'
            device, so the step can be captured in a CUDA graph (default: False).
        foreach: use the multi-tensor path; ``None`` leaves the choice to
            ``fused``, then to PyTorch's rule (foreach on CUDA) (default: None).
        maximize: ascend instead of descend (default: False).
        differentiable: let autograd through the step (single-tensor path
            only) (default: False).
        fused: use the fused kernel for the tensors' device, one pass over
            memory: on CUDA one Triton launch per step for all tensors of a
            dtype combination (needs ``rmsprop[triton]``); on the CPU a
            multi-threaded Numba loop (needs ``rmsprop[fast]``), or the Triton
            kernel through Triton's interpreter when ``TRITON_INTERPRET=1``.
            ``None`` picks it when neither ``foreach`` nor ``differentiable``
            is set and the kernel can run; ``True`` where it cannot run is an
            error, never a silent fallback (default: None). On CUDA the step
            counts then live on the device, and `torch.amp.GradScaler`'s
            scale and inf check are applied in the kernel.
        flavor: a flavor name whose rule and defaults to start from
            (default: ``"pytorch"``).
        decay: another name for ``alpha`` (`Config`'s); give one or the other.
        eps_in_sqrt, initial_square_avg, nesterov, lr_in_momentum,
        bias_correction, decoupled_weight_decay: the `Config` fields of the
            same name; ``None`` takes the flavor's value.
        state_dtype: how the averages and the momentum buffer are stored: a
            floating dtype, e.g. ``torch.float32`` beside bfloat16 parameters or
            ``torch.bfloat16`` beside float32 ones; ``"8bit"``, about one byte per
            element (`rmsprop.quantization`'s format: for a parameter of at least
            4096 real elements, ``state[key]`` is a uint8 tensor of codes in the
            parameter's real-view shape and ``state[key + "_scales"]`` its float32
            block scales, one per 256; smaller parameters keep float32 state; DTensor
            parameters, FSDP2's, are quantized shard by shard, into DTensor codes and
            scales: ``docs/low-memory.md``, *FSDP2 and DCP*); or
            ``None``, the parameter's dtype, as PyTorch does (default: None).
            Complex parameters keep complex state (8-bit: codes of their real
            view). State narrower than the parameter's math is decoded, stepped
            in float32 (or the parameter's wider dtype) and stored again: see
            ``docs/low-memory.md``.
        stochastic_rounding: round what is stored in bfloat16 up or down at
            random, with probability given by the distance, instead of to
            nearest, so small updates survive on average: bfloat16 state beside
            wider parameters (`rmsprop.quantization.round_to_bfloat16`'s numbers,
            on every path), and bfloat16 parameters (the fused Triton kernel only)
            (default: False). 8-bit state is always rounded stochastically.
        launch: the Triton kernel's launch settings, `rmsprop.torch.LaunchSettings`
            (elements and warps per program), to tune it for a GPU; ``None``
            keeps its defaults (default: None).

    Raises:
        ValueError, TypeError: an invalid setting (checked by `rmsprop.Config`).

    Example:
        >>> import torch
        >>> from rmsprop.torch import RMSprop
        >>> model = torch.nn.Linear(4, 1)
        >>> opt = RMSprop(model.parameters(), flavor="tensorflow", lr=1e-3, momentum=0.9)
        >>> model(torch.randn(8, 4)).pow(2).mean().backward()
        >>> opt.step()
        >>> sorted(opt.state[model.weight])
        ['momentum_buffer', 'square_avg', 'step']
    """

    def __init__(
        self,
        params: ParamsT,
        lr: float | Tensor = NotGiven(1e-2),  # type: ignore[assignment]  # noqa: B008
        alpha: float = NotGiven(0.99),  # type: ignore[assignment]
        eps: float = NotGiven(1e-8),  # type: ignore[assignment]
        weight_decay: float = NotGiven(0),  # type: ignore[assignment]
        momentum: float = NotGiven(0),  # type: ignore[assignment]
        centered: bool = NotGiven(False),  # type: ignore[assignment]
        capturable: bool = False,
        foreach: bool | None = None,
        maximize: bool = NotGiven(False),  # type: ignore[assignment]
        differentiable: bool = False,
        *,
        fused: bool | None = None,
        flavor: str | None = None,
        decay: float | None = None,
        eps_in_sqrt: bool | None = None,
        initial_square_avg: float | None = None,
        nesterov: bool | None = None,
        lr_in_momentum: bool | None = None,
        bias_correction: bool | None = None,
        decoupled_weight_decay: bool | None = None,
        state_dtype: torch.dtype | str | None = None,
        stochastic_rounding: bool = False,
        launch: LaunchSettings | None = None,
    ) -> None:
        given = {
            name: value
            for name, value in dict(
                lr=lr,
                decay=alpha,
                eps=eps,
                weight_decay=weight_decay,
                momentum=momentum,
                centered=centered,
                maximize=maximize,
            ).items()
            if not isinstance(value, NotGiven)
        }
        if decay is not None:
            if "decay" in given:
                raise TypeError("RMSprop got both alpha and decay; they are the same setting")
            given["decay"] = decay
        extras = dict(
            eps_in_sqrt=eps_in_sqrt,
            initial_square_avg=initial_square_avg,
            nesterov=nesterov,
            lr_in_momentum=lr_in_momentum,
            bias_correction=bias_correction,
            decoupled_weight_decay=decoupled_weight_decay,
        )
        given.update({name: value for name, value in extras.items() if value is not None})
        _check_as_torch({_GROUP_KEY[name]: value for name, value in given.items()})

        tensor_lr = given.get("lr")
        if isinstance(tensor_lr, Tensor):
            given["lr"] = _lr_value(tensor_lr)
        config = flavors.flavor(flavor if flavor is not None else "pytorch", **given)

        defaults: dict[str, Any] = {_GROUP_KEY[f]: getattr(config, f) for f in FIELD_NAMES}
        if isinstance(tensor_lr, Tensor):
            defaults["lr"] = tensor_lr
        defaults.update(
            capturable=capturable, foreach=foreach, differentiable=differentiable, fused=fused
        )
        if foreach and differentiable:
            raise ValueError("foreach=True does not support differentiable=True")
        if fused and (foreach or differentiable):
            raise ValueError(
                f"fused=True cannot be combined with "
                f"{'foreach=True' if foreach else 'differentiable=True'}"
            )
        state_format = _state_format(state_dtype)
        if state_format == "8bit" and differentiable:
            raise ValueError(
                "state_dtype='8bit' cannot be combined with differentiable=True: "
                "its codes are rounded at random, which autograd cannot go through"
            )
        if launch is not None and not isinstance(launch, LaunchSettings):
            raise TypeError(f"launch must be a LaunchSettings or None, got {launch!r}")
        if not isinstance(stochastic_rounding, bool):
            raise TypeError(f"stochastic_rounding must be a bool, got {stochastic_rounding!r}")
        if stochastic_rounding and differentiable:
            raise ValueError("stochastic_rounding=True cannot be combined with differentiable=True")
        if stochastic_rounding and (fused is False or foreach) and state_format != torch.bfloat16:
            # (bfloat16 parameters only: bfloat16 state is rounded on every path)
            raise ValueError(
                "stochastic_rounding=True needs the fused kernel (fused=True or None), "
                "or state_dtype=torch.bfloat16"
            )
        # Optimizer-wide, not param-group keys: kept by pickling (see __getstate__).
        self.state_dtype: torch.dtype | str | None = state_format
        self.stochastic_rounding = stochastic_rounding
        self.launch = launch
        self.shared_memory = False  # set by share_memory()
        super().__init__(params, defaults)
        if _COUNTED_STATE:
            self.state = State()  # (counts its changes: see _take_kept)
        self._kept: dict[int, _Kept] = {}
        self._prepare_kernels()

    @property
    def _step_supports_amp_scaling(self) -> bool:  # read by torch.amp.GradScaler
        # The Triton kernel unscales and skips on the device; every other path
        # follows the same protocol on the host (see `rmsprop`).
        return any(_takes_triton_kernel(group) for group in self.param_groups)

    def __getstate__(self) -> dict[str, Any]:
        return {
            **super().__getstate__(),
            "state_dtype": self.state_dtype,
            "stochastic_rounding": self.stochastic_rounding,
            "launch": self.launch,
            "shared_memory": self.shared_memory,
        }

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Adds a param group, validating its hyperparameters first.

        A group may name ``decay`` instead of ``alpha``. An invalid group is
        refused and the optimizer is left as it was.
        """
        if not isinstance(param_group, dict):
            raise TypeError(f"param_group must be a dict, got {type(param_group).__name__}")
        if "decay" in param_group:
            if "alpha" in param_group:
                raise TypeError("param group has both alpha and decay; they are the same setting")
            param_group = dict(param_group)
            param_group["alpha"] = param_group.pop("decay")
        _group_config({**self.defaults, **param_group})
        super().add_param_group(param_group)

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        if _COUNTED_STATE:
            self.state = State(self.state.items())
        self._kept = {}
        # Pickled before these options existed (load_state_dict comes here too: keep them).
        self.__dict__.setdefault("state_dtype", None)
        self.__dict__.setdefault("stochastic_rounding", False)
        self.__dict__.setdefault("launch", None)
        self.__dict__.setdefault("shared_memory", False)
        for group in self.param_groups:
            # Groups saved by torch.optim.RMSprop (or an older version) lack
            # the extra fields: take this optimizer's defaults for them.
            for key, value in self.defaults.items():
                group.setdefault(key, value)
            for p in group["params"]:
                p_state: dict[str, Any] = self.state.get(p, {})
                if p_state and not torch.is_tensor(p_state["step"]):
                    p_state["step"] = _new_step(p, group["capturable"], float(p_state["step"]))
        self._move_steps_to_the_kernel()
        self._prepare_kernels()  # (a worker receives its optimizer pickled)

    def _prepare_kernels(self) -> None:
        formats: tuple[str, ...] = ()
        if self.state_dtype == "8bit":
            formats = ("8bit",)
        elif self.state_dtype == torch.bfloat16:
            formats = ("bfloat16",)
        for group in self.param_groups:
            _fused.prepare(group["params"], group, formats)

    def state_dict(self) -> dict[str, Any]:
        """The state and param groups, as `torch.optim.Optimizer.state_dict` returns them,
        with only the keys `torch.optim.RMSprop` has where the rule is its own.

        A `Config` field torch's optimizer lacks (``eps_in_sqrt``,
        ``initial_square_avg``, ``nesterov``, ``lr_in_momentum``, ``bias_correction``,
        ``decoupled_weight_decay``) is left out where it holds the value torch's rule
        implies, which `load_state_dict` reads a missing key as; ``fused`` is always left
        out, as `load_state_dict` keeps this optimizer's path whatever a state dict says.
        So a state dict of the ``pytorch`` flavor has exactly torch's keys, and
        `torch.distributed.checkpoint`'s planner, which reads the keys the loading
        optimizer's state dict has and refuses a checkpoint without one of them, moves
        checkpoints both ways between the two classes, and between optimizers that chose
        different paths.
        """
        state_dict = super().state_dict()
        # (Plain dicts: a checkpoint must load where this package is not installed.)
        state_dict["state"] = {key: dict(value) for key, value in state_dict["state"].items()}
        for group in state_dict["param_groups"]:
            for key, value in _TORCH_VALUES.items():
                if key in group and group[key] == value:
                    del group[key]
            group.pop("fused", None)
        return state_dict

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Loads a state dict of this class or of `torch.optim.RMSprop`.

        A loaded state dict sets every hyperparameter (``lr``, ``alpha``, ``eps``,
        ``momentum``, ... and the `Config` fields torch lacks) and the state. A `Config`
        field it lacks (a state dict of `torch.optim.RMSprop`, or one `state_dict` left
        it out of) takes the value `torch.optim.RMSprop`'s rule implies; any other key it
        lacks, this optimizer's default. It never changes the code path: ``foreach``,
        ``fused``, ``capturable`` and ``differentiable`` stay what each group of this
        optimizer has (a state dict's ``foreach=None`` would otherwise turn a
        ``foreach=False`` optimizer into a fused one).

        The state is loaded in this optimizer's format: 8-bit codes and scales as they are
        into an optimizer with ``state_dtype="8bit"``, float buffers quantized there (with
        the seed ``stream_seed(step, buffer)`` of the step they were saved at), and 8-bit
        buffers decoded to float32 by an optimizer with float state. For DTensor parameters
        (FSDP2) each shard is quantized or decoded on its own; 8-bit state loads only onto
        the sharding that saved it (its scales are per shard), float state onto any.

        Everything is checked before anything changes: a state dict with the
        wrong structure, an invalid hyperparameter, or a state tensor of the
        wrong shape or dtype (8-bit codes or their scales included) raises
        `ValueError` and leaves this optimizer as it was.
        """
        self._check_state_dict(state_dict)
        state_dict = {
            **state_dict,
            "param_groups": [
                self._loaded_group(saved, group)
                for saved, group in zip(state_dict["param_groups"], self.param_groups)
            ],
        }
        # Converted first (a negative average of squares can't be quantized): before any change.
        state_dict, own = self._in_own_format(state_dict)
        shared = {p: dict(s) for p, s in self.state.items()} if self.shared_memory else {}
        super().load_state_dict(state_dict)
        for p, buffers in own.items():
            self.state[p].update({key: self._as_stored(p, key, v) for key, v in buffers.items()})
        if self.shared_memory:
            # The workers hold the shared tensors: load into them, not beside them.
            for p, p_state in self.state.items():
                for key, value in p_state.items():
                    kept = shared.get(p, {}).get(key)
                    if kept is not None and kept.shape == value.shape:
                        p_state[key] = kept.copy_(value)
                    else:
                        value.share_memory_()

    def _in_own_format(
        self, state_dict: dict[str, Any]
    ) -> tuple[dict[str, Any], dict[Tensor, dict[str, Tensor]]]:
        """A checked state dict with its buffers in this optimizer's format: (the state dict
        without the buffers a ``state_dtype`` sets, those buffers by parameter). torch's load
        casts the buffers it is given to the parameter's dtype: the rest keep theirs.

        Raises:
            ValueError: a float average of squares with negative values, to be quantized.
        """
        param_of = {
            key: p
            for saved, group in zip(state_dict["param_groups"], self.param_groups)
            for key, p in zip(saved["params"], group["params"])
        }
        state: dict[Any, Any] = {}
        own: dict[Tensor, dict[str, Tensor]] = {}
        for key, entry in state_dict["state"].items():
            p, entry = param_of[key], dict(entry)
            for name in _BUFFER_KEYS:
                if name not in entry:
                    continue
                value, scales_key = entry[name], _lowmem.scales_key(name)
                if self._quantizes(p):
                    scales = entry.pop(scales_key, None)
                    if value.dtype != torch.uint8:
                        where = f"state_dict['state'][{key!r}][{name!r}]"
                        step = int(float(entry["step"]))
                        value, scales = self._quantized(where, p, value, name, step)
                    own.setdefault(p, {}).update({name: value, scales_key: scales})
                    del entry[name]
                    continue
                if value.dtype == torch.uint8:
                    value = _lowmem.dequantize_buffer(value, entry.pop(scales_key), name, p)
                if self.state_dtype is not None:
                    own.setdefault(p, {})[name] = value
                    del entry[name]
                else:
                    entry[name] = value
            state[key] = entry
        return {**state_dict, "state": state}, own

    def _as_stored(self, p: Tensor, key: str, value: Tensor) -> Tensor:
        """A loaded state tensor on p's device; a float buffer in this optimizer's dtype."""
        if key in _SCALES_KEYS or value.dtype == torch.uint8:
            return value.to(p.device)
        return value.to(device=p.device, dtype=self._state_dtype(p))

    @staticmethod
    def _quantized(
        where: str, p: Tensor, value: Tensor, name: str, step: int
    ) -> tuple[Tensor, Tensor]:
        if _lowmem.is_dtensor(p) and not _lowmem.is_dtensor(value):
            raise ValueError(
                f"{where} is a whole tensor; its parameter is a DTensor, whose 8-bit state is "
                "quantized shard by shard: load state sharded as the parameters are "
                "(get_optimizer_state_dict, DCP)"
            )
        if _lowmem.is_dtensor(value) and not _lowmem.is_dtensor(p):
            raise ValueError(
                f"{where} is a DTensor; its parameter is not: gather it first (DTensor.full_tensor)"
            )
        # (A DTensor's test is read whole: every rank takes the same decision.)
        if name == "square_avg" and not value.is_complex() and bool((value < 0).any()):
            raise ValueError(f"{where} has negative values: not an average of squares")
        return _lowmem.quantize_buffer(value.to(p.device), name, step)

    def state_nbytes(self) -> int:
        """Bytes the state buffers take, summed over the parameters: the averages and the
        momentum buffers in their stored dtype, 8-bit codes with their block scales (step
        counts not counted). A DTensor counts its local shard.

        Example:
            >>> import torch
            >>> from rmsprop.torch import RMSprop
            >>> model = torch.nn.Linear(1000, 100)  # 100,100 parameters
            >>> for state_dtype in (None, torch.bfloat16, "8bit"):
            ...     opt = RMSprop(model.parameters(), state_dtype=state_dtype)
            ...     model(torch.randn(2, 1000)).sum().backward()
            ...     opt.step()
            ...     print(opt.state_nbytes())
            400400
            200200
            101964
        """
        return _lowmem.state_nbytes(self.state)

    def full_precision_state_dict(self) -> dict[str, Any]:
        """`state_dict` with every buffer in float32 (or the parameter's wider dtype), which
        `torch.optim.RMSprop` (or this class with float state) loads.

        8-bit buffers are decoded (their ``_scales`` keys dropped), bfloat16 and float16
        ones widened; the rest is `state_dict`'s. The 8-bit state of DTensor parameters
        (FSDP2) is decoded shard by shard into DTensor float32 state, which an optimizer
        with float state on any sharding loads (the way to reshard 8-bit state: see
        ``docs/low-memory.md``, *FSDP2 and DCP*).

        Example:
            >>> import torch
            >>> from rmsprop.torch import RMSprop
            >>> model = torch.nn.Linear(128, 64)
            >>> opt = RMSprop(model.parameters(), state_dtype="8bit")
            >>> model(torch.randn(2, 128)).sum().backward()
            >>> opt.step()
            >>> opt.state[model.weight]["square_avg"].dtype
            torch.uint8
            >>> plain = torch.optim.RMSprop(model.parameters())
            >>> plain.load_state_dict(opt.full_precision_state_dict())
            >>> plain.state[model.weight]["square_avg"].dtype
            torch.float32
        """
        state_dict = self.state_dict()
        param_of: dict[int, Tensor] = {}
        start = 0
        for group in self.param_groups:
            param_of.update(enumerate(group["params"], start))
            start += len(group["params"])
        for index, entry in state_dict["state"].items():
            p = param_of[index]
            for name in _BUFFER_KEYS:
                value = entry.get(name)
                scales = entry.pop(_lowmem.scales_key(name), None)
                if value is None:
                    continue
                if value.dtype == torch.uint8:
                    entry[name] = _lowmem.dequantize_buffer(value, scales, name, p)
                elif value.is_floating_point() and value.element_size() < 4:
                    entry[name] = value.float()
        return state_dict

    def _loaded_group(self, saved: Mapping[str, Any], group: dict[str, Any]) -> dict[str, Any]:
        """A saved param group as `load_state_dict` loads it into ``group``: missing `Config`
        fields at torch's values, other missing keys at this optimizer's defaults, and
        ``group``'s code path."""
        return {
            **self.defaults,
            **_TORCH_VALUES,
            **saved,
            **{key: group[key] for key in _PATH_KEYS},
        }

    def _move_steps_to_the_kernel(self) -> None:
        """Puts the step counts of CUDA parameters the Triton kernel updates on their device.

        (The kernel counts on the device; counts kept on the CPU, as a state
        dict of the foreach path has them, would send their tensors elsewhere.)
        """
        for group in self.param_groups:
            if group["capturable"] or not _takes_triton_kernel(group):
                continue
            for p in group["params"]:
                p_state = self.state.get(p)
                if p_state and p.is_cuda and not p_state["step"].is_cuda:
                    p_state["step"] = p_state["step"].to(p.device)

    @_use_grad_for_differentiable
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        """Performs one optimization step.

        A step that finds no state yet for any parameter, every gradient exactly
        zero and every group's learning rate 0 only creates the state: the step
        counts stay 0 and the averages at their initial values. That is the step
        `torch.distributed.checkpoint.state_dict` takes to create the state of an
        optimizer before saving it (``get_state_dict``, ``get_optimizer_state_dict``);
        as an update it would change flavors whose state it does not leave as it
        found it (an average of squares starting at 1, coupled weight decay, the
        step count bias correction reads), so a checkpoint taken before the first
        step would change training. A parameter's gradient that is a DTensor is
        read whole (each rank takes the same decision); a step of a wrapper that
        hands each rank other parameters (``ZeroRedundancyOptimizer``) decides per
        rank.

        Args:
            closure: re-evaluates the model and returns the loss (optional).
        """
        _graph_capture_health_check(self)
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        if _COUNTED_STATE and not isinstance(self.state, State):  # replaced by the user
            self.state = State(self.state.items())  # (count its changes too)
        if self._is_priming():
            for group in self.param_groups:
                self._init_group(group, [], [], [], [], [], [])
            return loss

        grad_scale = getattr(self, "grad_scale", None)
        found_inf = getattr(self, "found_inf", None)
        compiling = torch.compiler.is_compiling()
        for index, group in enumerate(self.param_groups):
            kept = None if compiling else self._kept.get(index)
            if kept is not None and self._take_kept(kept, group, grad_scale, found_inf):
                continue
            params: list[Tensor] = []
            grads: list[Tensor] = []
            square_avgs: list[Tensor] = []
            grad_avgs: list[Tensor] = []
            buffers: list[Tensor] = []
            steps: list[Tensor] = []
            self._init_group(group, params, grads, square_avgs, grad_avgs, buffers, steps)
            fused, foreach = _fused.choose_path(
                params,
                fused=group["fused"],
                foreach=group["foreach"],
                differentiable=group["differentiable"],
            )
            tensors = StepTensors(params, grads, square_avgs, grad_avgs, buffers, steps)
            stored_apart: StepTensors | None = None
            if fused and self._keeps_formats():
                tensors, stored_apart = _split_stored_formats(tensors)
                params, grads, square_avgs, grad_avgs, buffers, steps = tensors
            if params or stored_apart is None:
                rmsprop(
                    params,
                    grads,
                    square_avgs,
                    grad_avgs,
                    buffers,
                    steps,
                    foreach=foreach,
                    fused=fused,
                    capturable=group["capturable"],
                    differentiable=group["differentiable"],
                    grad_scale=grad_scale,
                    found_inf=found_inf,
                    stochastic_rounding=self._rounds_parameters(params),
                    launch=self.launch,
                    **{field: group[_GROUP_KEY[field]] for field in STEP_FIELDS},
                )
            if stored_apart is not None:
                # After the kernel's step, which checks before it changes anything.
                reference_step(stored_apart, _hyper(group), grad_scale, found_inf, foreach=False)
            elif _COUNTED_STATE and fused and not compiling and len(params) == len(group["params"]):
                self._keep(index, group, tensors)
        return loss

    def _keep(self, index: int, group: dict[str, Any], tensors: StepTensors) -> None:
        """Keeps the fused step a group just took, to take it again while nothing changes."""
        self._kept.pop(index, None)
        hyper = _hyper(group)
        step = _fused.keep_step(tensors, hyper, self.launch)
        if step is not None:
            generation = self.state.generation  # type: ignore[attr-defined]  # a State
            self._kept[index] = _Kept(
                group,
                group["params"],
                len(group["params"]),
                generation,
                generation.value,
                self._path(group),
                step,
                tensors.params[0].is_cuda,
            )

    def _path(self, group: dict[str, Any]) -> tuple[Any, ...]:
        """What decides a group's path and lists, beside its tensors."""
        return (
            *_PATH_GETTER(group),
            group["momentum"] > 0,
            self.launch,
            self.stochastic_rounding,
        )

    def _take_kept(
        self,
        kept: _Kept,
        group: dict[str, Any],
        grad_scale: Tensor | None,
        found_inf: Tensor | None,
    ) -> bool:
        """Takes the group's kept fused step if its parameters, options and state are the ones
        it was kept for (see `rmsprop.torch._fused.KeptStep` for what else it checks);
        False, having changed nothing, if not."""
        params = group["params"]
        if (
            kept.group is not group
            or kept.params is not params
            or len(params) != kept.size
            or kept.generation is not getattr(self.state, "generation", None)
            or kept.generation_value != kept.generation.value
            or self._path(group) != kept.path
            or (kept.cuda and torch.cuda.is_current_stream_capturing())
        ):
            return False
        grads = list(map(_GRAD, params))
        return kept.step.run(grads, _hyper(group), grad_scale, found_inf, self.stochastic_rounding)

    def _is_priming(self) -> bool:
        """Whether this step finds no state, every group's lr 0 and every gradient exactly
        zero (eagerly only: a compiled step never asks)."""
        if torch.compiler.is_compiling() or any(self.state.values()):
            return False
        if not all(_is_zero(group["lr"]) for group in self.param_groups):
            return False
        grads = [p.grad for group in self.param_groups for p in group["params"]]
        present = [g for g in grads if g is not None]
        return bool(present) and all(_is_zero(g) for g in present)

    def _init_group(
        self,
        group: dict[str, Any],
        params: list[Tensor],
        grads: list[Tensor],
        square_avgs: list[Tensor],
        grad_avgs: list[Tensor],
        buffers: list[Tensor],
        steps: list[Tensor],
    ) -> None:
        """Fills the lists with the group's parameters that have gradients, and their state.

        Creates missing state first. Fills lists rather than returning them, as
        torch's optimizers do: torch.compile runs this method eagerly and
        relies on that.
        """
        with_momentum, centered = group["momentum"] > 0, group["centered"]
        # The Triton kernel counts steps on the device.
        device_steps = group["capturable"] or _takes_triton_kernel(group)
        keeps_formats = self._keeps_formats()
        for p in group["params"]:
            grad = p.grad
            if grad is None:
                continue
            if grad.is_sparse:
                raise RuntimeError("RMSprop does not support sparse gradients")
            state = self.state[p]
            if (
                not state
                or (with_momentum and "momentum_buffer" not in state)
                or (centered and "grad_avg" not in state)
            ):  # (checked here: a call per parameter on every step would cost)
                self._create_state(group, p, state, device_steps)

            params.append(p)
            grads.append(grad)
            steps.append(state["step"])
            square_avgs.append(state["square_avg"])
            if with_momentum:
                buffers.append(state["momentum_buffer"])
            if centered:
                grad_avgs.append(state["grad_avg"])
            if keeps_formats:  # (re-read every step: state[key] may have been replaced)
                _lowmem.keep_formats(p, state, self.stochastic_rounding)

    def _create_state(
        self, group: dict[str, Any], p: Tensor, state: dict[str, Tensor], device_steps: bool
    ) -> None:
        """Creates what ``p``'s state lacks for its group's rule (in shared memory once
        `share_memory` was called)."""
        created = []
        if not state:
            state["step"] = _new_step(p, device_steps)
            created += ["step", *self._new_buffer(p, state, "square_avg", group)]
        # Created when first needed, so momentum or centered may be turned
        # on in a group mid-run (the buffers start at zero).
        for key, needed in (
            ("momentum_buffer", group["momentum"] > 0),
            ("grad_avg", group["centered"]),
        ):
            if needed and key not in state:
                created += self._new_buffer(p, state, key, group)
        if self.shared_memory:
            for key in created:
                state[key].share_memory_()  # type: ignore[no-untyped-call]

    def share_memory(self) -> RMSprop:
        """Creates every state tensor now and moves it to shared memory, for Hogwild/A3C.

        Like `torch.nn.Module.share_memory`: call it (and the model's) in the parent, then
        start the workers (``fork``, ``spawn`` or ``forkserver``); every worker's
        ``step()`` then reads and writes the same averages, momentum buffers and step
        counts. Every piece of state the rule uses is created here, ``step`` included,
        rather than lazily in a worker's first step, where it would be private to that
        worker. State created later (momentum turned on mid-run) is created shared too,
        and `load_state_dict` copies loaded values into the shared tensors instead of
        replacing them.

        Concurrent steps are lock-free (Hogwild): two workers may read and write one
        element at once, and a step count advanced by two workers at once may advance by
        one. Bias correction reads the count as its step finds it. The centered variance
        is clamped at 0, so a race cannot make it negative (no NaN). CUDA tensors are
        shared through CUDA IPC when sent to a spawned worker; ``share_memory_`` leaves
        them as they are.

        Returns:
            This optimizer.

        Raises:
            ValueError: a CPU parameter is not in shared memory (call the model's
                ``share_memory()`` first): a worker's step would update its own copy. Nothing
                is changed.

        Example:
            >>> import torch
            >>> from rmsprop.torch import RMSprop
            >>> model = torch.nn.Linear(4, 2).share_memory()
            >>> opt = RMSprop(model.parameters(), flavor="a3c").share_memory()
            >>> opt.state[model.weight]["square_avg"].is_shared()
            True
        """
        private = [
            f"param_groups[{g}]['params'][{i}]"
            for g, group in enumerate(self.param_groups)
            for i, p in enumerate(group["params"])
            if p.is_cpu and not p.is_shared()
        ]
        if private:
            raise ValueError(
                f"share_memory(): {', '.join(private[:3])}{' and others' if private[3:] else ''} "
                "not in shared memory; call share_memory() on the model first, so that the "
                "workers step the same parameters"
            )
        self.shared_memory = True
        for group in self.param_groups:
            device_steps = group["capturable"] or _takes_triton_kernel(group)
            for p in group["params"]:
                state = self.state[p]
                self._create_state(group, p, state, device_steps)
                for value in state.values():
                    value.share_memory_()
        return self

    def _new_buffer(
        self, p: Tensor, state: dict[str, Tensor], key: str, group: dict[str, Any]
    ) -> list[str]:
        """Creates buffer ``key`` of ``p`` at its initial value (v₀ for the average of
        squares, else 0); returns the keys it set."""
        start = group["initial_square_avg"] if key == "square_avg" else 0.0
        if self._quantizes(p):
            if type(p) not in (Tensor, torch.nn.Parameter) and not _lowmem.is_dtensor(p):
                raise NotImplementedError(
                    f"state_dtype='8bit' does not take {type(p).__name__} parameters yet"
                )
            # A DTensor's (FSDP2's) codes and scales are DTensors, each shard in its own blocks.
            state[key], state[_lowmem.scales_key(key)] = _lowmem.filled(p, key, start)
            return [key, _lowmem.scales_key(key)]
        # A complex parameter is two reals, and each part's average starts there.
        fill = complex(start, start) if p.is_complex() else start
        dtype = self._state_dtype(p)
        state[key] = torch.full_like(p, fill, dtype=dtype, memory_format=torch.preserve_format)
        if dtype == torch.bfloat16 and self.stochastic_rounding and p.dtype != dtype:
            # The format's initial state: v₀ (say 0.1) rounded as every later value is.
            seed = q.stream_seed(0, _lowmem.BUFFER_KEYS.index(key))
            exact = torch.full_like(p, fill, dtype=torch.float32)
            _lowmem.store_bfloat16(state[key], exact, seed)
        return [key]

    def _quantizes(self, p: Tensor) -> bool:
        """Whether ``p``'s buffers are stored in 8 bits."""
        return self.state_dtype == "8bit" and _lowmem.is_quantized(p)

    def _rounds_parameters(self, params: list[Tensor]) -> bool:
        """Whether a step asks the kernels to round bfloat16 parameters stochastically: where
        there are any (the fused Triton kernel does; the other paths refuse them, saying
        why). The option's other half, bfloat16 state, every path does."""
        return self.stochastic_rounding and any(p.dtype == torch.bfloat16 for p in params)

    def _keeps_formats(self) -> bool:
        """Whether a step must record how state is stored (8-bit scales, stochastic bfloat16)."""
        return self.state_dtype == "8bit" or (
            self.stochastic_rounding and self.state_dtype == torch.bfloat16
        )

    def _state_dtype(self, p: Tensor) -> torch.dtype:
        """The dtype of ``p``'s float buffers (8-bit: those too small to quantize)."""
        if self.state_dtype == "8bit":
            return torch.complex64 if p.is_complex() else torch.float32
        if self.state_dtype is None or p.is_complex():
            return p.dtype
        assert isinstance(self.state_dtype, torch.dtype)
        return self.state_dtype

    def _check_state_dict(self, state_dict: Any) -> None:
        if not isinstance(state_dict, Mapping) or not {"state", "param_groups"} <= set(state_dict):
            raise ValueError("state_dict must be a dict with keys 'state' and 'param_groups'")
        saved_groups = state_dict["param_groups"]
        if not isinstance(saved_groups, (list, tuple)) or len(saved_groups) != len(
            self.param_groups
        ):
            raise ValueError(
                f"loaded state dict has {_count(saved_groups)} parameter groups; "
                f"this optimizer has {len(self.param_groups)}"
            )
        param_of: dict[Any, tuple[Tensor, dict[str, Any]]] = {}
        for i, (group, saved) in enumerate(zip(self.param_groups, saved_groups)):
            if not isinstance(saved, Mapping) or "params" not in saved:
                raise ValueError(f"param_groups[{i}] must be a dict with a 'params' list")
            if len(saved["params"]) != len(group["params"]):
                raise ValueError(
                    f"param_groups[{i}] has {len(saved['params'])} parameters in the state "
                    f"dict and {len(group['params'])} in this optimizer"
                )
            merged = self._loaded_group(saved, group)
            try:
                _group_config(merged)
            except (TypeError, ValueError) as error:
                raise ValueError(f"param_groups[{i}] of the state dict: {error}") from None
            for key, p in zip(saved["params"], group["params"]):
                param_of[key] = (p, merged)

        saved_state = state_dict["state"]
        if not isinstance(saved_state, Mapping):
            raise ValueError("state_dict['state'] must be a dict")
        for key, entry in saved_state.items():
            if key not in param_of:
                raise ValueError(f"state_dict['state'] has an entry {key!r} for no parameter")
            p, group = param_of[key]
            _check_param_state(f"state_dict['state'][{key!r}]", entry, p, group)


class _Kept(NamedTuple):
    """A param group's kept fused step, and what it was kept for."""

    group: dict[str, Any]
    params: list[Tensor]  # the group's list, and its length
    size: int
    generation: Generation  # the state dicts' counter, and its value
    generation_value: int
    path: tuple[Any, ...]
    step: _fused.KeptStep
    cuda: bool


_GRAD = attrgetter("grad")
# Kept steps rely on state dicts that count their changes (`State`), which torch 2.4's
# torch.compile cannot trace (a dict subclass indexed by a tensor): there the state stays
# torch's plain defaultdict and every step takes the full path, as before kept steps.
_COUNTED_STATE = _fused.ONE_OP
# The group keys that choose a path and the state lists (with momentum > 0).
_PATH_GETTER = itemgetter("foreach", "fused", "differentiable", "capturable", "centered")
_HYPER_KEYS = tuple(_GROUP_KEY[field] for field in STEP_FIELDS)


def _hyper(group: dict[str, Any]) -> Hyper:
    return Hyper(*map(group.__getitem__, _HYPER_KEYS))


def _split_stored_formats(tensors: StepTensors) -> tuple[StepTensors, StepTensors | None]:
    """(for the fused kernels, for the reference path): low-memory state (8-bit codes,
    stochastically rounded bfloat16) goes to the reference path where the device's fused
    kernel does not take it (`rmsprop.torch._fused.takes_stored_format`)."""
    apart = [
        i
        for i, v in enumerate(tensors.square_avgs)
        if _lowmem.format_of(v) is not None and not _fused_takes_stored_format(tensors, i)
    ]
    if not apart:
        return tensors, None
    skipped = set(apart)
    kept = [i for i in range(len(tensors.params)) if i not in skipped]
    return tensors.pick(kept), tensors.pick(apart)


def _fused_takes_stored_format(tensors: StepTensors, i: int) -> bool:
    state = [tensors.square_avgs[i]]
    state += [listed[i] for listed in (tensors.grad_avgs, tensors.momentum_buffers) if listed]
    return _fused.takes_stored_format(tensors.params[i], tensors.grads[i], state)


def _state_format(state_dtype: Any) -> torch.dtype | str | None:
    """``None``, a floating torch.dtype or ``"8bit"`` (``"bfloat16"`` is torch.bfloat16);
    anything else raises, naming it."""
    if state_dtype is None or (
        isinstance(state_dtype, torch.dtype) and state_dtype.is_floating_point
    ):
        return state_dtype
    if isinstance(state_dtype, str):
        if state_dtype in ("8bit", "bfloat16"):
            return torch.bfloat16 if state_dtype == "bfloat16" else state_dtype
        raise ValueError(
            f"state_dtype={state_dtype!r} is not a state format: use a floating torch.dtype, "
            "'8bit' or None"
        )
    raise TypeError(
        f"state_dtype must be a floating torch.dtype, '8bit' or None, got {state_dtype!r}"
    )


def _check_param_state(where: str, entry: Any, p: Tensor, group: dict[str, Any]) -> None:
    if not isinstance(entry, Mapping):
        raise ValueError(f"{where} must be a dict, got {type(entry).__name__}")
    unknown = sorted(set(entry) - set(_STATE_KEYS))
    if unknown:
        raise ValueError(
            f"{where} has unknown keys {unknown}; RMSprop state has {list(_STATE_KEYS)}"
        )
    required = ["step", "square_avg"]
    required += ["momentum_buffer"] if group["momentum"] > 0 else []
    required += ["grad_avg"] if group["centered"] else []
    missing = [k for k in required if k not in entry]
    if missing:
        raise ValueError(f"{where} is missing {missing}")
    step = entry["step"]
    if torch.is_tensor(step):
        ok = step.numel() == 1 and not step.is_complex() and math.isfinite(float(step))
    else:
        ok = isinstance(step, (int, float)) and not isinstance(step, bool) and math.isfinite(step)
    if not ok or float(step) < 0:
        raise ValueError(f"{where}['step'] must be a finite number >= 0, got {step!r}")
    for name in _BUFFER_KEYS:
        scales_key = _lowmem.scales_key(name)
        if name not in entry:
            if scales_key in entry:
                raise ValueError(f"{where} has {scales_key!r} but no {name!r}")
            continue
        value = entry[name]
        if not torch.is_tensor(value):
            raise ValueError(f"{where}[{name!r}] must be a tensor, got {type(value).__name__}")
        if value.dtype == torch.uint8:
            _check_codes(f"{where}[{name!r}]", value, entry.get(scales_key), p)
            continue
        if scales_key in entry:
            raise ValueError(
                f"{where} has {scales_key!r}, but {name!r} is {value.dtype}, not 8-bit codes"
            )
        if value.shape != p.shape:
            raise ValueError(
                f"{where}[{name!r}] has shape {tuple(value.shape)}; "
                f"its parameter has shape {tuple(p.shape)}"
            )
        kind_ok = value.is_complex() if p.is_complex() else value.is_floating_point()
        if not kind_ok:
            raise ValueError(
                f"{where}[{name!r}] has dtype {value.dtype}, which cannot hold the "
                f"state of a {p.dtype} parameter"
            )


def _check_codes(where: str, codes: Tensor, scales: Any, p: Tensor) -> None:
    """An 8-bit buffer: uint8 codes in p's real-view shape, and float32 scales, one per block;
    a DTensor p's as DTensors laid out as p's shards (`_lowmem.sharded_scales_shape`)."""
    shape = _lowmem.real_shape(p)
    if tuple(codes.shape) != shape:
        raise ValueError(
            f"{where} holds 8-bit codes of shape {tuple(codes.shape)}; its parameter's "
            f"real view has shape {shape}"
        )
    if not torch.is_tensor(scales):
        raise ValueError(f"{where} holds 8-bit codes without their scales (a float32 tensor)")
    sharded = _lowmem.is_dtensor(p)
    if sharded:
        _check_sharded(where, codes, scales, p)
        blocks_shape: tuple[int, ...] = _lowmem.sharded_scales_shape(p)
        what = "one row of per-shard scales per shard, padded to the largest shard's blocks"
    else:
        if _lowmem.is_dtensor(codes) or _lowmem.is_dtensor(scales):
            raise ValueError(
                f"{where} holds sharded 8-bit codes (DTensors), each shard in blocks of its "
                "own; its parameter is not sharded. Load the sharded optimizer's "
                "full_precision_state_dict(), gathered (DTensor.full_tensor), instead: it is "
                "quantized here"
            )
        blocks_shape = (-(-codes.numel() // 256),)
        what = "one per 256 codes"
    if scales.dtype != torch.float32 or tuple(scales.shape) != blocks_shape:
        raise ValueError(
            f"{where}'s scales must be float32 of shape {blocks_shape}, {what}; "
            f"got {scales.dtype} of shape {tuple(scales.shape)}"
            + (" (saved on another sharding?)" if sharded else "")
        )


def _check_sharded(where: str, codes: Tensor, scales: Tensor, p: Tensor) -> None:
    """8-bit state of a DTensor parameter: DTensor codes on p's mesh and placements, and
    DTensor scales on its mesh."""
    if not (_lowmem.is_dtensor(codes) and _lowmem.is_dtensor(scales)):
        raise ValueError(
            f"{where} holds 8-bit codes of a whole tensor, in blocks of the whole; its "
            "parameter is sharded (a DTensor), whose 8-bit state is in blocks of each shard. "
            "Load state saved sharded alike, or float32 state sharded as the parameters "
            "are, which is quantized shard by shard (docs/low-memory.md, FSDP2 and DCP)"
        )
    p_any, codes_any, scales_any = cast(Any, p), cast(Any, codes), cast(Any, scales)
    if codes_any.device_mesh != p_any.device_mesh or codes_any.placements != p_any.placements:
        raise ValueError(
            f"{where} holds 8-bit codes sharded as {codes_any.placements} on "
            f"{codes_any.device_mesh}; its parameter is sharded as {p_any.placements} on "
            f"{p_any.device_mesh}"
        )
    if scales_any.device_mesh != p_any.device_mesh:
        raise ValueError(f"{where}'s scales are on another device mesh than its parameter")


def _is_zero(value: float | Tensor) -> bool:
    """Whether a learning rate or gradient is exactly 0 everywhere (a DTensor read whole;
    a CUDA tensor in a CUDA graph's capture, or a sparse one, counts as nonzero)."""
    if not isinstance(value, Tensor):
        return value == 0
    if value.is_sparse or (value.is_cuda and torch.cuda.is_current_stream_capturing()):
        return False
    try:
        return not bool(value.any())
    except (NotImplementedError, RuntimeError):
        whole = getattr(value, "full_tensor", None)  # a DTensor without the op (older torch)
        if whole is None:
            raise
        return not bool(whole().any())


def _takes_triton_kernel(group: dict[str, Any]) -> bool:
    """Whether the group's parameters are, or may be, stepped by a kernel that counts steps
    and reads GradScaler's values on their device."""
    # A group's parameters normally share a device: the first one decides.
    first = group["params"][0] if group["params"] else None
    return first is not None and _fused.on_device(
        first.device.type,
        fused=group["fused"],
        foreach=group["foreach"],
        differentiable=group["differentiable"],
    )


def _group_config(group: Mapping[str, Any]) -> Config:
    """Validates a param group's hyperparameters by building its `Config` (torch's checks
    first, in its words)."""
    _check_as_torch(group)
    lr = group["lr"]
    if isinstance(lr, Tensor):
        lr = _lr_value(lr)
    return Config(
        **{field: group[key] for field, key in _GROUP_KEY.items() if field != "lr"}, lr=lr
    )


def _lr_value(lr: Tensor) -> float:
    if lr.numel() != 1:
        raise ValueError(f"Tensor lr must be 1-element (got shape {tuple(lr.shape)})")
    return float(lr.detach().item())


def _check_as_torch(group: Mapping[str, Any]) -> None:
    """torch.optim.RMSprop's checks of the hyperparameters it has, in its order, raising
    its exception with its message, then `Config`'s explanation (code matching torch's
    messages keeps working). `Config` checks the rest, and these again."""
    lr = group.get("lr")
    if isinstance(lr, Tensor):
        _lr_value(lr)
    for key, field, what in _TORCH_CHECKS:
        if key not in group:
            continue
        value = group[key]
        try:
            invalid = not value >= 0.0  # (NaN too, as torch's `not 0.0 <= value`)
        except (TypeError, ValueError, RuntimeError):
            continue  # not a number: Config says so (torch raises a TypeError too)
        if invalid:
            message = f"Invalid {what}: {value}"
            number = _lr_value(value) if isinstance(value, Tensor) else value
            try:
                Config().replace(**{field: number})
            except (TypeError, ValueError) as error:
                message += f" ({error})"
            raise ValueError(message)


def _new_step(p: Tensor, capturable: bool, value: float = 0.0) -> Tensor:
    # PyTorch's choice: float32 (float64 under a float64 default dtype), on the
    # CPU unless the step must be capturable.
    dtype = torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32
    return torch.tensor(value, dtype=dtype, device=p.device if capturable else "cpu")


def _graph_capture_health_check(optimizer: Optimizer) -> None:
    # Renamed from _cuda_graph_capture_health_check in torch 2.8.
    check = getattr(optimizer, "_accelerator_graph_capture_health_check", None) or getattr(
        optimizer, "_cuda_graph_capture_health_check", None
    )
    if check is not None:
        check()


def _count(groups: Any) -> Any:
    return len(groups) if isinstance(groups, (list, tuple)) else type(groups).__name__
