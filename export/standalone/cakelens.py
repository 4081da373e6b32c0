"""Exported CakeLens v5: ``uint8 [B, T, 3, H, W]`` -> framesets -> space-time CNN -> AI_GEN -> LogitAffine.

Plain-torch re-implementation of ``detectors.video.cakelens.CakeLensV5`` with the same module names,
so the in-library state dict maps 1:1 under the ``net.`` prefix (``net.seq.input_conv0.weight``, ...,
``net.seq.fully_connected.seq.relu3.weight``); ``calibration.scale`` / ``calibration.bias`` are the
folded calibrator (``LogitAffine``).

Framing, as in the original: each run of ``frameset_size`` (9) frames is cropped to its top-left
``crop`` window, frames smaller than ``crop`` and short framesets are zero-padded, centred, BEFORE
normalising with the original mean/std, and frames x RGB are stacked frame-major into a depth of 27.
The whole-video AI_GEN probability is the mean over framesets of ``sigmoid(logit)``; the output is
``[log(1 - p), log(p)]`` (softmax gives back ``p``) through the calibrator.
"""

import math
from collections import OrderedDict
from typing import List, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from .heads import Float32Buffers, LogitAffine


class CakeLensInstanceNorm(nn.Module):
    """Instance norm with affine parameters (``weight``/``bias``), computed as one-channel group norm."""

    def __init__(self, channels: int, eps: float):
        super().__init__()
        self.channels = channels
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.group_norm(x, self.channels, self.weight, self.bias, self.eps)


class CakeLensResidual(nn.Module):
    """``main(x)`` plus ``x`` zero-padded by ``pad`` channels on each side."""

    def __init__(self, main: nn.Module, pad: int):
        super().__init__()
        self.main = main
        self.pad = pad

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.main(x) + F.pad(x, (0, 0, 0, 0, 0, 0, self.pad, self.pad))


class CakeLensBlock(nn.Module):
    def __init__(self, channels: int, step: int, slope: float, eps: float):
        super().__init__()
        space, time = channels + step, channels + 2 * step
        self.seq = CakeLensResidual(nn.Sequential(OrderedDict([
            ("space_conv0", nn.Conv3d(channels, space, kernel_size=(1, 3, 3), padding=(0, 1, 1))),
            ("space_relu0", nn.LeakyReLU(slope)),
            ("space_norm0", CakeLensInstanceNorm(space, eps)),
            ("time_conv0", nn.Conv3d(space, time, kernel_size=(3, 1, 1), padding=(1, 0, 0))),
            ("time_relu0", nn.LeakyReLU(slope)),
            ("time_norm0", CakeLensInstanceNorm(time, eps)),
        ])), step)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.seq(x)


class CakeLensBlocks(nn.Module):
    def __init__(self, main: nn.Sequential):
        super().__init__()
        self.main = main

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.main(x)


class CakeLensGroup(nn.Module):
    def __init__(self, width: int, step: int, num_blocks: int, slope: float, eps: float):
        super().__init__()
        blocks = []
        for index in range(num_blocks):
            blocks.append((f"block{index}", CakeLensBlock(width + 2 * step * index, step, slope, eps)))
        self.seq = CakeLensBlocks(nn.Sequential(OrderedDict(blocks)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.seq(x)


class CakeLensClassifier(nn.Module):
    def __init__(self, in_features: int, hidden: Sequence[int], num_labels: int, pool: int, slope: float):
        super().__init__()
        layers = [("maxpool", nn.MaxPool3d(kernel_size=pool)), ("flatten", nn.Flatten(start_dim=1))]
        features = in_features
        for index, size in enumerate(hidden):
            layers.append((f"linear{index}", nn.Linear(features, size)))
            layers.append((f"relu{index}", nn.LeakyReLU(slope)))
            features = size
        layers.append((f"relu{len(hidden)}", nn.Linear(features, num_labels)))  # the original's name
        self.seq = nn.Sequential(OrderedDict(layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.seq(x)


class CakeLensNet(nn.Module):
    """``[N, 1, 3 * frameset_size, crop, crop]`` normalised volumes -> ``[N, num_labels]`` logits."""

    def __init__(self, width: int, channel_step: int, num_blocks: int, frameset_size: int, crop: int,
                 hidden: Sequence[int], num_labels: int, pool: int, negative_slope: float, norm_eps: float):
        super().__init__()
        out_channels = width + 2 * channel_step * num_blocks
        depth = ((3 * frameset_size - 3) // 3 + 1) // pool
        side = ((crop - 3) // 3 + 1) // pool
        self.seq = nn.Sequential(OrderedDict([
            ("input_conv0", nn.Conv3d(1, width, kernel_size=3, stride=3)),
            ("input_relu0", nn.LeakyReLU(negative_slope)),
            ("input_norm0", CakeLensInstanceNorm(width, norm_eps)),
            ("spacetime_conv_group", CakeLensGroup(width, channel_step, num_blocks, negative_slope, norm_eps)),
            ("fully_connected", CakeLensClassifier(out_channels * depth * side * side, hidden, num_labels,
                                                   pool, negative_slope)),
        ]))

    def forward(self, volume: torch.Tensor) -> torch.Tensor:
        return self.seq(volume)


class CakeLensStandalone(Float32Buffers):
    """Video ``[B, T, 3, H, W]`` (uint8 or float 0..255) -> calibrated logits ``[B, 2]`` (float32).

    Frames are framed as the original tool does (top-left crop, centred zero padding); the
    benchmark delivers ``T = num_frames = 9`` frames resized to ``crop x crop``, i.e. one frameset.
    """

    float32_buffers = ("mean", "std")

    def __init__(self, width: int = 64, channel_step: int = 32, num_blocks: int = 6, frameset_size: int = 9,
                 crop: int = 512, hidden: List[int] = (512, 256, 128), num_labels: int = 17, pool: int = 5,
                 negative_slope: float = 0.01, norm_eps: float = 1e-5,
                 mean: Sequence[float] = (0.4016435146331787, 0.380405455827713, 0.3688599765300751),
                 std: Sequence[float] = (0.28864356875419617, 0.2775335907936096, 0.27996501326560974),
                 ai_gen_index: int = 0, num_classes: int = 2):
        super().__init__()
        if num_classes != 2:
            raise ValueError(f"CakeLens exports a binary detector (num_classes 2), got {num_classes}")
        self.frameset_size = frameset_size
        self.crop = crop
        self.ai_gen_index = ai_gen_index
        self.net = CakeLensNet(width, channel_step, num_blocks, frameset_size, crop, list(hidden), num_labels,
                               pool, negative_slope, norm_eps)
        self.register_buffer("mean", torch.tensor([float(m) for m in mean]).view(1, 1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor([float(s) for s in std]).view(1, 1, 3, 1, 1), persistent=False)
        self.calibration = LogitAffine(num_classes)

    def volumes(self, video: torch.Tensor) -> torch.Tensor:
        """``[B, T, 3, H, W]`` -> ``[B * ceil(T / 9), 1, 27, crop, crop]`` (sample-major)."""
        batch, frames = video.shape[0], video.shape[1]
        size, crop = self.frameset_size, self.crop
        count = int(math.ceil(frames / size))
        x = video[:, :, :, :crop, :crop].to(torch.float32) / 255.0
        height, width = x.shape[-2], x.shape[-1]
        pad_h, pad_w = crop - height, crop - width
        x = F.pad(x, (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2))
        x = (x - self.mean.float()) / self.std.float()
        # Padding frames (and the pixels above) are black: -mean / std once normalised.
        black = ((0.0 - self.mean.float()) / self.std.float()).expand(batch, 1, 3, crop, crop)
        sets = []
        for index in range(count):
            clip = x[:, index * size:(index + 1) * size]
            missing = size - clip.shape[1]
            before, after = missing // 2, missing - missing // 2
            clip = torch.cat([black.expand(batch, before, 3, crop, crop), clip,
                              black.expand(batch, after, 3, crop, crop)], dim=1)
            sets.append(clip.reshape(batch, 1, 3 * size, crop, crop))
        return torch.stack(sets, dim=1).flatten(0, 1)

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        batch = video.shape[0]
        volume = self.volumes(video).to(self.net.seq.input_conv0.weight.dtype)
        logits = self.net(volume).float()[:, self.ai_gen_index].view(batch, -1)
        count = float(logits.shape[1])
        log_p = torch.logsumexp(F.logsigmoid(logits), dim=1) - math.log(count)
        log_not_p = torch.logsumexp(F.logsigmoid(-logits), dim=1) - math.log(count)
        return self.calibration(torch.stack([log_not_p, log_p], dim=1))
