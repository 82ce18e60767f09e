"""Worker processes: fork after a step, spawn and forkserver, Hogwild on shared state.

Each child runs under a timeout: a hang fails the test instead of stalling the suite.
"""

from __future__ import annotations

import copy
import multiprocessing as mp
import queue as queues

import pytest
import workers

torch = pytest.importorskip("torch", reason="the torch backend needs the torch extra")

from rmsprop.torch import RMSprop  # noqa: E402

TIMEOUT = 60  # seconds a child may take (a cold start imports torch and loads the kernel)
# Large enough that the fused CPU kernel hands it to its thread pool (SERIAL_BELOW).
BIG = 400_000
METHODS = [m for m in ("fork", "spawn", "forkserver") if m in mp.get_all_start_methods()]


def run_children(context, target, args_of, count):
    """Starts ``count`` children, waits for each report (TIMEOUT), and returns them."""
    results = context.Queue()
    children = [context.Process(target=target, args=(*args_of(i), results)) for i in range(count)]
    for child in children:
        child.start()
    reports = []
    try:
        for _ in children:
            reports.append(results.get(timeout=TIMEOUT))
    except queues.Empty:
        pytest.fail(f"a {context.get_start_method()} child hung (no report in {TIMEOUT} s)")
    finally:
        for child in children:
            child.join(5)
            if child.is_alive():
                child.kill()
                child.join()
    assert all(child.exitcode == 0 for child in children), [c.exitcode for c in children]
    return reports


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("fused", [True, False], ids=["fused", "foreach"])
def test_a_child_steps_after_the_parent_stepped(method, fused):
    # The A3C pattern: build and step in the parent, then start workers. A forked child
    # inherits the kernel's thread pool without its threads: its step must not wait on it.
    param = torch.nn.Parameter(torch.randn(BIG))
    optimizer = RMSprop([param], momentum=0.9, fused=fused, foreach=None if fused else True)
    param.grad = torch.randn(BIG)
    optimizer.step()
    param.share_memory_()
    optimizer.share_memory()
    context = mp.get_context(method)
    [report] = run_children(context, workers.step_once, lambda i: (param, optimizer), 1)
    assert report == ("ok", 2.0)
    # The child stepped the shared state: the parent sees its count.
    assert float(optimizer.state[param]["step"]) == 2.0


def test_share_memory_creates_every_state_tensor_shared_and_refuses_private_parameters():
    model = torch.nn.Linear(6, 3)
    optimizer = RMSprop(model.parameters(), centered=True, momentum=0.5)
    with pytest.raises(
        ValueError, match=r"not in shared memory; call share_memory\(\) on the model"
    ):
        optimizer.share_memory()
    assert not optimizer.state and not optimizer.shared_memory  # nothing changed
    model.share_memory()
    assert optimizer.share_memory() is optimizer
    for p in model.parameters():
        state = optimizer.state[p]
        assert set(state) == {"step", "square_avg", "grad_avg", "momentum_buffer"}
        assert all(t.is_shared() for t in state.values())
        assert float(state["step"]) == 0


def test_state_created_later_and_loaded_state_stay_shared():
    model = torch.nn.Linear(4, 2).share_memory()
    optimizer = RMSprop(model.parameters()).share_memory()
    optimizer.param_groups[0]["momentum"] = 0.9  # turned on mid-run: its buffer is new
    model(torch.randn(3, 4)).sum().backward()
    optimizer.step()
    buffer = optimizer.state[model.weight]["momentum_buffer"]
    assert buffer.is_shared()
    kept = {k: v.data_ptr() for k, v in optimizer.state[model.weight].items()}
    saved = copy.deepcopy(optimizer.state_dict())  # (state_dict() shares the live dicts)
    saved["state"][0]["square_avg"] += 1
    optimizer.load_state_dict(saved)
    state = optimizer.state[model.weight]
    # The same shared tensors, holding the loaded values: the workers see them.
    assert {k: v.data_ptr() for k, v in state.items()} == kept
    assert all(v.is_shared() for v in state.values())
    torch.testing.assert_close(state["square_avg"], saved["state"][0]["square_avg"])


@pytest.mark.parametrize("method", ["fork", "spawn"])
@pytest.mark.parametrize("flavor", ["a3c", "dqn"])  # plain, and centered (clamped: no NaN)
def test_hogwild_workers_train_one_shared_model_and_optimizer(method, flavor):
    if method not in METHODS:
        pytest.skip(f"{method} is not a start method here")
    torch.manual_seed(0)
    model = torch.nn.Linear(8, 1).share_memory()
    optimizer = RMSprop(model.parameters(), flavor=flavor, lr=1e-2).share_memory()
    before = model.weight.detach().clone()
    steps, count = 60, 2
    context = mp.get_context(method)
    reports = run_children(context, workers.hogwild, lambda i: (model, optimizer, steps, i), count)
    assert reports == [("ok", steps)] * count
    state = optimizer.state[model.weight]
    # Both workers stepped the one shared count (a racing increment may be lost).
    assert steps < float(state["step"]) <= steps * count
    assert torch.isfinite(model.weight).all() and not torch.equal(model.weight, before)
    assert torch.isfinite(state["square_avg"]).all()


def test_the_a3c_example_runs():
    # The full run (to an average return of 475) takes minutes: here, 15 seconds of it.
    pytest.importorskip("gymnasium", reason="the example plays gymnasium's CartPole")
    import pathlib
    import subprocess
    import sys

    example = pathlib.Path(__file__).resolve().parents[2] / "examples" / "a3c_cartpole.py"
    done = subprocess.run(
        [sys.executable, str(example), "--workers", "2", "--max-seconds", "15"],
        capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert "shared steps in" in done.stdout and "greedy policy" in done.stdout
