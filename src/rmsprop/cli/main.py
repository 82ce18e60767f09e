"""The ``rmsprop`` command: argparse subcommands built from the modules listed in `COMMANDS`.

A command is one module of `rmsprop.cli` with two functions:

* ``add_parser(subparsers)``: adds its subparser (``subparsers.add_parser(...)``)
  and its options;
* ``run(args) -> int``: does the work and returns the exit status.

Its module imports only the standard library at import time; heavy imports
go inside ``run``. A problem the user can fix is raised as `CommandError`
(printed as one line on stderr, exit status 1); bad arguments print one line
and exit with 2. Neither ever shows a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence
from typing import NoReturn

import rmsprop
from rmsprop.cli._common import CommandError

__all__ = ["COMMANDS", "build_parser", "main"]

# The subcommands, in the order ``rmsprop --help`` lists them: module names in rmsprop.cli.
COMMANDS: tuple[str, ...] = ("demo", "bench", "flavors", "info")


class UsageError(Exception):
    """Bad arguments: argparse's message, on one line."""


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line on stderr, never a usage dump."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: error: {message} (see '{self.prog} --help')")


def build_parser() -> argparse.ArgumentParser:
    """The ``rmsprop`` parser with one subparser per module in `COMMANDS`."""
    parser = _Parser(
        prog="rmsprop",
        description="Every framework's RMSprop, exactly, with named flavors.",
        epilog="Start with: rmsprop demo --quick",
    )
    parser.add_argument("--version", action="version", version=f"rmsprop {rmsprop.__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    for name in COMMANDS:
        importlib.import_module(f"rmsprop.cli.{name}").add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Runs ``rmsprop ARGS`` and returns its exit status (0 on success)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except UsageError as error:
        print(error, file=sys.stderr)
        return 2
    except SystemExit as exit_:  # --help and --version
        return exit_.code if isinstance(exit_.code, int) else 0
    if args.command is None:
        parser.print_help()
        return 0
    try:
        status: int = args.run(args)
    except CommandError as error:
        print(f"rmsprop {args.command}: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"rmsprop {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (`rmsprop flavors | head`): stop quietly, as Unix tools do.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    return status
