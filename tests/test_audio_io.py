"""Audio decoding, crops, cache and transforms, checked against independent computations.

Known-value files are written byte by byte with the standard library's ``wave`` module, so the
expected float values do not come from the decoder under test. Down-mixes and the benchmark's
16 kHz decode are checked against files the ``ffmpeg`` CLI wrote once (``tests/data/audio``, see its
README): a different ffmpeg build (5.1), and its own demuxer/decoder/filter path, from the PyAV
library (FFmpeg 8) the loader uses.
"""

from __future__ import annotations

import math
import os
import shutil
import struct
import wave
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import torchaudio

from detectors.audio.io import (
    BENCHMARK_NUM_SAMPLES,
    NonFiniteAudioWarning,
    WaveformCache,
    audio_info,
    fixed_window,
    get_resampler,
    load_audio,
    load_audio_benchmark,
    load_audio_window,
    mono_downmix,
    mono_downmix_weights,
    resample,
    swr_mono,
    swr_num_samples,
)
from detectors.audio.transforms import (
    AddWhiteNoise,
    BandwidthRoundTrip,
    Gain,
    MuLawCodec,
    PyAVCodec,
    RandomGain,
    RandomNoise,
    RobustnessChain,
    SyntheticReverb,
    build_audio_train_transform,
)
from detectors.errors import MediaError

AUDIO_DATA = Path(__file__).parent / "data" / "audio"


def _write_pcm(path: Path, frames: bytes, rate: int, width: int, channels: int = 1) -> Path:
    with wave.open(str(path), "wb") as handle:
        handle.setnchannels(channels)
        handle.setsampwidth(width)
        handle.setframerate(rate)
        handle.writeframes(frames)
    return path


def _sine(freq: float, rate: int, seconds: float, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(int(round(rate * seconds))) / rate
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def _band_power_db(x: torch.Tensor, rate: int, low: float, high: float) -> float:
    spectrum = np.abs(np.fft.rfft(x.double().numpy())) ** 2
    freqs = np.fft.rfftfreq(x.numel(), 1 / rate)
    band = spectrum[(freqs >= low) & (freqs < high)].sum()
    return 10 * math.log10(band / spectrum.sum() + 1e-30)


# ------------------------------------------------------------------------------------ bad input


def test_missing_and_zero_length_files(tmp_path: Path) -> None:
    with pytest.raises(MediaError, match="not found"):
        load_audio(tmp_path / "absent.wav")
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    with pytest.raises(MediaError, match="empty file") as info:
        load_audio(empty)
    assert info.value.path == str(empty)


def test_header_only_wav_has_no_samples(tmp_path: Path) -> None:
    path = _write_pcm(tmp_path / "header.wav", b"", 16000, 2)
    assert path.stat().st_size == 44  # a RIFF header and nothing else
    with pytest.raises(MediaError, match="no audio samples"):
        load_audio(path)


@pytest.mark.parametrize("suffix", [".wav", ".mp3", ".flac", ".m4a"])
def test_corrupt_bytes_raise_media_error(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"corrupt{suffix}"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(MediaError):
        load_audio(path)


def test_truncated_wav_header_raises(tmp_path: Path) -> None:
    good = _write_pcm(tmp_path / "good.wav", struct.pack("<100h", *range(100)), 16000, 2)
    bad = tmp_path / "bad.wav"
    bad.write_bytes(good.read_bytes()[:20])  # cut inside the fmt chunk
    with pytest.raises(MediaError):
        load_audio(bad)


# ---------------------------------------------------------------------------- sample formats


def test_unsigned_8bit_wav_scale(tmp_path: Path) -> None:
    raw = bytes([0, 64, 128, 192, 255])
    path = _write_pcm(tmp_path / "u8.wav", raw, 8000, 1)
    expected = (np.frombuffer(raw, np.uint8).astype(np.float64) - 128) / 128  # -1, -0.5, 0, 0.5, 127/128
    np.testing.assert_allclose(load_audio(path, None).numpy(), expected, atol=1e-7)


def test_signed_16bit_wav_scale(tmp_path: Path) -> None:
    values = [0, 16384, -16384, 32767, -32768, 1]
    path = _write_pcm(tmp_path / "s16.wav", struct.pack("<6h", *values), 16000, 2)
    np.testing.assert_allclose(load_audio(path).numpy(), np.array(values) / 32768.0, atol=1e-7)


def test_24bit_wav_scale(tmp_path: Path) -> None:
    values = [2**22, -(2**22), 1, -(2**23), 2**23 - 1, 0]
    raw = b"".join(v.to_bytes(3, "little", signed=True) for v in values)
    path = _write_pcm(tmp_path / "s24.wav", raw, 16000, 3)
    np.testing.assert_allclose(load_audio(path).double().numpy(), np.array(values) / 2**23, atol=1e-9)


# ------------------------------------------------------------------------------- down-mixing

# (fixture, what ffmpeg calls its layout): the reference is `ffmpeg -i <fixture> -ac 1 -f f32le`.
DOWNMIX_FIXTURES = [
    ("stereo.wav", "2 channels, no mask"),
    ("5.1.wav", "WAVEX mask 5.1"),
    ("quad.wav", "WAVEX mask quad (the default 4-channel layout, 4.0, mixes differently)"),
    ("6ch-nomask.wav", "6 channels, no mask"),
    ("6ch.flac", "5.1(side)"),
    ("6ch-vorbis.ogg", "Vorbis 5.1, channels reordered by the decoder"),
]


def _ffmpeg_mono(fixture: str) -> np.ndarray:
    return np.fromfile(AUDIO_DATA / (fixture.rsplit(".", 1)[0] + ".ffmpeg-mono.f32"), dtype="<f4")


@pytest.mark.parametrize("reader", ["default", "pyav"])
@pytest.mark.parametrize(("fixture", "layout"), DOWNMIX_FIXTURES)
def test_downmix_equals_ffmpeg_cli(tmp_path: Path, fixture: str, layout: str, reader: str) -> None:
    source = AUDIO_DATA / fixture
    if reader == "pyav":  # an extension libsndfile is not asked about: PyAV decodes the same bytes
        source = Path(shutil.copy(source, tmp_path / f"{fixture}.bin"))
    expected = _ffmpeg_mono(fixture)
    out = load_audio(source, None).numpy()
    assert out.shape == expected.shape
    # Lossless fixtures agree to float32 rounding; the Vorbis one is decoded by two ffmpeg versions.
    atol = 1e-6 if fixture.endswith(".ogg") else 2.5e-7
    np.testing.assert_allclose(out, expected, rtol=0, atol=atol)
    if fixture != "6ch-vorbis.ogg":  # the old channel mean is far from what ffmpeg delivers
        samples, _ = sf.read(AUDIO_DATA / fixture, dtype="float32")
        assert np.abs(samples.mean(axis=1) - expected).max() > 0.1


def test_stereo_downmix_is_not_normalised(tmp_path: Path) -> None:
    left, right = _sine(300, 44100, 1.0), _sine(300, 44100, 1.0, amplitude=0.1)
    sf.write(tmp_path / "x.flac", np.stack([left, right], 1), 44100, subtype="PCM_16")
    out = load_audio(tmp_path / "x.flac")
    # ffmpeg's float mono matrix for stereo is [1/sqrt(2), 1/sqrt(2)] (no normalisation to 1/2).
    reference = _sine(300, 16000, 1.0, amplitude=0.6 / math.sqrt(2))
    np.testing.assert_allclose(out.numpy()[200:-200], reference[200 : out.numel() - 200], atol=5e-3)


def test_downmix_weights_and_unmixable_layouts(tmp_path: Path) -> None:
    np.testing.assert_allclose(mono_downmix_weights("5.1"), [0.5**0.5, 0.5**0.5, 1, 0, 0.5, 0.5], rtol=1e-6)
    np.testing.assert_array_equal(mono_downmix_weights(None, 3), mono_downmix_weights("2.1"))  # ffmpeg's default
    with pytest.raises(ValueError):
        mono_downmix_weights("stereo", channels=6)
    # A NaN in the LFE does not reach the mix (libswresample skips zero-gain channels).
    six = np.full((4, 6), 0.25, np.float32)
    six[:, 3] = np.nan
    np.testing.assert_allclose(mono_downmix(six, "5.1"), 0.25 * (2 * 0.5**0.5 + 2), rtol=1e-6)
    # 9 channels without a mask: ffmpeg has no matrix and refuses; the loader takes the mean.
    values = np.arange(9 * 50, dtype=np.int16).reshape(50, 9) * 7 - 1500
    path = _write_pcm(tmp_path / "nine.wav", values.astype("<i2").tobytes(), 16000, 2, channels=9)
    np.testing.assert_allclose(load_audio(path, None).numpy(), values.mean(axis=1) / 32768, atol=1e-7)
    mono = _write_pcm(tmp_path / "mono.wav", struct.pack("<3h", 1000, -2000, 3000), 16000, 2)
    np.testing.assert_array_equal(load_audio(mono, None).numpy(), np.array([1000, -2000, 3000]) / 32768)


def test_the_default_audio_stream_is_read_not_the_first(tmp_path: Path) -> None:
    """Of two audio tracks the default-flagged one is decoded (FFmpeg's choice, what torchcodec reads)."""
    import av

    path = tmp_path / "two_tracks.mkv"
    with av.open(str(path), "w") as container:
        commentary = container.add_stream("pcm_s16le", rate=16000, layout="mono")
        main = container.add_stream("pcm_s16le", rate=16000, layout="mono")
        commentary.disposition, main.disposition = av.stream.Disposition(0), av.stream.Disposition.default
        for stream, value, frames in ((commentary, 1000, 800), (main, -3000, 1600)):
            frame = av.AudioFrame.from_ndarray(np.full((1, frames), value, np.int16), format="s16", layout="mono")
            frame.sample_rate, frame.pts = 16000, 0
            for packet in [*stream.encode(frame), *stream.encode(None)]:
                container.mux(packet)
    assert audio_info(path).num_frames == 1600
    waveform = load_audio(path)
    assert waveform.shape == (1600,) and torch.allclose(waveform, torch.full((1600,), -3000 / 32768))


# ------------------------------------------------------------------ the benchmark's 16 kHz decode

# (fixture, file rate): the reference is `ffmpeg -i <fixture> -ac 1 -ar 16000 -f f32le`, which is
# what torchcodec's AudioDecoder(..., sample_rate=16000, num_channels=1) returns too.
BENCHMARK_FIXTURES = [
    ("stereo-44k.wav", 44100),
    ("5.1-48k.wav", 48000),
    ("mono-22k.wav", 22050),
    ("stereo-44k.mp3", 44100),
]


def _ffmpeg_16k(fixture: str) -> np.ndarray:
    return np.fromfile(AUDIO_DATA / f"{fixture}.ffmpeg-16k.f32", dtype="<f4")


@pytest.mark.parametrize("reader", ["default", "pyav"])
@pytest.mark.parametrize(("fixture", "rate"), BENCHMARK_FIXTURES)
def test_benchmark_decode_equals_ffmpeg_cli(tmp_path: Path, fixture: str, rate: int, reader: str) -> None:
    source = AUDIO_DATA / fixture
    if reader == "pyav":  # WAVs decoded by ffmpeg instead of libsndfile must give the same samples
        source = Path(shutil.copy(source, tmp_path / f"{fixture}.bin"))
    expected = _ffmpeg_16k(fixture)
    out = load_audio(source).numpy()
    assert out.shape == expected.shape
    # Measured: identical (0.0) with PyAV's FFmpeg 8 against the FFmpeg 5.1 CLI, first and last
    # samples included (delay compensation, mirrored edges, flushed tail); the tolerance leaves
    # room for another CPU's SIMD rounding only.
    np.testing.assert_allclose(out, expected, rtol=0, atol=1e-6)
    np.testing.assert_allclose(out[:32], expected[:32], rtol=0, atol=1e-6)
    np.testing.assert_allclose(out[-32:], expected[-32:], rtol=0, atol=1e-6)
    padded = np.pad(expected, (0, BENCHMARK_NUM_SAMPLES - expected.size))  # the benchmark's zero padding
    np.testing.assert_allclose(load_audio_benchmark(source).numpy(), padded, rtol=0, atol=1e-6)
    native = load_audio(source, None)  # mixed to mono at the file's rate
    assert swr_num_samples(native.numel(), rate) == expected.size

    # The previous decoder (the same mix, torchaudio's resampler) is far outside that tolerance,
    # also away from the edges: its filter differs near the 8 kHz Nyquist frequency.
    old = resample(native, rate, 16000).numpy()
    n = min(old.size, expected.size)
    assert np.abs(old[32 : n - 32] - expected[32 : n - 32]).max() > 1e-2


def test_swr_mono_is_one_pass_independent_of_chunking(monkeypatch: pytest.MonkeyPatch) -> None:
    import detectors.audio.io as audio_io

    data, rate = sf.read(AUDIO_DATA / "5.1-48k.wav", dtype="float32", always_2d=True)
    whole = swr_mono(data, rate, "5.1")
    np.testing.assert_allclose(whole, _ffmpeg_16k("5.1-48k.wav"), rtol=0, atol=1e-6)
    monkeypatch.setattr(audio_io, "SWR_CHUNK_FRAMES", 333)  # frames cut anywhere: same stream
    np.testing.assert_array_equal(swr_mono(data, rate, "5.1"), whole)
    # Mixing alone (same rate) is the down-mix matrix; one channel at the same rate is untouched.
    np.testing.assert_allclose(swr_mono(data, rate, "5.1", None), mono_downmix(data, "5.1"), rtol=0, atol=1e-6)
    np.testing.assert_array_equal(swr_mono(data[:, :1], rate, "mono", rate), data[:, 0])


@pytest.mark.parametrize("rate", [4000, 8000, 11025, 22050, 44100, 48000, 96000, 44056])
def test_swr_num_samples_counts_what_the_resampler_delivers(rate: int) -> None:
    """The exact count (ffmpeg's flush; very short inputs give nothing), long ones by extension."""
    rng = np.random.default_rng(rate)
    for frames in [1, 7, 40, 1000, 12_345, int(rng.integers(20_000, 90_000)), 250_001]:
        x = rng.standard_normal((frames, 1)).astype(np.float32)
        assert swr_num_samples(frames, rate) == swr_mono(x, rate, "mono").size, frames


def test_a_clip_too_short_to_resample_is_a_media_error(tmp_path: Path) -> None:
    sf.write(tmp_path / "blip.wav", np.full(20, 0.5, np.float32), 44100, subtype="FLOAT")
    assert load_audio(tmp_path / "blip.wav", None).numel() == 20
    with pytest.raises(MediaError, match="leave no samples"):  # libswresample returns 0 samples
        load_audio(tmp_path / "blip.wav")


def test_float64_files_resample_in_double_precision_by_either_reader(tmp_path: Path) -> None:
    x = (np.random.default_rng(5).standard_normal((30_000, 2)) * 0.3).astype(np.float64)
    sf.write(tmp_path / "f64.wav", x, 44100, subtype="DOUBLE")
    by_sndfile = load_audio(tmp_path / "f64.wav").numpy()
    by_pyav = load_audio(Path(shutil.copy(tmp_path / "f64.wav", tmp_path / "f64.bin"))).numpy()
    np.testing.assert_array_equal(by_sndfile, by_pyav)  # ffmpeg decodes doubles, swr works in double
    single = swr_mono(x.astype(np.float32), 44100)
    assert 0 < np.abs(single - by_sndfile).max() < 1e-5  # float32 input would round differently


def test_pyav_sample_conversion_equals_libswresample(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Integer PCM decoded by PyAV is converted to float in numpy; PyAV's own converter (used for
    formats that conversion leaves out) gives the same samples."""
    import detectors.audio.io as audio_io

    rng = np.random.default_rng(7)
    for subtype in ("PCM_U8", "PCM_16", "PCM_32"):
        path = tmp_path / f"{subtype}.bin"  # an extension libsndfile is not asked about
        sf.write(tmp_path / "x.wav", rng.uniform(-1, 1, (5000, 2)), 22050, format="WAV", subtype=subtype)
        shutil.copy(tmp_path / "x.wav", path)
        fast = load_audio(path, None).numpy()
        with monkeypatch.context() as patch:
            patch.setattr(audio_io, "_INT_TO_FLOAT", {})
            np.testing.assert_array_equal(load_audio(path, None).numpy(), fast)
        np.testing.assert_array_equal(fast, load_audio(tmp_path / "x.wav", None).numpy())  # libsndfile's


def test_non_finite_samples_are_zeroed_before_resampling(tmp_path: Path) -> None:
    x = (np.random.default_rng(6).standard_normal((44100, 2)) * 0.2).astype(np.float32)
    x[1000:1010, 0] = np.nan
    x[30_000, 1] = -np.inf
    sf.write(tmp_path / "nan.wav", x, 44100, subtype="FLOAT")
    with pytest.warns(NonFiniteAudioWarning, match="11 of 44100"):
        out = load_audio(tmp_path / "nan.wav").numpy()
    mixed = np.where(np.isfinite(x).all(axis=1), (x[:, 0] + x[:, 1]) / np.sqrt(np.float32(2)), 0)
    expected = swr_mono(mixed[:, None].astype(np.float32), 44100, "mono")
    np.testing.assert_allclose(out, expected, rtol=0, atol=1e-6)  # no NaN spread over the filter


@pytest.mark.parametrize("rate", [8000, 11025, 22050, 44100, 48000, 96000])
def test_unusual_rates_resample_to_16k(tmp_path: Path, rate: int) -> None:
    seconds, freq = 0.5, 440.0
    path = tmp_path / f"sine_{rate}.wav"
    sf.write(path, _sine(freq, rate, seconds), rate, subtype="FLOAT")
    out = load_audio(path)
    assert out.dtype == torch.float32 and out.dim() == 1
    assert abs(out.numel() - 16000 * seconds) <= 1
    reference = _sine(freq, 16000, seconds)[: out.numel()]
    interior = slice(200, out.numel() - 200)  # the resampler's edges are not a sine
    np.testing.assert_allclose(out.numpy()[interior], reference[interior], atol=5e-3)


def test_nan_and_inf_samples_are_zeroed_with_a_warning(tmp_path: Path) -> None:
    x = _sine(200, 16000, 0.25)
    x[100:110] = np.nan
    x[500] = np.inf
    sf.write(tmp_path / "nan.wav", x, 16000, subtype="FLOAT")
    with pytest.warns(NonFiniteAudioWarning, match="11 of 4000"):
        out = load_audio(tmp_path / "nan.wav").numpy()
    assert np.all(out[100:110] == 0) and out[500] == 0
    keep = np.isfinite(x)
    np.testing.assert_array_equal(out[keep], x[keep])


def test_all_nan_file_is_an_error(tmp_path: Path) -> None:
    sf.write(tmp_path / "nan.wav", np.full(100, np.nan, np.float32), 16000, subtype="FLOAT")
    with pytest.raises(MediaError, match="NaN"):
        load_audio(tmp_path / "nan.wav")


def test_silent_and_clipped_audio_are_valid(tmp_path: Path) -> None:
    sf.write(tmp_path / "silent.wav", np.zeros(1600), 16000, subtype="PCM_16")
    assert torch.count_nonzero(load_audio(tmp_path / "silent.wav")) == 0
    over = np.array([1.5, -2.0, 0.25], np.float32)
    sf.write(tmp_path / "over.wav", over, 16000, subtype="FLOAT")
    np.testing.assert_array_equal(load_audio(tmp_path / "over.wav").numpy(), over)


def _encode_with_pyav(path: Path, x: np.ndarray, rate: int, fmt: str, codec: str) -> None:
    import av

    with av.open(str(path), "w", format=fmt) as container:
        stream = container.add_stream(codec, rate=rate, layout="stereo")
        frame = av.AudioFrame.from_ndarray(np.stack([x, x]).astype(np.float32), format="fltp", layout="stereo")
        frame.sample_rate = rate
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)


@pytest.mark.parametrize(
    ("suffix", "fmt", "codec", "rate"), [(".mp3", "mp3", "libmp3lame", 44100), (".m4a", "mp4", "aac", 48000)]
)
def test_compressed_formats_decode_through_pyav(tmp_path: Path, suffix: str, fmt: str, codec: str, rate: int) -> None:
    x = _sine(440, rate, 1.0, amplitude=0.4)
    path = tmp_path / f"clip{suffix}"
    _encode_with_pyav(path, x, rate, fmt, codec)
    out = load_audio(path)
    assert abs(out.numel() - 16000) < 16000 * 0.1  # codec padding/priming only
    # Amplitude and pitch survive: both channels carry a 0.4 sine, ffmpeg's mono mix is their sum
    # over sqrt(2) (RMS 0.4 * sqrt(2) / sqrt(2)); energy concentrated around 440 Hz.
    middle = out[2000:14000]
    assert float(middle.pow(2).mean().sqrt()) == pytest.approx(0.4, rel=0.1)
    assert _band_power_db(middle, 16000, 400, 480) > -1.0
    assert audio_info(path).sample_rate == rate


# ----------------------------------------------------------------------------- partial reads


def test_offset_and_max_seconds_read_a_slice(tmp_path: Path) -> None:
    rate = 44100
    x = (np.random.default_rng(1).standard_normal(rate * 12) * 0.1).astype(np.float32)
    sf.write(tmp_path / "long.wav", x, rate, subtype="FLOAT")
    native = load_audio(tmp_path / "long.wav", None, offset_seconds=5.0, max_seconds=2.0)
    np.testing.assert_array_equal(native.numpy(), x[5 * rate : 7 * rate])
    full = load_audio(tmp_path / "long.wav")
    part = load_audio(tmp_path / "long.wav", offset_seconds=5.0, max_seconds=2.0)
    assert part.numel() == 32000
    # 5 s is a whole number of filter periods (441 frames): away from the edges of the read (the
    # resampler mirrors them) the resampled slice is the full decode's, sample for sample.
    torch.testing.assert_close(part[64:-64], full[80064:111936], atol=0, rtol=0)
    assert not torch.equal(part[:8], full[80000:80008])


def test_load_audio_window_reads_a_contiguous_window(tmp_path: Path) -> None:
    x = np.arange(16000 * 20, dtype=np.float32) / (16000 * 20)  # a ramp: each value locates itself
    sf.write(tmp_path / "ramp.wav", x, 16000, subtype="FLOAT")
    generator = torch.Generator().manual_seed(3)
    window = load_audio_window(tmp_path / "ramp.wav", 96000, mode="random", generator=generator).numpy()
    start = int(round(window[0] * 16000 * 20))
    assert window.shape == (96000,)
    np.testing.assert_allclose(window, x[start : start + 96000], atol=1e-6)
    centre = load_audio_window(tmp_path / "ramp.wav", 96000, mode="centre")
    np.testing.assert_array_equal(centre.numpy(), x[112000:208000])


def test_load_audio_window_tiles_short_files(tmp_path: Path) -> None:
    x = _sine(500, 16000, 1.0)
    sf.write(tmp_path / "short.wav", x, 16000, subtype="FLOAT")
    out = load_audio_window(tmp_path / "short.wav", 40000, mode="start").numpy()
    np.testing.assert_array_equal(out, np.tile(x, 3)[:40000])


def _write_vbr_mp3_without_xing(path: Path, x: np.ndarray, rate: int) -> Path:
    import av

    # write_xing=0: no Xing/Info frame, so ffmpeg can only guess the duration from the bitrate.
    with av.open(str(path), "w", format="mp3", options={"write_xing": "0"}) as container:
        stream = container.add_stream("libmp3lame", rate=rate, layout="mono")
        stream.codec_context.qscale = 4  # VBR (lame -V 4): frame sizes follow the content
        frame = av.AudioFrame.from_ndarray(x[None].astype(np.float32), format="fltp", layout="mono")
        frame.sample_rate = rate
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path


def _slice_start(full: torch.Tensor, window: torch.Tensor) -> int | None:
    """Where ``window`` sits in ``full`` sample for sample, or None if it is no slice of it."""
    for start in np.flatnonzero(full.numpy() == window[0].item()):
        if torch.equal(full[start : start + window.numel()], window):
            return int(start)
    return None


@pytest.mark.parametrize("order", ["quiet-first", "loud-first"])
def test_vbr_mp3_without_xing_header_windows_stay_inside_the_audio(tmp_path: Path, order: str) -> None:
    import av

    rate, n = 16000, 16000  # a 1 s window at the file's own rate: windows are exact decode slices
    t = np.arange(rate * 4) / rate
    quiet = 0.01 * np.sin(2 * np.pi * (200 + 100 * t) * t)  # low-bitrate frames
    loud = 0.3 * np.random.default_rng(0).standard_normal(rate * 4)  # high-bitrate frames
    parts = [quiet, loud] if order == "quiet-first" else [loud, quiet]
    path = _write_vbr_mp3_without_xing(tmp_path / "vbr.mp3", np.concatenate(parts), rate)
    full = load_audio(path, None)
    true_s = full.numel() / rate
    with av.open(str(path)) as container:
        estimate_s = container.duration / av.time_base
    # The hazard: ffmpeg extrapolates the first frames' bitrate (about 23 s or 5 s for 8.1 s).
    assert estimate_s > 2 * true_s if order == "quiet-first" else estimate_s < 0.7 * true_s

    assert audio_info(path).duration == pytest.approx(true_s, abs=0.05)
    starts = []
    for seed in range(12):
        window = load_audio_window(path, n, rate, "random", torch.Generator().manual_seed(seed), tile_short=False)
        start = _slice_start(full, window)
        assert window.shape == (n,) and start is not None  # real audio: no padding, tiling or error
        starts.append(start)
    # Windows reach past the bitrate estimate when it was short, and never past the real end.
    assert max(starts) + n <= full.numel()
    if order == "loud-first":
        assert max(starts) / rate > estimate_s - n / rate
    centre = load_audio_window(path, n, rate, "centre")
    assert abs(_slice_start(full, centre) - (full.numel() - n) // 2) <= 16


def test_load_audio_window_survives_an_overstated_header(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import detectors.audio.io as audio_io

    x = np.arange(16000 * 8, dtype=np.float32) / (16000 * 8)  # a ramp: each value locates itself
    sf.write(tmp_path / "ramp.wav", x, 16000, subtype="FLOAT")
    real = audio_info(tmp_path / "ramp.wav")
    monkeypatch.setattr(audio_io, "audio_info", lambda path: real._replace(num_frames=real.num_frames * 4))
    for seed in range(8):
        window = load_audio_window(
            tmp_path / "ramp.wav", 32000, mode="random", generator=torch.Generator().manual_seed(seed), tile_short=False
        ).numpy()
        start = int(round(window[0] * x.size))
        np.testing.assert_array_equal(window, x[start : start + 32000])  # inside the file, unpadded
    centre = load_audio_window(tmp_path / "ramp.wav", 32000, mode="centre").numpy()
    np.testing.assert_array_equal(centre, x[48000:80000])  # the real centre, not the header's


# ----------------------------------------------------------------------------- fixed windows


def test_fixed_window_centre_crop_and_end_padding() -> None:
    long = torch.arange(100_001, dtype=torch.float32)
    out = fixed_window(long, 96000, "centre")
    assert out[0] == (100_001 - 96000) // 2 and out.numel() == 96000
    short = torch.ones(1000)
    padded = fixed_window(short, 96000)
    assert padded[:1000].eq(1).all() and padded[1000:].eq(0).all()
    assert fixed_window(long, 96000, "start")[0] == 0


def test_fixed_window_random_and_tiling() -> None:
    long = torch.arange(200_000, dtype=torch.float32)
    starts = {int(fixed_window(long, 96000, "random", torch.Generator().manual_seed(s))[0]) for s in range(20)}
    assert len(starts) > 10 and all(0 <= s <= 104_000 for s in starts)
    a = fixed_window(long, 96000, "random", torch.Generator().manual_seed(7))
    b = fixed_window(long, 96000, "random", torch.Generator().manual_seed(7))
    assert torch.equal(a, b) and torch.equal(a, long[int(a[0]) : int(a[0]) + 96000])

    short = torch.arange(1000, dtype=torch.float32)
    tiled = fixed_window(short, 2500, "start", tile_short=True)
    assert torch.equal(tiled, torch.cat([short, short, short[:500]]))
    shifted = fixed_window(short, 2500, "random", torch.Generator().manual_seed(1), tile_short=True)
    phase = int(shifted[0])
    assert torch.equal(shifted, torch.arange(phase, phase + 2500) % 1000 * 1.0)
    with pytest.raises(ValueError):
        fixed_window(torch.zeros(0))


def test_load_audio_benchmark_matches_benchmark_rules(tmp_path: Path) -> None:
    x = (np.random.default_rng(2).standard_normal(16000 * 7) * 0.1).astype(np.float32)
    sf.write(tmp_path / "long.wav", x, 16000, subtype="FLOAT")
    out = load_audio_benchmark(tmp_path / "long.wav")
    start = (x.size - BENCHMARK_NUM_SAMPLES) // 2
    np.testing.assert_array_equal(out.numpy(), x[start : start + BENCHMARK_NUM_SAMPLES])

    left, right = x[:32000], x[32000:64000]
    sf.write(tmp_path / "short.wav", np.stack([left, right], 1), 16000, subtype="FLOAT")
    short = load_audio_benchmark(tmp_path / "short.wav")
    np.testing.assert_allclose(short[:32000].numpy(), (left + right) / np.sqrt(2), rtol=0, atol=1e-7)
    assert short.shape == (96000,) and short[32000:].eq(0).all()

    sf.write(tmp_path / "hi.wav", _sine(440, 44100, 8.0), 44100, subtype="PCM_16")
    hi = load_audio_benchmark(tmp_path / "hi.wav")
    assert hi.shape == (96000,) and hi.dtype == torch.float32


# ------------------------------------------------------------------------------ resampling/cache


def test_cached_resampler_matches_functional_resample() -> None:
    assert get_resampler(44100, 16000) is get_resampler(44100, 16000)
    x = torch.randn(44100, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(
        resample(x, 44100, 16000), torchaudio.functional.resample(x, 44100, 16000), atol=5e-5, rtol=1e-4
    )  # float32 convolution order differs with thread count
    assert resample(x, 16000, 16000) is x


def test_waveform_cache_hits_rebuilds_and_invalidates(tmp_path: Path) -> None:
    source = tmp_path / "clip.wav"
    sf.write(source, _sine(300, 22050, 1.0), 22050, subtype="PCM_16")
    cache = WaveformCache(tmp_path / "cache")
    first = cache.load(source)
    second = cache.load(source)
    assert (cache.misses, cache.hits) == (1, 1)
    torch.testing.assert_close(first, second)
    torch.testing.assert_close(first, load_audio(source))

    entry = cache.entry_path(source)
    entry.write_bytes(entry.read_bytes()[: entry.stat().st_size // 2])  # a torn write
    with pytest.warns(UserWarning, match="corrupt"):
        rebuilt = cache.load(source)
    torch.testing.assert_close(rebuilt, first)
    assert cache.rebuilt == 1 and np.load(entry).size == first.numel()

    sf.write(source, _sine(600, 22050, 0.5), 22050, subtype="PCM_16")
    os.utime(source, ns=(entry.stat().st_mtime_ns + 10**9,) * 2)
    assert cache.entry_path(source) != entry
    assert cache.load(source).numel() == 8000

    half = WaveformCache(tmp_path / "cache16", dtype="float16")
    out = half.load(source)
    assert np.load(half.entry_path(source)).dtype == np.float16
    torch.testing.assert_close(half.load(source), out, atol=1e-3, rtol=0)


def test_waveform_cache_key_follows_the_decode_version(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import detectors.audio.io as audio_io

    source = tmp_path / "clip.wav"
    sf.write(source, np.stack([_sine(300, 16000, 0.2), _sine(500, 16000, 0.2)], 1), 16000, subtype="PCM_16")
    cache = WaveformCache(tmp_path / "cache")
    entry = cache.entry_path(source)
    entry.parent.mkdir(parents=True)
    np.save(entry, np.zeros(3200, np.float32))  # an entry written by the previous decode version
    monkeypatch.setattr(audio_io, "DECODE_VERSION", audio_io.DECODE_VERSION + 1)
    assert cache.entry_path(source) != entry
    torch.testing.assert_close(cache.load(source), load_audio(source))  # decoded anew, not the stale zeros
    assert cache.misses == 1


# ------------------------------------------------------------------------------ transforms


def test_gain_is_exactly_minus_6_db() -> None:
    x = torch.randn(2, 1000)
    y = Gain(-6.0)(x)
    ratio_db = 20 * torch.log10(y.norm(dim=1) / x.norm(dim=1))
    torch.testing.assert_close(ratio_db, torch.full((2,), -6.0), atol=1e-5, rtol=0)


def test_white_noise_snr_is_30_db_per_clip_and_silence_stays_silent() -> None:
    x = torch.stack([torch.from_numpy(_sine(440, 16000, 6.0)), torch.zeros(96000), 0.01 * torch.randn(96000)])
    y = AddWhiteNoise(30.0, seed=0)(x)
    for row in (0, 2):
        noise = y[row] - x[row]
        snr = 10 * math.log10(float(x[row].double().pow(2).sum() / noise.double().pow(2).sum()))
        assert snr == pytest.approx(30.0, abs=0.2)
    assert torch.count_nonzero(y[1]) == 0
    single = AddWhiteNoise(30.0, seed=0)(x[0])
    assert single.shape == (96000,)


def test_8k_round_trip_removes_content_above_4k() -> None:
    x = torch.from_numpy(_sine(1000, 16000, 1.0) + _sine(6000, 16000, 1.0))
    for method in ("polyphase", "sinc"):
        y = BandwidthRoundTrip(16000, 8000, method)(x)
        assert y.shape == x.shape
        assert _band_power_db(y, 16000, 4200, 8000) < -40
        kept = 10 * math.log10(_band_power_db_linear(y, 900, 1100) / _band_power_db_linear(x, 900, 1100))
        assert abs(kept) < 0.5


def _band_power_db_linear(x: torch.Tensor, low: float, high: float) -> float:
    spectrum = np.abs(np.fft.rfft(x.double().numpy())) ** 2
    freqs = np.fft.rfftfreq(x.numel(), 1 / 16000)
    return float(spectrum[(freqs >= low) & (freqs < high)].sum())


def test_robustness_chain_order_and_clipping() -> None:
    x = torch.from_numpy(_sine(1000, 16000, 6.0, amplitude=0.5) + _sine(6000, 16000, 6.0, amplitude=0.3))
    deterministic = RobustnessChain(snr_db=None)(x)
    expected = (BandwidthRoundTrip(16000, 8000)(x) * 10 ** (-6 / 20)).clamp(-1, 1)
    torch.testing.assert_close(deterministic, expected)
    noisy = RobustnessChain(seed=0)(x)
    noise = noisy - deterministic
    # Noise is 30 dB below the signal *after* band limiting and gain: order matters here
    # (the 6 kHz component is gone before the RMS is measured).
    snr = 10 * math.log10(float(deterministic.double().pow(2).sum() / noise.double().pow(2).sum()))
    assert snr == pytest.approx(30.0, abs=0.2)
    loud = torch.full((1, 16000), 3.0)
    assert RobustnessChain(low_rate=None, snr_db=None)(loud).max() == 1.0


def test_random_gain_and_noise_ranges() -> None:
    x = torch.randn(16, 4000)
    y = RandomGain(-12, 6, seed=0)(x)
    db = 20 * torch.log10(y.norm(dim=1) / x.norm(dim=1))
    assert db.min() >= -12 - 1e-4 and db.max() <= 6 + 1e-4 and db.std() > 1
    z = RandomNoise(10, 20, seed=0)(x)
    snr = 10 * torch.log10(x.pow(2).sum(1) / (z - x).pow(2).sum(1))
    assert snr.min() > 9.5 and snr.max() < 20.5


def test_reverb_keeps_loudness_and_decays() -> None:
    reverb = SyntheticReverb(16000, rt60=(0.4, 0.4), wet=(0.5, 0.5), seed=0)
    ir = reverb.impulse_response(0.4)
    assert ir.norm().item() == pytest.approx(1.0, abs=1e-5)
    tail = ir[1:]
    assert tail[-600:].pow(2).sum() < 1e-4 * tail[:600].pow(2).sum()  # ~60 dB down at RT60
    impulse = torch.zeros(16000)
    impulse[100] = 1.0
    out = reverb(impulse)
    assert out.shape == impulse.shape and out[:100].abs().max() < 1e-6  # causal
    assert out[200:].abs().sum() > 0  # the tail follows the impulse
    x = torch.from_numpy(_sine(300, 16000, 1.0))
    assert float(reverb(x).pow(2).mean().sqrt()) == pytest.approx(float(x.pow(2).mean().sqrt()), rel=1e-4)


def test_mu_law_quantises_to_256_levels() -> None:
    x = torch.linspace(-1, 1, 10_000)
    y = MuLawCodec()(x)
    assert y.unique().numel() <= 256
    assert (y - x).abs().max() < 0.04 and (y - x)[4900:5100].abs().max() < 1e-3  # fine steps near 0


def test_mp3_codec_round_trip_is_aligned() -> None:
    x = torch.from_numpy(_sine(440, 16000, 2.0, 0.3) + _sine(1320, 16000, 2.0, 0.1))
    y = PyAVCodec("mp3", bitrates=(64_000,), seed=0)(x)
    assert y.shape == x.shape
    middle = slice(4000, 28000)
    correlation = np.corrcoef(x[middle].numpy(), y[middle].numpy())[0, 1]
    assert correlation > 0.95


def test_train_transform_levels_are_seeded_and_shaped() -> None:
    x = 0.1 * torch.randn(3, 16000)
    assert torch.equal(build_audio_train_transform(0)(x), x)
    for level in (1, 2, 3):
        a = build_audio_train_transform(level, seed=5)(x)
        b = build_audio_train_transform(level, seed=5)(x)
        assert a.shape == x.shape and torch.equal(a, b) and torch.isfinite(a).all()
    changed = [not torch.equal(build_audio_train_transform(2, seed=s)(x), x) for s in range(10)]
    assert any(changed)
    with pytest.raises(ValueError):
        build_audio_train_transform(4)


@pytest.mark.parametrize(("rate", "seconds"), [(44100, 13.3), (48000, 9.0), (22050, 7.01), (8000, 20.0), (16000, 11.0)])
def test_partial_centre_read_equals_whole_file_decode(tmp_path: Path, rate: int, seconds: float) -> None:
    x = (np.random.default_rng(rate).standard_normal((int(rate * seconds), 2)) * 0.2).astype(np.float32)
    path = tmp_path / "long.flac"
    sf.write(path, x, rate, subtype="PCM_24")
    whole = load_audio(path)
    start = (whole.numel() - BENCHMARK_NUM_SAMPLES) // 2
    expected = whole[start : start + BENCHMARK_NUM_SAMPLES]
    torch.testing.assert_close(load_audio_benchmark(path, partial=False), expected, atol=0, rtol=0)
    torch.testing.assert_close(load_audio_benchmark(path), expected, atol=0, rtol=0)


@pytest.mark.parametrize(("rate", "channels"), [(44100, 2), (8000, 1), (48000, 6)])
def test_training_windows_are_slices_of_the_whole_decode(tmp_path: Path, rate: int, channels: int) -> None:
    """Training crops, the waveform cache and evaluation see one resampler: a random window read
    from the middle of a file equals the same samples of the whole-file decode."""
    x = (np.random.default_rng(rate).standard_normal((int(rate * 5.3), channels)) * 0.2).astype(np.float32)
    path = tmp_path / "clip.flac"
    sf.write(path, x, rate, subtype="PCM_24")
    whole = load_audio(path)
    assert torch.equal(WaveformCache(tmp_path / "cache").load(path), whole)
    starts = set()
    for seed in range(6):
        window = load_audio_window(path, 16000, mode="random", generator=torch.Generator().manual_seed(seed))
        start = _slice_start(whole, window)
        assert start is not None, seed
        starts.add(start)
    assert len(starts) == 6 and max(starts) > 16000
    centre = load_audio_window(path, 16000, mode="centre")
    assert _slice_start(whole, centre) == (whole.numel() - 16000) // 2
