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

from rmsprop import flavors
from rmsprop._config import Config, with_rule
from rmsprop._not_given import NotGiven

__all__ = ["RMSpropState", "rmsprop"]

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


class RMSpropState(NamedTuple):
    """The state of `rmsprop`: a step count and the running averages.

    ``nu``, ``mu`` and ``trace`` have the parameters' tree structure; one the
    rule does not need is ``None``. They keep the parameters' dtype, except
    that bfloat16 and float16 parameters get float32 state, so small steps of
    the averages are not rounded away. (The update is computed in float32 or
    wider and returned in the gradients' dtype.) For complex
    parameters, the real and imaginary parts of each buffer belong to the real
    and imaginary parts of the parameter.

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

    Returns:
        An `optax.GradientTransformationExtraArgs` whose state is an
        `RMSpropState`. Its ``update`` needs ``params`` only with weight decay.

    Raises:
        ValueError, TypeError: an unknown flavor or an invalid setting (checked
            by `rmsprop.Config`, whose message names the field).

    Example:
        >>> import jax.numpy as jnp
        >>> import optax
        >>> from rmsprop.jax import rmsprop
        >>> opt = optax.chain(optax.clip(1.0), rmsprop(flavor="tensorflow", momentum=0.9))
        >>> params = jnp.zeros(2)
        >>> updates, state = opt.update(jnp.array([1.0, -2.0]), opt.init(params), params)
        >>> print(updates)  # TF1: v starts at 1, ε = 1e-10 inside the root
        [-0.001 0.001]
    """
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
    return _transformation(config, hyper, has_trace)


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


def _transformation(
    config: Config, hyper: dict[str, Any], has_trace: bool
) -> optax.GradientTransformationExtraArgs:
    learning_rate, decay = hyper["lr"], hyper["decay"]
    needs_params = config.weight_decay != 0

    def init_fn(params: Tree) -> RMSpropState:
        return RMSpropState(
            count=jnp.zeros([], jnp.int32),
            nu=jax.tree.map(lambda p: _full_like(p, hyper["initial_square_avg"]), params),
            mu=jax.tree.map(lambda p: _full_like(p, 0), params) if config.centered else None,
            trace=jax.tree.map(lambda p: _full_like(p, 0), params) if has_trace else None,
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
        results = [_update_leaf(config, step, *leaf) for leaf in zip(grads, *columns)]
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
