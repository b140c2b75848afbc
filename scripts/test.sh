#!/usr/bin/env bash
# Install everything the test suite needs (Python packages in .venv, Debian's chromium and
# chromium-driver for the browser tests) and run the whole suite.
#   bash scripts/test.sh [pytest args...]
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/_venv.sh
if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
    echo "tickscope: installing Debian chromium and chromium-driver for the browser tests" >&2
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium chromium-driver >/dev/null
fi
ensure_venv test
exec .venv/bin/python -m pytest "$@"
