"""Video transforms: clip-consistent augmentation and the benchmark's H.264 robustness pass.

Augmenting each frame independently would inject exactly the frame-to-frame jitter that temporal
detectors (ReStraV's curvature, temporal heads) learn to flag as fake. torchvision's v2 transforms
draw their random parameters once per call, and a ``tv_tensors.Video`` ``[T, 3, H, W]`` is one input,
so one crop / flip / colour change is applied to all T frames.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import av
import numpy as np
import torch
from torch import nn
from torchvision import tv_tensors
from torchvision.transforms import v2

from detectors.video.io import resize_frames


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
        self.transform = v2.Compose([
            v2.RandomResizedCrop(size, scale=scale, antialias=True),
            v2.RandomHorizontalFlip(p=hflip),
            v2.RandomApply([v2.ColorJitter(brightness, contrast, saturation, hue)], p=colour),
            v2.RandomApply([v2.GaussianBlur(kernel_size=5, sigma=(0.1, 1.5))], p=blur),
        ])

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        if frames.dim() == 5:
            return torch.stack([self.forward(clip) for clip in frames])
        if frames.dim() != 4 or frames.shape[1] != 3:
            raise ValueError(f"expected a clip [T, 3, H, W], got shape {tuple(frames.shape)}")
        return self.transform(tv_tensors.Video(frames)).as_subclass(torch.Tensor)


@dataclass(frozen=True)
class H264Robustness:
    """The benchmark's video robustness pass: downscale by ``scale``, re-encode with H.264 at
    ``crf`` and ``fps`` (libx264, yuv420p, in memory), decode back: ``uint8 [T, 3, H', W']``.

    H.264 in yuv420p needs even sizes, so the downscaled size is rounded down to even.
    """

    scale: float = 0.5
    crf: int = 23
    fps: int = 25
    preset: str = "medium"  # libx264's default, as a plain ffmpeg command would use

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        return max(2, int(height * self.scale) // 2 * 2), max(2, int(width * self.scale) // 2 * 2)

    def __call__(self, frames: torch.Tensor) -> torch.Tensor:
        if frames.dtype != torch.uint8 or frames.dim() != 4 or frames.shape[1] != 3:
            raise ValueError(f"expected uint8 [T, 3, H, W], got {frames.dtype} {tuple(frames.shape)}")
        height, width = self.output_size(*frames.shape[-2:])
        small = resize_frames(frames, (height, width), mode="bilinear", antialias=True)
        buffer = io.BytesIO()
        with av.open(buffer, "w", format="mp4") as container:
            stream = container.add_stream("libx264", rate=self.fps)
            stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
            stream.options = {"crf": str(self.crf), "preset": self.preset}
            for image in small.permute(0, 2, 3, 1).contiguous().numpy():
                for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
        buffer.seek(0)
        with av.open(buffer, "r", format="mp4") as container:
            decoded = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
        if len(decoded) != len(frames):
            raise RuntimeError(f"H.264 round trip returned {len(decoded)} frames for {len(frames)}")
        return torch.from_numpy(np.stack(decoded)).permute(0, 3, 1, 2).contiguous()
