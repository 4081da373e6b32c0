"""Spectral video detector: the image spectral detector (``detectors/image/spectral.py``) per frame.

Each of the benchmark's ``num_frames`` frames gets the image detector's features (azimuthally
averaged log power spectrum, optionally log |DCT| statistics); the clip's features are their mean
over the frames (the clip's mean log spectrum: content changes from frame to frame, a generator's
upsampling fingerprint does not, so averaging sharpens it), then z-score with the training
statistics and logistic regression / MLP. The network is the image detector's
:class:`~detectors.image.spectral.SpectralNetwork`, which takes clips ``[B, T, 3, H, W]`` as well.

Training input (``data.crop``): ``native`` (default; the benchmark's frames, a native-resolution
centre crop of each; frames smaller than the crop are upscaled) or ``benchmark`` (the same frames,
centre crop to aspect and OpenCV bilinear resize: what the exported model receives). Validation and
calibration use the benchmark's clip. See the image module for what the benchmark's resize does to
spectral features.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch

from detectors.config import setting
from detectors.data.cache import file_fingerprint
from detectors.image.spectral import SpectralConfig, SpectralDetector
from detectors.registry import register_detector
from detectors.settings import DataConfig
from detectors.video.data import ClipLoader, square_clip_preprocessing
from detectors.video.io import decoder_key, read_video_frames
from detectors.video.sampling import FrameSampler


@dataclass
class SpectralVideoConfig(SpectralConfig):
    num_frames: int = setting(16, help="frames per video (exported preprocessing.num_frames)", ge=1)
    frame_rate: float | None = setting(8.0, help="the benchmark's frame_rate (null: consecutive frames)", gt=0)


@dataclass
class SpectralVideoDataConfig(DataConfig):
    crop: Literal["native", "benchmark"] = setting(
        "native",
        help="training frames: a native-resolution centre crop (never downscaled) or the benchmark's crop and "
        "resize (what the export receives)",
    )
    cache_dir: str | None = setting(None, help="feature cache (null: ~/.cache/forensic-adapters/spectral)")
    feature_cache: bool = setting(True, help="cache each video's features (retraining the head takes seconds)")
    feature_batch_size: int = setting(4, help="videos per batch while computing features", ge=1)
    decode_workers: int = setting(2, help="DataLoader workers decoding videos while computing features", ge=0)
    refit_feature_statistics: bool = setting(
        False, help="--init-from: recompute the z-score statistics on the new data"
    )


@dataclass(frozen=True)
class NativeClipLoader:
    """Picklable ``path -> uint8 [T, 3, size, size]``: the sampler's frames, a native-resolution
    centre crop of each (frames smaller than the crop are upscaled, bicubic)."""

    sampler: FrameSampler
    size: int

    def __call__(self, path: str) -> torch.Tensor:
        from detectors.image.transforms import NativeCrop

        return NativeCrop(self.size, train=False)(read_video_frames(path, self.sampler, None))

    def cache_identity(self, path: str) -> list[Any]:
        return [file_fingerprint(path), decoder_key(path, "auto"), self.sampler.key(), self.size, "native-centre"]


@register_detector
class SpectralVideoDetector(SpectralDetector):
    arch = "spectral_video"
    modality = "video"
    config_class = SpectralVideoConfig
    data_config_class = SpectralVideoDataConfig

    def __init__(self, config: SpectralVideoConfig) -> None:
        sampler = FrameSampler("benchmark", config.num_frames, config.frame_rate)  # checks the values once
        super().__init__(config)
        self.sampler = sampler

    def input_loader(self, stage: str, data: SpectralVideoDataConfig) -> Any:
        size = self.config.image_size
        if stage == "train" and data.crop == "native":
            return NativeClipLoader(self.sampler, size)
        return ClipLoader(self.sampler, (size, size))

    def preprocessing(self) -> dict[str, Any]:
        return square_clip_preprocessing(self.config.image_size, self.config.num_frames, self.config.frame_rate)


__all__ = ["NativeClipLoader", "SpectralVideoConfig", "SpectralVideoDataConfig", "SpectralVideoDetector"]
