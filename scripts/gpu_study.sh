#!/usr/bin/env bash
# The paper's scale on a GPU in under 10 minutes (issue 15; README "Running at paper scale on a
# GPU"): PVQAE with the paper profile (256 px, ch 128, the paper's architecture) and the static VQ
# on MTSD (DifferNet split), each under the wall-clock training budget of params.yaml's
# `budgeted` section (steps planned from the measured steps per second), the prior and the
# evaluation -> $OUT (else reports/benchmarks)/accuracy_mtsd_gpu.json and .log.
#
#   here, once:          bash scripts/gpu_prepare.sh      (wheels + MTSD packed at 256 px in build/gpu)
#   on the GPU machine:  bash scripts/gpu_study.sh        (device tool: carry ["build/gpu"])
#   test mode (CPU):     bash scripts/gpu_study.sh --tiny (synthetic tiny data, seconds; the test suite)
#
# Needs only python with torch, numpy, scipy, scikit-learn, Pillow, PyYAML and tqdm: PyWavelets
# and ruamel.yaml come from the wheels in build/gpu/wheels when missing (unpacked, no pip, no
# network); no dvc, papermill or jupytext. Extra arguments go to `python -m pvqae.benchmark.budgeted run`, e.g.
# --set budgeted.seconds=120.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PY="${PYTHON:-python3}"
TINY=0
if [ "${1:-}" = "--tiny" ]; then TINY=1; shift; fi
OUTDIR="${OUT:-$ROOT/reports/benchmarks}"
mkdir -p "$OUTDIR"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1

if ! "$PY" -c "import pywt, ruamel.yaml" 2>/dev/null; then
  # a wheel is a zip of the installed files: unpacked onto PYTHONPATH it needs neither pip nor a network
  if ! ls "$ROOT"/build/gpu/wheels/*.whl >/dev/null 2>&1; then
    echo "PyWavelets / ruamel.yaml missing and no wheels in build/gpu/wheels: run bash scripts/gpu_prepare.sh" >&2
    exit 2
  fi
  SITE="$ROOT/build/gpu/site"
  "$PY" -c "import sys, zipfile; [zipfile.ZipFile(w).extractall(sys.argv[1]) for w in sys.argv[2:]]" \
    "$SITE" "$ROOT"/build/gpu/wheels/*.whl
  export PYTHONPATH="$PYTHONPATH:$SITE"
  "$PY" -c "import pywt, ruamel.yaml" || { echo "the wheels in build/gpu/wheels do not import with $PY" >&2; exit 2; }
fi

if [ "$TINY" = 1 ]; then
  WORK="$(mktemp -d)"
  trap 'rm -rf "$WORK"' EXIT
  export PVQAE_RESUME_ROOT="$WORK/resume"
  "$PY" -m pvqae.benchmark.budgeted prepare --profile tiny --out "$WORK/prepared"
  "$PY" -m pvqae.benchmark.budgeted pack --prepared "$WORK/prepared" --out "$WORK/data.npz"
  "$PY" -m pvqae.benchmark.budgeted run --profile tiny --pack "$WORK/data.npz" --work "$WORK/run" --quiet \
    --set budgeted.seconds=2 --set budgeted.prior_seconds=1 --set budgeted.calibration_steps=2 \
    --out "$OUTDIR/accuracy_synthetic_tiny_budgeted.json" "$@" 2>&1 | tee "$OUTDIR/accuracy_synthetic_tiny_budgeted.log"
  exit 0
fi

PACK="$ROOT/build/gpu/mtsd_256px.npz"
if [ ! -f "$PACK" ]; then
  echo "missing $PACK: run bash scripts/gpu_prepare.sh on a machine with ../shared/data/MTSD" >&2
  exit 2
fi
"$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')"
export PVQAE_RESUME_ROOT="$ROOT/build/gpu/resume"
"$PY" -m pvqae.benchmark.budgeted run --profile paper --profile mtsd --pack "$PACK" --work "$ROOT/build/gpu/run" \
  --out "$OUTDIR/accuracy_mtsd_gpu.json" "$@" 2>&1 | tee "$OUTDIR/accuracy_mtsd_gpu.log"
