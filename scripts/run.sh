#!/usr/bin/env bash
# Install tickscope into .venv and start the dashboard (default: the embedded local
# exchange, offline). Any tickscope arguments pass through:
#   bash scripts/run.sh [--replay FILE ...] [--speed X] [--vendor binance] ...
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/_venv.sh
ensure_venv
exec .venv/bin/tickscope "$@"
