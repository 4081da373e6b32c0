"""Temperature sweep on a calibration set, and the ``python -m calibration.sweep RUN_DIR`` command.

The benchmark score is not smooth in the temperature (MCC changes only where predictions flip), so
besides the LBFGS fit of :class:`~calibration.calibrator.LogitCalibrator` a grid sweep that picks the
temperature with the best benchmark score (or NLL, Brier, ECE) on held-out data is useful.

Run-directory contract:

- reads ``RUN_DIR/calibration_logits.safetensors``: ``logits`` [N, C] float32, UNcalibrated, and
  ``labels`` [N] int64 (written by training);
- reads the bias of ``RUN_DIR/calibration.json`` if present (it is kept, only T is swept);
- writes ``RUN_DIR/temperature_sweep.csv``, ``RUN_DIR/plots/temperature_sweep.png`` and
  ``RUN_DIR/calibration.json = {"temperature", "bias", "method": "sweep", "criterion", "previous"}``.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file

from calibration.calibrator import LogitCalibrator
from detectors.atomic import atomic_open, write_json
from detectors.errors import ConfigError
from detectors.metrics import (
    benchmark_score,
    brier,
    expected_calibration_error,
    mcc,
    nll_from_logits,
    predictions_from_logits,
    prob_fake_from_logits,
)
from detectors.plots import temperature_sweep_plot

__all__ = ["DEFAULT_TEMPERATURES", "temperature_sweep", "choose_temperature", "sweep_run_dir", "main"]

#: 65 temperatures, geometric from 1/32 to 8 (ratio 2 ** (1/8)); 1.0 is on the grid exactly. Trained
#: detectors are often underconfident on their raw logits (focal loss), hence the reach below 1.
DEFAULT_TEMPERATURES: tuple[float, ...] = tuple(float(t) for t in 2.0 ** np.linspace(-5.0, 3.0, 65))
COLUMNS = ("temperature", "score", "mcc", "brier", "ece", "nll")
#: criterion -> True when larger is better
CRITERIA = {"score": True, "nll": False, "brier": False, "ece": False}

LOGITS_FILE = "calibration_logits.safetensors"
CALIBRATION_FILE = "calibration.json"
SWEEP_CSV = "temperature_sweep.csv"
SWEEP_PLOT = "plots/temperature_sweep.png"


def temperature_sweep(
    logits: torch.Tensor | np.ndarray,
    labels: torch.Tensor | np.ndarray,
    temperatures: Sequence[float] | None = None,
    bias: Sequence[float] | None = None,
) -> list[dict[str, float]]:
    """Benchmark metrics of ``logits / T + bias`` for every T.

    Returns one row per temperature with ``temperature, score, mcc, brier, ece, nll`` (NLL of the
    model's own C classes; the other metrics on the binary real/fake view).
    """
    z = torch.as_tensor(logits).detach().to("cpu", torch.float64)
    y = torch.as_tensor(labels).detach().to("cpu", torch.long).reshape(-1)
    if z.ndim != 2 or z.shape[0] != y.shape[0]:
        raise ValueError(f"expected logits [N, C] and labels [N], got {tuple(z.shape)} and {tuple(y.shape)}")
    offset = torch.zeros(z.shape[1], dtype=torch.float64)
    if bias is not None:
        offset = torch.as_tensor(bias, dtype=torch.float64)
    if offset.shape != (z.shape[1],):
        raise ValueError(f"bias must have {z.shape[1]} values, got {offset.tolist()}")
    grid = DEFAULT_TEMPERATURES if temperatures is None else tuple(float(t) for t in temperatures)
    if not grid or any(not (math.isfinite(t) and t > 0) for t in grid):
        raise ValueError(f"temperatures must be finite numbers > 0, got {list(grid)}")

    rows = []
    for temperature in grid:
        scaled = z / temperature + offset
        prob = prob_fake_from_logits(scaled)
        mcc_value = mcc(y, predictions_from_logits(scaled))
        brier_value = brier(prob, y)
        rows.append({
            "temperature": temperature,
            "score": benchmark_score(mcc_value, brier_value),
            "mcc": mcc_value,
            "brier": brier_value,
            "ece": expected_calibration_error(y, prob),
            "nll": nll_from_logits(scaled, y),
        })
    return rows


def choose_temperature(rows: Sequence[Mapping[str, float]], criterion: str = "score") -> float:
    """The temperature whose row is best by ``criterion`` (score: highest; nll/brier/ece: lowest).

    Ties (the score is flat where no prediction flips) go to the temperature closest to 1.
    """
    if criterion not in CRITERIA:
        raise ValueError(f"criterion must be one of {sorted(CRITERIA)}, got {criterion!r}")
    if not rows:
        raise ValueError("no sweep rows to choose from")
    sign = -1.0 if CRITERIA[criterion] else 1.0
    values = np.array([sign * float(row[criterion]) for row in rows])
    best = values.min()
    tied = [row for row, value in zip(rows, values) if value <= best + 1e-12 * max(1.0, abs(best))]
    return float(min(tied, key=lambda row: abs(math.log(row["temperature"])))["temperature"])


# ---------------------------------------------------------------------------------- run directory


def _load_calibration_set(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: calibration logits not found; training writes this file (tensors 'logits' [N, C] "
            "and 'labels' [N]) when it fits the calibrator"
        )
    try:
        tensors = load_file(str(path))
    except Exception as error:  # safetensors raises its own error types for corrupt headers
        raise ConfigError(path, None, f"cannot read safetensors file: {error}") from error
    for key in ("logits", "labels"):
        if key not in tensors:
            raise ConfigError(path, key, f"tensor missing; found {sorted(tensors)}")
    logits, labels = tensors["logits"], tensors["labels"].reshape(-1)
    if logits.ndim != 2 or logits.shape[0] != labels.shape[0] or logits.shape[0] == 0:
        raise ConfigError(
            path, "logits", f"expected logits [N, C] and labels [N] with N > 0, got {tuple(logits.shape)} and "
            f"{tuple(labels.shape)}"
        )
    if not torch.isfinite(logits).all():
        raise ConfigError(path, "logits", "contains NaN or inf")
    num_classes = max(2, logits.shape[1])
    if labels.is_floating_point() or labels.min() < 0 or labels.max() >= num_classes:
        raise ConfigError(path, "labels", f"expected integer labels in [0, {num_classes - 1}]")
    return logits, labels.long()


def _read_previous(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        previous = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ConfigError(path, None, f"not valid JSON: {error}") from error
    if not isinstance(previous, dict):
        raise ConfigError(path, None, "expected a JSON object")
    return previous


def sweep_run_dir(
    run_dir: str | Path, criterion: str = "score", temperatures: Sequence[float] | None = None
) -> dict[str, Any]:
    """Sweep the run's calibration set, write the CSV, the plot and calibration.json; return the rows and choice."""
    run_dir = Path(run_dir)
    if criterion not in CRITERIA:
        raise ValueError(f"criterion must be one of {sorted(CRITERIA)}, got {criterion!r}")
    logits, labels = _load_calibration_set(run_dir / LOGITS_FILE)
    calibration_path = run_dir / CALIBRATION_FILE
    previous = _read_previous(calibration_path)

    bias = [0.0] * logits.shape[1]
    if previous is not None:
        # The rules load_detector applies to this file (finite T > 0, C finite biases), checked here so
        # that a broken file is named instead of failing later inside the sweep.
        LogitCalibrator(logits.shape[1]).load_state(previous, source=str(calibration_path))
        if previous.get("bias") is not None:
            bias = [float(b) for b in previous["bias"]]  # float64 as stored, not the float32 parameter

    if temperatures is None and previous is not None:
        # the fitted temperature competes with the grid, so a sweep never does worse than the fit
        temperatures = sorted({*DEFAULT_TEMPERATURES, float(previous["temperature"])})
    rows = temperature_sweep(logits, labels, temperatures, bias=bias)
    chosen = choose_temperature(rows, criterion)

    with atomic_open(run_dir / SWEEP_CSV, "w") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows({key: row[key] for key in COLUMNS} for row in rows)
    temperature_sweep_plot(rows, run_dir / SWEEP_PLOT, chosen=chosen)

    if previous is not None:
        # Keep one level of history only; older generations would nest without bound.
        previous = {key: value for key, value in previous.items() if key != "previous"}
    calibration = {
        "temperature": chosen,
        "bias": bias,
        "method": "sweep",
        "criterion": criterion,
        "previous": previous,
    }
    write_json(calibration_path, calibration)
    return {"rows": rows, "calibration": calibration}


def format_table(rows: Sequence[Mapping[str, float]], chosen: float | None = None) -> str:
    """Fixed-width text table of sweep rows; the chosen temperature is marked with ``*``."""
    lines = [f"  {'T':>8} {'score':>8} {'mcc':>8} {'brier':>8} {'ece':>8} {'nll':>8}"]
    for row in rows:
        mark = "*" if chosen is not None and row["temperature"] == chosen else " "
        lines.append(
            f"{mark} {row['temperature']:8.4f} {row['score']:8.4f} {row['mcc']:8.4f} {row['brier']:8.4f} "
            f"{row['ece']:8.4f} {row['nll']:8.4f}"
        )
    return "\n".join(lines)


def _parse_grid(text: str) -> list[float]:
    try:
        values = [float(part) for part in text.split(",") if part.strip()]
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"--grid expects comma-separated numbers, got {text!r}") from error
    if not values or any(not (math.isfinite(v) and v > 0) for v in values):
        raise argparse.ArgumentTypeError(f"--grid expects positive temperatures, got {text!r}")
    return values


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m calibration.sweep",
        description="Sweep the temperature on a run's calibration set and store the best one in calibration.json.",
    )
    parser.add_argument("run_dir", type=Path, help="run directory holding calibration_logits.safetensors")
    parser.add_argument(
        "--criterion", choices=sorted(CRITERIA), default="score", help="what to optimise (default: score)"
    )
    parser.add_argument("--grid", type=_parse_grid, default=None,
                        help="comma-separated temperatures (default: 65 points geometric from 1/32 to 8, plus the "
                             "fitted temperature of calibration.json)")
    args = parser.parse_args(argv)
    try:
        result = sweep_run_dir(args.run_dir, args.criterion, args.grid)
    except (FileNotFoundError, ConfigError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    calibration = result["calibration"]
    print(format_table(result["rows"], calibration["temperature"]))
    identity = min(result["rows"], key=lambda row: abs(math.log(row["temperature"])))
    chosen = next(row for row in result["rows"] if row["temperature"] == calibration["temperature"])
    print(
        f"chosen T = {calibration['temperature']:.4g} by {args.criterion}: score {chosen['score']:.4f} "
        f"(T = {identity['temperature']:.4g}: {identity['score']:.4f}); wrote {args.run_dir / CALIBRATION_FILE}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
