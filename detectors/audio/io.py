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
- down-mixing and resampling are one libswresample pass with its default options
  (:func:`swr_mono`), as in torchcodec's ``AudioDecoder(..., sample_rate=16000, num_channels=1)``
  and the ``ffmpeg -ac 1 -ar 16000`` CLI: the same Kaiser-windowed sinc filter (cutoff 0.97 of the
  lower Nyquist), the same delay compensation and the same mirrored edges, so the samples equal
  theirs bit for bit (tested against ffmpeg CLI references), also for files libsndfile reads.
  Training windows, the waveform cache and evaluation all go through it, so the model sees one
  filter; torchaudio's resampler (:func:`resample`) is left to the robustness/augmentation
  transforms, which model the benchmark's own chain;
- integer PCM is scaled to ``[-1, 1)`` (8-bit unsigned: ``(x - 128) / 128``; 16/24/32-bit signed:
  ``x / 2**(bits - 1)``); float files keep their values, so clipped or over-range audio stays valid;
- silence (all zeros) is valid audio;
- NaN/inf samples are replaced with 0 (after mixing, before resampling, so they do not smear
  over the filter's length) and a :class:`NonFiniteAudioWarning` says how many; a file
  whose samples are *all* non-finite raises :class:`~detectors.errors.MediaError`;
- unreadable input raises ``MediaError(path, problem)``: missing or empty file, corrupt header,
  no audio stream, zero samples (also after resampling: a few frames can give none).

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
from detectors.errors import MediaError, media_access_problem

if TYPE_CHECKING:
    import av
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
    "swr_mono",
    "swr_num_samples",
]

BENCHMARK_SAMPLE_RATE = 16_000
BENCHMARK_NUM_SAMPLES = 96_000  # 6 s at 16 kHz

# Extensions libsndfile reads natively; everything else goes straight to PyAV.
SOUNDFILE_EXTENSIONS = frozenset(
    {".wav", ".wave", ".flac", ".ogg", ".oga", ".aif", ".aiff", ".aifc", ".au", ".snd", ".w64", ".caf", ".rf64"}
)

# libsndfile formats that cannot carry a channel mask: ffmpeg reads their channels with its default
# layout for the channel count (2 -> stereo, 6 -> 5.1, ...), in file order.
MASKLESS_SOUNDFILE_FORMATS = frozenset({"WAV", "AU"})

# Containers whose header or index gives the exact duration. For every other container PyAV opens
# (raw MP3 and ADTS streams above all) ffmpeg may estimate the duration from the bitrate, so
# :func:`audio_info` measures the stream by its packets instead.
INDEXED_CONTAINERS = frozenset({"mov,mp4,m4a,3gp,3g2,mj2", "ogg"})

# Part of every WaveformCache key: bump it when decoding changes what a file decodes to, so caches
# written by an older version are rebuilt rather than mixed in (2: ffmpeg's down-mix, not the mean;
# 3: libswresample's resampler, not torchaudio's).
DECODE_VERSION = 3

# Input frames handed to libswresample per AudioFrame (cache-sized; the output does not depend on it).
SWR_CHUNK_FRAMES = 1 << 14

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
# torchaudio resampling (the robustness chain's, not the decoder's)
# --------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=64)
def get_resampler(orig_rate: int, new_rate: int) -> torchaudio.transforms.Resample:
    """A ``torchaudio.transforms.Resample`` whose sinc kernel is computed once per rate pair.

    Decoding does not use it (see :func:`swr_mono`); the robustness and augmentation transforms
    do, where the benchmark's own chain resamples with torchaudio-like filters. The module holds
    no state besides the kernel, so sharing it (also across DataLoader workers) is safe.
    """
    return torchaudio.transforms.Resample(orig_freq=int(orig_rate), new_freq=int(new_rate))


def resample(waveform: torch.Tensor, orig_rate: int, new_rate: int) -> torch.Tensor:
    """Resample ``[..., N]`` float audio with torchaudio's cached kernel (identity if the rates match)."""
    if int(orig_rate) == int(new_rate):
        return waveform
    return get_resampler(int(orig_rate), int(new_rate))(waveform)


# --------------------------------------------------------------------------------------------
# Down-mixing and resampling with libswresample (what torchcodec and the ffmpeg CLI run)
# --------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=256)
def _swr_mono_weights(layout: str) -> tuple[np.ndarray, bool]:
    """``(weights [C], whether libswresample can mix the layout to mono)`` for one layout."""
    import av

    channels = av.AudioLayout(layout).nb_channels
    mixable = True
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
            mixed, mixable = [np.full((1, channels), 1.0 / channels, np.float32)], False
        weights = np.concatenate(mixed, axis=1).reshape(-1).astype(np.float32)
        if weights.size != channels:
            raise RuntimeError(f"libswresample returned {weights.size} weights for {channels} channels ({layout})")
    weights.flags.writeable = False  # shared by the cache
    return weights, mixable


def _layout_name(layout: str | None, channels: int) -> str:
    """ffmpeg's name for a layout; ``None`` (no channel mask) is its default for the count."""
    if channels == 1:
        return "mono"
    return layout if layout is not None else f"{int(channels)} channels"


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
    if layout is None and channels is None:
        raise ValueError("give the channel count when the layout is unknown")
    layout = _layout_name(layout, channels) if layout is None else layout
    weights, _ = _swr_mono_weights(layout)
    if channels is not None and weights.size != int(channels):
        raise ValueError(f"layout {layout!r} has {weights.size} channels, expected {channels}")
    return weights


def mono_downmix(data: np.ndarray, layout: str | None = None) -> np.ndarray:
    """Mix float samples ``[frames, channels]`` to mono ``[frames]`` the way ffmpeg does.

    ``layout`` names the channels in the order of ``data``'s columns (``None``: unknown, see
    :func:`mono_downmix_weights`). One channel is returned unchanged, as torchcodec does. This is
    the mixing step alone (equal to libswresample's to float rounding); decoding mixes and
    resamples in one libswresample pass (:func:`swr_mono`).
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


def swr_mono(
    data: np.ndarray,
    sample_rate: int,
    layout: str | None = None,
    new_rate: int | None = BENCHMARK_SAMPLE_RATE,
) -> np.ndarray:
    """Down-mix ``[frames, channels]`` samples to mono and resample them in one libswresample pass.

    This is what torchcodec's ``AudioDecoder(source, sample_rate=16000, num_channels=1)`` does with
    the decoded frames (and what ``ffmpeg -ac 1 -ar 16000 -f f32le`` does in its filter graph):
    libswresample with default options (Kaiser-windowed sinc, 32 taps at the lower rate, cutoff
    0.97), float output, the first output sample centred on the first input sample, mirrored
    input at both ends, and the buffered tail flushed. Here the samples go through PyAV's
    ``AudioResampler`` (an ``aformat`` filter graph around the same libswresample context), which
    gives the same samples as torchcodec's direct ``swr_convert`` calls; the result does not depend
    on how the input is cut into frames.

    Args:
        data: float32 (or float64, resampled in double precision as ffmpeg does for ``dbl``
            decoders) samples ``[frames, channels]``, e.g. what libsndfile or a decoder returned.
        sample_rate: their rate.
        layout: ffmpeg's name of their channel layout (:func:`mono_downmix_weights`); ``None``:
            no channel mask, ffmpeg's default layout for the channel count.
        new_rate: output rate; ``None`` or ``sample_rate`` only mixes.

    Returns:
        float32 ``[N]``. A stream of ``F`` frames gives :func:`swr_num_samples` ``(F, ...)`` samples,
        and output sample ``j`` sits at input time ``j * sample_rate / new_rate``.
    """
    import av

    if data.ndim != 2:
        raise ValueError(f"expected samples [frames, channels], got shape {data.shape}")
    frames, channels = data.shape
    sample_rate = int(sample_rate)
    new_rate = sample_rate if new_rate is None else int(new_rate)
    if data.dtype != np.float64:
        data = data.astype(np.float32, copy=False)
    layout = _layout_name(layout, channels)
    if channels > 1 and not _swr_mono_weights(layout)[1]:
        # No ffmpeg matrix for this layout (ffmpeg refuses the file): the mean, then resample.
        data, layout = mono_downmix(data, layout)[:, None], "mono"
    if frames == 0:
        return np.zeros(0, np.float32)
    if layout == "mono" and new_rate == sample_rate:
        return data[:, 0].astype(np.float32)  # nothing for libswresample to do (a copy, like it)

    # Packed (interleaved) input is [frames, channels] as it lies in memory: no transposed copy.
    packed = "dbl" if data.dtype == np.float64 else "flt"
    data = np.ascontiguousarray(data)
    resampler = av.AudioResampler(format="fltp", layout="mono", rate=new_rate)
    out: list[np.ndarray] = []
    for start in range(0, frames, SWR_CHUNK_FRAMES):
        chunk = data[start : start + SWR_CHUNK_FRAMES].reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(chunk, format=packed, layout=layout)
        frame.sample_rate = sample_rate
        out.extend(converted.to_ndarray()[0] for converted in resampler.resample(frame))
    out.extend(converted.to_ndarray()[0] for converted in resampler.resample(None))  # flush the tail
    return np.concatenate(out) if out else np.zeros(0, np.float32)


def _swr_period(orig_rate: int, new_rate: int) -> tuple[int, int]:
    """``(input frames, output samples)`` after which libswresample's filter phase repeats."""
    common = math.gcd(int(orig_rate), int(new_rate))
    return int(orig_rate) // common, int(new_rate) // common


@functools.lru_cache(maxsize=4096)
def _swr_probe_length(num_frames: int, orig_rate: int, new_rate: int) -> int:
    return swr_mono(np.zeros((num_frames, 1), np.float32), orig_rate, "mono", new_rate).size


def swr_num_samples(num_frames: int, orig_rate: int, new_rate: int = BENCHMARK_SAMPLE_RATE) -> int:
    """How many samples :func:`swr_mono` (and torchcodec) deliver for ``num_frames`` input frames.

    Roughly ``num_frames * new_rate / orig_rate``, but the exact count depends on how much of the
    buffered tail libswresample's flush releases (very short inputs give none at all). The count
    grows by exactly one output period per input period, so it is measured once on a silent probe
    of at most a few periods (cached) and extended, instead of resampling the whole file.
    """
    num_frames, orig_rate, new_rate = int(num_frames), int(orig_rate), int(new_rate)
    if orig_rate == new_rate or num_frames <= 0:
        return max(num_frames, 0)
    in_period, out_period = _swr_period(orig_rate, new_rate)
    # A probe this long keeps the start transient (half the filter, under 1,000 input frames for
    # rates up to 384 kHz) apart from the flushed tail.
    base = in_period * math.ceil(8192 / in_period)
    if num_frames <= base + in_period:
        return _swr_probe_length(num_frames, orig_rate, new_rate)
    probe = base + num_frames % in_period
    return _swr_probe_length(probe, orig_rate, new_rate) + (num_frames - probe) // in_period * out_period


def _swr_margin(orig_rate: int, new_rate: int) -> int:
    """Output samples to trim at each edge of a partial read: libswresample's mirrored edges reach
    half its filter into the output (16 samples when downsampling, ``16 * new / orig`` when
    upsampling); twice that plus slack."""
    return 32 + 2 * math.ceil(16 * max(1.0, new_rate / orig_rate))


def _read_plan(start_out: int, num_out: int, orig_rate: int, new_rate: int, margin: int) -> tuple[int, int, int]:
    """``(first input frame, input frames to read, output samples to skip)`` so that output
    samples ``start_out .. start_out + num_out`` of the whole-file resampling come out of a read
    of only that region, identical sample for sample.

    The read starts on a filter-period boundary at least ``margin`` output samples early, where
    the chunk's resampling lines up with the whole file's, and ends ``margin`` samples late.
    """
    in_period, out_period = _swr_period(orig_rate, new_rate)
    block = max(0, (start_out - margin) // out_period)
    first_frame = block * in_period
    last_frame = -(-(start_out + num_out + margin) * orig_rate // new_rate)  # ceil, in integers
    return first_frame, last_frame - first_frame, start_out - block * out_period


# --------------------------------------------------------------------------------------------
# Decoding
# --------------------------------------------------------------------------------------------


def _check_file(path: Path) -> None:
    problem = media_access_problem(path)
    if problem:
        raise MediaError(path, problem)
    if path.suffix.lower() == ".wav":
        _warn_if_truncated_wav(path)


class TruncatedAudioWarning(UserWarning):
    """A file holds fewer samples than its header declares (a cut-off download or copy)."""


def _warn_if_truncated_wav(path: Path) -> None:
    """Warn, naming the file, when a RIFF/WAVE file's ``data`` chunk declares more bytes than the
    file holds: libsndfile then reads what is there, and the benchmark pads the rest with silence."""
    try:
        with open(path, "rb") as handle:
            header = handle.read(4096)
        size = path.stat().st_size
    except OSError:
        return
    if header[:4] != b"RIFF" or header[8:12] != b"WAVE":
        return
    offset, block_align = 12, 0
    while offset + 8 <= len(header):
        chunk, length = header[offset : offset + 4], int.from_bytes(header[offset + 4 : offset + 8], "little")
        if chunk == b"fmt " and offset + 22 <= len(header):
            block_align = int.from_bytes(header[offset + 20 : offset + 22], "little")
        if chunk == b"data":
            available = size - (offset + 8)
            if length not in (0, 0xFFFFFFFF) and available < length and block_align:  # 0xFFFFFFFF: streamed
                warnings.warn(
                    f"{path}: truncated: its header declares {length // block_align} sample frames, the "
                    f"file holds {max(0, available) // block_align}; the missing part reads as silence",
                    TruncatedAudioWarning,
                    stacklevel=4,
                )
            return
        offset += 8 + length + (length & 1)


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
    """Read ``frames`` frames from ``start`` as ``[frames, channels]`` floats (partial read).

    float32, except 64-bit float files: ffmpeg decodes those as doubles and libswresample then
    works in double precision, so they are read and resampled as float64.
    """
    if start > 0:
        handle.seek(min(start, handle.frames))
    dtype = "float64" if handle.subtype == "DOUBLE" else "float32"
    return handle.read(frames=frames, dtype=dtype, always_2d=True)


# Integer sample formats -> float, as libswresample converts them (exact for 8/16/24-bit content;
# 32-bit values round to float32 the same way).
_INT_TO_FLOAT = {"u8": (128.0, 1.0 / 128), "s16": (0.0, 1.0 / 2**15), "s32": (0.0, 1.0 / 2**31)}


def _frame_floats(frame: av.AudioFrame) -> np.ndarray | None:
    """A decoded frame's samples ``[n, channels]`` as float32 (float64 for doubles), or ``None``
    for a sample format this does not convert (64-bit integers): those go through PyAV's converter.

    Converting in numpy rather than through a per-frame PyAV filter graph saves about a third of
    an MP3 decode."""
    name = frame.format.name.removesuffix("p")  # planar and packed hold the same values
    if name not in ("flt", "dbl") and name not in _INT_TO_FLOAT:
        return None
    array = frame.to_ndarray()
    array = array.T if frame.format.is_planar else array.reshape(-1, frame.layout.nb_channels)
    if name in ("flt", "dbl"):
        return array
    offset, scale = _INT_TO_FLOAT[name]
    return (array.astype(np.float32) - np.float32(offset)) * np.float32(scale)


def _read_pyav(path: Path, start_s: float, max_s: float | None) -> tuple[np.ndarray, int, str | None]:
    """Decode with PyAV to floats; returns ``([frames, channels], sample_rate, layout)``.

    float32, or float64 from decoders that output doubles (as for :func:`_read_soundfile`).

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
        # Samples stay at the input layout and rate: load_audio mixes and resamples them itself
        # (swr_mono), so files read by libsndfile and by PyAV go the same way.
        converter: av.AudioResampler | None = None  # for sample formats _frame_floats leaves out
        chunks: list[np.ndarray] = []
        rate = 0
        layout: str | None = None
        have = 0
        try:
            for frame in container.decode(stream):
                rate = rate or frame.sample_rate
                layout = layout or frame.layout.name  # the decoder's channel order and names
                samples = _frame_floats(frame)
                if samples is not None:
                    converted = [samples]
                else:
                    converter = converter or av.AudioResampler(format="flt")
                    converted = [_frame_floats(out) for out in converter.resample(frame)]
                chunks.extend(converted)
                have += sum(piece.shape[0] for piece in converted)
                if max_s is not None and rate and have >= math.ceil((start_s + max_s) * rate):
                    break
            else:
                for out in converter.resample(None) if converter is not None else []:
                    chunks.append(_frame_floats(out))
        except Exception as exc:
            if not chunks:
                raise MediaError(path, f"cannot decode audio: {exc}") from exc
            # A truncated tail: keep what decoded, as ffmpeg itself does.
            warnings.warn(f"{path}: audio decoding stopped early ({exc})", stacklevel=3)
    if not chunks or not rate:
        raise MediaError(path, "no audio samples")
    first = int(round(start_s * rate))
    if first > 0:  # drop whole leading chunks before concatenating
        while chunks and chunks[0].shape[0] <= first:
            first -= chunks.pop(0).shape[0]
        if not chunks:
            return np.zeros((0, 1), np.float32), int(rate), layout
    # One C-ordered copy: planar frames arrive transposed, and concatenate would keep that order.
    data = np.empty((sum(chunk.shape[0] for chunk in chunks), chunks[0].shape[1]), np.result_type(*chunks))
    np.concatenate(chunks, out=data)
    data = data[first:]
    if max_s is not None:
        data = data[: int(math.ceil(max_s * rate))]
    return data, int(rate), layout


def _decode(path: Path, start_s: float, max_s: float | None) -> tuple[np.ndarray, int, str | None]:
    """``([frames, channels] floats, sample_rate, ffmpeg channel layout or None if unknown)``."""
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

    Channels are mixed and resampled in one libswresample pass (:func:`swr_mono`), exactly as the
    benchmark's torchcodec decode does, whichever library decoded the file: a stereo file gives
    ``(L + R) / sqrt(2)``, resampled with ffmpeg's filter. A slice (``offset_seconds``,
    ``max_seconds``) is resampled on its own: away from its edges (:func:`load_audio_window`
    trims them) it equals the whole file's samples when it starts on a filter period.

    Args:
        path: audio file (WAV/FLAC/OGG through libsndfile; MP3/M4A/Opus/... through PyAV).
        sample_rate: output rate; ``None`` keeps the file's own rate.
        offset_seconds: start reading here (seeks in libsndfile files).
        max_seconds: read at most this much audio, so long files cost only what is needed.

    Raises:
        MediaError: missing/empty/corrupt file, no audio stream, no samples, or all samples
            non-finite, or a clip too short to leave any sample after resampling.
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
    if np.isfinite(data).all():
        mono = swr_mono(data, rate, layout, sample_rate)
    else:
        # NaN/inf would smear over the filter's length: mix (ffmpeg's matrix), zero them, resample.
        mixed = _sanitise(path, mono_downmix(data, layout))
        mono = swr_mono(mixed[:, None], rate, "mono", sample_rate)
    if mono.size == 0:
        raise MediaError(path, f"{data.shape[0]} frames at {rate} Hz leave no samples at {sample_rate} Hz")
    return torch.from_numpy(mono)


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
    mode = _window_mode(mode)

    if length < num_samples:
        if not tile_short:
            return torch.nn.functional.pad(waveform, (0, num_samples - length))
        phase = 0
        if mode == "random":
            phase = int(torch.randint(0, length, (1,), generator=generator))
        repeats = math.ceil((num_samples + phase) / length)
        tiled = waveform.repeat(*([1] * (waveform.dim() - 1)), repeats)
        return tiled[..., phase : phase + num_samples]

    start = _window_start(length - num_samples, mode, generator)
    return waveform[..., start : start + num_samples]


def _window_mode(mode: str) -> WindowMode:
    if mode == "center":
        return "centre"
    if mode not in ("centre", "random", "start"):
        raise ValueError(f"mode must be 'centre', 'random' or 'start', got {mode!r}")
    return mode


def _window_start(spare: int, mode: WindowMode, generator: torch.Generator | None) -> int:
    """Where a window starts when ``spare`` samples are left over: the benchmark's centre crop, the
    start, or a uniform random offset."""
    if mode == "centre":
        return spare // 2
    if mode == "start":
        return 0
    return int(torch.randint(0, spare + 1, (1,), generator=generator))


def load_audio_benchmark(path: str | Path, partial: bool = True) -> torch.Tensor:
    """``[96000]`` float32 exactly as the benchmark feeds a model.

    torchcodec's decode (:func:`load_audio`: ffmpeg's down-mix and resampler in one
    libswresample pass), then a centre crop at ``(M - 96000) // 2`` for longer clips (``M`` = the
    resampled length) or zero padding at the end for shorter ones; no normalisation.

    With ``partial=True`` a long seekable file (WAV/FLAC/...) is read only around the centre
    window (:func:`swr_num_samples` gives ``M`` from the header, the read starts on a filter
    period with a margin for the resampler's edges), and the result equals the whole-file decode
    sample for sample (tested). Compressed files are decoded whole, as the benchmark does.
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
                if chunk.numel() >= skip + target:
                    return chunk[skip : skip + target]
    waveform = load_audio(path, rate)
    return fixed_window(waveform, target, mode="centre", tile_short=False)


def _centre_read_plan(frames: int, orig: int, new: int, target: int) -> tuple[int, int, int] | None:
    """:func:`_read_plan` for the benchmark's centre crop; ``None`` when a partial read of a file
    this short would not pay off (or would need the file's end, where the flush mirrors it)."""
    margin = _swr_margin(orig, new)
    full_out = swr_num_samples(frames, orig, new)
    if full_out < target + 4 * margin:
        return None
    first_frame, num_frames, skip = _read_plan((full_out - target) // 2, target, orig, new, margin)
    if first_frame + num_frames >= frames:
        return None
    return first_frame, num_frames, skip


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

    The window is chosen in output samples from the header (:func:`audio_info`,
    :func:`swr_num_samples`); only the window plus ``margin_seconds`` (at least the resampler's
    reach) either side is decoded, starting on a filter period, so the window is a slice of the
    whole-file decode (:func:`load_audio`, the waveform cache) sample for sample, with
    libswresample's edge transients trimmed away. Files shorter than the window are read whole and
    padded or tiled as :func:`fixed_window` does. Used for training crops (``mode="random"``).

    If the file ends before the chosen window does (its header overstated the length: a
    truncated file, a container's bitrate estimate) the whole file is decoded and windowed by
    :func:`fixed_window` instead, so a window never reaches past the real end.
    """
    mode = _window_mode(mode)
    info = audio_info(path)
    orig, new = info.sample_rate, int(sample_rate)
    margin = max(_swr_margin(orig, new), math.ceil(margin_seconds * new))
    total = swr_num_samples(info.num_frames, orig, new) if info.num_frames > 0 else 0
    if total <= num_samples + 2 * margin:
        return fixed_window(load_audio(path, new), num_samples, mode, generator, tile_short)
    start_out = _window_start(total - num_samples, mode, generator)
    first_frame, num_frames, skip = _read_plan(start_out, num_samples, orig, new, margin)
    try:
        chunk = load_audio(path, new, offset_seconds=first_frame / orig, max_seconds=num_frames / orig)
    except MediaError:
        chunk = None  # e.g. "no audio samples after ...": the window starts past the real end
    if chunk is None or chunk.numel() < skip + num_samples:
        # The file is shorter than its header said; the whole decode knows the real length
        # (and raises the MediaError itself if the file is broken rather than short).
        return fixed_window(load_audio(path, new), num_samples, mode, generator, tile_short)
    return chunk[skip : skip + num_samples]


# --------------------------------------------------------------------------------------------
# Cache
# --------------------------------------------------------------------------------------------


class WaveformCache:
    """Decoded + resampled waveforms (:func:`load_audio`: libswresample, as the benchmark's
    decoder) stored as ``.npy`` under ``root``.

    The key is ``(absolute path, size, mtime_ns, sample_rate, dtype, DECODE_VERSION)``: editing or
    replacing a source file, or a change to how files are decoded, invalidates its entry. Entries
    are written atomically; an entry that fails to load (truncated, wrong dtype or shape,
    non-finite values) is rebuilt from the source.
    ``dtype="float16"`` halves the disk use; its ~1e-3 relative precision is far below the
    quantisation of the 16-bit sources it mostly holds.
    """

    def __init__(self, root: str | Path, sample_rate: int = BENCHMARK_SAMPLE_RATE, dtype: str = "float32") -> None:
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
