"""Frame index rules: which frames of a video a detector sees.

Every rule is a pure function of the video's frame count and frame rate and returns exactly
``num_frames`` indices; clips that are too short are padded by repeating the last index, so a batch
of videos always stacks into ``[B, T, 3, H, W]``.

- :func:`benchmark_indices`: the benchmark's loader (``preprocessing.num_frames`` / ``frame_rate``).
- :func:`window_indices`: ReStraV's 2 s window around the middle of the video (official code).
- :func:`uniform_indices`, :func:`random_indices`: spread over the whole video (evaluation/training).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

DEFAULT_FPS = 30.0  # the benchmark's fallback when a video carries no usable frame rate
MAX_BENCHMARK_FRAMES = 64  # the benchmark clamps preprocessing.num_frames to this

SamplingMode = Literal["benchmark", "window", "uniform", "random"]


def _check(total: int, num_frames: int) -> None:
    if total < 1:
        raise ValueError(f"a video needs at least one frame to sample from, got total={total}")
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")


def _effective_fps(fps: float | None) -> float:
    if fps is None or not math.isfinite(fps) or fps <= 0:
        return DEFAULT_FPS
    return float(fps)


def pad_indices(indices: list[int], num_frames: int) -> list[int]:
    """Cut or pad ``indices`` to ``num_frames`` by repeating the last index."""
    if not indices:
        raise ValueError("cannot pad an empty index list")
    indices = list(indices[:num_frames])
    return indices + [indices[-1]] * (num_frames - len(indices))


def benchmark_indices(
    total: int, fps: float | None, num_frames: int = 16, frame_rate: float | None = None
) -> list[int]:
    """The benchmark's rule.

    With ``frame_rate``: ``step = max(1, round(fps / frame_rate))`` (missing fps -> 30; Python's
    ``round``, i.e. ties to even, as the benchmark computes it) and the first ``num_frames`` of
    ``range(0, total, step)``. Without it: the first ``num_frames`` consecutive frames.
    ``num_frames`` is clamped to 64; short videos repeat their last sampled frame.
    """
    num_frames = min(int(num_frames), MAX_BENCHMARK_FRAMES)
    _check(total, num_frames)
    step = 1
    if frame_rate is not None:
        if frame_rate <= 0:
            raise ValueError(f"frame_rate must be > 0, got {frame_rate}")
        step = max(1, round(_effective_fps(fps) / frame_rate))
    return pad_indices(list(range(0, total, step))[:num_frames], num_frames)


def window_indices(total: int, fps: float | None, num_frames: int = 24, window_sec: float = 2.0) -> list[int]:
    """ReStraV's window: ``num_frames`` timestamps ``window_sec / (T - 1)`` apart around the middle.

    Follows the official code (torchcodec ``clips_at_regular_timestamps`` with one clip and
    ``policy="repeat_last"``), for a constant-frame-rate stream starting at 0 whose duration is
    ``total / fps`` (missing fps -> 30):

    - the clip starts at ``max(0, duration / 2 - window_sec / 2)``;
    - timestamps ``start + i * window_sec / (T - 1)`` are formed in float32 (torchcodec builds them
      from a float32 ``torch.arange``), and those not below the end of the stream are replaced by
      the last valid timestamp: a short video repeats the last *sampled* frame, which need not be
      the video's last frame;
    - a timestamp maps to the frame being shown at that time, i.e. the largest ``i`` with
      ``i / fps <= t``.
    """
    _check(total, num_frames)
    fps = _effective_fps(fps)
    duration = total / fps
    start = max(0.0, duration / 2.0 - window_sec / 2.0)
    spacing = window_sec / max(num_frames - 1, 1)

    start32 = np.float32(start)
    end32 = np.float32(duration)
    timestamps: list[float] = []
    for i in range(num_frames):
        t = np.float32(start32 + np.float32(i * spacing))
        if t < end32:
            timestamps.append(float(t))
    timestamps = pad_indices(timestamps, num_frames)  # repeat the last valid timestamp

    indices = []
    for t in timestamps:
        index = math.floor(t * fps)
        # t * fps can land one ulp on the wrong side of an integer; decide with the frame's own
        # start time i / fps, which is what a pts lookup compares against.
        if index / fps > t:
            index -= 1
        elif (index + 1) / fps <= t:
            index += 1
        indices.append(min(max(index, 0), total - 1))
    return indices


def uniform_indices(total: int, num_frames: int) -> list[int]:
    """``num_frames`` indices evenly spread from the first to the last frame (rounded)."""
    _check(total, num_frames)
    if num_frames == 1:
        return [(total - 1) // 2]
    return [round(i * (total - 1) / (num_frames - 1)) for i in range(num_frames)]


def random_indices(total: int, num_frames: int, generator: torch.Generator | None = None) -> list[int]:
    """Sorted random frames (distinct while the video is long enough), for training."""
    _check(total, num_frames)
    if total >= num_frames:
        chosen = torch.randperm(total, generator=generator)[:num_frames]
    else:
        # Too short to pick distinct frames: keep every frame and draw the rest with replacement.
        extra = torch.randint(total, (num_frames - total,), generator=generator)
        chosen = torch.cat([torch.arange(total), extra])
    return sorted(int(i) for i in chosen)


@dataclass(frozen=True)
class FrameSampler:
    """A frame index rule with its parameters, e.g. ``FrameSampler("window", 24, window_sec=2.0)``."""

    mode: SamplingMode = "benchmark"
    num_frames: int = 16
    frame_rate: float | None = None  # "benchmark" mode only
    window_sec: float = 2.0  # "window" mode only

    def __post_init__(self) -> None:
        if self.mode not in ("benchmark", "window", "uniform", "random"):
            raise ValueError(f"unknown sampling mode {self.mode!r}")
        if self.num_frames < 1:
            raise ValueError(f"num_frames must be >= 1, got {self.num_frames}")
        # Checked here, once: a bad value raised per video inside a DataLoader would only mark every
        # video "unreadable" and hide the setting at fault.
        if self.frame_rate is not None and not (math.isfinite(self.frame_rate) and self.frame_rate > 0):
            raise ValueError(f"frame_rate must be a positive number of frames per second, got {self.frame_rate}")
        if not (math.isfinite(self.window_sec) and self.window_sec > 0):
            raise ValueError(f"window_sec must be > 0 seconds, got {self.window_sec}")

    def indices(self, total: int, fps: float | None, generator: torch.Generator | None = None) -> list[int]:
        if self.mode == "benchmark":
            return benchmark_indices(total, fps, self.num_frames, self.frame_rate)
        if self.mode == "window":
            return window_indices(total, fps, self.num_frames, self.window_sec)
        if self.mode == "uniform":
            return uniform_indices(total, self.num_frames)
        return random_indices(total, self.num_frames, generator)

    @property
    def clip_length(self) -> int:
        """How many indices :meth:`indices` returns (the benchmark rule clamps to 64)."""
        if self.mode == "benchmark":
            return min(self.num_frames, MAX_BENCHMARK_FRAMES)
        return self.num_frames

    @property
    def deterministic(self) -> bool:
        """Whether the same video always gives the same frames (only those may be cached)."""
        return self.mode != "random"

    def key(self) -> str:
        """A stable string naming the rule and exactly the parameters it uses (for cache keys)."""
        if self.mode == "benchmark":
            return f"benchmark-n{self.clip_length}-r{self.frame_rate}"
        if self.mode == "window":
            return f"window-n{self.num_frames}-w{self.window_sec}"
        return f"{self.mode}-n{self.num_frames}"
