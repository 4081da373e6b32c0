"""Video samples for training and evaluation, shared by every video detector.

- :func:`load_clip`: sample -> decode -> (H.264 robustness) -> the benchmark's centre crop to aspect
  and OpenCV bilinear resize, frame by frame, as ``uint8 [T, 3, H, W]``. Training, calibration and the benchmark emulation all go
  through it, so a detector is fitted on exactly the frames the exported model will be fed.
- :func:`benchmark_input_loader`: what the benchmark feeds a video submission
  (``preprocessing.num_frames`` / ``frame_rate`` / ``resize`` of its model_config.yaml).
- :class:`ClipLoader`: a picklable ``path -> clip`` for DataLoader workers, with an optional
  on-disk ``FrameCache``; it describes its clips for caches of features computed from them.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any, Callable

import cv2
import torch

from detectors.data.cache import file_fingerprint
from detectors.image.data import preprocessing_resize
from detectors.image.transforms import benchmark_resize
from detectors.video.cache import FrameCache
from detectors.video.io import decoder_key, read_video_frames
from detectors.video.sampling import FrameSampler
from detectors.video.transforms import H264Robustness

DEFAULT_BENCHMARK_FRAMES = 16  # the benchmark's default preprocessing.num_frames


def load_clip(
    path: str,
    sampler: FrameSampler,
    resize: tuple[int, int] | None,
    robustness: bool = False,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Frames of ``path`` picked by ``sampler``, optionally degraded by the benchmark's H.264 pass
    (on the sampled frames, before resizing), then the benchmark's centre crop to aspect and
    ``cv2.INTER_LINEAR`` resize of every frame (GASBench ``ResizeShortestEdge``): uint8 [T, 3, H, W]."""
    frames = read_video_frames(path, sampler, None, generator=generator)
    if robustness:
        frames = H264Robustness()(frames)
    if resize is not None:
        frames = benchmark_resize(frames, tuple(int(v) for v in resize))
    return frames


def square_clip_preprocessing(image_size: int, num_frames: int, frame_rate: float | None) -> dict[str, Any]:
    """The ``preprocessing`` section of a submission fed ``num_frames`` square frames (read back by
    :func:`benchmark_sampler` and :func:`benchmark_input_loader`)."""
    out: dict[str, Any] = {"resize": [image_size, image_size], "num_frames": int(num_frames)}
    if frame_rate is not None:
        out["frame_rate"] = float(frame_rate)
    return out


def benchmark_sampler(preprocessing: dict[str, Any]) -> FrameSampler:
    """The benchmark's frame rule for a submission's ``preprocessing`` section (``num_frames``, falling
    back to ``max_frames`` then 16, as GASBench's ``PyTorchInferenceSession._infer_input_shape`` reads it)."""
    frame_rate = preprocessing.get("frame_rate")
    num_frames = preprocessing.get("num_frames", preprocessing.get("max_frames", DEFAULT_BENCHMARK_FRAMES))
    return FrameSampler("benchmark", int(num_frames), frame_rate=None if frame_rate is None else float(frame_rate))


def benchmark_input_loader(preprocessing: dict[str, Any], robustness: bool = False) -> Callable[[str], torch.Tensor]:
    """What the benchmark feeds a video submission: the first ``num_frames`` frames at step
    ``round(fps / frame_rate)`` (missing fps -> 30; short clips repeat the last frame), optionally the
    H.264 robustness pass, then centre crop to aspect and OpenCV bilinear resize to
    ``preprocessing.resize``: ``uint8 [T, 3, H, W]``."""
    resize = preprocessing_resize(preprocessing, "video")
    return partial(load_clip, sampler=benchmark_sampler(preprocessing), resize=resize, robustness=robustness)


@dataclass(frozen=True)
class ClipLoader:
    """Picklable ``path -> uint8 [T, 3, H, W]`` for DataLoader workers, cached when deterministic."""

    sampler: FrameSampler
    resize: tuple[int, int] | None
    cache_dir: str | None = None

    def cache_identity(self, path: str) -> list[Any] | None:
        """What shapes this loader's clip of ``path`` (file identity, decoder, frames, resize), for
        caches of values computed from it; ``None`` for a random frame sample."""
        if not self.sampler.deterministic:
            return None
        size = None if self.resize is None else [int(v) for v in self.resize]
        return [
            file_fingerprint(path),
            decoder_key(path, "auto"),
            self.sampler.key(),
            size,
            {"resize_mode": "benchmark-crop"},
        ]

    def __call__(self, path: str) -> torch.Tensor:
        if self.cache_dir is None or not self.sampler.deterministic:
            return load_clip(path, self.sampler, self.resize)
        # tag names the decode function in the cache key (load_clip's crop differs from the default's)
        # and the OpenCV build that resizes (frames cached by the older torchvision resize are not reused)
        return FrameCache(self.cache_dir).get_or_decode(
            path, self.sampler, self.resize, decode_fn=_decode_for_cache, tag=f"load_clip-opencv{cv2.__version__}"
        )


def _decode_for_cache(path: str, sampler: FrameSampler, resize: tuple[int, int] | None, tag: str) -> torch.Tensor:
    return load_clip(path, sampler, resize)


__all__ = ["ClipLoader", "benchmark_input_loader", "benchmark_sampler", "load_clip", "square_clip_preprocessing"]
