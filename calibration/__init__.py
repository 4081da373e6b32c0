"""Calibration: calibration-aware losses, the LogitCalibrator, and the temperature sweep."""

from __future__ import annotations

from typing import Any

from calibration.calibrator import LogitCalibrator
from calibration.losses import CompositeLoss, FocalBrierLoss, ScoreSurrogateLoss, build_loss

__all__ = [
    "CompositeLoss",
    "FocalBrierLoss",
    "LogitCalibrator",
    "ScoreSurrogateLoss",
    "build_loss",
    "choose_temperature",
    "temperature_sweep",
]


def __getattr__(name: str) -> Any:
    # Imported lazily: an eager import of calibration.sweep here would make
    # `python -m calibration.sweep` warn that the module was already in sys.modules.
    if name in ("temperature_sweep", "choose_temperature"):
        from calibration import sweep

        return getattr(sweep, name)
    raise AttributeError(f"module 'calibration' has no attribute {name!r}")
