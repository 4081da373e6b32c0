"""``python -m detectors.sweep SPACE.yaml --data YAML --trials N --output DIR``: search a detector's settings.

Every trial is an ordinary fit run in ``DIR/trial-NNNN``; the study lives in ``DIR/study.db``
(SQLite) or in ``--storage URL`` (any Optuna storage, e.g. PostgreSQL): run the same command in
several processes or on several machines and they share the study's ``--trials`` trials.
"""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

from detectors import cli
from detectors.errors import ConfigError

STRATEGIES = ("tpe", "coordinate")


def build_parser() -> cli.ArgumentParser:
    parser = cli.ArgumentParser(prog="python -m detectors.sweep", description=__doc__.splitlines()[0])
    parser.add_argument("space", type=Path, help="search-space YAML (see configs/sweeps/)")
    parser.add_argument("--data", type=Path, required=True, help="dataset YAML every trial trains on")
    parser.add_argument(
        "--trials",
        type=cli.int_at_least(1),
        required=True,
        help="trials of the study in total (shared by every process working on it)",
    )
    parser.add_argument("--output", type=Path, required=True, help="sweep directory (trial-NNNN runs, results)")
    parser.add_argument(
        "--storage",
        help="Optuna storage URL (default: sqlite:///OUTPUT/study.db), e.g. postgresql://user:password@host/db",
    )
    parser.add_argument("--study-name", help="study in the storage (default: the space file's name)")
    parser.add_argument(
        "--strategy",
        choices=STRATEGIES,
        default="tpe",
        help="tpe: Optuna's TPE sampler with pruning; coordinate: one parameter at a time",
    )
    parser.add_argument("--rounds", type=cli.int_at_least(1), default=2, help="coordinate: passes over the parameters")
    parser.add_argument(
        "--points",
        type=cli.int_at_least(2),
        default=4,
        help="coordinate: values tried per range parameter (choices: all)",
    )
    parser.add_argument(
        "--pruner",
        choices=("median", "hyperband", "none"),
        help="override the space's pruner (single-objective tpe studies)",
    )
    parser.add_argument(
        "--seed",
        type=cli.int_at_least(0),
        default=0,
        help="sampler seed, and every trial's run and split seed (unless the space fixes them)",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="add a fixed setting for every trial (YAML-parsed), e.g. trainer.limit_train_batches=0.25",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    from detectors.training.fit import configure_logging

    configure_logging()
    return cli.command(sweep)(argv)


def sweep(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)  # before the heavy imports: --help and usage errors are instant

    from detectors.data.catalog import load_items
    from detectors.settings import resolve_run_config
    from detectors.sweep import results
    from detectors.sweep.space import corner_values, load_space, trial_layers
    from detectors.sweep.study import (
        SweepContext,
        base_settings,
        default_storage,
        open_study,
        run_coordinate,
        run_tpe,
    )

    overrides = {}
    for item in args.set:
        key, sep, raw = item.partition("=")
        if not sep:
            raise ConfigError(None, "--set", f"expected KEY=VALUE, got {item!r}")
        overrides[key.strip()] = yaml.safe_load(raw)
    space = load_space(args.space, overrides)
    if args.strategy == "coordinate" and len(space.objectives) > 1:
        raise ConfigError(
            args.space,
            "objectives",
            "the coordinate strategy follows one objective; list one, or use --strategy tpe for a Pareto front",
        )
    load_items(args.data, modality=space.modality)  # the dataset YAML is checked before the first trial
    pruner = args.pruner or space.pruner
    prune = (
        args.strategy == "tpe"
        and pruner != "none"
        and len(space.objectives) == 1
        and not space.objectives[0].efficiency
    )
    if pruner != "none" and len(space.objectives) > 1:
        print("note: pruning acts on single-objective studies only; this study runs every trial to the end")
    settings = base_settings(space, args.seed)
    max_epochs = resolve_run_config(trial_layers(space, corner_values(space, -1))).trainer.max_epochs or 1
    args.output.mkdir(parents=True, exist_ok=True)
    storage = args.storage or default_storage(args.output)
    study_name = args.study_name or space.name
    study = open_study(space, storage, study_name, args.seed, pruner if prune else "none", max_epochs)

    def report(study, trial) -> None:
        print(results.progress_line(study, space, trial, args.trials), flush=True)
        results.write_trials_csv(study, space, args.output / "trials.csv")
        results.write_best(study, space, args.output, args.data)

    context = SweepContext(
        space=space,
        data=args.data.resolve(),
        output=args.output.resolve(),
        settings=settings,
        total=args.trials,
        prune=prune,
        report=report,
    )
    what = ", ".join(f"{o.direction} {o.metric}" for o in space.objectives)
    print(
        f"sweep {study_name!r}: {space.arch} ({space.modality}), {len(space.params)} parameter(s), {what}; "
        f"{args.trials} trial(s), strategy {args.strategy}, pruner {pruner if prune else 'none'}; storage {storage}",
        flush=True,
    )
    if args.strategy == "coordinate":
        run_coordinate(study, context, rounds=args.rounds, points=args.points, log=lambda line: print(line, flush=True))
    else:
        run_tpe(study, context)

    results.write_trials_csv(study, space, args.output / "trials.csv")
    best = results.write_best(study, space, args.output, args.data)
    notes = results.write_plots(study, space, args.output / "plots")
    for note in notes:
        print(f"note: plot not drawn: {note}")
    if best is None:
        print("no trial completed: no best.yaml", file=sys.stderr)
        return 1
    print(
        f"best: trial {best.number} -> {args.output / 'best.yaml'}; trials: {args.output / 'trials.csv'}; "
        f"plots: {args.output / 'plots'}; dashboard: optuna-dashboard {storage}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
