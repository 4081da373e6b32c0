"""Image detector: DINOv3 (or DINOv2) features -> small head -> logits (0 real, 1 fake).

Features are the CLS token, the mean of the patch tokens, or both concatenated (the frozen-DINO
probes of Ojha et al., CVPR 2023, "UnivFD", and of Cozzolino et al., CVPRW 2024). The backbone is
frozen (probe), LayerNorm-tuned or LoRA-tuned (``model.tuning``). An optional 3-class head scores
real / synthetic / semisynthetic.
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
from detectors.image.data import ImageDataConfig, frozen_feature_recipe, image_recipe
from detectors.image.spectral import SpectralBranch
from detectors.networks.layers import MLP, DetectorNetwork, ImageNormalize, parameter_dtype
from detectors.networks.vit import VisionTransformer
from detectors.registry import register_detector
from detectors.tuning import TuningConfig

log = logging.getLogger(__name__)


@dataclass
class ImageDetectorConfig:
    backbone: BackboneConfig = setting(BackboneConfig(), help="the ViT (hub id, local directory or timm name)")
    tuning: TuningConfig = setting(TuningConfig(), help="how the backbone is tuned")
    features: Literal["cls", "mean", "both"] = setting("both", help="CLS token, mean patch token, or both")
    head_hidden: list[int] = setting([256], help="hidden sizes of the MLP head ([]: one Linear layer)", ge=1)
    dropout: float = setting(0.1, help="dropout before the head", ge=0, lt=1)
    num_classes: Literal[2, 3] = setting(2, help="2: real/fake; 3: real/synthetic/semisynthetic")
    image_size: int = setting(224, help="the training crop and the benchmark resize it exports", ge=1)
    allow_random_backbone: bool = setting(False, help="built-in demo only: random backbone when the hub is unreachable")
    spectral_branch: bool = setting(
        False,
        help="also feed the head the spectral detector's features (azimuthally "
        "averaged log power spectrum, batch-normalised; detectors/image/spectral.py)",
    )
    spectral_bins: int = setting(64, help="spectral_branch: points of the radial profile", ge=2)


class DinoImageNetwork(DetectorNetwork):
    """``[B, 3, H, W]`` uint8 (or float 0..255) images -> normalise -> ViT -> pooled tokens ->
    dropout -> MLP -> logits ``[B, num_classes]``.

    ``backbone``: a module returning final-norm tokens ``[B, prefix + patches, D]`` (training: the
    tuned transformers/timm model) or the arguments of :class:`VisionTransformer` (export).
    ``features``: ``"cls"``, ``"mean"`` (patch tokens start after the CLS and register tokens) or
    ``"both"`` (concatenated, CLS first). ``spectral_bins`` > 0 appends the spectral detector's
    radial profile of the input (:class:`~detectors.image.spectral.SpectralBranch`) to the pooled tokens.
    """

    def __init__(
        self,
        backbone: nn.Module | dict,
        features: str = "both",
        head_hidden: Sequence[int] = (256,),
        dropout: float = 0.0,
        num_classes: int = 2,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        activation: str = "gelu",
        spectral_bins: int = 0,
    ):
        super().__init__()
        if features not in ("cls", "mean", "both"):
            raise ValueError(f"features must be 'cls', 'mean' or 'both', got {features!r}")
        self.features = features
        self.normalize = ImageNormalize(mean, std)
        self.backbone = backbone if isinstance(backbone, nn.Module) else VisionTransformer(**backbone)
        width = self.backbone.embed_dim * (2 if features == "both" else 1)
        self.spectral = SpectralBranch(spectral_bins) if spectral_bins > 0 else None
        if self.spectral is not None:
            width += self.spectral.num_features
        self.head_dropout = nn.Dropout(dropout)
        self.head = MLP([width] + [int(h) for h in head_hidden] + [int(num_classes)], activation=activation)

    def pool(self, tokens: torch.Tensor) -> torch.Tensor:
        cls = tokens[:, 0]
        if self.features == "cls":
            return cls
        patches = tokens[:, self.backbone.num_prefix_tokens :].mean(dim=1)
        return patches if self.features == "mean" else torch.cat([cls, patches], dim=-1)

    def forward_features(self, images: torch.Tensor) -> torch.Tensor:
        x = self.normalize(images).to(parameter_dtype(self.backbone))
        pooled = self.pool(self.backbone(x))
        if self.spectral is None:
            return pooled
        return torch.cat([pooled, self.spectral(images).to(pooled.dtype)], dim=-1)

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(self.head_dropout(features))


@register_detector
class DinoImageDetector(Detector):
    arch = "dinov3_image"
    modality = "image"
    modality_default = True
    config_class = ImageDetectorConfig
    data_config_class = ImageDataConfig

    def __init__(self, config: ImageDetectorConfig) -> None:
        super().__init__(config)
        backbone = self.build_backbone(config.backbone, config.tuning)
        backbone.check_input_size(config.image_size, "model.image_size")
        self.net = self.build_network(
            DinoImageNetwork,
            backbone=backbone,
            features=config.features,
            head_hidden=list(config.head_hidden),
            dropout=config.dropout,
            mean=list(backbone.info.mean),
            std=list(backbone.info.std),
            activation="gelu",
            **({"spectral_bins": config.spectral_bins} if config.spectral_branch else {}),
        )

    def data_recipe(self, stage: str, data: ImageDataConfig) -> SampleRecipe:
        """Media with augmentation; with a frozen backbone, its pooled features cached per image
        (except with the spectral branch, whose normalisation trains on raw pixels)."""
        if self.config.spectral_branch and self.config.tuning.mode == "frozen" and data.feature_cache:
            if stage == "train":
                log.info(
                    "spectral_branch: features are not cached (the branch's normalisation trains on the "
                    "raw pixels); the frozen backbone runs every epoch"
                )
            return image_recipe(stage, data, self.config.image_size)
        cached = frozen_feature_recipe(self, stage, data, self.config.image_size)
        return cached or image_recipe(stage, data, self.config.image_size)

    def preprocessing(self) -> dict[str, Any]:
        return {"resize": [self.config.image_size, self.config.image_size]}
