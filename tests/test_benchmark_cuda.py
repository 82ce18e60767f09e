"""The CUDA step benchmark: its tables, plan, rows and step builders without a GPU; the
timing itself under the ``gpu`` marker; and the scripts around it, benchmarks/gpu_report.py
and benchmarks/gpu_check.sh (its command line, ``rmsprop bench --device cuda``, is tested in
tests/cli/test_bench_command.py)."""

from __future__ import annotations

import json
import os
import pathlib
import re
import subprocess
import sys
import types

import pytest

from rmsprop.benchmark import _common, cuda

ROOT = pathlib.Path(__file__).resolve().parents[1]
CHECK = ROOT / "benchmarks" / "gpu_check.sh"
TINY = [(64, 3), (5,)]


def has_cuda() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1"


gpu = pytest.mark.gpu  # registered in pyproject.toml
needs_cuda = pytest.mark.skipif(not has_cuda(), reason="needs a CUDA GPU")


@pytest.mark.parametrize(
    ("shape", "tensors", "params"),
    [
        ("gpt2-124m", 148, 124_439_808),  # GPT-2 small, tied embeddings
        ("gpt-1.3b", 292, 1_315_723_264),
        ("dqn-1m", 20, 1_027_200),
    ],
)
def test_model_shapes(shape, tensors, params):
    model = cuda.SHAPES[shape]
    assert len(model) == tensors
    assert _common.parameter_count(model) == params


def test_gpt_shapes_are_gpt2_s():
    model = cuda.gpt_shapes(1, 8, vocab=11, context=7)
    assert model[:2] == [(11, 8), (7, 8)] and model[-2:] == [(8,), (8,)]
    assert (8, 24) in model and (32, 8) in model and len(model) == 2 + 12 + 2


@pytest.mark.parametrize(
    ("dtype", "variant", "per_param"),
    [
        ("float32", "plain", 20),
        ("float32", "momentum", 28),
        ("float32", "centered+momentum", 36),
        ("bfloat16", "plain", 10),
        ("bfloat16", "momentum", 14),
        ("bfloat16", "centered+momentum", 18),
    ],
)
def test_minimal_bytes(dtype, variant, per_param):
    assert cuda.minimal_bytes(cuda.SHAPES["dqn-1m"], dtype, variant) == per_param * 1_027_200


def test_rotation_overflows_l2_as_memory_allows():
    mib = 2**20
    assert cuda.rotation(20 * mib, 2**40, l2_bytes=50 * mib) == 10  # 4 × 50 MiB / 20 MiB
    assert cuda.rotation(21 * mib, 2**40, l2_bytes=50 * mib) == 10  # rounded up
    assert cuda.rotation(mib, 2**40, l2_bytes=50 * mib) == 16  # never more than 16 sets
    assert cuda.rotation(20 * mib, 90 * mib, l2_bytes=50 * mib) == 3  # 1.5 × 20 MiB each
    assert cuda.rotation(10 * 2**30, 2**30, l2_bytes=50 * mib) == 1  # at least one
    assert cuda.rotation(2**30, 2**40, l2_bytes=50 * mib) == 1  # big models need no rotation


def test_plan_compiles_only_models_up_to_compile_max():
    shapes = {name: cuda.SHAPES[name] for name in ("gpt-1.3b", "dqn-1m")}
    names = ["rmsprop fused", "torch.compile"]
    groups = cuda.plan(shapes, iter(["float32", "bfloat16"]), iter(["plain"]), iter(names))
    assert groups == [
        ("gpt-1.3b", "float32", "plain", ["rmsprop fused"]),
        ("gpt-1.3b", "bfloat16", "plain", ["rmsprop fused"]),
        ("dqn-1m", "float32", "plain", names),
        ("dqn-1m", "bfloat16", "plain", names),
    ]
    assert cuda.plan(shapes, ["float32"], ["plain"], names, compile_max=2e9)[0][3] == names
    assert cuda.plan(shapes, ["float32"], ["plain"], names, compile_max=0)[1][3] == names[:1]


def synthetic_rows():
    """One comparison on dqn-1m (bfloat16, momentum) with made-up timings."""
    timings = {"rmsprop fused": 0.01, "torch foreach": 0.05, "optax jit": 0.02}
    rows = [
        cuda.make_row("dqn-1m", "bfloat16", "momentum", name,
                      {"median_ms": ms, "wall_ms": 2 * ms, "first_s": 0.5}, 2.0, rotated=3)
        for name, ms in timings.items()
    ]  # fmt: skip
    _common.add_speedups(rows, cuda.REFERENCES)
    return rows


def test_rows_from_timings():
    fused, torch_foreach, _ = synthetic_rows()
    assert fused["minimal_bytes"] == 14 * 1_027_200
    assert fused["params"] == 1_027_200 and fused["tensors"] == 20 and fused["rotation"] == 3
    assert fused["tb_per_s"] == pytest.approx(14 * 1_027_200 / 0.01e-3 / 1e12)
    assert fused["of_copy"] == pytest.approx(fused["tb_per_s"] / 2.0)
    assert fused["copy_tb_s"] == 2.0 and fused["wall_ms"] == 0.02 and fused["first_s"] == 0.5
    assert fused["vs_torch_foreach"] == pytest.approx(5.0)
    assert fused["vs_optax"] == pytest.approx(2.0)
    assert fused["vs_torch_compile"] is None
    assert torch_foreach["vs_torch_foreach"] == 1.0


def test_markdown_and_json_from_timings():
    rows = synthetic_rows()
    lines = cuda.markdown(rows).splitlines()
    assert lines[1] == "**dqn-1m** (1.0M parameters, 20 tensors)"
    assert lines[3] == (
        "| dtype | variant | implementation | median ms | wall ms/step | TB/s at minimal bytes "
        "| of copy | × torch foreach | × torch.compile | × optax | first step s |"
    )
    assert lines[5] == (
        "| bfloat16 | momentum | rmsprop fused | 0.010 | 0.020 | 1.44 | 72% | 5.00× | — | 2.00× "
        "| 0.50 |"
    )
    assert len(lines) == 5 + len(rows)
    assert json.loads(json.dumps(rows)) == rows
    headers, _ = _common.terminal_table(cuda.COLUMNS, rows)
    assert "wall ms" in headers and "× compile" in headers and "first s" in headers


def rows_of(shape, dtype, times, **extra):
    """One comparison's rows on ``shape`` from implementation -> median ms."""
    rows = [
        cuda.make_row(
            shape, dtype, "plain", name, {"median_ms": ms, "wall_ms": ms, "first_s": 0}, 3.0
        )
        for name, ms in times.items()
    ]
    _common.add_speedups(rows, cuda.REFERENCES)
    return rows


def test_verdicts_judge_each_target_on_the_worst_fused_row_per_dtype():
    rows = [
        *rows_of("gpt-1.3b", "float32", {"rmsprop fused": 10.0, "torch foreach": 31.0}),
        *rows_of("gpt-1.3b", "bfloat16", {"rmsprop fused": 10.0, "torch foreach": 29.0}),
        *rows_of("gpt2-124m", "float32", {"rmsprop fused": 1.0, "torch.compile": 1.0}),
        *rows_of("dqn-1m", "float32", {"rmsprop fused": 0.1, "torch foreach": 0.1}),
    ]
    by_claim = {(v["claim"], v["dtype"]): v for v in cuda.verdicts(rows)}
    assert len(by_claim) == 2 * len(cuda.TARGETS)
    three_x = "≥ 3.0× torch foreach at 1.3B, every variant"
    assert by_claim[three_x, "float32"]["met"] is True
    assert by_claim[three_x, "bfloat16"]["met"] is False  # 2.9×
    assert by_claim[three_x, "bfloat16"]["worst"] == pytest.approx(2.9)
    assert by_claim[three_x, "bfloat16"]["where"] == "gpt-1.3b plain"
    assert by_claim["faster than torch.compile at 124M", "float32"]["met"] is False  # a tie
    assert by_claim["not slower than torch foreach at DQN size", "float32"]["met"] is True
    optax = by_claim["faster than optax everywhere", "float32"]
    assert optax["met"] is None and optax["rows"] == 0 and optax["worst"] is None
    table = cuda.verdicts_markdown(rows).splitlines()
    assert table[0] == "| target | dtype | worst case | rows | met |"
    three_x_row = f"| {three_x} | bfloat16 | 2.90× (gpt-1.3b plain) | 1 | **no** |"
    assert three_x_row in table
    assert "| faster than optax everywhere | float32 | — | 0 | not measured |" in table
    copy = by_claim["≥ 90 % of the copy bandwidth at 1.3B (minimal bytes)", "float32"]
    assert copy["worst"] == pytest.approx(20 * 1_315_723_264 / 10e-3 / 1e12 / 3.0)
    # Nothing measured at all: every target says so.
    assert {v["met"] for v in cuda.verdicts([])} == {None}


def test_benchmarks_md_lists_every_target():
    text = (ROOT / "BENCHMARKS.md").read_text()
    table = re.search(r"<!-- gpu-targets:start -->\n(.*?)\n<!-- gpu-targets:end -->", text, re.S)
    assert table is not None
    lines = table.group(1).splitlines()
    assert lines[0] == _common.markdown_header(cuda.VERDICT_COLUMNS)[0]
    claims = {line.split(" | ")[0].removeprefix("| ") for line in lines[2:]}
    assert claims == {target.claim for target in cuda.TARGETS}


def test_sweep_rows_as_markdown():
    row = {**synthetic_rows()[0], "block": 4096, "warps": 8}
    line = _common.markdown_row(cuda.SWEEP_COLUMNS, row)
    assert line == "| bfloat16 | momentum | 4096 | 8 | 0.010 | 1.44 | 72% |"
    assert (4096, 8) in cuda.LAUNCH_SETTINGS
    assert cuda.sweep_markdown([row, row]).splitlines() == [
        *_common.markdown_header(cuda.SWEEP_COLUMNS), line, line,
    ]  # fmt: skip


@pytest.mark.parametrize("name", ["rmsprop foreach", "torch foreach", "torch for-loop"])
def test_step_builders_on_cpu_tensors(name):
    torch = pytest.importorskip("torch")
    steps = cuda.make_steps(name, TINY, "bfloat16", "centered+momentum", 2, device="cpu")
    assert len(steps) == 2
    params = [group["params"] for group in (s.__self__.param_groups[0] for s in steps)]
    assert params[0][0] is not params[1][0] and params[0][0].dtype == torch.bfloat16
    before = [p.detach().clone() for p in params[1]]
    steps[1]()
    assert all(not torch.equal(p, b) for p, b in zip(params[1], before))


def test_optax_step_builder():
    pytest.importorskip("optax")
    import numpy as np

    steps = cuda.make_steps("optax jit", TINY, "float32", "plain", 3)
    assert len(steps) == 3
    before = np.array(steps[2].params[0])  # a copy: the step donates its buffers
    steps[2]()
    after = np.asarray(steps[2].params[0])
    assert after.shape == TINY[0] and not np.array_equal(after, before)


@pytest.fixture
def fake_device(monkeypatch):
    """A CUDA device with a terabyte free, 50 MiB of L2, copying at 2.0 then 1.5 TB/s,
    on which the fused kernel runs and optax is not installed."""
    pytest.importorskip("torch")
    import torch

    from rmsprop.torch._fused import triton

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: None)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda: (2**40, 2**40))
    l2 = types.SimpleNamespace(L2_cache_size=50 * 2**20)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda index: l2)
    monkeypatch.setattr(triton, "unsupported_reason", lambda device: "")
    monkeypatch.setitem(sys.modules, "optax", None)  # not installed
    copies = iter([2.0, 1.5])
    monkeypatch.setattr(cuda, "copy_bandwidth", lambda: next(copies))


def test_run_cuda_plans_rotates_and_compares(fake_device, monkeypatch):
    """The engine's loop, with the device faked: what is built, how rows are put together."""
    import torch._dynamo

    built, limits = [], []

    def make_steps(name, model, dtype, variant, count, launch=None):
        built.append((len(model), dtype, name, count))
        return [lambda: None] * count

    def time_cuda(steps, repeats, warmup):
        limits.append(torch._dynamo.config.cache_size_limit)
        median = {"rmsprop fused": 1.0, "torch foreach": 4.0, "torch.compile": 2.0}
        return {"median_ms": median[built[-1][2]], "wall_ms": 9.0, "first_s": 0.5}

    monkeypatch.setattr(cuda, "make_steps", make_steps)
    monkeypatch.setattr(cuda, "time_cuda", time_cuda)
    lines, groups = [], []
    names = ["rmsprop fused", "optax jit", "torch foreach", "torch.compile"]
    limit = torch._dynamo.config.cache_size_limit
    rows = cuda.run_cuda(
        ["dqn-1m", "gpt-1.3b"], ["float32", "bfloat16"], ["plain"], names,
        log=lines.append, each_group=groups.append,
    )  # fmt: skip
    assert lines[0].startswith("skipping optax jit: not installed")
    assert lines[1:] == [
        "device-to-device copy: 2.00 TB/s (read + write)",
        "device-to-device copy at the end: 1.50 TB/s",
    ]
    # dqn-1m overflows L2 four times only over 16 sets (at most); gpt-1.3b needs no rotation,
    # and is too big for torch.compile.
    assert built == [
        (20, "float32", "rmsprop fused", 16), (20, "float32", "torch foreach", 16),
        (20, "float32", "torch.compile", 16),
        (20, "bfloat16", "rmsprop fused", 16), (20, "bfloat16", "torch foreach", 16),
        (20, "bfloat16", "torch.compile", 16),
        (292, "float32", "rmsprop fused", 1), (292, "float32", "torch foreach", 1),
        (292, "bfloat16", "rmsprop fused", 1), (292, "bfloat16", "torch foreach", 1),
    ]  # fmt: skip
    assert limits == [64] * 10 and torch._dynamo.config.cache_size_limit == limit
    assert [len(group) for group in groups] == [3, 3, 2, 2]
    assert [row for group in groups for row in group] == rows
    fused = rows[0]
    assert fused["vs_torch_foreach"] == 4.0 and fused["vs_torch_compile"] == 2.0
    assert fused["vs_optax"] is None and fused["rotation"] == 16 and fused["copy_tb_s"] == 2.0
    assert rows[-2]["vs_torch_compile"] is None and rows[-2]["shape"] == "gpt-1.3b"
    assert rows[-1]["of_copy"] == pytest.approx(10 * 1_315_723_264 / 4e-3 / 1e12 / 2.0)


def test_one_failing_implementation_is_logged_and_the_run_goes_on(fake_device, monkeypatch):
    def make_steps(name, model, dtype, variant, count, launch=None):
        if name == "rmsprop fused":
            raise RuntimeError("no kernel today")
        return [lambda: None]

    monkeypatch.setattr(cuda, "make_steps", make_steps)
    monkeypatch.setattr(cuda, "time_cuda", lambda steps, repeats, warmup: {
        "median_ms": 2.0, "wall_ms": 2.0, "first_s": 0.1,
    })  # fmt: skip
    lines = []
    rows = cuda.run_cuda(
        ["dqn-1m"], ["float32"], ["plain", "momentum"], ["rmsprop fused", "torch foreach"],
        log=lines.append,
    )  # fmt: skip
    assert [(r["variant"], r["implementation"]) for r in rows] == [
        ("plain", "torch foreach"), ("momentum", "torch foreach"),
    ]  # fmt: skip
    failed = [line for line in lines if "failed" in line]
    assert failed == [
        f"dqn-1m · float32 · {v} · rmsprop fused failed: RuntimeError('no kernel today')"
        for v in ("plain", "momentum")
    ]
    assert rows[0]["vs_torch_foreach"] == 1.0


def sweep_rows(times):
    return [
        {"dtype": d, "variant": v, "block": b, "warps": w, "median_ms": t}
        for (d, v, b, w), t in times.items()
    ]


def test_best_launch_sums_over_every_comparison():
    rows = sweep_rows({
        ("float32", "plain", 2048, 8): 1.0, ("float32", "centered", 2048, 8): 3.0,
        ("float32", "plain", 4096, 8): 1.5, ("float32", "centered", 4096, 8): 2.0,
        ("float32", "plain", 8192, 16): 0.1,  # never timed centered: out of the running
    })  # fmt: skip
    assert cuda.best_launch(rows) == (4096, 8)
    assert cuda.best_launch([rows[0], rows[2]]) == (2048, 8)
    tie = sweep_rows({("float32", "plain", 1024, 4): 1.0, ("float32", "plain", 2048, 4): 1.0})
    assert cuda.best_launch(tie) == (1024, 4)
    for partial in [], [rows[0], rows[3]]:
        with pytest.raises(ValueError, match="a setting timed in every comparison"):
            cuda.best_launch(partial)


def test_launch_settings_are_arguments_and_are_checked():
    pytest.importorskip("torch")
    from rmsprop.torch import LaunchSettings

    settings = cuda.launch_settings(1024, 2)
    assert settings == LaunchSettings(block=1024, num_warps=2)
    assert cuda.environment(settings)["launch"] == "BLOCK=1024, NUM_WARPS=2"
    assert cuda.environment()["launch"] == "BLOCK=1024, NUM_WARPS=4"  # the kernel's own
    for block, warps in [(3000, 8), (4096, 0), (0, 4), (4096, 6)]:
        with pytest.raises(ValueError, match="powers of two"):
            cuda.launch_settings(block, warps)
        with pytest.raises(ValueError, match=f"powers of two, got {block} and {warps}$"):
            cuda.check_launch(block, warps)
        with pytest.raises(ValueError, match="must be a power of two"):
            LaunchSettings(block, warps)


@pytest.mark.skipif(has_cuda(), reason="the error under test is for machines without a GPU")
def test_the_engine_refuses_without_cuda():
    pytest.importorskip("torch")
    with pytest.raises(RuntimeError, match="torch sees none"):
        cuda.run_cuda(["dqn-1m"])
    with pytest.raises(RuntimeError, match="torch sees none"):
        cuda.sweep_cuda("dqn-1m")


def test_environment_names_the_card_date_and_versions():
    pytest.importorskip("torch")
    about = cuda.environment()
    assert set(about) == {"card", "date", "versions", "launch"}
    assert about["card"] if has_cuda() else about["card"] == "no CUDA device"
    assert len(about["date"]) == 10 and about["date"][4] == "-"
    parts = about["versions"].split(", ")
    assert parts[0].startswith("Python") and parts[1].startswith("torch ")
    assert parts[2].startswith("CUDA ")
    assert about["launch"].startswith("BLOCK=") and ", NUM_WARPS=" in about["launch"]


# The scripts.


def test_gpu_report_renders_a_session_s_files(tmp_path):
    about = {"card": "NVIDIA H100 80GB HBM3", "date": "2026-01-02", "versions": "torch 2.11.0"}
    sweep = [{**r, "block": b, "warps": 8} for r, b in zip(
        rows_of("gpt-1.3b", "float32", {"rmsprop fused": 9.5}) * 2, (2048, 4096)
    )]  # fmt: skip
    sweep[1] = {**sweep[1], "median_ms": 9.4}
    bench = rows_of("gpt-1.3b", "float32", {"rmsprop fused": 9.4, "torch foreach": 28.1})
    files = []
    for name, rows in (("sweep", sweep), ("bench", bench)):
        files.append(tmp_path / f"{name}.json")
        files[-1].write_text(
            json.dumps({**about, "launch": "BLOCK=4096, NUM_WARPS=8", "rows": rows})
        )
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "gpu_report.py"), *map(str, files)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert "### sweep\n\nNVIDIA H100 80GB HBM3, 2026-01-02; torch 2.11.0; BLOCK=4096" in text
    assert "launch settings (fastest: BLOCK=4096, NUM_WARPS=8)" in text
    assert "| float32 | plain | rmsprop fused | 9.400 |" in text
    claim = cuda.TARGETS[0].claim
    assert f"| {claim} | float32 | 2.99× (gpt-1.3b plain) | 1 | **no** |" in text
    # --write fills BENCHMARKS.md's two marked sections and leaves the rest as it was.
    page = tmp_path / "BENCHMARKS.md"
    original = (ROOT / "BENCHMARKS.md").read_text()
    page.write_text(original)
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "gpu_report.py"), "--write", str(page),
         *map(str, files)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    written = page.read_text()
    marked = r"(<!-- (gpu-results|gpu-targets):start -->\n)(.*?)(\n<!-- \2:end -->)"
    results, targets = (m[2] for m in re.findall(marked, written, flags=re.S))
    assert results.startswith("### sweep\n") and "| plain | rmsprop fused | 9.400 |" in results
    assert f"| {claim} | float32 | 2.99× (gpt-1.3b plain) | 1 | **no** |" in targets

    def outside(text):
        return re.sub(marked, r"\1\4", text, flags=re.S)

    assert outside(written) == outside(original)  # all but the marked sections kept
    page.write_text(original.replace("<!-- gpu-targets:end -->", ""))
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "gpu_report.py"), "--write", str(page),
         *map(str, files)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert out.returncode == 1 and "needs one <!-- gpu-targets:start -->" in out.stderr
    assert page.read_text() == original.replace("<!-- gpu-targets:end -->", "")  # untouched

    files[1].write_text(json.dumps({"rows": []}))
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "gpu_report.py"), str(files[1])],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert out.returncode == 1 and "not what rmsprop bench --device cuda --out saves" in out.stderr


# What each part says where torch sees no GPU: it got past its arguments.
BENCH_NO_GPU = "rmsprop bench: error: --device cuda, but torch sees no CUDA device here"
NO_GPU = {
    "sweep": BENCH_NO_GPU,
    "bench": BENCH_NO_GPU,
    "compile": BENCH_NO_GPU,
    "lowmem": BENCH_NO_GPU,
    "host": "benchmarks/gpu_host.py times the host's side of CUDA steps and needs a CUDA GPU",
    "compiled": "benchmarks/compiled_step.py --device cuda needs a CUDA GPU",
}


def run_check(*parts: str, out: pathlib.Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OUT": str(out), "PYTHON": sys.executable}
    return subprocess.run(
        ["bash", str(CHECK), *parts], capture_output=True, text=True, check=False, env=env
    )


def test_gpu_check_refuses_an_unknown_part_before_running_any(tmp_path):
    out = run_check("sweep", "benchmark", out=tmp_path)
    assert out.returncode == 2 and "unknown part 'benchmark'" in out.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(has_cuda(), reason="checks the parts' flags by their no-GPU exit")
def test_gpu_check_parts_pass_flags_the_benchmark_takes(tmp_path):
    """Each part reaches the benchmark's CUDA check (exit 1), so its flags parsed. A sweep
    never leaves an earlier run's rows behind; the parts after one launch with its fastest
    settings, and the summary says so."""
    pytest.importorskip("torch")
    sweep = tmp_path / "sweep.json"
    sweep.write_text(json.dumps({"rows": sweep_rows({("float32", "plain", 2048, 8): 1.0})}))
    stale = sweep.read_text()
    out = run_check("sweep", "bench", "host", "compile", "compiled", "lowmem", out=tmp_path)
    assert out.returncode == 0, out.stderr
    summary = (tmp_path / "summary.txt").read_text().splitlines()
    assert [line.split(" after ")[0] for line in summary] == [
        "sweep: exit 1", "bench: exit 1", "host: exit 1", "compile: exit 1", "compiled: exit 1",
        "lowmem: exit 1",
    ]  # fmt: skip
    assert not sweep.exists()  # this sweep failed, and the earlier one is gone
    for part in ("sweep", "bench", "host", "compile", "compiled", "lowmem"):
        log = (tmp_path / f"{part}.log").read_text()
        assert NO_GPU[part] in log and "--launch-from" not in log, log
        assert "Traceback" not in log and "error: argument" not in log, log
        if part not in ("host", "compiled"):  # the timings: one command line, from the checkout
            assert " -m rmsprop bench --device cuda " in log.splitlines()[0]
    sweep.write_text(stale)  # as a sweep of this run would have left it
    assert run_check("bench", "compile", out=tmp_path).returncode == 0
    summary = (tmp_path / "summary.txt").read_text().splitlines()
    assert summary[0] == f"bench: launched with the fastest settings in {sweep}"
    for part in ("bench", "compile"):
        assert "--launch-from" in (tmp_path / f"{part}.log").read_text().splitlines()[0]


@pytest.mark.skipif(has_cuda(), reason="checks the flags by their no-GPU exit")
def test_gpu_check_ignores_a_sweep_that_names_no_setting(tmp_path):
    pytest.importorskip("torch")
    (tmp_path / "sweep.json").write_text(json.dumps({"rows": []}))
    assert run_check("bench", out=tmp_path).returncode == 0
    log = (tmp_path / "bench.log").read_text()
    assert "--launch-from" not in log and NO_GPU["bench"] in log  # its flags parsed


# On a GPU.


@pytest.fixture
def tiny_model(monkeypatch):
    monkeypatch.setitem(cuda.SHAPES, "tiny", [(4096, 3), (7,)])
    return "tiny"


@gpu
@needs_cuda
def test_run_cuda_times_every_comparison(tiny_model):
    lines, groups = [], []
    rows = cuda.run_cuda(
        [tiny_model], ["float32", "bfloat16"], ["plain", "momentum"],
        ["rmsprop fused", "torch foreach", "torch for-loop"], steps=3, warmup=1,
        log=lines.append, each_group=groups.append,
    )  # fmt: skip
    assert len(rows) == 12 and len(groups) == 4
    assert lines[0].startswith("device-to-device copy: ")
    assert lines[-1].startswith("device-to-device copy at the end: ")
    for row in rows:
        assert row["median_ms"] > 0 and row["tb_per_s"] > 0 and row["rotation"] >= 1
        assert row["vs_torch_compile"] is None and row["vs_torch_foreach"] > 0


@gpu
@needs_cuda
def test_sweep_times_each_launch_setting(tiny_model):
    seen, timing = [], []
    rows = cuda.sweep_cuda(
        tiny_model, ["float32"], ["plain"], steps=3, warmup=1,
        settings=[(1024, 4), (8192, 16)], on_row=seen.append, progress=timing.append,
    )  # fmt: skip
    assert [(r["block"], r["warps"]) for r in rows] == [(1024, 4), (8192, 16)] and seen == rows
    assert timing[1] == "tiny · float32 · plain · BLOCK=8192, NUM_WARPS=16"


@gpu
@needs_cuda
def test_copy_bandwidth_is_plausible():
    assert 0.05 < cuda.copy_bandwidth(gib=0.25, repeats=5) < 100  # TB/s
