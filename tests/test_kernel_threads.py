"""How many threads the fused CPU kernel uses, and that a forked child's kernel still runs."""

from __future__ import annotations

import multiprocessing as mp
import os

import numpy as np
import pytest

from rmsprop.kernels import numba_cpu

needs_numba = pytest.mark.skipif(not numba_cpu.AVAILABLE, reason=numba_cpu.WHY_UNAVAILABLE)


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
