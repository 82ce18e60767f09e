"""``rmsprop bench``, the step benchmarks' one command line: it times what it says, in the
shapes asked for, saves what it measured as it goes, and refuses what it can't."""

from __future__ import annotations

import argparse
import inspect
import json
import os
import pathlib
import re
import subprocess
import sys
from dataclasses import astuple

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
        (["--shape", "gpt-175b"], 2, "invalid choice: 'gpt-175b'"),
        (["--shape", "gpt2-124m"], 1, "'gpt2-124m' is no --device cpu model; choose from"),
        (["--implementation", "jax"], 2, "invalid choice: 'jax'"),
        (["--device", "cuda", "--implementation", "numpy fused"], 1,
         "numpy fused is for --device cpu"),
        (["--warmup", "-1"], 2, "must be at least 0"),
        (["--compile-max", "lots"], 2, "expected a number"),
        (["--launch", "3000", "8"], 2, "powers of two, got 3000 and 8"),
        (["--launch", "4096"], 2, "expected 2 arguments"),
        (["--launch-from", "no-such-sweep.json"], 2, "No such file"),
        (["--launch", "4096", "8", "--launch-from", "x.json"], 2, "not allowed with argument"),
        (["--sweep"], 1, "--sweep is for --device cuda"),
        (["--launch", "4096", "8"], 1, "--launch is for --device cuda"),
        (["--compile-max", "1e9"], 1, "--compile-max is for --device cuda"),
        (["--device", "cuda", "--first-call"], 1, "--first-call is for --device cpu"),
        (["--json", "--markdown"], 1, "--json prints JSON alone, not --markdown's tables"),
        (["--json", "--print-each"], 1, "--json prints JSON alone, not --print-each's tables"),
        (["--device", "cuda", "--sweep", "--shape", "dqn-1m", "--shape", "gpt-1.3b"], 1,
         "--sweep times one model, not 2"),
        (["--device", "cuda", "--sweep", "--launch", "1024", "4"], 1, "--launch has no say"),
        (["--device", "cuda", "--sweep", "--compile"], 1, "--compile has no say"),
        (["--device", "cuda", "--sweep", "--size", "all"], 1, "--size has no say"),
        (["--state-dtype", "int8"], 2, "invalid choice: 'int8'"),
        (["--state-dtype", "float16"], 2, "invalid choice: 'float16'"),
        (["--device", "cuda", "--sweep", "--state-dtype", "8bit"], 1,
         "--state-dtype has no say"),
        (["--state-dtype", "8bit", "--implementation", "torch foreach"], 1,
         "--state-dtype sets how rmsprop fused and rmsprop foreach store their state; "
         "--implementation chose neither"),
        (["--device", "cuda", "--state-dtype", "bfloat16-stochastic"], 1,
         "bfloat16-stochastic is bfloat16 state beside float32 parameters"),
        (["--device", "cuda", "--dtype", "bfloat16", "--state-dtype", "bfloat16-stochastic"],
         1, "add --dtype float32"),
    ],
)  # fmt: skip
def test_bad_arguments(args, status, message, capsys):
    assert main(["bench", *args]) == status
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


@pytest.mark.skipif(CUDA, reason="the message under test is for machines without a GPU")
@pytest.mark.parametrize("more", [[], ["--sweep"], ["--launch", "2048", "8", "--size", "all"]])
def test_cuda_without_a_gpu_is_one_clear_line(more, capsys):
    assert main(["bench", "--device", "cuda", *more]) == 1
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
        "warmup": 5,
        "compile_max": cuda.COMPILE_MAX,
    }
    assert set(chosen) <= set(inspect.signature(cuda.run_cuda).parameters)


def test_cuda_flags():
    chosen = bench.engine_arguments(parse(
        "--device", "cuda", "--dtype", "bfloat16", "--variant", "momentum", "--steps", "7",
        "--compile",
    ))  # fmt: skip
    assert chosen["dtypes"] == ["bfloat16"] and chosen["variants"] == ["momentum"]
    assert chosen["steps"] == 7 and chosen["implementations"] == cuda.IMPLEMENTATIONS


def test_cuda_options_of_the_former_script():
    chosen = bench.engine_arguments(parse(
        "--device", "cuda", "--shape", "gpt2-124m", "--shape", "dqn-1m", "--shape", "gpt2-124m",
        "--implementation", "torch.compile", "--implementation", "rmsprop fused",
        "--warmup", "0", "--compile-max", "2e9",
    ))  # fmt: skip
    assert chosen["shapes"] == ["gpt2-124m", "dqn-1m"]  # --shape overrides --size
    assert chosen["implementations"] == ["rmsprop fused", "torch.compile"]  # the engine's order
    assert chosen["warmup"] == 0 and chosen["compile_max"] == 2e9
    with_compile = parse("--device", "cuda", "--implementation", "torch foreach", "--compile")
    assert bench.engine_arguments(with_compile)["implementations"] == [
        "torch foreach", "torch.compile",
    ]  # fmt: skip


def test_sweep_arguments():
    assert bench.engine_arguments(parse("--device", "cuda", "--sweep")) == {
        "shape": "gpt2-124m", "dtypes": ["float32", "bfloat16"],
        "variants": ["plain", "momentum", "centered+momentum"], "steps": 50, "warmup": 5,
    }  # fmt: skip
    chosen = bench.engine_arguments(parse(
        "--device", "cuda", "--sweep", "--shape", "gpt-1.3b", "--dtype", "bfloat16",
        "--variant", "plain", "--steps", "9", "--warmup", "2",
    ))  # fmt: skip
    assert chosen == {
        "shape": "gpt-1.3b", "dtypes": ["bfloat16"], "variants": ["plain"], "steps": 9,
        "warmup": 2,
    }  # fmt: skip
    assert set(chosen) | {"copy_tb_s", "on_row", "progress"} <= set(
        inspect.signature(cuda.sweep_cuda).parameters
    )


def test_launch_settings_are_parsed_and_checked():
    assert parse("--launch", "2048", "8").launch == (2048, 8)
    assert parse().launch is None and parse().launch_from is None


def test_launch_from_takes_a_sweep_s_fastest_setting(tmp_path):
    sweep = tmp_path / "sweep.json"
    rows = [
        {"dtype": "float32", "variant": "plain", "block": b, "warps": w, "median_ms": t}
        for b, w, t in [(1024, 4, 3.0), (2048, 8, 2.0), (4096, 8, 2.5)]
    ]
    sweep.write_text(json.dumps({"card": "Fake", "rows": rows}))
    args = parse("--launch-from", str(sweep))
    assert args.launch == (2048, 8) and args.launch_from == str(sweep)
    sweep.write_text(json.dumps({"rows": []}))  # a sweep that names no setting
    assert main(["bench", "--launch-from", str(sweep)]) == 2


def test_cpu_flags():
    chosen = bench.engine_arguments(parse("--size", "all", "--dtype", "float32"))
    assert chosen["shapes"] == cpu.SHAPES and list(chosen["shapes"]) == list(cpu.SHAPES)
    assert chosen["steps"] == 20 and chosen["warmup"] == 3 and "dtypes" not in chosen
    assert "torch.compile" not in chosen["implementations"]
    assert "numpy fused" in chosen["implementations"]
    assert set(chosen) <= set(inspect.signature(cpu.run_cpu).parameters)
    dqn = "DQN (1.7M params, 10 tensors)"
    chosen = bench.engine_arguments(parse("--shape", dqn, "--warmup", "7", "--compile"))
    assert list(chosen["shapes"]) == [dqn] and chosen["warmup"] == 7
    assert chosen["implementations"] == cpu.IMPLEMENTATIONS


def test_the_choices_are_the_engines():
    assert bench.VARIANT_NAMES == list(cuda.VARIANTS) == list(cpu.VARIANTS)
    assert list(cuda.DTYPES) == bench.DTYPE_NAMES
    assert bench.STATE_DTYPE_NAMES == list(cpu.STATE_DTYPES) == list(cuda.STATE_DTYPES)
    assert cpu.STATE_DTYPES is cuda.STATE_DTYPES is _common.STATE_DTYPES
    from rmsprop.cli._backends import STATE_FORMATS

    assert set(STATE_FORMATS) <= set(bench.STATE_DTYPE_NAMES)  # `rmsprop info`'s formats
    assert bench.IMPLEMENTATION_NAMES == cpu.IMPLEMENTATIONS
    assert set(cuda.IMPLEMENTATIONS) == set(cpu.IMPLEMENTATIONS) - {"numpy fused"}
    assert bench.SWEEP_SHAPE in cuda.SHAPES
    assert max(bench.WARMUP.values()) <= 5


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
    assert f"up\nto {cuda.COMPILE_MAX // 10**6}M parameters" in out
    # Everything the former benchmarks/gpu_step.py and cpu_step.py could do, the sweep too.
    for flag in ("--shape", "--dtype", "--variant", "--implementation", "--steps", "--warmup",
                 "--compile", "--compile-max", "--sweep", "--launch BLOCK NUM_WARPS",
                 "--launch-from SWEEP_JSON", "--print-each", "--json", "--out FILE",
                 "--markdown", "--first-call", "--state-dtype"):  # fmt: skip
        assert flag in out
    assert f"(--shape; default {bench.SWEEP_SHAPE})" in out


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
            kwargs["each_group"](group)
        return rows

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    # ...and a Triton kernel it believes in, whichever triton (if any) is installed here.
    monkeypatch.setattr(triton, "unsupported_reason", lambda device_type: "")

    def sweep_cuda(shape, dtypes, variants, *, settings, copy_tb_s, on_row, progress, **kwargs):
        asked.update(shape=shape, dtypes=dtypes, variants=variants, copy_tb_s=copy_tb_s, **kwargs)
        rows = []
        for dtype in dtypes:
            for variant in variants:
                for block, warps in settings:
                    progress(f"{shape} · {dtype} · {variant} · BLOCK={block}")
                    ms = 1.0 if (block, warps) == (2048, 8) else 2.0  # the fastest: 2048 and 8
                    timing = {"median_ms": ms, "wall_ms": ms, "first_s": 0.1}
                    row = cuda.make_row(shape, dtype, variant, "rmsprop fused", timing, copy_tb_s)
                    rows.append(row | {"block": block, "warps": warps})
                    on_row(rows[-1])
        return rows

    def environment(launch=None):
        asked["environment"] = launch
        settings = "BLOCK={}, NUM_WARPS={}".format(*(astuple(launch) if launch else (1024, 4)))
        return {"card": "Fake H100", "date": "2026-01-02", "versions": "v", "launch": settings}

    monkeypatch.setattr(cuda, "run_cuda", run_cuda)
    monkeypatch.setattr(cuda, "sweep_cuda", sweep_cuda)
    monkeypatch.setattr(cuda, "copy_bandwidth", lambda: 2.0)
    monkeypatch.setattr(cuda, "environment", environment)
    return asked


def test_cuda_table_output(fake_gpu, capsys):
    argv = ["bench", "--device", "cuda", "--variant", "plain", "--dtype", "float32"]
    assert main(argv) == 0
    out = capsys.readouterr().out.lstrip("\n").splitlines()  # rich's progress may leave a line
    assert out[0] == "Fake H100, 2026-01-02; v; BLOCK=1024, NUM_WARPS=4"
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
    assert report["launch"] == "BLOCK=1024, NUM_WARPS=4" and fake_gpu["launch"] is None


def test_cuda_launch_settings_reach_the_engine(fake_gpu, tmp_path, capsys):
    from rmsprop.torch import LaunchSettings

    argv = ["bench", "--device", "cuda", "--launch", "2048", "8", "--out", str(tmp_path / "o")]
    assert main(argv) == 0
    assert fake_gpu["launch"] == fake_gpu["environment"] == LaunchSettings(2048, 8)
    assert (
        capsys.readouterr()
        .out.lstrip("\n")
        .startswith("Fake H100, 2026-01-02; v; BLOCK=2048, NUM_WARPS=8\n")
    )
    assert json.loads((tmp_path / "o").read_text())["launch"] == "BLOCK=2048, NUM_WARPS=8"


def test_cuda_saves_every_comparison_as_it_ends(fake_gpu, tmp_path, monkeypatch, capsys):
    """A run stopped partway (its time limit, say) leaves the rows it measured."""
    groups = []

    def run_cuda(each_group, **kwargs):
        for dtype in ("float32", "bfloat16"):
            timing = {"median_ms": 1.0, "wall_ms": 1.0, "first_s": 0.1}
            groups.append([cuda.make_row("dqn-1m", dtype, "plain", "torch foreach", timing, 2.0)])
            _common.add_speedups(groups[-1], cuda.REFERENCES)
            each_group(groups[-1])
            saved = json.loads(out.read_text())  # saved before the next comparison starts
            assert saved["rows"] == [row for group in groups for row in group]
        raise KeyboardInterrupt  # killed before the run's end

    monkeypatch.setattr(cuda, "run_cuda", run_cuda)
    out = tmp_path / "rows.json"
    assert main(["bench", "--device", "cuda", "--print-each", "--out", str(out)]) == 130
    saved = json.loads(out.read_text())
    assert saved == {
        "card": "Fake H100", "date": "2026-01-02", "versions": "v",
        "launch": "BLOCK=1024, NUM_WARPS=4", "rows": groups[0] + groups[1],
    }  # fmt: skip
    assert [p.name for p in tmp_path.iterdir()] == ["rows.json"]  # no .partial left
    printed = capsys.readouterr()
    assert printed.out.count("dqn-1m (1.0M parameters, 20 tensors)") == 2  # each as it ended
    assert "rmsprop bench: interrupted" in printed.err


def test_cuda_markdown_and_print_each(fake_gpu, tmp_path, capsys):
    argv = ["bench", "--device", "cuda", "--variant", "plain", "--print-each", "--markdown",
            "--implementation", "rmsprop fused", "--implementation", "torch foreach"]  # fmt: skip
    assert main(argv) == 0
    printed = capsys.readouterr()
    tables = [line for line in printed.out.splitlines() if line.startswith("| ")]
    header = _common.markdown_header(cuda.COLUMNS)[0]
    targets = tables.index(_common.markdown_header(cuda.VERDICT_COLUMNS)[0])
    assert tables[:targets].count(header) == 3  # two comparisons as they ended, then the run's
    assert "| float32 | plain | rmsprop fused |" in printed.out
    assert "\n  timing dqn-1m · float32 · plain · rmsprop fused\n" in f"\n{printed.err}"


def test_cuda_sweep(fake_gpu, tmp_path, capsys):
    out = tmp_path / "sweep.json"
    argv = ["bench", "--device", "cuda", "--sweep", "--shape", "gpt-1.3b", "--dtype", "float32",
            "--variant", "plain", "--variant", "centered+momentum", "--steps", "30",
            "--warmup", "3", "--print-each", "--markdown", "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    assert fake_gpu["shape"] == "gpt-1.3b" and fake_gpu["variants"] == [
        "plain", "centered+momentum",
    ]  # fmt: skip
    assert fake_gpu["steps"] == 30 and fake_gpu["warmup"] == 3 and fake_gpu["copy_tb_s"] == 2.0
    printed = capsys.readouterr().out
    assert "device-to-device copy: 2.00 TB/s (read + write)" in printed
    assert "gpt-1.3b launch settings (fastest: BLOCK=2048, NUM_WARPS=8)" in printed
    assert "| float32 | centered+momentum | 2048 | 8 | 1.000 |" in printed
    saved = json.loads(out.read_text())
    assert saved["card"] == "Fake H100" and len(saved["rows"]) == 2 * len(cuda.LAUNCH_SETTINGS)
    assert cuda.best_launch(saved["rows"]) == (2048, 8)
    # ...which a later run launches with.
    assert parse("--device", "cuda", "--launch-from", str(out)).launch == (2048, 8)
    assert main(["bench", "--device", "cuda", "--sweep", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert fake_gpu["shape"] == bench.SWEEP_SHAPE and report["launch"].startswith("BLOCK=")
    assert {(row["block"], row["warps"]) for row in report["rows"]} == set(cuda.LAUNCH_SETTINGS)


def test_cuda_sweep_saves_every_row(fake_gpu, tmp_path, monkeypatch):
    saved = []
    real = cuda.sweep_cuda

    def sweep_cuda(*args, on_row, **kwargs):
        def check(row):
            on_row(row)
            saved.append(len(json.loads(out.read_text())["rows"]))

        return real(*args, on_row=check, **kwargs)

    monkeypatch.setattr(cuda, "sweep_cuda", sweep_cuda)
    out = tmp_path / "sweep.json"
    assert main(["bench", "--device", "cuda", "--sweep", "--dtype", "float32", "--variant",
                 "plain", "--out", str(out)]) == 0  # fmt: skip
    assert saved == list(range(1, len(cuda.LAUNCH_SETTINGS) + 1))


def test_cpu_markdown_print_each_and_out(tiny_size, tmp_path, monkeypatch, capsys):
    """The CPU engine hands over each comparison as it ends: printed and saved at once."""
    real = cpu.run_cpu

    def run_cpu(*args, each_group, **kwargs):
        def stop_after_one(group):
            each_group(group)
            raise KeyboardInterrupt

        return real(*args, each_group=stop_after_one, **kwargs)

    monkeypatch.setattr(cpu, "run_cpu", run_cpu)
    out = tmp_path / "cpu.json"
    argv = [
        "bench",
        "--steps",
        "2",
        "--warmup",
        "1",
        "--markdown",
        "--print-each",
        "--out",
        str(out),
        "--implementation",
        "torch foreach",
        "--implementation",
        "torch for-loop",
    ]
    assert main(argv) == 130
    printed = capsys.readouterr()
    assert f"**{TINY}**" in printed.out and "| plain | torch for-loop |" in printed.out
    assert printed.out.splitlines()[0].split("; ")[1].startswith("Python 3.")
    saved = json.loads(out.read_text())
    assert set(saved) == {"machine", "date", "versions", "rows"}
    assert [(r["variant"], r["implementation"]) for r in saved["rows"]] == [
        ("plain", "torch foreach"), ("plain", "torch for-loop"),
    ]  # fmt: skip
    monkeypatch.setattr(cpu, "run_cpu", real)
    assert main([*argv, "--variant", "momentum"]) == 0
    assert len(json.loads(out.read_text())["rows"]) == 2


def test_cpu_first_call(tiny_size, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(cpu, "first_call_in_fresh_processes", lambda: {"cold": 2.5, "warm": 0.25})
    monkeypatch.setattr(_common, "unavailable", lambda name, device: "")
    argv = ["bench", "--steps", "1", "--variant", "plain", "--implementation", "torch foreach",
            "--first-call"]  # fmt: skip
    assert main(argv) == 0
    assert (
        "fused kernel, first step in a fresh process: 2.50 s with an empty cache, 0.25 s with a "
        "warm one"
    ) in capsys.readouterr().out
    assert main([*argv, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["first_call_s"] == {"cold": 2.5, "warm": 0.25}
    assert report["rows"][0]["implementation"] == "torch foreach" and "machine" in report
    monkeypatch.setattr(_common, "unavailable", lambda name, device: "no numba here")
    assert main(argv) == 1
    assert "--first-call times the fused CPU step, which can't run here: no numba here" in (
        capsys.readouterr().err
    )


@pytest.mark.skipif(
    bool(_common.unavailable("rmsprop fused", "cpu")), reason="needs the fused CPU step"
)
def test_first_call_in_fresh_processes():
    seconds = cpu.first_call_in_fresh_processes()
    assert set(seconds) == {"cold", "warm"} and all(s > 0 for s in seconds.values())


def test_python_m_rmsprop_bench_runs_from_a_checkout(tmp_path):
    """What benchmarks/gpu_check.sh runs: ``python -m rmsprop bench``, src/ on PYTHONPATH."""
    src = str(pathlib.Path(__file__).resolve().parents[2] / "src")
    env = {**os.environ, "PYTHONPATH": src}
    out = subprocess.run(
        [sys.executable, "-m", "rmsprop", "bench", "--launch", "3000", "8"],
        capture_output=True, text=True, check=False, env=env, cwd=tmp_path,
    )  # fmt: skip
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "powers of two, got 3000 and 8" in out.stderr


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


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU")
def test_cuda_sweep_then_launch_from_on_a_gpu(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(cuda.SHAPES, TINY, [(4096, 3), (7,)])
    monkeypatch.setitem(bench.SIZES["cuda"], "all", [*bench.SIZES["cuda"]["all"], TINY])
    monkeypatch.setattr(cuda, "LAUNCH_SETTINGS", ((1024, 4), (2048, 8)))
    sweep = tmp_path / "sweep.json"
    quick = ["--shape", TINY, "--dtype", "float32", "--variant", "plain", "--steps", "3"]
    assert main(["bench", "--device", "cuda", "--sweep", *quick, "--out", str(sweep)]) == 0
    rows = json.loads(sweep.read_text())["rows"]
    assert {(row["block"], row["warps"]) for row in rows} == {(1024, 4), (2048, 8)}
    assert "launch settings (fastest: BLOCK=" in capsys.readouterr().out
    argv = ["bench", "--device", "cuda", *quick, "--launch-from", str(sweep), "--json"]
    assert main(argv) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["launch"] == "BLOCK={}, NUM_WARPS={}".format(*cuda.best_launch(rows))
    assert all(row["median_ms"] > 0 for row in report["rows"])
