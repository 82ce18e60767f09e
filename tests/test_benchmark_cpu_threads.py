"""benchmarks/cpu_threads.py, behind BENCHMARKS.md's thread hand-off table, still runs."""

import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("numba", reason="the fused CPU kernel needs the fast extra (numba)")

SCRIPT = Path(__file__).parent.parent / "benchmarks" / "cpu_threads.py"


def test_the_script_prints_every_row():
    out = subprocess.run(
        [sys.executable, str(SCRIPT), "--steps", "2", "--rounds", "1"],
        capture_output=True, text=True, timeout=300, check=True,
    )  # fmt: skip
    rows = [line for line in out.stdout.splitlines() if line.startswith("| ")][1:]
    names = [row.split("|")[1].strip() for row in rows]
    from rmsprop.kernels import numba_cpu

    tbb = ["two threads, TBB", "TBB round trip, no work"]
    assert names == [
        "one thread, whole step",
        "one thread's share alone",
        "two threads, thread pool",
        "pool round trip, no work",
        *(tbb if numba_cpu.threading_layer() == "tbb" else []),
    ]
    assert all(float(row.split("|")[2]) > 0 for row in rows)


def test_address_table_points_at_its_arrays():
    import numpy as np

    from rmsprop.benchmark.cpu import address_table

    table, arrays = address_table([5, 3])
    assert table.numels == [5, 3] and len(arrays) == 6
    assert all(a.dtype == np.float32 for a in arrays)
    # Rows 0, 1, 2: each tensor's θ, g, v; no m or b for the plain rule.
    assert table.addresses[:3].tolist() == [
        [arrays[0].ctypes.data, arrays[3].ctypes.data],
        [arrays[1].ctypes.data, arrays[4].ctypes.data],
        [arrays[2].ctypes.data, arrays[5].ctypes.data],
    ]
    assert not table.addresses[3:].any() and table.coefficients.any()
