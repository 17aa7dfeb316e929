#!/usr/bin/env bash
# README command 1: environment + the whole study (`dvc repro`) on the current params.yaml.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/env.sh"
cd "$ROOT"
dvc repro "$@"
echo; cat reports/tables/report/table1.md
echo "the study's report: reports/REPORT.md   metrics: dvc metrics show   tables: reports/tables/   figures: reports/figures/"
