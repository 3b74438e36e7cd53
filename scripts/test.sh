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
if [ "$#" -gt 0 ]; then
    .venv/bin/pytest "$@"
else
    # One pytest process per test file: every in-process node loads its own LLM and recognisers, and one
    # process for the whole suite grew past this machine's 24 GB before its end (killed by the OOM killer).
    failed=()
    for file in tests/test_*.py; do
        .venv/bin/pytest -q "$file" || failed+=("$file")
    done
    if [ "${#failed[@]}" -gt 0 ]; then
        echo "==> pytest failed in: ${failed[*]}"
        exit 1
    fi
fi
echo "==> benchmark smoke runs (--quick: they check that measuring works, not the numbers)"
.venv/bin/python -m bench.latency --quick
.venv/bin/python -m bench.background --quick
.venv/bin/python -m bench.sip --quick
.venv/bin/python -m bench.worker --quick
# TimeSpeak, CueSpeak, turn-taking, latency: a few cases per suite, both models (a few minutes)
.venv/bin/microturn bench all --quick
