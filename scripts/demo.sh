#!/usr/bin/env bash
# Set up a virtual environment, then `whyspike demo`: the seed article's three examples trained, recorded,
# diagnosed, probed and reported (what the article predicted, what happened, why), then every bundled real training
# log (../shared/real-logs) diagnosed.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
# the CPU build of PyTorch that lies on this project's machines; a plain `torch` would pull a multi-GB CUDA build
.venv/bin/python -m pip install --quiet "torch==${WHYSPIKE_TORCH_VERSION:-2.13.0}"
.venv/bin/python -m pip install --quiet -e '.[torch,keras]'
.venv/bin/whyspike demo --out "${WHYSPIKE_DEMO_OUT:-whyspike-demo}"
LOGS=${WHYSPIKE_REAL_LOGS:-../shared/real-logs}
if [ -d "$LOGS" ]; then
  for f in "$LOGS"/*/*.log.txt; do
    echo
    .venv/bin/whyspike diagnose "$f"
  done
fi
