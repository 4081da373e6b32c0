"""Synthetic speech and a small real-vs-fake audio demo dataset, written as real audio files.

:func:`synth_speech` makes speech-like audio: phrases of voiced syllables (harmonic source with
pitch contour, jitter and shimmer, shaped by vowel formants), short fricatives, and pauses
between phrases, some of them holding a breath (band-passed noise burst, 15-25 dB below the
speech) at known times. It is the ground truth for the breath detector's tests.

:func:`write_demo_audio` writes a dataset: "real" clips (breaths at natural rates, room reverb,
background noise, natural pitch variation) and "fake" clips with traces of synthetic speech: no
breaths (digital-zero or clean pauses), over-regular pitch and a vocoder artifact (band-limited
high band with a spectral notch, periodic frame-rate modulation). :func:`write_holdout_audio`
uses other voices and another vocoder artifact (high band replaced by smeared noise, frame
clicks) for "never seen" tests.

CLI: ``python -m detectors.audio.demo OUT_DIR [--n-per-class 40] [--seed S] [--holdout]``: writes
``OUT_DIR/demo_audio.yaml`` (and ``OUT_DIR/holdout_audio.yaml``).
"""

from __future__ import annotations

import math
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import soundfile as sf
import torch
from scipy.signal import butter, sosfilt

from detectors.atomic import atomic_path
from detectors.data.demo_sets import demo_argument_parser, recorded_params_match, write_demo_yaml

from .io import resample
from .transforms import SyntheticReverb

__all__ = ["SynthSpeech", "synth_speech", "write_demo_audio", "write_holdout_audio"]

SYNTH_RATE = 16_000

# (F1, F2, F3) in Hz of a few vowels (Peterson & Barney-like averages).
VOWELS = np.array(
    [
        [730, 1090, 2440],
        [270, 2290, 3010],
        [300, 870, 2240],
        [530, 1840, 2480],
        [570, 840, 2410],
        [660, 1720, 2410],
        [440, 1020, 2240],
    ],
    dtype=np.float64,
)


@dataclass
class SynthSpeech:
    waveform: np.ndarray  # float32 [N]
    sample_rate: int
    breaths: list[tuple[float, float]] = field(default_factory=list)  # (start_s, end_s)
    phrases: list[tuple[float, float]] = field(default_factory=list)
    speech_rms: float = 0.0


def _bandpass(noise: np.ndarray, low: float, high: float, rate: int, order: int = 4) -> np.ndarray:
    sos = butter(order, [low, min(high, 0.45 * rate)], btype="bandpass", fs=rate, output="sos")
    return sosfilt(sos, noise)


def _envelope(n: int, attack: float, release: float) -> np.ndarray:
    """Raised-cosine attack and release (fractions of ``n``) around a flat middle."""
    env = np.ones(n)
    a, r = max(1, int(attack * n)), max(1, int(release * n))
    env[:a] = 0.5 - 0.5 * np.cos(np.linspace(0, math.pi, a))
    env[n - r :] = 0.5 + 0.5 * np.cos(np.linspace(0, math.pi, r))
    return env


def _smooth_noise(n: int, rate: int, cutoff_hz: float, rng: np.random.Generator) -> np.ndarray:
    """Unit-variance low-pass noise: slow random variation for jitter and shimmer."""
    steps = max(2, int(n * cutoff_hz / rate) + 2)
    coarse = rng.standard_normal(steps)
    return np.interp(np.linspace(0, steps - 1, n), np.arange(steps), coarse)


def _phrase(
    n: int,
    rate: int,
    rng: np.random.Generator,
    f0_range: tuple[float, float],
    jitter: float,
    shimmer: float,
    fricatives: bool,
    max_harmonic_hz: float,
) -> np.ndarray:
    """One phrase of ``n`` samples: formant-filtered harmonic syllables, some fricative onsets."""
    seconds = n / rate
    out = np.zeros(n)
    t = np.arange(n) / rate
    # Pitch: declination over the phrase, syllable-scale movement, and cycle-scale jitter.
    base = rng.uniform(*f0_range)
    f0 = base * (1.0 + 0.12 * (0.5 - t / max(seconds, 1e-3)))
    f0 *= 1.0 + 0.05 * _smooth_noise(n, rate, 4.0, rng)
    if jitter > 0:
        f0 *= 1.0 + jitter * _smooth_noise(n, rate, 80.0, rng)
    phase = 2 * math.pi * np.cumsum(f0) / rate
    position = 0
    while position < n:
        syllable = int(rng.uniform(0.14, 0.3) * rate)
        end = min(n, position + syllable)
        length = end - position
        if length < int(0.03 * rate):
            break
        formants = VOWELS[rng.integers(len(VOWELS))] * rng.uniform(0.92, 1.08)
        bandwidths = np.array([90.0, 110.0, 160.0])
        mean_f0 = float(f0[position:end].mean())
        harmonics = np.arange(1, int(max_harmonic_hz / mean_f0) + 1)
        freqs = harmonics * mean_f0
        # Spectral envelope at the harmonics: glottal tilt times formant resonances.
        resonance = sum(1.0 / (1.0 + ((freqs - f) / b) ** 2) for f, b in zip(formants, bandwidths))
        amps = (0.05 + resonance) / harmonics
        segment = np.sin(np.outer(phase[position:end], harmonics)) @ amps
        amplitude = 1.0 + (shimmer * _smooth_noise(length, rate, 60.0, rng) if shimmer > 0 else 0.0)
        segment *= _envelope(length, 0.25, 0.3) * amplitude
        segment /= np.sqrt(np.mean(segment**2)) + 1e-12
        out[position:end] += segment * rng.uniform(0.7, 1.0)
        if fricatives and rng.random() < 0.3 and position > 0:
            fric = min(int(rng.uniform(0.04, 0.08) * rate), length)
            hiss = _bandpass(rng.standard_normal(fric), 3000, 7500, rate) * _envelope(fric, 0.3, 0.3)
            hiss /= np.sqrt(np.mean(hiss**2)) + 1e-12
            out[position : position + fric] += 0.3 * hiss
        position = end
    return out


def synth_speech(
    duration_s: float,
    sample_rate: int = SYNTH_RATE,
    seed: int | np.random.Generator = 0,
    *,
    f0_range: tuple[float, float] = (95.0, 210.0),
    breaths: bool = True,
    breath_probability: float = 0.6,
    breath_level_db: tuple[float, float] = (-25.0, -15.0),
    breath_seconds: tuple[float, float] = (0.3, 0.6),
    phrase_seconds: tuple[float, float] = (0.8, 2.0),
    pause_seconds: tuple[float, float] = (0.25, 0.6),
    jitter: float = 0.01,
    shimmer: float = 0.08,
    fricatives: bool = True,
    noise_db: float | None = None,
    speech_rms: float = 0.1,
) -> SynthSpeech:
    """Speech-like audio with breaths at known times; returned at ``sample_rate``.

    Synthesised at 16 kHz and resampled, so breath times are exact at any output rate.
    ``breath_level_db`` is the breath RMS relative to the RMS of the voiced phrases;
    ``noise_db`` adds background noise at that level relative to the speech (``None``: digital
    silence in the pauses).
    """
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    rate = SYNTH_RATE
    total = int(duration_s * rate)
    out = np.zeros(total)
    phrases: list[tuple[int, int]] = []
    breath_spans: list[tuple[int, int]] = []
    cursor = int(rng.uniform(0.1, 0.3) * rate)
    while cursor < total - int(0.3 * rate):
        length = min(int(rng.uniform(*phrase_seconds) * rate), total - cursor)
        out[cursor : cursor + length] = _phrase(length, rate, rng, f0_range, jitter, shimmer, fricatives, 4000.0)
        phrases.append((cursor, cursor + length))
        cursor += length
        if breaths and rng.random() < breath_probability:
            before = int(rng.uniform(0.1, 0.2) * rate)
            span = int(rng.uniform(*breath_seconds) * rate)
            after = int(rng.uniform(0.12, 0.2) * rate)
            if cursor + before + span + after < total:
                breath_spans.append((cursor + before, cursor + before + span))
            cursor += before + span + after
        else:
            cursor += int(rng.uniform(*pause_seconds) * rate)

    voiced = np.concatenate([out[a:b] for a, b in phrases]) if phrases else out
    level = np.sqrt(np.mean(voiced**2)) + 1e-12
    out *= speech_rms / level
    for start, end in breath_spans:
        span = end - start
        # Breath: broadband turbulence with a soft rise and fall, slightly coloured.
        burst = _bandpass(rng.standard_normal(span + 512), 400, 6000, rate, order=2)[512:]
        burst *= _envelope(span, 0.3, 0.4)
        burst /= np.sqrt(np.mean(burst**2)) + 1e-12
        out[start:end] += burst * speech_rms * 10 ** (rng.uniform(*breath_level_db) / 20)
    if noise_db is not None:
        background = np.cumsum(rng.standard_normal(total)) * 0.02  # brownish rumble ...
        background = background - np.convolve(background, np.ones(401) / 401, mode="same")
        background += rng.standard_normal(total)  # ... plus hiss
        background /= np.sqrt(np.mean(background**2)) + 1e-12
        out += background * speech_rms * 10 ** (noise_db / 20)

    waveform = torch.from_numpy(out.astype(np.float32))
    waveform = resample(waveform, rate, sample_rate)
    return SynthSpeech(
        waveform=waveform.numpy(),
        sample_rate=sample_rate,
        breaths=[(a / rate, b / rate) for a, b in breath_spans],
        phrases=[(a / rate, b / rate) for a, b in phrases],
        speech_rms=speech_rms,
    )


# --------------------------------------------------------------------------------------------
# Vocoder-like artifacts for the "fake" class
# --------------------------------------------------------------------------------------------


def _band_limit_with_notch(x: np.ndarray, rate: int, rng: np.random.Generator) -> np.ndarray:
    """Low-pass at 4-5.5 kHz (a narrow-band vocoder) plus a notch in the mid band."""
    cutoff = rng.uniform(4000, 5500)
    x = sosfilt(butter(8, cutoff, btype="lowpass", fs=rate, output="sos"), x)
    centre = rng.uniform(2500, 3500)
    notch = butter(2, [centre * 0.9, centre * 1.1], btype="bandstop", fs=rate, output="sos")
    return sosfilt(notch, x)


def _frame_modulation(x: np.ndarray, rate: int, rng: np.random.Generator) -> np.ndarray:
    """Periodic frame-rate amplitude ripple (overlap-add of vocoder frames, 256-sample hop)."""
    hop_rate = rate / 256.0 * rng.uniform(0.9, 1.1)
    t = np.arange(len(x)) / rate
    return x * (1.0 + 0.15 * np.sin(2 * math.pi * hop_rate * t))


def _smeared_high_band(x: np.ndarray, rate: int, rng: np.random.Generator) -> np.ndarray:
    """Replace the band above ~3.5 kHz by envelope-following noise (phase-less high band)."""
    split = rng.uniform(3200, 3800)
    low = sosfilt(butter(8, split, btype="lowpass", fs=rate, output="sos"), x)
    high = sosfilt(butter(8, split, btype="highpass", fs=rate, output="sos"), x)
    envelope = np.sqrt(np.convolve(high**2, np.ones(320) / 320, mode="same"))
    noise = sosfilt(butter(4, split, btype="highpass", fs=rate, output="sos"), rng.standard_normal(len(x)))
    noise /= np.sqrt(np.mean(noise**2)) + 1e-12
    return low + 0.5 * envelope * noise


def _frame_clicks(x: np.ndarray, rate: int, rng: np.random.Generator) -> np.ndarray:
    """Tiny clicks at frame boundaries (every 10-12 ms) where the signal is active."""
    period = int(rng.uniform(0.010, 0.012) * rate)
    envelope = np.sqrt(np.convolve(x**2, np.ones(160) / 160, mode="same"))
    clicks = np.zeros_like(x)
    clicks[::period] = 1.0
    return x + 0.5 * clicks * envelope


def _fake_clip(duration: float, rng: np.random.Generator, holdout: bool) -> np.ndarray:
    speech = synth_speech(
        duration,
        SYNTH_RATE,
        rng,
        f0_range=(150.0, 280.0) if holdout else (90.0, 200.0),
        breaths=False,
        jitter=0.0,
        shimmer=0.0,
        fricatives=not holdout,
        noise_db=None if rng.random() < 0.6 else -70.0,
    ).waveform.astype(np.float64)
    if holdout:
        x = _frame_clicks(_smeared_high_band(speech, SYNTH_RATE, rng), SYNTH_RATE, rng)
    else:
        x = _frame_modulation(_band_limit_with_notch(speech, SYNTH_RATE, rng), SYNTH_RATE, rng)
    return x


def _real_clip(duration: float, rng: np.random.Generator, holdout: bool) -> np.ndarray:
    speech = synth_speech(
        duration,
        SYNTH_RATE,
        rng,
        f0_range=(150.0, 280.0) if holdout else (90.0, 200.0),
        breaths=True,
        breath_probability=rng.uniform(0.5, 0.9),
        jitter=rng.uniform(0.008, 0.02),
        shimmer=rng.uniform(0.05, 0.15),
        noise_db=rng.uniform(-55.0, -45.0),
    ).waveform
    room = SyntheticReverb(SYNTH_RATE, rt60=(0.1, 0.3), wet=(0.05, 0.2), seed=int(rng.integers(2**31)))
    return room(torch.from_numpy(speech)).numpy().astype(np.float64)


# --------------------------------------------------------------------------------------------
# Writing the dataset
# --------------------------------------------------------------------------------------------


def _write_clip(path: Path, x: np.ndarray, rate: int) -> None:
    audio = resample(torch.from_numpy(x.astype(np.float32)), SYNTH_RATE, rate).numpy()
    audio = np.clip(audio, -1.0, 1.0)
    fmt = "FLAC" if path.suffix == ".flac" else "WAV"
    with atomic_path(path) as tmp:
        sf.write(str(tmp), audio, rate, subtype="PCM_16", format=fmt)


DEMO_VERSION = 1
_RATES = (16_000, 16_000, 16_000, 16_000, 16_000, 22_050, 44_100, 48_000)
_SUFFIXES = (".wav", ".flac")


def _write_dataset(
    root: str | Path,
    n_per_class: int,
    seconds: tuple[float, float],
    seed: int,
    holdout: bool,
    name: str,
) -> Path:
    if n_per_class < 1 or not 0 < seconds[0] <= seconds[1]:
        raise ValueError(f"need n_per_class >= 1 and 0 < seconds[0] <= seconds[1], got {n_per_class}, {seconds}")
    root = Path(root)
    yaml_path = root / f"{name}.yaml"
    params = {"kind": name, "version": DEMO_VERSION, "n_per_class": n_per_class,
              "seconds": [float(seconds[0]), float(seconds[1])], "seed": seed}  # fmt: skip
    folders = {"real": f"{name}/real", "synthetic": f"{name}/synthetic"}
    if _up_to_date(yaml_path, params, folders.values()):
        return yaml_path

    datasets = []
    for class_index, (media_type, folder) in enumerate(folders.items()):
        out_dir = root / folder
        if out_dir.exists():
            shutil.rmtree(out_dir)  # stale clips from other parameters would join the dataset
        out_dir.mkdir(parents=True)
        make = _real_clip if media_type == "real" else _fake_clip
        for index in range(n_per_class):
            # One generator per clip: a clip does not depend on the ones written before it.
            rng = np.random.default_rng([seed, DEMO_VERSION, int(holdout), class_index, index])
            duration = float(rng.uniform(*seconds))
            rate = int(_RATES[rng.integers(len(_RATES))])
            suffix = ".flac" if rng.random() < 0.2 else ".wav"
            x = make(duration, rng, holdout) * rng.uniform(0.5, 2.0)  # recording level varies
            _write_clip(out_dir / f"{media_type}_{index:04d}{suffix}", x, rate)
        entry = {"name": f"{name}_{media_type}", "path": folder, "modality": "audio", "media_type": media_type,
                 "source_format": "wav+flac", "content_category": "synthetic-speech",
                 "notes": f"speech-like demo audio ({name}) written by detectors.audio.demo"}  # fmt: skip
        if media_type != "real":
            entry["generator_family"] = "holdout-vocoder" if holdout else "demo-vocoder"
        datasets.append(entry)
    return write_demo_yaml(yaml_path, params, datasets)


def _up_to_date(yaml_path: Path, params: dict, folders) -> bool:
    if not recorded_params_match(yaml_path, params):
        return False
    root = yaml_path.parent
    return all(
        (root / folder).is_dir()
        and sum(1 for f in (root / folder).iterdir() if f.suffix in _SUFFIXES) == params["n_per_class"]
        for folder in folders
    )


def write_demo_audio(
    root: str | Path, n_per_class: int = 40, seconds: tuple[float, float] = (3, 8), seed: int = 0
) -> Path:
    """Write real/fake demo audio under ``root`` and return the dataset YAML's path.

    Files: ``root/demo_audio/{real,synthetic}/*.wav|*.flac`` (16-bit PCM at 16, 22.05, 44.1 or
    48 kHz). ``root/demo_audio.yaml`` has a ``demo:`` block (the parameters) and a ``datasets:``
    list with benchmark fields (``name``, ``path`` relative to the YAML, ``modality: audio``,
    ``media_type``). Calling again with the same parameters and complete files is a no-op.
    """
    return _write_dataset(root, n_per_class, seconds, seed, holdout=False, name="demo_audio")


def write_holdout_audio(
    root: str | Path, n_per_class: int = 20, seconds: tuple[float, float] = (3, 8), seed: int = 1
) -> Path:
    """Like :func:`write_demo_audio` with other voices (higher pitch) and another vocoder
    artifact (smeared high band, frame clicks, no fricatives), for "never seen" tests."""
    return _write_dataset(root, n_per_class, seconds, seed, holdout=True, name="holdout_audio")


def main(argv: Sequence[str] | None = None) -> None:
    parser = demo_argument_parser(
        "python -m detectors.audio.demo",
        __doc__.split("\n\n")[0],
        n_per_class=40,
        holdout_size="half as many clips as the demo set",
    )
    args = parser.parse_args(argv)
    print(write_demo_audio(args.out_dir, args.n_per_class, seed=args.seed))
    if args.holdout:
        print(write_holdout_audio(args.out_dir, max(1, args.n_per_class // 2), seed=args.seed + 1))


if __name__ == "__main__":
    main()
