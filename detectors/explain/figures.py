"""Figures of :mod:`detectors.explain`: heat maps over images and frames, frame contributions over
time, attribution over time and mel bands with breath segments. Object-oriented matplotlib on an
Agg canvas (no pyplot state, headless), PNGs written atomically."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from matplotlib.colors import TwoSlopeNorm
from matplotlib.figure import Figure

from detectors.plots import new_figure, save_figure


def _rgb(image: torch.Tensor) -> np.ndarray:
    """``[3, H, W]`` 0..255 -> ``[H, W, 3]`` uint8."""
    return image.detach().float().clamp(0, 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()


def _overlay(axes, image: torch.Tensor, heat: torch.Tensor, title: str) -> None:
    """The image with the positive part of ``heat`` over it (the regions pushing towards "fake")."""
    positive = heat.detach().float().clamp_min(0).cpu().numpy()
    top = positive.max()
    axes.imshow(_rgb(image))
    if top > 0:
        axes.imshow(positive / top, cmap="inferno", alpha=0.75 * (positive / top) ** 0.7, vmin=0, vmax=1)
        y, x = np.unravel_index(int(np.argmax(positive)), positive.shape)
        axes.plot([x], [y], marker="+", color="cyan", markersize=12, markeredgewidth=2)
    axes.set_title(title, fontsize="small")
    axes.set_axis_off()


def _signed(axes, figure: Figure, heat: torch.Tensor, title: str) -> None:
    values = heat.detach().float().cpu().numpy()
    bound = float(np.abs(values).max()) or 1.0
    if values.min() >= 0:
        shown = axes.imshow(values, cmap="inferno", vmin=0, vmax=bound)
    else:
        shown = axes.imshow(values, cmap="RdBu_r", norm=TwoSlopeNorm(0.0, -bound, bound))
    figure.colorbar(shown, ax=axes, shrink=0.8)
    axes.set_title(title, fontsize="small")
    axes.set_axis_off()


def image_figure(image: torch.Tensor, heat: torch.Tensor, title: str, path: str | Path) -> Path:
    """Input with the map over it, and the map alone (signed maps: red pushes towards fake)."""
    figure = new_figure((9.0, 4.6))
    left, right = figure.subplots(1, 2)
    _overlay(left, image, heat, "input + map (peak +)")
    _signed(right, figure, heat, "attribution (fake log-odds)")
    figure.suptitle(title, fontsize="medium")
    return save_figure(figure, path)


def overlay_png(image: torch.Tensor, heat: torch.Tensor, path: str | Path, title: str = "") -> Path:
    """A small single-panel overlay (report thumbnails)."""
    figure = new_figure((2.4, 2.6))
    _overlay(figure.subplots(), image, heat, title)
    return save_figure(figure, path)


def video_figure(
    contributions: torch.Tensor,
    frames: torch.Tensor,
    top: Sequence[int],
    maps: torch.Tensor,
    title: str,
    path: str | Path,
) -> Path:
    """Frame contributions over the clip, and the top frames with their maps."""
    count = max(1, len(top))
    figure = new_figure((max(8.0, 2.6 * count), 6.4))
    grid = figure.add_gridspec(2, count, height_ratios=[1.0, 1.3])
    bars = figure.add_subplot(grid[0, :])
    values = contributions.detach().float().cpu().numpy()
    colours = ["tab:red" if v > 0 else "tab:blue" for v in values]
    bars.bar(np.arange(len(values)), values, color=colours)
    for t in top:
        bars.annotate("top", (t, values[t]), ha="center", va="bottom", fontsize="x-small")
    bars.axhline(0, color="black", linewidth=0.8)
    bars.set_xlabel("frame (position in the clip the model is fed)")
    bars.set_ylabel("drop in fake log-odds\nwhen the frame is replaced")
    bars.set_xticks(np.arange(len(values)))
    for column, (t, heat) in enumerate(zip(top, maps)):
        _overlay(figure.add_subplot(grid[1, column]), frames[t], heat, f"frame {t} ({values[t]:+.3f})")
    figure.suptitle(title, fontsize="medium")
    return save_figure(figure, path)


def audio_figure(
    mel: torch.Tensor,
    attribution: torch.Tensor,
    edges_hz: Sequence[float],
    window_s: float,
    duration_s: float,
    segments: Sequence[tuple[float, float]],
    title: str,
    path: str | Path,
) -> Path:
    """Log-mel spectrogram, attribution over time x mel bands, and attribution over time; breath
    segments are shaded on every panel."""
    figure = new_figure((10.0, 7.5))
    spectrogram, heat, curve = figure.subplots(3, 1, sharex=True, height_ratios=[1.2, 1.2, 0.8])
    spectrogram.imshow(
        mel.detach().float().cpu().numpy(),
        origin="lower",
        aspect="auto",
        cmap="magma",
        extent=(0, duration_s, 0, mel.shape[0]),
    )
    spectrogram.set_ylabel("mel bin")
    spectrogram.set_title("log-mel spectrogram", fontsize="small")
    values = attribution.detach().float().cpu().numpy()
    bound = float(np.abs(values).max()) or 1.0
    windows = values.shape[1]
    shown = heat.imshow(
        values,
        origin="lower",
        aspect="auto",
        cmap="RdBu_r",
        norm=TwoSlopeNorm(0.0, -bound, bound),
        extent=(0, windows * window_s, 0, values.shape[0]),
    )
    heat.set_yticks(np.arange(values.shape[0]) + 0.5)
    heat.set_yticklabels(
        [f"{edges_hz[b] / 1000:.1f}-{edges_hz[b + 1] / 1000:.1f}k" for b in range(values.shape[0])], fontsize="x-small"
    )
    heat.set_ylabel("mel band (Hz)")
    heat.set_title("attribution: drop in fake log-odds when a band is removed in a window", fontsize="small")
    figure.colorbar(shown, ax=heat, shrink=0.8)
    per_window = values.sum(axis=0)
    centres = (np.arange(windows) + 0.5) * window_s
    curve.bar(centres, per_window, width=window_s * 0.9, color=["tab:red" if v > 0 else "tab:blue" for v in per_window])
    curve.axhline(0, color="black", linewidth=0.8)
    curve.set_xlabel("time (s)")
    curve.set_ylabel("over all bands")
    for axes in (spectrogram, heat, curve):
        for start, end in segments:
            axes.axvspan(start, end, color="lime", alpha=0.25, linewidth=0)
    curve.set_xlim(0, duration_s)
    figure.suptitle(
        title + ("   (green: breaths found by detect_breaths)" if segments else "   (no breaths found)"),
        fontsize="medium",
    )
    return save_figure(figure, path)
