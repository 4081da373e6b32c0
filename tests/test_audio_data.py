"""Audio data: training windows pad short clips as the benchmark does, and validation
under ``data.eval_robustness`` sees per-file noise that does not change between epochs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from detectors.audio.data import AudioDataConfig, audio_recipe, benchmark_input_loader, project_robustness_loader
from detectors.audio.io import load_audio
from detectors.config import parse
from detectors.data.catalog import MediaItem
from detectors.data.dataset import MediaDataset
from detectors.errors import ConfigError


def build_audio_dataset(items: list[MediaItem], stage: str, data: dict) -> MediaDataset:
    return MediaDataset.from_recipe(items, audio_recipe(stage, parse(AudioDataConfig, data, "data")))


def _clip(tmp_path: Path, name: str, seconds: float, seed: int = 0) -> MediaItem:
    rng = np.random.default_rng(seed)
    path = tmp_path / name
    sf.write(path, (rng.standard_normal(int(seconds * 16000)) * 0.2).astype(np.float32), 16000, subtype="FLOAT")
    return MediaItem(str(path), 0, "real", "review", "audio")


def test_training_window_zero_pads_short_clips_like_the_benchmark(tmp_path: Path) -> None:
    item = _clip(tmp_path, "short.wav", 2.0)
    clip = load_audio(item.path)  # 32,000 samples
    benchmark = benchmark_input_loader({"sample_rate": 16000, "duration_seconds": 6.0})(item.path)

    x = build_audio_dataset([item], "train", {"augment_level": 0})[0]["x"]
    assert x.shape == (96000,)
    # what the benchmark will feed: the clip, then silence to 6 s
    assert torch.equal(x, benchmark)
    assert torch.equal(x[: clip.numel()], clip) and not x[clip.numel() :].any()

    # the ASVspoof convention stays available: the clip repeats instead of silence
    tiled = build_audio_dataset([item], "train", {"augment_level": 0, "train_short_clips": "tile"})[0]["x"]
    assert bool((tiled[clip.numel() :].abs() > 0).float().mean() > 0.99)
    with pytest.raises(ConfigError, match="train_short_clips"):
        build_audio_dataset([item], "train", {"train_short_clips": "loop"})


def test_long_training_clips_are_still_random_crops(tmp_path: Path) -> None:
    item = _clip(tmp_path, "long.wav", 9.0, seed=1)
    dataset = build_audio_dataset([item], "train", {"augment_level": 0})
    torch.manual_seed(0)
    windows = [dataset[0]["x"] for _ in range(4)]
    assert all(w.shape == (96000,) and bool((w.abs() > 0).float().mean() > 0.99) for w in windows)
    assert any(not torch.equal(windows[0], w) for w in windows[1:])


def test_eval_robustness_noise_is_fixed_per_file(tmp_path: Path) -> None:
    items = [_clip(tmp_path, "a.wav", 7.0, seed=2), _clip(tmp_path, "b.wav", 3.0, seed=3)]
    dataset = build_audio_dataset(items, "eval", {"eval_robustness": True})
    first = [dataset[i]["x"] for i in range(2)]
    again = [dataset[i]["x"] for i in (1, 0)]  # another epoch, another order
    assert torch.equal(first[0], again[1]) and torch.equal(first[1], again[0])
    # identical to what `python -m detectors.evaluate --robustness` feeds its audio_robustness_extra
    evaluate = project_robustness_loader({})
    for item, x in zip(items, first):
        assert torch.equal(x, evaluate(item.path))
    # and the robustness chain did run (independently: scipy's 8 kHz round trip, then -6 dB; the
    # 30 dB SNR noise adds 0.1 % power)
    from scipy.signal import resample_poly

    clean = build_audio_dataset(items, "eval", {})[0]["x"]
    expected = resample_poly(resample_poly(clean.numpy(), 1, 2), 2, 1)[:96000] * 10 ** (-6 / 20)
    expected_rms = float(np.sqrt(np.mean(expected.astype(np.float64) ** 2)) * np.sqrt(1.001))
    assert float(first[0].double().pow(2).mean().sqrt()) == pytest.approx(expected_rms, rel=2e-3)
    assert not torch.allclose(first[0], torch.from_numpy(expected).float(), atol=1e-4)  # noise present


def test_training_augmentation_follows_the_global_seed(tmp_path: Path) -> None:
    # `fit` seeds the global RNGs (seed_everything) before building datasets; without DataLoader
    # workers nothing reseeds the augmentations' private generators, so they must come from there.
    item = _clip(tmp_path, "aug.wav", 6.0, seed=4)

    def draws(seed: int) -> list[torch.Tensor]:
        torch.manual_seed(seed)
        dataset = build_audio_dataset([item], "train", {"augment_level": 1})
        return [dataset[0]["x"] for _ in range(6)]

    first, again, other = draws(0), draws(0), draws(1)
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert not all(torch.equal(a, b) for a, b in zip(first, other))
    assert not all(torch.equal(first[0], x) for x in first[1:])  # augmentation does vary per draw
