#!/usr/bin/env bash
# Idempotent: install Debian's PostgreSQL server programs when initdb/pg_ctl are missing.
# tests/test_sweep.py starts a throwaway server (initdb in a temporary directory) to test sweeps whose
# workers share a PostgreSQL storage. Nothing else needs it, so a machine where it cannot be installed
# gets a warning and that test is skipped, saying why.
set -euo pipefail
LIB=${POSTGRESQL_LIB:-/usr/lib/postgresql}  # Debian keeps the server programs off PATH, in $LIB/<version>/bin
if command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1; then
  exit 0
fi
if compgen -G "$LIB/*/bin/initdb" >/dev/null && compgen -G "$LIB/*/bin/pg_ctl" >/dev/null; then
  exit 0
fi
warn() { echo "warning: $1; the PostgreSQL sweep test will be skipped" >&2; exit 0; }
command -v apt-get >/dev/null 2>&1 || warn "no PostgreSQL and no apt-get to install it (install postgresql yourself)"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo -n"; fi
export DEBIAN_FRONTEND=noninteractive
install() { $SUDO apt-get install -y -q --no-install-recommends postgresql >/dev/null; }
# the package lists may be missing on a fresh machine: update them only when the first try fails
if ! install 2>/dev/null && ! { $SUDO apt-get update -q >/dev/null && install; }; then
  warn "could not install postgresql with apt-get (root or passwordless sudo needed): apt-get install postgresql"
fi
compgen -G "$LIB/*/bin/initdb" >/dev/null || command -v initdb >/dev/null 2>&1 \
  || warn "apt-get installed postgresql but initdb is not in $LIB/*/bin"
