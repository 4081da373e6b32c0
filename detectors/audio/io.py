"""Audio decoding: any file -> mono float32 waveform at 16 kHz, the way the benchmark delivers it.

Decoders: ``soundfile`` (libsndfile) for WAV/FLAC/OGG/AIFF and the like, PyAV (ffmpeg) for MP3,
M4A/AAC, Opus, WebM and anything libsndfile refuses. ``torchaudio.load`` is not used: since
torchaudio 2.9 it needs ``torchcodec``, which is not part of this environment.

Conventions (all loaders):

- channels are down-mixed to mono exactly as ffmpeg does when the benchmark asks torchcodec (or the
  ``ffmpeg -ac 1`` CLI) for mono float samples: libswresample's mixing matrix for the file's
  channel layout (:func:`mono_downmix_weights`), whichever reader decoded the file. With float
  output ffmpeg does *not* normalise that matrix, so stereo becomes ``(L + R) / sqrt(2)`` (not the
  mean) and 5.1 becomes ``(FL + FR) / sqrt(2) + FC + (BL + BR) / 2`` with the LFE dropped; files
  without a channel mask get ffmpeg's default layout for their channel count; mono is unchanged;
- resampling uses torchaudio's windowed-sinc resampler; the kernel is built once per
  ``(orig_rate, new_rate)`` pair and cached (:func:`get_resampler`);
- integer PCM is scaled to ``[-1, 1)`` (8-bit unsigned: ``(x - 128) / 128``; 16/24/32-bit signed:
  ``x / 2**(bits - 1)``); float files keep their values, so clipped or over-range audio stays valid;
- silence (all zeros) is valid audio;
- NaN/inf samples are replaced with 0 and a :class:`NonFiniteAudioWarning` says how many; a file
  whose samples are *all* non-finite raises :class:`~detectors.errors.MediaError`;
- unreadable input raises ``MediaError(path, problem)``: missing or empty file, corrupt header,
  no audio stream, zero samples.

Crops: :func:`fixed_window` gives the benchmark's centre crop / zero padding (evaluation) or a
random crop that tiles short clips (training); :func:`load_audio_window` reads only the frames a
crop needs from long files. Lengths of compressed files come from their packets, not from
ffmpeg's duration estimate, which for a VBR MP3 without a Xing/VBRI header is derived from the
first frames' bitrate and can be off by a factor of several (:func:`audio_info`).
"""

from __future__ import annotations

import functools
import hashlib
import math
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Literal, NamedTuple

import numpy as np
import soundfile as sf
import torch
import torchaudio

from detectors.atomic import atomic_path
from detectors.errors import MediaError

if TYPE_CHECKING:
    from av.audio.stream import AudioStream
    from av.container import InputContainer

__all__ = [
    "BENCHMARK_NUM_SAMPLES",
    "BENCHMARK_SAMPLE_RATE",
    "AudioInfo",
    "NonFiniteAudioWarning",
    "WaveformCache",
    "audio_info",
    "fixed_window",
    "get_resampler",
    "load_audio",
    "load_audio_benchmark",
    "load_audio_window",
    "mono_downmix",
    "mono_downmix_weights",
    "resample",
]

BENCHMARK_SAMPLE_RATE = 16_000
BENCHMARK_NUM_SAMPLES = 96_000  # 6 s at 16 kHz

# Extensions libsndfile reads natively; everything else goes straight to PyAV.
SOUNDFILE_EXTENSIONS = frozenset(
    {".wav", ".wave", ".flac", ".ogg", ".oga", ".aif", ".aiff", ".aifc", ".au", ".snd", ".w64",
     ".caf", ".rf64"}
)

# libsndfile formats that cannot carry a channel mask: ffmpeg reads their channels with its default
# layout for the channel count (2 -> stereo, 6 -> 5.1, ...), in file order.
MASKLESS_SOUNDFILE_FORMATS = frozenset({"WAV", "AU"})

# Containers whose header or index gives the exact duration. For every other container PyAV opens
# (raw MP3 and ADTS streams above all) ffmpeg may estimate the duration from the bitrate, so
# :func:`audio_info` measures the stream by its packets instead.
INDEXED_CONTAINERS = frozenset({"mov,mp4,m4a,3gp,3g2,mj2", "ogg"})

# Part of every WaveformCache key: bump it when decoding changes what a file decodes to, so caches
# written by an older version are rebuilt rather than mixed in (2: ffmpeg's down-mix, not the mean).
DECODE_VERSION = 2

WindowMode = Literal["centre", "center", "random", "start"]


class NonFiniteAudioWarning(UserWarning):
    """Some decoded samples were NaN or infinite and have been replaced by 0."""


class AudioInfo(NamedTuple):
    """What a file's header says, read without decoding the samples."""

    sample_rate: int
    num_frames: int
    channels: int

    @property
    def duration(self) -> float:
        return self.num_frames / self.sample_rate


# --------------------------------------------------------------------------------------------
# Resampling
# --------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=64)
def get_resampler(orig_rate: int, new_rate: int) -> torchaudio.transforms.Resample:
    """A ``torchaudio.transforms.Resample`` whose sinc kernel is computed once per rate pair.

    ``torchaudio.functional.resample`` rebuilds the kernel on every call; with many files at the
    same rate the cached module skips that work. The module holds no state besides the kernel,
    so sharing it (also across DataLoader workers, each of which gets its own copy) is safe.
    """
    return torchaudio.transforms.Resample(orig_freq=int(orig_rate), new_freq=int(new_rate))


def resample(waveform: torch.Tensor, orig_rate: int, new_rate: int) -> torch.Tensor:
    """Resample ``[..., N]`` float audio with the cached kernel (identity if the rates match)."""
    if int(orig_rate) == int(new_rate):
        return waveform
    return get_resampler(int(orig_rate), int(new_rate))(waveform)


# --------------------------------------------------------------------------------------------
# Down-mixing
# --------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=256)
def _swr_mono_weights(layout: str) -> np.ndarray:
    import av

    channels = av.AudioLayout(layout).nb_channels
    if channels == 1:
        weights = np.ones(1, np.float32)
    else:
        # One impulse per channel (packed float, frame i carries a 1 on channel i only) through
        # libswresample at an unchanged rate: output sample i is the matrix coefficient of channel i.
        impulses = np.eye(channels, dtype=np.float32).reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(impulses, format="flt", layout=layout)
        frame.sample_rate = 48_000
        resampler = av.AudioResampler(format="flt", layout="mono", rate=48_000)
        try:
            mixed = [out.to_ndarray() for out in resampler.resample(frame)]
            mixed += [out.to_ndarray() for out in resampler.resample(None)]
        except (av.error.FFmpegError, ValueError):
            # ffmpeg has no matrix for this layout (e.g. 9 channels without a mask) and refuses
            # to decode the file as mono; the channel mean is the neutral choice.
            mixed = [np.full((1, channels), 1.0 / channels, np.float32)]
        weights = np.concatenate(mixed, axis=1).reshape(-1).astype(np.float32)
        if weights.size != channels:
            raise RuntimeError(f"libswresample returned {weights.size} weights for {channels} channels ({layout})")
    weights.flags.writeable = False  # shared by the cache
    return weights


def mono_downmix_weights(layout: str | None, channels: int | None = None) -> np.ndarray:
    """Per-channel gains ffmpeg applies when it mixes ``layout`` to mono float samples, ``[C]``.

    They are read off libswresample itself (PyAV's bundled ffmpeg) once per layout, so they follow
    its rules: centre 1, front pair and side/back pair ``1/sqrt(2)`` and ``1/2``, LFE 0 by default,
    no normalisation for float output (the format torchcodec and ``ffmpeg -ac 1 -f f32le`` use).

    Args:
        layout: an ffmpeg channel layout name (``"stereo"``, ``"5.1(side)"``, ``"6 channels"``,
            ``"3 channels (FL+FC+FR)"``, ...). ``None``: unknown, like a WAV without a channel
            mask; ffmpeg then assumes its default layout for the channel count.
        channels: the channel count; required when ``layout`` is ``None``, checked otherwise.

    Layouts ffmpeg cannot mix to mono (an unknown layout of 9 or 11 channels, ambisonics) get the
    channel mean; ffmpeg itself refuses to decode such files as mono.
    """
    if layout is None:
        if channels is None:
            raise ValueError("give the channel count when the layout is unknown")
        layout = f"{int(channels)} channels"
    weights = _swr_mono_weights(layout)
    if channels is not None and weights.size != int(channels):
        raise ValueError(f"layout {layout!r} has {weights.size} channels, expected {channels}")
    return weights


def mono_downmix(data: np.ndarray, layout: str | None = None) -> np.ndarray:
    """Mix float samples ``[frames, channels]`` to mono ``[frames]`` the way ffmpeg does.

    ``layout`` names the channels in the order of ``data``'s columns (``None``: unknown, see
    :func:`mono_downmix_weights`). One channel is returned unchanged, as torchcodec does.
    """
    if data.ndim != 2:
        raise ValueError(f"expected samples [frames, channels], got shape {data.shape}")
    if data.shape[1] == 1:
        return data[:, 0]
    weights = mono_downmix_weights(layout, data.shape[1])
    mixed = data @ weights
    used = weights != 0
    if not used.all() and not np.isfinite(mixed).all():
        # libswresample skips channels with a zero gain (the LFE), so their NaN/inf do not leak in.
        mixed = data[:, used] @ weights[used]
    return mixed


# --------------------------------------------------------------------------------------------
# Decoding
# --------------------------------------------------------------------------------------------


def _check_file(path: Path) -> None:
    if not path.exists():
        raise MediaError(path, "file not found")
    if not path.is_file():
        raise MediaError(path, "not a regular file")
    if path.stat().st_size == 0:
        raise MediaError(path, "empty file (0 bytes)")


def _open_soundfile(path: Path) -> sf.SoundFile | None:
    """Open with libsndfile, or return None when libsndfile does not understand the file."""
    if path.suffix.lower() not in SOUNDFILE_EXTENSIONS:
        return None
    try:
        return sf.SoundFile(str(path))
    except (sf.LibsndfileError, RuntimeError, TypeError):
        return None


def _audio_stream(container: InputContainer, path: Path) -> AudioStream:
    """The audio stream torchcodec decodes: FFmpeg's best-stream choice (``av_find_best_stream``:
    the default-flagged one first), not simply the first of several (e.g. a commentary track)."""
    stream = container.streams.best("audio")
    if stream is None:
        raise MediaError(path, "no audio stream")
    return stream


def _packet_seconds(container: InputContainer, stream: AudioStream) -> float | None:
    """Length of ``stream`` from its packets' durations: demuxing only, about 1/5 of a decode."""
    total = 0
    for packet in container.demux(stream):
        if packet.duration:
            total += packet.duration
    if total <= 0 or stream.time_base is None:
        return None
    return float(total * stream.time_base)


def audio_info(path: str | Path) -> AudioInfo:
    """Sample rate, frame count and channel count without decoding the samples.

    libsndfile files: exact, from the header. Files only PyAV can open: from the container's
    index for MP4/M4A and Ogg; for every other container (MP3, ADTS AAC, WebM, ...) from the sum
    of the packet durations, because ffmpeg's own duration may be estimated from the bitrate
    (a VBR MP3 without a Xing/VBRI header: off by a factor of several). Packet sums can exceed
    the decoded length by the codec's priming/padding (tens of ms); :func:`load_audio_window`
    checks what it decodes and falls back to the whole file when the header promised too much.
    """
    path = Path(path)
    _check_file(path)
    handle = _open_soundfile(path)
    if handle is not None:
        with handle:
            return AudioInfo(handle.samplerate, handle.frames, handle.channels)
    import av

    try:
        with av.open(str(path)) as container:
            stream = _audio_stream(container, path)
            rate = stream.rate or stream.codec_context.sample_rate
            if stream.duration is not None and stream.time_base is not None:
                seconds = float(stream.duration * stream.time_base)
            elif container.duration is not None:
                seconds = container.duration / av.time_base
            else:
                seconds = 0.0
            if container.format.name not in INDEXED_CONTAINERS:
                seconds = _packet_seconds(container, stream) or seconds
            return AudioInfo(int(rate), int(round(seconds * rate)), int(stream.channels))
    except MediaError:
        raise
    except Exception as exc:  # PyAV raises many error types for corrupt input
        raise MediaError(path, f"cannot read audio header: {exc}") from exc


def _probe_layout(path: Path) -> str | None:
    """ffmpeg's channel layout for ``path`` from the demuxer's header (about 1 ms), None if unknown.

    ``probesize=32`` stops ffmpeg from reading packets to analyse the stream: the header (WAVEX
    channel mask, FLAC STREAMINFO, CAF/AIFF-C channel chunk) already holds the layout.
    """
    import av

    try:
        with av.open(str(path), options={"probesize": "32"}) as container:
            stream = container.streams.best("audio")
            return stream.layout.name if stream is not None else None
    except (av.error.FFmpegError, OSError, ValueError):  # libsndfile read it, ffmpeg does not
        return None  # ffmpeg's default layout for the channel count


def _soundfile_layout(path: Path, handle: sf.SoundFile) -> str | None:
    """The channel layout ffmpeg would give the file libsndfile opened as ``handle``."""
    if handle.channels == 1:
        return "mono"
    if handle.format in MASKLESS_SOUNDFILE_FORMATS:
        return None  # no mask: ffmpeg's default layout, the same as mono_downmix(layout=None)
    if handle.channels == 2 and handle.format in ("AIFF", "OGG"):
        return "stereo"
    return _probe_layout(path)


def _read_soundfile(handle: sf.SoundFile, start: int, frames: int) -> np.ndarray:
    """Read ``frames`` frames from ``start`` as float32 ``[frames, channels]`` (partial read)."""
    if start > 0:
        handle.seek(min(start, handle.frames))
    return handle.read(frames=frames, dtype="float32", always_2d=True)


def _read_pyav(path: Path, start_s: float, max_s: float | None) -> tuple[np.ndarray, int, str | None]:
    """Decode with PyAV as planar float32; returns ``([frames, channels], sample_rate, layout)``.

    Decoding stops once ``start_s + max_s`` seconds are available, so a crop near the start of a
    long compressed file costs only that much decoding. Frames before ``start_s`` are decoded and
    dropped (seeking compressed audio lands on packet boundaries and would shift the crop).
    """
    import av

    try:
        container = av.open(str(path))
    except Exception as exc:
        raise MediaError(path, f"cannot open audio: {exc}") from exc
    with container:
        stream = _audio_stream(container, path)
        # format="fltp" keeps the input layout and rate: load_audio down-mixes with ffmpeg's matrix
        # for that layout itself, so files read by libsndfile and by PyAV mix the same way.
        converter = av.AudioResampler(format="fltp")
        chunks: list[np.ndarray] = []
        rate = 0
        layout: str | None = None
        have = 0
        try:
            for frame in container.decode(stream):
                rate = rate or frame.sample_rate
                layout = layout or frame.layout.name  # the decoder's channel order and names
                for converted in converter.resample(frame):
                    array = converted.to_ndarray()
                    chunks.append(array)
                    have += array.shape[1]
                if max_s is not None and rate and have >= math.ceil((start_s + max_s) * rate):
                    break
            else:
                for converted in converter.resample(None):
                    chunks.append(converted.to_ndarray())
        except Exception as exc:
            if not chunks:
                raise MediaError(path, f"cannot decode audio: {exc}") from exc
            # A truncated tail: keep what decoded, as ffmpeg itself does.
            warnings.warn(f"{path}: audio decoding stopped early ({exc})", stacklevel=3)
    if not chunks or not rate:
        raise MediaError(path, "no audio samples")
    data = np.concatenate(chunks, axis=1).T  # [frames, channels]
    first = int(round(start_s * rate))
    data = data[first:]
    if max_s is not None:
        data = data[: int(math.ceil(max_s * rate))]
    return np.ascontiguousarray(data, dtype=np.float32), int(rate), layout


def _decode(path: Path, start_s: float, max_s: float | None) -> tuple[np.ndarray, int, str | None]:
    """``([frames, channels] float32, sample_rate, ffmpeg channel layout or None if unknown)``."""
    handle = _open_soundfile(path)
    if handle is None:
        return _read_pyav(path, start_s, max_s)
    with handle:
        if handle.format == "OGG" and handle.channels > 2:
            # libsndfile returns Vorbis/Opus channels in the codec's order (L, C, R, ...); ffmpeg's
            # decoders reorder them to its own, and the mixing matrix is defined on that order.
            handle.close()
            return _read_pyav(path, start_s, max_s)
        rate = handle.samplerate
        if handle.frames <= 0:
            raise MediaError(path, "no audio samples (header says 0 frames)")
        start = int(round(start_s * rate))
        frames = -1 if max_s is None else int(math.ceil(max_s * rate))
        try:
            data = _read_soundfile(handle, start, frames)
        except (sf.LibsndfileError, RuntimeError) as exc:
            raise MediaError(path, f"cannot decode audio: {exc}") from exc
        return data, rate, _soundfile_layout(path, handle)


def _sanitise(path: Path, mono: np.ndarray) -> np.ndarray:
    finite = np.isfinite(mono)
    if finite.all():
        return mono
    bad = int(mono.size - finite.sum())
    if bad == mono.size:
        raise MediaError(path, "all samples are NaN or infinite")
    warnings.warn(
        f"{path}: replaced {bad} of {mono.size} non-finite samples (NaN/inf) with 0",
        NonFiniteAudioWarning,
        stacklevel=3,
    )
    return np.where(finite, mono, np.float32(0.0))


def load_audio(
    path: str | Path,
    sample_rate: int | None = BENCHMARK_SAMPLE_RATE,
    *,
    offset_seconds: float = 0.0,
    max_seconds: float | None = None,
) -> torch.Tensor:
    """Decode ``path`` to a mono float32 tensor ``[N]`` at ``sample_rate``.

    Channels are mixed as ffmpeg mixes them to mono (:func:`mono_downmix`), so a stereo file
    gives ``(L + R) / sqrt(2)``, what the benchmark's torchcodec decode delivers.

    Args:
        path: audio file (WAV/FLAC/OGG through libsndfile; MP3/M4A/Opus/... through PyAV).
        sample_rate: output rate; ``None`` keeps the file's own rate.
        offset_seconds: start reading here (seeks in libsndfile files).
        max_seconds: read at most this much audio, so long files cost only what is needed.

    Raises:
        MediaError: missing/empty/corrupt file, no audio stream, no samples, or all samples
            non-finite.
    """
    path = Path(path)
    _check_file(path)
    if offset_seconds < 0:
        raise ValueError(f"offset_seconds must be >= 0, got {offset_seconds}")
    if max_seconds is not None and max_seconds <= 0:
        raise ValueError(f"max_seconds must be > 0, got {max_seconds}")
    data, rate, layout = _decode(path, float(offset_seconds), max_seconds)
    if data.size == 0:
        if offset_seconds > 0:
            raise MediaError(path, f"no audio samples after {offset_seconds:.3f} s")
        raise MediaError(path, "no audio samples")
    mono = _sanitise(path, mono_downmix(data, layout))
    waveform = torch.from_numpy(np.ascontiguousarray(mono, dtype=np.float32))
    if sample_rate is not None:
        waveform = resample(waveform, rate, int(sample_rate))
    return waveform


# --------------------------------------------------------------------------------------------
# Fixed-length windows
# --------------------------------------------------------------------------------------------


def fixed_window(
    waveform: torch.Tensor,
    num_samples: int = BENCHMARK_NUM_SAMPLES,
    mode: WindowMode = "centre",
    generator: torch.Generator | None = None,
    tile_short: bool = False,
) -> torch.Tensor:
    """Cut or pad the last dimension of ``waveform`` to exactly ``num_samples``.

    - longer clips: ``"centre"`` starts at ``(N - num_samples) // 2`` (the benchmark's crop),
      ``"start"`` at 0, ``"random"`` at a uniform offset drawn from ``generator``;
    - shorter clips: zero-padded at the end (the benchmark), or with ``tile_short=True`` repeated
      until long enough (the ASVspoof training convention; in ``"random"`` mode the tiled clip
      also starts at a random phase so the seam moves between epochs).

    Evaluation: ``mode="centre"``. Training: ``mode="random"`` (``data.train_short_clips: tile`` tiles).
    """
    length = waveform.shape[-1]
    if length == 0:
        raise ValueError("cannot take a window of an empty waveform")
    if num_samples <= 0:
        raise ValueError(f"num_samples must be > 0, got {num_samples}")
    if mode == "center":
        mode = "centre"
    if mode not in ("centre", "random", "start"):
        raise ValueError(f"mode must be 'centre', 'random' or 'start', got {mode!r}")

    if length < num_samples:
        if not tile_short:
            return torch.nn.functional.pad(waveform, (0, num_samples - length))
        phase = 0
        if mode == "random":
            phase = int(torch.randint(0, length, (1,), generator=generator))
        repeats = math.ceil((num_samples + phase) / length)
        tiled = waveform.repeat(*([1] * (waveform.dim() - 1)), repeats)
        return tiled[..., phase : phase + num_samples]

    spare = length - num_samples
    if mode == "centre":
        start = spare // 2
    elif mode == "start":
        start = 0
    else:
        start = int(torch.randint(0, spare + 1, (1,), generator=generator))
    return waveform[..., start : start + num_samples]


def load_audio_benchmark(path: str | Path, partial: bool = True) -> torch.Tensor:
    """``[96000]`` float32 exactly as the benchmark feeds a model.

    Decode, down-mix as ffmpeg does, resample to 16 kHz, centre-crop longer clips at
    ``(M - 96000) // 2`` (``M`` = resampled length) and zero-pad shorter ones at the end; no
    normalisation.

    With ``partial=True`` a long seekable file (WAV/FLAC/...) is read only around the centre
    window: the read starts on a resampling period boundary (``orig / gcd(orig, 16000)`` input
    samples), so the resampled chunk lines up sample for sample with the resampled whole file,
    and a margin wider than the resampler's filter keeps its edge effects out of the window.
    The result equals the whole-file decode to float rounding (tested).
    """
    path = Path(path)
    target, rate = BENCHMARK_NUM_SAMPLES, BENCHMARK_SAMPLE_RATE
    if partial:
        _check_file(path)
        handle = _open_soundfile(path)
        if handle is not None:
            with handle:
                orig, frames = handle.samplerate, handle.frames
            window = _centre_read_plan(frames, orig, rate, target)
            if window is not None:
                first_frame, num_frames, skip = window
                chunk = load_audio(path, rate, offset_seconds=first_frame / orig, max_seconds=num_frames / orig)
                return chunk[skip : skip + target]
    waveform = load_audio(path, rate)
    return fixed_window(waveform, target, mode="centre", tile_short=False)


def _centre_read_plan(frames: int, orig: int, new: int, target: int, margin: int = 64) -> tuple[int, int, int] | None:
    """``(first input frame, input frames to read, output samples to skip)`` for a centre crop.

    ``None`` when the file is too short for a partial read to pay off. ``offset_seconds`` is
    converted back to frames with ``round``, which is exact for these integer frame counts.
    """
    full_out = math.ceil(frames * new / orig)  # torchaudio's output length
    if full_out < target + 4 * margin:
        return None
    common = math.gcd(orig, new)
    orig_period, new_period = orig // common, new // common
    start_out = (full_out - target) // 2
    block = max(0, (start_out - margin) // new_period)
    first_frame = block * orig_period
    skip = start_out - block * new_period
    last_frame = math.ceil((start_out + target + margin) * orig / new)
    if last_frame >= frames:
        return None
    return first_frame, last_frame - first_frame, skip


def load_audio_window(
    path: str | Path,
    num_samples: int = BENCHMARK_NUM_SAMPLES,
    sample_rate: int = BENCHMARK_SAMPLE_RATE,
    mode: WindowMode = "random",
    generator: torch.Generator | None = None,
    tile_short: bool = True,
    margin_seconds: float = 0.05,
) -> torch.Tensor:
    """A ``num_samples`` window at ``sample_rate``, reading only that part of a long file.

    The window is chosen in seconds from the header (:func:`audio_info`), then only
    ``window + 2 * margin`` seconds are decoded; the margin absorbs the resampler's edge
    transient and is trimmed afterwards. Files shorter than the window are read whole and padded
    or tiled as :func:`fixed_window` does. Used for training crops (``mode="random"``).

    If the file ends before the chosen window does (its header overstated the length: a
    truncated file, a container's bitrate estimate) the whole file is decoded and windowed by
    :func:`fixed_window` instead, so a window never reaches past the real end.
    """
    info = audio_info(path)
    window_s = num_samples / sample_rate
    duration = info.duration
    if info.num_frames <= 0 or duration <= window_s + 2 * margin_seconds:
        return fixed_window(load_audio(path, sample_rate), num_samples, mode, generator, tile_short)
    spare = duration - window_s
    if mode in ("centre", "center"):
        start_s = spare / 2
    elif mode == "start":
        start_s = 0.0
    elif mode == "random":
        start_s = float(torch.rand((), generator=generator)) * spare
    else:
        raise ValueError(f"mode must be 'centre', 'random' or 'start', got {mode!r}")
    read_from = max(0.0, start_s - margin_seconds)
    skip = int(round((start_s - read_from) * sample_rate))
    try:
        chunk = load_audio(
            path, sample_rate, offset_seconds=read_from, max_seconds=window_s + 2 * margin_seconds
        )
    except MediaError:
        chunk = None  # e.g. "no audio samples after ...": the window starts past the real end
    if chunk is None or chunk.numel() < skip + num_samples:
        # The file is shorter than its header said; the whole decode knows the real length
        # (and raises the MediaError itself if the file is broken rather than short).
        return fixed_window(load_audio(path, sample_rate), num_samples, mode, generator, tile_short)
    return chunk[skip : skip + num_samples]


# --------------------------------------------------------------------------------------------
# Cache
# --------------------------------------------------------------------------------------------


class WaveformCache:
    """Decoded + resampled waveforms stored as ``.npy`` under ``root``.

    The key is ``(absolute path, size, mtime_ns, sample_rate, dtype, DECODE_VERSION)``: editing or
    replacing a source file, or a change to how files are decoded, invalidates its entry. Entries are written atomically; an entry that fails to
    load (truncated, wrong dtype or shape, non-finite values) is rebuilt from the source.
    ``dtype="float16"`` halves the disk use; its ~1e-3 relative precision is far below the
    quantisation of the 16-bit sources it mostly holds.
    """

    def __init__(
        self, root: str | Path, sample_rate: int = BENCHMARK_SAMPLE_RATE, dtype: str = "float32"
    ) -> None:
        if dtype not in ("float16", "float32"):
            raise ValueError(f"dtype must be 'float16' or 'float32', got {dtype!r}")
        self.root = Path(root)
        self.sample_rate = int(sample_rate)
        self.dtype = np.dtype(dtype)
        self.hits = 0
        self.misses = 0
        self.rebuilt = 0

    def entry_path(self, path: str | Path) -> Path:
        path = Path(path).resolve()
        stat = path.stat()
        key = f"{path}|{stat.st_size}|{stat.st_mtime_ns}|{self.sample_rate}|{self.dtype.name}|{DECODE_VERSION}"
        digest = hashlib.sha1(key.encode()).hexdigest()
        return self.root / digest[:2] / f"{digest}.npy"

    def _read_entry(self, entry: Path) -> np.ndarray | None:
        try:
            array = np.load(entry, allow_pickle=False)
        except FileNotFoundError:
            return None
        except (ValueError, OSError, EOFError) as exc:
            warnings.warn(f"rebuilding corrupt waveform cache entry {entry}: {exc}", stacklevel=3)
            self.rebuilt += 1
            return None
        if array.dtype != self.dtype or array.ndim != 1 or array.size == 0 or not np.isfinite(array).all():
            warnings.warn(f"rebuilding invalid waveform cache entry {entry}", stacklevel=3)
            self.rebuilt += 1
            return None
        return array

    def load(self, path: str | Path) -> torch.Tensor:
        """Full waveform ``[N]`` float32 at the cache's rate, decoded once per source version."""
        path = Path(path)
        _check_file(path)
        entry = self.entry_path(path)
        array = self._read_entry(entry)
        if array is not None:
            self.hits += 1
            return torch.from_numpy(array.astype(np.float32))
        self.misses += 1
        waveform = load_audio(path, self.sample_rate)
        with atomic_path(entry) as tmp:
            with open(tmp, "wb") as handle:  # np.save(path) would append ".npy" to the temp name
                np.save(handle, waveform.numpy().astype(self.dtype))
        return waveform

    def clear(self) -> None:
        """Remove every entry (the directory itself stays)."""
        for entry in self.root.glob("*/*.npy"):
            entry.unlink(missing_ok=True)

