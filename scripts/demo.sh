#!/usr/bin/env bash
# The demo on embedded defaults: a local Kafka-protocol broker, SQLite, ingest,
# monitors, /metrics, Prometheus + Alertmanager when installed, and simulated
# traffic with scheduled incidents. Extra arguments go to `modelmon demo`
# (e.g. --duration 300).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/modelmon demo "$@"
