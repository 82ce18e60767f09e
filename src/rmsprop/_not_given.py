"""`NotGiven`: a default argument that tells "left alone" from "passed the same value"."""

from __future__ import annotations

from typing import Any

__all__ = ["NotGiven"]


class NotGiven:
    """A default the caller did not pass; shows, and compares, as the framework's default.

    With ``flavor=``, arguments the caller did not pass come from the flavor,
    so a backend whose signature mirrors a framework's must tell ``lr=1e-2``
    passed from ``lr`` left alone, while ``inspect.signature`` still shows
    the framework's defaults.

    Example:
        >>> default = NotGiven(0.99)
        >>> default, default == 0.99, isinstance(default, NotGiven)
        (0.99, True, True)
    """

    def __init__(self, value: Any, text: str | None = None) -> None:
        self.value = value
        self.text = repr(value) if text is None else text

    def __repr__(self) -> str:
        return self.text

    def __eq__(self, other: object) -> bool:
        return bool(self.value == (other.value if isinstance(other, NotGiven) else other))

    def __hash__(self) -> int:
        return hash(self.value)
