#!/usr/bin/env bash
# Set up everything (including test tools) and run the whole test suite: lint, types, tests.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --dev

echo "==> ruff"
.venv/bin/ruff check .
echo "==> mypy"
.venv/bin/mypy
echo "==> pytest"
.venv/bin/pytest "$@"
echo "==> benchmark smoke runs (--quick: they check that measuring works, not the numbers)"
.venv/bin/python -m bench.latency --quick
.venv/bin/python -m bench.background --quick
