"""Why an audio detector called a clip fake: attribution over time and mel bands.

The clip is taken apart with a short-time Fourier transform (Hann window of 512 samples, hop 128:
an exact inverse), its bins grouped into cells of ``window_s`` seconds x one of ``bands`` mel bands
(equal widths on the HTK mel scale up to 8 kHz), and the model is fed the inverse transform:

- ``ablation`` (default; model-agnostic): Captum's ``FeatureAblation`` with one feature per cell;
  a cell's attribution is the drop in the fake log-odds when that band is silenced in that window.
- ``integrated_gradients``: Captum's ``IntegratedGradients`` on the STFT coefficients from silence,
  summed per cell (``steps`` forward/backward passes instead of one per cell).

``detect_breaths`` (:mod:`detectors.audio.breath`) marks the breath segments, and the share of the
positive attribution that falls in windows overlapping a breath says whether the model looks there.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from detectors.explain.methods import score_function

N_FFT = 512
HOP = 128
AUDIO_METHODS = ("auto", "ablation", "integrated_gradients")


def hz_to_mel(hz: torch.Tensor | float) -> torch.Tensor:
    """HTK mel scale: ``2595 log10(1 + f / 700)``."""
    return 2595.0 * torch.log10(1.0 + torch.as_tensor(hz, dtype=torch.float64) / 700.0)


def mel_to_hz(mel: torch.Tensor) -> torch.Tensor:
    return 700.0 * (10.0 ** (mel / 2595.0) - 1.0)


def band_edges(bands: int, sample_rate: int) -> torch.Tensor:
    """``bands + 1`` edges in Hz, equally spaced on the mel scale from 0 to Nyquist."""
    return mel_to_hz(torch.linspace(0.0, float(hz_to_mel(sample_rate / 2)), bands + 1, dtype=torch.float64))


def bin_bands(bands: int, sample_rate: int) -> torch.Tensor:
    """The mel band of every STFT bin ``[N_FFT // 2 + 1]``."""
    centres = torch.arange(N_FFT // 2 + 1, dtype=torch.float64) * sample_rate / N_FFT
    edges = band_edges(bands, sample_rate)
    return torch.bucketize(centres, edges[1:-1], right=True).clamp(0, bands - 1)


def frame_windows(frames: int, window_s: float, sample_rate: int, windows: int) -> torch.Tensor:
    """The time window of every STFT frame (centred frames: frame t is at ``t * HOP`` samples)."""
    times = torch.arange(frames, dtype=torch.float64) * HOP / sample_rate
    return torch.floor(times / window_s).long().clamp(0, windows - 1)


def _stft(waveform: torch.Tensor) -> torch.Tensor:
    window = torch.hann_window(N_FFT, dtype=waveform.dtype)
    return torch.stft(waveform, N_FFT, HOP, window=window, center=True, return_complex=True)


def _istft(spectrum: torch.Tensor, length: int) -> torch.Tensor:
    window = torch.hann_window(N_FFT, dtype=torch.float32, device=spectrum.device)
    return torch.istft(spectrum, N_FFT, HOP, window=window, center=True, length=length)


def time_band_attribution(
    model: nn.Module,
    waveform: torch.Tensor,
    sample_rate: int = 16000,
    *,
    method: str = "auto",
    bands: int = 8,
    window_s: float = 0.25,
    steps: int = 16,
    progress: bool = False,
) -> tuple[torch.Tensor, dict[str, Any]]:
    """``[bands, windows]`` attribution of a mono clip ``[N]`` (low bands first) and how it was made."""
    if method not in AUDIO_METHODS:
        raise ValueError(f"unknown audio method {method!r}; use one of {', '.join(AUDIO_METHODS)}")
    method = "ablation" if method == "auto" else method
    length = int(waveform.shape[-1])
    windows = max(1, math.ceil(length / sample_rate / window_s - 1e-9))
    spectrum = _stft(waveform.detach().float())
    coefficients = torch.view_as_real(spectrum)[None].contiguous()  # [1, F, T, 2]
    band = bin_bands(bands, sample_rate)
    window = frame_windows(spectrum.shape[-1], window_s, sample_rate, windows)
    cells = band[:, None] * windows + window[None, :]  # [F, T]: one feature per (band, window)
    score = score_function(model)

    def forward(x: torch.Tensor) -> torch.Tensor:
        return score(_istft(torch.view_as_complex(x.contiguous()), length))

    if method == "ablation":
        from captum.attr import FeatureAblation

        mask = cells[None, :, :, None].expand_as(coefficients)
        attribution = FeatureAblation(forward).attribute(
            coefficients, baselines=0.0, feature_mask=mask, perturbations_per_eval=8, show_progress=progress
        )
        per_cell = torch.zeros(bands * windows, dtype=torch.float64)
        # every coefficient of a cell holds the cell's value: read one per cell
        flat = attribution[0, :, :, 0].double().flatten()
        per_cell[cells.flatten()] = flat
    else:
        from captum.attr import IntegratedGradients

        attribution = IntegratedGradients(forward).attribute(
            coefficients, baselines=torch.zeros_like(coefficients), n_steps=steps, internal_batch_size=steps
        )
        per_cell = torch.zeros(bands * windows, dtype=torch.float64)
        per_cell.index_add_(0, cells.flatten(), attribution[0].sum(dim=-1).double().flatten())
    info = {
        "method": method,
        "bands": bands,
        "window_s": window_s,
        "n_fft": N_FFT,
        "hop": HOP,
        "band_edges_hz": [round(float(v), 1) for v in band_edges(bands, sample_rate)],
    }
    if method == "integrated_gradients":
        info["steps"] = steps
    return per_cell.reshape(bands, windows).float(), info


def breath_share(attribution: torch.Tensor, segments: list[tuple[float, float]], window_s: float) -> float | None:
    """Share of the positive attribution in time windows that overlap a breath segment (``None``
    without positive attribution)."""
    positive = attribution.clamp_min(0).sum(dim=0)
    total = float(positive.sum())
    if total <= 0:
        return None
    overlap = torch.zeros(positive.shape[0], dtype=torch.bool)
    for start, end in segments:
        first, last = int(start // window_s), int(min(end, positive.shape[0] * window_s - 1e-9) // window_s)
        overlap[first : last + 1] = True
    return float(positive[overlap].sum()) / total


def log_mel(waveform: torch.Tensor, sample_rate: int = 16000, n_mels: int = 64) -> torch.Tensor:
    """``[n_mels, frames]`` log-mel power spectrogram for display (torchaudio's HTK filterbank)."""
    import torchaudio

    power = _stft(waveform.detach().float()).abs().pow(2)
    fb = torchaudio.functional.melscale_fbanks(N_FFT // 2 + 1, 0.0, sample_rate / 2, n_mels, sample_rate)
    return torch.log(fb.T @ power + 1e-10)
