"""Exported GenD video detector: per-frame ViT CLS -> frame-mean or temporal head -> LogitAffine.

Input ``[B, T, 3, H, W]`` uint8 (or float 0..255) clips; output calibrated logits ``[B, C]`` float32.

Heads (``head``):
- ``"mean"`` (GenD, official video rule): ``LinearNorm`` per frame; the video probability is the mean
  of the frame probabilities, returned as the logits ``log(mean_t softmax(frame_logits_t))`` whose
  softmax is exactly that mean probability.
- ``"temporal"`` (benchmark-family GenD-style model): per-frame CLS -> Linear to ``width`` + learned
  position embedding -> ``layers`` x ``nn.TransformerEncoderLayer`` -> mean over frames -> MLP.

State-dict keys: ``vit.*`` (``vit.py``), ``head.*`` (``head.linear.*`` for ``LinearNorm``; for the
temporal head see :class:`TemporalHead`), ``calibration.scale`` / ``calibration.bias``.
The in-library detector (``detectors/video/gend.py``) uses these same head classes.
"""

import math
from typing import List, Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from .heads import MLP, ImageNormalize, LinearNorm, LogitAffine
from .vit import VisionTransformer


def mean_probability_logits(frame_logits: torch.Tensor) -> torch.Tensor:
    """``[B, T, C]`` frame logits -> ``[B, C]`` logits ``log(mean_t softmax_t)`` (softmax = mean probability)."""
    log_probs = F.log_softmax(frame_logits.float(), dim=-1)
    return torch.logsumexp(log_probs, dim=1) - math.log(frame_logits.shape[1])


class TemporalHead(nn.Module):
    """Per-frame features ``[B, T, D]`` -> logits ``[B, C]``.

    Keys: ``proj.*`` (D -> width), ``pos_embed`` ``[1, max_frames, width]``, ``encoder.layers.{i}.*``
    (``nn.TransformerEncoder``), ``mlp.layers.{i}.*`` (width -> hidden... -> C, ReLU between).
    """

    def __init__(self, dim: int, num_classes: int = 2, width: int = 512, layers: int = 2, heads: int = 8,
                 hidden: Sequence[int] = (256,), max_frames: int = 16, dropout: float = 0.1):
        super().__init__()
        self.proj = nn.Linear(dim, width)
        self.pos_embed = nn.Parameter(torch.zeros(1, max_frames, width))
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        layer = nn.TransformerEncoderLayer(width, heads, dim_feedforward=4 * width, dropout=dropout,
                                           activation="gelu", batch_first=True, norm_first=True)
        # The nested-tensor fast path only applies to padded batches; clips are never padded here.
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        dims: List[int] = [width] + [int(h) for h in hidden] + [int(num_classes)]
        self.mlp = MLP(dims, activation="relu")

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        frames = features.shape[1]
        if frames > self.pos_embed.shape[1]:
            raise ValueError(f"clip has {frames} frames; the temporal head was built for at most {self.pos_embed.shape[1]}")
        x = self.proj(features) + self.pos_embed[:, :frames].to(features.dtype)
        x = self.encoder(x)
        return self.mlp(x.mean(dim=1))


class GenDStandalone(nn.Module):
    """``[B, T, 3, H, W]`` clips -> calibrated logits ``[B, num_classes]`` (float32)."""

    def __init__(
        self,
        vit: dict,
        head: str = "mean",
        num_classes: int = 2,
        mean: Sequence[float] = (0.485, 0.456, 0.406),
        std: Sequence[float] = (0.229, 0.224, 0.225),
        temporal: Optional[dict] = None,
    ):
        super().__init__()
        if head not in ("mean", "temporal"):
            raise ValueError(f"head must be 'mean' or 'temporal', got {head!r}")
        self.head_type = head
        self.normalize = ImageNormalize(mean, std)
        self.vit = VisionTransformer(**vit)
        if head == "mean":
            self.head = LinearNorm(self.vit.embed_dim, num_classes)
        else:
            self.head = TemporalHead(self.vit.embed_dim, num_classes, **(temporal or {}))
        self.calibration = LogitAffine(num_classes)

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        batch, frames = video.shape[0], video.shape[1]
        x = self.normalize(video.flatten(0, 1)).to(self.vit.patch_embed.weight.dtype)
        cls = self.vit(x)[:, 0].reshape(batch, frames, -1)
        if self.head_type == "mean":
            logits = mean_probability_logits(self.head(cls))
        else:
            logits = self.head(cls)
        return self.calibration(logits)
