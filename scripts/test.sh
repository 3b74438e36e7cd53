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
.venv/bin/python -m bench.sip --quick
.venv/bin/python -m bench.worker --quick
# TimeSpeak, CueSpeak, turn-taking, latency: a few cases per suite, both models (a few minutes)
.venv/bin/microturn bench all --quick
