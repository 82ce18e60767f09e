#!/usr/bin/env bash
# The test command: lint, type-check, then the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
ruff check src tests benchmarks
ruff format --check src tests benchmarks
mypy
python -m pytest -q "$@"
