"""What ``python -m detectors.evaluate`` and the calibration split feed a model equals, pixel for pixel
and sample for sample, what GASBench feeds it.

Each expected value is computed here with the benchmark's own call sequence written out (PIL,
OpenCV, the ffmpeg command line, decord, numpy), read from GASBench v0.8.0
(https://github.com/BitMind-AI/gasbench): ``processing/media.py`` (``process_image_sample``,
``process_video_bytes_sample``) and ``processing/transforms.py`` (``ResizeShortestEdge``,
``apply_robustness_augmentations``, ``apply_video_robustness_augmentations``). The audio chain
tested at the end is this project's own extra: the benchmark has no audio augmented pass.
``tests/test_gasbench_fixtures.py`` holds the same paths to numbers computed by the benchmark's code.
"""

from __future__ import annotations

import io
import math
import shutil
import subprocess
from pathlib import Path

import av
import cv2
import numpy as np
import PIL.Image
import pytest
import torch

from detectors.data.catalog import MediaItem


# ------------------------------------------------------------------ the benchmark, written out
def benchmark_resize_reference(hwc: np.ndarray, target_h: int, target_w: int) -> np.ndarray:
    """``ResizeShortestEdge``: largest centred crop of the target aspect, then cv2 INTER_LINEAR."""
    h, w = hwc.shape[:2]
    scale = min(h / target_h, w / target_w)
    crop_h = min(int(round(scale * target_h)), h)
    crop_w = min(int(round(scale * target_w)), w)
    i, j = (h - crop_h) // 2, (w - crop_w) // 2
    return cv2.resize(hwc[i : i + crop_h, j : j + crop_w, :], (target_w, target_h), interpolation=cv2.INTER_LINEAR)


def pil_round_trip(hwc: np.ndarray, fmt: str, **options) -> np.ndarray:
    buffer = io.BytesIO()
    PIL.Image.fromarray(hwc).save(buffer, format=fmt, **options)
    buffer.seek(0)
    return np.array(PIL.Image.open(buffer).convert("RGB"))


def image_robustness_reference(hwc: np.ndarray) -> np.ndarray:
    img = hwc.copy()
    h, w = img.shape[:2]
    small_h, small_w = max(256, int(round(h * 0.5))), max(256, int(round(w * 0.5)))
    if small_h < h and small_w < w:
        img = cv2.resize(img, (small_w, small_h), interpolation=cv2.INTER_AREA)
        img = cv2.resize(img, (w, h), interpolation=cv2.INTER_LINEAR)
    img = pil_round_trip(img, "JPEG", quality=55, subsampling=2)
    img = pil_round_trip(img, "WEBP", quality=75, method=4)
    return pil_round_trip(img, "JPEG", quality=80, subsampling=2)


def chw(hwc: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(hwc)).permute(2, 0, 1)


def smooth_rgb(height: int, width: int, seed: int = 0) -> np.ndarray:
    """Natural-ish content (interpolated noise): resizes and codecs change it measurably but mildly."""
    coarse = np.random.default_rng(seed).integers(0, 256, (max(2, height // 8), max(2, width // 8), 3)).astype(np.uint8)
    return cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)


# --------------------------------------------------------------------------------------- image
@pytest.mark.parametrize(
    "size,target", [((101, 157), (64, 48)), ((90, 90), (32, 32)), ((50, 200), (40, 56)), ((64, 48), (64, 48))]
)
def test_image_input_is_pil_rgb_then_centre_crop_and_opencv_bilinear(tmp_path: Path, size, target) -> None:
    from detectors.image.data import benchmark_input_loader

    rgba = np.concatenate(
        [smooth_rgb(*size), np.random.default_rng(1).integers(0, 256, (*size, 1), dtype=np.uint8)], -1
    )
    path = tmp_path / "image.png"
    PIL.Image.fromarray(rgba, "RGBA").save(path)
    expected = benchmark_resize_reference(np.array(PIL.Image.open(path).convert("RGB")), *target)
    out = benchmark_input_loader({"resize": list(target)})(str(path))
    assert out.dtype == torch.uint8 and out.shape == (3, *target)
    assert torch.equal(out, chw(expected))


def test_image_robustness_pass_matches_the_benchmark_chain(tmp_path: Path) -> None:
    from detectors.image.data import benchmark_input_loader
    from detectors.image.transforms import RobustnessChain

    # 540 x 600: both halves above 256 (plain 0.5x); 700 x 400: the height stops at the 256 floor
    # (a non-uniform downscale); 250 x 600: the height cannot shrink, so no downscale at all
    for height, width in ((540, 600), (400, 700), (250, 600)):
        pixels = smooth_rgb(height, width, seed=height)
        path = tmp_path / f"photo_{height}.png"
        PIL.Image.fromarray(pixels).save(path)
        degraded = image_robustness_reference(pixels)
        assert torch.equal(RobustnessChain()(chw(pixels).contiguous()), chw(degraded))  # size kept
        out = benchmark_input_loader({"resize": [48, 64]}, robustness=True)(str(path))
        assert torch.equal(out, chw(benchmark_resize_reference(degraded, 48, 64)))


def test_calibration_split_sees_the_benchmark_input(tmp_path: Path) -> None:
    from detectors.data.dataset import MediaDataset
    from detectors.image.data import ImageDataConfig, benchmark_input_loader, image_recipe

    paths = []
    rgb = tmp_path / "rgb.jpg"
    PIL.Image.fromarray(smooth_rgb(120, 90)).save(rgb, quality=90)
    paths.append(rgb)
    grey16 = tmp_path / "grey16.png"  # 16-bit: the benchmark's convert("RGB") clips, it does not rescale
    PIL.Image.fromarray(np.random.default_rng(2).integers(0, 65535, (70, 80), dtype=np.uint16)).save(grey16)
    paths.append(grey16)
    items = [MediaItem(str(p), 0, "real", "d", "image") for p in paths]
    for robustness in (False, True):
        recipe = image_recipe("calibration", ImageDataConfig(eval_robustness=robustness), image_size=56)
        dataset = MediaDataset.from_recipe(items, recipe)
        load = benchmark_input_loader({"resize": [56, 56]}, robustness=robustness)
        for index, path in enumerate(paths):
            assert torch.equal(dataset[index]["x"], load(str(path)))
    expected = benchmark_resize_reference(np.array(PIL.Image.open(grey16).convert("RGB")), 56, 56)
    assert torch.equal(benchmark_input_loader({"resize": [56, 56]})(str(grey16)), chw(expected))


# --------------------------------------------------------------------------------------- video
def write_video(path: Path, frames: np.ndarray, fps: int = 24) -> Path:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = "yuv420p" if frames.shape[1] % 2 == 0 and frames.shape[2] % 2 == 0 else "yuv444p"
        stream.options = {"crf": "18"}
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def moving_clip(num_frames: int, height: int, width: int) -> np.ndarray:
    base = smooth_rgb(height, width + num_frames * 3)
    return np.stack([base[:, 3 * t : 3 * t + width] for t in range(num_frames)])


def decord_frames(path: Path, num_frames: int, frame_rate: float | None) -> np.ndarray:
    """``process_video_bytes_sample`` (v0.8): decord, step round(fps / frame_rate), last frame repeated."""
    decord = pytest.importorskip("decord")
    reader = decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=1)
    total = len(reader)
    if frame_rate is not None:
        fps = reader.get_avg_fps() or 30.0
        indices = list(range(0, total, max(1, round(fps / frame_rate))))[:num_frames]
    else:
        indices = list(range(min(num_frames, total)))
    frames = [reader[i].asnumpy() for i in indices]
    frames += [frames[-1]] * (num_frames - len(frames))
    return np.array(frames, dtype=np.uint8)


def test_video_input_is_decord_frames_resized_frame_by_frame_with_opencv(tmp_path: Path) -> None:
    from detectors.video.data import benchmark_input_loader

    path = write_video(tmp_path / "clip.mp4", moving_clip(30, 70, 90))
    for preprocessing in (
        {"resize": [32, 48], "num_frames": 8, "frame_rate": 8.0},
        {"resize": [40, 40], "num_frames": 40},  # longer than the clip: last frame repeated
        {"resize": [36, 36], "max_frames": 5},
    ):  # v0.8 reads max_frames when num_frames is absent
        frames = decord_frames(
            path, preprocessing.get("num_frames", preprocessing.get("max_frames")), preprocessing.get("frame_rate")
        )
        expected = np.stack([benchmark_resize_reference(f, *preprocessing["resize"]) for f in frames])
        out = benchmark_input_loader(preprocessing)(str(path))
        assert out.dtype == torch.uint8
        assert torch.equal(out, torch.from_numpy(expected).permute(0, 3, 1, 2))


def video_robustness_reference(video: np.ndarray, workdir: Path) -> np.ndarray:
    t, h, w, _ = video.shape
    sh, sw = max(256, int(round(h * 0.5))), max(256, int(round(w * 0.5)))
    if sh < h and sw < w:
        video = np.stack([cv2.resize(video[i], (sw, sh), interpolation=cv2.INTER_AREA) for i in range(t)])
    t, h, w, _ = video.shape
    even_h, even_w = h - h % 2, w - w % 2
    if (even_h, even_w) != (h, w) and even_h >= 2 and even_w >= 2:
        video = video[:, :even_h, :even_w, :]
        t, h, w, _ = video.shape
    out = workdir / "reference.mp4"
    subprocess.run(
        [
            "ffmpeg",
            "-y",
            "-loglevel",
            "error",
            "-f",
            "rawvideo",
            "-pix_fmt",
            "rgb24",
            "-s",
            f"{w}x{h}",
            "-r",
            "25",
            "-i",
            "-",
            "-c:v",
            "libx264",
            "-crf",
            "23",
            "-pix_fmt",
            "yuv420p",
            str(out),
        ],
        input=np.ascontiguousarray(video).tobytes(),
        capture_output=True,
        check=True,
    )
    capture = cv2.VideoCapture(str(out))
    decoded = []
    while len(decoded) < t:
        ok, frame = capture.read()
        if not ok:
            break
        decoded.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
    capture.release()
    decoded += [decoded[-1]] * (t - len(decoded))
    return np.stack(decoded[:t])


def test_video_robustness_pass_matches_the_benchmark_ffmpeg_chain(tmp_path: Path) -> None:
    # not skipped without ffmpeg: scripts/setup.sh installs it, so CI always runs this bit-exact check
    assert shutil.which("ffmpeg"), "no ffmpeg executable: scripts/setup.sh installs it (Debian package ffmpeg)"
    from detectors.video.data import benchmark_input_loader

    # 540 x 600: downscaled to 270 x 300 (INTER_AREA), no odd side; 63 x 81: below the floor, no
    # downscale, the odd row and column trimmed
    for height, width in ((540, 600), (63, 81)):
        path = write_video(tmp_path / f"clip_{height}.mp4", moving_clip(6, height, width))
        preprocessing = {"resize": [32, 40], "num_frames": 4}
        frames = decord_frames(path, 4, None)
        expected = np.stack(
            [benchmark_resize_reference(f, 32, 40) for f in video_robustness_reference(frames, tmp_path)]
        )
        out = benchmark_input_loader(preprocessing, robustness=True)(str(path))
        assert torch.equal(out, torch.from_numpy(expected).permute(0, 3, 1, 2))


def test_h264_robustness_sizes_follow_the_benchmark() -> None:
    from detectors.video.transforms import H264Robustness

    rule = H264Robustness()
    assert rule.output_size(540, 600) == (270, 300)  # plain 0.5x
    assert rule.output_size(400, 1000) == (256, 500)  # the 256 floor on one side only
    assert rule.output_size(250, 1000) == (250, 1000)  # one side cannot shrink: no downscale
    assert rule.output_size(63, 81) == (62, 80)  # odd sides trimmed for yuv420p
    assert rule.output_size(1, 9) == (1, 9)  # nothing left to trim to: the benchmark leaves it


# --------------------------------------------------------------------------------------- audio
def audio_robustness_reference(waveform: np.ndarray, seed: int) -> np.ndarray:
    from scipy.signal import resample_poly

    audio = np.array(waveform, dtype=np.float32, copy=True)
    divisor = math.gcd(16000, 8000)
    down, up = 8000 // divisor, 16000 // divisor
    audio = resample_poly(resample_poly(audio, down, up), up, down)[: audio.size]
    audio *= 10.0 ** (-6.0 / 20.0)
    rms = np.sqrt(np.mean(np.square(audio, dtype=np.float64)))
    if rms > 0:
        audio += np.random.default_rng(seed).normal(0.0, rms * 10.0 ** (-30.0 / 20.0), audio.shape).astype(np.float32)
    return np.clip(audio, -1.0, 1.0)


def test_project_audio_robustness_chain_is_reproducible_and_follows_its_spec() -> None:
    # this project's own chain (the benchmark has no audio augmented pass): written out above
    from detectors.audio.transforms import RobustnessChain, audio_robustness

    rng = np.random.default_rng(3)
    t = np.arange(96000) / 16000
    clip = 0.6 * np.sin(2 * np.pi * 440 * t) + 0.3 * np.sin(2 * np.pi * 6000 * t) + 0.05 * rng.standard_normal(96000)
    clip = clip.astype(np.float32)
    clip[90000:] = 0  # zero padding at the end counts in the RMS
    for seed in (43, 1042):
        expected = audio_robustness_reference(clip, seed)
        out = audio_robustness(torch.from_numpy(clip), seed)
        assert out.dtype == np.float32 and np.array_equal(out, expected)
    assert not np.any(audio_robustness(np.zeros(96000, np.float32), 43))  # silence stays silent
    loud = np.full(16000, 3.0, np.float32)
    assert audio_robustness(loud, 0, low_rate=None, snr_db=None).max() == 1.0
    # the chain: one generator per chain, a fresh seed per clip, the same arithmetic
    batch = torch.from_numpy(np.stack([clip, clip[::-1].copy()]))
    out = RobustnessChain(seed=5)(batch)
    seeds = torch.randint(0, 2**63 - 1, (), generator=torch.Generator().manual_seed(5))
    assert torch.equal(out[0], torch.from_numpy(audio_robustness_reference(clip, int(seeds))))
    assert not torch.equal(out[0], out[1].flip(0))


def test_audio_band_limit_runs_in_float32() -> None:
    from scipy.signal import resample_poly

    from detectors.audio.transforms import BandwidthRoundTrip

    x = np.random.default_rng(4).standard_normal(16000).astype(np.float32) * 0.1
    expected = resample_poly(resample_poly(x, 1, 2), 2, 1)[:16000]
    assert np.array_equal(BandwidthRoundTrip(16000, 8000)(torch.from_numpy(x)).numpy(), expected)
