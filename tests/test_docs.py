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
    printed = iter(out.getvalue().splitlines())
    promised = re.findall(r"print\(.*\)  # (.*)", code)
    # Every promised line is printed, in order (prints without a promise may come between).
    assert all(any(line == want for line in printed) for want in promised), promised


def test_flavor_table_is_generated_from_the_presets():
    table = re.search(
        r"<!-- flavor-table:start -->\n(.*?)\n<!-- flavor-table:end -->", README, re.DOTALL
    )
    assert table is not None
    assert table.group(1) == flavor_table()


def test_numpy_only_example_prints_the_textbook_numbers():
    out = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "textbook_step.py")],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert out.stdout.splitlines()[0] == "theta after one step: [0.23162277 0.36837724 0.56837725]"
    assert "python examples/textbook_step.py" in README


def test_ci_runs_the_readmes_setup_commands_as_written():
    commands = re.findall(r"```bash\n(python3(?:\.\d+)? -m venv .*?)\n```", README)
    assert len(commands) == 3, commands
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    demo, tests, floors = commands
    assert demo.endswith("rmsprop demo") and tests.endswith("bash ci/test.sh")
    # CI runs the demo quick and out of the checkout; otherwise the very same lines.
    assert demo + ' --quick --out "${TMPDIR:-/tmp}/rmsprop-ci-demo"' in ci
    assert tests in ci
    assert "-c ci/floors.txt" in floors and floors in ci


def test_the_floors_job_pins_every_extras_floor():
    pyproject = (ROOT / "pyproject.toml").read_text()
    floors = dict(
        line.split("==")
        for line in (ROOT / "ci" / "floors.txt").read_text().splitlines()
        if "==" in line and not line.startswith("#")
    )
    required = re.findall(r'"([a-z-]+)>=([0-9.]+)(?:;[^"]*)?"', pyproject)
    runtime = {name: floor for name, floor in required if name not in {
        "hatchling", "pytest", "hypothesis", "ruff", "mypy", "triton",
        # the parity extra: the frameworks the flavors are tested against, not run-time needs
        "tensorflow-cpu", "keras", "stable-baselines3", "gymnasium", "pfrl",
    }}  # fmt: skip
    assert runtime, "no floors found in pyproject.toml"
    for name, floor in runtime.items():
        assert name in floors, f"ci/floors.txt does not pin {name}"
        pinned = tuple(map(int, floors[name].split(".")[: len(floor.split("."))]))
        assert pinned == tuple(map(int, floor.split("."))), f"{name}: {floors[name]} vs {floor}"


def test_the_fused_paths_page_names_real_options_and_its_code_compiles():
    torch = pytest.importorskip("torch", reason="the page documents the torch extra")
    import inspect

    from rmsprop.torch import RMSprop

    text = (ROOT / "docs" / "fused.md").read_text()
    assert "[docs/fused.md](docs/fused.md)" in README
    for block in re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL):
        compile(block, "docs/fused.md", "exec")  # the CUDA-graph recipe needs a GPU to run
    options = set(re.findall(r"`([a-z_]+)=[^`]*`", text)) - {"mode"}  # torch.compile's mode
    assert {"fused", "foreach", "capturable", "state_dtype", "stochastic_rounding"} <= options
    assert options <= set(inspect.signature(RMSprop).parameters), options
    assert torch.ops.rmsprop.fused_step.default.name() == "rmsprop::fused_step"
    assert "`rmsprop::fused_step`" in text


def test_the_layout_names_every_module_and_package_of_the_tree():
    layout = README.split("## Layout", 1)[1].split("```", 2)[1]
    source = ROOT / "src" / "rmsprop"
    names = {p.name for p in source.iterdir() if p.suffix == ".py" and p.name != "__init__.py"}
    names -= {"__main__.py", "_not_given.py", "_versions.py", "py.typed"}  # small helpers
    names |= {f"{p.name}/" for p in source.iterdir() if p.is_dir() and p.name != "__pycache__"}
    names |= {p.name for p in (source / "torch").glob("*.py") if p.name != "__init__.py"}
    missing = sorted(name for name in names if name not in layout)
    assert missing == []
    for name in re.findall(r"\b[\w/]+\.py\b", layout):
        base = name.split("/")[-1]
        found = [p for top in ("src", "benchmarks", "tests") for p in (ROOT / top).rglob(base)]
        assert found, f"the layout names {name}, which is gone"
