"""``rmsprop bench``: it times what it says, in the shapes asked for, and refuses what it can't."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("torch", reason="rmsprop bench times the torch optimizers")

from rmsprop import benchmark
from rmsprop.benchmark import _common
from rmsprop.cli import bench, main

TINY = "tiny (test)"


@pytest.fixture
def tiny_size(monkeypatch):
    # The real sizes take seconds per implementation: time a tiny model instead.
    monkeypatch.setitem(benchmark.SHAPES, TINY, [(300,), (7, 5)])
    monkeypatch.setitem(bench.SIZES, "small", [TINY])


def test_json_rows_cover_every_implementation_and_variant_asked_for(tiny_size, capsys):
    status = main(["bench", "--size", "small", "--steps", "2", "--json", "--variant", "plain",
                   "--variant", "centered+momentum"])  # fmt: skip
    assert status == 0
    rows = json.loads(capsys.readouterr().out)
    wanted = [i for i in benchmark.IMPLEMENTATIONS if i != "torch.compile"]
    names, _ = _common.available(wanted, "cpu")
    assert [(r["variant"], r["implementation"]) for r in rows] == [
        (v, i) for v in ("plain", "centered+momentum") for i in names
    ]
    for row in rows:
        assert row["shape"] == TINY and row["params"] == 335 and row["median_ms"] > 0
        assert row["bytes_per_param"] == (20 if row["variant"] == "plain" else 36)
        assert row["vs_torch_forloop"] > 0


def test_table_output(tiny_size, capsys):
    assert main(["bench", "--steps", "1", "--variant", "momentum"]) == 0
    out = capsys.readouterr().out
    assert TINY in out and "rmsprop fused" in out and "× loop" in out


@pytest.mark.parametrize(
    ("args", "status", "message"),
    [
        (["--steps", "0"], 2, "must be at least 1"),
        (["--size", "huge"], 2, "invalid choice: 'huge'"),
        (["--device", "tpu"], 2, "invalid choice: 'tpu'"),
    ],
)
def test_bad_arguments(args, status, message, capsys):
    assert main(["bench", *args]) == status
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_cuda_without_a_gpu_is_one_clear_line(capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU; the message under test is for machines without one")
    assert main(["bench", "--device", "cuda"]) == 1
    assert capsys.readouterr().err.strip() == (
        "rmsprop bench: error: --device cuda, but torch sees no CUDA device here"
    )
