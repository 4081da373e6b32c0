"""Audio samples for training and evaluation: ``[96000]`` float32 16 kHz mono windows.

Training: a random 6 s window (clips shorter than 6 s zero-padded at the end as the benchmark pads
them; ``data.train_short_clips: tile`` tiles them instead, the ASVspoof convention) -> breath mask
computed on the clean window and aligned to the model's frames (``breath_mask``, BreathNet's FiLM
target) -> augmentation (``data.augment_level``, see ``build_audio_train_transform``). Evaluation and
calibration: exactly the benchmark's input (centre crop / zero pad), optionally through this
project's audio robustness chain (``data.eval_robustness``; the benchmark has no audio augmented
pass) with noise seeded by the file path, as ``python -m detectors.evaluate --robustness`` feeds its
``audio_robustness_extra``.
"""

from __future__ import annotations

import zlib
from functools import partial
from typing import Any, Callable, Sequence

import torch

from detectors.audio.breath import breath_frame_mask
from detectors.audio.io import BENCHMARK_NUM_SAMPLES, BENCHMARK_SAMPLE_RATE, load_audio_benchmark, load_audio_window
from detectors.audio.transforms import RobustnessChain, build_audio_train_transform
from detectors.data.catalog import MediaItem
from detectors.data.dataset import MediaDataset, apply_transform, is_unreadable
from detectors.errors import ConfigError

__all__ = ["AudioDataset", "benchmark_input_loader", "build_audio_dataset", "load_training_window",
           "project_robustness_loader"]


SHORT_CLIP_MODES = ("pad", "tile")


def load_training_window(path: str, short_clips: str = "pad") -> torch.Tensor:
    """A random 6 s window at 16 kHz (only that part of long files is decoded).

    Shorter clips are zero-padded at the end (``short_clips="pad"``), which is what the benchmark
    feeds the model, so training sees the trailing silence it will be scored on; ``"tile"`` repeats
    them instead (the ASVspoof convention).
    """
    if short_clips not in SHORT_CLIP_MODES:
        raise ValueError(f"short_clips must be one of {SHORT_CLIP_MODES}, got {short_clips!r}")
    return load_audio_window(path, BENCHMARK_NUM_SAMPLES, BENCHMARK_SAMPLE_RATE, mode="random",
                             tile_short=short_clips == "tile")


class AudioDataset(MediaDataset):
    """``MediaDataset`` whose samples may also carry ``breath_mask`` ``[num_frames]``.

    With ``breath_frames = (num_frames, stride_s, length_s)`` the mask is detected on the clean
    loaded window (before ``transform`` adds noise, reverb or codecs that would hide breaths), then
    ``transform`` is applied to the waveform.
    """

    def __init__(self, items: Sequence[MediaItem], load: Callable[[str], torch.Tensor],
                 transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
                 breath_frames: tuple[int, float, float] | None = None, target: str = "binary") -> None:
        super().__init__(items, load=load, transform=None, target=target)
        self.waveform_transform = transform
        self.breath_frames = breath_frames

    def __getitem__(self, index: int) -> dict[str, Any] | None:
        sample = super().__getitem__(index)
        if is_unreadable(sample):
            return sample
        x = sample["x"]
        if self.breath_frames is not None:
            frames, stride_s, length_s = self.breath_frames
            sample["breath_mask"] = breath_frame_mask(x, BENCHMARK_SAMPLE_RATE, int(frames), stride_s, length_s)
        x = apply_transform(self.waveform_transform, x, self.items[index].path)
        sample["x"] = x.float().contiguous()
        return sample


def build_audio_dataset(items: Sequence[MediaItem], stage: str, data: dict[str, Any],
                        breath_frames: tuple[int, float, float] | None = None) -> AudioDataset:
    """Training (``stage="train"``: random windows, breath masks, augmentation) or evaluation dataset."""
    if stage == "train":
        short_clips = data.get("train_short_clips", "pad")
        if short_clips not in SHORT_CLIP_MODES:
            raise ConfigError(None, "data.train_short_clips",
                              f"use 'pad' (the benchmark's zero padding) or 'tile', got {short_clips!r}")
        seed = data.get("augment_seed")
        if seed is None:
            # Drawn from the global RNG, which the run's `seed` fixes, rather than from OS entropy:
            # a run without DataLoader workers is reproducible too (workers reseed these per worker).
            seed = int(torch.randint(0, 2**31 - 1, (1,)))
        transform = build_audio_train_transform(int(data.get("augment_level", 2)), seed=seed)
        return AudioDataset(items, load=partial(load_training_window, short_clips=short_clips),
                            transform=transform, breath_frames=breath_frames)
    # The evaluation CLI's loader: robustness noise is seeded by the file path, so every epoch's
    # validation (and the calibration fit) sees the same noise whatever the worker count or order.
    return AudioDataset(items, load=partial(_benchmark_audio, robustness=bool(data.get("eval_robustness", False))))


def _check_preprocessing(preprocessing: dict[str, Any]) -> None:
    rate = preprocessing.get("sample_rate", BENCHMARK_SAMPLE_RATE)
    duration = float(preprocessing.get("duration_seconds", BENCHMARK_NUM_SAMPLES / BENCHMARK_SAMPLE_RATE))
    if rate != BENCHMARK_SAMPLE_RATE or duration * BENCHMARK_SAMPLE_RATE != BENCHMARK_NUM_SAMPLES:
        raise ValueError(f"audio submissions take 16 kHz, 6.0 s inputs; model_config.yaml says {rate} Hz, {duration} s")


def benchmark_input_loader(preprocessing: dict[str, Any], robustness: bool = False) -> Callable[[str], torch.Tensor]:
    """What the benchmark feeds an audio submission: ``[96000]`` float32 at 16 kHz (centre crop /
    zero pad; GASBench ``processing/media.py`` ``process_audio_sample``). The benchmark has no audio
    augmented pass, so ``robustness=True`` is refused: :func:`project_robustness_loader` is this
    project's chain, an extra reported apart."""
    _check_preprocessing(preprocessing)
    if robustness:
        raise ValueError("the benchmark has no audio augmented pass; this project's audio chain is "
                         "project_robustness_loader (reported apart, never in the benchmark score)")
    return partial(_benchmark_audio, robustness=False)


def project_robustness_loader(preprocessing: dict[str, Any]) -> Callable[[str], torch.Tensor]:
    """The benchmark's audio input through this project's robustness chain (8 kHz round trip, -6 dB,
    30 dB SNR noise seeded by the path): an evaluation extra of this project, not of the benchmark."""
    _check_preprocessing(preprocessing)
    return partial(_benchmark_audio, robustness=True)


def _benchmark_audio(path: str, robustness: bool) -> torch.Tensor:
    waveform = load_audio_benchmark(path)
    if robustness:
        # Noise seeded by the path: the augmented pass is reproducible and differs between clips.
        waveform = RobustnessChain(seed=zlib.crc32(str(path).encode()))(waveform)
    return waveform.float().contiguous()
