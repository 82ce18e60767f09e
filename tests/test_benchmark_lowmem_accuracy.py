"""benchmarks/lowmem_accuracy.py, behind docs/low-memory.md's accuracy table, still runs."""

import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch", reason="the script trains with rmsprop.torch.RMSprop")
pytest.importorskip("sklearn", reason="the digits task reads scikit-learn's bundled digits")

SCRIPT = Path(__file__).parent.parent / "benchmarks" / "lowmem_accuracy.py"


def test_the_quick_run_prints_every_row():
    out = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick"],
        capture_output=True, text=True, timeout=300, check=True,
    )  # fmt: skip
    rows = [line.split("|")[1:-1] for line in out.stdout.splitlines() if line.startswith("| ")]
    cells = [[cell.strip() for cell in row] for row in rows[1:]]  # past the header
    assert [row[:2] for row in cells] == [
        [task, state]
        for task in ("digits", "chars")
        for state in ("float32", "bfloat16, stochastic", "8-bit")
    ]
    state_bytes = {(row[0], row[1]): float(row[-1]) for row in cells}
    assert state_bytes["chars", "float32"] == 4.0
    assert state_bytes["chars", "bfloat16, stochastic"] == 2.0
    # The chars model's large layers are quantized; the digits' small layer and biases aren't.
    assert state_bytes["chars", "8-bit"] < 1.1
    assert 1.0 < state_bytes["digits", "8-bit"] < 2.0
