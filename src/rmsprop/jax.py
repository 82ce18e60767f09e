r"""JAX backend: `rmsprop`, a drop-in for `optax.rmsprop` that computes every flavor.

Importing this module imports JAX and optax; ``import rmsprop`` alone does not.

`rmsprop` takes `optax.rmsprop`'s arguments, in the same order and with the
same defaults, and returns an optax gradient transformation: its ``update``
turns gradients into the updates that `optax.apply_updates` adds to the
parameters. With no ``flavor`` it computes what `optax.rmsprop` computes.
``flavor="pytorch"`` (or ``"tensorflow"``, ``"keras"``, ... see
`rmsprop.FLAVORS`) switches to that framework's exact rule and defaults; any
argument you pass overrides the flavor's value. The rule, in the order it is
computed, is `rmsprop.Config`'s; as a transformation, with step size η:

.. math::

    v_t = \rho v_{t-1} + (1-\rho) g_t^2, \qquad
    \Delta\theta_t = -\eta \, \frac{g_t}{\sqrt{v_t + \epsilon}}

Example:
    >>> import jax.numpy as jnp
    >>> import optax
    >>> import rmsprop.jax
    >>> opt = rmsprop.jax.rmsprop(learning_rate=0.01)  # optax.rmsprop(0.01)
    >>> params = {"w": jnp.array([0.2, 0.4, 0.6])}
    >>> state = opt.init(params)
    >>> grads = {"w": jnp.array([-0.5, 0.3, 0.24])}
    >>> updates, state = opt.update(grads, state, params)
    >>> print(optax.apply_updates(params, updates)["w"])
    [0.23162277 0.36837724 0.56837726]

    PyTorch's rule, with its momentum and weight decay, as an optax transformation:

    >>> opt = rmsprop.jax.rmsprop(1e-3, momentum=0.9, flavor="pytorch", weight_decay=1e-4)
    >>> state = opt.init(params)
    >>> updates, state = opt.update(grads, state, params)
    >>> state.count, state.mu is None, state.trace["w"].shape
    (Array(1, dtype=int32), True, (3,))
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax  # type: ignore[import-untyped]

from rmsprop import flavors, quantization
from rmsprop._config import Config, with_rule
from rmsprop._not_given import NotGiven

__all__ = ["QuantizedArray", "RMSpropState", "rmsprop"]

Tree = Any  # a pytree of arrays (``None`` and empty subtrees allowed)
Scalar = Any  # a Python number or a 0-d array, maybe traced (optax.inject_hyperparams)

# A value for a numeric field that cannot be checked (a schedule, or an array
# traced by jit): in every numeric field's range, and it passes every check
# that ties two fields, so Config checks the other fields only.
_UNCHECKED = 0.5


class _Defaults:
    """`optax.rmsprop`'s defaults (and the "optax" flavor's), marked as not passed."""

    learning_rate: Any = NotGiven(None, "<required unless flavor= is given>")
    decay: Any = NotGiven(0.9)
    eps: Any = NotGiven(1e-8)
    initial_scale: Any = NotGiven(0.0)
    eps_in_sqrt: Any = NotGiven(True)
    centered: Any = NotGiven(False)
    momentum: Any = NotGiven(None)
    nesterov: Any = NotGiven(False)
    bias_correction: Any = NotGiven(False)
    weight_decay: Any = NotGiven(0.0)
    decoupled_weight_decay: Any = NotGiven(False)
    lr_in_momentum: Any = NotGiven(True)
    maximize: Any = NotGiven(False)


class QuantizedArray(NamedTuple):
    """A state buffer in 8-bit blocks (`rmsprop.quantization`'s format).

    Attributes:
        codes: uint8, one per element of the parameter's real view (its shape,
            with a trailing axis of 2 for a complex parameter: real, imaginary);
            ``codes.ravel()`` are `rmsprop.quantization.quantize`'s codes.
        scales: float32, one per block of 256 elements of ``codes.ravel()``.
    """

    codes: jax.Array
    scales: jax.Array


class RMSpropState(NamedTuple):
    """The state of `rmsprop`: a step count and the running averages.

    ``nu``, ``mu`` and ``trace`` have the parameters' tree structure; one the
    rule does not need is ``None``. They keep the parameters' dtype, except
    that bfloat16 and float16 parameters get float32 state, so small steps of
    the averages are not rounded away. (The update is computed in float32 or
    wider and returned in the gradients' dtype.) For complex
    parameters, the real and imaginary parts of each buffer belong to the real
    and imaginary parts of the parameter.

    With ``state_dtype``, each buffer is stored over the parameter's real view
    (shape, plus a trailing axis of 2 if complex): in bfloat16, or in 8 bits as
    a `QuantizedArray` (a subtree of two arrays in place of the leaf), or in
    float32 for parameters too small to quantize (fewer than 4096 reals).

    Attributes:
        count: the number of updates so far, an int32 scalar; it stops at the
            int32 maximum. A learning-rate schedule is called with it (0 on the
            first update, as in optax), and bias correction uses ``count + 1``.
        nu: v, the running average of squared gradients.
        mu: m, the running average of gradients (``None`` unless centered).
        trace: b, the momentum buffer (``None`` without momentum). It points
            downhill, as PyTorch's ``momentum_buffer`` does (optax's ``trace``
            holds −b), and holds η·u or u as `rmsprop.Config.lr_in_momentum` says.
    """

    count: jax.Array  # type: ignore[assignment]  # shadows tuple.count, as in optax
    nu: Tree
    mu: Tree | None
    trace: Tree | None


class _Step(NamedTuple):
    """The scalars one update uses; each a Python number or a 0-d array."""

    lr: Scalar
    decay: Scalar
    eps: Scalar
    momentum: Scalar
    weight_decay: Scalar
    correction: Scalar  # 1 - decay^t, or None without bias correction


def rmsprop(
    learning_rate: optax.ScalarOrSchedule = _Defaults.learning_rate,
    decay: jax.typing.ArrayLike = _Defaults.decay,
    eps: jax.typing.ArrayLike = _Defaults.eps,
    initial_scale: jax.typing.ArrayLike = _Defaults.initial_scale,
    eps_in_sqrt: bool = _Defaults.eps_in_sqrt,
    centered: bool = _Defaults.centered,
    momentum: jax.typing.ArrayLike | None = _Defaults.momentum,
    nesterov: bool = _Defaults.nesterov,
    bias_correction: bool = _Defaults.bias_correction,
    *,
    flavor: str | None = None,
    weight_decay: jax.typing.ArrayLike = _Defaults.weight_decay,
    decoupled_weight_decay: bool = _Defaults.decoupled_weight_decay,
    lr_in_momentum: bool = _Defaults.lr_in_momentum,
    maximize: bool = _Defaults.maximize,
    state_dtype: Any = None,
) -> optax.GradientTransformationExtraArgs:
    r"""RMSprop as an optax transformation, drop-in for `optax.rmsprop`, in every flavor.

    Per parameter θ with gradient g, at update t = ``count + 1``, the update
    (what `optax.apply_updates` adds to θ) is the new θ minus the old, with the
    new θ computed as `rmsprop.Config` states, in this order:

    .. code-block:: text

        {rule}

    where η is the learning rate (a schedule's value at ``count``), ρ = decay,
    ε = eps, μ = momentum and λ = weight_decay. Without a flavor or the extra
    options this performs `optax.rmsprop`'s operations in optax's order, so
    the two agree to rounding (under `jax.jit`, XLA may fuse ``a*b + c`` into
    one FMA in different places), with one exception: the centered variance is
    clamped at 0, where optax takes the root of a slightly negative ``v̂ - m̂²``
    (NaN with ε outside the root).

    Complex parameters are treated as pairs of independent real numbers, as
    PyTorch and `rmsprop.numpy` do: the real and imaginary parts each get their
    own averages. (`optax.rmsprop` instead averages ``|g|²``, one average per
    complex number.)

    The numeric hyperparameters may be arrays, traced under `jax.jit`, so
    `optax.inject_hyperparams` can change them at run time; `rmsprop.Config`
    checks them when they are concrete (inject_hyperparams' ``init``).

    The defaults below are optax's; with ``flavor``, the flavor's.

    Args:
        learning_rate: η, a float or an optax schedule (a function of the step
            count). Required unless ``flavor`` is given.
        decay: ρ, the decay of the running averages (default: 0.9).
        eps: ε, added to the denominator (default: 1e-8).
        initial_scale: the value v starts at: 0 in optax and PyTorch, 1 in TF1
            (default: 0.0).
        eps_in_sqrt: add ε inside the square root (optax, TF) rather than
            after it (PyTorch) (default: True).
        centered: divide by the estimated variance ``v - m²`` (default: False).
        momentum: μ, or ``None`` for no momentum buffer (default: None). A
            number, even 0, keeps a buffer, as in optax.
        nesterov: Nesterov momentum, in optax's form (default: False).
        bias_correction: divide the averages by ``1 - ρᵗ`` (default: False).
        flavor: a name in `rmsprop.FLAVORS`, e.g. ``"pytorch"``,
            ``"tensorflow"``, ``"keras"``: the rule and defaults to start from.
            The arguments you pass override its values; without it the
            defaults are optax's (the ``"optax"`` flavor).
        weight_decay: λ (default: 0.0).
        decoupled_weight_decay: shrink θ by η·λ·θ (Keras 3, timm) instead of
            adding λ·θ to the gradient (L2, PyTorch) (default: False).
        lr_in_momentum: accumulate η·u in the momentum buffer (optax, TF)
            rather than u (PyTorch) (default: True).
        maximize: ascend the objective instead of descending it (default: False).
        state_dtype: how the averages and the momentum buffer are stored:
            ``None`` (the default: the parameters' dtype, float32 for bfloat16
            and float16), ``jnp.bfloat16`` (or ``"bfloat16"``: 2 bytes per
            element) or ``"8bit"`` (about 1 byte: 256-element blocks with a
            float32 scale each; parameters with fewer than 4096 real elements
            keep float32). The math is float32 either way, and the new buffers
            are rounded stochastically, with `rmsprop.quantization`'s random
            numbers, so small changes are not lost. See that module for the
            format, and docs/low-memory.md.

    Returns:
        An `optax.GradientTransformationExtraArgs` whose state is an
        `RMSpropState`. Its ``update`` needs ``params`` only with weight decay.

    Raises:
        ValueError, TypeError: an unknown flavor or an invalid setting (checked
            by `rmsprop.Config`, whose message names the field), or an unknown
            ``state_dtype``.

    Example:
        >>> import jax.numpy as jnp
        >>> import optax
        >>> from rmsprop.jax import rmsprop
        >>> opt = optax.chain(optax.clip(1.0), rmsprop(flavor="tensorflow", momentum=0.9))
        >>> params = jnp.zeros(2)
        >>> updates, state = opt.update(jnp.array([1.0, -2.0]), opt.init(params), params)
        >>> print(updates)  # TF1: v starts at 1, ε = 1e-10 inside the root
        [-0.001 0.001]

        8-bit state: a uint8 code per element and a float32 scale per 256.

        >>> opt = rmsprop(1e-3, momentum=0.9, state_dtype="8bit")
        >>> state = opt.init(jnp.zeros((64, 128)))
        >>> state.nu.codes.dtype, state.nu.codes.shape, state.nu.scales.shape
        (dtype('uint8'), (64, 128), (32,))
    """
    state_format = _state_format(state_dtype)
    given = _given_fields(
        learning_rate=learning_rate,
        decay=decay,
        eps=eps,
        initial_scale=initial_scale,
        eps_in_sqrt=eps_in_sqrt,
        centered=centered,
        momentum=momentum,
        nesterov=nesterov,
        bias_correction=bias_correction,
        weight_decay=weight_decay,
        decoupled_weight_decay=decoupled_weight_decay,
        lr_in_momentum=lr_in_momentum,
        maximize=maximize,
    )
    if flavor is None and "lr" not in given:
        raise TypeError("rmsprop() missing required argument 'learning_rate' (or give flavor=)")
    base = flavors.flavor("optax" if flavor is None else flavor)
    config = base.replace(**{name: _checkable(name, value) for name, value in given.items()})
    hyper = {name: getattr(config, name) for name in _NUMERIC_FIELDS}
    hyper.update({name: _number(given[name]) for name in _NUMERIC_FIELDS if name in given})
    # optax keeps a momentum buffer for any number, 0 included; a flavor for μ > 0.
    has_trace = given["momentum"] is not None if "momentum" in given else config.momentum > 0
    return _transformation(config, hyper, has_trace, state_format)


rmsprop.__doc__ = with_rule(rmsprop.__doc__)

# Config's name for each of optax's (the others are the same).
_CONFIG_NAME = {"learning_rate": "lr", "initial_scale": "initial_square_avg"}
_NUMERIC_FIELDS = ("lr", "decay", "eps", "initial_square_avg", "momentum", "weight_decay")


def _given_fields(**arguments: Any) -> dict[str, Any]:
    """The arguments the caller passed, under `Config`'s names."""
    return {
        _CONFIG_NAME.get(name, name): value
        for name, value in arguments.items()
        if not isinstance(value, NotGiven)
    }


def _checkable(name: str, value: Any) -> Any:
    """What `Config` checks for field ``name``: a concrete number, or a stand-in."""
    if name == "momentum" and value is None:
        return 0.0
    if (name == "lr" and callable(value)) or isinstance(value, jax.core.Tracer):
        return _UNCHECKED
    if isinstance(value, (jax.Array, np.ndarray)) and value.ndim == 0:
        return value.item()  # concrete, e.g. what inject_hyperparams' init passes
    return value


def _number(value: Any) -> Any:
    """A hyperparameter as the update uses it: a Python number, an array or a schedule."""
    if isinstance(value, np.generic):
        return value.item()  # NumPy scalars would not be weakly typed
    if isinstance(value, np.ndarray):
        return jnp.asarray(value)
    return value


def _state_format(state_dtype: Any) -> str | None:
    """``None``, ``"bfloat16"`` or ``"8bit"``; anything else raises at construction."""
    if state_dtype is None:
        return None
    if isinstance(state_dtype, str) and state_dtype == "8bit":
        return "8bit"
    try:
        dtype = jnp.dtype(state_dtype)
    except (TypeError, ValueError):
        dtype = None
    if dtype == jnp.bfloat16:
        return "bfloat16"
    raise ValueError(
        f"state_dtype must be None, jnp.bfloat16 (or 'bfloat16') or '8bit', got {state_dtype!r}"
    )


def _transformation(
    config: Config, hyper: dict[str, Any], has_trace: bool, state_format: str | None
) -> optax.GradientTransformationExtraArgs:
    learning_rate, decay = hyper["lr"], hyper["decay"]
    needs_params = config.weight_decay != 0

    def buffers(params: Tree, value: Scalar, which: int) -> Tree:
        if state_format is None:
            return jax.tree.map(lambda p: _full_like(p, value), params)
        seed = _seed(jnp.zeros([], jnp.int32), which)  # step 0, as the spec's init
        return jax.tree.map(
            lambda p: _low_memory_full_like(p, value, state_format, which, seed), params
        )

    def init_fn(params: Tree) -> RMSpropState:
        return RMSpropState(
            count=jnp.zeros([], jnp.int32),
            nu=buffers(params, hyper["initial_square_avg"], quantization.SQUARE_AVG),
            mu=buffers(params, 0, quantization.GRAD_AVG) if config.centered else None,
            trace=buffers(params, 0, quantization.MOMENTUM_BUFFER) if has_trace else None,
        )

    def update_fn(
        updates: Tree, state: RMSpropState, params: Tree | None = None, **extra_args: Any
    ) -> tuple[Tree, RMSpropState]:
        del extra_args
        if needs_params and params is None:
            raise ValueError(
                "rmsprop with weight_decay needs params: call update(grads, state, params)"
            )
        count = _safe_increment(state.count)
        step = _Step(
            lr=learning_rate(state.count) if callable(learning_rate) else learning_rate,
            decay=decay,
            eps=hyper["eps"],
            momentum=hyper["momentum"],
            weight_decay=hyper["weight_decay"],
            correction=_bias_correction(decay, count) if config.bias_correction else None,
        )
        grads, treedef = _flatten(updates)
        columns = [
            [None] * len(grads) if tree is None else treedef.flatten_up_to(tree)
            for tree in (params if needs_params else None, state.nu, state.mu, state.trace)
        ]
        seeds = tuple(_seed(count, which) for which in _BUFFERS)  # v's, m's and b's
        results = [
            _update_leaf(config, step, *leaf)
            if state_format is None
            else _update_low_memory_leaf(config, step, seeds, *leaf)
            for leaf in zip(grads, *columns)
        ]
        new_updates, nu, mu, trace = _transpose(results, 4)

        def rebuild(leaves: list[Any], old: Tree | None) -> Tree | None:
            return None if old is None else treedef.unflatten(leaves)

        new_state = RMSpropState(
            count, treedef.unflatten(nu), rebuild(mu, state.mu), rebuild(trace, state.trace)
        )
        return treedef.unflatten(new_updates), new_state

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def _update_leaf(
    config: Config,
    step: _Step,
    grad: Any,
    param: Any,
    nu: jax.Array,
    mu: jax.Array | None,
    trace: jax.Array | None,
) -> tuple[Any, ...]:
    """One parameter's ``(update, nu, mu, trace)``; a ``None`` gradient changes nothing."""
    if grad is None:
        return None, nu, mu, trace
    grad = jnp.asarray(grad)
    if not jnp.iscomplexobj(grad):
        return _update_real(config, step, grad, param, nu, mu, trace)
    # Pairs of independent reals: the rule runs on each part, with each part's buffers.
    real = _update_real(config, step, *(_part(jnp.real, x) for x in (grad, param, nu, mu, trace)))
    imag = _update_real(config, step, *(_part(jnp.imag, x) for x in (grad, param, nu, mu, trace)))
    return tuple(_join(r, i) for r, i in zip(real, imag))


def _update_real(
    config: Config,
    step: _Step,
    grad: jax.Array,
    param: Any,
    nu: jax.Array,
    mu: jax.Array | None,
    trace: jax.Array | None,
) -> tuple[jax.Array, jax.Array, jax.Array | None, jax.Array | None]:
    """The rule on one real array: returns ``(update, nu, mu, trace)`` in their dtypes."""
    dtype = jnp.promote_types(grad.dtype, nu.dtype)  # float32 or wider
    s = _Step(*(_cast(x, dtype) for x in step))
    g = grad.astype(dtype)
    theta = None if param is None else jnp.asarray(param).astype(dtype)

    if config.maximize:
        g = -g
    if theta is not None and not config.decoupled_weight_decay:
        g = g + s.weight_decay * theta

    new_nu = (1 - s.decay) * g**2 + s.decay * nu.astype(dtype)
    new_mu = None if mu is None else (1 - s.decay) * g + s.decay * mu.astype(dtype)
    u = _scale(config, s, new_nu, new_mu) * g
    descent, new_trace = _descend(config, s, u, None if trace is None else trace.astype(dtype))
    update = -descent
    if theta is not None and config.decoupled_weight_decay:
        update = update - s.lr * s.weight_decay * theta

    return (
        update.astype(grad.dtype),
        new_nu.astype(nu.dtype),
        None if new_mu is None or mu is None else new_mu.astype(mu.dtype),
        None if new_trace is None or trace is None else new_trace.astype(trace.dtype),
    )


# -- low-memory state: rmsprop.quantization's format in jax.numpy ----------------------------

_BUFFERS = (quantization.SQUARE_AVG, quantization.GRAD_AVG, quantization.MOMENTUM_BUFFER)
_KIND = {quantization.SQUARE_AVG: "unsigned", quantization.GRAD_AVG: "signed",
         quantization.MOMENTUM_BUFFER: "signed"}  # fmt: skip
Buffer = Any  # a jax.Array (float32 or bfloat16) or a QuantizedArray


def _update_low_memory_leaf(
    config: Config,
    step: _Step,
    seeds: tuple[jax.Array, ...],
    grad: Any,
    param: Any,
    nu: Buffer,
    mu: Buffer | None,
    trace: Buffer | None,
) -> tuple[Any, ...]:
    """`_update_leaf` with stored buffers: decode to float32, the rule, encode (one pass)."""
    if grad is None:
        return None, nu, mu, trace
    grad = jnp.asarray(grad)
    theta = None if param is None else _real_view(jnp.asarray(param))
    update, *new = _update_real(
        config,
        step,
        _real_view(grad),
        theta,
        _decode(nu, "unsigned"),  # type: ignore[arg-type]
        _decode(mu, "signed"),
        _decode(trace, "signed"),
    )
    if jnp.iscomplexobj(grad):
        update = jax.lax.complex(update[..., 0], update[..., 1])
    stored = [
        None if old is None or value is None else _encode_like(old, value, _KIND[which], seed)
        for old, value, which, seed in zip((nu, mu, trace), new, _BUFFERS, seeds)
    ]
    return (update, *stored)


def _low_memory_full_like(
    param: Any, value: Scalar, state_format: str, which: int, seed: jax.Array
) -> Buffer:
    """A buffer for ``param`` filled with ``value``, stored as `quantization.init` stores it."""
    shape = _real_view(jnp.zeros((), jnp.result_type(param))).shape  # () or (2,)
    values = jnp.full((*jnp.shape(param), *shape), value, jnp.float32)
    if state_format == "bfloat16":
        return _round_to_bfloat16(values, seed)
    if quantization.is_quantized(values.size):
        return _quantize(values, _KIND[which], seed)
    return values


def _real_view(x: jax.Array) -> jax.Array:
    """A complex array as pairs of reals on a trailing axis (real, imaginary); reals as is."""
    return jnp.stack([x.real, x.imag], axis=-1) if jnp.iscomplexobj(x) else x


def _decode(buffer: Buffer | None, kind: str) -> jax.Array | None:
    """A stored buffer as float32, in the real view's shape."""
    if buffer is None:
        return None
    if isinstance(buffer, QuantizedArray):
        table = jnp.asarray(
            quantization.UNSIGNED_MAP if kind == "unsigned" else quantization.SIGNED_MAP
        )
        blocks = _blocks(buffer.codes.astype(jnp.int32))
        values = table[blocks] * buffer.scales[:, None]
        return values.reshape(-1)[: buffer.codes.size].reshape(buffer.codes.shape)
    decoded: jax.Array = buffer.astype(jnp.float32)
    return decoded


def _encode_like(old: Buffer, values: jax.Array, kind: str, seed: jax.Array) -> Buffer:
    """``values`` stored in ``old``'s format."""
    values = values.astype(jnp.float32)
    if isinstance(old, QuantizedArray):
        return _quantize(values, kind, seed)
    if old.dtype == jnp.bfloat16:
        return _round_to_bfloat16(values, seed)
    return values


def _blocks(flat_or_shaped: jax.Array) -> jax.Array:
    """The array's elements (C order) as rows of 256, the last padded with zeros."""
    flat = flat_or_shaped.reshape(-1)
    padding = -flat.size % quantization.BLOCK
    return jnp.pad(flat, (0, padding)).reshape(-1, quantization.BLOCK)


def _quantize(values: jax.Array, kind: str, seed: jax.Array) -> QuantizedArray:
    """`rmsprop.quantization.quantize` in jax.numpy: the same codes from the same values."""
    blocks = _blocks(values)
    magnitudes = blocks if kind == "unsigned" else jnp.abs(blocks)
    finite = jnp.all(jnp.isfinite(blocks), axis=1)
    scales = jnp.where(finite, jnp.max(magnitudes, axis=1), jnp.nan).astype(jnp.float32)
    usable = (finite & (scales > 0))[:, None]
    units = jnp.where(usable, blocks / jnp.where(usable, scales[:, None], 1), 0)
    index = jnp.arange(blocks.size, dtype=jnp.uint32).reshape(blocks.shape)
    codes = _encode(units, kind, _uniform(seed, index))
    return QuantizedArray(codes.reshape(-1)[: values.size].reshape(values.shape), scales)


def _encode(units: jax.Array, kind: str, random: jax.Array) -> jax.Array:
    """`rmsprop.quantization.encode`: the closed-form lower neighbour, one correction step,
    then up where ``random·(hi - lo) < x - lo``."""
    if kind == "unsigned":
        table, top = jnp.asarray(quantization.UNSIGNED_MAP), 254
        magnitude = units
        guess = jnp.floor(256 * jnp.sqrt(jnp.sqrt(magnitude))) - 1
    else:
        table, top = jnp.asarray(quantization.SIGNED_MAP[128:]), 126
        magnitude = jnp.abs(units)
        guess = jnp.floor(127 * jnp.sqrt(jnp.sqrt(magnitude)))
    code = jnp.clip(guess, 0, top).astype(jnp.int32)
    up = (code < top) & (table[jnp.minimum(code + 1, top + 1)] <= magnitude)
    down = ~up & (code > 0) & (table[code] > magnitude)
    code = code + up.astype(jnp.int32) - down.astype(jnp.int32)
    low, high = table[code], table[code + 1]
    code = code + (random * (high - low) < magnitude - low).astype(jnp.int32)
    if kind == "signed":
        code = jnp.where(units < 0, 128 - code, 128 + code)
    return code.astype(jnp.uint8)


def _round_to_bfloat16(values: jax.Array, seed: jax.Array) -> jax.Array:
    """`rmsprop.quantization.round_to_bfloat16`, stochastic: add the random bits' upper 16
    to the float32's bits, clear the lower 16."""
    bits = jax.lax.bitcast_convert_type(values, jnp.uint32)
    index = jnp.arange(values.size, dtype=jnp.uint32).reshape(values.shape)
    noise = _random_bits(seed, index) >> np.uint32(16)
    rounded = jax.lax.bitcast_convert_type((bits + noise) & np.uint32(0xFFFF0000), jnp.float32)
    return jnp.where(jnp.isfinite(values), rounded, values).astype(jnp.bfloat16)


def _seed(count: jax.Array, which: int) -> jax.Array:
    """`rmsprop.quantization.stream_seed`: 4·count + buffer, as uint32."""
    return count.astype(jnp.uint32) * np.uint32(4) + np.uint32(which)


def _fmix32(h: jax.Array) -> jax.Array:
    """MurmurHash3's finalizer (uint32 arithmetic wraps in XLA as in C)."""
    h = h ^ (h >> np.uint32(16))
    h = h * np.uint32(0x85EBCA6B)
    h = h ^ (h >> np.uint32(13))
    h = h * np.uint32(0xC2B2AE35)
    return h ^ (h >> np.uint32(16))


def _random_bits(seed: jax.Array, index: jax.Array) -> jax.Array:
    return _fmix32(index ^ _fmix32(seed))


def _uniform(seed: jax.Array, index: jax.Array) -> jax.Array:
    return (_random_bits(seed, index) >> np.uint32(8)).astype(jnp.float32) * np.float32(2.0**-24)


def _scale(config: Config, s: _Step, nu: jax.Array, mu: jax.Array | None) -> jax.Array:
    """1/denominator: ``1/sqrt(ŝ + ε)`` or ``1/(sqrt(ŝ) + ε)``, ŝ the (centered) average."""
    nu_hat, mu_hat = nu, mu
    if s.correction is not None:
        nu_hat = nu / s.correction
        mu_hat = None if mu is None else mu / s.correction
    # Rounding can make v̂ - m̂² slightly negative where the exact value is 0.
    second = nu_hat if mu_hat is None else jnp.maximum(nu_hat - mu_hat * mu_hat, 0)
    if config.eps_in_sqrt:
        return jax.lax.rsqrt(second + s.eps)
    scale: jax.Array = 1 / (jnp.sqrt(second) + s.eps)
    return scale


def _descend(
    config: Config, s: _Step, u: jax.Array, trace: jax.Array | None
) -> tuple[jax.Array, jax.Array | None]:
    """The step down (θ ← θ - step) and the new momentum buffer."""
    if trace is None:
        return s.lr * u, None
    if config.lr_in_momentum:
        scaled = s.lr * u
        trace = scaled + s.momentum * trace
        return (scaled + s.momentum * trace if config.nesterov else trace), trace
    trace = u + s.momentum * trace
    return s.lr * (u + s.momentum * trace if config.nesterov else trace), trace


def _full_like(param: Any, value: Scalar) -> jax.Array:
    """A state buffer for ``param``, filled with ``value`` (both parts, if complex)."""
    dtype = jnp.promote_types(jnp.result_type(param), jnp.float32)
    if jnp.issubdtype(dtype, jnp.complexfloating):
        part = jnp.full_like(param, value, dtype=np.finfo(dtype).dtype)
        return jax.lax.complex(part, part)
    return jnp.full_like(param, value, dtype=dtype)


def _cast(x: Scalar, dtype: Any) -> Scalar:
    # Python numbers stay weakly typed, so 1 - decay is computed in float64
    # first, as optax does.
    if x is None or isinstance(x, (int, float)):
        return x
    return jnp.asarray(x).astype(dtype)


def _part(part: Callable[[Any], jax.Array], x: Any) -> Any:
    return None if x is None else part(x)


def _join(real: Any, imag: Any) -> Any:
    return None if real is None else jax.lax.complex(real, imag)


@functools.partial(jax.jit, inline=True)
def _bias_correction(decay: Scalar, count: jax.Array) -> jax.Array:
    """1 - decay^count, computed as optax computes it: in a jitted function, inlined into
    an enclosing jit. So the power is always XLA's compiled one, in and out of ``jax.jit``
    (eagerly, ``decay ** count`` takes another route, and differs in the last digits)."""
    correction: jax.Array = 1 - decay**count
    return correction


def _safe_increment(count: jax.Array) -> jax.Array:
    """count + 1, stopping at the int32 maximum instead of wrapping around."""
    limit = np.iinfo(np.int32).max
    return jnp.where(count < limit, count + 1, limit).astype(jnp.int32)


def _flatten(tree: Tree) -> tuple[list[Any], Any]:
    """The leaves and structure of ``tree``, with ``None`` as a leaf (a gradient not given)."""
    return jax.tree.flatten(tree, is_leaf=lambda x: x is None)


def _transpose(rows: list[tuple[Any, ...]], width: int) -> list[list[Any]]:
    return [[row[i] for row in rows] for i in range(width)]
