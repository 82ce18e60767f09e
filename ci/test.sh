#!/usr/bin/env bash
# The test command: lint, type-check, the whole test suite, then the fused Triton
# kernel's tests again, through Triton's interpreter.
set -euo pipefail
cd "$(dirname "$0")/.."
ruff check src tests benchmarks
ruff format --check src tests benchmarks
mypy
# The main run; arguments go to it. Any nonzero status ends the script with that
# status (set -e), 5 (no tests collected) included.
python -m pytest -q "$@"
# Triton decides at import whether its kernels are compiled or interpreted, so the
# interpreted run is a process of its own: with TRITON_INTERPRET=1, fused=True runs
# the Triton kernel on CPU tensors. It runs test_torch_triton.py, the kept-step rows and
# the oracle test's torch-fused-triton rows, each reported by name (in the main run the
# Triton tests skip without a GPU, saying why; the kept-step rows there run the Numba
# kernel); -rs lists any that skip here, where they are meant to run. Its own
# status, too, ends the script when nonzero. (No cache: the main run's stays, for --lf.)
TRITON_INTERPRET=1 python -m pytest -q -rs -p no:cacheprovider -k triton \
    tests/torch/test_torch_triton.py tests/torch/test_torch_lowmem_triton.py tests/torch/test_torch_kept_step.py tests/test_oracle.py
