"""Release numbers of the packages whose versions decide a code path."""

from __future__ import annotations

import re

__all__ = ["release"]


def release(version: str) -> tuple[int, int]:
    """(major, minor) of a version string, so that pre-releases count as their release.

    Example:
        >>> release("2.5.0a0+git1234"), release("3.6.0"), release("unknown")
        ((2, 5), (3, 6), (0, 0))
    """
    found = re.match(r"(\d+)\.(\d+)", version)
    return (int(found[1]), int(found[2])) if found else (0, 0)
