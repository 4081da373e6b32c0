"""Image detector: a timm CNN fine-tuned end to end at native resolution -> logits (0 real, 1 fake).

A frozen backbone only hands over the signal it already encodes; to learn a generator's low-level
traces the network has to see raw pixels and adapt its own first filters (CNNSpot, Wang et al.,
CVPR 2020; AIDE, Yan et al., ICLR 2025, is ConvNeXt-based). So: any timm CNN (``convnext_tiny`` by
default), every layer trained (``model.tuning: full``) with AdamW on native-resolution crops
(never downscaled: ``data.crop: native``), a Linear head, and the shared calibration-aware loss.

The export rebuilds ConvNeXt and ResNet/ResNeXt in plain torch (:mod:`detectors.networks.cnn`),
so the submission does not depend on the benchmark's timm version; other timm CNNs train but
cannot be exported.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Literal, Sequence

import torch
import torch.nn as nn

from detectors.backbones import IMAGENET_MEAN, IMAGENET_STD, BackboneConfig
from detectors.base import Detector
from detectors.config import setting
from detectors.data.dataset import SampleRecipe
from detectors.errors import ConfigError
from detectors.image.data import ImageDataConfig, frozen_feature_recipe, image_recipe
from detectors.networks.cnn import build_cnn
from detectors.networks.layers import MLP, DetectorNetwork, ImageNormalize, parameter_dtype
from detectors.registry import register_detector
from detectors.tuning import TuningConfig

log = logging.getLogger(__name__)


@dataclass
class CNNConfig:
    backbone: BackboneConfig = setting(
        BackboneConfig(name="convnext_tiny", source="timm"),
        help="a timm CNN name (weights: model.backbone.weights or timm's hub)",
    )
    tuning: TuningConfig = setting(TuningConfig(mode="full"), help="full: every layer learns (frozen: a probe)")
    head_hidden: list[int] = setting([], help="hidden sizes of the head ([]: one Linear layer)", ge=1)
    dropout: float = setting(0.0, help="dropout on the pooled features", ge=0, lt=1)
    num_classes: Literal[2, 3] = setting(2, help="2: real/fake; 3: real/synthetic/semisynthetic")
    image_size: int = setting(224, help="the training crop and the benchmark resize it exports", ge=8)
    allow_random_backbone: bool = setting(False, help="built-in demo only: random backbone when the hub is unreachable")


class CNNImageNetwork(DetectorNetwork):
    """``[B, 3, H, W]`` uint8 (or float 0..255) images -> normalise -> CNN -> pooled features
    ``[B, D]`` -> dropout -> MLP -> logits ``[B, num_classes]``.

    ``backbone``: a module returning pooled features (training: the timm model behind ``Backbone``)
    or the architecture mapping of :func:`~detectors.networks.cnn.build_cnn` (export).
    """

    def __init__(
        self,
        backbone: nn.Module | dict,
        head_hidden: Sequence[int] = (),
        dropout: float = 0.0,
        num_classes: int = 2,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
    ):
        super().__init__()
        self.normalize = ImageNormalize(mean, std)
        self.backbone = backbone if isinstance(backbone, nn.Module) else build_cnn(backbone)
        self.head_dropout = nn.Dropout(dropout)
        self.head = MLP(
            [self.backbone.embed_dim] + [int(h) for h in head_hidden] + [int(num_classes)], activation="gelu"
        )

    def forward_features(self, images: torch.Tensor) -> torch.Tensor:
        return self.backbone(self.normalize(images).to(parameter_dtype(self.backbone)))

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(self.head_dropout(features))


@register_detector
class CNNDetector(Detector):
    arch = "cnn"
    modality = "image"
    config_class = CNNConfig
    data_config_class = ImageDataConfig
    gpu_precision = "bf16-mixed"

    def __init__(self, config: CNNConfig) -> None:
        super().__init__(config)
        backbone = self.build_backbone(config.backbone, config.tuning)
        if backbone.info.family != "cnn":
            raise ConfigError(
                None,
                "model.backbone.name",
                f"{config.backbone.name!r} is not a timm CNN (it has patch "
                "embeddings); use --arch dinov3_image for vision transformers",
            )
        self.exportable = _export_problem(backbone.inner)
        if self.exportable is not None:
            log.warning("%s trains, but cannot be exported: %s", config.backbone.name, self.exportable)
        self.net = self.build_network(
            CNNImageNetwork,
            backbone=backbone,
            head_hidden=list(config.head_hidden),
            dropout=config.dropout,
            mean=list(backbone.info.mean),
            std=list(backbone.info.std),
        )

    def data_recipe(self, stage: str, data: ImageDataConfig) -> SampleRecipe:
        """Native-resolution crops; with a frozen backbone (a linear probe), its features cached."""
        return frozen_feature_recipe(self, stage, data, self.config.image_size) or image_recipe(
            stage, data, self.config.image_size
        )

    def preprocessing(self) -> dict[str, Any]:
        return {"resize": [self.config.image_size, self.config.image_size]}

    def export_name(self) -> str:
        return f"{self.arch}-{self.config.backbone.name.removeprefix('timm/')}"


def _export_problem(model: nn.Module) -> str | None:
    """Why the plain-torch export cannot reproduce ``model`` (None when it can)."""
    from export.convert import cnn_architecture

    try:
        cnn_architecture(model)
    except ValueError as error:
        return str(error)
    return None


__all__ = ["CNNConfig", "CNNDetector", "CNNImageNetwork"]
