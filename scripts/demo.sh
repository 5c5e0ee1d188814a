#!/usr/bin/env bash
# Set up a virtual environment and diagnose every bundled real training log (../shared/real-logs) and the
# seed article's Example 1 run (tests/data/seed).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e .
LOGS=${WHYSPIKE_REAL_LOGS:-../shared/real-logs}
for f in "$LOGS"/*/*.log.txt; do
  .venv/bin/whyspike diagnose "$f"
  echo
done
.venv/bin/whyspike diagnose tests/data/seed/ex1_lr_decay.csv --steps-per-epoch 32
