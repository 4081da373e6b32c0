"""Calibration: calibration-aware losses, the LogitCalibrator, and the temperature sweep."""

from calibration.calibrator import LogitCalibrator
from calibration.losses import CompositeLoss, FocalBrierLoss, ScoreSurrogateLoss, build_loss
from calibration.sweep import choose_temperature, temperature_sweep

__all__ = [
    "CompositeLoss",
    "FocalBrierLoss",
    "LogitCalibrator",
    "ScoreSurrogateLoss",
    "build_loss",
    "choose_temperature",
    "temperature_sweep",
]
