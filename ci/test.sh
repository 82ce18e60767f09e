#!/usr/bin/env bash
# The test command: lint, type-check, then the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
ruff check src tests
ruff format --check src tests
mypy
python -m pytest -q "$@"
