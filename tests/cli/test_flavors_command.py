"""`rmsprop flavors`: the flavor table, from the presets."""

from __future__ import annotations

import dataclasses

from rmsprop import FLAVORS
from rmsprop.cli import main
from rmsprop.flavors import flavor_table


def test_markdown_is_exactly_flavor_table(capsys):
    assert main(["flavors", "--markdown"]) == 0
    assert capsys.readouterr().out == flavor_table() + "\n"


def test_terminal_table_holds_every_cell_of_flavor_table(capsys):
    assert main(["flavors"]) == 0
    lines = capsys.readouterr().out.splitlines()
    markdown_rows = flavor_table().splitlines()[2:]
    assert len(markdown_rows) == len(FLAVORS)
    for name, row in zip(FLAVORS, markdown_rows):
        cells = [cell.strip().strip("`") for cell in row.strip("|").split(" | ")]
        (line,) = [line for line in lines if line.split()[:1] == [name]]
        assert line.split() == " ".join(cells).split(), name


def test_one_flavor_in_full(capsys):
    assert main(["flavors", "tensorflow"]) == 0
    out = capsys.readouterr().out
    preset = FLAVORS["tensorflow"]
    assert preset.title in out and preset.source in out and preset.notes in out
    for field in dataclasses.fields(preset.config):
        value = getattr(preset.config, field.name)
        assert any(line.split() == [field.name, repr(value)] for line in out.splitlines())
