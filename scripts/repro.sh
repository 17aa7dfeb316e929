#!/usr/bin/env bash
# README command 1: environment + the whole study (`dvc repro`) on the current params.yaml.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/env.sh"
cd "$ROOT"
dvc repro "$@"
echo; cat reports/tables/evaluate/main.md reports/tables/ablations/table3_priors.md
echo "all metrics: dvc metrics show   tables: reports/tables/   figures: reports/figures/"
