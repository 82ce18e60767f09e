r"""Translation: a `Config` as another framework's own optimizer arguments, where that is exact.

`translate` answers "which arguments to ``torch.optim.RMSprop`` (or
``optax.rmsprop``, ``keras.optimizers.RMSprop``, TF1's
``RMSPropOptimizer``, timm's ``RMSpropTF``) compute this rule?". It returns
them only when the framework's own optimizer computes exactly the rule of
the `Config`, under any learning-rate schedule. Otherwise it raises
`TranslationError`, naming each difference the framework cannot express and
the flavor that computes the rule in PyTorch and JAX instead.

Some differences vanish for particular values, and then the translation
goes through: ε inside or outside the root is the same rule when ε = 0; where
the learning rate sits relative to the momentum buffer does not matter without
momentum; the form of weight decay does not matter without weight decay.

Example:
    >>> import rmsprop
    >>> from rmsprop.translation import translate
    >>> translate(rmsprop.flavor("keras", lr=0.01, momentum=0.9), to="optax")
    {'learning_rate': 0.01, 'decay': 0.9, 'eps': 1e-07, 'initial_scale': 0.0,
     'eps_in_sqrt': True, 'centered': False, 'momentum': 0.9, 'nesterov': False,
     'bias_correction': False}
    >>> translate(rmsprop.flavor("tensorflow", lr=0.045), to="pytorch")
    Traceback (most recent call last):
    ...
    rmsprop.translation.TranslationError: torch.optim.RMSprop cannot compute this rule exactly:
      - eps_in_sqrt=True: ...
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

from rmsprop._config import FIELD_NAMES, Config
from rmsprop.flavors import FLAVORS

__all__ = ["TARGETS", "Target", "TranslationError", "inexpressible_fields", "translate"]


class TranslationError(ValueError):
    """A `Config` that the target framework's own optimizer cannot compute exactly.

    Attributes:
        target: the framework asked for, a key of `TARGETS`.
        fields: the `Config` fields whose values the framework cannot express.
        suggestion: the flavor expression that computes the rule instead.
    """

    def __init__(
        self, target: str, fields: tuple[str, ...], reasons: tuple[str, ...], suggestion: str
    ) -> None:
        self.target = target
        self.fields = fields
        self.suggestion = suggestion
        optimizer = TARGETS[target].optimizer
        lines = [f"{optimizer} cannot compute this rule exactly:"]
        lines += [f"  - {reason}" for reason in reasons]
        lines.append(f"Use the flavor instead, which computes it exactly: {suggestion}")
        super().__init__("\n".join(lines))


@dataclasses.dataclass(frozen=True)
class Target:
    """A framework optimizer that `translate` writes arguments for.

    Attributes:
        name: the key in `TARGETS` (what ``translate(..., to=)`` takes).
        optimizer: the optimizer the arguments are for.
        flavor: the flavor that reproduces the optimizer.
        fixed: `Config` fields the optimizer has no argument for, with the
            value its rule always uses.
        arguments: builds the optimizer's keyword arguments from a `Config`
            that agrees with ``fixed``.
    """

    name: str
    optimizer: str
    flavor: str
    fixed: Mapping[str, object]
    arguments: Callable[[Config], dict[str, Any]]


def _torch_style_arguments(c: Config) -> dict[str, Any]:
    """The arguments torch.optim.RMSprop and the classes modelled on it share."""
    return {
        "lr": c.lr,
        "alpha": c.decay,
        "eps": c.eps,
        "weight_decay": c.weight_decay,
        "momentum": c.momentum,
        "centered": c.centered,
    }


def _pytorch_arguments(c: Config) -> dict[str, Any]:
    return {**_torch_style_arguments(c), "maximize": c.maximize}


def _optax_arguments(c: Config) -> dict[str, Any]:
    return {
        "learning_rate": c.lr,
        "decay": c.decay,
        "eps": c.eps,
        "initial_scale": c.initial_square_avg,
        "eps_in_sqrt": c.eps_in_sqrt,
        "centered": c.centered,
        # optax keeps a momentum buffer for any number; None is "no momentum".
        "momentum": c.momentum if c.momentum > 0 else None,
        "nesterov": c.nesterov,
        "bias_correction": c.bias_correction,
    }


def _keras_arguments(c: Config) -> dict[str, Any]:
    return {
        "learning_rate": c.lr,
        "rho": c.decay,
        "momentum": c.momentum,
        "epsilon": c.eps,
        "centered": c.centered,
        "weight_decay": c.weight_decay if c.weight_decay > 0 else None,
    }


def _tensorflow_arguments(c: Config) -> dict[str, Any]:
    return {
        "learning_rate": c.lr,
        "decay": c.decay,
        "momentum": c.momentum,
        "epsilon": c.eps,
        "centered": c.centered,
    }


def _timm_arguments(c: Config) -> dict[str, Any]:
    return {
        **_torch_style_arguments(c),
        # Without weight decay or momentum these two change nothing: RMSpropTF's defaults.
        "decoupled_decay": c.decoupled_weight_decay and c.weight_decay > 0,
        "lr_in_momentum": c.lr_in_momentum or c.momentum == 0,
    }


_NO_EXTRAS = {"nesterov": False, "bias_correction": False}
# What RL libraries' RMSprop classes share with PyTorch's: L2 decay, lr outside the buffer.
_TORCH_STYLE = {
    "lr_in_momentum": False,
    "decoupled_weight_decay": False,
    "maximize": False,
    **_NO_EXTRAS,
}

TARGETS: Mapping[str, Target] = MappingProxyType(
    {
        target.name: target
        for target in (
            Target(
                "pytorch",
                "torch.optim.RMSprop",
                "pytorch",
                {
                    "eps_in_sqrt": False,
                    "initial_square_avg": 0.0,
                    "lr_in_momentum": False,
                    "decoupled_weight_decay": False,
                    **_NO_EXTRAS,
                },
                _pytorch_arguments,
            ),
            Target(
                "optax",
                "optax.rmsprop",
                "optax",
                {"lr_in_momentum": True, "weight_decay": 0.0, "maximize": False},
                _optax_arguments,
            ),
            Target(
                "keras",
                "keras.optimizers.RMSprop (Keras 3)",
                "keras",
                {
                    "eps_in_sqrt": True,
                    "initial_square_avg": 0.0,
                    "lr_in_momentum": True,
                    "decoupled_weight_decay": True,
                    "maximize": False,
                    **_NO_EXTRAS,
                },
                _keras_arguments,
            ),
            Target(
                "tensorflow",
                "tf.compat.v1.train.RMSPropOptimizer",
                "tensorflow",
                {
                    "eps_in_sqrt": True,
                    "initial_square_avg": 1.0,
                    "lr_in_momentum": True,
                    "weight_decay": 0.0,
                    "maximize": False,
                    **_NO_EXTRAS,
                },
                _tensorflow_arguments,
            ),
            Target(
                "timm",
                "timm.optim.RMSpropTF",
                "timm",
                {"eps_in_sqrt": True, "initial_square_avg": 1.0, "maximize": False, **_NO_EXTRAS},
                _timm_arguments,
            ),
            Target(
                "sb3",
                "stable_baselines3.common.sb2_compat.rmsprop_tf_like.RMSpropTFLike",
                "sb3",
                {"eps_in_sqrt": True, "initial_square_avg": 1.0, **_TORCH_STYLE},
                _torch_style_arguments,
            ),
            Target(
                "pfrl",
                "pfrl.optimizers.SharedRMSpropEpsInsideSqrt",
                "pfrl",
                {"eps_in_sqrt": True, "initial_square_avg": 0.0, **_TORCH_STYLE},
                _torch_style_arguments,
            ),
        )
    }
)
"""Every framework `translate` writes arguments for, by name."""


def translate(config: Config, to: str) -> dict[str, Any]:
    r"""The target framework's own optimizer arguments that compute ``config``'s rule exactly.

    "Exactly" means the same arithmetic, step for step, under any learning
    rate schedule, up to the order of floating-point operations (as between
    any two implementations). A field the target has no argument for (its
    `Target.fixed`) must hold the target's value, unless it cannot change the
    rule: ε's placement when ε = 0 (√(s + 0) = √s + 0), the learning rate's
    place in the momentum buffer when μ = 0, the weight-decay form when λ = 0.

    Two caveats the arguments cannot carry: for complex parameters optax
    averages |g|² where PyTorch and this library average each part apart; and
    TF1 rounds Python-number hyperparameters to float32 before casting them
    to the variable's dtype, so float64 runs differ in the last digits.

    Args:
        config: the rule, e.g. ``rmsprop.flavor("keras", lr=0.01)``.
        to: the framework, a key of `TARGETS`: ``"pytorch"``
            (``torch.optim.RMSprop``), ``"optax"`` (``optax.rmsprop``),
            ``"keras"`` (Keras 3 ``keras.optimizers.RMSprop``),
            ``"tensorflow"`` (``tf.compat.v1.train.RMSPropOptimizer``),
            ``"timm"`` (``timm.optim.RMSpropTF``), ``"sb3"`` (stable-baselines3's
            ``RMSpropTFLike``) or ``"pfrl"`` (``pfrl.optimizers.SharedRMSpropEpsInsideSqrt``).

    Returns:
        The keyword arguments, with the framework's names, for every
        hyperparameter the optimizer takes (besides the parameters). Pass the
        learning rate schedule the framework's own way.

    Raises:
        TranslationError: (a `ValueError`) the optimizer cannot compute this
            rule; the message names each difference (ε inside or outside the
            root, the average's initial value, the learning rate inside or
            outside the momentum buffer, the weight-decay form, Nesterov, bias
            correction, maximize), what it changes, and the flavor to use.
        ValueError: ``to`` is not a known framework.
        TypeError: ``config`` is not a `Config`.

    Example:
        PyTorch's own optimizer computes PyTorch's rule with any
        hyperparameters, but not DQN's, which puts ε inside the root:

        >>> import rmsprop
        >>> from rmsprop.translation import translate
        >>> translate(rmsprop.flavor("pytorch", decay=0.9, momentum=0.5), to="pytorch")
        {'lr': 0.01, 'alpha': 0.9, 'eps': 1e-08, 'weight_decay': 0.0, 'momentum': 0.5,
         'centered': False, 'maximize': False}
        >>> translate(rmsprop.flavor("dqn"), to="pytorch")
        Traceback (most recent call last):
        ...
        rmsprop.translation.TranslationError: torch.optim.RMSprop cannot compute this rule exactly:
          - eps_in_sqrt=True: ε = 0.01 goes inside the root here, √(v + ε), and outside ...
        Use the flavor instead, which computes it exactly: rmsprop.torch.RMSprop(...flavor="dqn")
    """
    if not isinstance(config, Config):
        raise TypeError(f"config must be a rmsprop.Config, got {type(config).__name__}")
    try:
        target = TARGETS[to]
    except (KeyError, TypeError):
        known = ", ".join(TARGETS)
        raise ValueError(f"unknown framework {to!r}; translate knows: {known}") from None
    fields = inexpressible_fields(config, target)
    if fields:
        reasons = tuple(_REASONS[field](config, target) for field in fields)
        raise TranslationError(target.name, fields, reasons, _suggestion(config, target))
    return target.arguments(config)


def _matters(config: Config, field: str) -> bool:
    """Whether a field's value changes the rule, given the others."""
    if field == "eps_in_sqrt":
        return config.eps != 0  # sqrt(s + 0) is sqrt(s) + 0
    if field == "lr_in_momentum":
        return config.momentum != 0
    if field == "decoupled_weight_decay":
        return config.weight_decay != 0
    return True


def inexpressible_fields(config: Config, target: Target) -> tuple[str, ...]:
    """The fields of ``config`` that ``target``'s own optimizer cannot express (none: it
    computes the same rule, and `translate` gives its arguments)."""
    return tuple(
        field
        for field in FIELD_NAMES  # in Config's order, so messages read the same every time
        if field in target.fixed
        and getattr(config, field) != target.fixed[field]
        and _matters(config, field)
    )


def _eps_reason(c: Config, target: Target) -> str:
    here, there = ("inside", "outside") if c.eps_in_sqrt else ("outside", "inside")
    forms = {"inside": "√(v + ε)", "outside": "√v + ε"}
    return (
        f"eps_in_sqrt={c.eps_in_sqrt}: ε = {c.eps:g} goes {here} the root here, {forms[here]}, "
        f"and {there} it in {target.optimizer}, {forms[there]}; for gradients much smaller "
        f"than √ε = {math.sqrt(c.eps):.3g} the steps differ by up to 1/√ε = "
        f"{1 / math.sqrt(c.eps):.3g} times"
    )


def _initial_reason(c: Config, target: Target) -> str:
    there = float(target.fixed["initial_square_avg"])  # type: ignore[arg-type]
    from_zero = (
        f"; from 0 the first step is lr/√(1 - ρ) = {1 / math.sqrt(1 - c.decay):.3g}·lr "
        "whatever the gradient's size"
        if c.decay < 1
        else ""
    )
    return (
        f"initial_square_avg={c.initial_square_avg:g}: the average of squares starts at "
        f"{c.initial_square_avg:g} here and at {there:g} in {target.optimizer}{from_zero}; "
        f"the start's weight in the average fades only as ρᵗ (ρ¹⁰⁰ = {c.decay**100:.2g})"
    )


def _lr_in_momentum_reason(c: Config, target: Target) -> str:
    here, there = ("η·u", "u") if c.lr_in_momentum else ("u", "η·u")
    return (
        f"lr_in_momentum={c.lr_in_momentum}: the momentum buffer accumulates {here} here and "
        f"{there} in {target.optimizer}; the two agree for a constant learning rate only, "
        "and differ under any schedule or warm-up"
    )


def _decoupled_reason(c: Config, target: Target) -> str:
    if c.decoupled_weight_decay:
        return (
            "decoupled_weight_decay=True: weight decay shrinks the parameter, θ ← θ - η·λ·θ, "
            f"before the step here; {target.optimizer} adds λ·θ to the gradient (L2)"
        )
    return (
        "decoupled_weight_decay=False: weight decay adds λ·θ to the gradient (L2) here; "
        f"{target.optimizer} shrinks the parameter, θ ← θ - η·λ·θ, before the step"
    )


def _fixed_reason(field: str, what: str) -> Callable[[Config, Target], str]:
    def reason(c: Config, target: Target) -> str:
        value = getattr(c, field)
        shown = f"{value:g}" if isinstance(value, float) else str(value)
        hint = _HINTS.get((target.name, field), "")
        return f"{field}={shown}: {target.optimizer} has no {what}{hint}"

    return reason


_HINTS = {
    ("optax", "weight_decay"): " (for L2, chain optax.add_decayed_weights(λ) before it)",
    ("tensorflow", "weight_decay"): " (add λ/2·‖θ‖² to the loss for L2)",
}

_REASONS: dict[str, Callable[[Config, Target], str]] = {
    "eps_in_sqrt": _eps_reason,
    "initial_square_avg": _initial_reason,
    "lr_in_momentum": _lr_in_momentum_reason,
    "decoupled_weight_decay": _decoupled_reason,
    "weight_decay": _fixed_reason("weight_decay", "weight decay"),
    "nesterov": _fixed_reason("nesterov", "Nesterov momentum"),
    "bias_correction": _fixed_reason("bias_correction", "bias correction"),
    "maximize": _fixed_reason("maximize", "maximize option (negate the loss instead)"),
}

# The JAX backend takes optax's names for these two fields.
_JAX_NAMES = {"lr": "learning_rate", "initial_square_avg": "initial_scale"}


def _nearest_flavor(config: Config, preferred: str) -> tuple[str, dict[str, Any]]:
    """The flavor needing the fewest overrides to equal ``config`` (ties: ``preferred``)."""

    def overrides(name: str) -> dict[str, Any]:
        preset = FLAVORS[name].config
        return {
            f: getattr(config, f) for f in FIELD_NAMES if getattr(config, f) != getattr(preset, f)
        }

    names = [preferred, *(n for n in FLAVORS if n != preferred)]
    best = min(names, key=lambda name: len(overrides(name)))
    return best, overrides(best)


def _suggestion(config: Config, target: Target) -> str:
    name, changes = _nearest_flavor(config, target.flavor)
    torch_args = "".join(f", {f}={v!r}" for f, v in changes.items())
    jax_args = "".join(f", {_JAX_NAMES.get(f, f)}={v!r}" for f, v in changes.items())
    in_torch = f'rmsprop.torch.RMSprop(params, flavor="{name}"{torch_args})'
    in_jax = f'rmsprop.jax.rmsprop(flavor="{name}"{jax_args})'
    if target.name in ("pytorch", "timm", "sb3", "pfrl"):  # torch optimizers
        return in_torch
    if target.name == "optax":
        return in_jax
    return f"{in_torch} in PyTorch, {in_jax} in JAX"


def __getattr__(name: str) -> object:
    # The flavor pages' generators moved to rmsprop.tables, beside the flavor table; their
    # old names keep working, with a warning.
    if name in ("translation_table", "flavor_details"):
        import warnings

        from rmsprop import tables

        warnings.warn(
            f"rmsprop.translation.{name} is rmsprop.tables.{name} now",
            DeprecationWarning,
            stacklevel=2,
        )
        return getattr(tables, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
