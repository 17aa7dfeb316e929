#!/usr/bin/env bash
# Create .venv (Python 3.11) and install pvqae with its pinned dependencies, once:
# reinstalls only when pyproject.toml changes. Sourced by repro.sh and test.sh.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-python3.11}"
command -v "$PY" >/dev/null 2>&1 || PY=python3
if [ ! -x "$ROOT/.venv/bin/python" ]; then
  echo "creating $ROOT/.venv with $($PY --version)"
  "$PY" -m venv "$ROOT/.venv"
fi
stamp="$ROOT/.venv/.pvqae-installed"
want="$(sha256sum "$ROOT/pyproject.toml" | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  "$ROOT/.venv/bin/python" -m pip install -q --upgrade pip
  # torch first and alone, so that the pinned CPU build is the one installed
  "$ROOT/.venv/bin/python" -m pip install -q "torch==2.13.0"
  "$ROOT/.venv/bin/python" -m pip install -q -e "$ROOT[dev]"
  echo "$want" > "$stamp"
fi
export PATH="$ROOT/.venv/bin:$PATH"
export PYTHONUNBUFFERED=1
