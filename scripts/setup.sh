#!/usr/bin/env bash
# One-command setup for a fresh Debian 12 machine (root, or a user with sudo).
#
# Idempotent: apt runs only when something is missing, pip only when
# pyproject.toml changed since the last successful install (stamp file in .venv).
# System services are never started or enabled: the test fixtures run their own
# throwaway PostgreSQL / Prometheus / Alertmanager on 127.0.0.1.
set -euo pipefail

cd "$(dirname "$0")/.."

log() { printf 'setup: %s\n' "$*" >&2; }

if [ "$(id -u)" -eq 0 ]; then
    SUDO=()
elif command -v sudo >/dev/null 2>&1; then
    SUDO=(sudo)
else
    SUDO=()
fi

PG_BIN=/usr/lib/postgresql/15/bin
PYTHON=${PYTHON:-python3}

# ---------------------------------------------------------------- Debian packages

missing=()
[ -x "$PG_BIN/initdb" ] && [ -x "$PG_BIN/pg_ctl" ] || missing+=(postgresql-15)
command -v prometheus >/dev/null 2>&1 || missing+=(prometheus)
command -v prometheus-alertmanager >/dev/null 2>&1 || missing+=(prometheus-alertmanager)
# A real browser for the tests that open pages (the feature report), driven by selenium.
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v chromedriver >/dev/null 2>&1 || missing+=(chromium-driver)
# Only the client, to validate docker-compose.yml in the tests (no engine needed).
docker compose version >/dev/null 2>&1 || command -v docker-compose >/dev/null 2>&1 || missing+=(docker-compose)
if ! command -v "$PYTHON" >/dev/null 2>&1; then
    missing+=(python3 python3-venv)
elif [ ! -x .venv/bin/python ] && ! "$PYTHON" -c 'import ensurepip' >/dev/null 2>&1; then
    missing+=(python3-venv) # Debian splits ensurepip (needed by venv) out of python3
fi

apt_updated=0
apt_install() {
    if [ "$(id -u)" -ne 0 ] && [ ${#SUDO[@]} -eq 0 ]; then
        log "need root or sudo to install: $*"
        exit 1
    fi
    if [ "$apt_updated" -eq 0 ]; then
        log "apt-get update"
        "${SUDO[@]}" apt-get update -qq
        apt_updated=1
    fi
    # Block service start-up during the install (Debian's policy-rc.d convention);
    # many containers already ship one, and then we leave it alone.
    local made_policy=0
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' | "${SUDO[@]}" tee /usr/sbin/policy-rc.d >/dev/null
        "${SUDO[@]}" chmod 755 /usr/sbin/policy-rc.d
        made_policy=1
    fi
    log "apt-get install $*"
    local rc=0
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -qq --no-install-recommends "$@" >/dev/null || rc=$?
    if [ "$made_policy" -eq 1 ]; then
        "${SUDO[@]}" rm -f /usr/sbin/policy-rc.d
    fi
    [ "$rc" -eq 0 ] || exit "$rc"
    # Package scripts enable units on systemd hosts; we only want the binaries.
    if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
        local units=()
        for pkg in "$@"; do
            case "$pkg" in
                postgresql-15) units+=(postgresql.service) ;;
                prometheus) units+=(prometheus.service) ;;
                prometheus-alertmanager) units+=(prometheus-alertmanager.service) ;;
            esac
        done
        if [ ${#units[@]} -gt 0 ]; then
            "${SUDO[@]}" systemctl disable --now "${units[@]}" >/dev/null 2>&1 || true
        fi
    fi
}

if [ ${#missing[@]} -gt 0 ]; then
    apt_install "${missing[@]}"
fi

# ---------------------------------------------------------------- Python venv

venv_ok() { [ -x .venv/bin/python ] && .venv/bin/python -c 'import sys' >/dev/null 2>&1; }

if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    log "$PYTHON is missing or older than 3.11 (set PYTHON=/path/to/python3.11)"
    exit 1
fi

if ! venv_ok; then
    rm -rf .venv
    log "creating .venv with $($PYTHON --version 2>&1)"
    if ! "$PYTHON" -m venv .venv >/dev/null 2>&1; then
        rm -rf .venv
        apt_install python3-venv
        "$PYTHON" -m venv .venv
    fi
fi

stamp=".venv/.installed-$(sha256sum pyproject.toml | cut -c1-16)"
if [ ! -e "$stamp" ]; then
    log "pip install -e .[test,broker,evidently,confluent]"
    .venv/bin/python -m pip install -q --disable-pip-version-check -e ".[test,broker,evidently,confluent]"
    rm -f .venv/.installed-*
    touch "$stamp"
fi

log "ok"
