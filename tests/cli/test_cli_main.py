"""The `rmsprop` program: its entry points, its imports, and how it refuses bad input."""

from __future__ import annotations

import importlib
import re
import subprocess
import sys

import pytest

from rmsprop.cli import main
from rmsprop.cli.main import COMMANDS

HEAVY_MODULES = ("torch", "matplotlib", "sklearn", "rich", "jax", "scipy")


def run_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "rmsprop", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_help_runs_without_importing_any_heavy_module():
    code = (
        "import runpy, sys\n"
        "sys.argv = ['rmsprop', '--help']\n"
        "try:\n"
        "    runpy.run_module('rmsprop', run_name='__main__')\n"
        "except SystemExit as exit_:\n"
        "    assert exit_.code == 0, exit_.code\n"
        f"print(sorted(m for m in {HEAVY_MODULES!r} if m in sys.modules))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert "usage: rmsprop" in out.stdout
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_import_rmsprop_imports_no_cli_dependency():
    code = f"import rmsprop, sys; print(sorted(m for m in {HEAVY_MODULES!r} if m in sys.modules))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "[]"


def test_python_dash_m_help_lists_every_command():
    out = run_cli("--help")
    assert out.returncode == 0, out.stderr
    for name in COMMANDS:
        assert re.search(rf"^\s+{name}\s", out.stdout, re.MULTILINE), name


@pytest.mark.parametrize("name", COMMANDS)
def test_each_command_is_one_module_with_add_parser_and_run(name):
    module = importlib.import_module(f"rmsprop.cli.{name}")
    assert callable(module.add_parser) and callable(module.run)


def test_version(capsys):
    assert main(["--version"]) == 0
    assert re.fullmatch(r"rmsprop \d+\.\d+\.\d+\S*\n", capsys.readouterr().out)


def test_no_command_prints_help(capsys):
    assert main([]) == 0
    assert "usage: rmsprop" in capsys.readouterr().out


@pytest.mark.parametrize("command", COMMANDS)
def test_each_command_has_help(command, capsys):
    assert main([command, "--help"]) == 0
    assert f"usage: rmsprop {command}" in capsys.readouterr().out


def _cuda_available() -> bool:
    torch = pytest.importorskip("torch")
    return bool(torch.cuda.is_available())


# Bad input: the arguments, the exit status, and what the one line on stderr must say.
# "{file}" is an existing regular file (so "{file}/sub" can never be created).
BAD_INPUT = [
    (["nope"], 2, r"invalid choice: 'nope'"),
    (["demo", "--bogus"], 2, r"unrecognized arguments: --bogus"),
    (["demo", "--flavor", "nope"], 2, r"--flavor: unknown flavor 'nope'; the known .*pytorch"),
    (["demo", "--steps", "-5"], 2, r"argument --steps: must be at least 1, got -5"),
    (["demo", "--steps", "0"], 2, r"argument --steps: must be at least 1, got 0"),
    (["demo", "--steps", "ten"], 2, r"argument --steps: expected a whole number, got 'ten'"),
    (["demo", "--seed", "-1"], 2, r"argument --seed: must be in \[0, 2\^32 - 1\], got -1"),
    (["demo", "--out", "{file}/sub"], 1, r"cannot write to the output folder .*: Not a directory"),
    (["demo", "--out", "{file}"], 1, r"cannot write to the output folder '.*': File exists"),
    (["demo", "--device", "tpu"], 1, r"--device 'tpu' is not a device; use cpu or cuda\[:N\]"),
    (["demo", "--device", "meta"], 1, r"--device 'meta': the demo runs on cpu or cuda\[:N\]"),
    (["demo", "--device", "cuda"], 1, r"--device cuda: CUDA is not available here \(.*\); use cpu"),
    (["flavors", "nope"], 2, r"argument name: unknown flavor 'nope'"),
    (["info", "--bogus"], 2, r"unrecognized arguments: --bogus"),
]  # fmt: skip


@pytest.mark.parametrize(("args", "status", "message"), BAD_INPUT, ids=lambda v: str(v))
def test_bad_input_is_one_clear_line_and_a_nonzero_exit(args, status, message, tmp_path, capsys):
    if "cuda" in args and _cuda_available():
        pytest.skip("CUDA is available here")
    if "--device" in args:
        pytest.importorskip("torch")
    existing_file = tmp_path / "a-file"
    existing_file.write_text("")
    args = [arg.replace("{file}", str(existing_file)) for arg in args]
    assert main(args) == status
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith(f"rmsprop {args[0]}: error: " if status == 1 else "rmsprop")
    assert re.search(message, lines[0]), lines[0]
    assert "Traceback" not in captured.err
    assert captured.out == ""


def test_bad_input_in_a_real_process_has_no_traceback(tmp_path):
    out = run_cli("demo", "--steps", "-5", "--out", str(tmp_path))
    assert out.returncode == 2
    assert out.stderr.count("\n") == 1 and "Traceback" not in out.stderr
    assert "--steps: must be at least 1" in out.stderr


def test_demo_without_its_packages_says_what_to_install(monkeypatch, tmp_path, capsys):
    import rmsprop.cli.demo as demo

    monkeypatch.setattr(demo, "_installed", lambda module: module not in ("matplotlib", "rich"))
    assert main(["demo", "--out", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err == (
        "rmsprop demo: error: the demo needs matplotlib, rich, not installed here; "
        "install them with: pip install 'rmsprop[demo]'\n"
    )
