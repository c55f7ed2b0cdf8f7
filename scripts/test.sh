#!/usr/bin/env bash
# Run the whole test suite on this machine: installs what is missing first (see setup.sh).
# Extra arguments go to pytest, e.g. `scripts/test.sh tests/shared -x`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export PYTHONHASHSEED=0
exec .venv/bin/python -m pytest "${@:-tests}"
