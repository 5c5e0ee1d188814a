#!/usr/bin/env bash
# Set up a virtual environment with the dev extras and run the test suite. Used by the README and by CI.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e '.[dev]'
# pytest exits 5 when it collects nothing: that is a failure here, as is any other non-zero code
.venv/bin/python -m pytest -q "$@"
