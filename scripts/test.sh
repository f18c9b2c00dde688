#!/usr/bin/env bash
# The test suite, as CI runs it: set up what is missing, lint, then every test
# (unit and integration; the fixtures start their own broker, PostgreSQL,
# Prometheus and Alertmanager on 127.0.0.1). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check .
exec .venv/bin/python -m pytest -q "$@"
