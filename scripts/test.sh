#!/usr/bin/env bash
# Set up a virtual environment with the dev extras and run the test suite. Used by the README and by CI.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
# the CPU build of PyTorch that lies on this project's machines; a plain `torch` would pull a multi-GB CUDA build
.venv/bin/python -m pip install --quiet "torch==${WHYSPIKE_TORCH_VERSION:-2.13.0}"
.venv/bin/python -m pip install --quiet -e '.[dev]'
# the HTML report is tested in a real headless Chromium (Debian's package); without root or apt that test is skipped
if ! command -v chromium >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    (apt-get update -qq && apt-get install -y -qq chromium) >/dev/null 2>&1 \
        || echo "chromium could not be installed: the browser test of the HTML report will be skipped" >&2
fi
# pytest exits 5 when it collects nothing: that is a failure here, as is any other non-zero code
.venv/bin/python -m pytest -q "$@"
