"""Audio transforms: this project's audio robustness chain (an evaluation extra) and training augmentation.

Every transform takes a float waveform ``[N]`` or a batch ``[B, N]`` and returns the same shape.
Random transforms draw from their own ``torch.Generator`` (seedable) and, on a batch, draw one
set of parameters per clip.

The benchmark (GASBench, https://github.com/BitMind-AI/gasbench) has no audio robustness pass: no
tag or branch of it augments audio, and an audio benchmark score is never blended. This project's
own chain (``detectors.evaluate --robustness`` reports it apart, as ``audio_robustness_extra``; the
``data.eval_robustness`` option feeds it to validation) runs in this order:

1. 16 kHz -> 8 kHz -> 16 kHz polyphase round trip (``scipy.signal.resample_poly``, trimmed back
   to the input length);
2. gain of -6 dB;
3. white Gaussian noise at 30 dB SNR relative to the RMS of the clip *after* steps 1-2 (the whole
   96,000-sample window, zero padding included); an all-zero clip gets no noise;
4. clip to ``[-1, 1]``.

:func:`audio_robustness` computes it on one clip (numpy, float32, scipy, numpy's ``default_rng``:
the same seed gives the same samples); :class:`RobustnessChain` applies it with per-clip seeds drawn
from its own generator.
"""

from __future__ import annotations

import io
import math
from typing import Callable, Sequence

import numpy as np
import torch
import torchaudio.functional as AF

from .io import BENCHMARK_SAMPLE_RATE, resample

__all__ = [
    "AddWhiteNoise",
    "BandwidthRoundTrip",
    "Compose",
    "Gain",
    "MuLawCodec",
    "PyAVCodec",
    "RandomApply",
    "RandomBandLimit",
    "RandomGain",
    "RandomNoise",
    "RobustnessChain",
    "SyntheticReverb",
    "audio_robustness",
    "build_audio_train_transform",
    "rms",
]

Transform = Callable[[torch.Tensor], torch.Tensor]


def rms(waveform: torch.Tensor) -> torch.Tensor:
    """Root mean square over the last dimension (computed in float64 for long clips)."""
    return waveform.double().pow(2).mean(dim=-1).sqrt().to(waveform.dtype)


def _as_batch(waveform: torch.Tensor) -> tuple[torch.Tensor, bool]:
    if waveform.dim() == 1:
        return waveform.unsqueeze(0), True
    if waveform.dim() == 2:
        return waveform, False
    raise ValueError(f"expected a waveform [N] or a batch [B, N], got shape {tuple(waveform.shape)}")


def _generator(seed: int | None) -> torch.Generator:
    generator = torch.Generator()
    if seed is None:
        generator.seed()
    else:
        generator.manual_seed(seed)
    return generator


def _uniform(low: float, high: float, count: int, generator: torch.Generator) -> torch.Tensor:
    return low + (high - low) * torch.rand(count, generator=generator, dtype=torch.float64)


# --------------------------------------------------------------------------------------------
# Robustness pass (evaluation)
# --------------------------------------------------------------------------------------------


def polyphase_round_trip(array: np.ndarray, sample_rate: int, low_rate: int) -> np.ndarray:
    """``scipy.signal.resample_poly`` down to ``low_rate`` and back along the last axis, in the
    array's own precision, trimmed to the input length (the round trip is never shorter)."""
    from scipy.signal import resample_poly

    common = math.gcd(int(sample_rate), int(low_rate))
    up, down = int(low_rate) // common, int(sample_rate) // common
    return resample_poly(resample_poly(array, up, down, axis=-1), down, up, axis=-1)[..., : array.shape[-1]]


class BandwidthRoundTrip:
    """Down-sample to ``low_rate`` and back, removing content above ``low_rate / 2``.

    ``method="polyphase"`` uses ``scipy.signal.resample_poly`` (Kaiser-windowed FIR), as the
    robustness chain does; ``method="sinc"`` uses torchaudio's resampler (faster on batches, used by the
    training augmentation). Output is trimmed or zero-padded back to the input length.
    """

    def __init__(
        self, sample_rate: int = BENCHMARK_SAMPLE_RATE, low_rate: int = 8000, method: str = "polyphase"
    ) -> None:
        if not 0 < low_rate <= sample_rate:
            raise ValueError(f"low_rate must be in (0, {sample_rate}], got {low_rate}")
        if method not in ("polyphase", "sinc"):
            raise ValueError(f"method must be 'polyphase' or 'sinc', got {method!r}")
        self.sample_rate = int(sample_rate)
        self.low_rate = int(low_rate)
        self.method = method

    def __call__(self, waveform: torch.Tensor) -> torch.Tensor:
        if self.low_rate == self.sample_rate:
            return waveform
        length = waveform.shape[-1]
        if self.method == "polyphase":
            array = waveform.detach().cpu().numpy()
            if array.dtype not in (np.float32, np.float64):
                array = array.astype(np.float32)
            # in the input's precision: the robustness chain filters float32 samples
            restored = polyphase_round_trip(array, self.sample_rate, self.low_rate)
            out = torch.from_numpy(np.ascontiguousarray(restored)).to(waveform.dtype)
        else:
            out = resample(resample(waveform, self.sample_rate, self.low_rate), self.low_rate, self.sample_rate)
        if out.shape[-1] < length:
            out = torch.nn.functional.pad(out, (0, length - out.shape[-1]))
        return out[..., :length].to(waveform.device)

    def __repr__(self) -> str:
        return f"BandwidthRoundTrip({self.sample_rate} -> {self.low_rate} Hz, {self.method})"


class Gain:
    """Multiply by ``10 ** (gain_db / 20)``."""

    def __init__(self, gain_db: float = -6.0) -> None:
        self.gain_db = float(gain_db)

    def __call__(self, waveform: torch.Tensor) -> torch.Tensor:
        return waveform * (10.0 ** (self.gain_db / 20.0))

    def __repr__(self) -> str:
        return f"Gain({self.gain_db:+.1f} dB)"


class AddWhiteNoise:
    """Add white Gaussian noise at ``snr_db`` relative to each clip's RMS; silence stays silent."""

    def __init__(self, snr_db: float = 30.0, seed: int | None = None) -> None:
        self.snr_db = float(snr_db)
        self.generator = _generator(seed)

    def __call__(self, waveform: torch.Tensor) -> torch.Tensor:
        batch, single = _as_batch(waveform)
        sigma = rms(batch.float()) * (10.0 ** (-self.snr_db / 20.0))  # [B]
        noise = torch.randn(batch.shape, generator=self.generator, dtype=torch.float32)
        out = batch + (noise * sigma.unsqueeze(-1)).to(batch.dtype)
        return out[0] if single else out

    def __repr__(self) -> str:
        return f"AddWhiteNoise({self.snr_db:.1f} dB SNR)"


def audio_robustness(
    waveform: np.ndarray | torch.Tensor,
    seed: int | None = None,
    *,
    sample_rate: int = BENCHMARK_SAMPLE_RATE,
    low_rate: int | None = 8000,
    gain_db: float = -6.0,
    snr_db: float | None = 30.0,
    clip: bool = True,
) -> np.ndarray:
    """This project's audio robustness chain on one clip ``[N]`` (not a benchmark pass: GASBench has
    none for audio): float32 samples, ``scipy.signal.resample_poly`` down and up (trimmed to the
    input length), the gain in float32, the RMS in float64, noise
    ``numpy.random.default_rng(seed).normal(0, rms * 10**(-snr/20))`` drawn in float64 and added as
    float32, then clipping to ``[-1, 1]``. The same ``seed`` gives the same samples.
    """
    if isinstance(waveform, torch.Tensor):
        waveform = waveform.detach().cpu().numpy()
    audio = np.array(waveform, dtype=np.float32, copy=True)
    if audio.ndim != 1:
        raise ValueError(f"expected one clip [N], got shape {audio.shape}")
    if low_rate is not None and low_rate < sample_rate:
        audio = polyphase_round_trip(audio, sample_rate, low_rate)
    audio *= 10.0 ** (gain_db / 20.0)
    if snr_db is not None:
        level = np.sqrt(np.mean(np.square(audio, dtype=np.float64)))
        if level > 0:  # silence stays silent
            noise = np.random.default_rng(seed).normal(0.0, level * 10.0 ** (-snr_db / 20.0), audio.shape)
            audio += noise.astype(np.float32)
    return np.clip(audio, -1.0, 1.0) if clip else audio


class RobustnessChain:
    """This project's audio robustness chain (:func:`audio_robustness`: 8 kHz round trip -> -6 dB
    -> 30 dB SNR noise -> clip) on ``[N]`` or ``[B, N]``.

    Each clip's noise is seeded with the next draw of the chain's own ``torch.Generator`` (``seed``),
    so a chain is reproducible and, inside DataLoader workers, reseeded per worker like every other
    transform generator; :func:`audio_robustness` takes a per-clip seed directly.
    """

    def __init__(
        self,
        sample_rate: int = BENCHMARK_SAMPLE_RATE,
        low_rate: int | None = 8000,
        gain_db: float = -6.0,
        snr_db: float | None = 30.0,
        seed: int | None = None,
        clip: bool = True,
    ) -> None:
        if low_rate is not None and not 0 < low_rate <= sample_rate:
            raise ValueError(f"low_rate must be in (0, {sample_rate}], got {low_rate}")
        self.options = {
            "sample_rate": int(sample_rate),
            "low_rate": low_rate,
            "gain_db": float(gain_db),
            "snr_db": None if snr_db is None else float(snr_db),
            "clip": clip,
        }
        self.generator = _generator(seed)

    def __call__(self, waveform: torch.Tensor) -> torch.Tensor:
        batch, single = _as_batch(waveform)
        clips = []
        for clip in batch:
            clip_seed = int(torch.randint(0, 2**63 - 1, (), generator=self.generator))
            clips.append(audio_robustness(clip, clip_seed, **self.options))
        out = torch.from_numpy(np.stack(clips)).to(waveform.device)
        return out[0] if single else out

    def __repr__(self) -> str:
        return f"RobustnessChain({', '.join(f'{k}={v}' for k, v in self.options.items())})"


# --------------------------------------------------------------------------------------------
# Training augmentation
# --------------------------------------------------------------------------------------------


class Compose:
    """Apply transforms in order."""

    def __init__(self, transforms: Sequence[Transform]) -> None:
        self.transforms = list(transforms)

    def __call__(self, waveform: torch.Tensor) -> torch.Tensor:
        for transform in self.transforms:
            waveform = transform(waveform)
        return waveform

    def __repr__(self) -> str:
        inner = ",\n  ".join(map(repr, self.transforms))
        return f"Compose([\n  {inner}\n])" if self.transforms else "Compose([])"


class RandomApply:
    """Apply ``transform`` with probability ``p`` (decided per call)."""

    def __init__(self, transform: Transform, p: float = 0.5, seed: int | None = None) -> None:
        self.transform = transform
        self.p = float(p)
        self.generator = _generator(seed)

    def __call__(self, waveform: torch.Tensor) -> torch.Tensor:
        if float(torch.rand((), generator=self.generator)) < self.p:
            return self.transform(waveform)
        return waveform

    def __repr__(self) -> str:
        return f"RandomApply({self.transform!r}, p={self.p})"


class RandomGain:
    """Gain drawn uniformly in ``[min_db, max_db]`` per clip."""

    def __init__(self, min_db: float = -12.0, max_db: float = 6.0, seed: int | None = None) -> None:
        self.min_db, self.max_db = float(min_db), float(max_db)
        self.generator = _generator(seed)

    def __call__(self, waveform: torch.Tensor) -> torch.Tensor:
        batch, single = _as_batch(waveform)
        db = _uniform(self.min_db, self.max_db, batch.shape[0], self.generator)
        out = batch * (10.0 ** (db / 20.0)).to(batch.dtype).unsqueeze(-1)
        return out[0] if single else out

    def __repr__(self) -> str:
        return f"RandomGain({self.min_db:+.0f}..{self.max_db:+.0f} dB)"


class RandomNoise:
    """White noise at an SNR drawn uniformly in ``[min_snr_db, max_snr_db]`` per clip."""

    def __init__(self, min_snr_db: float = 15.0, max_snr_db: float = 40.0, seed: int | None = None) -> None:
        self.min_snr_db, self.max_snr_db = float(min_snr_db), float(max_snr_db)
        self.generator = _generator(seed)

    def __call__(self, waveform: torch.Tensor) -> torch.Tensor:
        batch, single = _as_batch(waveform)
        snr = _uniform(self.min_snr_db, self.max_snr_db, batch.shape[0], self.generator)
        sigma = rms(batch.float()).double() * 10.0 ** (-snr / 20.0)
        noise = torch.randn(batch.shape, generator=self.generator) * sigma.float().unsqueeze(-1)
        out = batch + noise.to(batch.dtype)
        return out[0] if single else out

    def __repr__(self) -> str:
        return f"RandomNoise({self.min_snr_db:.0f}..{self.max_snr_db:.0f} dB SNR)"


class RandomBandLimit:
    """Telephone/low-bitrate-like bandwidth loss: round trip through a random lower rate."""

    def __init__(
        self,
        sample_rate: int = BENCHMARK_SAMPLE_RATE,
        low_rates: Sequence[int] = (8000, 11025, 12000),
        seed: int | None = None,
    ) -> None:
        self.sample_rate = int(sample_rate)
        self.low_rates = [int(rate) for rate in low_rates]
        self.generator = _generator(seed)

    def __call__(self, waveform: torch.Tensor) -> torch.Tensor:
        index = int(torch.randint(0, len(self.low_rates), (1,), generator=self.generator))
        return BandwidthRoundTrip(self.sample_rate, self.low_rates[index], method="sinc")(waveform)

    def __repr__(self) -> str:
        return f"RandomBandLimit({self.low_rates} Hz)"


class MuLawCodec:
    """8-bit mu-law companding (G.711-like quantisation noise), ``quantization_channels`` levels."""

    def __init__(self, quantization_channels: int = 256) -> None:
        self.quantization_channels = int(quantization_channels)

    def __call__(self, waveform: torch.Tensor) -> torch.Tensor:
        codes = AF.mu_law_encoding(waveform.clamp(-1.0, 1.0), self.quantization_channels)
        return AF.mu_law_decoding(codes, self.quantization_channels).to(waveform.dtype)

    def __repr__(self) -> str:
        return f"MuLawCodec({self.quantization_channels})"


class PyAVCodec:
    """Lossy codec round trip in memory with PyAV (MP3 via libmp3lame, Opus via libopus).

    Costs roughly 10-40 ms per 6 s clip on one CPU core, so it is applied with a small
    probability in training. The decoded signal is aligned to the input: Opus always runs at
    48 kHz, so the clip is resampled there and back; leading encoder delay is trimmed by PyAV's
    decoder, and the length is fixed by trimming/zero-padding.
    """

    CODECS = {"mp3": ("mp3", "libmp3lame"), "opus": ("ogg", "libopus")}

    def __init__(
        self,
        codec: str = "mp3",
        bitrates: Sequence[int] = (24_000, 32_000, 64_000),
        sample_rate: int = BENCHMARK_SAMPLE_RATE,
        seed: int | None = None,
    ) -> None:
        if codec not in self.CODECS:
            raise ValueError(f"codec must be one of {sorted(self.CODECS)}, got {codec!r}")
        self.codec = codec
        self.bitrates = [int(rate) for rate in bitrates]
        self.sample_rate = int(sample_rate)
        self.generator = _generator(seed)

    def _round_trip(self, clip: np.ndarray, bitrate: int) -> np.ndarray:
        import av

        container_format, encoder = self.CODECS[self.codec]
        rate = 48_000 if self.codec == "opus" else self.sample_rate
        signal = clip
        if rate != self.sample_rate:
            signal = resample(torch.from_numpy(clip), self.sample_rate, rate).numpy()
        buffer = io.BytesIO()
        with av.open(buffer, "w", format=container_format) as container:
            stream = container.add_stream(encoder, rate=rate, layout="mono")
            stream.bit_rate = bitrate
            frame = av.AudioFrame.from_ndarray(
                np.ascontiguousarray(signal, dtype=np.float32)[None], format="flt", layout="mono"
            )
            frame.sample_rate = rate
            for packet in stream.encode(frame):
                container.mux(packet)
            for packet in stream.encode(None):
                container.mux(packet)
        buffer.seek(0)
        chunks = []
        with av.open(buffer, "r") as container:
            converter = av.AudioResampler(format="flt", layout="mono", rate=rate)
            for decoded in container.decode(audio=0):
                for converted in converter.resample(decoded):
                    chunks.append(converted.to_ndarray().reshape(-1))
        out = np.concatenate(chunks) if chunks else np.zeros(0, np.float32)
        if rate != self.sample_rate:
            out = resample(torch.from_numpy(out), rate, self.sample_rate).numpy()
        fixed = np.zeros(clip.shape[-1], np.float32)
        fixed[: min(len(out), len(fixed))] = out[: len(fixed)]
        return fixed

    def __call__(self, waveform: torch.Tensor) -> torch.Tensor:
        batch, single = _as_batch(waveform)
        rows = []
        for clip in batch.detach().cpu().float().numpy():
            index = int(torch.randint(0, len(self.bitrates), (1,), generator=self.generator))
            rows.append(self._round_trip(clip, self.bitrates[index]))
        out = torch.from_numpy(np.stack(rows)).to(waveform.dtype)
        return out[0] if single else out

    def __repr__(self) -> str:
        return f"PyAVCodec({self.codec}, {self.bitrates} bit/s)"


class SyntheticReverb:
    """Room-like reverb: convolve with exponentially decaying noise (random RT60 and wet level).

    The impulse response is a direct-path impulse followed by Gaussian noise whose amplitude
    decays by 60 dB over RT60 seconds; it is normalised to unit energy, mixed wet/dry, and the
    result rescaled to the input RMS so reverb does not change loudness.
    """

    def __init__(
        self,
        sample_rate: int = BENCHMARK_SAMPLE_RATE,
        rt60: tuple[float, float] = (0.15, 0.6),
        wet: tuple[float, float] = (0.1, 0.5),
        seed: int | None = None,
    ) -> None:
        self.sample_rate = int(sample_rate)
        self.rt60 = rt60
        self.wet = wet
        self.generator = _generator(seed)

    def impulse_response(self, rt60: float) -> torch.Tensor:
        length = max(2, int(rt60 * self.sample_rate))
        t = torch.arange(length, dtype=torch.float32) / self.sample_rate
        decay = torch.exp(-math.log(1000.0) * t / rt60)  # -60 dB (amplitude 1/1000) at t = rt60
        tail = torch.randn(length, generator=self.generator) * decay
        tail[0] = 0.0
        ir = tail / tail.norm().clamp_min(1e-12)
        ir[0] = 1.0  # direct path
        return ir / ir.norm()

    def __call__(self, waveform: torch.Tensor) -> torch.Tensor:
        batch, single = _as_batch(waveform)
        rows = []
        for clip in batch:
            rt60 = float(_uniform(*self.rt60, 1, self.generator))
            wet = float(_uniform(*self.wet, 1, self.generator))
            ir = self.impulse_response(rt60).to(clip.device, clip.dtype)
            reverberant = AF.fftconvolve(clip, ir)[: clip.shape[-1]]
            mixed = (1.0 - wet) * clip + wet * reverberant
            scale = rms(clip) / rms(mixed).clamp_min(1e-12)
            rows.append(mixed * scale)
        out = torch.stack(rows)
        return out[0] if single else out

    def __repr__(self) -> str:
        return f"SyntheticReverb(rt60={self.rt60} s, wet={self.wet})"


# --------------------------------------------------------------------------------------------
# Builders
# --------------------------------------------------------------------------------------------


def build_audio_train_transform(
    level: int = 2, sample_rate: int = BENCHMARK_SAMPLE_RATE, seed: int | None = None
) -> Compose:
    """Training augmentation of increasing strength, applied to fixed-length 16 kHz clips.

    - 0: none;
    - 1: random gain (-12..+6 dB, p 0.5) and white noise (20..45 dB SNR, p 0.3);
    - 2: level 1 + synthetic reverb (p 0.3) + band limit to 8-12 kHz rates (p 0.2);
    - 3: level 2 + codec (mu-law p 0.1, MP3 24-64 kbit/s p 0.1) + this project's audio
      robustness chain (p 0.2), so training sees what that evaluation extra shows.

    Order: room (reverb) -> channel (band limit, codec) -> level (gain) -> sensor noise.
    """
    if level not in (0, 1, 2, 3):
        raise ValueError(f"audio augmentation level must be 0..3, got {level}")
    # Each random step gets its own seed so a seeded pipeline is reproducible step by step.
    counter = iter(range(10_000))

    def next_seed() -> int | None:
        return None if seed is None else seed + next(counter)

    steps: list[Transform] = []
    if level >= 2:
        steps.append(RandomApply(SyntheticReverb(sample_rate, seed=next_seed()), 0.3, next_seed()))
        steps.append(RandomApply(RandomBandLimit(sample_rate, seed=next_seed()), 0.2, next_seed()))
    if level >= 3:
        steps.append(RandomApply(MuLawCodec(), 0.1, next_seed()))
        steps.append(RandomApply(PyAVCodec("mp3", sample_rate=sample_rate, seed=next_seed()), 0.1, next_seed()))
    if level >= 1:
        steps.append(RandomApply(RandomGain(-12.0, 6.0, seed=next_seed()), 0.5, next_seed()))
        steps.append(RandomApply(RandomNoise(20.0, 45.0, seed=next_seed()), 0.3, next_seed()))
    if level >= 3:
        steps.append(RandomApply(RobustnessChain(sample_rate, seed=next_seed()), 0.2, next_seed()))
    return Compose(steps)
