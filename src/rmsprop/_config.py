"""`Config`: every way RMSprop implementations differ, validated in one place."""

from __future__ import annotations

import dataclasses
import math
import numbers
import re
from typing import Any

__all__ = ["RULE", "Config", "with_rule"]

RULE = """\
g ← -g                                   if maximize
g ← g + λ·θ                              if weight_decay and not decoupled_weight_decay
θ ← θ - η·λ·θ                            if weight_decay and decoupled_weight_decay
v ← ρ·v + (1 - ρ)·g²                     (v starts at initial_square_avg)
m ← ρ·m + (1 - ρ)·g                      if centered (m starts at 0)
v̂, m̂ ← v/(1 - ρᵗ), m/(1 - ρᵗ)            if bias_correction, else v, m
s ← max(v̂ - m̂², 0)  if centered, else v̂
d ← sqrt(s + ε)      if eps_in_sqrt, else sqrt(s) + ε
u ← g / d
without momentum:     θ ← θ - η·u
lr outside the buffer (PyTorch):    b ← μ·b + u;    θ ← θ - η·(u + μ·b if nesterov else b)
lr inside the buffer (TF, optax):   b ← μ·b + η·u;  θ ← θ - (η·u + μ·b if nesterov else b)"""
"""The update rule every backend and kernel computes, per element, in this order: the one
text of it, which `with_rule` puts into each docstring that states it."""


def with_rule(doc: str | None) -> str | None:
    """``doc`` with its ``{rule}`` line replaced by `RULE`, indented as that line is
    (``None`` stays ``None``: ``python -OO`` strips docstrings)."""
    if doc is None:
        return None
    if "{rule}" not in doc:
        raise ValueError("with_rule needs a docstring with a {rule} line")
    indent = re.search(r"^([ \t]*)\{rule\}", doc, re.MULTILINE)
    prefix = indent[1] if indent else ""
    return doc.replace("{rule}", RULE.replace("\n", "\n" + prefix), 1)


@dataclasses.dataclass(frozen=True)
class Config:
    r"""One RMSprop setting: the exact update rule and its hyperparameters.

    Every backend computes this rule and nothing else; the named presets in
    :mod:`rmsprop.flavors` are just instances of it. Defaults are PyTorch's
    (``torch.optim.RMSprop``). For each parameter :math:`\theta` with gradient
    :math:`g` at step :math:`t = 1, 2, \dots`, in exactly this order:

    .. code-block:: text

        {rule}

    where η = ``lr``, ρ = ``decay``, ε = ``eps``, μ = ``momentum``,
    λ = ``weight_decay``, and every operation is elementwise. Complex
    parameters are treated as pairs of independent reals (as PyTorch does).
    The centered variance is clamped at 0 before the root: floating-point
    cancellation can make ``v - m²`` slightly negative, where PyTorch and optax
    return NaN; wherever they return a finite number the clamp changes nothing.

    Args:
        lr: learning rate η (≥ 0).
        decay: ρ, the decay of the running averages, in [0, 1]; PyTorch calls
            it ``alpha``, Keras ``rho``.
        eps: ε (≥ 0), added to the denominator for numerical stability.
        eps_in_sqrt: add ε inside the square root (TensorFlow, Keras, optax)
            rather than after it (PyTorch).
        initial_square_avg: the value the average of squares starts at: 0 in
            PyTorch, Keras and optax, 1 in TF1 and timm (≥ 0).
        centered: divide by an estimate of the variance, ``v - m²``, instead
            of the uncentered second moment ``v`` (Graves 2013).
        momentum: μ, the heavy-ball momentum factor, in [0, 1]; 0 disables it.
        nesterov: Nesterov momentum, in optax's form; needs ``momentum > 0``.
        lr_in_momentum: accumulate η·u in the momentum buffer (TF1, Keras,
            optax, timm) instead of u (PyTorch). The two agree for a constant
            learning rate and differ under a schedule.
        bias_correction: divide the averages by ``1 - ρᵗ`` (optax's option);
            needs ``decay < 1``.
        weight_decay: λ (≥ 0).
        decoupled_weight_decay: shrink the parameter by ``η·λ·θ`` before the
            step (Keras 3, timm ``decoupled_decay``) instead of adding ``λ·θ``
            to the gradient (L2, PyTorch).
        maximize: ascend the objective instead of descending it.

    Raises:
        TypeError: a field has the wrong type (e.g. a string, or a bool where
            a number is expected).
        ValueError: a field is out of range or not finite, or two fields
            contradict each other.

    Example:
        >>> import rmsprop
        >>> rmsprop.Config(lr=1e-3, decay=0.9, eps_in_sqrt=True)
        Config(lr=0.001, decay=0.9, eps=1e-08, eps_in_sqrt=True, ...)
        >>> rmsprop.Config(decay=1.5)
        Traceback (most recent call last):
        ...
        ValueError: Config.decay = 1.5 is out of range: it must be in [0, 1]
    """

    lr: float = 1e-2
    decay: float = 0.99
    eps: float = 1e-8
    eps_in_sqrt: bool = False
    initial_square_avg: float = 0.0
    centered: bool = False
    momentum: float = 0.0
    nesterov: bool = False
    lr_in_momentum: bool = False
    bias_correction: bool = False
    weight_decay: float = 0.0
    decoupled_weight_decay: bool = False
    maximize: bool = False

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if field.name in BOOL_FIELDS:
                _check_bool(field.name, value)
                object.__setattr__(self, field.name, bool(value))
            else:
                low, high = _RANGES[field.name]
                _check_number(field.name, value, low, high)
                # Store plain floats so equality, hashing and repr don't depend
                # on whether the caller passed an int or a NumPy scalar.
                object.__setattr__(self, field.name, float(value))
        if self.nesterov and self.momentum == 0:
            raise ValueError("Config.nesterov = True needs momentum > 0 (got momentum = 0.0)")
        if self.bias_correction and self.decay == 1:
            raise ValueError(
                "Config.bias_correction = True needs decay < 1 (got decay = 1.0): "
                "the correction 1/(1 - decay^t) would divide by zero"
            )

    def replace(self, **changes: Any) -> Config:
        """Returns a copy with some fields changed (validated like a new one).

        Raises:
            TypeError: a name in ``changes`` is not a field of `Config`.
        """
        unknown = sorted(set(changes) - set(FIELD_NAMES))
        if unknown:
            raise TypeError(
                f"unknown Config field(s) {', '.join(map(repr, unknown))}; "
                f"the fields are: {', '.join(FIELD_NAMES)}"
            )
        return dataclasses.replace(self, **changes)

    def __repr__(self) -> str:
        body = ", ".join(f"{f}={getattr(self, f)!r}" for f in FIELD_NAMES)
        return f"Config({body})"


Config.__doc__ = with_rule(Config.__doc__)

# Inclusive bounds of each numeric field.
_RANGES: dict[str, tuple[float, float]] = {
    "lr": (0.0, math.inf),
    "decay": (0.0, 1.0),
    "eps": (0.0, math.inf),
    "initial_square_avg": (0.0, math.inf),
    "momentum": (0.0, 1.0),
    "weight_decay": (0.0, math.inf),
}

FIELD_NAMES: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(Config))
# The fields a step reads: the initial average is only read when the state is created.
STEP_FIELDS: tuple[str, ...] = tuple(name for name in FIELD_NAMES if name != "initial_square_avg")
BOOL_FIELDS: frozenset[str] = frozenset(
    f.name for f in dataclasses.fields(Config) if f.type in ("bool", bool)
)


def _check_bool(name: str, value: object) -> None:
    # NumPy's bool scalar is not a bool subclass but is what array comparisons give.
    is_numpy_bool = type(value).__module__ == "numpy" and type(value).__name__ in ("bool_", "bool")
    if not isinstance(value, bool) and not is_numpy_bool:
        raise TypeError(f"Config.{name} must be a bool, got {type(value).__name__} {value!r}")


def _check_number(name: str, value: object, low: float, high: float) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(
            f"Config.{name} must be a real number, got {type(value).__name__} {value!r}"
        )
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"Config.{name} = {value!r} is not finite")
    if not low <= number <= high:
        allowed = f"in [{low:g}, {high:g}]" if math.isfinite(high) else f">= {low:g}"
        raise ValueError(f"Config.{name} = {value!r} is out of range: it must be {allowed}")
