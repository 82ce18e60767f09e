"""The README a user reads: its examples run, and its flavor table is the presets'."""

import contextlib
import io
import pathlib
import re
import subprocess
import sys

import pytest

from rmsprop.flavors import flavor_table

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def python_blocks():
    return re.findall(r"```python\n(.*?)```", README, flags=re.DOTALL)


def test_readme_has_python_examples():
    assert len(python_blocks()) >= 2


@pytest.mark.parametrize("index", range(len(python_blocks())))
def test_readme_example_runs_and_prints_what_it_says(index):
    code = python_blocks()[index]
    if "import torch" in code:
        pytest.importorskip("torch", reason="this README example uses the torch extra")
    if "import rmsprop.jax" in code:
        pytest.importorskip("optax", reason="this README example uses the jax extra")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, f"README block {index}", "exec"), {})
    printed = out.getvalue().splitlines()
    promised = re.findall(r"print\(.*\)  # (.*)", code)
    assert printed[: len(promised)] == promised


def test_flavor_table_is_generated_from_the_presets():
    table = re.search(
        r"<!-- flavor-table:start -->\n(.*?)\n<!-- flavor-table:end -->", README, re.DOTALL
    )
    assert table is not None
    assert table.group(1) == flavor_table()


def test_first_setup_command_example_prints_the_textbook_numbers():
    out = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "textbook_step.py")],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert out.stdout.splitlines()[0] == "theta after one step: [0.23162277 0.36837724 0.56837725]"
    assert "ci/test.sh" in (ROOT / ".ci" / "run").read_text()
    assert "bash ci/test.sh" in README and "examples/textbook_step.py" in README
