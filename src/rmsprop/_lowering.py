"""The rule lowered to what a kernel takes: the one place a `Config` becomes kernel settings.

Every fused kernel computes `rmsprop.Config`'s rule. What differs is how it is
told which rule: a kernel compiled per variant takes `Switches` (which
operations to emit) and `Scalars` (the step's numbers); the CPU kernel, one
loop for every variant, takes `Coefficients`, which fold the switches into
numbers (multiplying by 1 or adding 0 is exact). All three are computed here,
from anything with `Config`'s step fields (a `Config`, or a backend's per-step
rule whose ``lr`` is a float), so no kernel derives its settings on its own.

Example:
    >>> import rmsprop
    >>> from rmsprop._lowering import coefficients, scalars, switches
    >>> rule = rmsprop.flavor("keras", weight_decay=0.1, lr=0.01)
    >>> switches(rule).weight_decay, scalars(rule).shrink
    (2, 0.999)
    >>> c = coefficients(rule, step=1)
    >>> c.decay_scale, c.l2, c.eps_in, c.eps_out
    (0.999, 0.0, 1e-07, 0.0)
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np

__all__ = [
    "DECOUPLED_WEIGHT_DECAY",
    "L2_WEIGHT_DECAY",
    "NO_WEIGHT_DECAY",
    "Coefficients",
    "Scalars",
    "Switches",
    "bias",
    "coefficients",
    "scalars",
    "switches",
]

# Switches.weight_decay's values.
NO_WEIGHT_DECAY, L2_WEIGHT_DECAY, DECOUPLED_WEIGHT_DECAY = 0, 1, 2


class Switches(NamedTuple):
    """Which operations the rule has: what a kernel compiled per variant is compiled for."""

    maximize: bool
    weight_decay: int  # NO_WEIGHT_DECAY, L2_WEIGHT_DECAY or DECOUPLED_WEIGHT_DECAY
    centered: bool
    momentum: bool
    nesterov: bool
    lr_in_momentum: bool
    eps_in_sqrt: bool
    bias_correction: bool


def switches(rule: Any) -> Switches:
    """The rule's `Switches`."""
    weight_decay = NO_WEIGHT_DECAY
    if rule.weight_decay != 0:
        weight_decay = DECOUPLED_WEIGHT_DECAY if rule.decoupled_weight_decay else L2_WEIGHT_DECAY
    return Switches(
        maximize=bool(rule.maximize),
        weight_decay=weight_decay,
        centered=bool(rule.centered),
        momentum=rule.momentum > 0,
        nesterov=bool(rule.nesterov),
        lr_in_momentum=bool(rule.lr_in_momentum),
        eps_in_sqrt=bool(rule.eps_in_sqrt),
        bias_correction=bool(rule.bias_correction),
    )


class Scalars(NamedTuple):
    """The rule's numbers for one step, as plain Python floats (float64).

    ``shrink`` is decoupled weight decay's factor 1 - η·λ. Bias correction's
    1 - ρᵗ is computed from ``log2_decay_high + log2_decay_low`` = log2(ρ)
    (-inf, 0 when ρ = 0, where ρᵗ = 0): two float32 halves keep float64's
    accuracy in a kernel whose scalars are float32.
    """

    lr: float
    shrink: float
    decay: float
    one_minus_decay: float
    eps: float
    momentum: float
    weight_decay: float
    log2_decay_high: float
    log2_decay_low: float


def scalars(rule: Any) -> Scalars:
    """The rule's `Scalars` (``rule.lr`` a number)."""
    # Plain floats: a kernel compiler may type (and specialize) each scalar by its Python
    # type, so a param group's int (momentum=0, lr=1) must not reach it as an int.
    lr, decay, weight_decay = float(rule.lr), float(rule.decay), float(rule.weight_decay)
    if decay > 0:
        log2_decay = math.log2(decay)
        high = _float32(log2_decay)
        low = log2_decay - high
    else:
        high, low = -math.inf, 0.0
    return Scalars(
        lr=lr,
        shrink=1 - lr * weight_decay,
        decay=decay,
        one_minus_decay=1 - decay,
        eps=float(rule.eps),
        momentum=float(rule.momentum),
        weight_decay=weight_decay,
        log2_decay_high=high,
        log2_decay_low=low,
    )


def _float32(x: float) -> float:
    return float(np.float32(x))  # rounded to nearest even


class Coefficients(NamedTuple):
    """The rule of one tensor's step, folded into the CPU kernel's scalars.

    Per element, with every unused term an exact 1 or 0:
    ``g ← g_sign·g + l2·θ; v ← ρ·v + (1-ρ)·g²; s ← v·bias`` (centered:
    ``m ← ρ·m + (1-ρ)·g; s ← max(s - (m·bias)², 0)``);
    ``u ← g / (sqrt(s + eps_in) + eps_out)``; with momentum
    ``b ← μ·b + buf_scale·u; u ← nest_u·u + nest_b·b``; then
    ``θ ← θ·decay_scale - lr_out·u``.
    """

    g_sign: float
    l2: float
    decay_scale: float
    rho: float
    one_minus_rho: float
    bias: float
    eps_in: float
    eps_out: float
    mu: float
    buf_scale: float
    nest_u: float
    nest_b: float
    lr_out: float


def coefficients(rule: Any, step: float) -> Coefficients:
    """Folds a rule and a tensor's step count into `Coefficients`.

    ``step`` counts from 1 and matters only with bias correction.
    """
    on, s = switches(rule), scalars(rule)
    lr_inside = on.momentum and on.lr_in_momentum
    # lr multiplies u inside the buffer (TF) or the buffer's output (PyTorch).
    buf_scale = s.lr if lr_inside else 1.0
    return Coefficients(
        g_sign=-1.0 if on.maximize else 1.0,
        l2=s.weight_decay if on.weight_decay == L2_WEIGHT_DECAY else 0.0,
        decay_scale=s.shrink if on.weight_decay == DECOUPLED_WEIGHT_DECAY else 1.0,
        rho=s.decay,
        one_minus_rho=s.one_minus_decay,
        bias=bias(s.decay, step) if on.bias_correction else 1.0,
        eps_in=s.eps if on.eps_in_sqrt else 0.0,
        eps_out=0.0 if on.eps_in_sqrt else s.eps,
        mu=s.momentum,
        buf_scale=buf_scale,
        nest_u=buf_scale if on.nesterov else 0.0,
        nest_b=s.momentum if on.nesterov else 1.0,
        lr_out=1.0 if lr_inside else s.lr,
    )


def bias(decay: float, step: float) -> float:
    """Bias correction's factor 1/(1 - ρᵗ), in float64."""
    return float(1 / (1 - decay**step))
