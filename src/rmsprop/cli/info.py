"""``rmsprop info``: versions, devices, which backends and code paths work here, and the
bytes per parameter of each optimizer state format."""

from __future__ import annotations

import argparse
import dataclasses
import json
from typing import Any

__all__ = ["add_parser", "run"]


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "info",
        help="versions, devices, and which backends and code paths are available here",
        description=(
            "Show the versions of Python and of the packages rmsprop can use, the devices "
            "torch sees, which code paths are available here (and why not where not), and "
            "how many bytes each optimizer state format takes per parameter."
        ),
    )
    parser.add_argument("--json", action="store_true", help="print the same as JSON")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from rmsprop.cli._backends import PACKAGES, code_paths, devices, state_sizes, versions
    from rmsprop.cli._common import format_table

    found = versions()
    device_probes = devices()
    path_probes = code_paths()
    sizes = state_sizes()
    if args.json:
        print(
            json.dumps(
                {
                    "versions": found,
                    "devices": [dataclasses.asdict(probe) for probe in device_probes],
                    "code_paths": [dataclasses.asdict(probe) for probe in path_probes],
                    "state_sizes": [dataclasses.asdict(size) for size in sizes],
                },
                indent=2,
            )
        )
        return 0
    version_rows = [
        [name, version or "not installed", PACKAGES.get(name, "")]
        for name, version in found.items()
    ]
    sections = (
        ("Versions", ["package", "version", "for"], version_rows),
        ("Devices", ["device", "available", "details"], _rows(device_probes)),
        ("Backends and code paths", ["code path", "available", "why"], _rows(path_probes)),
        _state_size_section(sizes),
    )
    for index, (title, headers, rows) in enumerate(sections):
        if index:
            print()
        print(title)
        print(format_table(headers, rows, indent="  "))
    return 0


def _rows(probes: Any) -> list[list[str]]:
    return [[probe.name, "yes" if probe.available else "no", probe.why] for probe in probes]


def _state_size_section(sizes: Any) -> tuple[str, list[str], list[list[str]]]:
    """Bytes per parameter of one buffer, a format a row and a buffer size a column."""
    numels = list(dict.fromkeys(size.numel for size in sizes))
    by_format: dict[str, list[str]] = {}
    for size in sizes:
        by_format.setdefault(size.state_dtype, []).append(f"{size.bytes_per_element:.3f}")
    headers = ["state_dtype", *(f"{numel:,} elements" for numel in numels)]
    rows = [[state_dtype, *cells] for state_dtype, cells in by_format.items()]
    return "State bytes per parameter, per buffer (RMSprop keeps 1 to 3)", headers, rows
