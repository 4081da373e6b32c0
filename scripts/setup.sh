#!/usr/bin/env bash
# Idempotent set-up: a virtual environment in .venv with the pinned torch stack and this package.
# torch 2.14.1 / torchvision 0.29.1 are pinned so pip never resolves a different (multi-GB) torch;
# torchaudio 2.11.0 has no torch requirement in its metadata and runs beside them.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/ensure_ffmpeg.sh  # the benchmark's H.264 pass (and its bit-exact tests) run the ffmpeg program
bash scripts/ensure_chromium.sh  # report.html is tested in a real browser (headless Chromium)
bash scripts/ensure_postgresql.sh  # sweeps shared through PostgreSQL are tested against a real server
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
PIP=".venv/bin/python -m pip"
want() { .venv/bin/python - "$@" <<'PY'
import sys
from importlib import metadata
for spec in sys.argv[1:]:
    name, version = spec.split("==")
    try:
        if metadata.version(name) != version:
            sys.exit(1)
    except metadata.PackageNotFoundError:
        sys.exit(1)
PY
}
if ! want torch==2.14.1 torchvision==0.29.1 torchaudio==2.11.0; then
  $PIP install --quiet --upgrade pip
  $PIP install --quiet torch==2.14.1 torchvision==0.29.1
  $PIP install --quiet --no-deps torchaudio==2.11.0
fi
if ! .venv/bin/python -c "import detectors, calibration, export, pytest, xdist" 2>/dev/null \
   || [ pyproject.toml -nt .venv/.installed ]; then
  $PIP install --quiet -e ".[dev]"
  touch .venv/.installed
fi
echo "environment ready: $(.venv/bin/python -c 'import torch; print("torch", torch.__version__)')"
