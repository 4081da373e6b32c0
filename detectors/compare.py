"""``python -m detectors.compare DIR... [--output DIR]``: detectors side by side.

Each ``DIR`` is a training run (``summary.json`` + ``metrics.json``: its validation split), a
``detectors.evaluate`` output or a ``detectors.image.baseline`` output (``results.json``: its
benchmark pass). One table (score, MCC, Brier, ROC-AUC, PR-AUC, ECE, EER, trainable parameters,
ms per sample) is printed and written as ``comparison.csv`` and ``comparison.md``, with one ROC and
one precision-recall plot holding a curve per detector (from each directory's ``predictions.csv``).
Compare detectors on the same samples: evaluation outputs of one ``--data`` are; runs are compared
on their own validation splits.
"""

from __future__ import annotations

import csv
import io
import json
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np

from detectors import cli
from detectors.atomic import atomic_open, write_text
from detectors.cli import command
from detectors.errors import ConfigError

COLUMNS = (
    ("score", "score"),
    ("mcc", "MCC"),
    ("brier", "Brier"),
    ("roc_auc", "ROC-AUC"),
    ("pr_auc", "PR-AUC"),
    ("ece", "ECE"),
    ("eer", "EER"),
    ("trainable_parameters", "trainable params"),
    ("ms_per_sample", "ms/sample"),
    ("n", "n"),
)


def describe(directory: Path) -> dict[str, Any]:
    """One row of the table: the directory's kind, metrics and parameter count."""
    directory = Path(directory)
    if not directory.is_dir():
        raise ConfigError(directory, None, "no such directory")
    results_file, metrics_file, summary_file = (
        directory / name for name in ("results.json", "metrics.json", "summary.json")
    )
    if results_file.is_file():
        results = _read_json(results_file)
        base = results.get("base") or {}
        row = {key: base.get(key) for key, _ in COLUMNS}
        row.update(
            kind="evaluation",
            ms_per_sample=base.get("ms_per_sample_mean"),
            trainable_parameters=results.get("trainable_parameters"),
        )
        row["score"] = results.get("score", base.get("score"))
    elif metrics_file.is_file() and summary_file.is_file():
        metrics, summary = _read_json(metrics_file), _read_json(summary_file)
        validation = metrics.get("validation") or {}
        row = {key: validation.get(key) for key, _ in COLUMNS}
        row.update(
            kind=f"run ({summary.get('arch', '?')}, validation)",
            trainable_parameters=summary.get("trainable_parameters"),
            ms_per_sample=validation.get("ms_per_sample"),
        )
    else:
        raise ConfigError(
            directory,
            None,
            "neither a run directory (summary.json, metrics.json) nor an evaluation output (results.json)",
        )
    if row.get("trainable_parameters") is None and summary_file.is_file():
        row["trainable_parameters"] = _read_json(summary_file).get("trainable_parameters")
    row["name"] = directory.name
    row["directory"] = str(directory)
    return row


def read_predictions(path: Path) -> tuple[np.ndarray, np.ndarray] | None:
    """(labels, p(fake)) of a ``predictions.csv``; rows with a non-finite p(fake) are left out."""
    if not path.is_file():
        return None
    labels, probs = [], []
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        if not {"label", "prob_fake"} <= set(reader.fieldnames or ()):
            raise ConfigError(path, None, "needs the columns label and prob_fake")
        for number, record in enumerate(reader, start=2):
            try:
                label, prob = int(record["label"]), float(record["prob_fake"])
            except ValueError as error:
                raise ConfigError(path, f"line {number}", f"unreadable label or prob_fake ({error})") from error
            if math.isfinite(prob):
                labels.append(label)
                probs.append(prob)
    return np.array(labels, dtype=np.int64), np.array(probs, dtype=np.float64)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise ConfigError(path, None, f"unreadable JSON ({error})") from error


def _format(value: Any) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    if isinstance(value, bool) or isinstance(value, int):
        return f"{value:,}" if isinstance(value, int) else str(value)
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 1000 else f"{value:,.0f}"
    return str(value)


def table(rows: list[dict[str, Any]]) -> str:
    """The comparison as a Markdown table."""
    header = ["detector", *(title for _, title in COLUMNS), "source"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [row["name"], *(_format(row.get(key)) for key, _ in COLUMNS), row["kind"]]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def compare(directories: list[Path], output: Path, names: list[str] | None = None) -> list[dict[str, Any]]:
    """Describe every directory, write ``comparison.csv``, ``comparison.md``, ``roc.png`` and
    ``pr.png`` under ``output`` and return the rows."""
    from detectors.plots import curves_plot

    if names is not None and len(names) != len(directories):
        raise ConfigError(
            None, "--names", f"one name per directory: {len(directories)} directories, {len(names)} names"
        )
    rows = [describe(directory) for directory in directories]
    for index, row in enumerate(rows):
        if names is not None:
            row["name"] = names[index]
    taken: dict[str, int] = {}
    for row in rows:  # two runs called "run" stay apart in the legend
        taken[row["name"]] = taken.get(row["name"], 0) + 1
        if taken[row["name"]] > 1:
            row["name"] = f"{row['name']} ({taken[row['name']]})"
    output.mkdir(parents=True, exist_ok=True)
    with atomic_open(output / "comparison.csv", "w") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["detector", *(key for key, _ in COLUMNS), "source", "directory"])
        for row in rows:
            writer.writerow(
                [
                    row["name"],
                    *("" if row.get(key) is None else row[key] for key, _ in COLUMNS),
                    row["kind"],
                    row["directory"],
                ]
            )
    write_text(output / "comparison.md", table(rows))
    curves = {}
    for row in rows:
        predictions = read_predictions(Path(row["directory"]) / "predictions.csv")
        row["curve"] = predictions is not None
        if predictions is not None:
            curves[row["name"]] = predictions
    curves_plot(curves, output / "roc.png", "roc", title="ROC")
    curves_plot(curves, output / "pr.png", "pr", title="Precision-recall")
    return rows


@command
def main(argv: list[str] | None = None) -> int:
    parser = cli.ArgumentParser(prog="python -m detectors.compare", description=__doc__.splitlines()[0])
    parser.add_argument("directories", nargs="+", type=Path, help="run directories or evaluation outputs")
    parser.add_argument("--output", type=Path, default=Path("comparison"), help="where the table and plots go")
    parser.add_argument("--names", help="comma-separated names for the directories (default: their folder names)")
    args = parser.parse_args(argv)
    names = [name.strip() for name in args.names.split(",")] if args.names else None
    rows = compare(args.directories, args.output, names)
    buffer = io.StringIO()
    buffer.write(table(rows))
    missing = [row["name"] for row in rows if not row["curve"]]
    if missing:
        buffer.write(f"no predictions.csv (no curve): {', '.join(missing)}\n")
    buffer.write(f"written: {args.output / 'comparison.csv'}, comparison.md, roc.png, pr.png\n")
    print(buffer.getvalue(), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
