"""What a sweep leaves in its directory: ``trials.csv``, ``best.yaml``, plots, one line per trial."""

from __future__ import annotations

import csv
import io
import json
import warnings
from pathlib import Path
from typing import Any

import optuna
import yaml
from optuna.trial import FrozenTrial, TrialState

from detectors.atomic import atomic_path, write_text
from detectors.config import deep_merge
from detectors.sweep.space import SearchSpace


def best_trials(study: optuna.Study) -> list[FrozenTrial]:
    """The best trial (single objective) or the Pareto front (several), best first objective first."""
    from detectors.sweep.study import counted

    complete = [t for t in counted(study) if t.state == TrialState.COMPLETE]
    if not complete:
        return []
    if len(study.directions) == 1:
        return [study.best_trial]
    first = study.directions[0] == optuna.study.StudyDirection.MAXIMIZE
    return sorted(study.best_trials, key=lambda t: -t.values[0] if first else t.values[0])


def progress_line(study: optuna.Study, space: SearchSpace, trial: FrozenTrial, total: int) -> str:
    """``trial 3/12 complete  score 0.4123  best 0.4511 (trial 1)  12.3 s`` (pruned: the epoch)."""
    from detectors.sweep.study import counted

    done = sum(1 for t in counted(study) if t.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL))
    names = [o.metric for o in space.objectives]
    if trial.state == TrialState.COMPLETE:
        value = "  ".join(f"{n} {_fmt(v)}" for n, v in zip(names, trial.values))
    elif trial.state == TrialState.PRUNED:
        value = trial.user_attrs.get("note", "pruned")
    else:
        value = trial.user_attrs.get("error", "failed")
    best = best_trials(study)
    if not best:
        best_text = "best -"
    elif len(names) == 1:
        best_text = f"best {_fmt(best[0].values[0])} (trial {best[0].number})"
    else:
        best_text = f"Pareto front: {len(best)} trial(s)"
    seconds = trial.user_attrs.get("seconds", 0.0)
    return f"trial {trial.number:>4} [{done}/{total}] {trial.state.name.lower():<8} {value}  |  {best_text}  |  {seconds:.1f} s"


def _fmt(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.4f}" if abs(value) < 1e4 else f"{value:,.0f}"


def write_trials_csv(study: optuna.Study, space: SearchSpace, path: Path) -> None:
    """One row per trial: number, state, objective values, parameters (per-layer lists joined),
    epochs, seconds, run directory, note/error."""
    from detectors.sweep.study import counted

    names = [o.metric for o in space.objectives]
    keys = [p.key for p in space.params]
    header = ["number", "state", *names, *keys, "trainable_parameters", "last_epoch", "seconds", "run_dir", "note"]
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(header)
    for trial in counted(study):
        settings = trial.user_attrs.get("settings") or {}
        # a pruned trial carries its last intermediate value: not an objective value
        values = list(trial.values) if trial.state == TrialState.COMPLETE else [None] * len(names)
        row = [trial.number, trial.state.name.lower(), *values]
        for key in keys:
            row.append(
                json.dumps(_dotted(settings, key))
                if isinstance(_dotted(settings, key), list)
                else _dotted(settings, key)
            )
        row += [
            trial.user_attrs.get("trainable_parameters"),
            trial.user_attrs.get("last_epoch"),
            trial.user_attrs.get("seconds"),
            trial.user_attrs.get("run_dir"),
            trial.user_attrs.get("note") or trial.user_attrs.get("error") or "",
        ]
        writer.writerow(["" if v is None else v for v in row])
    write_text(path, buffer.getvalue())


def _dotted(settings: dict[str, Any], key: str) -> Any:
    node: Any = settings
    for part in key.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


def best_config(space: SearchSpace, trial: FrozenTrial) -> dict[str, Any]:
    """The settings of ``trial`` as a ``--config`` YAML: arch, modality, fixed settings, seeds and
    the drawn values (the trial's run used exactly these on top of the arch's defaults)."""
    settings = trial.user_attrs.get("settings") or {}
    config = deep_merge({"arch": space.arch, "modality": space.modality}, settings)
    return config


def write_best(study: optuna.Study, space: SearchSpace, output: Path, data: Path) -> FrozenTrial | None:
    """``best.yaml`` (usable as ``fit --config best.yaml``); several objectives: the Pareto trial with the
    best first objective, and ``pareto_front.csv`` listing the whole front."""
    best = best_trials(study)
    if not best:
        return None
    trial = best[0]
    values = ", ".join(f"{o.metric} = {_fmt(v)}" for o, v in zip(space.objectives, trial.values))
    header = (
        f"# Best trial {trial.number} of study {study.study_name!r} ({values}); run: {trial.user_attrs.get('run_dir')}\n"
        f"# Reproduce: python -m detectors.{space.modality}.fit --config best.yaml --data {data} --output RUN\n"
    )
    write_text(output / "best.yaml", header + yaml.safe_dump(best_config(space, trial), sort_keys=False))
    if len(space.objectives) > 1:
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(["number", *[o.metric for o in space.objectives], "run_dir"])
        for member in best:
            writer.writerow([member.number, *member.values, member.user_attrs.get("run_dir")])
        write_text(output / "pareto_front.csv", buffer.getvalue())
    return trial


def write_plots(study: optuna.Study, space: SearchSpace, directory: Path) -> list[str]:
    """Optuna's matplotlib figures: optimisation history (per objective), parameter importances
    (fANOVA; needs two finished trials with differing parameters) and, for two objectives, the Pareto
    front. Returns notes on figures that could not be drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as views

    from detectors.sweep.study import counted

    directory.mkdir(parents=True, exist_ok=True)
    complete = [t for t in counted(study) if t.state == TrialState.COMPLETE]
    notes = []
    names = [o.metric for o in space.objectives]
    figures: list[tuple[str, Any]] = []
    for index, name in enumerate(names):
        target = None if len(names) == 1 else (lambda t, i=index: t.values[i])
        figures.append(
            (
                f"history_{name}.png" if len(names) > 1 else "history.png",
                lambda t=target, n=name: views.plot_optimization_history(study, target=t, target_name=n),
            )
        )
    if len(complete) >= 2:
        target = None if len(names) == 1 else (lambda t: t.values[0])
        figures.append(
            ("importances.png", lambda: views.plot_param_importances(study, target=target, target_name=names[0]))
        )
    else:
        notes.append("importances.png: needs two complete trials")
    if len(names) >= 2:
        figures.append(("pareto_front.png", lambda: views.plot_pareto_front(study, target_names=names)))
    for filename, draw in figures:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # optuna's ExperimentalWarning for the matplotlib views
                axes = draw()
            figure = axes.figure if hasattr(axes, "figure") else axes.flat[0].figure
            figure.tight_layout()
            with atomic_path(directory / filename) as tmp:
                figure.savefig(tmp, format="png", dpi=110)
            plt.close(figure)
        except (ValueError, RuntimeError, ZeroDivisionError) as error:
            notes.append(f"{filename}: {' '.join(str(error).split())[:200]}")
    return notes


__all__ = ["best_config", "best_trials", "progress_line", "write_best", "write_plots", "write_trials_csv"]
