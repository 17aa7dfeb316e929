#!/usr/bin/env bash
# README command 2: environment (if missing) + the test suite, the end-to-end tiny pipeline included.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/env.sh"
cd "$ROOT"
python -m pytest -q -p no:cacheprovider "$@"
