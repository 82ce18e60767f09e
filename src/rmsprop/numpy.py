r"""The NumPy reference: RMSprop written plainly, the oracle for every backend.

It computes in the dtype it is given (float64 is what the other backends are
tested against), one readable line per line of the rule in `rmsprop.Config`,
with no cleverness and no in-place tricks.

Two forms:

* `init` / `update`: pure functions over a parameter, or a list, tuple or
  dict of them. Nothing is modified in place.
* `RMSprop`: a small stateful optimizer that updates a list of arrays in place.

Example (the textbook rule, one step):
    >>> import numpy as np
    >>> import rmsprop
    >>> import rmsprop.numpy as rnp
    >>> config = rmsprop.Config(lr=0.01, decay=0.9, eps=1e-8, eps_in_sqrt=True)
    >>> theta = np.array([0.2, 0.4, 0.6])
    >>> state = rnp.init(theta, config)
    >>> theta, state = rnp.update(theta, np.array([-0.5, 0.3, 0.24]), state, config)
    >>> print(theta)
    [0.23162277 0.36837724 0.56837725]
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, NamedTuple, TypeVar

import numpy as np

from rmsprop import flavors as _flavors
from rmsprop._config import Config
from rmsprop._lowering import bias as _bias
from rmsprop._lowering import coefficients

__all__ = ["LeafState", "RMSprop", "init", "update"]

T = TypeVar("T")
Tree = Any  # an ndarray, or a list, tuple or dict of trees


class LeafState(NamedTuple):
    """The state of one parameter, with PyTorch's names.

    Attributes:
        step: how many updates this parameter has had.
        square_avg: the running average of squared gradients, v.
        grad_avg: the running average of gradients, m (``None`` unless centered).
        momentum_buffer: the momentum buffer, b (``None`` without momentum).
    """

    step: int
    square_avg: np.ndarray
    grad_avg: np.ndarray | None
    momentum_buffer: np.ndarray | None


def init(params: Tree, config: Config) -> Tree:
    """Returns the initial state: one `LeafState` per parameter, same structure.

    Args:
        params: an array, or a list, tuple or dict of arrays (nested freely).
        config: the rule; decides which buffers exist and where ``v`` starts.
    """

    def init_leaf(param: np.ndarray) -> LeafState:
        param = np.asarray(param)
        start = config.initial_square_avg
        # A complex parameter is two reals, and each part's average starts there.
        fill = complex(start, start) if np.iscomplexobj(param) else start
        return LeafState(
            step=0,
            square_avg=np.full_like(param, fill),
            grad_avg=np.zeros_like(param) if config.centered else None,
            momentum_buffer=np.zeros_like(param) if config.momentum > 0 else None,
        )

    return _tree_map(init_leaf, params)


def update(params: Tree, grads: Tree, state: Tree, config: Config) -> tuple[Tree, Tree]:
    """One RMSprop step: returns ``(new_params, new_state)``.

    A ``None`` gradient leaves its parameter and state untouched, as PyTorch
    does for parameters without ``.grad``.

    Args:
        params: an array, or a list, tuple or dict of arrays.
        grads: gradients with the same structure (``None`` leaves allowed).
        state: what `init` (or the previous `update`) returned.
        config: the rule. To schedule the learning rate, pass
            ``config.replace(lr=...)`` at each step.

    Raises:
        TypeError: ``state`` is not what `init` or `update` returned (``None``, say).
        ValueError: ``params``, ``grads`` and ``state`` differ in structure, or a
            gradient's shape is not its parameter's.
    """
    if state is None:
        raise TypeError(
            "update() got state=None: create the state with rmsprop.numpy.init(params, config), "
            "then pass each update's new state to the next"
        )
    param_leaves, rebuild = _flatten(params)
    grad_leaves, _ = _flatten(grads)
    state_leaves, _ = _flatten(state)
    if not len(param_leaves) == len(grad_leaves) == len(state_leaves):
        raise ValueError(
            f"params, grads and state must have the same structure; they have "
            f"{len(param_leaves)}, {len(grad_leaves)} and {len(state_leaves)} leaves"
        )
    for i, leaf in enumerate(state_leaves):
        if not isinstance(leaf, LeafState):
            raise TypeError(
                f"update() got a state whose leaf {i} is {type(leaf).__name__}, not a LeafState: "
                "create the state with rmsprop.numpy.init(params, config)"
            )
    new_params, new_state = [], []
    for param, grad, leaf in zip(param_leaves, grad_leaves, state_leaves):
        if grad is None:
            new_params.append(param)
            new_state.append(leaf)
        else:
            p, s = _update_leaf(np.asarray(param), np.asarray(grad), leaf, config)
            new_params.append(p)
            new_state.append(s)
    return rebuild(new_params), rebuild(new_state)


def _update_leaf(
    param: np.ndarray, grad: np.ndarray, state: LeafState, config: Config
) -> tuple[np.ndarray, LeafState]:
    if grad.shape != param.shape:
        raise ValueError(f"gradient shape {grad.shape} != parameter shape {param.shape}")
    if np.iscomplexobj(param):
        # Complex numbers are pairs of independent reals, as in PyTorch.
        p, s = _update_leaf(_as_real(param), _as_real(grad), _map_state(_as_real, state), config)
        return _as_complex(p), _map_state(_as_complex, s)

    c = config
    lr, rho, mu, wd = c.lr, c.decay, c.momentum, c.weight_decay
    step = state.step + 1
    v = state.square_avg
    m: Any = state.grad_avg  # an array when centered
    b: Any = state.momentum_buffer  # an array when momentum > 0

    g = -grad if c.maximize else grad
    if wd != 0 and not c.decoupled_weight_decay:
        g = g + wd * param
    if wd != 0 and c.decoupled_weight_decay:
        param = param - lr * wd * param

    v = rho * v + (1 - rho) * g * g
    if c.centered:
        m = rho * m + (1 - rho) * g

    v_hat, m_hat = v, m
    if c.bias_correction:
        correction = 1 - rho**step
        v_hat = v / correction
        m_hat = m / correction if c.centered else None

    s = np.maximum(v_hat - m_hat * m_hat, 0) if c.centered else v_hat
    denom = np.sqrt(s + c.eps) if c.eps_in_sqrt else np.sqrt(s) + c.eps
    u = g / denom

    if mu == 0:
        param = param - lr * u
    elif c.lr_in_momentum:
        b = mu * b + lr * u
        param = param - (lr * u + mu * b if c.nesterov else b)
    else:
        b = mu * b + u
        param = param - lr * (u + mu * b if c.nesterov else b)

    return param, LeafState(step, v, m, b)


class RMSprop:
    """A small stateful optimizer over a list of NumPy arrays, updated in place.

    With ``fused`` (the default when Numba is installed, ``rmsprop[fast]``)
    each step runs the fused CPU kernel: one multi-threaded pass over memory,
    no temporaries, float32 math for float16 arrays. It computes the same
    rule as `update` up to floating-point rounding; arrays it cannot take
    (non-contiguous, or not float16/32/64 or complex) take `update`'s path.

    Args:
        params: the arrays to optimize (each is modified in place by `step`).
        config: the rule; default: the ``flavor``'s.
        flavor: a flavor name, used when ``config`` is not given.
        fused: use the fused CPU kernel; ``None``: when it is installed.
        **overrides: `Config` fields to change, e.g. ``lr=0.1``.

    Raises:
        RuntimeError: ``fused=True`` but Numba is not installed.

    Example:
        >>> import numpy as np
        >>> import rmsprop.numpy as rnp
        >>> w = np.ones(3)
        >>> opt = rnp.RMSprop([w], flavor="keras", lr=0.1)
        >>> opt.step([np.full(3, 10.0)])
        >>> print(w.round(6))
        [0.683772 0.683772 0.683772]
    """

    def __init__(
        self,
        params: Iterable[np.ndarray],
        config: Config | None = None,
        *,
        flavor: str = "pytorch",
        fused: bool | None = None,
        **overrides: Any,
    ) -> None:
        self.params = list(params)
        for i, p in enumerate(self.params):
            if not isinstance(p, np.ndarray):
                raise TypeError(f"params[{i}] must be a numpy.ndarray, got {type(p).__name__}")
        base = config if config is not None else _flavors.flavor(flavor)
        self.config = base.replace(**overrides)
        self.state: list[LeafState] = init(self.params, self.config)
        self._kept_tables: tuple[list[int], list[Any], list[Any]] | None = None
        self.fused = False
        if fused is not False:
            from rmsprop.kernels import numba_cpu  # loads Numba: only when asked for

            if fused and not numba_cpu.AVAILABLE:
                raise RuntimeError(f"fused=True, but {numba_cpu.WHY_UNAVAILABLE}")
            self.fused = numba_cpu.AVAILABLE

    def step(self, grads: Iterable[np.ndarray | None]) -> None:
        """Updates every parameter in place from its gradient (``None``: skip it)."""
        grads = list(grads)
        if len(grads) != len(self.params):
            raise ValueError(f"got {len(grads)} gradients for {len(self.params)} parameters")
        for i, (param, grad) in enumerate(zip(self.params, grads)):
            # Checked before anything changes: the fused kernel reads as many elements as θ has.
            shape = None if grad is None else np.shape(grad)
            if shape is not None and shape != param.shape:
                raise ValueError(f"gradient shape {shape} != parameter shape {param.shape}")
            if shape is not None and not param.flags.writeable:
                raise ValueError(f"params[{i}] is read-only: the step updates it in place")
        if self.fused:
            self._fused_step(grads)
            return
        new_params, self.state = update(self.params, grads, self.state, self.config)
        for param, new in zip(self.params, new_params):
            param[...] = new

    def _fused_step(self, grads: list[np.ndarray | None]) -> None:
        from rmsprop.kernels import numba_cpu

        config = self.config
        threads = numba_cpu.num_threads()  # a bad RMSPROP_NUM_THREADS fails before any write
        # Without bias correction every tensor shares one set of coefficients.
        shared = None if config.bias_correction else coefficients(config, step=1)
        tasks = []
        direct: list[tuple[int, np.ndarray]] = []  # float32/float64: through address tables
        computed = {}  # arrays the kernel can't take: the reference's results, committed below
        for i, (param, grad) in enumerate(zip(self.params, grads)):
            if grad is None:
                continue
            leaf = self.state[i]
            grad = np.asarray(grad, dtype=param.dtype)
            arrays = [param, grad, leaf.square_avg, leaf.grad_avg, leaf.momentum_buffer]
            flat = _flat_views(arrays)
            if flat is None:
                computed[i] = _update_leaf(param, grad, leaf, self.config)
                continue
            if flat[0].dtype in numba_cpu.KERNEL_DTYPES:
                direct.append((i, flat[1]))
                continue
            c = shared or coefficients(config, step=leaf.step + 1)  # float16: float32 math
            tasks.append((i, numba_cpu.task(flat, numba_cpu.as_array(c, np.float32), _copy)))
        tables = self._tables([i for i, _ in direct]) if direct else []
        gradients = dict(direct)
        for table, indices in tables:
            table.addresses[numba_cpu.GRAD] = [gradients[i].ctypes.data for i in indices]
            bias = None
            if config.bias_correction:
                bias = (_bias(config.decay, self.state[i].step + 1) for i in indices)
            table.set_coefficients(shared or coefficients(config, step=1), bias)
        # Nothing has changed yet; from here on nothing can fail.
        for i, (new_param, new_leaf) in computed.items():
            self.params[i][...] = new_param
            self.state[i] = new_leaf
        for i in [i for i, _ in tasks] + [i for i, _ in direct]:
            self.state[i] = self.state[i]._replace(step=self.state[i].step + 1)
        numba_cpu.run([t for _, t in tasks], [table for table, _ in tables], threads=threads)

    def _tables(self, indices: list[int]) -> list[tuple[Any, list[int]]]:
        """Address tables of these parameters and their state, per dtype: built when the
        arrays change, else the last step's (whose gradient rows the step fills in)."""
        from rmsprop.kernels import numba_cpu

        # Held with the tables, so that no array they point into can be freed (nor its id
        # reused) while they are kept; NumPy won't resize an array so referenced.
        held: list[tuple[Any, ...]] = [(self.params[i], *self.state[i][1:]) for i in indices]
        key = [id(a) for arrays in held for a in arrays]
        if self._kept_tables is not None and self._kept_tables[0] == key:
            return self._kept_tables[2]
        by_dtype: dict[Any, list[int]] = {}
        for position, arrays in enumerate(held):
            by_dtype.setdefault(arrays[0].real.dtype, []).append(position)
        rows = (numba_cpu.PARAM, numba_cpu.SQUARE_AVG, numba_cpu.GRAD_AVG, numba_cpu.BUFFER)
        tables = []
        for dtype, positions in by_dtype.items():
            params, square_avgs, grad_avgs, buffers = zip(*(held[k] for k in positions))
            # (Which buffers the kernel updates: those the state has, as `update` does.)
            centered, momentum = _all_present(grad_avgs), _all_present(buffers)
            table = numba_cpu.Table(dtype, [_as_real_size(p) for p in params], centered, momentum)
            for row, arrays in zip(rows, (params, square_avgs, grad_avgs, buffers)):
                if _all_present(arrays):
                    table.addresses[row] = [a.ctypes.data for a in arrays]
            tables.append((table, [indices[k] for k in positions]))
        self._kept_tables = (key, held, tables)
        return tables


def _all_present(arrays: Iterable[np.ndarray | None]) -> bool:
    return all(a is not None for a in arrays)  # (`None in arrays` would compare elementwise)


def _as_real_size(a: np.ndarray) -> int:
    """Elements of an array's memory as reals (a complex number is two)."""
    return a.size * (2 if a.dtype.kind == "c" else 1)


def _flat_views(arrays: list[np.ndarray | None]) -> list[Any] | None:
    """1-D views of the arrays' memory (complex as pairs of reals), or None if impossible."""
    present = [a for a in arrays if a is not None]
    first = present[0]
    if not first.flags.c_contiguous or first.dtype.kind not in "fc" or not first.dtype.isnative:
        return None
    # The kernel walks every array for as many elements as θ has, in θ's dtype.
    if any(
        a.dtype != first.dtype or a.shape != first.shape or not a.flags.c_contiguous
        for a in present
    ):
        return None
    views = [None if a is None else a.reshape(-1).view(a.real.dtype) for a in arrays]
    return views if views[0].dtype.itemsize in (2, 4, 8) else None  # type: ignore[union-attr]


def _copy(destination: np.ndarray, source: np.ndarray) -> None:
    destination[...] = source


def _as_real(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x).view(x.real.dtype).reshape(*x.shape, 2)


def _as_complex(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x).view(np.result_type(x.dtype, np.complex64)).reshape(x.shape[:-1])


def _map_state(fn: Callable[[np.ndarray], np.ndarray], state: LeafState) -> LeafState:
    def maybe(x: np.ndarray | None) -> np.ndarray | None:
        return None if x is None else fn(x)

    return LeafState(
        state.step, fn(state.square_avg), maybe(state.grad_avg), maybe(state.momentum_buffer)
    )


def _is_leaf(x: object) -> bool:
    return not isinstance(x, (list, tuple, dict)) or isinstance(x, LeafState)


def _tree_map(fn: Callable[[Any], T], tree: Tree) -> Any:
    leaves, rebuild = _flatten(tree)
    return rebuild([fn(leaf) for leaf in leaves])


def _flatten(tree: Tree) -> tuple[list[Any], Callable[[list[Any]], Tree]]:
    """Splits a list/tuple/dict tree into its leaves and a function that rebuilds it."""
    if _is_leaf(tree):
        return [tree], lambda leaves: leaves[0]
    items = list(tree.items()) if isinstance(tree, dict) else list(enumerate(tree))
    parts = [_flatten(child) for _, child in items]
    sizes = [len(leaves) for leaves, _ in parts]

    def rebuild(leaves: list[Any]) -> Tree:
        children, start = [], 0
        for size, (_, sub_rebuild) in zip(sizes, parts):
            children.append(sub_rebuild(leaves[start : start + size]))
            start += size
        if isinstance(tree, dict):
            return {key: child for (key, _), child in zip(items, children)}
        return type(tree)(children)

    return [leaf for leaves, _ in parts for leaf in leaves], rebuild
