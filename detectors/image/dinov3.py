"""Image detector: DINOv3 (or DINOv2) features -> small head -> logits (0 real, 1 fake).

Features are the CLS token, the mean of the patch tokens, or both concatenated. The backbone is
frozen (probe), LayerNorm-tuned or LoRA-tuned (``model.tuning``). An optional 3-class head scores
real / synthetic / semisynthetic as the newer benchmark does.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from detectors.data.dataset import MediaDataset
from detectors.image.data import build_image_dataset
from detectors.backbones import BackboneConfig
from detectors.errors import ConfigError
from detectors.base import Detector
from detectors.registry import register_detector
from detectors.tuning import TuningConfig
from export.standalone.heads import MLP, ImageNormalize

FEATURE_MODES = ("cls", "mean", "both")


@dataclass
class ImageDetectorConfig:
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    tuning: TuningConfig = field(default_factory=TuningConfig)
    features: str = "both"  # cls | mean | both
    head_hidden: list[int] = field(default_factory=lambda: [256])
    dropout: float = 0.1
    num_classes: int = 2
    image_size: int = 224  # the crop the detector trains on and the benchmark resize it exports
    allow_random_backbone: bool = False  # built-in demo only


@register_detector
class DinoImageDetector(Detector):
    arch = "dinov3_image"
    modality = "image"
    config_class = ImageDetectorConfig

    def __init__(self, config: ImageDetectorConfig) -> None:
        super().__init__(config)
        if config.features not in FEATURE_MODES:
            raise ConfigError(None, "model.features", f"must be one of {FEATURE_MODES}, got {config.features!r}")
        self.attach_backbone(config.backbone, config.tuning)
        self.backbone.check_input_size(config.image_size, "model.image_size")
        self.normalize = ImageNormalize(self.backbone.info.mean, self.backbone.info.std)
        width = self.backbone.embed_dim * (2 if config.features == "both" else 1)
        self.head_dropout = torch.nn.Dropout(config.dropout)
        self.head = MLP([width, *config.head_hidden, config.num_classes], activation="gelu")

    def pool(self, tokens: torch.Tensor) -> torch.Tensor:
        cls = self.backbone.cls_token(tokens)
        if self.config.features == "cls":
            return cls
        mean = self.backbone.patch_tokens(tokens).mean(dim=1)
        return mean if self.config.features == "mean" else torch.cat([cls, mean], dim=-1)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.backbone(self.normalize(x)))

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(self.head_dropout(features))

    def make_dataset(self, items: list, stage: str, data: dict) -> "MediaDataset":
        return build_image_dataset(items, stage, data, self.config.image_size, self.num_classes)

    def example_input(self, batch_size: int = 2) -> torch.Tensor:
        size = self.config.image_size
        return torch.randint(0, 256, (batch_size, 3, size, size), dtype=torch.uint8)

    def preprocessing(self) -> dict[str, Any]:
        return {"resize": [self.config.image_size, self.config.image_size]}

    def export_spec(self):
        from export.convert import convert_backbone
        from export.spec import ExportSpec

        size = self.config.image_size
        vit_kwargs, vit_state = convert_backbone(self.backbone.model, (size, size))
        state = {**{f"vit.{k}": v for k, v in vit_state.items()},
                 **{f"head.{k}": v for k, v in self.head.state_dict().items()},
                 **self.calibration_export_state()}
        return ExportSpec(
            modality="image",
            model_class="ImageDetectorStandalone",
            sources=["vit", "heads", "image"],
            init_kwargs={"vit": vit_kwargs, "features": self.config.features,
                         "head_dims": list(self.config.head_hidden), "head_activation": "gelu",
                         "num_classes": self.num_classes, "mean": list(self.backbone.info.mean),
                         "std": list(self.backbone.info.std)},
            state_dict=state,
            preprocessing=self.preprocessing(),
            num_classes=self.num_classes,
            name=f"{self.arch}-{self.config.tuning.mode}",
        )
