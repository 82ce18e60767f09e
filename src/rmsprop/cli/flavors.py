"""``rmsprop flavors``: the flavor table, generated from the presets."""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

from rmsprop.cli._common import flavor_name
from rmsprop.flavors import FLAVORS, flavor_table

__all__ = ["add_parser", "run"]


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "flavors",
        help="list the flavors: each framework's RMSprop rule and defaults",
        description=(
            "List the flavors (each framework's RMSprop as a named Config), or show one in full."
        ),
    )
    parser.add_argument(
        "name",
        nargs="?",
        type=flavor_name,
        help="show this flavor in full: every Config field, its source and notes",
    )
    parser.add_argument(
        "--markdown",
        action="store_true",
        help="print the table as Markdown, exactly rmsprop.flavors.flavor_table()",
    )
    parser.set_defaults(run=run)


def _table_cells() -> tuple[list[str], list[list[str]]]:
    """flavor_table()'s header and rows as cells (so the terminal shows exactly its data)."""
    lines = flavor_table().splitlines()

    def cells(line: str) -> list[str]:
        return [cell.strip().strip("`") for cell in line.strip().strip("|").split(" | ")]

    return cells(lines[0]), [cells(line) for line in lines[2:]]


def run(args: argparse.Namespace) -> int:
    from rmsprop.cli._common import format_table

    if args.name is not None:
        preset = FLAVORS[args.name]
        rows = [
            [f.name, repr(getattr(preset.config, f.name))]
            for f in dataclasses.fields(preset.config)
        ]
        print(f"{preset.name}: {preset.title}")
        print(f"source: {preset.source}")
        if preset.notes:
            print(f"notes:  {preset.notes}")
        print()
        print(format_table(["Config field", "value"], rows, indent="  "))
        print()
        print(f'use it: rmsprop.flavor("{preset.name}", lr=...)  or  '
              f'rmsprop.torch.RMSprop(params, flavor="{preset.name}")')  # fmt: skip
        return 0
    if args.markdown:
        print(flavor_table())
        return 0
    headers, rows = _table_cells()
    print(format_table(headers, rows))
    print()
    print("`rmsprop flavors NAME` shows one in full; `--markdown` prints this table as Markdown.")
    return 0
