"""``rmsprop demo``: what RMSprop does and why its flavors matter, measured here and now."""

from __future__ import annotations

import argparse
import importlib.util
import shlex
import sys
import tempfile
from pathlib import Path
from typing import Any

from rmsprop.cli._common import CommandError, flavor_name, non_negative_int, positive_int

__all__ = ["DEFAULT_FLAVORS", "DEMO_PACKAGES", "add_parser", "run"]

# Import name → distribution name of what the demo needs beyond the core.
DEMO_PACKAGES = {
    "torch": "torch",
    "matplotlib": "matplotlib",
    "sklearn": "scikit-learn",
    "rich": "rich",
}
# PyTorch's rule, TF1's (ε inside the root, v₀ = 1), Keras's (ε inside, v₀ = 0), DQN's (centered).
DEFAULT_FLAVORS = ("pytorch", "tensorflow", "keras", "dqn")

_DESCRIPTION = """\
Show what RMSprop does, and why its flavors matter, on this machine:

  1. the textbook step, by hand and by rmsprop.numpy, and the same step in each flavor;
  2. SGD, SGD + momentum, Adagrad, Adam and RMSprop (each flavor) on the
     Rosenbrock, Beale and saddle-point functions, drawn over contour plots;
  3. the same optimizers training a small network on scikit-learn's handwritten
     digits (bundled with scikit-learn: nothing is downloaded), learning rates
     chosen on a validation set, accuracy on held-out digits;
  4. a conclusion written from the measured numbers.

Figures (PNG), report.md and results.json go to the output folder. About a
minute on a 2-core CPU; --quick takes about ten seconds. The same seed gives
the same numbers (wall times aside)."""


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="see what RMSprop does and why the flavors matter (figures and a report)",
        description=_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--quick", action="store_true", help="fewer steps, learning rates and seeds (~10 s)"
    )
    parser.add_argument(
        "--steps",
        type=positive_int,
        metavar="N",
        help="training steps per run on the digits (default: 600; 150 with --quick)",
    )
    parser.add_argument(
        "--seed", type=non_negative_int, default=0, help="the first seed (default: 0)"
    )
    parser.add_argument(
        "--flavor",
        dest="flavors",
        action="append",
        type=flavor_name,
        metavar="NAME",
        help=(
            "an RMSprop flavor to compare; repeat for several "
            f"(default: {' '.join(DEFAULT_FLAVORS)}; see `rmsprop flavors`)"
        ),
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("rmsprop-demo"),
        metavar="DIR",
        help="output folder, created if needed (default: ./rmsprop-demo)",
    )
    parser.add_argument(
        "--device",
        default="cpu",
        help="torch device for the network training: cpu or cuda[:N] (default: cpu)",
    )
    parser.set_defaults(run=run)


def _check_packages() -> None:
    missing = [dist for module, dist in DEMO_PACKAGES.items() if not _installed(module)]
    if missing:
        raise CommandError(
            f"the demo needs {', '.join(missing)}, not installed here; "
            f"install them with: pip install 'rmsprop[demo]'"
        )


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def _check_device(name: str) -> str:
    """The device, normalised; CommandError if torch can't use it here."""
    import torch

    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise CommandError(f"--device {name!r} is not a device; use cpu or cuda[:N]") from None
    if device.type == "cpu":
        return "cpu"
    if device.type != "cuda":
        raise CommandError(f"--device {name!r}: the demo runs on cpu or cuda[:N]")
    if not torch.cuda.is_available():
        why = (
            f"this torch ({torch.__version__}) is built without CUDA"
            if torch.version.cuda is None
            else "no GPU is visible"
        )
        raise CommandError(f"--device {name}: CUDA is not available here ({why}); use cpu")
    count = torch.cuda.device_count()
    if device.index is not None and device.index >= count:
        raise CommandError(f"--device {name}: there are only {count} CUDA device(s) here")
    return str(device)


def _prepare_out(out: Path) -> Path:
    """Creates the output folder and checks that files can be written in it."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as error:
        reason = error.strerror or str(error)
        raise CommandError(f"cannot write to the output folder {str(out)!r}: {reason}") from None
    return out


def _command_line(args: argparse.Namespace, flavors: list[str], device: str) -> str:
    """The command that reproduces these numbers (the output folder doesn't change them)."""
    words = ["rmsprop", "demo", *(["--quick"] if args.quick else [])]
    if args.steps is not None:
        words += ["--steps", str(args.steps)]
    words += ["--seed", str(args.seed)]
    for name in flavors:
        words += ["--flavor", name]
    words += ["--device", device]
    return shlex.join(words)


def run(args: argparse.Namespace) -> int:
    _check_packages()
    device = _check_device(args.device)
    out = _prepare_out(args.out)

    from rich.console import Console

    from rmsprop.cli._demo.run import make_settings, run_demo

    flavors = list(dict.fromkeys(args.flavors or DEFAULT_FLAVORS))  # in order, no repeats
    settings = make_settings(
        out=out,
        quick=args.quick,
        steps=args.steps,
        seed=args.seed,
        flavors=flavors,
        device=device,
        command_line=_command_line(args, flavors, device),
    )
    # Piped output (CI logs, tests) gets a fixed width rather than 80 columns of wrapped tables.
    console = Console(width=None if sys.stdout.isatty() else 140)
    try:
        run_demo(settings, console)
    except OSError as error:  # the folder checked fine but a write failed (disk full, removed)
        raise CommandError(f"cannot write the demo's output to {str(out)!r}: {error}") from None
    return 0
