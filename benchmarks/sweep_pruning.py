"""Sweeps: wall time of a study with pruning vs without (goal <= 0.6x), and a trial's overhead vs the
same bare fit (goal <= 1.1x).

1. Pruning: FakeFinder's space (``configs/sweeps/fakefinder.yaml``, 4 epochs per trial) on the image
   demo data, ``--trials 12``, median pruner vs ``--pruner none``, same seed.
2. Overhead: ``python -m detectors.sweep`` with ``--overhead-trials`` trials whose only parameter has
   one choice (every trial is exactly the bare fit's settings) vs as many
   ``python -m detectors.image.fit`` runs with those settings; both in this process, alternated,
   median of ``--repeats``. The study's time includes creating the study and its storage,
   trials.csv and best.yaml after every trial, and the plots. A 1-trial study besides separates a
   trial's own cost (what one more trial adds) from the study's fixed cost.

Times are this process's CPU seconds besides wall seconds: on a shared machine the wall time of
identical fits varied 1.4 - 20 s with the other users' load. The pruning comparison also counts the
epochs trained, which no load changes.

    python benchmarks/sweep_pruning.py [--trials 12] [--repeats 2] [--overhead-trials 4] [--out DIR]
"""

from __future__ import annotations

import argparse
import csv
import io
import statistics
import sys
import tempfile
import time
from contextlib import redirect_stdout
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def timed_sweep(argv: list[str]) -> tuple[float, float, str]:
    """(wall seconds, CPU seconds of this process, console output) of one sweep."""
    from detectors.sweep.__main__ import sweep

    out = io.StringIO()
    start, cpu = time.perf_counter(), time.process_time()
    with redirect_stdout(out):
        status = sweep([str(a) for a in argv])
    if status != 0:
        raise SystemExit(out.getvalue())
    return time.perf_counter() - start, time.process_time() - cpu, out.getvalue()


def epochs_trained(directory: Path, max_epochs: int) -> int:
    """Epochs the study's trials trained: a pruned trial stops after its last reported epoch."""
    with (directory / "trials.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    return sum(max_epochs if row["state"] == "complete" else int(row["last_epoch"] or 0) + 1 for row in rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--overhead-trials", type=int, default=4)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--skip-pruning", action="store_true")
    args = parser.parse_args()
    if args.overhead_trials < 2:
        parser.error("--overhead-trials must be at least 2 (a trial's own cost is N trials minus 1)")

    from detectors.image.demo import write_demo_images
    from detectors.image.fit import IMAGE
    from detectors.registry import list_detectors
    from detectors.sweep.space import load_space
    from detectors.sweep.study import base_settings
    from detectors.sweep.trial import set_flags
    from detectors.training.fit import configure_logging, run_fit

    configure_logging()
    root = args.out or Path(tempfile.mkdtemp(prefix="sweep-bench-"))
    data = write_demo_images(root / "demo")  # the demo's default size: 60 real + 60 fake images
    space = ROOT / "configs" / "sweeps" / "fakefinder.yaml"
    common = ["--data", data, "--trials", args.trials, "--seed", 0, "--set", "data.num_workers=0"]

    if not args.skip_pruning:
        pruned_s, pruned_cpu, pruned_log = timed_sweep([space, *common, "--output", root / "pruned"])
        full_s, full_cpu, full_log = timed_sweep([space, *common, "--output", root / "unpruned", "--pruner", "none"])
        count = sum(" pruned " in line for line in pruned_log.splitlines() if line.startswith("trial "))
        best = [line for line in pruned_log.splitlines() if line.startswith("trial ")][-1].split("|")[1].strip()
        best_full = [line for line in full_log.splitlines() if line.startswith("trial ")][-1].split("|")[1].strip()
        epochs, full_epochs = epochs_trained(root / "pruned", 4), epochs_trained(root / "unpruned", 4)
        print(
            f"pruning: {args.trials} trials, median pruner {pruned_s:.1f} s wall / {pruned_cpu:.1f} s CPU, "
            f"{epochs} epochs ({count} pruned; {best}) vs none {full_s:.1f} s / {full_cpu:.1f} s, {full_epochs} "
            f"epochs ({best_full}): wall ratio {pruned_s / full_s:.2f}, CPU ratio {pruned_cpu / full_cpu:.2f}, "
            f"epochs ratio {epochs / full_epochs:.2f}"
        )

    # overhead: a study of --overhead-trials identical trials vs as many bare fits with the same settings
    one = root / "one_choice.yaml"
    fixed = {"trainer.max_epochs": 4, "data.num_workers": 0, "model.image_size": 32}
    one.write_text(
        yaml.safe_dump({"fit": {"arch": "flexcnn"}, "fixed": fixed, "params": {"optim.lr": {"choices": [1.0e-3]}}})
    )
    settings = base_settings(load_space(one), 0)
    settings.setdefault("optim", {})["lr"] = 1.0e-3

    def bare_fits(tag: str) -> list[float]:
        """CPU seconds of each bare fit (this machine's wall time follows its other users' load)."""
        seconds = []
        for index in range(args.overhead_trials):
            start = time.process_time()
            with redirect_stdout(io.StringIO()):
                run_fit(
                    "image",
                    IMAGE,
                    list_detectors("image"),
                    "flexcnn",
                    [
                        "--arch",
                        "flexcnn",
                        "--data",
                        str(data),
                        "--output",
                        str(root / f"bare-{tag}-{index}"),
                        *set_flags(settings),
                        "--set",
                        "trainer.enable_progress_bar=false",
                    ],
                )
            seconds.append(time.process_time() - start)
        return seconds

    args.overhead_trials, trials = 1, args.overhead_trials
    bare_fits("warm-up")  # imports, first-call caches
    args.overhead_trials = trials
    sweeps, singles, fits = [], [], []
    for repeat in range(args.repeats):
        fits.append(sum(bare_fits(str(repeat))))
        _, cpu, _ = timed_sweep(
            [one, "--data", data, "--trials", args.overhead_trials, "--output", root / f"overhead-{repeat}"]
        )
        sweeps.append(cpu)
        _, cpu, _ = timed_sweep([one, "--data", data, "--trials", 1, "--output", root / f"overhead-single-{repeat}"])
        singles.append(cpu)
    sweep_s, single_s, fit_s = statistics.median(sweeps), statistics.median(singles), statistics.median(fits)
    # A trial's own cost: what one more trial adds to a study (the study's storage, plots and final
    # files are paid once, whatever the number of trials).
    per_trial = (sweep_s - single_s) / (args.overhead_trials - 1)
    per_fit = fit_s / args.overhead_trials
    print(
        f"overhead: a {args.overhead_trials}-trial study {sweep_s:.2f} s CPU vs {args.overhead_trials} bare fits "
        f"{fit_s:.2f} s CPU (medians of {args.repeats}): whole-study ratio {sweep_s / fit_s:.3f}; "
        f"a 1-trial study {single_s:.2f} s, so one more trial costs {per_trial:.2f} s vs a bare fit's "
        f"{per_fit:.2f} s: per-trial ratio {per_trial / per_fit:.3f}; study fixed cost "
        f"{single_s - per_trial:.2f} s (identical trials: scores equal the bare fits')"
    )
    print(f"(runs in {root})")


if __name__ == "__main__":
    main()
