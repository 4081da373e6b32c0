"""FakeFinder's FlexibleCNN: a small CNN whose depth, widths and kernels are settings, made to be searched.

FakeFinder (https://github.com/niranjanaambadi/FakeFinder; the project's seed 002) lets Optuna choose
the architecture and the training settings of one flexible network:

``uint8 [B, 3, S, S]`` -> ``x / 255`` (FakeFinder's ``ToTensor``; ``normalize: true`` adds the ImageNet
mean/std) -> ``n_layers`` blocks of ``Conv2d(filters[i], kernel_sizes[i], padding="same")`` ->
``BatchNorm2d`` -> ``ReLU`` -> ``MaxPool2d(2)`` -> flatten -> ``Dropout`` -> ``Linear(fc_size)`` ->
``ReLU`` -> ``Dropout`` -> ``Linear(num_classes)`` -> logits.

FakeFinder sizes the first fully connected layer lazily, on the first forward pass. Here it is
sized from the settings (``filters[-1] * side * side``, ``side`` the input side halved ``n_layers``
times, rounding down as ``MaxPool2d`` does), so the trained and the exported module are the same
static network. The input side is ``image_size`` (FakeFinder's ``resolution``: 16, 32 or 64); the
arch's YAML trains on plain resizes of the whole image, as FakeFinder does.

``configs/sweeps/fakefinder.yaml`` is FakeFinder's search space (``python -m detectors.sweep``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Sequence

import torch
import torch.nn as nn

from detectors.base import Detector
from detectors.config import setting
from detectors.data.dataset import SampleRecipe
from detectors.errors import ConfigError
from detectors.image.data import ImageDataConfig, image_recipe
from detectors.networks.layers import DetectorNetwork, ImageNormalize
from detectors.registry import register_detector

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class FlexCNNConfig:
    image_size: int = setting(32, help="input side (FakeFinder's resolution: 16, 32 or 64)", ge=2)
    n_layers: int = setting(2, help="convolution blocks (Conv -> BatchNorm -> ReLU -> MaxPool(2))", ge=1)
    filters: list[int] = setting([32, 24], help="output channels of each block (one per layer)", ge=1)
    kernel_sizes: list[int] = setting([5, 3], help="kernel side of each block's convolution (one per layer)", ge=1)
    dropout: float = setting(0.17, help="dropout before each fully connected layer", ge=0, lt=1)
    fc_size: int = setting(384, help="width of the hidden fully connected layer", ge=1)
    normalize: bool = setting(False, help="ImageNet mean/std after scaling to [0, 1] (FakeFinder: scaling only)")
    num_classes: Literal[2, 3] = setting(2, help="2: real/fake; 3: real/synthetic/semisynthetic")

    def __post_init__(self) -> None:
        for name in ("filters", "kernel_sizes"):
            values = getattr(self, name)
            if len(values) != self.n_layers:
                raise ConfigError(
                    None,
                    name,
                    f"needs one value per layer (n_layers = {self.n_layers}), got {len(values)}: {list(values)}",
                )
        if flattened_side(self.image_size, self.n_layers) < 1:
            raise ConfigError(
                None,
                "n_layers",
                f"{self.n_layers} poolings leave nothing of a {self.image_size}-pixel "
                "input; use fewer layers or a larger image_size",
            )


def flattened_side(image_size: int, n_layers: int) -> int:
    """The side of the last block's feature map: ``MaxPool2d(2)`` halves, rounding down, per block."""
    side = int(image_size)
    for _ in range(int(n_layers)):
        side = side // 2
    return side


class FlexibleCNN(DetectorNetwork):
    """FakeFinder's FlexibleCNN with a statically sized classifier (see the module docstring)."""

    def __init__(
        self,
        image_size: int = 32,
        filters: Sequence[int] = (32, 24),
        kernel_sizes: Sequence[int] = (5, 3),
        dropout: float = 0.17,
        fc_size: int = 384,
        normalize: bool = False,
        num_classes: int = 2,
    ):
        super().__init__()
        if len(filters) != len(kernel_sizes) or len(filters) == 0:
            raise ValueError(f"one kernel size per block: filters {list(filters)}, kernel_sizes {list(kernel_sizes)}")
        mean, std = (IMAGENET_MEAN, IMAGENET_STD) if normalize else ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
        self.normalize = ImageNormalize(mean, std)
        blocks = []
        channels = 3
        for width, kernel in zip(filters, kernel_sizes):
            blocks.append(
                nn.Sequential(
                    nn.Conv2d(channels, int(width), int(kernel), padding="same"),
                    nn.BatchNorm2d(int(width)),
                    nn.ReLU(),
                    nn.MaxPool2d(2, 2),
                )
            )
            channels = int(width)
        self.features = nn.ModuleList(blocks)
        side = flattened_side(image_size, len(blocks))
        self.classifier = nn.Sequential(
            nn.Dropout(dropout),
            nn.Linear(channels * side * side, int(fc_size)),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(int(fc_size), int(num_classes)),
        )

    def forward_features(self, images: torch.Tensor) -> torch.Tensor:
        x = self.normalize(images)
        for block in self.features:
            x = block(x)
        return torch.flatten(x, start_dim=1)

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self.classifier(features)


@register_detector
class FlexCNNDetector(Detector):
    arch = "flexcnn"
    modality = "image"
    config_class = FlexCNNConfig
    data_config_class = ImageDataConfig

    def __init__(self, config: FlexCNNConfig) -> None:
        super().__init__(config)
        self.net = self.build_network(
            FlexibleCNN,
            image_size=config.image_size,
            filters=list(config.filters),
            kernel_sizes=list(config.kernel_sizes),
            dropout=config.dropout,
            fc_size=config.fc_size,
            normalize=config.normalize,
        )

    def data_recipe(self, stage: str, data: ImageDataConfig) -> SampleRecipe:
        return image_recipe(stage, data, self.config.image_size)

    def preprocessing(self) -> dict[str, Any]:
        return {"resize": [self.config.image_size, self.config.image_size]}

    def export_name(self) -> str:
        return f"{self.arch}-{self.config.n_layers}x{self.config.image_size}"


__all__ = ["FlexCNNConfig", "FlexCNNDetector", "FlexibleCNN", "flattened_side"]
