"""Exported ReStraV: frames -> frozen ViT -> trajectory geometry (21 features) -> z-score -> MLP ->
LogitAffine.

State-dict keys: ``vit.*`` (see ``vit.py``), ``feature_mean`` / ``feature_std`` [21] (training-set
statistics; divisor ``std + 1e-8``), ``head.layers.{i}.*`` (``MLP``), ``calibration.scale`` /
``calibration.bias`` (``LogitAffine``).
"""

from typing import List, Sequence

import torch
import torch.nn.functional as F

from .heads import Float32Buffers, MLP, LogitAffine
from .vit import VisionTransformer


def restrav_trajectory_features(z: torch.Tensor) -> torch.Tensor:
    """21 features of trajectories ``z [B, T, D]`` (T >= 8): d_1..d_7, theta_1..theta_6 (degrees), then
    mean, min, max, population variance of all d and of all theta. A zero step has cosine 0."""
    steps = z[:, 1:] - z[:, :-1]
    distances = torch.linalg.vector_norm(steps, dim=-1)
    cosine = F.cosine_similarity(steps[:, :-1], steps[:, 1:], dim=-1, eps=1e-8)
    angles = torch.rad2deg(torch.acos(cosine.clamp(-1.0, 1.0)))
    parts = [distances[:, :7], angles[:, :6]]
    for values in (distances, angles):
        parts.append(torch.stack([values.mean(-1), values.amin(-1), values.amax(-1),
                                  values.var(-1, unbiased=False)], dim=-1))
    return torch.cat(parts, dim=-1)


class ReStraVStandalone(Float32Buffers):
    """``[B, T, 3, H, W]`` uint8 (or float 0..255) video -> calibrated logits ``[B, num_classes]`` (float32).

    Frames are resized to ``image_size`` (bicubic, antialias) when they arrive at another size and
    scaled to [0, 1] (then ImageNet-normalised only if ``imagenet_normalize``). ``embedding``:
    ``"tokens"`` (final-norm CLS + patch tokens, flattened) or ``"cls"``.
    """

    float32_buffers = ("feature_mean", "feature_std", "pixel_mean", "pixel_std")

    def __init__(
        self,
        vit: dict,
        embedding: str = "tokens",
        image_size: int = 224,
        imagenet_normalize: bool = False,
        mean: Sequence[float] = (0.485, 0.456, 0.406),
        std: Sequence[float] = (0.229, 0.224, 0.225),
        hidden: Sequence[int] = (64, 32),
        num_classes: int = 2,
    ):
        super().__init__()
        if embedding not in ("tokens", "cls"):
            raise ValueError(f"embedding must be 'tokens' or 'cls', got {embedding!r}")
        self.embedding = embedding
        self.image_size = int(image_size)
        self.imagenet_normalize = bool(imagenet_normalize)
        self.register_buffer("pixel_mean", torch.tensor([float(m) for m in mean]).view(-1, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor([float(s) for s in std]).view(-1, 1, 1), persistent=False)
        self.vit = VisionTransformer(**vit)
        self.register_buffer("feature_mean", torch.zeros(21))
        self.register_buffer("feature_std", torch.ones(21))
        dims: List[int] = [21] + [int(h) for h in hidden] + [int(num_classes)]
        self.head = MLP(dims, activation="relu")
        self.calibration = LogitAffine(num_classes)

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        batch, frames = video.shape[0], video.shape[1]
        x = video.flatten(0, 1).to(torch.float32) / 255.0
        if x.shape[-2] != self.image_size or x.shape[-1] != self.image_size:
            x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bicubic",
                              align_corners=False, antialias=True)
        if self.imagenet_normalize:
            x = (x - self.pixel_mean.float()) / self.pixel_std.float()
        tokens = self.vit(x.to(self.vit.patch_embed.weight.dtype)).float()
        if self.embedding == "cls":
            z = tokens[:, 0]
        else:
            z = torch.cat([tokens[:, :1], tokens[:, self.vit.num_prefix_tokens :]], dim=1).flatten(1)
        features = restrav_trajectory_features(z.reshape(batch, frames, -1))
        features = (features - self.feature_mean.float()) / (self.feature_std.float() + 1e-8)
        logits = self.head(features.to(self.head.layers[0].weight.dtype))
        return self.calibration(logits)
