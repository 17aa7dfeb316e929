#!/usr/bin/env bash
# README command 2: environment (if missing) + the test suite, the end-to-end tiny pipeline included.
# Two pytest workers, one per core of the 2-core CI machine (--dist loadfile: a file stays in one
# worker, so the end-to-end file's pipeline copy is built once); one torch thread per process,
# as two workers with two threads each on two cores thrash. PVQAE_TEST_WORKERS=0 runs serially.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/env.sh"
cd "$ROOT"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}" MKL_NUM_THREADS="${MKL_NUM_THREADS:-1}"
python -m pytest -q -p no:cacheprovider -n "${PVQAE_TEST_WORKERS:-2}" --dist loadfile "$@"
