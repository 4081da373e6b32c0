"""Video data pipeline: sampling rules, decoding, MediaError cases, caches, transforms, demo data."""

from __future__ import annotations

import dataclasses
import io
import os
import struct
from pathlib import Path

import av
import numpy as np
import pytest
import torch
import torchvision.transforms.v2.functional as TF
import yaml
from PIL import Image

from detectors.data.cache import FeatureCache
from detectors.errors import MediaError
from detectors.video import io as video_io
from detectors.video.cache import FrameCache
from detectors.video.data import ClipLoader
from detectors.video.demo import main as demo_main
from detectors.video.demo import write_demo_videos, write_holdout_videos, write_mp4
from detectors.video.io import (
    centre_crop_resize,
    iter_frame_chunks,
    probe_video,
    read_frames,
    read_video_frames,
    resize_frames,
)
from detectors.video.restrav import trajectory_features
from detectors.video.sampling import (
    FrameSampler,
    benchmark_indices,
    random_indices,
    uniform_indices,
    window_indices,
)
from detectors.video.transforms import ClipAugment, H264Robustness

# ----------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def demo_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("video_demo")
    write_demo_videos(root, n_per_class=12, num_frames=48, size=(64, 80), fps=24, seed=0)
    return root


@pytest.fixture(scope="module")
def demo_yaml(demo_root: Path) -> Path:
    return write_demo_videos(demo_root, n_per_class=12, num_frames=48, size=(64, 80), fps=24, seed=0)


@pytest.fixture(scope="module")
def demo_mp4(demo_root: Path) -> Path:
    return demo_root / "demo_video" / "real" / "real_000.mp4"


def _random_clip(frames: int, height: int, width: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (frames, 3, height, width), dtype=torch.uint8, generator=generator)


# ----------------------------------------------------------------------------------- sampling


def test_benchmark_indices_hand_worked() -> None:
    assert benchmark_indices(100, 30.0, 4, frame_rate=8.0) == [0, 4, 8, 12]  # round(3.75) = 4
    assert benchmark_indices(10, None, 4, frame_rate=10.0) == [0, 3, 6, 9]  # missing fps -> 30
    assert benchmark_indices(10, float("nan"), 4, frame_rate=10.0) == [0, 3, 6, 9]
    assert benchmark_indices(10, 25.0, 4, frame_rate=10.0) == [0, 2, 4, 6]  # round(2.5) = 2 (ties to even)
    assert benchmark_indices(5, 30.0, 8) == [0, 1, 2, 3, 4, 4, 4, 4]  # consecutive, padded
    assert benchmark_indices(7, 60.0, 4, frame_rate=8.0) == [0, 0, 0, 0]  # step 8 > length
    assert benchmark_indices(20, 30.0, 3, frame_rate=100.0) == [0, 1, 2]  # step never below 1
    assert benchmark_indices(1000, 30.0, 100) == list(range(64))  # clamped to 64


def test_window_indices_hand_worked() -> None:
    # 10 s at 24 fps: window 4 s .. 6 s, frame = floor(t * 24) = 96 + floor(48 i / 23)
    assert window_indices(240, 24.0) == [96 + (48 * i) // 23 for i in range(24)]
    # no fps -> 30 fps: 10 s again, frame = 120 + floor(60 i / 23)
    assert window_indices(300, None) == [120 + (60 * i) // 23 for i in range(24)]
    # 1/3 s clip: the window starts at 0, timestamps 0, 2/23, 4/23, 6/23 fit, the rest repeat the
    # last *sampled* frame (7), not the video's last frame (9) - as the official code does
    assert window_indices(10, 30.0) == [0, 2, 5, 7] + [7] * 20
    # exactly 2 s: the last timestamp equals the end of the stream and repeats the one before
    assert window_indices(48, 24.0)[-3:] == [43, 45, 45]
    assert window_indices(1, None) == [0] * 24
    assert window_indices(240, 24.0, num_frames=3, window_sec=1.0) == [108, 120, 132]


def _torchcodec_style_window(total: int, fps: float, frames: int = 24, window: float = 2.0) -> list[int]:
    """Independent reimplementation with torch float32 tensors (as torchcodec's sampler computes)."""
    duration = total / fps
    start = max(0.0, duration / 2 - window / 2)
    delta = window / (frames - 1)
    clip_start = torch.arange(start, min(duration, duration / 2 + window / 2), 1e9)[0]
    times = [t for i in range(frames) if (t := clip_start + i * delta) < duration]
    times += [times[-1]] * (frames - len(times))
    pts = torch.arange(total, dtype=torch.float64) / fps  # frame i is shown during [i/fps, (i+1)/fps)
    return [int((pts <= float(t)).nonzero().max()) for t in times]


@pytest.mark.parametrize(
    "total,fps", [(48, 24.0), (49, 24.0), (61, 30.0), (300, 29.97), (17, 25.0), (1000, 60.0), (90, 23.976)]
)
def test_window_indices_match_float32_timestamp_reference(total: int, fps: float) -> None:
    assert window_indices(total, fps) == _torchcodec_style_window(total, fps)


def test_uniform_and_random_indices() -> None:
    assert uniform_indices(10, 4) == [0, 3, 6, 9]
    assert uniform_indices(10, 1) == [4]
    assert uniform_indices(3, 5) == [0, 0, 1, 2, 2]
    a = random_indices(100, 16, torch.Generator().manual_seed(3))
    b = random_indices(100, 16, torch.Generator().manual_seed(3))
    assert a == b and a == sorted(a) and len(set(a)) == 16 and 0 <= min(a) and max(a) < 100
    short = random_indices(5, 8, torch.Generator().manual_seed(0))
    assert len(short) == 8 and set(short) == set(range(5)) and short == sorted(short)
    with pytest.raises(ValueError):
        uniform_indices(0, 4)


def test_frame_sampler_dispatch_and_keys() -> None:
    assert FrameSampler("benchmark", 4, frame_rate=8.0).indices(100, 30.0) == [0, 4, 8, 12]
    assert FrameSampler("window", 24).indices(240, 24.0) == window_indices(240, 24.0)
    assert FrameSampler("uniform", 4).indices(10, None) == [0, 3, 6, 9]
    assert FrameSampler("benchmark", 100).clip_length == 64
    keys = {
        FrameSampler("benchmark", 16).key(),
        FrameSampler("benchmark", 16, frame_rate=8.0).key(),
        FrameSampler("window", 24).key(),
        FrameSampler("window", 24, window_sec=3.0).key(),
        FrameSampler("uniform", 16).key(),
        FrameSampler("random", 16).key(),
    }
    assert len(keys) == 6
    assert FrameSampler("window", 24).key() == FrameSampler("window", 24).key()
    assert not FrameSampler("random", 8).deterministic
    with pytest.raises(ValueError):
        FrameSampler("nearest", 8)


# ----------------------------------------------------------------------------------- decoding


def test_decode_demo_mp4(demo_mp4: Path) -> None:
    info = probe_video(demo_mp4)
    assert (info.num_frames, info.fps, info.width, info.height) == (48, 24.0, 80, 64)
    frames = read_frames(demo_mp4, [0, 5, 5, 47])
    assert frames.shape == (4, 3, 64, 80) and frames.dtype == torch.uint8
    assert torch.equal(frames[1], frames[2]) and not torch.equal(frames[0], frames[3])
    clip = read_video_frames(demo_mp4, FrameSampler("window", 24), resize=(32, 32), resize_mode="stretch")
    assert clip.shape == (24, 3, 32, 32) and clip.dtype == torch.uint8


def test_pyav_fallback_when_decord_fails(demo_mp4: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if video_io.decord is None:
        pytest.skip("decord not installed")
    indices = [0, 3, 47, 47]
    reference = read_frames(demo_mp4, indices)
    assert probe_video(demo_mp4).backend == "decord"

    def broken_reader(*args: object, **kwargs: object) -> None:
        raise video_io.decord.DECORDError("simulated: decord cannot open this file")

    monkeypatch.setattr(video_io.decord, "VideoReader", broken_reader)
    info = probe_video(demo_mp4)
    assert info.backend == "pyav" and (info.num_frames, info.fps) == (48, 24.0)
    assert torch.equal(read_frames(demo_mp4, indices), reference)  # same pixels from both decoders
    with pytest.raises(MediaError, match="decord cannot read it"):
        probe_video(demo_mp4, backend="decord")


def test_pyav_fallback_when_decord_fails_mid_decode(demo_mp4: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if video_io.decord is None:
        pytest.skip("decord not installed")
    reference = read_frames(demo_mp4, [1, 2], backend="pyav")

    def failing_frames(self: object, indices: object) -> None:
        raise video_io.decord.DECORDError("simulated: av_read_frame failed")

    monkeypatch.setattr(video_io._DecordSource, "frames", failing_frames)
    assert torch.equal(read_frames(demo_mp4, [1, 2]), reference)
    # decord claims more frames than PyAV finds: a MediaError naming the file, not an index error
    total = probe_video(demo_mp4, backend="pyav").num_frames
    monkeypatch.setattr(video_io._PyAVSource, "_count_frames", lambda self: total)
    real_header = video_io._read_header

    def short_header(path):
        return dataclasses.replace(real_header(path), num_frames=total - 2)

    monkeypatch.setattr(video_io, "_read_header", short_header)
    with pytest.raises(MediaError, match=f"demo.*PyAV finds {total - 2} of the"):
        read_frames(demo_mp4, [total - 1])


def test_odd_size_and_single_frame_videos(tmp_path: Path) -> None:
    odd = tmp_path / "odd.mp4"
    write_mp4(odd, _random_clip(5, 63, 81), fps=25)  # MPEG-4 Part 2 accepts odd sizes
    assert read_frames(odd, [0, 4]).shape == (2, 3, 63, 81)
    assert read_frames(odd, [0, 4], backend="pyav").shape == (2, 3, 63, 81)
    single = tmp_path / "single.mp4"
    write_mp4(single, _random_clip(1, 32, 32), fps=25)
    assert probe_video(single).num_frames == 1
    clip = read_video_frames(single, FrameSampler("window", 24))
    assert clip.shape == (24, 3, 32, 32) and bool((clip == clip[0]).all())


def _mux_silence(container: av.container.OutputContainer, stream: av.audio.stream.AudioStream) -> None:
    """Eight frames of silent mono audio, encoded into ``stream``."""
    for i in range(8):
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
        frame.sample_rate, frame.pts = 16000, i * 1024
        for packet in stream.encode(frame):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)


def _write_audio_only(path: Path) -> None:
    with av.open(str(path), "w") as container:
        _mux_silence(container, container.add_stream("aac", rate=16000))


def _write_zero_frame_avi(path: Path) -> None:
    container = av.open(str(path), "w")
    stream = container.add_stream("mpeg4", rate=24)
    stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
    container.start_encoding()
    container.close()


def _write_faststart(path: Path, clip: torch.Tensor) -> None:
    with av.open(str(path), "w", options={"movflags": "+faststart"}) as container:
        stream = container.add_stream("libx264", rate=24)
        stream.width, stream.height, stream.pix_fmt = clip.shape[-1], clip.shape[-2], "yuv420p"
        for image in clip.permute(0, 2, 3, 1).numpy():
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def _expect_media_error(path: Path, problem: str, **kwargs: object) -> None:
    for backend in ("auto", "pyav"):
        with pytest.raises(MediaError, match=problem) as caught:
            info = probe_video(path, backend=backend, **kwargs)
            read_frames(path, list(range(info.num_frames)), backend=backend, **kwargs)
        assert caught.value.path == str(path)


def test_bad_inputs_raise_media_error_naming_the_file(demo_mp4: Path, tmp_path: Path) -> None:
    data = demo_mp4.read_bytes()

    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    _expect_media_error(empty, "empty file")

    _expect_media_error(tmp_path / "missing.mp4", "file not found")

    truncated = tmp_path / "truncated.mp4"  # index (moov) at the end: lost with the second half
    truncated.write_bytes(data[: len(data) // 2])
    _expect_media_error(truncated, "truncated or corrupt")

    faststart = tmp_path / "faststart.mp4"  # index first: opens, then runs out of frame data
    _write_faststart(faststart, _random_clip(24, 64, 80))
    cut = tmp_path / "faststart_cut.mp4"
    cut.write_bytes(faststart.read_bytes()[: faststart.stat().st_size // 2])
    _expect_media_error(cut, "truncated")

    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(np.random.default_rng(0).bytes(4096))
    _expect_media_error(garbage, "truncated or corrupt")

    audio = tmp_path / "speech.m4a"
    _write_audio_only(audio)
    _expect_media_error(audio, "no video stream")

    zero = tmp_path / "zero.avi"
    _write_zero_frame_avi(zero)
    _expect_media_error(zero, "zero frames")

    _expect_media_error(demo_mp4, "absurd resolution 80x64", max_pixels=80 * 64 - 1)
    assert probe_video(demo_mp4, max_pixels=80 * 64).num_frames == 48


def test_frame_folder_as_video(demo_mp4: Path, tmp_path: Path) -> None:
    frames = read_frames(demo_mp4, list(range(12)))
    folder = tmp_path / "frames"
    folder.mkdir()
    for i, frame in enumerate(frames):
        Image.fromarray(frame.permute(1, 2, 0).numpy()).save(folder / f"frame_{i}.png")
    (folder / "notes.txt").write_text("ignored")
    # the benchmark's order: by name, so frame_10 and frame_11 come before frame_2
    order = sorted(range(12), key=lambda i: f"frame_{i}.png")
    assert order[:4] == [0, 1, 10, 11]
    info = probe_video(folder)
    assert (info.num_frames, info.fps, info.width, info.height, info.backend) == (12, None, 80, 64, "frames")
    assert torch.equal(read_frames(folder, [2, 10, 11]), frames[[order[2], order[10], order[11]]])
    (folder / "fps.txt").write_text("12.5\n")
    assert probe_video(folder).fps == 12.5  # this project's own, for its window / uniform samplers
    (folder / "fps.txt").write_text("nan")
    assert probe_video(folder).fps is None
    clip = read_video_frames(folder, FrameSampler("benchmark", 16))
    assert torch.equal(clip[:12], frames[order]) and torch.equal(clip[12:], frames[[order[-1]] * 4])

    empty = tmp_path / "no_frames"
    empty.mkdir()
    _expect_media_error(empty, "zero frames")
    Image.fromarray(np.zeros((10, 10, 3), np.uint8)).save(folder / "frame_99.png")  # sorts last
    with pytest.raises(MediaError, match="differs from the first frame") as caught:
        read_frames(folder, [0, 12])
    assert caught.value.path.endswith("frame_99.png")


def test_resize_helpers() -> None:
    clip = _random_clip(2, 64, 80)
    resized = resize_frames(clip, (32, 40))
    assert resized.shape == (2, 3, 32, 40) and resized.dtype == torch.uint8
    float_clip = clip.float() / 255
    out = resize_frames(float_clip, 48, mode="bicubic")
    assert out.dtype == torch.float32 and out.shape == (2, 3, 48, 48)
    # centre crop to the target aspect (64 x 64 out of 64 x 80: columns 8..71), then resize
    expected = TF.resize(clip[..., :, 8:72], [32, 32], antialias=True)
    assert torch.equal(centre_crop_resize(clip, (32, 32)), expected)
    tall = _random_clip(1, 80, 40)  # too tall for 1:1 -> rows 20..59
    assert torch.equal(centre_crop_resize(tall, (20, 20)), TF.resize(tall[..., 20:60, :], [20, 20], antialias=True))


# ----------------------------------------------------------------------------------- cover art


def _png_bytes(height: int, width: int, value: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((height, width, 3), value, np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def _mux_cover(container: av.container.OutputContainer) -> tuple[av.stream.Stream, list[av.Packet]]:
    """A 40 x 24 grey PNG cover-art stream (disposition attached_pic) and its one packet."""
    cover = container.add_stream("png")
    cover.width, cover.height, cover.pix_fmt = 40, 24, "rgb24"
    cover.disposition = av.stream.Disposition.attached_pic
    image = av.VideoFrame.from_ndarray(np.full((24, 40, 3), 200, np.uint8), format="rgb24")
    return cover, [*cover.encode(image), *cover.encode()]


def _write_lossless(
    path: Path, clip: torch.Tensor, *, cover: str | None = None, disposition: av.stream.Disposition | None = None
) -> None:
    """``clip`` as lossless H.264 RGB at 24 fps (both decoders return its exact pixels), with an
    optional cover: ``"stream"`` (mp4 attached picture) or ``"attachment"`` (Matroska image attachment)."""
    with av.open(str(path), "w") as container:
        packets = []
        if cover == "stream":
            _, packets = _mux_cover(container)
        elif cover == "attachment":
            container.add_attachment("cover.png", "image/png", _png_bytes(24, 40, 200))
        video = container.add_stream("libx264rgb", rate=24, options={"qp": "0"})
        video.width, video.height, video.pix_fmt = clip.shape[-1], clip.shape[-2], "rgb24"
        if disposition is not None:
            video.disposition = disposition
        for packet in packets:
            container.mux(packet)
        for image in clip.permute(0, 2, 3, 1).numpy():
            for packet in video.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in video.encode():
            container.mux(packet)


def _move_mp4_udta_before_tracks(path: Path) -> None:
    """Put the moov/udta box (which holds the cover art) before the trak boxes. FFmpeg's muxer
    writes it after them, other writers need not; FFmpeg's mov demuxer then lists the cover as
    stream #0. Boxes keep their sizes, so the sample offsets into mdat stay valid."""

    def boxes(data: bytes) -> list[tuple[bytes, bytes]]:
        out, position = [], 0
        while position < len(data):
            size, kind = struct.unpack(">I4s", data[position : position + 8])
            out.append((kind, data[position : position + size]))
            position += size
        return out

    rewritten = []
    for kind, box in boxes(path.read_bytes()):
        if kind == b"moov":
            children = sorted(boxes(box[8:]), key=lambda child: {b"mvhd": 0, b"udta": 1}.get(child[0], 2))
            box = box[:8] + b"".join(child for _, child in children)
        rewritten.append(box)
    path.write_bytes(b"".join(rewritten))


@pytest.fixture(scope="module")
def cover_clip() -> torch.Tensor:
    return _random_clip(10, 48, 64, seed=5)


@pytest.mark.parametrize("backend", ["auto", "pyav"])
def test_cover_art_listed_before_the_video_stream(tmp_path: Path, cover_clip: torch.Tensor, backend: str) -> None:
    path = tmp_path / "with_cover.mp4"
    _write_lossless(path, cover_clip, cover="stream")
    _move_mp4_udta_before_tracks(path)
    with av.open(str(path)) as container:  # the case under test: the picture is the first video stream
        first, best = container.streams.video[0], container.streams.best("video")
        assert video_io._is_attached_picture(first) and (first.codec_context.width, first.codec_context.height) == (
            40,
            24,
        )
        assert not video_io._is_attached_picture(best) and best.index == 1

    info = probe_video(path, backend=backend)
    assert (info.num_frames, info.fps, info.width, info.height) == (10, 24.0, 64, 48)
    expected_backend = "decord" if backend == "auto" and video_io.decord is not None else "pyav"
    assert info.backend == expected_backend
    everything = read_frames(path, list(range(10)), backend=backend)
    assert torch.equal(everything, cover_clip)  # lossless: the real video's exact pixels
    assert torch.equal(read_frames(path, [9, 0, 9], backend=backend), cover_clip[[9, 0, 9]])
    assert torch.equal(torch.cat(list(iter_frame_chunks(path, 4, backend=backend))), cover_clip)
    clip = read_video_frames(path, FrameSampler("benchmark", 16), backend=backend)
    assert clip.shape == (16, 3, 48, 64) and torch.equal(clip[:10], cover_clip)
    # a container without a frame count in its header: PyAV counts the real stream's packets
    assert (
        video_io._PyAVSource(path, dataclasses.replace(video_io._read_header(path), num_frames=0)).info.num_frames == 10
    )


def test_ffmpeg_best_stream_is_cover_art(tmp_path: Path, cover_clip: torch.Tensor) -> None:
    # av_find_best_stream ranks a visual-impaired video below a cover attachment: skip the picture,
    # and keep away from decord, which cannot be told which stream to read
    path = tmp_path / "described.mkv"
    _write_lossless(path, cover_clip, cover="attachment", disposition=av.stream.Disposition.visual_impaired)
    with av.open(str(path)) as container:
        assert video_io._is_attached_picture(container.streams.best("video"))
    info = probe_video(path)
    assert (info.num_frames, info.fps, info.width, info.height, info.backend) == (10, 24.0, 64, 48, "pyav")
    assert torch.equal(read_frames(path, list(range(10))), cover_clip)
    if video_io.decord is not None:
        with pytest.raises(MediaError, match="attached picture.*backend='pyav'") as caught:
            probe_video(path, backend="decord")
        assert caught.value.path == str(path)


def test_audio_with_cover_art_is_not_a_video(tmp_path: Path) -> None:
    path = tmp_path / "song.m4a"
    with av.open(str(path), "w", format="mp4") as container:
        audio = container.add_stream("aac", rate=16000)
        _, cover_packets = _mux_cover(container)
        for packet in cover_packets:
            container.mux(packet)
        _mux_silence(container, audio)
    with av.open(str(path)) as container:  # the only video stream is the picture
        assert [video_io._is_attached_picture(s) for s in container.streams.video] == [True]
    _expect_media_error(path, r"no video stream, only an attached picture \(cover art: png 40x24")
    with pytest.raises(MediaError, match="only an attached picture"):
        read_video_frames(path, FrameSampler("benchmark", 4))


# ----------------------------------------------------------------------------------- caches


@pytest.mark.parametrize("compress", ["zstd", "none"])
def test_frame_cache_round_trip_and_corruption(demo_mp4: Path, tmp_path: Path, compress: str) -> None:
    cache = FrameCache(tmp_path / "cache", compress=compress)
    sampler = FrameSampler("window", 24)
    calls = []

    def decode(path: Path, sampler: FrameSampler, resize: tuple[int, int] | None, **options: object) -> torch.Tensor:
        calls.append(path)
        return read_video_frames(path, sampler, resize, **options)

    first = cache.get_or_decode(demo_mp4, sampler, (32, 32), decode)
    second = cache.get_or_decode(demo_mp4, sampler, (32, 32), decode)
    assert len(calls) == 1 and torch.equal(first, second) and second.shape == (24, 3, 32, 32)
    entry = cache.entry_path(cache.key(demo_mp4, sampler, (32, 32)))
    assert entry.is_file() and entry.name.endswith(".npy.zst" if compress == "zstd" else ".npy")
    if compress == "none":  # still a valid .npy for other tools
        assert np.array_equal(np.load(entry), first.numpy())

    # a flipped byte in the payload
    data = bytearray(entry.read_bytes())
    data[len(data) // 2] ^= 0xFF
    entry.write_bytes(bytes(data))
    assert cache.load(cache.key(demo_mp4, sampler, (32, 32))) is None and not entry.exists()
    assert torch.equal(cache.get_or_decode(demo_mp4, sampler, (32, 32), decode), first)
    assert len(calls) == 2 and entry.is_file()

    # a truncated entry
    entry.write_bytes(entry.read_bytes()[:-40])
    assert torch.equal(cache.get_or_decode(demo_mp4, sampler, (32, 32), decode), first)
    assert len(calls) == 3

    # an intact entry of the wrong shape (e.g. written by a buggy decode_fn) is rejected too
    cache.save(cache.key(demo_mp4, sampler, (32, 32)), first[:5])
    assert torch.equal(cache.get_or_decode(demo_mp4, sampler, (32, 32), decode), first)
    assert len(calls) == 4


def test_frame_cache_keys(demo_mp4: Path, tmp_path: Path) -> None:
    cache = FrameCache(tmp_path / "cache")
    window = FrameSampler("window", 24)
    key = cache.key(demo_mp4, window, (32, 32))
    assert key == cache.key(demo_mp4, window, [32, 32])
    assert key != cache.key(demo_mp4, window, (32, 40))
    assert key != cache.key(demo_mp4, FrameSampler("window", 16), (32, 32))
    assert key != cache.key(demo_mp4, window, (32, 32), resize_mode="stretch")
    copy = tmp_path / "copy.mp4"
    copy.write_bytes(demo_mp4.read_bytes())
    before = cache.key(copy, window, None)
    stat = copy.stat()
    os.utime(copy, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))  # the file was edited
    assert cache.key(copy, window, None) != before
    # random samplers are never cached
    calls = []
    cache.get_or_decode(
        demo_mp4,
        FrameSampler("random", 4),
        None,
        lambda *a, **k: calls.append(1) or torch.zeros(4, 3, 2, 2, dtype=torch.uint8),
    )
    cache.get_or_decode(
        demo_mp4,
        FrameSampler("random", 4),
        None,
        lambda *a, **k: calls.append(1) or torch.zeros(4, 3, 2, 2, dtype=torch.uint8),
    )
    assert len(calls) == 2 and not any(p.is_file() for p in (tmp_path / "cache").rglob("*"))


def test_cache_keys_name_the_decoder(demo_mp4: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if video_io.decord is None:
        pytest.skip("decord not installed")
    frames = FrameCache(tmp_path / "frames")
    features = FeatureCache(tmp_path / "features", model_key="model")
    window = FrameSampler("window", 24)
    used = []

    def decode(path: Path, sampler: FrameSampler, resize: tuple[int, int] | None, **options: object) -> torch.Tensor:
        used.append(probe_video(path, **options).backend)
        return read_video_frames(path, sampler, resize, **options)

    decord_keys = (frames.key(demo_mp4, window, None), features.key(ClipLoader(window, None).cache_identity(demo_mp4)))
    with monkeypatch.context() as patch:  # a machine without decord fills the cache with PyAV frames
        patch.setattr(video_io, "decord", None)
        assert (
            frames.key(demo_mp4, window, None),
            features.key(ClipLoader(window, None).cache_identity(demo_mp4)),
        ) != decord_keys
        frames.get_or_decode(demo_mp4, window, None, decode)
    frames.get_or_decode(demo_mp4, window, None, decode)  # decord must not be served PyAV's entry
    frames.get_or_decode(demo_mp4, window, None, decode)
    assert used == ["pyav", "decord"]
    frames.get_or_decode(demo_mp4, window, None, decode, backend="pyav")  # forcing a backend is keyed too
    assert used == ["pyav", "decord", "pyav"]

    # another build of a decoder may decode other pixels: a new key
    with monkeypatch.context() as patch:
        patch.setattr(video_io.decord, "__version__", "0.0.0-other")
        assert frames.key(demo_mp4, window, None) != decord_keys[0]
    with monkeypatch.context() as patch:
        patch.setattr(video_io.av, "library_versions", {**video_io.av.library_versions, "libswscale": (0, 0, 0)})
        assert features.key(ClipLoader(window, None).cache_identity(demo_mp4)) != decord_keys[1]
    # a folder of frames is read by Pillow whatever the video backend
    folder = tmp_path / "folder"
    folder.mkdir()
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(folder / "0.png")
    folder_key = frames.key(folder, window, None)
    monkeypatch.setattr(video_io, "decord", None)
    assert frames.key(folder, window, None) == folder_key


@pytest.mark.parametrize("fmt", ["safetensors", "npy"])
def test_feature_cache(demo_mp4: Path, tmp_path: Path, fmt: str) -> None:
    cache = FeatureCache(tmp_path / "features", model_key="dinov2-small/cls+patch", fmt=fmt)
    sampler = FrameSampler("window", 24)
    value = torch.randn(21, dtype=torch.float64)
    calls = []

    def compute() -> torch.Tensor:
        calls.append(1)
        return value

    assert torch.equal(cache.get_or_compute(ClipLoader(sampler, (224, 224)).cache_identity(demo_mp4), compute), value)
    loaded = cache.get_or_compute(ClipLoader(sampler, (224, 224)).cache_identity(demo_mp4), compute)
    assert len(calls) == 1 and loaded.dtype == torch.float64 and torch.equal(loaded, value)
    other_model = FeatureCache(tmp_path / "features", model_key="dinov2-small/cls", fmt=fmt)
    assert other_model.load(other_model.key(ClipLoader(sampler, (224, 224)).cache_identity(demo_mp4))) is None

    key = cache.key(ClipLoader(sampler, (224, 224)).cache_identity(demo_mp4))
    entry = cache.entry_path(key)
    data = bytearray(entry.read_bytes())
    data[-60] ^= 0x01  # inside the tensor bytes (before the npy trailer / at the end of safetensors)
    entry.write_bytes(bytes(data))
    assert cache.load(key) is None and not entry.exists()
    cache.get_or_compute(ClipLoader(sampler, (224, 224)).cache_identity(demo_mp4), compute)
    assert len(calls) == 2
    entry.write_bytes(entry.read_bytes()[:10])
    assert cache.load(key) is None


# ----------------------------------------------------------------------------------- transforms


def test_clip_augment_draws_one_set_of_parameters_per_clip() -> None:
    frame = _random_clip(1, 64, 80, seed=1)
    clip = frame.expand(8, -1, -1, -1).contiguous()  # identical frames
    augment = ClipAugment((32, 40), blur=0.5)
    outputs = []
    for seed in range(6):
        torch.manual_seed(seed)
        out = augment(clip)
        assert out.shape == (8, 3, 32, 40) and out.dtype == torch.uint8 and type(out) is torch.Tensor
        assert bool((out == out[0]).all()), "frames of one clip were augmented differently"
        outputs.append(out[0])
    assert len({o.float().sum().item() for o in outputs}) > 1, "augmentation is not random"
    batch = augment(torch.stack([clip, clip]))
    assert batch.shape == (2, 8, 3, 32, 40) and bool((batch[0] == batch[0, 0]).all())


def test_h264_robustness(demo_mp4: Path) -> None:
    frames = read_frames(demo_mp4, list(range(10)))
    out = H264Robustness()(frames)
    # the benchmark's x0.5 downscale stops at 256 px per side: a 64x80 clip keeps its size
    assert out.shape == (10, 3, 64, 80) and out.dtype == torch.uint8
    error = (out.float() - frames.float()).abs().mean().item()
    assert 0 < error < 12  # lossy, but the same content
    assert H264Robustness()(_random_clip(2, 63, 81)).shape == (2, 3, 62, 80)  # odd row/column cut for yuv420p


# ----------------------------------------------------------------------------------- demo data


def test_demo_dataset_yaml_and_idempotence(demo_root: Path, demo_yaml: Path) -> None:
    config = yaml.safe_load(demo_yaml.read_text())
    entries = {entry["media_type"]: entry for entry in config["datasets"]}
    assert set(entries) == {"real", "synthetic"}
    for entry in entries.values():
        assert entry["modality"] == "video" and entry["source_format"] == "mp4"
        assert not Path(entry["path"]).is_absolute()  # relative to the YAML: the folder can move
        assert len(list((demo_yaml.parent / entry["path"]).glob("*.mp4"))) == 12
    mtime = (demo_root / "demo_video" / "fake" / "fake_000.mp4").stat().st_mtime_ns
    again = write_demo_videos(demo_root, n_per_class=12, num_frames=48, size=(64, 80), fps=24, seed=0)
    assert again == demo_yaml
    assert (demo_root / "demo_video" / "fake" / "fake_000.mp4").stat().st_mtime_ns == mtime


def _auc_of_features(yaml_path: Path, embed) -> float:
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    features, labels = [], []
    for entry in yaml.safe_load(yaml_path.read_text())["datasets"]:
        for path in sorted((yaml_path.parent / entry["path"]).glob("*.mp4")):
            frames = read_video_frames(path, FrameSampler("window", 24))
            features.append(trajectory_features(embed(frames)[None])[0].numpy())
            labels.append(int(entry["media_type"] != "real"))
    classifier = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    scores = cross_val_predict(classifier, np.array(features), np.array(labels), cv=3, method="predict_proba")[:, 1]
    return roc_auc_score(labels, scores)


def test_demo_classes_separable_by_trajectory_geometry(demo_yaml: Path) -> None:
    assert _auc_of_features(demo_yaml, lambda frames: frames.double().flatten(1) / 255) > 0.85

    from transformers import Dinov2Config, Dinov2Model

    torch.manual_seed(0)
    vit = Dinov2Model(
        Dinov2Config(
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=64,
            image_size=56,
            patch_size=14,
        )
    ).eval()

    @torch.no_grad()
    def vit_embed(frames: torch.Tensor) -> torch.Tensor:
        pixels = resize_frames(frames.float() / 255, (56, 56))
        return vit(pixel_values=pixels).last_hidden_state.flatten(1)  # CLS + patch tokens

    assert _auc_of_features(demo_yaml, vit_embed) > 0.85


def test_holdout_videos_and_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    holdout = write_holdout_videos(tmp_path, n_per_class=2, num_frames=16, size=(32, 48))
    entries = yaml.safe_load(holdout.read_text())["datasets"]
    assert [e["media_type"] for e in entries] == ["real", "synthetic"]
    clip = read_frames(holdout.parent / entries[1]["path"] / "fake_000.mp4", list(range(16)))
    assert clip.shape == (16, 3, 32, 48)
    demo_main([str(tmp_path / "cli"), "--n-per-class", "1", "--num-frames", "12", "--size", "32", "32"])
    assert (tmp_path / "cli" / "demo_video.yaml").is_file()
    assert "demo_video.yaml" in capsys.readouterr().out


@pytest.mark.parametrize("backend", ["auto", "pyav"])
def test_frame_chunks_cover_the_video_in_order_with_one_decode(tmp_path: Path, backend: str, monkeypatch) -> None:
    path = tmp_path / "clip.mp4"
    write_mp4(path, _random_clip(23, 32, 32), fps=25)
    everything = read_frames(path, list(range(23)), backend=backend)
    opened = []
    real_open = video_io.av.open
    monkeypatch.setattr(video_io.av, "open", lambda *a, **k: opened.append(a[0]) or real_open(*a, **k))
    chunks = list(iter_frame_chunks(path, 9, backend=backend))
    assert [c.shape[0] for c in chunks] == [9, 9, 5]
    assert torch.equal(torch.cat(chunks), everything)
    if backend == "pyav":  # the header (with the first frame's display rotation), then one sequential decode
        assert len(opened) == 2  # (not one per chunk)
    with pytest.raises(ValueError, match="chunk size"):
        next(iter_frame_chunks(path, 0))


# ------------------------------------- the PyAV fallback: frame colour tags and display rotation (project's own)


def _write_yuv444_bt709(path: Path, planes: np.ndarray, color_range: int) -> None:
    """Planes ``uint8 [T, 3, H, W]`` (Y, Cb, Cr) as lossless 4:4:4 H.264 tagged BT.709 with
    ``color_range`` (1 limited, 2 full). 4:4:4 keeps chroma unsubsampled, so a per-pixel reference
    needs no assumption about swscale's chroma upsampling."""
    with av.open(str(path), "w") as container:
        video = container.add_stream("libx264", rate=24, options={"qp": "0"})
        video.width, video.height, video.pix_fmt = planes.shape[-1], planes.shape[-2], "yuv444p"
        video.codec_context.colorspace, video.codec_context.color_range = 1, color_range  # AVCOL_SPC_BT709
        for yuv in planes:
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(yuv), format="yuv444p")
            frame.colorspace, frame.color_range = 1, color_range
            for packet in video.encode(frame):
                container.mux(packet)
        for packet in video.encode():
            container.mux(packet)


def _ycbcr_to_rgb(planes: np.ndarray, kr: float, kb: float, full_range: bool) -> np.ndarray:
    """ITU-R equations for Y'CbCr -> R'G'B' (BT.709: Kr=0.2126, Kb=0.0722; BT.601: 0.299, 0.114),
    as ``uint8 [T, 3, H, W]``."""
    y, cb, cr = (planes[:, i].astype(np.float64) for i in range(3))
    cb, cr = cb - 128, cr - 128
    if not full_range:  # limited range: Y' in [16, 235], Cb/Cr in [16, 240]
        y, cb, cr = (y - 16) * 255 / 219, cb * 255 / 224, cr * 255 / 224
    r = y + 2 * (1 - kr) * cr
    b = y + 2 * (1 - kb) * cb
    g = (y - kr * r - kb * b) / (1 - kr - kb)
    return np.clip(np.rint(np.stack([r, g, b], axis=1)), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("full_range", [True, False])
def test_pyav_converts_with_the_frames_own_matrix_and_range(tmp_path: Path, full_range: bool) -> None:
    # The reference is the colour-matrix equations applied in numpy to the Y'CbCr planes written
    # into the file (lossless, so they are exactly what the decoder hands to swscale): it shares
    # no code with PyAV/swscale. Note: with PyAV 18, to_ndarray() already reads the frame's tags,
    # so this guards the behaviour on every PyAV version rather than failing on PyAV 18 alone.
    rng = np.random.default_rng(7)
    low, high = (0, 256) if full_range else (16, 236)
    planes = rng.integers(low, high, (4, 3, 16, 24), dtype=np.uint8)
    path = tmp_path / "bt709.mp4"
    _write_yuv444_bt709(path, planes, color_range=2 if full_range else 1)
    with av.open(str(path)) as container:  # the file says what the test claims it says
        first = next(container.decode(video=0))
        assert (first.colorspace, first.color_range) == (1, 2 if full_range else 1)
        assert np.array_equal(first.to_ndarray(channel_last=True), planes[0].transpose(1, 2, 0))  # lossless

    bt709 = _ycbcr_to_rgb(planes, 0.2126, 0.0722, full_range)
    bt601 = _ycbcr_to_rgb(planes, 0.299, 0.114, full_range)
    wrong_range = _ycbcr_to_rgb(planes, 0.2126, 0.0722, not full_range)
    # the cases are far apart: decoding as BT.601, or with the other range, is measurably wrong
    assert np.abs(bt709.astype(int) - bt601).mean() > 5
    assert np.abs(bt709.astype(int) - wrong_range).mean() > 5

    frames = read_frames(path, [0, 1, 2, 3], backend="pyav").numpy().astype(int)
    assert np.abs(frames - bt709).max() <= 2  # swscale's fixed-point arithmetic rounds a little
    assert np.abs(frames - bt709).mean() < 0.05
    chunks = torch.cat(list(iter_frame_chunks(path, 3, backend="pyav"))).numpy().astype(int)
    assert np.array_equal(chunks, frames)


@pytest.mark.parametrize("degrees", [90, -90, 180])
def test_pyav_applies_the_display_rotation(tmp_path: Path, degrees: int) -> None:
    # A landscape-coded clip whose display matrix turns it by ``degrees`` counter-clockwise
    # (-90: what phones write for portrait video). The stored frames carry one white marker pixel
    # in their top-right corner.
    clip = _random_clip(5, 16, 24, seed=3) // 2
    clip[:, :, 0, -1] = 255
    path = tmp_path / "rotated.mp4"
    with av.open(str(path), "w") as container:
        video = container.add_stream("libx264rgb", rate=24, options={"qp": "0"})
        video.width, video.height, video.pix_fmt = 24, 16, "rgb24"
        video.set_display_rotation(degrees)
        for image in clip.permute(0, 2, 3, 1).numpy():
            for packet in video.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in video.encode():
            container.mux(packet)
    with av.open(str(path)) as container:
        assert next(container.decode(video=0)).rotation % 360 == degrees % 360  # 180 reads back as -180

    turns = (degrees % 360) // 90
    expected = torch.rot90(clip, turns, dims=(2, 3))  # counter-clockwise, like FFmpeg's autorotate
    # where the marker lands, worked by hand: the top-right pixel after a quarter turn ...
    marker = {90: (0, 0), -90: (23, 15), 180: (15, 0)}[degrees]  # (row, column) in the shown frame
    assert (expected[:, :, marker[0], marker[1]] == 255).all()

    height, width = expected.shape[-2:]
    info = probe_video(path, backend="pyav")
    assert (info.width, info.height, info.num_frames) == (width, height, 5)
    assert torch.equal(read_frames(path, [4, 0, 2], backend="pyav"), expected[[4, 0, 2]])
    assert torch.equal(torch.cat(list(iter_frame_chunks(path, 2, backend="pyav"))), expected)
    clip16 = read_video_frames(path, FrameSampler("benchmark", 8), backend="pyav")
    assert clip16.shape == (8, 3, height, width) and torch.equal(clip16[:5], expected)
    # "auto" goes straight to PyAV (decord ignores the rotation), and says the turned size
    auto = probe_video(path)
    assert (auto.backend, auto.width, auto.height) == ("pyav", width, height)
    assert torch.equal(read_frames(path, [0, 1]), expected[:2])
    if video_io.decord is not None:
        with pytest.raises(MediaError, match="display rotation"):
            probe_video(path, backend="decord")
