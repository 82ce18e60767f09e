"""What both step benchmarks share: byte counts, what can run, timing, step builders, tables."""

from __future__ import annotations

import ast
import functools
import itertools
import pathlib
import sys

import pytest

from rmsprop.benchmark import _common
from rmsprop.benchmark._common import VARIANTS, Column

EAGER = ["rmsprop foreach", "torch foreach", "torch for-loop"]
TINY = [(3, 4), (5,), (2, 3, 2)]


@pytest.mark.parametrize(
    ("variant", "float32", "bfloat16", "tensors"),
    [("plain", 20, 10, 3), ("momentum", 28, 14, 4), ("centered+momentum", 36, 18, 5)],
)
def test_minimal_bytes_per_parameter(variant, float32, bfloat16, tensors):
    rule = VARIANTS[variant]
    assert rule.bytes_per_param() == rule.bytes_per_param(4) == float32
    assert rule.bytes_per_param(2) == bfloat16
    assert rule.tensors == tensors


def test_variants_are_torch_options():
    assert VARIANTS["plain"].options == {}
    assert VARIANTS["momentum"].options == {"momentum": 0.9}
    assert VARIANTS["centered+momentum"].options == {"centered": True, "momentum": 0.9}


def test_parameter_count():
    assert _common.parameter_count(TINY) == 12 + 5 + 12
    assert _common.parameter_count([]) == 0


def test_unavailable_says_why(monkeypatch):
    from rmsprop.kernels import numba_cpu

    monkeypatch.setitem(sys.modules, "optax", None)  # `import optax` raises ImportError
    assert _common.unavailable("optax jit", "cpu").startswith("not installed (")
    monkeypatch.setattr(numba_cpu, "AVAILABLE", False)
    monkeypatch.setattr(numba_cpu, "WHY_UNAVAILABLE", "no numba here")
    assert _common.unavailable("rmsprop fused", "cpu") == "no numba here"
    assert _common.unavailable("numpy fused", "cpu") == "no numba here"
    for name in [*EAGER, "torch.compile"]:
        assert _common.unavailable(name, "cpu") == ""
        assert _common.unavailable(name, "cuda") == ""


def test_unavailable_asks_the_kernel_registry(monkeypatch):
    pytest.importorskip("torch")
    from rmsprop.torch._fused import triton

    monkeypatch.setattr(triton, "unsupported_reason", lambda device: f"not on {device}")
    assert _common.unavailable("rmsprop fused", "cuda") == "not on cuda"


def test_available_keeps_the_order_and_the_reasons(monkeypatch):
    monkeypatch.setitem(sys.modules, "optax", None)
    names, skipped = _common.available(["torch for-loop", "optax jit", "torch foreach"], "cpu")
    assert names == ["torch for-loop", "torch foreach"]
    assert list(skipped) == ["optax jit"] and "not installed" in skipped["optax jit"]


class FakeClock:
    """perf_counter for `_common`: time moves only when a step says so."""

    def __init__(self, monkeypatch):
        self.now = 0.0
        monkeypatch.setattr(_common.time, "perf_counter", lambda: self.now)

    def step(self, seconds, calls):
        def call():
            calls.append(seconds)
            self.now += seconds

        return call


def test_time_host_warms_up_then_rotates_and_reports_median_and_mean(monkeypatch):
    clock = FakeClock(monkeypatch)
    calls: list[float] = []
    steps = [clock.step(0.001, calls), clock.step(0.004, calls)]
    timing = _common.time_host(steps, repeats=5, warmup=3)
    # 3 warm-up calls (0, 1, 0), then 5 timed ones (0, 1, 0, 1, 0).
    assert calls == [0.001, 0.004, 0.001, 0.001, 0.004, 0.001, 0.004, 0.001]
    assert timing["median_ms"] == pytest.approx(1.0)
    assert timing["wall_ms"] == pytest.approx((3 * 1 + 2 * 4) / 5)


def test_warm_up_calls_every_rotated_step_at_least_once():
    calls: list[int] = []
    steps = [functools.partial(calls.append, i) for i in range(3)]
    _common.warm_up(steps, 1)  # fewer warm-up calls than steps: one each
    assert calls == [0, 1, 2]
    calls.clear()
    _common.warm_up(steps, 4)
    assert calls == [0, 1, 2, 0]


def test_first_call_waits_before_it_stops_the_clock(monkeypatch):
    clock = FakeClock(monkeypatch)
    calls: list[float] = []
    assert _common.first_call_s(clock.step(0.5, calls), clock.step(0.25, calls)) == 0.75
    assert calls == [0.5, 0.25]


def test_speedups_divide_the_reference_median_by_each_row_s():
    group = [
        {"implementation": "a", "median_ms": 2.0},
        {"implementation": "b", "median_ms": 4.0},
    ]
    _common.add_speedups(group, {"vs_b": "b", "vs_c": "c"})
    assert [row["vs_b"] for row in group] == [2.0, 1.0]
    assert [row["vs_c"] for row in group] == [None, None]


def test_state_speedups_compare_with_the_same_implementation_at_default_state():
    columns = _common.timed(["rmsprop fused", "torch foreach"], ["float32", "8bit"], "float32")
    group = [
        {"implementation": "rmsprop fused", "median_ms": 2.0},
        {"implementation": "rmsprop fused 8bit", "median_ms": 1.0},
        {"implementation": "torch foreach", "median_ms": 4.0},
    ]
    _common.add_state_speedups(group, columns)
    assert [row["vs_default_state"] for row in group] == [None, 2.0, None]
    _common.add_state_speedups(group[1:], columns)  # its float32 column failed: nothing to say
    assert group[1]["vs_default_state"] is None


def test_the_state_columns_show_only_for_other_state_than_the_parameters():
    assert not _common.shows_state([{"implementation": "x"}])  # rows saved before the option
    assert not _common.shows_state([{"state_dtype": "float32"}])  # CPU rows: float32 θ
    assert not _common.shows_state([{"dtype": "bfloat16", "state_dtype": "bfloat16"}])
    assert _common.shows_state([{"dtype": "bfloat16", "state_dtype": "float32"}])
    assert _common.shows_state([{"state_dtype": "float32"}, {"state_dtype": "8bit"}])
    assert _common.state_cell({"state_bytes_per_param": 1.0156}) == "1.016"
    assert _common.state_cell({"state_bytes_per_param": None}) == "—"
    assert _common.state_cell({}) == "—"


def test_rows_by_shape_keep_their_order():
    rows = [{"shape": s, "i": i} for i, s in enumerate("xyxzy")]
    groups = _common.by_shape(rows)
    assert list(groups) == ["x", "y", "z"]
    assert [row["i"] for row in groups["y"]] == [1, 4]


def test_tables():
    columns = [Column("name", lambda r: r["name"]), Column("a long header", str, "short")]
    rows = [{"shape": "s", "name": "n1"}, {"shape": "t", "name": "n2"}]
    assert _common.format_ratio(None) == "—" and _common.format_ratio(2) == "2.00×"
    assert _common.markdown_header(columns) == ["| name | a long header |", "|---|---|"]
    assert _common.markdown_row(columns[:1], rows[0]) == "| n1 |"
    text = _common.markdown(rows, columns[:1], lambda row: f"({row['name']})")
    assert text.splitlines() == [
        "", "**s** (n1)", "", "| name |", "|---|", "| n1 |",
        "", "**t** (n2)", "", "| name |", "|---|", "| n2 |",
    ]  # fmt: skip
    assert _common.markdown(rows[:1], columns[:1]).splitlines()[1] == "**s**"
    headers, cells = _common.terminal_table([columns[0], Column("x", lambda r: "1", "y")], rows)
    assert headers == ["name", "y"] and cells == [["n1", "1"], ["n2", "1"]]


def test_versions_list_what_is_installed():
    found = _common.versions(["numpy", "no-such-package-here"])
    assert found[0].startswith("Python 3.")
    assert found[1].startswith("numpy ") and len(found) == 2


# The step builders, on CPU tensors.


def test_parameter_sets_are_independent_and_reproducible():
    torch = pytest.importorskip("torch")
    sets = _common.parameter_sets(TINY, torch.bfloat16, 2, device="cpu")
    again = _common.parameter_sets(TINY, torch.bfloat16, 1, device="cpu")
    assert len(sets) == 2 and [tuple(p.shape) for p in sets[0]] == TINY
    for p in sets[0]:
        assert p.dtype == p.grad.dtype == torch.bfloat16 and p.device.type == "cpu"
    assert all(torch.equal(p, q) for p, q in zip(sets[0], again[0]))
    assert not torch.equal(sets[0][0], sets[1][0])


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_the_eager_steps_take_the_same_step(variant):
    torch = pytest.importorskip("torch")
    names = list(EAGER)
    if not _common.unavailable("rmsprop fused", "cpu"):
        names.append("rmsprop fused")
    results = {}
    for name in names:
        params = _common.parameter_sets(TINY, torch.float32, 1, device="cpu")[0]
        before = [p.detach().clone() for p in params]
        step = _common.torch_step(name, params, VARIANTS[variant].options)
        step()
        step()
        assert all(not torch.equal(p, b) for p, b in zip(params, before)), name
        results[name] = [p.detach() for p in params]
    for name in names[1:]:
        torch.testing.assert_close(results[name], results[names[0]], rtol=1e-5, atol=1e-6)


def test_torch_step_knows_only_eager_implementations():
    torch = pytest.importorskip("torch")
    params = _common.parameter_sets(TINY, torch.float32, 1, device="cpu")[0]
    with pytest.raises(ValueError, match=r"torch\.compile"):
        _common.torch_step("torch.compile", params, {})


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_optax_takes_torch_s_step(variant):
    torch = pytest.importorskip("torch")
    pytest.importorskip("optax")
    import jax.numpy as jnp
    import numpy as np

    params = _common.parameter_sets(TINY, torch.float32, 1, device="cpu")[0]
    values = [jnp.asarray(p.detach().numpy().copy()) for p in params]
    grads = [jnp.asarray(p.grad.numpy().copy()) for p in params]
    tx = _common.optax_rmsprop(VARIANTS[variant].options)
    update, state = _common.jitted_update(tx), tx.init(values)
    step = _common.torch_step("torch foreach", params, VARIANTS[variant].options)
    for _ in range(2):
        values, state = update(values, state, grads)
        step()
    for ours, theirs in zip(values, params):
        np.testing.assert_allclose(np.asarray(ours), theirs.detach().numpy(), rtol=1e-5, atol=1e-6)


def test_optax_steps_are_independent_models_stepped_in_place():
    pytest.importorskip("optax")
    import jax.numpy as jnp
    import numpy as np

    steps = _common.optax_steps(TINY, VARIANTS["momentum"].options, "bfloat16", count=2)
    assert len(steps) == 2
    first, second = (np.asarray(s.params[0], dtype=np.float32) for s in steps)
    assert not np.array_equal(first, second)
    for step in itertools.islice(itertools.cycle(steps), 4):
        step()
    for step in steps:
        assert [p.dtype for p in step.params] == [jnp.bfloat16] * len(TINY)
        assert [p.shape for p in step.params] == TINY
    assert not np.array_equal(np.asarray(steps[0].params[0], dtype=np.float32), first)


# The scripts in benchmarks/: the engine's and the kernels' public names only.

BENCHMARKS = pathlib.Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.mark.parametrize("script", sorted(p.name for p in BENCHMARKS.glob("*.py")))
def test_the_scripts_import_only_public_names(script):
    source = (BENCHMARKS / script).read_text()
    tree = ast.parse(source)
    taken = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("rmsprop"):
            taken += [f"{node.module}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Import):
            taken += [alias.name for alias in node.names if alias.name.startswith("rmsprop")]
    # (Or runs the package's command in fresh processes, as compare_revisions.py does.)
    assert taken or '"-m", "rmsprop"' in source, f"{script} times nothing of ours"
    private = [name for name in taken if any(part.startswith("_") for part in name.split("."))]
    assert private == []


def test_the_scripts_names_are_the_engine_s():
    import rmsprop.benchmark

    for name in ("available", "unavailable", "parameter_sets", "torch_step", "time_host"):
        assert name in rmsprop.benchmark.__all__
        assert getattr(rmsprop.benchmark, name) is getattr(_common, name)
