"""How many threads the fused CPU kernel uses and which ones (Numba's TBB layer or the Python
pool), and that its steps survive fork, spawn, forkserver and two Python threads at once.

Each child process and thread runs under a timeout: a hang fails the test."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import queue as queues
import subprocess
import sys
import threading
from importlib import metadata

import numpy as np
import pytest

from rmsprop import Config
from rmsprop._lowering import coefficients
from rmsprop.kernels import numba_cpu

needs_numba = pytest.mark.skipif(not numba_cpu.AVAILABLE, reason=numba_cpu.WHY_UNAVAILABLE)
TIMEOUT = 60  # seconds a child process or thread may take
METHODS = [m for m in ("fork", "spawn", "forkserver") if m in mp.get_all_start_methods()]
BIG = 1 << 19  # over SERIAL_BELOW and SERIAL_BELOW_POOL: two threads take it


@pytest.mark.parametrize(
    ("environment", "affinity", "quota", "limit", "expected"),
    [
        (None, 16, 1 << 30, None, 16),  # every CPU the process may use
        (None, 16, 4, None, 4),  # the cgroup's quota
        (None, 16, 1 << 30, 1, 1),  # torch.get_num_threads() (an A3C worker's 1)
        (None, 2, 1 << 30, 8, 2),  # the affinity, below the framework's setting
        ("3", 16, 4, 1, 3),  # RMSPROP_NUM_THREADS is the user's word: it wins
    ],
)
def test_threads_follow_the_environment_affinity_quota_and_limit(
    monkeypatch, environment, affinity, quota, limit, expected
):
    if environment is None:
        monkeypatch.delenv("RMSPROP_NUM_THREADS", raising=False)
    else:
        monkeypatch.setenv("RMSPROP_NUM_THREADS", environment)
    monkeypatch.setattr(numba_cpu, "_affinity", lambda: affinity)
    monkeypatch.setattr(numba_cpu, "_CGROUP_CPUS", quota)
    assert numba_cpu.num_threads(limit=limit) == expected


@pytest.mark.parametrize(
    ("text", "cpus"), [("200000 100000\n", 2), ("150000 100000", 2), ("max 100000", 1 << 30)]
)
def test_the_cgroup_quota_is_read_from_cpu_max(tmp_path, text, cpus):
    path = tmp_path / "cpu.max"
    path.write_text(text)
    assert numba_cpu._cgroup_cpus(str(path)) == cpus
    assert numba_cpu._cgroup_cpus(str(tmp_path / "missing")) == 1 << 30


def _step_in_child(queue) -> None:
    try:
        os.environ["RMSPROP_NUM_THREADS"] = "2"
        queue.put(_step_numpy(2.0))
    except BaseException as error:
        queue.put(repr(error))


def _step_numpy(fill: float) -> float:
    import rmsprop.numpy as rnp

    w = np.ones(1 << 19, np.float32)  # over SERIAL_BELOW: the thread pool takes it
    opt = rnp.RMSprop([w], fused=True, lr=0.1)
    opt.step([np.full_like(w, fill)])
    return float(w[0])


@needs_numba
@pytest.mark.skipif("fork" not in mp.get_all_start_methods(), reason="fork is Linux's")
def test_numpy_s_fused_step_runs_in_a_child_forked_after_a_threaded_step(monkeypatch):
    monkeypatch.setenv("RMSPROP_NUM_THREADS", "2")
    expected = _step_numpy(2.0)  # the parent's pool now has a thread
    context = mp.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=_step_in_child, args=(queue,))
    child.start()
    try:
        result = queue.get(timeout=60)
    finally:
        child.join(5)
        if child.is_alive():
            child.kill()
    assert result == expected


# ---- which threads take the tables ----------------------------------------------------


def _table_step(fill: float) -> tuple[float, str]:
    """One two-thread step of a one-tensor float32 table (θ = 1, g = ``fill``): the new θ[0],
    and the layer that took it."""
    w, g, v = np.ones(BIG, np.float32), np.full(BIG, fill, np.float32), np.zeros(BIG, np.float32)
    table = numba_cpu.Table(np.float32, [BIG])
    table.addresses[:3, 0] = [w.ctypes.data, g.ctypes.data, v.ctypes.data]
    table.set_coefficients(coefficients(Config(lr=0.1), 1))
    numba_cpu.run((), [table], threads=2)
    return float(w[0]), numba_cpu.threading_layer()


def _table_step_in_child(spread: str, results) -> None:
    try:
        os.environ["RMSPROP_CPU_THREADS"] = spread  # (a forkserver child has its server's)
        results.put(_table_step(2.0))
    except BaseException as error:
        results.put(repr(error))


def _report_from_child(context, spread: str) -> object:
    # A spawned or forkserver child imports this module by its name under the repository's
    # root (pytest's importlib mode): the parent's sys.path, which the child takes, has it.
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if root not in sys.path:
        sys.path.append(root)
    results = context.Queue()
    child = context.Process(target=_table_step_in_child, args=(spread, results))
    child.start()
    try:
        return results.get(timeout=TIMEOUT)
    except queues.Empty:
        pytest.fail(f"a {context.get_start_method()} child hung (no report in {TIMEOUT} s)")
    finally:
        child.join(5)
        if child.is_alive():
            child.kill()
            child.join()


def require_tbb() -> None:
    """Skips without the ``tbb`` package; with it, the tables must go to TBB's threads."""
    try:
        metadata.version("tbb")
    except metadata.PackageNotFoundError:
        pytest.skip("the tbb package is not installed: the Python pool takes every step")
    assert numba_cpu.threading_layer() == "tbb", "tbb is installed, yet Numba's TBB is not used"


@needs_numba
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("spread", ["auto", "pool"])
def test_a_child_steps_after_the_parent_s_two_thread_table_step(monkeypatch, method, spread):
    monkeypatch.setenv("RMSPROP_CPU_THREADS", spread)
    if spread == "auto":
        require_tbb()
    expected = _table_step(2.0)  # the parent's threads (TBB's or the pool's) now run
    assert expected[1] == ("tbb" if spread == "auto" else "pool")
    assert _report_from_child(mp.get_context(method), spread) == expected


@needs_numba
@pytest.mark.skipif("fork" not in mp.get_all_start_methods(), reason="fork is Linux's")
def test_a_child_forked_from_another_python_thread_keeps_to_the_pool(monkeypatch):
    # Numba restarts TBB in a child only after a fork from the thread that started TBB.
    monkeypatch.setenv("RMSPROP_CPU_THREADS", "auto")
    require_tbb()
    value, _ = _table_step(2.0)
    reports: list[object] = []
    forker = threading.Thread(
        target=lambda: reports.append(_report_from_child(mp.get_context("fork"), "auto"))
    )
    forker.start()
    forker.join(TIMEOUT + 10)
    assert not forker.is_alive() and reports == [(value, "pool")]


@needs_numba
def test_two_python_threads_step_their_own_tables_at_once(monkeypatch):
    monkeypatch.setenv("RMSPROP_CPU_THREADS", "auto")
    require_tbb()
    steps = 20
    launches = _spy_on_launches(monkeypatch)
    fills = (2.0, -3.0)
    tables = [_table(BIG + 1000 * k, fill) for k, fill in enumerate(fills)]
    alone = [_table(BIG + 1000 * k, fill) for k, fill in enumerate(fills)]
    start = threading.Barrier(2)

    def stepper(table) -> None:
        start.wait()
        for _ in range(steps):
            numba_cpu.run((), [table[0]], threads=2)

    threads = [threading.Thread(target=stepper, args=(t,)) for t in tables]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(TIMEOUT)
    assert not any(thread.is_alive() for thread in threads), "a stepping thread hung"
    assert launches["tbb"] == 2 * steps
    for table, _ in alone:
        for _ in range(steps):
            numba_cpu.run((), [table], threads=1)
    for (_, got), (_, want) in zip(tables, alone):
        for a, b in zip(got, want):
            np.testing.assert_array_equal(a, b)


def _table(n: int, fill: float):
    """A one-tensor float32 table over fresh θ, g, v (the arrays come with it, kept alive)."""
    arrays = [np.linspace(-1, 1, n, dtype=np.float32), np.full(n, fill, np.float32)]
    arrays.append(np.zeros(n, np.float32))
    table = numba_cpu.Table(np.float32, [n])
    table.addresses[:3, 0] = [a.ctypes.data for a in arrays]
    table.set_coefficients(coefficients(Config(lr=0.01), 1))
    return table, arrays


def _spy_on_launches(monkeypatch):
    launches = {"tbb": 0}
    kernel = numba_cpu.parallel_table_kernel
    lock = threading.Lock()

    def counted(*args):
        with lock:
            launches["tbb"] += 1
        kernel(*args)

    monkeypatch.setattr(numba_cpu, "parallel_table_kernel", counted)
    return launches


@needs_numba
def test_rmsprop_cpu_threads_pool_keeps_the_tables_on_the_pool(monkeypatch):
    monkeypatch.setenv("RMSPROP_CPU_THREADS", "pool")
    launches = _spy_on_launches(monkeypatch)
    monkeypatch.setattr(numba_cpu, "_pool", None)
    assert _table_step(2.0)[1] == "pool"
    assert launches["tbb"] == 0 and numba_cpu._pool is not None
    monkeypatch.setenv("RMSPROP_CPU_THREADS", "tbb")
    with pytest.raises(ValueError, match="RMSPROP_CPU_THREADS must be 'auto' or 'pool'"):
        numba_cpu.num_threads()


@needs_numba
@pytest.mark.parametrize(
    ("layer", "priority", "takes_tbb"),
    [
        ("default", ["tbb", "omp", "workqueue"], True),
        ("default", ["omp", "tbb", "workqueue"], False),  # GNU OpenMP would start
        ("tbb", ["omp", "tbb", "workqueue"], True),
        ("safe", ["tbb", "omp", "workqueue"], True),
        ("forksafe", ["tbb", "omp", "workqueue"], True),
        ("omp", ["tbb", "omp", "workqueue"], False),
        ("workqueue", ["tbb", "omp", "workqueue"], False),
    ],
)
def test_the_user_s_numba_threading_layer_is_respected(monkeypatch, layer, priority, takes_tbb):
    import numba

    monkeypatch.setattr(numba.config, "THREADING_LAYER", layer)
    monkeypatch.setattr(numba.config, "THREADING_LAYER_PRIORITY", priority)
    assert numba_cpu._numba_picks_tbb_first() is takes_tbb


@needs_numba
def test_only_the_main_thread_starts_numba_s_layer(monkeypatch):
    monkeypatch.setattr(numba_cpu, "_running_layer", lambda: None)
    monkeypatch.setattr(numba_cpu, "_numba_picks_tbb_first", lambda: True)
    monkeypatch.setattr(numba_cpu, "_tbb_loaded", lambda: True)
    decided: list[object] = []
    thread = threading.Thread(target=lambda: decided.append(numba_cpu._decide_tbb()))
    thread.start()
    thread.join(TIMEOUT)
    assert decided == [None]  # not decided: the pool, until the main thread asks


# A fresh process: step a big table on two threads, then say which layers ran.
_FRESH_STEP = """
import json, numba, sys
sys.path[:0] = {path!r}
import test_kernel_threads as t
from rmsprop.kernels import numba_cpu
{prelude}
value, layer = t._table_step(2.0)
try:
    numba_layer = numba.threading_layer()
except ValueError:
    numba_layer = None
print(json.dumps([value, layer, numba_layer]))
"""


def _fresh_step(prelude: str = "", **environment: str) -> list[object]:
    code = _FRESH_STEP.format(path=[os.path.dirname(__file__)], prelude=prelude)
    env = {**os.environ, "RMSPROP_CPU_THREADS": "auto", **environment}
    env.pop("LD_LIBRARY_PATH", None)  # libtbb must be found without it
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1])


@needs_numba
@pytest.mark.parametrize("layer", ["omp", "workqueue"])
def test_a_user_s_other_layer_keeps_the_pool_and_is_never_started_by_us(layer):
    value, ours, numba_layer = _fresh_step(NUMBA_THREADING_LAYER=layer)
    assert (ours, numba_layer) == ("pool", None)  # (GNU OpenMP did not start)
    assert value == _table_step(2.0)[0]


@needs_numba
def test_without_tbb_the_pool_takes_the_tables():
    missing = (
        "numba_cpu._TBB_LIBRARY = dict.fromkeys(numba_cpu._TBB_LIBRARY, 'libtbb-missing.so')\n"
        "numba_cpu._installed_tbb = lambda name: None"
    )
    value, ours, numba_layer = _fresh_step(missing)
    assert (ours, numba_layer) == ("pool", None)
    assert value == _table_step(2.0)[0]


@needs_numba
def test_a_fresh_process_takes_tbb_where_installed():
    # (pip puts libtbb where a virtual environment's loader does not look.)
    require_tbb()
    value, ours, numba_layer = _fresh_step()
    assert (ours, numba_layer) == ("tbb", "tbb")
    assert value == _table_step(2.0)[0]


@needs_numba
@pytest.mark.skipif("fork" not in mp.get_all_start_methods(), reason="fork is Linux's")
def test_forks_while_another_python_thread_steps_leave_working_children(monkeypatch):
    # Numba cannot stop TBB's threads before these forks (the stepping thread holds on to
    # TBB: it prints "Unable to join threads"), yet each child's TBB must still run.
    monkeypatch.setenv("RMSPROP_CPU_THREADS", "auto")
    require_tbb()
    value, _ = _table_step(2.0)
    stop = threading.Event()
    table, _arrays = _table(BIG, 1.0)

    def stepper() -> None:
        while not stop.is_set():
            numba_cpu.run((), [table], threads=2)

    busy = threading.Thread(target=stepper)
    busy.start()
    try:
        reports = [_report_from_child(mp.get_context("fork"), "auto") for _ in range(4)]
    finally:
        stop.set()
        busy.join(TIMEOUT)
    assert reports == [(value, "tbb")] * 4
