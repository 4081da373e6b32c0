"""Temperature sweep on a calibration set, and the ``python -m calibration.sweep RUN_DIR`` command.

The benchmark score is not smooth in the temperature (MCC changes only where predictions flip), so
besides the LBFGS fit of :class:`~calibration.calibrator.LogitCalibrator` a grid sweep that picks the
temperature with the best benchmark score (or NLL, Brier, ECE) on held-out data is useful.

Run-directory contract:

- reads ``RUN_DIR/calibration_logits.safetensors``: ``logits`` [N, C] float32, UNcalibrated, and
  ``labels`` [N] int64 (written by training);
- reads the bias of ``RUN_DIR/calibration.json`` if present (it is kept, only T is swept);
- writes ``RUN_DIR/temperature_sweep.csv``, ``RUN_DIR/plots/temperature_sweep.png`` and
  ``RUN_DIR/calibration.json = {"temperature", "bias", "method": "sweep", "criterion", "fitted", "previous"}``.

History in calibration.json, however many sweeps run:

- ``fitted``: the calibration training wrote (its LBFGS fit, ``method`` "lbfgs", "platt", ...),
  copied by the first sweep and never overwritten by later ones; null when the run had no
  calibration.json. ``python -m calibration.sweep RUN_DIR --restore-fitted`` puts it back in force.
- ``previous``: the state just before this sweep (without its own ``fitted`` / ``previous``).

Readers of calibration.json (``load_detector``, hence ``detect --run`` and ``export``) use only
``temperature`` and ``bias``. Exports made before a sweep keep the calibration they were exported
with (it is folded into their weights): re-export with ``python -m export RUN_DIR --out DIR``; the
command prints this, naming ``RUN_DIR/submission`` (the demo's export) when it exists.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import shlex
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file

from calibration.calibrator import LogitCalibrator
from detectors import cli
from detectors.atomic import atomic_open, write_json
from detectors.cli import command
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
from detectors.training.run import RunDir

__all__ = [
    "DEFAULT_TEMPERATURES",
    "choose_temperature",
    "main",
    "restore_fitted",
    "stale_export_note",
    "sweep_run_dir",
    "temperature_sweep",
]

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
#: calibration.json keys holding history rather than the calibrator state.
HISTORY_KEYS = ("fitted", "previous")


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
        rows.append(
            {
                "temperature": temperature,
                "score": benchmark_score(mcc_value, brier_value),
                "mcc": mcc_value,
                "brier": brier_value,
                "ece": expected_calibration_error(y, prob),
                "nll": nll_from_logits(scaled, y),
            }
        )
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
            path,
            "logits",
            f"expected logits [N, C] and labels [N] with N > 0, got {tuple(logits.shape)} and {tuple(labels.shape)}",
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


def _without_history(state: Mapping[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in state.items() if key not in HISTORY_KEYS}


def _is_temperature(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0


def _fitted_state(current: Mapping[str, Any] | None, path: Path) -> dict[str, Any] | None:
    """The calibration training wrote, as carried in ``current`` (the calibration.json now in force)."""
    if current is None:
        return None
    if "fitted" in current:  # recorded by an earlier sweep: never overwritten
        fitted = current["fitted"]
        if fitted is not None and not isinstance(fitted, dict):
            raise ConfigError(path, "fitted", f"expected a calibration object or null, got {fitted!r}")
        return fitted
    if current.get("method") != "sweep":
        return _without_history(current)  # training's file: this is the fit
    # Written by a sweep that predates "fitted": its "previous" is the fit if only one sweep ran.
    older = current.get("previous")
    if isinstance(older, dict) and older.get("method") != "sweep":
        return _without_history(older)
    return None


def sweep_run_dir(
    run_dir: str | Path, criterion: str = "score", temperatures: Sequence[float] | None = None
) -> dict[str, Any]:
    """Sweep the run's calibration set, write the CSV, the plot and calibration.json; return the rows and choice.

    The returned dict holds ``rows``, ``calibration`` (what was written) and ``previous`` (the
    calibration.json in force before, or None).
    """
    run_dir = Path(run_dir)
    if criterion not in CRITERIA:
        raise ValueError(f"criterion must be one of {sorted(CRITERIA)}, got {criterion!r}")
    logits, labels = _load_calibration_set(run_dir / LOGITS_FILE)
    calibration_path = run_dir / CALIBRATION_FILE
    previous = _read_previous(calibration_path)
    fitted = _fitted_state(previous, calibration_path)

    bias = [0.0] * logits.shape[1]
    if previous is not None:
        # The rules load_detector applies to this file (finite T > 0, C finite biases), checked here so
        # that a broken file is named instead of failing later inside the sweep.
        LogitCalibrator(logits.shape[1]).load_state(previous, source=str(calibration_path))
        if previous.get("bias") is not None:
            bias = [float(b) for b in previous["bias"]]  # float64 as stored, not the float32 parameter

    if temperatures is None and previous is not None:
        # The temperature in force, and the fitted one, compete with the grid, so a sweep never does
        # worse than either (after an earlier sweep the fitted T is no longer the one in force).
        candidates = {float(previous["temperature"])}
        same_bias = fitted is not None and fitted.get("bias") == previous.get("bias")
        if same_bias and _is_temperature(fitted.get("temperature")):
            candidates.add(float(fitted["temperature"]))
        temperatures = sorted({*DEFAULT_TEMPERATURES, *candidates})
    rows = temperature_sweep(logits, labels, temperatures, bias=bias)
    chosen = choose_temperature(rows, criterion)

    with atomic_open(run_dir / SWEEP_CSV, "w") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows({key: row[key] for key in COLUMNS} for row in rows)
    temperature_sweep_plot(rows, run_dir / SWEEP_PLOT, chosen=chosen)

    calibration = {
        "temperature": chosen,
        "bias": bias,
        "method": "sweep",
        "criterion": criterion,
        "fitted": fitted,
        # One level of history only: older generations would nest without bound (``fitted`` keeps the one
        # that matters).
        "previous": None if previous is None else _without_history(previous),
    }
    write_json(calibration_path, calibration)
    return {"rows": rows, "calibration": calibration, "previous": previous}


def restore_fitted(run_dir: str | Path) -> dict[str, Any]:
    """Put the fitted calibration recorded in ``RUN_DIR/calibration.json`` back in force.

    Keeps ``fitted`` and records the sweep result it replaces as ``previous``. Returns
    ``{"calibration": written, "previous": the state before}``; raises ConfigError when no fitted
    calibration is recorded.
    """
    calibration_path = Path(run_dir) / CALIBRATION_FILE
    current = _read_previous(calibration_path)
    if current is None:
        raise FileNotFoundError(f"{calibration_path}: not found; nothing to restore")
    fitted = _fitted_state(current, calibration_path)
    if fitted is None:
        raise ConfigError(
            calibration_path,
            "fitted",
            "no fitted calibration recorded (the run had no calibration.json "
            "before its first sweep, or it was swept twice by a version that did not keep it)",
        )
    LogitCalibrator.from_state(fitted, source=f"{calibration_path} (fitted)")
    calibration = {**_without_history(fitted), "fitted": fitted, "previous": _without_history(current)}
    write_json(calibration_path, calibration)
    return {"calibration": calibration, "previous": current}


def _describe(state: Mapping[str, Any] | None) -> str:
    if state is None:
        return "no calibration.json (the calibrator stored in the weights)"
    bias = state.get("bias")
    bias_text = "" if bias is None else ", bias [" + ", ".join(f"{float(b):.4g}" for b in bias) + "]"
    return f"T = {float(state['temperature']):.4g}{bias_text} ({state.get('method', 'manual')})"


def stale_export_note(run_dir: str | Path, old: Mapping[str, Any] | None, new: Mapping[str, Any]) -> str:
    """What to tell the user after writing calibration.json: exports keep the calibration they were made with."""
    run_dir = Path(run_dir)
    run = shlex.quote(str(run_dir))
    changed = (
        old is None
        or float(old["temperature"]) != float(new["temperature"])
        or ([float(b) for b in old.get("bias") or [0.0] * len(new["bias"])] != [float(b) for b in new["bias"]])
    )
    if changed:
        lines = [
            f"note: {run_dir / CALIBRATION_FILE} now holds {_describe(new)}; before: {_describe(old)}.",
            (
                "  `detect --run` and later exports use it, but an export made before (a submission directory) keeps "
                "the calibration folded into its weights."
            ),
        ]
    else:
        lines = [
            f"note: {run_dir / CALIBRATION_FILE} keeps {_describe(new)}: values unchanged, so exports made since "
            "they were set still match; an older export keeps the calibration folded into its weights.",
        ]
    lines.append(f"  Re-export to update one: python -m export {run} --out DIR")
    submission = RunDir(run_dir).demo_submission
    if (submission / "model_config.yaml").is_file():
        state = "keeps its old calibration until re-exported" if changed else "is stale if exported before that"
        lines.append(
            f"  {submission} exists (the demo's export) and {state}: "
            f"python -m export {run} --out {shlex.quote(str(submission))}"
        )
    return "\n".join(lines)


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


@command
def main(argv: Sequence[str] | None = None) -> int:
    parser = cli.ArgumentParser(
        prog="python -m calibration.sweep",
        description="Sweep the temperature on a run's calibration set and store the best one in calibration.json.",
        epilog="calibration.json keeps 'fitted' (the calibration training wrote, recorded by the first sweep and never "
        "overwritten) and 'previous' (the state just before the last change); --restore-fitted puts 'fitted' "
        "back in force. Exports made before a sweep keep their old calibration: re-export with "
        "`python -m export RUN_DIR --out DIR` (the demo's export is RUN_DIR/submission).",
    )
    parser.add_argument("run_dir", type=Path, help="run directory holding calibration_logits.safetensors")
    parser.add_argument(
        "--criterion", choices=sorted(CRITERIA), default="score", help="what to optimise (default: score)"
    )
    parser.add_argument(
        "--grid",
        type=_parse_grid,
        default=None,
        help="comma-separated temperatures (default: 65 points geometric from 1/32 to 8, plus the "
        "temperatures in force and fitted of calibration.json)",
    )
    parser.add_argument(
        "--restore-fitted",
        action="store_true",
        help="sweep nothing: put the fitted calibration recorded in calibration.json back in force",
    )
    args = parser.parse_args(argv)
    try:
        if args.restore_fitted:
            result = restore_fitted(args.run_dir)
        else:
            result = sweep_run_dir(args.run_dir, args.criterion, args.grid)
    except (FileNotFoundError, ConfigError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    calibration = result["calibration"]
    if args.restore_fitted:
        print(f"restored the fitted calibration: {_describe(calibration)}; wrote {args.run_dir / CALIBRATION_FILE}")
    else:
        print(format_table(result["rows"], calibration["temperature"]))
        identity = min(result["rows"], key=lambda row: abs(math.log(row["temperature"])))
        chosen = next(row for row in result["rows"] if row["temperature"] == calibration["temperature"])
        print(
            f"chosen T = {calibration['temperature']:.4g} by {args.criterion}: score {chosen['score']:.4f} "
            f"(T = {identity['temperature']:.4g}: {identity['score']:.4f}); wrote {args.run_dir / CALIBRATION_FILE}"
        )
    print(stale_export_note(args.run_dir, result["previous"], calibration))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
