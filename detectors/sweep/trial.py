"""One trial = one ordinary fit run in ``DIR/trial-NNNN``, plus its objective values.

The run is what ``python -m detectors.<modality>.fit --arch ARCH --data YAML --output DIR/trial-NNNN
--set key=value ...`` makes (resume, calibration, metrics.json, summary.json unchanged); the sweep
adds one Lightning callback that reports the per-epoch validation score to Optuna and stops a trial
the pruner gives up on.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import logging
import math
import statistics
import time
from pathlib import Path
from typing import Any

import lightning as L
import optuna
import torch
import yaml

from detectors.config import flatten
from detectors.errors import ConfigError
from detectors.sweep.space import Objective, SearchSpace

LATENCY_BATCH = 8
LATENCY_REPEATS = 5


class TrialFailed(Exception):
    """A trial whose run finished without a usable objective value (e.g. a NaN score)."""


class PruningCallback(L.Callback):
    """Reports ``monitor`` after every validation epoch to the trial and raises
    :class:`optuna.TrialPruned` when the study's pruner says so (as optuna-integration's
    ``PyTorchLightningPruningCallback``). ``sign`` turns the metric into the study's direction."""

    def __init__(self, trial: optuna.Trial, monitor: str, sign: float = 1.0) -> None:
        self.trial = trial
        self.monitor = monitor
        self.sign = sign
        self.last_epoch: int | None = None

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        value = trainer.callback_metrics.get(self.monitor)
        if value is None or not math.isfinite(float(value)):
            return
        epoch = trainer.current_epoch
        self.last_epoch = epoch
        self.trial.report(self.sign * float(value), step=epoch)
        last = trainer.max_epochs is not None and trainer.max_epochs > 0 and epoch + 1 >= trainer.max_epochs
        if not last and self.trial.should_prune():  # after the last epoch the trial is done: keep it
            raise optuna.TrialPruned(f"pruned after epoch {epoch} ({self.monitor} = {float(value):.4f})")


def modality_support(modality: str) -> Any:
    """The ``ModalitySupport`` of ``detectors.<modality>.fit`` (its demo and extra flags)."""
    from detectors.training.fit import ModalitySupport

    module = importlib.import_module(f"detectors.{modality}.fit")
    return next(value for value in vars(module).values() if isinstance(value, ModalitySupport))


def set_flags(settings: dict[str, Any]) -> list[str]:
    """``--set key=value`` for every leaf of ``settings`` (values written as YAML, as typed by hand)."""
    flags = []
    for key, value in flatten(settings).items():
        text = yaml.safe_dump([value], default_flow_style=True, width=1 << 16).strip()[1:-1]
        flags += ["--set", f"{key}={text}"]
    return flags


def fit_argv(space: SearchSpace, data: Path, run_dir: Path, settings: dict[str, Any]) -> list[str]:
    """The fit command line of a trial (also what ``DIR/trial-NNNN/sweep.json`` records)."""
    return ["--arch", space.arch, "--data", str(data), "--output", str(run_dir), "--overwrite", *set_flags(settings)]


def run_fit_quietly(space: SearchSpace, argv: list[str], log_file: Path, callbacks: list[Any]) -> Path:
    """The fit in this process, its console output (progress bars, report) in ``log_file``."""
    from detectors.registry import list_detectors
    from detectors.training.fit import build_parser, fit

    support = modality_support(space.modality)
    parser = build_parser(space.modality, list_detectors(space.modality), space.arch)
    if support.add_arguments:
        support.add_arguments(parser)
    args = parser.parse_args(argv)
    log_file.parent.mkdir(parents=True, exist_ok=True)
    # Lightning's INFO lines ("GPU available", "max_epochs reached") once per trial say nothing new
    loggers = [
        logging.getLogger(name) for name in list(logging.root.manager.loggerDict) if name.startswith("lightning")
    ]
    levels = [logger.level for logger in loggers]
    with open(log_file, "a") as handle, contextlib.redirect_stdout(handle), contextlib.redirect_stderr(handle):
        for logger in loggers:
            logger.setLevel(max(logger.level, logging.WARNING))
        try:
            return fit(args, space.modality, support, callbacks=callbacks)
        finally:
            for logger, level in zip(loggers, levels):
                logger.setLevel(level)


def measure(run_dir: Path, objectives: list[Objective]) -> tuple[list[float], dict[str, Any]]:
    """Objective values of a finished run and the facts worth keeping with the trial."""
    metrics = json.loads((run_dir / "metrics.json").read_text())["validation"]
    summary = json.loads((run_dir / "summary.json").read_text())
    facts: dict[str, Any] = {
        "trainable_parameters": summary.get("trainable_parameters"),
        "epochs_completed": summary.get("epochs_completed"),
        "val_score": metrics.get("score"),
    }
    if any(o.metric in ("exported_size_mb", "ms_per_sample") for o in objectives):
        facts.update(export_and_time(run_dir))
    values = []
    for objective in objectives:
        value = facts.get(objective.metric) if objective.efficiency else metrics.get(objective.metric)
        if not isinstance(value, (int, float)) or not math.isfinite(value):
            raise TrialFailed(f"{objective.metric} is {value!r} in {run_dir / 'metrics.json'}")
        values.append(float(value))
    return values, facts


def export_and_time(run_dir: Path) -> dict[str, float]:
    """Export the run to ``run_dir/submission`` and time the exported model as the benchmark runs it."""
    from detectors.base import load_detector
    from export.__main__ import export_detector
    from export.benchmark_loader import load_submission, run_model

    detector = load_detector(run_dir)
    submission = run_dir / "submission"
    export_detector(detector, submission)
    size = sum(path.stat().st_size for path in submission.iterdir() if path.is_file())
    model, _ = load_submission(submission)
    inputs = detector.example_input(LATENCY_BATCH)
    timings = []
    for repeat in range(LATENCY_REPEATS + 1):  # the first call warms up
        start = time.perf_counter()
        run_model(model, inputs)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        if repeat:
            timings.append(time.perf_counter() - start)
    return {"exported_size_mb": size / 2**20, "ms_per_sample": 1000 * statistics.median(timings) / LATENCY_BATCH}


def run_trial(
    trial: optuna.Trial,
    space: SearchSpace,
    data: Path,
    output: Path,
    settings: dict[str, Any],
    values: dict[str, Any],
    prune: bool,
) -> list[float]:
    """Fit the trial's run and return its objective values (raises ``TrialPruned`` / ``ConfigError`` /
    :class:`TrialFailed`)."""
    from detectors.config import set_dotted

    run_dir = output / f"trial-{trial.number:04d}"
    merged = json.loads(json.dumps(settings))
    for key, value in values.items():
        set_dotted(merged, key, value)
    argv = fit_argv(space, data, run_dir, merged)
    trial.set_user_attr("run_dir", str(run_dir))
    trial.set_user_attr("settings", merged)
    callbacks = []
    pruning = None
    if prune:
        monitor = str((merged.get("trainer") or {}).get("monitor") or "val/score")
        higher_is_better = not monitor.endswith("loss")
        sign = 1.0 if higher_is_better == (space.directions[0] == "maximize") else -1.0
        pruning = PruningCallback(trial, monitor, sign)
        callbacks.append(pruning)
    try:
        run_fit_quietly(
            space,
            [*argv, "--set", "trainer.enable_progress_bar=false"],
            output / "logs" / f"trial-{trial.number:04d}.log",
            callbacks,
        )
    finally:
        if pruning is not None and pruning.last_epoch is not None:
            trial.set_user_attr("last_epoch", pruning.last_epoch)
    objective_values, facts = measure(run_dir, space.objectives)
    for key, value in facts.items():
        trial.set_user_attr(key, value)
    return objective_values


__all__ = ["ConfigError", "PruningCallback", "TrialFailed", "fit_argv", "measure", "run_trial", "set_flags"]
