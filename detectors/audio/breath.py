"""Breath cues: find breath noises between speech phrases, frame masks and per-clip statistics.

Breaths in read or conversational speech are short (0.1-1 s), quiet (10-45 dB below the voiced
speech), broadband and noise-like: a flat spectrum with much energy above 2 kHz and a high
zero-crossing rate, unlike voiced speech (harmonic, low flatness, low ZCR) and unlike silence
(at the noise floor). Synthetic speech often has none, or has them at unnatural rates and
spacings (Layton et al., "Every breath you don't take"), which is why BreathNet supervises a
FiLM block with a frame-level breath mask (:func:`breath_frame_mask`).

The detector is rule based on frame features (25 ms window, 10 ms hop, computed at 16 kHz
whatever the input rate):

1. RMS energy in dB; the clip's *speech level* (a high percentile of frame energy) and *noise
   floor* (a low percentile) make the energy thresholds adaptive to recording level and noise;
2. candidate frames: energy between ``rel_low_db`` and ``rel_high_db`` relative to the speech
   level and ``floor_margin_db`` above the noise floor, spectral flatness above
   ``min_flatness`` and either a high ZCR or a high share of energy above 2 kHz;
3. voiced-speech frames must occur within ``context_s`` seconds (breaths are *between* speech;
   noise-only clips yield nothing);
4. median smoothing, merging of segments closer than ``merge_gap_s``, and the duration limits.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Sequence

import numpy as np
import torch

from .io import mono_downmix, resample

__all__ = [
    "BreathThresholds",
    "FrameFeatures",
    "breath_frame_mask",
    "breath_statistics",
    "detect_breaths",
    "frame_features",
    "segments_to_frame_mask",
]

ANALYSIS_RATE = 16_000
WINDOW_S = 0.025
HOP_S = 0.010
N_FFT = 512
_EPS = 1e-10


@dataclass(frozen=True)
class BreathThresholds:
    """Tunable thresholds of :func:`detect_breaths` (keyword arguments of the same names)."""

    rel_low_db: float = -50.0  # quietest breath, relative to the speech level
    rel_high_db: float = -12.0  # loudest breath, relative to the speech level
    floor_margin_db: float = 6.0  # a breath stands this far above the noise floor
    silence_db: float = -70.0  # absolute dBFS below which a frame is silence
    min_dynamic_range_db: float = 15.0  # speech level - noise floor; below: no speech structure
    min_flatness: float = 0.12  # spectral flatness (0 harmonic .. ~0.56 white) of a breath frame
    min_zcr: float = 0.12  # zero crossings per sample
    min_high_ratio: float = 0.35  # share of energy above 2 kHz
    voiced_max_flatness: float = 0.08  # voiced-speech frames are harmonic ...
    voiced_rel_db: float = -15.0  # ... and loud
    context_s: float = 2.0  # voiced speech must occur this close to a breath
    median_frames: int = 5  # median smoothing of the frame decisions (odd)
    merge_gap_s: float = 0.08
    min_duration_s: float = 0.12
    max_duration_s: float = 1.2
    speech_percentile: float = 95.0
    floor_percentile: float = 5.0


@dataclass
class FrameFeatures:
    """Frame features at 100 frames/s; frame ``i`` is centred on ``i * hop_s`` seconds."""

    rms_db: torch.Tensor  # [T] dBFS
    zcr: torch.Tensor  # [T] crossings per sample
    flatness: torch.Tensor  # [T] geometric / arithmetic mean of the power spectrum (250 Hz-7 kHz)
    centroid_hz: torch.Tensor  # [T]
    high_ratio: torch.Tensor  # [T] energy above 2 kHz / energy above 100 Hz
    hop_s: float = HOP_S
    duration_s: float = 0.0

    def __len__(self) -> int:
        return int(self.rms_db.numel())


def _to_mono_16k(waveform: torch.Tensor, sample_rate: int) -> torch.Tensor:
    if waveform.dim() == 2:  # [C, N] -> ffmpeg's down-mix for an unknown layout, like the loaders
        waveform = torch.from_numpy(mono_downmix(waveform.detach().float().cpu().numpy().T, None))
    if waveform.dim() != 1:
        raise ValueError(f"expected a waveform [N] (or [C, N]), got shape {tuple(waveform.shape)}")
    waveform = waveform.detach().float().cpu()
    waveform = torch.nan_to_num(waveform, nan=0.0, posinf=0.0, neginf=0.0)
    return resample(waveform, int(sample_rate), ANALYSIS_RATE)


def frame_features(waveform: torch.Tensor, sample_rate: int) -> FrameFeatures:
    """Energy, zero-crossing and spectral features of a mono waveform ``[N]`` (any rate)."""
    duration = waveform.shape[-1] / float(sample_rate)
    x = _to_mono_16k(waveform, sample_rate)
    win = int(round(WINDOW_S * ANALYSIS_RATE))
    hop = int(round(HOP_S * ANALYSIS_RATE))
    if x.numel() < 2:
        empty = torch.zeros(0)
        return FrameFeatures(empty, empty, empty, empty, empty, HOP_S, duration)

    # Time-domain frames centred like torch.stft(center=True): frame i is centred on sample i*hop.
    pad = win // 2
    mode = "reflect" if x.numel() > pad else "constant"
    padded = torch.nn.functional.pad(x[None, None], (pad, pad), mode=mode)[0, 0]
    frames = padded.unfold(0, win, hop)  # [T, win]
    num_frames = 1 + x.numel() // hop
    frames = frames[:num_frames]
    rms_db = 10.0 * torch.log10(frames.double().pow(2).mean(dim=1) + _EPS).float()
    signs = torch.signbit(frames)
    zcr = (signs[:, 1:] != signs[:, :-1]).float().mean(dim=1)

    spec = (
        torch.stft(
            x,
            n_fft=N_FFT,
            hop_length=hop,
            win_length=win,
            window=torch.hann_window(win),
            center=True,
            pad_mode="reflect" if x.numel() > N_FFT // 2 else "constant",
            return_complex=True,
        )
        .abs()
        .pow(2)
        .T[:num_frames]
    )  # [T, F]
    freqs = torch.linspace(0, ANALYSIS_RATE / 2, spec.shape[1])
    band = (freqs >= 250) & (freqs <= 7000)
    power = spec[:, band].double() + _EPS
    flatness = (power.log().mean(dim=1).exp() / power.mean(dim=1)).float()
    above_100 = spec[:, freqs >= 100].sum(dim=1)
    high_ratio = spec[:, freqs >= 2000].sum(dim=1) / (above_100 + _EPS)
    centroid = (spec * freqs).sum(dim=1) / (spec.sum(dim=1) + _EPS)
    return FrameFeatures(rms_db, zcr, flatness, centroid, high_ratio.float(), HOP_S, duration)


def _median_smooth(mask: torch.Tensor, kernel: int) -> torch.Tensor:
    if kernel <= 1 or mask.numel() == 0:
        return mask
    kernel = kernel | 1  # odd
    padded = torch.nn.functional.pad(mask.float()[None, None], (kernel // 2, kernel // 2), mode="replicate")
    return padded[0, 0].unfold(0, kernel, 1).median(dim=1).values > 0.5


def _runs(mask: torch.Tensor) -> list[tuple[int, int]]:
    """Inclusive ``(first, last)`` index pairs of the True runs in a 1-D boolean mask."""
    values = mask.to(torch.int8).numpy()
    edges = np.diff(np.concatenate([[0], values, [0]]))
    starts = np.flatnonzero(edges == 1)
    ends = np.flatnonzero(edges == -1) - 1
    return list(zip(starts.tolist(), ends.tolist()))


def _merge(segments: Sequence[tuple[float, float]], gap: float) -> list[tuple[float, float]]:
    merged: list[list[float]] = []
    for start, end in sorted(segments):
        if merged and start - merged[-1][1] <= gap:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    return [(a, b) for a, b in merged]


def detect_breaths(waveform: torch.Tensor, sample_rate: int, **thresholds: float) -> list[tuple[float, float]]:
    """Breath segments ``[(start_s, end_s), ...]`` of a mono waveform ``[N]`` at ``sample_rate``.

    ``thresholds`` override fields of :class:`BreathThresholds` (unknown names raise
    ``TypeError``). Silence, continuous tones and noise without speech give ``[]``.
    """
    cfg = BreathThresholds(**thresholds)
    feats = frame_features(waveform, sample_rate)
    if len(feats) == 0:
        return []
    db = feats.rms_db
    speech_level = float(torch.quantile(db, cfg.speech_percentile / 100.0))
    noise_floor = float(torch.quantile(db, cfg.floor_percentile / 100.0))
    if speech_level < cfg.silence_db or speech_level - noise_floor < cfg.min_dynamic_range_db:
        return []
    rel = db - speech_level

    noise_like = (feats.flatness >= cfg.min_flatness) & (
        (feats.zcr >= cfg.min_zcr) | (feats.high_ratio >= cfg.min_high_ratio)
    )
    quiet_but_audible = (
        (rel >= cfg.rel_low_db)
        & (rel <= cfg.rel_high_db)
        & (db >= noise_floor + cfg.floor_margin_db)
        & (db >= cfg.silence_db)
    )
    candidate = _median_smooth(noise_like & quiet_but_audible, cfg.median_frames)

    voiced = (feats.flatness <= cfg.voiced_max_flatness) & (rel >= cfg.voiced_rel_db)
    voiced_times = torch.nonzero(voiced).flatten().float() * feats.hop_s
    if voiced_times.numel() == 0:
        return []

    half_hop = feats.hop_s / 2
    raw = [
        (max(0.0, a * feats.hop_s - half_hop), min(feats.duration_s, b * feats.hop_s + half_hop))
        for a, b in _runs(candidate)
    ]
    segments = []
    for start, end in _merge(raw, cfg.merge_gap_s):
        if not cfg.min_duration_s <= end - start <= cfg.max_duration_s:
            continue
        distance = torch.minimum((voiced_times - start).abs(), (voiced_times - end).abs()).min()
        if float(distance) <= cfg.context_s:
            segments.append((round(start, 4), round(end, 4)))
    return segments


def segments_to_frame_mask(
    segments: Sequence[tuple[float, float]],
    duration_s: float,
    num_frames: int,
    frame_stride_s: float | None = None,
    frame_length_s: float | None = None,
) -> torch.Tensor:
    """Fraction of each model frame covered by ``segments``, as a float tensor ``[num_frames]``.

    By default the clip is divided into ``num_frames`` equal cells. With ``frame_stride_s`` (and
    optionally ``frame_length_s``, default = stride) frame ``j`` covers
    ``[j * stride, j * stride + length]`` seconds, e.g. wav2vec2/XLS-R: stride 0.02, length 0.025
    (299 frames for 96,000 samples at 16 kHz). Overlapping segments are merged first, so values
    stay in ``[0, 1]``.
    """
    if num_frames <= 0:
        raise ValueError(f"num_frames must be > 0, got {num_frames}")
    if frame_stride_s is None:
        width = duration_s / num_frames
        starts = torch.arange(num_frames, dtype=torch.float64) * width
        ends = starts + width
    else:
        length = frame_length_s if frame_length_s is not None else frame_stride_s
        starts = torch.arange(num_frames, dtype=torch.float64) * frame_stride_s
        ends = starts + length
    covered = torch.zeros(num_frames, dtype=torch.float64)
    for start, end in _merge([(float(a), float(b)) for a, b in segments if b > a], 0.0):
        covered += (torch.minimum(ends, torch.tensor(end)) - torch.maximum(starts, torch.tensor(start))).clamp_min(0)
    return (covered / (ends - starts)).clamp(0.0, 1.0).float()


def breath_frame_mask(
    waveform: torch.Tensor,
    sample_rate: int,
    num_frames: int,
    frame_stride_s: float | None = None,
    frame_length_s: float | None = None,
    segments: Sequence[tuple[float, float]] | None = None,
    **thresholds: float,
) -> torch.Tensor:
    """Frame-level breath mask ``[num_frames]`` (overlap fractions) aligned to model frames.

    Detects breaths (or uses the given ``segments``) and maps them onto frames as
    :func:`segments_to_frame_mask` does. This is the BreathFiLM training target.
    """
    if segments is None:
        segments = detect_breaths(waveform, sample_rate, **thresholds)
    duration = waveform.shape[-1] / float(sample_rate)
    return segments_to_frame_mask(segments, duration, num_frames, frame_stride_s, frame_length_s)


def breath_statistics(segments: Sequence[tuple[float, float]], duration_s: float) -> dict[str, float]:
    """Per-clip breath features.

    ``breaths_per_minute``, ``mean_duration``/``std_duration`` (s), ``mean_spacing``/
    ``std_spacing`` (s between consecutive breath onsets), ``breath_fraction`` (share of the clip
    covered by breaths). Undefined values (no breath, or one breath for the spacing) are 0.0 so
    the dictionary can be used as a feature vector directly; std is the population std.
    """
    if duration_s <= 0:
        raise ValueError(f"duration_s must be > 0, got {duration_s}")
    segments = sorted((float(a), float(b)) for a, b in segments)
    durations = np.array([b - a for a, b in segments], dtype=np.float64)
    onsets = np.array([a for a, _ in segments], dtype=np.float64)
    spacings = np.diff(onsets)
    covered = sum(b - a for a, b in _merge(segments, 0.0))
    return {
        "breaths_per_minute": len(segments) * 60.0 / duration_s,
        "mean_duration": float(durations.mean()) if durations.size else 0.0,
        "std_duration": float(durations.std()) if durations.size else 0.0,
        "mean_spacing": float(spacings.mean()) if spacings.size else 0.0,
        "std_spacing": float(spacings.std()) if spacings.size else 0.0,
        "breath_fraction": min(1.0, covered / duration_s),
    }


def threshold_names() -> list[str]:
    """Names accepted as keyword thresholds by :func:`detect_breaths`."""
    return [field.name for field in fields(BreathThresholds)]
