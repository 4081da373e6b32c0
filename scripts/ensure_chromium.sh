#!/usr/bin/env bash
# Idempotent: install Debian's headless-capable Chromium when no Chromium is on PATH.
# tests/test_report.py opens every evaluation's report.html in it (console errors, network requests,
# a screenshot). Without it those browser tests are skipped, saying why; nothing else needs it, so a
# machine where it cannot be installed gets a warning, not a failed set-up.
set -euo pipefail
for browser in chromium chromium-headless-shell chromium-browser google-chrome; do
  if command -v "$browser" >/dev/null 2>&1; then
    exit 0
  fi
done
warn() { echo "warning: $1; the report.html browser tests will be skipped" >&2; exit 0; }
command -v apt-get >/dev/null 2>&1 || warn "no Chromium and no apt-get to install it (install chromium yourself)"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo -n"; fi
export DEBIAN_FRONTEND=noninteractive
install() { $SUDO apt-get install -y -q --no-install-recommends chromium >/dev/null; }
# the package lists may be missing on a fresh machine: update them only when the first try fails
if ! install 2>/dev/null && ! { $SUDO apt-get update -q >/dev/null && install; }; then
  warn "could not install chromium with apt-get (root or passwordless sudo needed): apt-get install chromium"
fi
command -v chromium >/dev/null 2>&1 || warn "apt-get installed chromium but it is not on PATH"
