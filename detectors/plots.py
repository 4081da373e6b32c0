"""Diagnostic plots: reliability diagram, ROC and PR curves, temperature sweep.

Figures are built with the object-oriented matplotlib API on an Agg canvas (no pyplot, no global
backend switch, safe in worker threads and on headless machines) and every PNG is written through
``detectors.atomic.atomic_path``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score, roc_curve

from detectors.atomic import atomic_path
from detectors.metrics import (
    ECE_BINS,
    ArrayLike,
    calibration_bins,
    expected_calibration_error,
    to_binary_labels,
    to_probabilities,
)

__all__ = [
    "new_figure",
    "save_figure",
    "reliability_diagram",
    "roc_curve_plot",
    "pr_curve_plot",
    "temperature_sweep_plot",
    "label_histogram",
    "curves_plot",
]


def new_figure(size: tuple[float, float]) -> Figure:
    figure = Figure(figsize=size, dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def save_figure(figure: Figure, path: str | Path) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png")
    return path


def _one_class_note(axes: Any, y: np.ndarray) -> None:
    axes.text(
        0.5,
        0.5,
        f"undefined: only one class present (n={y.size})",
        ha="center",
        va="center",
        transform=axes.transAxes,
    )


def reliability_diagram(
    labels: ArrayLike,
    prob_fake: ArrayLike,
    path: str | Path,
    n_bins: int = ECE_BINS,
    title: str | None = None,
) -> Path:
    """Observed fake frequency against mean p(fake) per bin, with the bin counts underneath."""
    stats = calibration_bins(labels, prob_fake, n_bins)
    ece = expected_calibration_error(labels, prob_fake, n_bins)
    edges, counts = stats["edges"], stats["counts"]
    centres = (edges[:-1] + edges[1:]) / 2
    width = edges[1] - edges[0]
    filled = counts > 0

    figure = new_figure((5.0, 6.0))
    top, bottom = figure.subplots(2, 1, sharex=True, height_ratios=[3, 1])
    top.plot([0, 1], [0, 1], linestyle="--", color="grey", label="perfect calibration")
    top.bar(
        centres[filled],
        stats["fake_rate"][filled],
        width=width * 0.9,
        color="tab:blue",
        alpha=0.7,
        edgecolor="black",
        label="observed fake frequency",
    )
    top.plot(
        stats["mean_prob"][filled],
        stats["fake_rate"][filled],
        "o-",
        color="tab:red",
        label="observed at bin mean p(fake)",
    )
    top.set_xlim(0, 1)
    top.set_ylim(0, 1)
    top.set_ylabel("observed fraction fake")
    top.legend(loc="upper left", fontsize="small")
    ece_text = "n/a" if ece is None else f"{ece:.4f}"
    top.set_title(f"{title + ' - ' if title else ''}reliability (ECE {ece_text}, n={int(counts.sum())})")

    bottom.bar(centres, counts, width=width * 0.9, color="tab:gray", edgecolor="black")
    bottom.set_xlabel("predicted p(fake)")
    bottom.set_ylabel("count")
    return save_figure(figure, path)


def roc_curve_plot(labels: ArrayLike, prob: ArrayLike, path: str | Path, title: str | None = None) -> Path:
    """ROC curve with its AUC; a note instead of a curve when only one class is present."""
    y, p = to_binary_labels(labels), to_probabilities(prob)
    figure = new_figure((5.0, 5.0))
    axes = figure.subplots()
    axes.plot([0, 1], [0, 1], linestyle="--", color="grey")
    if y.size and y.min() != y.max():
        fpr, tpr, _ = roc_curve(y, p)
        axes.plot(fpr, tpr, color="tab:blue", label=f"AUC {roc_auc_score(y, p):.4f}")
        axes.legend(loc="lower right")
    else:
        _one_class_note(axes, y)
    axes.set_xlim(0, 1)
    axes.set_ylim(0, 1)
    axes.set_xlabel("false positive rate (real called fake)")
    axes.set_ylabel("true positive rate (fake caught)")
    axes.set_title(title or "ROC")
    return save_figure(figure, path)


def pr_curve_plot(labels: ArrayLike, prob: ArrayLike, path: str | Path, title: str | None = None) -> Path:
    """Precision-recall curve for the "fake" class with its average precision."""
    y, p = to_binary_labels(labels), to_probabilities(prob)
    figure = new_figure((5.0, 5.0))
    axes = figure.subplots()
    if y.size and y.min() != y.max():
        precision, recall, _ = precision_recall_curve(y, p)
        axes.step(recall, precision, where="post", color="tab:blue", label=f"AP {average_precision_score(y, p):.4f}")
        axes.axhline(y.mean(), linestyle="--", color="grey", label=f"prevalence {y.mean():.3f}")
        axes.legend(loc="lower left")
    else:
        _one_class_note(axes, y)
    axes.set_xlim(0, 1)
    axes.set_ylim(0, 1.02)
    axes.set_xlabel("recall (fake)")
    axes.set_ylabel("precision (fake)")
    axes.set_title(title or "Precision-recall")
    return save_figure(figure, path)


def temperature_sweep_plot(rows: Sequence[Mapping[str, float]], path: str | Path, chosen: float | None = None) -> Path:
    """Score, Brier, ECE and NLL against temperature (log axis); marks the chosen temperature."""
    if not rows:
        raise ValueError("temperature_sweep_plot needs at least one row")
    temperature = np.array([row["temperature"] for row in rows], dtype=np.float64)
    order = np.argsort(temperature)
    temperature = temperature[order]

    def column(name: str) -> np.ndarray:
        return np.array([rows[i][name] for i in order], dtype=np.float64)

    figure = new_figure((7.0, 5.0))
    left = figure.subplots()
    left.set_xscale("log", base=2)
    left.plot(temperature, column("score"), "o-", color="tab:green", markersize=3, label="score (higher better)")
    left.plot(temperature, column("brier"), "s-", color="tab:blue", markersize=3, label="Brier")
    left.plot(temperature, column("ece"), "^-", color="tab:orange", markersize=3, label="ECE")
    left.set_xlabel("temperature")
    left.set_ylabel("score / Brier / ECE")
    right = left.twinx()
    right.plot(temperature, column("nll"), "d--", color="tab:red", markersize=3, label="NLL")
    right.set_ylabel("NLL")
    if chosen is not None:
        left.axvline(chosen, color="black", linestyle=":", label=f"chosen T={chosen:.3g}")
    handles = left.get_legend_handles_labels()
    extra = right.get_legend_handles_labels()
    figure.legend(handles[0] + extra[0], handles[1] + extra[1], loc="outside lower center", ncols=3, fontsize="small")
    left.set_title("Temperature sweep")
    return save_figure(figure, path)


def label_histogram(values: ArrayLike, path: str | Path, threshold: float = 0.5, title: str | None = None) -> Path:
    """Histogram of training labels in [0, 1] (soft teacher scores or hard 0/1), with the share below
    0.1 and at or above ``threshold`` (the seed 004 check to run on every new dataset)."""
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    figure = new_figure((6.0, 4.0))
    axes = figure.subplots()
    axes.hist(v, bins=np.linspace(0, 1, 21), color="tab:blue", edgecolor="white")
    axes.axvline(threshold, linestyle="--", color="tab:red", label=f"threshold {threshold:g}")
    if v.size:
        axes.text(
            0.98,
            0.95,
            f"n={v.size}\n< 0.1: {np.mean(v < 0.1):.3f}\n>= {threshold:g}: {np.mean(v >= threshold):.3f}",
            ha="right",
            va="top",
            transform=axes.transAxes,
        )
    axes.set_xlim(0, 1)
    axes.set_xlabel("label (p(fake))")
    axes.set_ylabel("training samples")
    axes.legend(loc="upper center")
    axes.set_title(title or "Training label distribution")
    return save_figure(figure, path)


def curves_plot(
    curves: Mapping[str, tuple[ArrayLike, ArrayLike]], path: str | Path, kind: str, title: str | None = None
) -> Path:
    """One ROC (``kind="roc"``) or precision-recall (``kind="pr"``) plot with a curve per detector:
    ``curves`` maps a name to its (labels, p(fake)); a detector whose labels hold one class is listed
    without a curve."""
    if kind not in ("roc", "pr"):
        raise ValueError(f"kind must be 'roc' or 'pr', got {kind!r}")
    figure = new_figure((6.0, 6.0))
    axes = figure.subplots()
    if kind == "roc":
        axes.plot([0, 1], [0, 1], linestyle="--", color="grey")
    for name, (labels, prob) in curves.items():
        y, p = to_binary_labels(labels), to_probabilities(prob)
        if not y.size or y.min() == y.max():
            axes.plot([], [], label=f"{name} (one class only)")
            continue
        if kind == "roc":
            fpr, tpr, _ = roc_curve(y, p)
            axes.plot(fpr, tpr, label=f"{name}: AUC {roc_auc_score(y, p):.4f}")
        else:
            precision, recall, _ = precision_recall_curve(y, p)
            axes.step(recall, precision, where="post", label=f"{name}: AP {average_precision_score(y, p):.4f}")
    axes.set_xlim(0, 1)
    axes.set_ylim(0, 1.02)
    if kind == "roc":
        axes.set_xlabel("false positive rate (real called fake)")
        axes.set_ylabel("true positive rate (fake caught)")
    else:
        axes.set_xlabel("recall (fake)")
        axes.set_ylabel("precision (fake)")
    axes.legend(loc="lower right" if kind == "roc" else "lower left", fontsize="small")
    axes.set_title(title or ("ROC" if kind == "roc" else "Precision-recall"))
    return save_figure(figure, path)
