#!/usr/bin/env bash
# The whole Harken loop on this machine: installs what is missing (see setup.sh), then runs
# `harken demo` (extra arguments go to it, e.g. `scripts/demo.sh --duration 600`).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/harken demo "$@"
