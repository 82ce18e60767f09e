"""``rmsprop bench --state-dtype``: our fused and foreach columns once per way of storing the
optimizer state, named for it, with the state's bytes per parameter as each optimizer
measures them; a run without the option prints what it always printed."""

from __future__ import annotations

import argparse
import json
import re
import sys
import types

import pytest

torch = pytest.importorskip("torch", reason="rmsprop bench times the torch optimizers")

from rmsprop.benchmark import _common, cpu, cuda  # noqa: E402
from rmsprop.cli import bench, main  # noqa: E402
from rmsprop.torch import RMSprop  # noqa: E402

TINY = "tiny (test)"
# One parameter big enough for 8-bit state (4096 elements and more), one that stays float32.
SHAPE = [(4096,), (7,)]
PARAMS = 4096 + 7
FUSED_CPU = not _common.unavailable("rmsprop fused", "cpu")


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    bench.add_parser(parser.add_subparsers())
    return parser.parse_args(["bench", *argv])


# The option.


def test_not_given_the_engines_get_what_they_always_got():
    assert "state_dtypes" not in bench.engine_arguments(parse())
    assert "state_dtypes" not in bench.engine_arguments(parse("--device", "cuda"))


def test_given_once_each_in_the_engine_s_order():
    args = parse("--state-dtype", "8bit", "--state-dtype", "float32", "--state-dtype", "8bit")
    assert bench.engine_arguments(args)["state_dtypes"] == ["float32", "8bit"]
    args = parse("--device", "cuda", "--dtype", "float32", "--state-dtype", "bfloat16-stochastic")
    assert bench.engine_arguments(args)["state_dtypes"] == ["bfloat16-stochastic"]
    # One of ours is enough: the state is theirs alone.
    args = parse("--state-dtype", "8bit", "--implementation", "rmsprop foreach",
                 "--implementation", "torch foreach")  # fmt: skip
    assert bench.engine_arguments(args)["implementations"] == ["rmsprop foreach", "torch foreach"]


# The columns.


def labels(columns):
    return [(c.label, c.implementation, c.state) for c in columns]


def test_each_of_ours_once_per_state_dtype_named_where_not_the_parameters():
    names = ["rmsprop fused", "rmsprop foreach", "torch foreach", "optax jit"]
    assert labels(_common.timed(names, ["8bit", "float32", "bfloat16"], "float32")) == [
        ("rmsprop fused", "rmsprop fused", "float32"),
        ("rmsprop fused bfloat16", "rmsprop fused", "bfloat16"),
        ("rmsprop fused 8bit", "rmsprop fused", "8bit"),
        ("rmsprop foreach", "rmsprop foreach", "float32"),
        ("rmsprop foreach bfloat16", "rmsprop foreach", "bfloat16"),
        ("rmsprop foreach 8bit", "rmsprop foreach", "8bit"),
        ("torch foreach", "torch foreach", "float32"),
        ("optax jit", "optax jit", "float32"),
    ]
    # Beside bfloat16 parameters, float32 state is the one named; None is today's columns.
    assert [c.label for c in _common.timed(names[:1], ["float32", "bfloat16"], "bfloat16")] == [
        "rmsprop fused float32", "rmsprop fused",
    ]  # fmt: skip
    assert [c.label for c in _common.timed(names, None, "bfloat16")] == names
    # Only 8-bit asked: our float32 columns are not timed, torch's still are.
    assert [c.label for c in _common.timed(names[:3], ["8bit"], "float32")] == [
        "rmsprop fused 8bit", "rmsprop foreach 8bit", "torch foreach",
    ]  # fmt: skip


def test_bad_state_dtypes_are_refused():
    with pytest.raises(ValueError, match=r"unknown state dtype 'int4'; choose from float32"):
        _common.timed(["rmsprop fused"], ["int4"], "float32")
    with pytest.raises(ValueError, match="bfloat16 parameters keep bfloat16 state"):
        _common.timed(["rmsprop fused"], ["bfloat16-stochastic"], "bfloat16")
    params = _common.parameter_sets([(3,)], torch.float32, 1, device="cpu")[0]
    with pytest.raises(ValueError, match="torch foreach keeps its state in the parameters'"):
        _common.torch_step("torch foreach", params, {}, state={"state_dtype": "8bit"})
    with pytest.raises(ValueError, match="optax jit keeps its state in the parameters'"):
        cuda.make_steps("optax jit", [(3,)], "float32", "plain", 1, device="cpu", state="8bit")


def test_state_options_are_the_optimizer_s():
    assert _common.state_options("float32", "float32") == {}  # state_dtype=None: as before
    assert _common.state_options("bfloat16", "bfloat16") == {}
    assert _common.state_options("8bit", "float32") == {"state_dtype": "8bit"}
    assert _common.state_options("float32", "bfloat16") == {"state_dtype": torch.float32}
    assert _common.state_options("bfloat16-stochastic", "float32") == {
        "state_dtype": torch.bfloat16, "stochastic_rounding": True,
    }  # fmt: skip


# The bytes: measured from each optimizer.


@pytest.mark.parametrize(
    ("state", "per_buffer"),
    [
        ("float32", 4 * PARAMS),
        ("bfloat16", 2 * PARAMS),
        ("bfloat16-stochastic", 2 * PARAMS),
        ("8bit", 4096 + 4 * 16 + 4 * 7),  # codes and a scale per 256; the small one float32
    ],
)
def test_our_steps_measure_their_state(state, per_buffer):
    params = _common.parameter_sets(SHAPE, torch.float32, 1, device="cpu")[0]
    options = {"momentum": 0.9, "centered": True}  # three buffers
    step = _common.torch_step(
        "rmsprop foreach", params, options, state=_common.state_options(state, "float32")
    )
    assert _common.state_nbytes(step) == 0  # no state before the first step
    step()
    assert _common.state_nbytes(step) == step.__self__.state_nbytes() == 3 * per_buffer


def test_the_others_measure_their_state_too():
    params = _common.parameter_sets(SHAPE, torch.float32, 1, device="cpu")[0]
    step = _common.torch_step("torch for-loop", params, {"momentum": 0.9})
    step()
    assert _common.state_nbytes(step) == 2 * 4 * PARAMS  # not the step counts
    assert _common.state_nbytes(lambda: None) is None  # a step that hides its optimizer


def test_numpy_and_optax_steps_measure_their_state():
    if not _common.unavailable("numpy fused", "cpu"):
        step = cpu._build("numpy fused", SHAPE, {"momentum": 0.9})
        step()
        assert _common.state_nbytes(step) == 2 * 4 * PARAMS
    if not _common.unavailable("optax jit", "cpu"):
        (step,) = _common.optax_steps(SHAPE, {"centered": True, "momentum": 0.9})
        assert _common.state_nbytes(step) == 3 * 4 * PARAMS


# The CPU engine and its tables.


@pytest.fixture
def tiny_size(monkeypatch):
    monkeypatch.setitem(cpu.SHAPES, TINY, SHAPE)
    monkeypatch.setitem(bench.SIZES["cpu"], "small", [TINY])


def run_json(*argv: str, capsys) -> list[dict]:
    assert main(["bench", "--steps", "1", "--warmup", "0", "--json", *argv]) == 0
    return json.loads(capsys.readouterr().out)


def test_json_rows_carry_the_state_and_its_measured_bytes(tiny_size, capsys):
    rows = run_json(
        "--variant", "momentum", "--state-dtype", "float32", "--state-dtype", "8bit",
        "--implementation", "rmsprop foreach", "--implementation", "torch for-loop",
        capsys=capsys,
    )  # fmt: skip
    by_name = {row["implementation"]: row for row in rows}
    assert list(by_name) == ["rmsprop foreach", "rmsprop foreach 8bit", "torch for-loop"]
    assert [row["state_dtype"] for row in rows] == ["float32", "8bit", "float32"]
    eight = (4096 + 4 * 16 + 4 * 7) * 2 / PARAMS  # two buffers (square_avg, momentum_buffer)
    assert by_name["rmsprop foreach 8bit"]["state_bytes_per_param"] == pytest.approx(eight)
    assert by_name["rmsprop foreach"]["state_bytes_per_param"] == 8.0
    assert by_name["torch for-loop"]["state_bytes_per_param"] == 8.0
    # The bandwidth counts the bytes each row moves: θ and g (12), the state read and written.
    assert by_name["rmsprop foreach"]["bytes_per_param"] == 28
    assert by_name["rmsprop foreach 8bit"]["bytes_per_param"] == pytest.approx(12 + 2 * eight)
    eight_row = by_name["rmsprop foreach 8bit"]
    assert eight_row["vs_default_state"] == pytest.approx(
        by_name["rmsprop foreach"]["median_ms"] / eight_row["median_ms"]
    )
    assert by_name["rmsprop foreach"]["vs_default_state"] is None


def test_the_bytes_shown_are_the_optimizer_s(tiny_size, monkeypatch, capsys):
    monkeypatch.setattr(RMSprop, "state_nbytes", lambda self: 3 * PARAMS)  # 3.000 per param
    rows = run_json("--variant", "plain", "--state-dtype", "bfloat16",
                    "--implementation", "rmsprop foreach", capsys=capsys)  # fmt: skip
    assert [(r["implementation"], r["state_bytes_per_param"]) for r in rows] == [
        ("rmsprop foreach bfloat16", 3.0),
    ]


def test_default_tables_are_unchanged_and_state_tables_say_the_state(tiny_size, capsys):
    argv = ["bench", "--steps", "1", "--warmup", "0", "--variant", "plain",
            "--implementation", "rmsprop foreach", "--implementation", "torch foreach"]  # fmt: skip
    assert main(argv) == 0
    default = capsys.readouterr().out.splitlines()
    assert re.split(r"\s{2,}", default[2].strip()) == [
        "variant", "implementation", "median ms", "GB/s", "vs add", "× foreach", "× loop",
        "first s",
    ]  # fmt: skip
    assert main([*argv, "--state-dtype", "float32"]) == 0  # float32 asked: the same table
    assert capsys.readouterr().out.splitlines()[2] == default[2]

    assert main([*argv, "--state-dtype", "float32", "--state-dtype", "bfloat16"]) == 0
    lines = capsys.readouterr().out.splitlines()
    headers = re.split(r"\s{2,}", lines[2].strip())
    assert headers == [
        "variant", "implementation", "state B/param", "median ms", "GB/s", "vs add",
        "× foreach", "× loop", "× default state", "first s",
    ]  # fmt: skip
    cells = [re.split(r"\s{2,}", line.strip()) for line in lines[4:7]]
    assert [(c[1], c[2]) for c in cells] == [
        ("rmsprop foreach", "4.000"), ("rmsprop foreach bfloat16", "2.000"),
        ("torch foreach", "4.000"),
    ]  # fmt: skip
    assert cells[0][8] == "—" and cells[1][8].endswith("×") and cells[2][8] == "—"

    assert main([*argv, "--state-dtype", "8bit", "--markdown"]) == 0
    out = capsys.readouterr().out
    assert _common.markdown_header(cpu.STATE_COLUMNS)[0] in out
    assert "| state bytes / param |" in out and "| × state_dtype=None |" in out
    assert "| plain | rmsprop foreach 8bit | 1.021 |" in out  # (4096 + 64 + 28) / 4103


@pytest.mark.skipif(not FUSED_CPU, reason="needs the fused CPU step")
def test_the_fused_cpu_columns(tiny_size, capsys):
    rows = run_json("--variant", "centered+momentum", "--implementation", "rmsprop fused",
                    "--state-dtype", "float32", "--state-dtype", "bfloat16-stochastic",
                    "--state-dtype", "8bit", capsys=capsys)  # fmt: skip
    assert [(r["implementation"], r["state_bytes_per_param"]) for r in rows] == [
        ("rmsprop fused", 12.0),
        ("rmsprop fused bfloat16-stochastic", 6.0),
        ("rmsprop fused 8bit", pytest.approx(3 * (4096 + 64 + 28) / PARAMS)),
    ]


def test_a_failing_column_is_logged_and_the_others_are_timed(tiny_size, monkeypatch, capsys):
    real = _common.torch_step

    def torch_step(name, params, options, launch=None, state=None):
        if state:
            raise RuntimeError("no 8-bit kernel today")
        return real(name, params, options, launch, state)

    monkeypatch.setattr(_common, "torch_step", torch_step)
    argv = ["bench", "--steps", "1", "--warmup", "0", "--variant", "plain",
            "--implementation", "rmsprop foreach", "--state-dtype", "float32",
            "--state-dtype", "8bit"]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert (
        f"{TINY} · plain · rmsprop foreach 8bit failed: RuntimeError('no 8-bit kernel today')"
    ) in out
    assert "  plain    rmsprop foreach  " in out
    assert main([*argv, "--json"]) == 0  # stdout: the JSON alone; the failure on stderr
    printed = capsys.readouterr()
    assert [row["implementation"] for row in json.loads(printed.out)] == ["rmsprop foreach"]
    assert "rmsprop foreach 8bit failed: RuntimeError('no 8-bit kernel today')" in printed.err


# The CUDA engine, on a device it believes in.


@pytest.fixture
def fake_device(monkeypatch):
    from rmsprop.torch._fused import triton

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: None)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda: (2**40, 2**40))
    l2 = types.SimpleNamespace(L2_cache_size=50 * 2**20)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda index: l2)
    monkeypatch.setattr(triton, "unsupported_reason", lambda device: "")
    monkeypatch.setitem(sys.modules, "optax", None)
    monkeypatch.setattr(cuda, "copy_bandwidth", lambda: 2.0)


class FakeStep:
    """A step that times nothing and holds ``nbytes`` of state."""

    def __init__(self, nbytes: int) -> None:
        self.nbytes = nbytes

    def __call__(self) -> None:
        pass

    def state_nbytes(self) -> int:
        return self.nbytes


def test_run_cuda_times_each_state_dtype_as_a_column(fake_device, monkeypatch):
    params = 1_027_200  # dqn-1m
    built = []
    per_state = {"float32": 4, "bfloat16": 2, "8bit": 1}  # bytes per element

    def make_steps(name, model, dtype, variant, count, launch=None, **state):
        built.append((dtype, name, state.get("state")))
        size = per_state[state["state"]] if state else cuda.DTYPES[dtype]
        return [FakeStep(size * params)] * count

    medians = {None: 1.0, "float32": 1.5, "bfloat16": 0.8, "8bit": 0.5}
    monkeypatch.setattr(cuda, "make_steps", make_steps)
    monkeypatch.setattr(cuda, "time_cuda", lambda steps, repeats, warmup: {
        "median_ms": medians[built[-1][2]] * (4 if built[-1][1] == "torch foreach" else 1),
        "wall_ms": 1.0, "first_s": 0.1,
    })  # fmt: skip
    rows = cuda.run_cuda(
        ["dqn-1m"], ["float32", "bfloat16"], ["plain"], ["rmsprop fused", "torch foreach"],
        state_dtypes=["8bit", "float32"],
    )  # fmt: skip
    # Default state is built as before (no state argument); the others are named.
    assert built == [
        ("float32", "rmsprop fused", None), ("float32", "rmsprop fused", "8bit"),
        ("float32", "torch foreach", None),
        ("bfloat16", "rmsprop fused", "float32"), ("bfloat16", "rmsprop fused", "8bit"),
        ("bfloat16", "torch foreach", None),
    ]  # fmt: skip
    assert [(r["dtype"], r["implementation"], r["state_dtype"]) for r in rows] == [
        ("float32", "rmsprop fused", "float32"), ("float32", "rmsprop fused 8bit", "8bit"),
        ("float32", "torch foreach", "float32"),
        ("bfloat16", "rmsprop fused float32", "float32"),
        ("bfloat16", "rmsprop fused 8bit", "8bit"), ("bfloat16", "torch foreach", "bfloat16"),
    ]  # fmt: skip
    eight = rows[1]
    assert eight["state_bytes_per_param"] == 1.0
    assert eight["minimal_bytes"] == (3 * 4 + 2 * 1) * params  # the state's measured bytes
    assert eight["vs_default_state"] == 2.0 and eight["vs_torch_foreach"] == 8.0
    assert rows[0]["minimal_bytes"] == 20 * params and rows[0]["vs_default_state"] is None
    assert rows[3]["minimal_bytes"] == (3 * 2 + 2 * 4) * params  # float32 state, bf16 θ
    assert rows[3]["vs_default_state"] is None  # ours with bfloat16 state was not asked for
    assert rows[5]["state_bytes_per_param"] == 2.0
    # The kernel's targets judge its rows with the parameters' dtype of state alone.
    target = cuda.Target("faster than torch foreach", None, "vs_torch_foreach", 1.0)
    judged = {v["dtype"]: v["rows"] for v in cuda.verdicts(rows, [target])}
    assert judged == {"float32": 1, "bfloat16": 0}
    assert cuda.columns(rows) is cuda.STATE_COLUMNS and cuda.columns(rows[:1]) is cuda.COLUMNS
    text = cuda.markdown(rows)
    assert "| bfloat16 | plain | rmsprop fused 8bit | 1.000 |" in text
    with pytest.raises(ValueError, match="bfloat16-stochastic is bfloat16 state"):
        cuda.run_cuda(["dqn-1m"], ["bfloat16"], ["plain"], ["rmsprop fused"],
                      state_dtypes=["bfloat16-stochastic"])  # fmt: skip


def test_the_command_hands_the_state_dtypes_to_the_cuda_engine(fake_device, monkeypatch, capsys):
    asked = {}

    def run_cuda(**kwargs):
        asked.update(kwargs)
        timing = {"median_ms": 1.0, "wall_ms": 1.0, "first_s": 0.1}
        rows = [
            cuda.make_row("dqn-1m", "float32", "plain", "rmsprop fused", timing, 2.0),
            cuda.make_row("dqn-1m", "float32", "plain", "rmsprop fused 8bit", timing, 2.0,
                          state_dtype="8bit", state_bytes=1_100_000),
        ]  # fmt: skip
        _common.add_speedups(rows, cuda.REFERENCES)
        _common.add_state_speedups(rows, _common.timed(["rmsprop fused"], ["float32", "8bit"],
                                                       "float32"))  # fmt: skip
        kwargs["each_group"](rows)
        return rows

    monkeypatch.setattr(cuda, "run_cuda", run_cuda)
    monkeypatch.setattr(cuda, "environment", lambda launch=None: {
        "card": "Fake H100", "date": "2026-01-02", "versions": "v", "launch": "BLOCK=1",
    })  # fmt: skip
    argv = ["bench", "--device", "cuda", "--dtype", "float32", "--variant", "plain",
            "--state-dtype", "8bit", "--state-dtype", "float32", "--json"]  # fmt: skip
    assert main(argv) == 0
    assert asked["state_dtypes"] == ["float32", "8bit"] and asked["dtypes"] == ["float32"]
    report = json.loads(capsys.readouterr().out)
    assert [(r["implementation"], r["state_dtype"]) for r in report["rows"]] == [
        ("rmsprop fused", "float32"), ("rmsprop fused 8bit", "8bit"),
    ]  # fmt: skip
    assert report["rows"][1]["state_bytes_per_param"] == pytest.approx(1_100_000 / 1_027_200)
    assert main(argv[:-1]) == 0
    out = capsys.readouterr().out
    assert "state B/param" in out and "× default state" in out and "1.071" in out


def test_smaller_state_rotates_over_more_sets(fake_device, monkeypatch):
    """L2 must not flatter a column whose state is smaller: its sets are sized by it."""
    counts = {}

    def make_steps(name, model, dtype, variant, count, launch=None, **state):
        counts[state.get("state", dtype)] = count
        return [FakeStep(0)] * count

    monkeypatch.setattr(cuda, "make_steps", make_steps)
    monkeypatch.setattr(cuda, "time_cuda", lambda steps, repeats, warmup: {
        "median_ms": 1.0, "wall_ms": 1.0, "first_s": 0.1,
    })  # fmt: skip
    monkeypatch.setitem(cuda.SHAPES, TINY, [(1024, 1024)] * 4)  # 4M parameters
    cuda.run_cuda([TINY], ["float32"], ["plain"], ["rmsprop fused"],
                  state_dtypes=["float32", "bfloat16", "8bit"])  # fmt: skip
    l2 = 50 * 2**20
    params = 4 * 2**20
    assert counts == {
        "float32": cuda.rotation(12 * params, 2**40, l2),  # θ, g, v: 4 bytes each
        "bfloat16": cuda.rotation(10 * params, 2**40, l2),
        "8bit": cuda.rotation(int(8 * params + params * (1 + 4 / 256)), 2**40, l2),
    }
    assert counts["float32"] == 5 and counts["8bit"] == 6
