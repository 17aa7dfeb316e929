#!/usr/bin/env bash
# Here (a machine with the package index and ../shared/data/MTSD), once: what scripts/gpu_study.sh
# carries to the GPU machine, in build/gpu (ignored by git, ~52 MiB, under the 64 MiB a device run
# may carry): the PyWavelets and ruamel.yaml wheels for its Python 3.12, and MTSD prepared at 256 px
# (DifferNet split, held-out normals, cached DWT entropies) packed losslessly into one file.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/env.sh"
cd "$ROOT"
mkdir -p build/gpu/wheels
python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d build/gpu/wheels \
  "PyWavelets>=1.6" \
  "ruamel.yaml==$(python -c 'import importlib.metadata as m; print(m.version("ruamel.yaml"))')"
# (the package index has PyWavelets for CPython 3.12 up to 1.8.0: the same haar DWT as our 1.9.0)
python -m pvqae.benchmark.budgeted prepare --profile paper --profile mtsd --out build/gpu/mtsd_256px
python -m pvqae.benchmark.budgeted pack --prepared build/gpu/mtsd_256px --out build/gpu/mtsd_256px.npz
rm -rf build/gpu/mtsd_256px
du -sh build/gpu
