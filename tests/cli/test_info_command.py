"""`rmsprop info`: versions, devices and code paths."""

from __future__ import annotations

import json
import platform
from importlib import metadata

import numpy as np
import pytest

from rmsprop.cli import main
from rmsprop.cli._backends import PACKAGES, code_paths

CODE_PATHS = (
    "numpy reference",
    "numpy fused CPU",
    "torch single-tensor",
    "torch foreach",
    "torch fused CUDA",
    "torch fused CPU",
    "Triton interpreter",
    "jax",
)


def installed(package: str) -> bool:
    try:
        metadata.version(package)
    except metadata.PackageNotFoundError:
        return False
    return True


def test_info_lists_versions_devices_and_code_paths(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    for title in ("Versions", "Devices", "Backends and code paths"):
        assert f"\n{title}\n" in f"\n{out}"
    versions = out.split("Versions\n")[1].split("\n\n")[0].splitlines()[2:]
    rows = {line.split()[0]: line.split()[1:] for line in versions}
    assert rows["python"][0] == platform.python_version()
    assert rows["numpy"][0] == np.__version__
    for package in PACKAGES:
        expected = metadata.version(package) if installed(package) else "not"
        assert rows[package][0] == expected, package
    for path in CODE_PATHS:
        assert any(line.strip().startswith(path) for line in out.splitlines()), path


def test_json_has_the_same_data():
    import contextlib
    import io

    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        assert main(["info", "--json"]) == 0
    data = json.loads(buffer.getvalue())
    assert data["versions"]["numpy"] == np.__version__
    assert [probe["name"] for probe in data["code_paths"]] == list(CODE_PATHS)
    assert {probe["name"] for probe in data["devices"]} == {"cpu", "cuda"}
    assert all(
        isinstance(probe["available"], bool) and probe["why"] for probe in data["code_paths"]
    )


def test_the_reference_is_always_available_and_the_others_say_why():
    probes = {probe.name: probe for probe in code_paths()}
    assert probes["numpy reference"].available
    assert probes["Triton interpreter"].available == installed("triton")
    cuda = installed("torch") and __import__("torch").cuda.is_available()
    assert probes["torch fused CUDA"].available == (installed("triton") and cuda)
    if installed("triton") and not cuda:
        from rmsprop.torch import _fused

        # The registry's reason (a triton below the kernel's floor, as torch 2.4 pins) or,
        # where the kernel could run, the missing GPU.
        why = _fused.why_not_on("cuda") or "is installed, but torch sees no GPU"
        assert probes["torch fused CUDA"].why.endswith(why)
    torch_installed = installed("torch")
    assert probes["torch foreach"].available == torch_installed
    assert probes["torch single-tensor"].available == torch_installed
    numba_installed = installed("numba")
    assert probes["numpy fused CPU"].available == numba_installed
    assert probes["torch fused CPU"].available == (numba_installed and torch_installed)
    for probe in probes.values():
        assert probe.why  # every line says why, available or not


def test_the_fused_paths_are_the_registry_s_answer(monkeypatch):
    """`rmsprop info` asks the kernel registry the optimizer asks (a triton below the floor,
    say, is refused by both), not the packages' presence."""
    pytest.importorskip("torch")
    from rmsprop.torch._fused import numba_cpu, triton

    monkeypatch.setattr(triton, "unsupported_reason", lambda device: f"no kernel for {device}")
    monkeypatch.setattr(numba_cpu, "unsupported_reason", lambda device: "numba refused")
    probes = {probe.name: probe for probe in code_paths()}
    assert not probes["torch fused CUDA"].available
    assert probes["torch fused CUDA"].why == "no kernel for cuda"
    assert not probes["torch fused CPU"].available
    assert probes["torch fused CPU"].why == "numba refused"


def test_info_shows_the_state_bytes_of_each_format(capsys):
    from rmsprop import quantization
    from rmsprop.cli._backends import LARGE_BUFFER, state_sizes

    small = quantization.MIN_QUANTIZED_NUMEL - 1
    sizes = {(size.state_dtype, size.numel): size for size in state_sizes()}
    assert sizes["float32", LARGE_BUFFER].bytes_per_element == 4.0
    assert sizes["bfloat16", LARGE_BUFFER].bytes_per_element == 2.0
    assert sizes["8bit", LARGE_BUFFER].bytes == LARGE_BUFFER + 4 * -(-LARGE_BUFFER // 256)
    assert sizes["8bit", small].bytes_per_element == 4.0  # under the threshold: float32
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    section = out.split("State bytes per parameter")[1].splitlines()
    rows = {line.split()[0]: line.split()[1:] for line in section[3:] if line.strip()}
    assert rows == {
        "float32": ["4.000", "4.000"],
        "bfloat16": ["2.000", "2.000"],
        "8bit": ["1.016", "4.000"],
    }
    assert f"{LARGE_BUFFER:,} elements" in section[1] and f"{small:,} elements" in section[1]


def test_json_has_the_state_sizes():
    import contextlib
    import io

    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        assert main(["info", "--json"]) == 0
    sizes = json.loads(buffer.getvalue())["state_sizes"]
    assert {size["state_dtype"] for size in sizes} == {"float32", "bfloat16", "8bit"}
    assert all(
        size["bytes"] == pytest.approx(size["bytes_per_element"] * size["numel"]) for size in sizes
    )
