"""Fills docs/flavors.md's generated blocks from the presets; the docs test checks them.

Usage: python tests/parity/flavor_docs.py   (rewrites docs/flavors.md in place)

Each block sits between ``<!-- NAME:start -->`` and ``<!-- NAME:end -->``
and holds exactly what its generator returns.
"""

from __future__ import annotations

import pathlib
import re
from collections.abc import Callable

from rmsprop.tables import flavor_details, flavor_table, translation_table

FLAVOR_DOCS = pathlib.Path(__file__).resolve().parents[2] / "docs" / "flavors.md"

GENERATED: dict[str, Callable[[], str]] = {
    "flavor-table": flavor_table,
    "translation-table": translation_table,
    "flavor-details": flavor_details,
}


def block_pattern(name: str) -> re.Pattern[str]:
    return re.compile(rf"<!-- {name}:start -->.*?<!-- {name}:end -->", re.DOTALL)


def block(name: str, content: str) -> str:
    return f"<!-- {name}:start -->\n{content}\n<!-- {name}:end -->"


def render(text: str) -> str:
    """``text`` with every generated block filled in afresh."""
    for name, generate in GENERATED.items():
        text, count = block_pattern(name).subn(lambda _, n=name, g=generate: block(n, g()), text)
        if count != 1:
            raise ValueError(f"docs/flavors.md must have one {name} block, it has {count}")
    return text


if __name__ == "__main__":
    FLAVOR_DOCS.write_text(render(FLAVOR_DOCS.read_text()))
