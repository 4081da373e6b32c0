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
from dataclasses import dataclass
from functools import partial
from typing import Any, Callable, Literal

import torch

from detectors.audio.breath import breath_frame_mask
from detectors.audio.io import BENCHMARK_NUM_SAMPLES, BENCHMARK_SAMPLE_RATE, load_audio_benchmark, load_audio_window
from detectors.audio.transforms import RobustnessChain, build_audio_train_transform
from detectors.config import setting
from detectors.data.dataset import SampleRecipe
from detectors.settings import DataConfig

__all__ = [
    "AudioDataConfig",
    "audio_recipe",
    "benchmark_input_loader",
    "breath_mask_targets",
    "load_training_window",
    "project_robustness_loader",
]


SHORT_CLIP_MODES = ("pad", "tile")


def load_training_window(path: str, short_clips: str = "pad") -> torch.Tensor:
    """A random 6 s window at 16 kHz (only that part of long files is decoded).

    Shorter clips are zero-padded at the end (``short_clips="pad"``), which is what the benchmark
    feeds the model, so training sees the trailing silence it will be scored on; ``"tile"`` repeats
    them instead (the ASVspoof convention).
    """
    if short_clips not in SHORT_CLIP_MODES:
        raise ValueError(f"short_clips must be one of {SHORT_CLIP_MODES}, got {short_clips!r}")
    return load_audio_window(
        path, BENCHMARK_NUM_SAMPLES, BENCHMARK_SAMPLE_RATE, mode="random", tile_short=short_clips == "tile"
    )


@dataclass
class AudioDataConfig(DataConfig):
    augment_level: int = setting(
        2, help="0..3 (see detectors.audio.transforms.build_audio_train_transform)", ge=0, le=3
    )
    augment_seed: int | None = setting(None, help="seed of the training augmentation (null: drawn from the run's seed)")
    eval_robustness: bool = setting(
        False,
        help="validation/calibration through this project's audio robustness chain "
        "(the benchmark has no audio augmented pass)",
    )
    train_short_clips: Literal["pad", "tile"] = setting(
        "pad", help="training clips < 6 s: pad (zeros at the end, as the benchmark) or tile (the ASVspoof convention)"
    )


def breath_mask_targets(
    waveform: torch.Tensor, frames: int, stride_s: float, length_s: float
) -> dict[str, torch.Tensor]:
    """``{"breath_mask": [frames]}``: breath presence per model frame, detected on the clean window
    (before augmentation adds noise, reverb or codecs that would hide breaths)."""
    return {"breath_mask": breath_frame_mask(waveform, BENCHMARK_SAMPLE_RATE, int(frames), stride_s, length_s)}


def audio_recipe(
    stage: str, data: AudioDataConfig, breath_frames: tuple[int, float, float] | None = None
) -> SampleRecipe:
    """Training (``stage="train"``: random windows, breath masks when ``breath_frames = (frames,
    stride_s, length_s)`` of the model are given, augmentation) or evaluation samples."""
    if stage == "train":
        seed = data.augment_seed
        if seed is None:
            # Drawn from the global RNG, which the run's `seed` fixes, rather than from OS entropy:
            # a run without DataLoader workers is reproducible too (workers reseed these per worker).
            seed = int(torch.randint(0, 2**31 - 1, (1,)))
        targets = None
        if breath_frames is not None:
            frames, stride_s, length_s = breath_frames
            targets = partial(breath_mask_targets, frames=frames, stride_s=stride_s, length_s=length_s)
        return SampleRecipe(
            load=partial(load_training_window, short_clips=data.train_short_clips),
            transform=build_audio_train_transform(data.augment_level, seed=seed),
            media_targets=targets,
        )
    # The evaluation CLI's loader: robustness noise is seeded by the file path, so every epoch's
    # validation (and the calibration fit) sees the same noise whatever the worker count or order.
    return SampleRecipe(load=partial(_benchmark_audio, robustness=data.eval_robustness))


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
        raise ValueError(
            "the benchmark has no audio augmented pass; this project's audio chain is "
            "project_robustness_loader (reported apart, never in the benchmark score)"
        )
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
