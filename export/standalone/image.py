"""Exported image detector: normalise -> ViT -> CLS / mean patch token -> MLP head -> LogitAffine.

State-dict keys: ``vit.*`` (see ``vit.py``), ``head.layers.{i}.*`` (``MLP``), ``calibration.scale``
and ``calibration.bias`` (``LogitAffine``).
"""

from typing import List, Sequence

import torch
import torch.nn as nn

from .heads import MLP, ImageNormalize, LogitAffine
from .vit import VisionTransformer


class ImageDetectorStandalone(nn.Module):
    """``[B, 3, H, W]`` uint8 (or float 0..255) images -> calibrated logits ``[B, num_classes]`` (float32).

    ``features``: ``"cls"`` (CLS token), ``"mean"`` (mean of the patch tokens, which start after the
    CLS and register tokens) or ``"both"`` (their concatenation, CLS first). ``head_dims`` are the
    hidden sizes of the MLP head (``[]`` = one Linear layer).
    """

    def __init__(
        self,
        vit: dict,
        features: str = "cls",
        head_dims: Sequence[int] = (),
        num_classes: int = 2,
        mean: Sequence[float] = (0.485, 0.456, 0.406),
        std: Sequence[float] = (0.229, 0.224, 0.225),
        head_activation: str = "relu",
    ):
        super().__init__()
        if features not in ("cls", "mean", "both"):
            raise ValueError(f"features must be 'cls', 'mean' or 'both', got {features!r}")
        self.features = features
        self.normalize = ImageNormalize(mean, std)
        self.vit = VisionTransformer(**vit)
        width = self.vit.embed_dim * (2 if features == "both" else 1)
        dims: List[int] = [width] + [int(d) for d in head_dims] + [int(num_classes)]
        self.head = MLP(dims, activation=head_activation)
        self.calibration = LogitAffine(num_classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.normalize(images).to(self.vit.patch_embed.weight.dtype)
        tokens = self.vit(x)
        cls = tokens[:, 0]
        if self.features == "cls":
            pooled = cls
        else:
            patches = tokens[:, self.vit.num_prefix_tokens :].mean(dim=1)
            pooled = patches if self.features == "mean" else torch.cat([cls, patches], dim=-1)
        return self.calibration(self.head(pooled))
