"""The optimizer's state dicts, which count their changes.

An unchanged step reuses the lists of state tensors it gathered on an earlier
step (gathering them again costs a Python dict lookup per tensor, which at a
hundred tensors is most of a step's host time). It may do so only while no
state dict changed: `State` (the optimizer's ``state``, parameter → dict) and
each parameter's `ParamState` advance one shared `Generation` whenever an entry
is set, replaced or removed, so the step compares one number. They are dicts
in every other way, and `rmsprop.torch.RMSprop.state_dict` hands out plain
dicts (a checkpoint never holds these types).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from typing import Any

__all__ = ["Generation", "ParamState", "State"]


class Generation:
    """A counter the state dicts of one optimizer advance on every change."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0


class _Counted:
    """The mutators both dicts count the same way (each class adds those it counts otherwise)."""

    __slots__ = ()
    generation: Generation

    def __delitem__(self, key: Any) -> None:
        self.generation.value += 1
        super().__delitem__(key)  # type: ignore[misc]

    def __ior__(self, other: Any) -> Any:
        self.update(other)  # type: ignore[attr-defined]
        return self

    def clear(self) -> None:
        self.generation.value += 1
        super().clear()  # type: ignore[misc]

    def pop(self, *args: Any) -> Any:
        self.generation.value += 1
        return super().pop(*args)  # type: ignore[misc]

    def popitem(self) -> Any:
        self.generation.value += 1
        return super().popitem()  # type: ignore[misc]


class ParamState(_Counted, dict[str, Any]):
    """One parameter's state (``step``, ``square_avg``, ...), counting its changes."""

    __slots__ = ("generation",)

    def __init__(self, generation: Generation, items: Iterable[tuple[str, Any]] = ()) -> None:
        super().__init__(items)
        self.generation = generation

    def __reduce__(self) -> Any:
        # Unpickled as a plain dict: the optimizer's __setstate__ wraps it again.
        return dict, (dict(self),)

    def __setitem__(self, key: str, value: Any) -> None:
        self.generation.value += 1
        super().__setitem__(key, value)

    def setdefault(self, key: str, default: Any = None) -> Any:
        self.generation.value += 1
        return super().setdefault(key, default)

    def update(self, *args: Any, **kwargs: Any) -> None:
        self.generation.value += 1
        super().update(*args, **kwargs)


class State(_Counted, defaultdict[Any, ParamState]):
    """The optimizer's ``state``: a ``defaultdict`` of `ParamState`, counting its changes.

    A dict stored in it becomes a `ParamState` (so ``opt.state[p] = {...}`` is
    counted too).
    """

    __slots__ = ("generation",)

    def __init__(self, items: Iterable[tuple[Any, Any]] = ()) -> None:
        generation = Generation()
        super().__init__(lambda: ParamState(generation))
        self.generation = generation
        for key, value in items:
            self[key] = value

    def __reduce__(self) -> Any:
        return _plain, (dict(self),)

    def __setitem__(self, key: Any, value: Any) -> None:
        self.generation.value += 1
        if isinstance(value, dict) and not (
            isinstance(value, ParamState) and value.generation is self.generation
        ):
            value = ParamState(self.generation, value.items())
        super().__setitem__(key, value)

    def setdefault(self, key: Any, default: Any = None) -> Any:
        if key not in self:
            self[key] = {} if default is None else default
        return self[key]

    def update(self, *args: Any, **kwargs: Any) -> None:
        for key, value in dict(*args, **kwargs).items():
            self[key] = value


def _plain(items: dict[Any, Any]) -> defaultdict[Any, dict[str, Any]]:
    """What a pickled `State` loads as: torch's own kind of state (see `ParamState.__reduce__`)."""
    return defaultdict(dict, {key: dict(value) for key, value in items.items()})
