"""``rmsprop bench``: it times what it says, in the shapes asked for, and refuses what it can't."""

from __future__ import annotations

import argparse
import json
import os
import re

import pytest

torch = pytest.importorskip("torch", reason="rmsprop bench times the torch optimizers")

from rmsprop.benchmark import _common, cpu, cuda  # noqa: E402
from rmsprop.cli import bench, main  # noqa: E402
from rmsprop.torch._fused import triton  # noqa: E402

TINY = "tiny (test)"
CUDA = torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1"


@pytest.fixture
def tiny_size(monkeypatch):
    # The real sizes take seconds per implementation: time a tiny model instead.
    monkeypatch.setitem(cpu.SHAPES, TINY, [(300,), (7, 5)])
    monkeypatch.setitem(bench.SIZES["cpu"], "small", [TINY])


def test_json_rows_cover_every_implementation_and_variant_asked_for(tiny_size, capsys):
    status = main(["bench", "--size", "small", "--steps", "2", "--json", "--variant", "plain",
                   "--variant", "centered+momentum"])  # fmt: skip
    assert status == 0
    rows = json.loads(capsys.readouterr().out)
    names, _ = _common.available([i for i in cpu.IMPLEMENTATIONS if i != "torch.compile"], "cpu")
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
        (["--dtype", "float16"], 2, "invalid choice: 'float16'"),
        (["--dtype", "bfloat16"], 1, "--dtype bfloat16 is for --device cuda"),
    ],
)
def test_bad_arguments(args, status, message, capsys):
    assert main(["bench", *args]) == status
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


@pytest.mark.skipif(CUDA, reason="the message under test is for machines without a GPU")
def test_cuda_without_a_gpu_is_one_clear_line(capsys):
    assert main(["bench", "--device", "cuda"]) == 1
    assert capsys.readouterr().err.strip() == (
        "rmsprop bench: error: --device cuda, but torch sees no CUDA device here"
    )


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    bench.add_parser(parser.add_subparsers())
    return parser.parse_args(["bench", *argv])


@pytest.mark.parametrize(
    ("size", "shapes"),
    [
        ("small", ["dqn-1m"]),
        ("large", ["gpt2-124m", "gpt-1.3b"]),
        ("all", ["gpt2-124m", "gpt-1.3b", "dqn-1m"]),
    ],
)
def test_cuda_sizes_map_to_the_cuda_models(size, shapes):
    chosen = bench.engine_arguments(parse("--device", "cuda", "--size", size))
    assert chosen == {
        "shapes": shapes,
        "dtypes": ["float32", "bfloat16"],
        "variants": ["plain", "momentum", "centered+momentum"],
        "implementations": [i for i in cuda.IMPLEMENTATIONS if i != "torch.compile"],
        "steps": 50,
    }


def test_cuda_flags():
    chosen = bench.engine_arguments(parse(
        "--device", "cuda", "--dtype", "bfloat16", "--variant", "momentum", "--steps", "7",
        "--compile",
    ))  # fmt: skip
    assert chosen["dtypes"] == ["bfloat16"] and chosen["variants"] == ["momentum"]
    assert chosen["steps"] == 7 and chosen["implementations"] == cuda.IMPLEMENTATIONS


def test_cpu_flags():
    chosen = bench.engine_arguments(parse("--size", "all", "--dtype", "float32"))
    assert chosen["shapes"] == cpu.SHAPES and list(chosen["shapes"]) == list(cpu.SHAPES)
    assert chosen["steps"] == 20 and "dtypes" not in chosen
    assert "torch.compile" not in chosen["implementations"]
    assert "numpy fused" in chosen["implementations"]


def test_the_choices_are_the_engines():
    assert bench.VARIANT_NAMES == list(cuda.VARIANTS) == list(cpu.VARIANTS)
    assert list(cuda.DTYPES) == bench.DTYPE_NAMES


def test_every_size_names_models_of_its_engine():
    for device, engine in (("cpu", cpu), ("cuda", cuda)):
        for names in bench.SIZES[device].values():
            assert names and set(names) <= set(engine.SHAPES)
        assert set(bench.SIZES[device]["all"]) == set(engine.SHAPES)


def test_help_documents_the_cuda_mapping(capsys):
    assert main(["bench", "--help"]) == 0
    out = capsys.readouterr().out
    for device, sizes in bench.SIZES.items():
        assert f"--device {device}" in out
        assert all(name in out for names in sizes.values() for name in names)
    assert "--dtype" in out and "benchmarks/gpu_step.py" in out
    assert f"up\nto {cuda.COMPILE_MAX // 10**6}M parameters" in out


@pytest.fixture
def fake_gpu(monkeypatch):
    """A CUDA device that `rmsprop bench` believes in, and an engine that times nothing."""
    asked = {}

    def run_cuda(**kwargs):
        asked.update(kwargs)
        kwargs["log"]("device-to-device copy: 2.00 TB/s (read + write)")
        rows = []
        for dtype in kwargs["dtypes"]:
            group = []
            for i, name in enumerate(kwargs["implementations"]):
                kwargs["progress"](f"dqn-1m · {dtype} · plain · {name}")
                timing = {"median_ms": 0.01 * (i + 1), "wall_ms": 0.05, "first_s": 0.1}
                group.append(cuda.make_row("dqn-1m", dtype, "plain", name, timing, 2.0))
            _common.add_speedups(group, cuda.REFERENCES)
            rows += group
        return rows

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    # ...and a Triton kernel it believes in, whichever triton (if any) is installed here.
    monkeypatch.setattr(triton, "unsupported_reason", lambda device_type: "")
    monkeypatch.setattr(cuda, "run_cuda", run_cuda)
    monkeypatch.setattr(
        cuda, "environment", lambda: {"card": "Fake H100", "date": "2026-01-02", "versions": "v"}
    )
    return asked


def test_cuda_table_output(fake_gpu, capsys):
    argv = ["bench", "--device", "cuda", "--variant", "plain", "--dtype", "float32"]
    assert main(argv) == 0
    out = capsys.readouterr().out.lstrip("\n").splitlines()  # rich's progress may leave a line
    assert out[0] == "Fake H100, 2026-01-02; v"
    assert out[1] == "device-to-device copy: 2.00 TB/s (read + write)"
    assert out[2] == "dqn-1m (1.0M parameters, 20 tensors)"
    assert out[3].split() == [
        "dtype", "variant", "implementation", "median", "ms", "wall", "ms", "TB/s", "of", "copy",
        "×", "foreach", "×", "compile", "×", "optax", "first", "s",
    ]  # fmt: skip
    table = out[5 : 5 + len(fake_gpu["implementations"])]
    cells = [re.split(r"\s{2,}", line.strip()) for line in table]
    assert [row[:3] for row in cells] == [
        ["float32", "plain", name] for name in fake_gpu["implementations"]
    ]
    foreach = fake_gpu["implementations"].index("torch foreach")
    assert cells[foreach][7:9] == ["1.00×", "—"]  # × foreach, × compile (not asked for)
    assert fake_gpu["shapes"] == ["dqn-1m"] and fake_gpu["steps"] == 50
    # The targets these rows can judge: at DQN size, against torch foreach (and optax).
    targets = out[out.index("The fused kernel's targets (cuda.TARGETS), on these rows") + 1 :]
    verdicts = {line.strip().split("  ")[0]: line for line in targets[2:]}
    claim = "not slower than torch foreach at DQN size"
    worst = f"{foreach + 1:.2f}× (dqn-1m plain)"  # its median over the fused one's
    assert re.split(r"\s{2,}", verdicts[claim].strip()) == [claim, "float32", worst, "1", "yes"]
    optax = "faster than optax everywhere"
    assert (optax in verdicts) == ("optax jit" in fake_gpu["implementations"])


def test_cuda_json_output(fake_gpu, capsys):
    assert main(["bench", "--device", "cuda", "--size", "small", "--json", "--compile"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert {key: report[key] for key in ("card", "date")} == {
        "card": "Fake H100", "date": "2026-01-02",
    }  # fmt: skip
    assert [row["dtype"] for row in report["rows"]][::len(fake_gpu["implementations"])] == [
        "float32", "bfloat16",
    ]  # fmt: skip
    assert "torch.compile" in fake_gpu["implementations"]
    assert all(row["tb_per_s"] > 0 for row in report["rows"])


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU")
def test_cuda_on_a_gpu(monkeypatch, capsys):
    monkeypatch.setitem(cuda.SHAPES, TINY, [(4096, 3), (7,)])
    monkeypatch.setitem(bench.SIZES["cuda"], "small", [TINY])
    argv = ["bench", "--device", "cuda", "--steps", "3", "--variant", "plain", "--json"]
    assert main(argv) == 0
    rows = json.loads(capsys.readouterr().out)["rows"]
    assert {row["dtype"] for row in rows} == {"float32", "bfloat16"}
    assert all(row["shape"] == TINY and row["median_ms"] > 0 for row in rows)
