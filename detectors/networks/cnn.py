"""Plain-torch ConvNeXt and ResNet for exported CNN detectors (``--arch cnn``).

Module and parameter names follow timm's ``ConvNeXt`` and ``ResNet``, so a trained timm model's
state dict maps onto these modules key for key (``export/convert.py`` only drops the classifier and
reshapes ConvNeXt's 1x1-convolution MLPs into Linear layers). Both return the pooled pre-logits
features ``[B, embed_dim]`` that timm returns with ``num_classes=0``: ConvNeXt average-pools
and applies its head LayerNorm, ResNet average-pools.

This file is concatenated into the submission's ``model.py``: only torch, math and typing imports,
and no dynamic attribute or code access of any kind.
"""

from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of ``[B, C, H, W]`` (timm's ``LayerNorm2d``)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 2, 3, 1)
        x = F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


class ConvNeXtMlp(nn.Module):
    """``fc1`` -> GELU -> ``fc2`` on channels-last features."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class ConvNeXtBlock(nn.Module):
    """Depthwise conv -> LayerNorm -> MLP (channels last) -> layer scale ``gamma`` -> residual."""

    def __init__(self, dim: int, hidden: int, kernel_size: int = 7, eps: float = 1e-6):
        super().__init__()
        self.conv_dw = nn.Conv2d(dim, dim, kernel_size, padding=kernel_size // 2, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=eps)
        self.mlp = ConvNeXtMlp(dim, hidden)
        # models trained without layer scale export ones here
        self.gamma = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        x = self.conv_dw(x).permute(0, 2, 3, 1)
        x = self.mlp(self.norm(x)).permute(0, 3, 1, 2)
        return shortcut + x * self.gamma.reshape(1, -1, 1, 1)


class ConvNeXtStage(nn.Module):
    def __init__(self, in_dim: int, dim: int, depth: int, hidden: int, kernel_size: int, eps: float, downsample: bool):
        super().__init__()
        if downsample:
            self.downsample = nn.Sequential(LayerNorm2d(in_dim, eps=eps), nn.Conv2d(in_dim, dim, 2, stride=2))
        else:
            self.downsample = nn.Sequential()
        self.blocks = nn.Sequential(*[ConvNeXtBlock(dim, hidden, kernel_size, eps) for _ in range(depth)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.downsample(x))


class ConvNeXtHead(nn.Module):
    """Global average pool -> LayerNorm (timm's ``NormMlpClassifierHead`` without its classifier)."""

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.norm = nn.LayerNorm(dim, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x.mean(dim=(2, 3)))


class ConvNeXt(nn.Module):
    """ConvNeXt (Liu et al., CVPR 2022): patchify stem, four stages of ConvNeXt blocks."""

    def __init__(
        self,
        depths: list[int],
        dims: list[int],
        in_chans: int = 3,
        patch_size: int = 4,
        kernel_size: int = 7,
        mlp_ratio: float = 4.0,
        eps: float = 1e-6,
    ):
        super().__init__()
        self.embed_dim = int(dims[-1])
        self.stem = nn.Sequential(
            nn.Conv2d(in_chans, dims[0], patch_size, stride=patch_size), LayerNorm2d(dims[0], eps=eps)
        )
        stages = []
        previous = int(dims[0])
        for index, (depth, dim) in enumerate(zip(depths, dims)):
            stages.append(
                ConvNeXtStage(
                    previous, int(dim), int(depth), int(mlp_ratio * dim), kernel_size, eps, downsample=index > 0
                )
            )
            previous = int(dim)
        self.stages = nn.Sequential(*stages)
        self.head = ConvNeXtHead(self.embed_dim, eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.stages(self.stem(x)))


class BasicBlock(nn.Module):
    """ResNet's two 3x3 convolutions (``expansion`` 1)."""

    def __init__(self, in_dim: int, planes: int, stride: int, downsample: bool, groups: int = 1, width: int = 0):
        super().__init__()
        self.conv1 = nn.Conv2d(in_dim, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = _projection(in_dim, planes, stride) if downsample else nn.Sequential()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return F.relu(y + self.downsample(x))


class Bottleneck(nn.Module):
    """ResNet's 1x1 -> 3x3 (grouped for ResNeXt) -> 1x1 bottleneck (``expansion`` 4)."""

    def __init__(self, in_dim: int, planes: int, stride: int, downsample: bool, groups: int = 1, width: int = 0):
        super().__init__()
        width = width or planes
        self.conv1 = nn.Conv2d(in_dim, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=1, groups=groups, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.downsample = _projection(in_dim, planes * 4, stride) if downsample else nn.Sequential()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        y = F.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return F.relu(y + self.downsample(x))


def _projection(in_dim: int, out_dim: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_dim, out_dim, 1, stride=stride, bias=False), nn.BatchNorm2d(out_dim))


class ResNet(nn.Module):
    """ResNet (He et al., CVPR 2016) / ResNeXt with timm's default stem (7x7 conv, max pool)."""

    def __init__(
        self,
        block: str,
        layers: list[int],
        channels: list[int],
        stem_width: int = 64,
        in_chans: int = 3,
        cardinality: int = 1,
        base_width: int = 64,
    ):
        super().__init__()
        if block not in ("basic", "bottleneck"):
            raise ValueError(f"block must be 'basic' or 'bottleneck', got {block!r}")
        expansion = 1 if block == "basic" else 4
        self.conv1 = nn.Conv2d(in_chans, stem_width, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(stem_width)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        previous = stem_width
        stages = []
        for index, (depth, planes) in enumerate(zip(layers, channels)):
            stride = 1 if index == 0 else 2
            width = int(planes * (base_width / 64.0)) * cardinality
            blocks = []
            for position in range(int(depth)):
                first = position == 0
                needs_projection = first and (stride != 1 or previous != planes * expansion)
                if block == "basic":
                    blocks.append(BasicBlock(previous, planes, stride if first else 1, needs_projection))
                else:
                    blocks.append(
                        Bottleneck(previous, planes, stride if first else 1, needs_projection, cardinality, width)
                    )
                previous = planes * expansion
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.embed_dim = previous

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(F.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return x.mean(dim=(2, 3))


def build_cnn(architecture: dict[str, Any]) -> nn.Module:
    """The network an architecture mapping of ``export.convert.cnn_architecture`` describes:
    ``{"family": "convnext" | "resnet", **constructor arguments}``."""
    kwargs = {key: value for key, value in architecture.items() if key != "family"}
    if architecture["family"] == "convnext":
        return ConvNeXt(**kwargs)
    if architecture["family"] == "resnet":
        return ResNet(**kwargs)
    raise ValueError(f"unknown CNN family {architecture['family']!r}; expected 'convnext' or 'resnet'")
