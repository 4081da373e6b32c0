"""Video transforms: clip-consistent augmentation, the benchmark's resize and H.264 robustness pass.

Augmenting each frame independently would inject exactly the frame-to-frame jitter that temporal
detectors (ReStraV's curvature, temporal heads) learn to flag as fake. torchvision's v2 transforms
draw their random parameters once per call, and a ``tv_tensors.Video`` ``[T, 3, H, W]`` is one input,
so one crop / flip / colour change is applied to all T frames.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import av
import cv2
import numpy as np
import torch
from torch import nn
from torchvision import tv_tensors
from torchvision.transforms import v2

from detectors.image.transforms import robustness_downscale_size

logger = logging.getLogger(__name__)


class ClipAugment(nn.Module):
    """Random resized crop, horizontal flip, colour jitter and blur, drawn once per clip.

    Input ``uint8 [T, 3, H, W]`` (one clip) or ``[B, T, 3, H, W]`` (each clip drawn separately);
    output uint8 with spatial size ``size``.
    """

    def __init__(
        self,
        size: tuple[int, int],
        scale: tuple[float, float] = (0.6, 1.0),
        hflip: float = 0.5,
        colour: float = 0.8,
        brightness: float = 0.2,
        contrast: float = 0.2,
        saturation: float = 0.2,
        hue: float = 0.02,
        blur: float = 0.1,
    ) -> None:
        super().__init__()
        self.transform = v2.Compose(
            [
                v2.RandomResizedCrop(size, scale=scale, antialias=True),
                v2.RandomHorizontalFlip(p=hflip),
                v2.RandomApply([v2.ColorJitter(brightness, contrast, saturation, hue)], p=colour),
                v2.RandomApply([v2.GaussianBlur(kernel_size=5, sigma=(0.1, 1.5))], p=blur),
            ]
        )

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        if frames.dim() == 5:
            return torch.stack([self.forward(clip) for clip in frames])
        if frames.dim() != 4 or frames.shape[1] != 3:
            raise ValueError(f"expected a clip [T, 3, H, W], got shape {tuple(frames.shape)}")
        return self.transform(tv_tensors.Video(frames)).as_subclass(torch.Tensor)


@dataclass(frozen=True)
class H264Robustness:
    """The benchmark's video robustness pass, before its resize to the model size (GASBench
    ``apply_video_robustness_augmentations``): ``uint8 [T, 3, H, W]`` -> ``uint8 [T, 3, H', W']``.

    1. each side to ``max(min_side, round(side * scale))``; only when both sides shrink, every frame
       is downscaled with ``cv2.INTER_AREA`` (no upscale back, unlike the image chain);
    2. an odd height or width loses its last row / column (yuv420p needs even sizes);
    3. H.264 round trip with the ``ffmpeg`` command line, as the benchmark runs it: raw rgb24 in at
       ``fps`` frames per second, ``libx264 -crf 23 -pix_fmt yuv420p`` (default preset) into an mp4;
       without an ``ffmpeg`` executable, PyAV's libx264 with the same settings (close, not bit-exact);
    4. decoded back with ``cv2.VideoCapture`` (BGR -> RGB), the first T frames, the last one repeated
       if fewer come back. The frame count is T in and out; the frame rate only labels the stream.
    """

    scale: float = 0.5
    crf: int = 23
    fps: int = 25
    min_side: int = 256

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        """(H', W') of the frames this pass returns for ``height`` x ``width`` input."""
        height, width = robustness_downscale_size(height, width, self.scale, self.min_side) or (height, width)
        even_h, even_w = height - height % 2, width - width % 2
        if even_h >= 2 and even_w >= 2:
            height, width = even_h, even_w
        return height, width

    def __call__(self, frames: torch.Tensor) -> torch.Tensor:
        if frames.dtype != torch.uint8 or frames.dim() != 4 or frames.shape[1] != 3:
            raise ValueError(f"expected uint8 [T, 3, H, W], got {frames.dtype} {tuple(frames.shape)}")
        video = frames.permute(0, 2, 3, 1).contiguous().numpy()  # THWC, as the benchmark holds it
        small = robustness_downscale_size(*video.shape[1:3], self.scale, self.min_side)
        if small is not None:
            video = np.stack([cv2.resize(frame, (small[1], small[0]), interpolation=cv2.INTER_AREA) for frame in video])
        out_h, out_w = self.output_size(*frames.shape[-2:])
        video = np.ascontiguousarray(video[:, :out_h, :out_w])
        decoded = h264_round_trip(video, self.crf, self.fps)
        return torch.from_numpy(decoded).permute(0, 3, 1, 2).contiguous()


def h264_round_trip(video: np.ndarray, crf: int = 23, fps: int = 25) -> np.ndarray:
    """Encode ``uint8 [T, H, W, 3]`` RGB (even H, W) to H.264 and decode it back, same shape."""
    with tempfile.TemporaryDirectory(prefix="h264_robustness_") as folder:
        path = str(Path(folder) / "clip.mp4")
        if not _encode_ffmpeg_cli(video, path, crf, fps):
            _encode_pyav(video, path, crf, fps)
        return _decode_opencv(path, len(video))


def _encode_ffmpeg_cli(video: np.ndarray, path: str, crf: int, fps: int) -> bool:
    executable = shutil.which("ffmpeg")
    if executable is None:
        _warn_once(
            "no ffmpeg executable: the H.264 robustness pass uses PyAV's libx264 (close to, not "
            "bit-identical with, the benchmark's ffmpeg command)"
        )
        return False
    height, width = video.shape[1:3]
    command = [
        executable,
        "-y",
        "-loglevel",
        "error",
        "-f",
        "rawvideo",
        "-pix_fmt",
        "rgb24",
        "-s",
        f"{width}x{height}",
        "-r",
        str(int(fps)),
        "-i",
        "-",
        "-c:v",
        "libx264",
        "-crf",
        str(int(crf)),
        "-pix_fmt",
        "yuv420p",
        path,
    ]
    result = subprocess.run(command, input=video.tobytes(), capture_output=True, check=False)
    if result.returncode != 0 or not os.path.exists(path) or os.path.getsize(path) == 0:
        _warn_once(
            f"ffmpeg could not encode the H.264 robustness clip ({result.stderr.decode(errors='replace')[-300:]}); "
            "using PyAV's libx264"
        )
        return False
    return True


def _encode_pyav(video: np.ndarray, path: str, crf: int, fps: int) -> None:
    height, width = video.shape[1:3]
    with av.open(path, "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=int(fps))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"crf": str(int(crf))}
        for image in video:
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def _decode_opencv(path: str, num_frames: int) -> np.ndarray:
    capture = cv2.VideoCapture(path)
    decoded: list[np.ndarray] = []
    try:
        while len(decoded) < num_frames:
            ok, frame = capture.read()
            if not ok:
                break
            decoded.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
    finally:
        capture.release()
    if not decoded:
        raise RuntimeError("the H.264 robustness round trip decoded no frames")
    decoded += [decoded[-1]] * (num_frames - len(decoded))
    return np.stack(decoded)


_WARNED: set[str] = set()


def _warn_once(message: str) -> None:
    if message not in _WARNED:
        _WARNED.add(message)
        logger.warning(message)
