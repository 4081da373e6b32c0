"""The Optuna study behind a sweep: storage, seeded sampler, pruner, and the two strategies.

- ``tpe``: Optuna's TPE sampler (multi-objective TPE for several objectives), seeded; with the median
  or Hyperband pruner acting on the per-epoch validation score for single-objective studies.
- ``coordinate``: CakeLens's "hyperparameter gradient descent": one parameter at a time over its
  range with short runs, the best value becomes the baseline, next parameter; K rounds.

Several processes (or machines) join one study by running the same command against one storage
(``load_if_exists``); the study stops at ``--trials`` trials in total, whoever runs them.
"""

from __future__ import annotations

import json
import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from detectors.config import deep_merge
from detectors.errors import ConfigError
from detectors.sweep.space import SearchSpace
from detectors.sweep.trial import TrialFailed, run_trial

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
SURPLUS = "surplus"  # user attribute of a trial asked for after the study had its --trials
HEARTBEAT_INTERVAL_S = 30
HEARTBEAT_GRACE_S = 120


def default_storage(output: Path) -> str:
    return f"sqlite:///{(output / 'study.db').resolve()}"


def open_storage(url: str) -> optuna.storages.BaseStorage:
    """An RDB storage; SQLite waits up to a minute for a lock held by another worker of the study."""
    from sqlalchemy.exc import IntegrityError, ProgrammingError

    engine_kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else None
    for attempt in range(10):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # the heartbeat
                # a worker that dies leaves its trial RUNNING: after HEARTBEAT_GRACE_S without a beat
                # the next trial's start fails it and enqueues it again with its parameters
                return optuna.storages.RDBStorage(
                    url,
                    engine_kwargs=engine_kwargs,
                    heartbeat_interval=HEARTBEAT_INTERVAL_S,
                    grace_period=HEARTBEAT_GRACE_S,
                    heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=1),
                )
        except (IntegrityError, ProgrammingError):
            # workers started together race to create the schema: the loser finds it made
            if attempt == 9:
                raise
            time.sleep(0.2 * (attempt + 1))
        except ImportError as error:  # e.g. postgresql:// without its driver
            raise ConfigError(
                None, "--storage", f"cannot open {url!r}: {error} (for PostgreSQL: pip install 'psycopg[binary]')"
            ) from None
        except Exception as error:  # SQLAlchemy's OperationalError and friends: a server that is not there
            message = " ".join(str(error).split())[:300]
            raise ConfigError(None, "--storage", f"cannot open {url!r}: {message}") from None
    raise AssertionError("unreachable")


class TrialSeededSampler(optuna.samplers.BaseSampler):
    """A sampler whose draws depend on the seed, the trial number and the study's history only.

    Each trial gets ``factory(seed + trial.number)``: one process gives the same study for the same
    seed, and workers that join a study never repeat each other's startup draws (one shared seed
    would make every worker draw the same random trials).
    """

    def __init__(self, factory: Callable[[int], optuna.samplers.BaseSampler], seed: int) -> None:
        self.factory = factory
        self.seed = seed
        self._samplers: dict[int, optuna.samplers.BaseSampler] = {}

    def _for(self, trial: Any) -> optuna.samplers.BaseSampler:
        number = trial.number
        if number not in self._samplers:
            self._samplers = {number: self.factory(self.seed + number)}  # one trial at a time per process
        return self._samplers[number]

    def infer_relative_search_space(self, study: optuna.Study, trial: Any) -> dict[str, Any]:
        return self._for(trial).infer_relative_search_space(study, trial)

    def sample_relative(self, study: optuna.Study, trial: Any, search_space: dict[str, Any]) -> dict[str, Any]:
        return self._for(trial).sample_relative(study, trial, search_space)

    def sample_independent(self, study: optuna.Study, trial: Any, param_name: str, param_distribution: Any) -> Any:
        return self._for(trial).sample_independent(study, trial, param_name, param_distribution)

    def before_trial(self, study: optuna.Study, trial: Any) -> None:
        self._for(trial).before_trial(study, trial)

    def after_trial(self, study: optuna.Study, trial: Any, state: TrialState, values: Any) -> None:
        self._for(trial).after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self._samplers = {}


def tpe_sampler(seed: int) -> optuna.samplers.BaseSampler:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # constant_liar
        # constant_liar: running trials of other workers count as bad, so workers spread out
        return TrialSeededSampler(lambda s: optuna.samplers.TPESampler(seed=s, constant_liar=True), seed)


def make_pruner(name: str, max_epochs: int) -> optuna.pruners.BasePruner:
    if name == "median":
        # the first two trials run to the end (a baseline); then a trial whose validation score
        # after any epoch is below the median of the earlier trials' at that epoch stops
        return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max(max_epochs, 1), reduction_factor=3)
    return optuna.pruners.NopPruner()


def open_study(
    space: SearchSpace, storage: str, study_name: str, seed: int, pruner: str, max_epochs: int
) -> optuna.Study:
    """Create the study, or join it (same parameters and objectives, else a one-line error)."""
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # the sweep prints its own line per trial
    study = optuna.create_study(
        storage=open_storage(storage),
        study_name=study_name,
        load_if_exists=True,
        directions=space.directions,
        sampler=tpe_sampler(seed),
        pruner=make_pruner(pruner, max_epochs),
    )
    canonical = space.canonical()
    attrs = study.user_attrs
    if "space" not in attrs:
        study.set_user_attr("space", canonical)
        study.set_user_attr("arch", space.arch)
        study.set_user_attr("modality", space.modality)
    elif attrs["space"] != canonical or [d.name.lower() for d in study.directions] != space.directions:
        raise ConfigError(
            space.path,
            None,
            f"study {study_name!r} in {storage} was created from another search "
            "space (parameters or objectives differ): use another --study-name or "
            "--output",
        )
    return study


@dataclass
class SweepContext:
    """What every trial of one sweep shares."""

    space: SearchSpace
    data: Path
    output: Path
    settings: dict[str, Any]  # fixed settings + the run and split seed
    total: int  # --trials
    prune: bool
    report: Callable[[optuna.Study, optuna.trial.FrozenTrial], None]


def base_settings(space: SearchSpace, seed: int) -> dict[str, Any]:
    """``fixed`` with the run's seed and the split seed set: every trial trains on the same split."""
    seeds = {"seed": seed, "split": {"seed": seed}}
    return deep_merge(seeds, space.fixed)


def counted(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """The study's trials, without surplus ones (asked for by a worker after the study was full) and
    without those of dead workers that were re-run under a new number."""
    trials = study.get_trials(deepcopy=False)
    retried = {t.system_attrs["failed_trial"] for t in trials if "failed_trial" in t.system_attrs}
    return [t for t in trials if not t.user_attrs.get(SURPLUS) and t.number not in retried]


def run_one(
    study: optuna.Study, context: SweepContext, fixed_params: dict[str, Any] | None = None
) -> optuna.trial.FrozenTrial | None:
    """Run one trial of the study (``fixed_params``: enqueued settings, the coordinate strategy's);
    ``None`` once the study holds ``total`` trials.

    Through ``study.optimize(n_trials=1)``: with a heartbeat storage, trials of a worker that died
    are failed after the grace period and re-run with the same parameters (RetryHeartbeatStaleTrialCallback)."""
    if len(counted(study)) >= context.total:
        return None
    if fixed_params is not None:
        study.enqueue_trial(fixed_params, skip_if_exists=False)
    finished: list[optuna.trial.FrozenTrial] = []

    def objective(trial: optuna.Trial) -> Any:
        started = time.time()
        if trial.number >= context.total + _surplus_count(study) + _retried_count(study):
            trial.set_user_attr(SURPLUS, True)  # another worker asked at the same moment: over the budget
            raise _Surplus
        try:
            return run_trial(
                trial,
                context.space,
                context.data,
                context.output,
                context.settings,
                context.space.suggest(trial),
                prune=context.prune,
            )
        except optuna.TrialPruned as pruned:
            trial.set_user_attr("note", str(pruned))
            raise
        except (ConfigError, TrialFailed, OSError) as error:
            trial.set_user_attr("error", " ".join(str(error).split())[:500])
            raise
        finally:
            trial.set_user_attr("seconds", round(time.time() - started, 2))

    study.optimize(
        objective,
        n_trials=1,
        catch=(ConfigError, TrialFailed, OSError, _Surplus),
        callbacks=[lambda _study, trial: finished.append(trial)],
        gc_after_trial=False,
    )
    if not finished or finished[0].user_attrs.get(SURPLUS):
        return None
    context.report(study, finished[0])
    return finished[0]


class _Surplus(Exception):
    pass


def _retried_count(study: optuna.Study) -> int:
    """Trials failed by the heartbeat and re-run under a new number."""
    return sum(1 for t in study.get_trials(deepcopy=False) if "failed_trial" in t.system_attrs)


def _surplus_count(study: optuna.Study) -> int:
    return sum(1 for t in study.get_trials(deepcopy=False) if t.user_attrs.get(SURPLUS))


def run_tpe(study: optuna.Study, context: SweepContext) -> None:
    while run_one(study, context) is not None:
        pass


# --------------------------------------------------------------------------- one-knob sweeps
@dataclass(frozen=True)
class Knob:
    """One coordinate: a parameter, or one element of a per-layer list parameter."""

    key: str
    index: int | None = None

    @property
    def name(self) -> str:
        return self.key if self.index is None else f"{self.key}.{self.index}"


def knobs_of(space: SearchSpace, baseline: dict[str, Any]) -> list[Knob]:
    knobs = []
    for param in space.params:
        if param.length is None:
            knobs.append(Knob(param.key))
        else:
            knobs += [Knob(param.key, i) for i in range(int(baseline[param.length]))]
    return knobs


def starting_point(space: SearchSpace) -> dict[str, Any]:
    """The architecture's own values (with ``fixed``) where the space allows them, else the low end."""
    from detectors.config import flatten, to_dict
    from detectors.settings import resolve_run_config
    from detectors.sweep.space import corner_values, trial_layers

    defaults = flatten(to_dict(resolve_run_config(trial_layers(space, {}))))
    low = corner_values(space, 0)
    start: dict[str, Any] = {}
    for param in space.params:
        default = defaults.get(param.key)
        if param.length is None:
            start[param.key] = default if _allowed(param, default) else low[param.key]
        else:
            items = default if isinstance(default, list) else []
            first = low[param.key][0]
            start[param.key] = [v if _allowed(param, v) else first for v in items]
    return fit_lengths(space, start)


def _allowed(param: Any, value: Any) -> bool:
    if param.kind == "categorical":
        return value in param.choices
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return param.low <= value <= param.high


def fit_lengths(space: SearchSpace, values: dict[str, Any]) -> dict[str, Any]:
    """Per-layer lists cut or extended (repeating the last element) to their length parameter."""
    values = dict(values)
    for param in space.params:
        if param.length is not None:
            count = int(values[param.length])
            items = list(values[param.key]) or [param.corner(0)]
            values[param.key] = (items + [items[-1]] * count)[:count]
    return values


def as_optuna_params(space: SearchSpace, values: dict[str, Any]) -> dict[str, Any]:
    """Setting values -> Optuna parameter names and encoded values (to enqueue a trial)."""
    from detectors.sweep.space import _encode_choice

    params = {}
    for param in space.params:
        value = values[param.key]
        items = [value] if param.length is None else list(value)
        for name, item in zip(param.element_names(values.get(param.length) if param.length else None), items):
            params[name] = _encode_choice(item) if param.kind == "categorical" else item
    return params


def run_coordinate(
    study: optuna.Study, context: SweepContext, rounds: int, points: int, log: Callable[[str], None]
) -> None:
    """Vary one knob at a time over its grid (the others at the baseline), keep the best value,
    move on; ``rounds`` passes over every knob. Each evaluation is a trial of the study (identical
    configurations are evaluated once); a failed or pruned evaluation never wins."""
    space = context.space
    objective = space.objectives[0]
    better = (lambda a, b: a > b) if objective.direction == "maximize" else (lambda a, b: a < b)
    results: dict[str, float | None] = {}

    def evaluate(values: dict[str, Any]) -> float | None:
        key = json.dumps(as_optuna_params(space, values), sort_keys=True)
        if key not in results:
            for trial in counted(study):  # a restarted sweep reuses its finished trials
                if trial.state == TrialState.COMPLETE and json.dumps(trial.params, sort_keys=True) == key:
                    results[key] = trial.values[0]
                    break
            else:
                frozen = run_one(study, context, as_optuna_params(space, values))
                if frozen is None:
                    raise _BudgetSpent
                results[key] = frozen.values[0] if frozen.state == TrialState.COMPLETE else None
        return results[key]

    baseline = starting_point(space)
    try:
        baseline_value = evaluate(baseline)
        for round_number in range(1, rounds + 1):
            changed = False
            for knob in knobs_of(space, baseline):
                if knob.index is not None and knob.index >= int(baseline[space.param(knob.key).length]):
                    continue  # the layer count went down this round
                param = space.param(knob.key)
                current = baseline[knob.key] if knob.index is None else baseline[knob.key][knob.index]
                best_value, best_score = current, baseline_value
                for candidate in param.grid(points):
                    if candidate == current:
                        continue
                    trial_values = dict(baseline)
                    if knob.index is None:
                        trial_values[knob.key] = candidate
                    else:
                        trial_values[knob.key] = [*baseline[knob.key]]
                        trial_values[knob.key][knob.index] = candidate
                    score = evaluate(fit_lengths(space, trial_values))
                    if score is not None and (best_score is None or better(score, best_score)):
                        best_value, best_score = candidate, score
                log(
                    f"round {round_number} {knob.name}: baseline {current!r} ({objective.metric} "
                    f"{_fmt(baseline_value)}) -> winner {best_value!r} ({objective.metric} {_fmt(best_score)})"
                )
                if best_value != current:
                    changed = True
                    if knob.index is None:
                        baseline[knob.key] = best_value
                    else:
                        baseline[knob.key][knob.index] = best_value
                    baseline, baseline_value = fit_lengths(space, baseline), best_score
            if not changed:
                log(f"round {round_number}: no knob improved {objective.metric}; stopping")
                break
    except _BudgetSpent:
        log(f"the study's {context.total} trials are spent")
    log(f"coordinate result: {json.dumps(baseline)} ({objective.metric} {_fmt(baseline_value)})")


class _BudgetSpent(Exception):
    pass


def _fmt(value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.4f}" if abs(value) < 1e4 else f"{value:.4g}"


__all__ = [
    "SweepContext",
    "TrialSeededSampler",
    "base_settings",
    "counted",
    "default_storage",
    "open_study",
    "run_coordinate",
    "run_one",
    "run_tpe",
]
