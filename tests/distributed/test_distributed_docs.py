"""docs/distributed.md: linked from the README, its code compiles, its names are real."""

from __future__ import annotations

import inspect
import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
PAGE = (ROOT / "docs" / "distributed.md").read_text()


def test_the_readme_links_the_page():
    assert "[docs/distributed.md](docs/distributed.md)" in (ROOT / "README.md").read_text()


def test_its_code_compiles_and_the_options_it_names_are_the_optimizers():
    pytest.importorskip("torch", reason="the page documents the torch extra")
    from rmsprop.torch import RMSprop

    blocks = re.findall(r"```python\n(.*?)```", PAGE, flags=re.DOTALL)
    assert blocks
    for block in blocks:
        compile(block, "docs/distributed.md", "exec")  # (running it takes a process group)
    options = set(re.findall(r"`([a-z_]+)=[^`]*`", PAGE))
    assert {"foreach", "capturable", "state_dtype"} <= options
    assert options <= set(inspect.signature(RMSprop).parameters), options


def test_the_files_it_names_exist():
    for name in re.findall(r"`((?:rmsprop|tests)/[\w/]+\.py|tests/[\w/]+/)`", PAGE):
        found = list(ROOT.glob(f"src/{name}")) + list(ROOT.glob(name))
        assert found, name
