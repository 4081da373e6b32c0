"""Breath detection against synthetic speech with breaths at known times; masks, statistics, demo."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from detectors.audio.breath import (
    breath_frame_mask,
    breath_statistics,
    detect_breaths,
    frame_features,
    segments_to_frame_mask,
)
from detectors.audio.demo import main as demo_main
from detectors.audio.demo import synth_speech, write_demo_audio, write_holdout_audio
from detectors.audio.io import load_audio


def _iou(a: tuple[float, float], b: tuple[float, float]) -> float:
    inter = max(0.0, min(a[1], b[1]) - max(a[0], b[0]))
    return inter / (max(a[1], b[1]) - min(a[0], b[0]))


def _recall_precision(truth, found) -> tuple[int, int, int, int]:
    hits = sum(any(_iou(t, f) > 0.3 for f in found) for t in truth)
    correct = sum(any(_iou(t, f) > 0.3 for t in truth) for f in found)
    return hits, len(truth), correct, len(found)


@pytest.mark.parametrize("rate", [16000, 44100])
def test_breaths_found_at_known_times(rate: int) -> None:
    totals = np.zeros(4)
    for seed in range(6):
        speech = synth_speech(8.0, rate, seed, noise_db=-50.0 if seed % 2 else None)
        assert speech.sample_rate == rate and speech.waveform.size == pytest.approx(8.0 * rate, abs=2)
        found = detect_breaths(torch.from_numpy(speech.waveform), rate)
        totals += _recall_precision(speech.breaths, found)
    hits, n_truth, correct, n_found = totals
    assert n_truth >= 8  # the generator did place breaths
    assert hits / n_truth >= 0.8
    assert correct / max(n_found, 1) >= 0.8


def test_pauses_without_breaths_give_no_detections() -> None:
    found = 0
    for seed in range(4):
        speech = synth_speech(8.0, 16000, seed, breaths=False, noise_db=-50.0 if seed % 2 else None)
        assert speech.breaths == [] and len(speech.phrases) >= 3
        found += len(detect_breaths(torch.from_numpy(speech.waveform), 16000))
    assert found <= 1


def test_no_breaths_in_silence_tones_or_noise_alone() -> None:
    rate = 16000
    t = torch.arange(rate * 4) / rate
    generator = torch.Generator().manual_seed(0)
    cases = {
        "digital silence": torch.zeros(rate * 4),
        "quiet hiss": 1e-4 * torch.randn(rate * 4, generator=generator),
        "tone": 0.3 * torch.sin(2 * math.pi * 440 * t),
        "tone with hiss": 0.3 * torch.sin(2 * math.pi * 220 * t) + 1e-3 * torch.randn(rate * 4, generator=generator),
        "pulsed noise": (t % 1.0 < 0.4) * 0.05 * torch.randn(rate * 4, generator=generator),
    }
    for name, waveform in cases.items():
        assert detect_breaths(waveform, rate) == [], name


def test_thresholds_are_keyword_overrides() -> None:
    speech = synth_speech(8.0, 16000, 0)
    x = torch.from_numpy(speech.waveform)
    assert detect_breaths(x, 16000)
    assert detect_breaths(x, 16000, min_duration_s=1.0) == []  # all breaths are 0.3-0.6 s
    with pytest.raises(TypeError):
        detect_breaths(x, 16000, not_a_threshold=1.0)


def test_frame_features_match_closed_forms() -> None:
    rate = 16000
    sine = torch.from_numpy((0.5 * np.sin(2 * np.pi * 1000 * np.arange(rate) / rate)).astype(np.float32))
    feats = frame_features(sine, rate)
    assert len(feats) == 1 + rate // 160  # 10 ms hop, centred frames
    inner = slice(5, -5)
    torch.testing.assert_close(
        feats.rms_db[inner].mean(), torch.tensor(20 * math.log10(0.5 / math.sqrt(2))), atol=0.05, rtol=0
    )
    torch.testing.assert_close(feats.zcr[inner].mean(), torch.tensor(2 * 1000 / rate), atol=0.01, rtol=0)
    assert feats.flatness[inner].max() < 0.05
    assert abs(float(feats.centroid_hz[inner].mean()) - 1000) < 50
    noise = frame_features(torch.randn(rate, generator=torch.Generator().manual_seed(0)), rate)
    assert 0.4 < float(noise.flatness.median()) < 0.7  # white-noise periodogram: ~exp(-0.577)
    assert float(noise.high_ratio.median()) == pytest.approx(6000 / 7900, abs=0.05)  # flat above 100 Hz
    assert float(noise.zcr.median()) == pytest.approx(0.5, abs=0.05)
    # The same audio at 44.1 kHz gives the same frames (features are computed at 16 kHz).
    assert len(frame_features(torch.zeros(44100), 44100)) == len(feats)


def test_multichannel_input_mixes_like_the_loaders() -> None:
    """A [C, N] waveform is mixed as ffmpeg mixes an unmasked file: stereo -> (L + R) / sqrt(2)."""
    rate = 16000
    sine = 0.25 * np.sin(2 * np.pi * 1000 * np.arange(rate) / rate).astype(np.float32)
    stereo = frame_features(torch.from_numpy(np.stack([sine, sine])), rate)
    mono = frame_features(torch.from_numpy(sine * math.sqrt(2)), rate)
    torch.testing.assert_close(stereo.rms_db, mono.rms_db)  # the mean would be 3 dB lower


def test_frame_mask_on_a_hand_case() -> None:
    mask = segments_to_frame_mask([(0.1, 0.35)], duration_s=1.0, num_frames=10)
    expected = torch.tensor([0, 1, 1, 0.5, 0, 0, 0, 0, 0, 0], dtype=torch.float32)
    torch.testing.assert_close(mask, expected, atol=1e-6, rtol=0)
    # Overlapping segments are merged: coverage never exceeds 1.
    torch.testing.assert_close(segments_to_frame_mask([(0.0, 0.15), (0.05, 0.2)], 1.0, 4), torch.tensor([0.8, 0, 0, 0]))
    # wav2vec2 frames: 20 ms stride, 25 ms receptive field, 299 frames for 96,000 samples.
    w2v = segments_to_frame_mask([(1.0, 1.5)], 6.0, 299, frame_stride_s=0.02, frame_length_s=0.025)
    assert w2v.shape == (299,)
    # Frame j covers [0.02 j, 0.02 j + 0.025]: frame 49 [0.98, 1.005] is 1/5 inside, frame 74
    # [1.48, 1.505] 4/5 inside, frames 50..73 fully inside.
    picked = w2v[[48, 49, 50, 73, 74, 75]]
    torch.testing.assert_close(picked, torch.tensor([0.0, 0.2, 1.0, 1.0, 0.8, 0.0]), atol=1e-5, rtol=0)
    assert float(w2v.sum()) == pytest.approx(0.2 + 24 + 0.8, abs=1e-4)


def test_breath_frame_mask_follows_detections() -> None:
    speech = synth_speech(6.0, 16000, 2)
    x = torch.from_numpy(speech.waveform)
    segments = detect_breaths(x, 16000)
    mask = breath_frame_mask(x, 16000, 299, frame_stride_s=0.02, frame_length_s=0.025)
    assert mask.shape == (299,) and 0 <= mask.min() and mask.max() <= 1
    centres = torch.arange(299) * 0.02 + 0.0125
    inside = torch.zeros(299, dtype=torch.bool)
    for start, end in segments:
        inside |= (centres > start + 0.02) & (centres < end - 0.02)
    assert segments and inside.any()
    assert mask[inside].min() == 1.0
    far = torch.ones(299, dtype=torch.bool)
    for start, end in segments:
        far &= (centres < start - 0.03) | (centres > end + 0.03)
    assert mask[far].max() == 0.0
    torch.testing.assert_close(breath_frame_mask(x, 16000, 299, segments=[(0.0, 6.0)]), torch.ones(299))


def test_breath_statistics_hand_computed() -> None:
    stats = breath_statistics([(6.0, 6.6), (1.0, 1.5), (3.0, 3.2)], duration_s=30.0)
    assert stats["breaths_per_minute"] == pytest.approx(6.0)
    assert stats["mean_duration"] == pytest.approx(1.3 / 3)
    assert stats["std_duration"] == pytest.approx(
        math.sqrt(((0.5 - 1.3 / 3) ** 2 + (0.2 - 1.3 / 3) ** 2 + (0.6 - 1.3 / 3) ** 2) / 3)
    )
    assert stats["mean_spacing"] == pytest.approx(2.5)  # onsets 1, 3, 6
    assert stats["std_spacing"] == pytest.approx(0.5)
    assert stats["breath_fraction"] == pytest.approx(1.3 / 30)
    empty = breath_statistics([], 10.0)
    assert set(empty) == set(stats) and all(v == 0.0 for v in empty.values())
    with pytest.raises(ValueError):
        breath_statistics([], 0.0)


# --------------------------------------------------------------------------------- demo data


def _clip_features(path: Path) -> list[float]:
    waveform = load_audio(path)
    stats = breath_statistics(detect_breaths(waveform, 16000), waveform.numel() / 16000)
    return [stats["breaths_per_minute"]]


def test_demo_audio_is_separable_by_breath_counts(tmp_path: Path) -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score

    yaml_path = write_demo_audio(tmp_path, n_per_class=12, seconds=(4, 7))
    doc = yaml.safe_load(yaml_path.read_text())
    assert doc["demo"]["n_per_class"] == 12
    entries = {entry["media_type"]: entry for entry in doc["datasets"]}
    assert set(entries) == {"real", "synthetic"}
    assert all(entry["modality"] == "audio" for entry in entries.values())

    features, labels, rates = [], [], set()
    for label, media_type in ((0, "real"), (1, "synthetic")):
        files = sorted((yaml_path.parent / entries[media_type]["path"]).iterdir())
        assert len(files) == 12 and {f.suffix for f in files} <= {".wav", ".flac"}
        for path in files:
            import soundfile as sf

            rates.add(sf.info(str(path)).samplerate)
            features.append(_clip_features(path))
            labels.append(label)
    assert len(rates) >= 2  # not only 16 kHz files
    model = LogisticRegression().fit(features, labels)
    assert roc_auc_score(labels, model.predict_proba(features)[:, 1]) > 0.85

    # Idempotent: a second call rewrites nothing.
    stamp = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*.wav")}
    assert write_demo_audio(tmp_path, n_per_class=12, seconds=(4, 7)) == yaml_path
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*.wav")} == stamp


def test_holdout_audio_differs_and_cli_writes(tmp_path: Path) -> None:
    holdout = write_holdout_audio(tmp_path, n_per_class=3, seconds=(3, 4))
    doc = yaml.safe_load(holdout.read_text())
    fake = next(e for e in doc["datasets"] if e["media_type"] == "synthetic")
    assert fake["generator_family"] == "holdout-vocoder"
    assert len(list((holdout.parent / fake["path"]).iterdir())) == 3
    demo_main([str(tmp_path / "cli"), "--n-per-class", "2"])
    assert (tmp_path / "cli" / "demo_audio.yaml").is_file()
