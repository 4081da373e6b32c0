#!/usr/bin/env bash
# Idempotent: install an ffmpeg executable (Debian's package) when none is on PATH.
# The benchmark's H.264 robustness pass runs the ffmpeg command line (and decodes audio with it when
# torchcodec is missing); the tests that hold this project to it bit for bit need the same program.
set -euo pipefail
if command -v ffmpeg >/dev/null 2>&1; then
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "error: no ffmpeg executable and no apt-get to install it: install ffmpeg (e.g. brew install ffmpeg)" >&2
  exit 1
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo -n"; fi
export DEBIAN_FRONTEND=noninteractive
install() { $SUDO apt-get install -y -q --no-install-recommends ffmpeg >/dev/null; }
# the package lists may be missing on a fresh machine: update them only when the first try fails
if ! install 2>/dev/null && ! { $SUDO apt-get update -q >/dev/null && install; }; then
  echo "error: could not install ffmpeg with apt-get (root or passwordless sudo needed): apt-get install ffmpeg" >&2
  exit 1
fi
command -v ffmpeg >/dev/null 2>&1 || { echo "error: apt-get installed ffmpeg but it is not on PATH" >&2; exit 1; }
