"""What this machine can run: package versions, devices, and each backend's code paths;
and what each optimizer state format costs in memory.

Every probe is a function here returning a `Probe`; `rmsprop info` prints
them and other commands may use them. When a code path is built, its probe
is the one function to change.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import os
import platform
from collections.abc import Callable
from importlib import metadata
from typing import Any

__all__ = ["PACKAGES", "Probe", "StateSize", "code_paths", "devices", "state_sizes", "versions"]

# Packages `rmsprop info` reports, with what they are for here.
PACKAGES: dict[str, str] = {
    "numpy": "core",
    "torch": "rmsprop[torch]",
    "jax": "rmsprop[jax]",
    "jaxlib": "rmsprop[jax]",
    "optax": "rmsprop[jax]",
    "triton": "GPU kernels",
    "numba": "rmsprop[fast]",
    "matplotlib": "rmsprop[demo]",
    "scikit-learn": "rmsprop[demo]",
    "rich": "rmsprop[demo]",
}


@dataclasses.dataclass(frozen=True)
class Probe:
    """One thing that is or isn't usable here, and why."""

    name: str
    available: bool
    why: str


def versions() -> dict[str, str | None]:
    """Python, rmsprop and each of `PACKAGES`: its version, or ``None`` if not installed.

    Read from the installed metadata: nothing is imported.
    """
    import rmsprop

    found: dict[str, str | None] = {
        "python": platform.python_version(),
        "rmsprop": rmsprop.__version__,
    }
    for package in PACKAGES:
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = None
    return found


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def _torch() -> tuple[Any, str]:
    """(the torch module or None, why not)."""
    if not _installed("torch"):
        return None, "torch is not installed: pip install 'rmsprop[torch]'"
    try:
        return importlib.import_module("torch"), ""
    except Exception as error:  # a broken install: report it, don't crash `info`
        return None, f"torch is installed but fails to import: {error}"


def devices() -> list[Probe]:
    """The CPU, and CUDA as torch sees it."""
    probes = [Probe("cpu", True, f"{os.cpu_count() or '?'} cores, {platform.machine()}")]
    torch, why = _torch()
    if torch is None:
        probes.append(Probe("cuda", False, why))
    elif torch.version.cuda is None:
        probes.append(Probe("cuda", False, f"torch {torch.__version__} is built without CUDA"))
    elif not torch.cuda.is_available():
        probes.append(
            Probe(
                "cuda", False, f"torch {torch.__version__} (CUDA {torch.version.cuda}) finds no GPU"
            )
        )
    else:
        names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        probes.append(Probe("cuda", True, f"CUDA {torch.version.cuda}: {', '.join(names)}"))
    return probes


def _numpy_reference() -> Probe:
    import numpy

    return Probe(
        "numpy reference", True, f"rmsprop.numpy.update, numpy {numpy.__version__}: always"
    )


def _torch_single_tensor() -> Probe:
    torch, why = _torch()
    if torch is None:
        return Probe("torch single-tensor", False, why)
    return Probe(
        "torch single-tensor",
        True,
        f"rmsprop.torch.RMSprop(foreach=False), torch {torch.__version__}; any device",
    )


def _torch_foreach() -> Probe:
    torch, why = _torch()
    if torch is None:
        return Probe("torch foreach", False, why)
    return Probe(
        "torch foreach",
        True,
        f"rmsprop.torch.RMSprop(foreach=True), torch {torch.__version__}; "
        "the default on CUDA without triton",
    )


def _triton() -> tuple[bool, str]:
    """(triton is installed, its version or why not)."""
    if not _installed("triton"):
        return False, "triton is not installed: pip install 'rmsprop[triton]'"
    return True, f"triton {metadata.version('triton')}"


def _fused_registry() -> tuple[Any, str]:
    """(the torch backend's kernel registry or None, why not): the registry the optimizer
    asks, so a path shown here is one the optimizer takes."""
    torch, why = _torch()
    if torch is None:
        return None, why
    from rmsprop.torch import _fused

    return _fused, ""


def _torch_fused_cuda() -> Probe:
    registry, why = _fused_registry()
    if registry is None:
        return Probe("torch fused CUDA", False, why)
    why = registry.why_not_on("cuda")
    if why:
        return Probe("torch fused CUDA", False, why)
    _, triton = _triton()
    torch, _ = _torch()
    if not torch.cuda.is_available():
        return Probe("torch fused CUDA", False, f"{triton} is installed, but torch sees no GPU")
    return Probe("torch fused CUDA", True, f"rmsprop.torch.RMSprop, {triton}; the default on CUDA")


def _fused_cpu_kernel() -> tuple[bool, str]:
    """(the Numba kernel can run, its Numba version or why not)."""
    from rmsprop.kernels import numba_cpu  # imports Numba when it is installed

    if not numba_cpu.AVAILABLE:
        return False, numba_cpu.WHY_UNAVAILABLE
    return True, f"numba {metadata.version('numba')}"


def _numpy_fused_cpu() -> Probe:
    available, why = _fused_cpu_kernel()
    if not available:
        return Probe("numpy fused CPU", False, why)
    return Probe("numpy fused CPU", True, f"rmsprop.numpy.RMSprop, {why}; its default")


def _torch_fused_cpu() -> Probe:
    registry, why = _fused_registry()
    if registry is None:
        return Probe("torch fused CPU", False, why)
    why = registry.why_not_on("cpu")
    if why:
        return Probe("torch fused CPU", False, why)
    kernel = registry.fused_kernel("cpu").name
    version = metadata.version(kernel)
    return Probe(
        "torch fused CPU",
        True,
        f"rmsprop.torch.RMSprop, {kernel} {version}; the default for CPU tensors",
    )


def _triton_interpreter() -> Probe:
    has_triton, triton = _triton()
    if not has_triton:
        return Probe("Triton interpreter", False, triton)
    return Probe(
        "Triton interpreter",
        True,
        f"RMSprop(fused=True) on CPU tensors with TRITON_INTERPRET=1 (for tests), {triton}",
    )


def _jax() -> Probe:
    missing = [name for name in ("jax", "optax") if not _installed(name)]
    if missing:
        return Probe(
            "jax", False, f"{' and '.join(missing)} not installed: pip install 'rmsprop[jax]'"
        )
    return Probe("jax", True, f"rmsprop.jax, jax {metadata.version('jax')}")


# Every code path, in the order `rmsprop info` lists them.
_CODE_PATHS: tuple[Callable[[], Probe], ...] = (
    _numpy_reference,
    _numpy_fused_cpu,
    _torch_single_tensor,
    _torch_foreach,
    _torch_fused_cuda,
    _torch_fused_cpu,
    _triton_interpreter,
    _jax,
)


def code_paths() -> list[Probe]:
    """Each backend's code paths: available here or not, and why."""
    return [probe() for probe in _CODE_PATHS]


# The state formats `rmsprop info` sizes, and for which buffer sizes: a large parameter's,
# and one just under the 8-bit threshold (which stays float32).
STATE_FORMATS = ("float32", "bfloat16", "8bit")
LARGE_BUFFER = 1_000_000


@dataclasses.dataclass(frozen=True)
class StateSize:
    """What one state buffer of ``numel`` elements takes in one format (scales included)."""

    state_dtype: str
    numel: int
    bytes: int
    bytes_per_element: float


def state_sizes() -> list[StateSize]:
    """Each of `STATE_FORMATS` at `LARGE_BUFFER` elements and just under the 8-bit threshold,
    as `rmsprop.quantization` computes them (RMSprop keeps one to three such buffers)."""
    from rmsprop import quantization

    numels = (LARGE_BUFFER, quantization.MIN_QUANTIZED_NUMEL - 1)
    return [
        StateSize(
            state_dtype,
            numel,
            quantization.state_bytes(numel, state_dtype),
            quantization.bytes_per_element(numel, state_dtype),
        )
        for state_dtype in STATE_FORMATS
        for numel in numels
    ]
