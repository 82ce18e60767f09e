"""What the commands share: the error that ends a command, argument types, text tables."""

from __future__ import annotations

import argparse
import shutil
import sys
from collections.abc import Sequence

__all__ = ["CommandError", "flavor_name", "format_table", "non_negative_int", "positive_int"]


class CommandError(Exception):
    """A problem the user can fix; `main` prints it as one line on stderr and exits with 1."""


def positive_int(text: str) -> int:
    """An argparse type: an integer ≥ 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def flavor_name(text: str) -> str:
    """An argparse type: the name of a flavor."""
    from rmsprop.flavors import FLAVORS

    if text not in FLAVORS:
        known = ", ".join(FLAVORS)
        raise argparse.ArgumentTypeError(f"unknown flavor {text!r}; the known flavors are: {known}")
    return text


def non_negative_int(text: str) -> int:
    """An argparse type: an integer in [0, 2³² - 1] (what every random generator accepts)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if not 0 <= value < 2**32:
        raise argparse.ArgumentTypeError(f"must be in [0, 2^32 - 1], got {value}")
    return value


def format_table(headers: Sequence[str], rows: Sequence[Sequence[str]], indent: str = "") -> str:
    """Columns aligned with two spaces between them and a rule under the header.

    On a terminal narrower than the table, the last column is cut with "…";
    piped output is never cut.

    Example:
        >>> print(format_table(["name", "value"], [["lr", "0.01"], ["decay", "0.99"]]))
        name   value
        ─────  ─────
        lr     0.01
        decay  0.99
    """
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows)]
    rule = ["─" * width for width in widths]
    lines = []
    for row in (headers, rule, *rows):
        cells = [str(cell).ljust(width) for cell, width in zip(row, widths)]
        lines.append((indent + "  ".join(cells)).rstrip())
    if sys.stdout.isatty():
        columns = shutil.get_terminal_size().columns
        lines = [line if len(line) <= columns else line[: columns - 1] + "…" for line in lines]
    return "\n".join(lines)
