"""GenD video detector (Yermakov et al., WACV 2026, "Deepfake Detection that Generalizes Across
Benchmarks"; https://github.com/yermandy/GenD): a LayerNorm-tuned DINO ViT per frame,
L2-normalised CLS features.

- Backbone frozen except its LayerNorm affine parameters (``model.tuning.mode: layernorm``; DINOv3
  ``norm1``, ``norm2``, final ``norm``; HF DINOv2 ``norm1``, ``norm2``, ``layernorm``); LoRA is the
  alternative (``mode: lora``).
- Feature: the CLS token of every frame. Head ``"mean"`` (GenD's own video rule): ``LinearNorm``
  (L2-normalise -> Linear) per frame, video probability = mean of the frame probabilities, output as
  the logits ``log(p_mean)`` so calibration and the benchmark's softmax see exactly that mean.
  Head ``"temporal"`` (a "GenD-style" video model with a temporal transformer): per-frame CLS ->
  2-layer transformer (width 512, 8 heads) -> mean over frames -> 512 -> 256 -> 2.
- Loss: classification (the shared module's criterion) + ``0.5 * uniformity + 0.1 * alignment`` on the
  L2-normalised per-frame features (:func:`uniformity_loss`, :func:`alignment_loss`).
- Training is frame-level for the mean head: a sample is a few random frames of a video, and the
  classification loss applies to every frame with the video's label. Evaluation, calibration and
  export are video-level on the benchmark's frames (``num_frames`` at ``frame_rate``).

Default backbone: DINOv3 ViT-L/16 at 224 px (GenD's DINOv3 setting). The benchmark-family variant,
DINOv2 ViT-L/14 at 518 px, is ``model.backbone.name: facebook/dinov2-large`` with
``model.image_size: 518`` (about 5x the compute per frame).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Literal, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torchvision import tv_tensors
from torchvision.transforms import v2

from detectors.backbones import IMAGENET_MEAN, IMAGENET_STD, BackboneConfig
from detectors.base import Detector
from detectors.config import setting
from detectors.data.dataset import SampleRecipe
from detectors.networks.layers import MLP, DetectorNetwork, ImageNormalize, LinearNorm, parameter_dtype
from detectors.networks.vit import VisionTransformer
from detectors.registry import register_detector
from detectors.settings import DataConfig
from detectors.tuning import TuningConfig
from detectors.video.data import ClipLoader, square_clip_preprocessing
from detectors.video.sampling import FrameSampler, pad_indices, random_indices

DEFAULT_BACKBONE = "facebook/dinov3-vitl16-pretrain-lvd1689m"


@dataclass
class TemporalHeadConfig:
    width: int = setting(512, help="transformer width", ge=1)
    layers: int = setting(2, help="transformer layers", ge=1)
    heads: int = setting(8, help="attention heads (must divide width)", ge=1)
    hidden: list[int] = setting([256], help="MLP hidden sizes after the mean over frames", ge=1)
    dropout: float = setting(0.1, help="transformer dropout", ge=0, lt=1)


@dataclass
class GenDConfig:
    backbone: BackboneConfig = setting(
        BackboneConfig(name=DEFAULT_BACKBONE),
        help="the ViT (GenD's DINOv3 ViT-L/16; or facebook/dinov2-large at 518 px)",
    )
    tuning: TuningConfig = setting(
        TuningConfig(mode="layernorm"), help="GenD: LayerNorm affine only; lora is the alternative"
    )
    head: Literal["mean", "temporal"] = setting(
        "mean", help="mean of frame probabilities (GenD) or temporal transformer"
    )
    num_frames: int = setting(
        16, help="frames per video at evaluation/export (and per temporal-head training clip)", ge=1
    )
    frame_rate: float | None = setting(8.0, help="the benchmark's frame_rate (null: consecutive frames)", gt=0)
    image_size: int = setting(224, help="frame size fed to the ViT", ge=1)
    uniformity_weight: float = setting(0.5, help="weight of the uniformity loss", ge=0)
    alignment_weight: float = setting(0.1, help="weight of the alignment loss", ge=0)
    temporal: TemporalHeadConfig = setting(TemporalHeadConfig(), help="the temporal head (head: temporal)")
    num_classes: Literal[2, 3] = setting(2, help="2: real/fake; 3: real/synthetic/semisynthetic")
    allow_random_backbone: bool = setting(False, help="built-in demo only: random backbone when the hub is unreachable")


@dataclass
class GenDDataConfig(DataConfig):
    train_frames: int = setting(4, help="random frames per training clip (mean head; the loss applies per frame)", ge=1)
    augment: bool = setting(True, help="GenD's augmentations, one draw per clip")
    jpeg_p: float = setting(0.5, help="probability of the JPEG augmentation", ge=0, le=1)
    augment_strength: float = setting(1.0, help="scale of the affine and colour augmentations", ge=0)
    frame_cache: str | None = setting(None, help="directory caching decoded evaluation frames (zstd npy)")
    cache_dir: str | None = setting(
        None, help="--cache-dir: evaluation frames under <cache_dir>/frames (frame_cache wins)"
    )


# --------------------------------------------------------------------------- losses
def uniformity_loss(z: torch.Tensor) -> torch.Tensor:
    """``log mean_{i != j} exp(-2 ||z_i - z_j||^2)`` over the rows of ``z`` (Wang & Isola 2020)."""
    if z.shape[0] < 2:
        return z.new_zeros(())
    # pdist gives each unordered pair once; the mean over ordered pairs i != j is the same.
    return torch.pdist(z, p=2).pow(2).mul(-2.0).exp().mean().log()


def alignment_loss(z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean ``||z_i - z_j||^2`` over pairs ``i != j`` with the same label (0 when there are none)."""
    n = z.shape[0]
    same = (labels[:, None] == labels[None, :]) & torch.ones(n, n, dtype=torch.bool, device=z.device).triu(1)
    if not bool(same.any()):
        return z.new_zeros(())
    squared = (z[:, None, :] - z[None, :, :]).pow(2).sum(-1)
    return squared[same].mean()


# --------------------------------------------------------------------------- network
def mean_probability_logits(frame_logits: torch.Tensor) -> torch.Tensor:
    """``[B, T, C]`` frame logits -> ``[B, C]`` logits ``log(mean_t softmax_t)`` (softmax = mean probability)."""
    log_probs = F.log_softmax(frame_logits.float(), dim=-1)
    return torch.logsumexp(log_probs, dim=1) - math.log(frame_logits.shape[1])


class TemporalHead(nn.Module):
    """Per-frame features ``[B, T, D]`` -> logits ``[B, C]``.

    Keys: ``proj.*`` (D -> width), ``pos_embed`` ``[1, max_frames, width]``, ``encoder.layers.{i}.*``
    (``nn.TransformerEncoder``), ``mlp.layers.{i}.*`` (width -> hidden... -> C, ReLU between).
    """

    def __init__(
        self,
        dim: int,
        num_classes: int = 2,
        width: int = 512,
        layers: int = 2,
        heads: int = 8,
        hidden: Sequence[int] = (256,),
        max_frames: int = 16,
        dropout: float = 0.1,
    ):
        super().__init__()
        self.proj = nn.Linear(dim, width)
        self.pos_embed = nn.Parameter(torch.zeros(1, max_frames, width))
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        layer = nn.TransformerEncoderLayer(
            width,
            heads,
            dim_feedforward=4 * width,
            dropout=dropout,
            activation="gelu",
            batch_first=True,
            norm_first=True,
        )
        # The nested-tensor fast path only applies to padded batches; clips are never padded here.
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.mlp = MLP([width] + [int(h) for h in hidden] + [int(num_classes)], activation="relu")

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        frames = features.shape[1]
        if frames > self.pos_embed.shape[1]:
            raise ValueError(
                f"clip has {frames} frames; the temporal head was built for at most {self.pos_embed.shape[1]}"
            )
        x = self.proj(features) + self.pos_embed[:, :frames].to(features.dtype)
        x = self.encoder(x)
        return self.mlp(x.mean(dim=1))


class GenDNetwork(DetectorNetwork):
    """``[B, T, 3, H, W]`` uint8 (or float 0..255) clips -> per-frame CLS features ``[B, T, D]`` ->
    frame-mean (``LinearNorm`` per frame, mean of the frame probabilities as ``log`` probabilities)
    or temporal head -> logits ``[B, num_classes]``."""

    def __init__(
        self,
        backbone: nn.Module | dict,
        head: str = "mean",
        num_classes: int = 2,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        temporal: dict | None = None,
    ):
        super().__init__()
        if head not in ("mean", "temporal"):
            raise ValueError(f"head must be 'mean' or 'temporal', got {head!r}")
        self.head_type = head
        self.normalize = ImageNormalize(mean, std)
        self.backbone = backbone if isinstance(backbone, nn.Module) else VisionTransformer(**backbone)
        if head == "mean":
            self.head = LinearNorm(self.backbone.embed_dim, num_classes)
        else:
            self.head = TemporalHead(self.backbone.embed_dim, num_classes, **(temporal or {}))

    def forward_features(self, video: torch.Tensor) -> torch.Tensor:
        batch, frames = video.shape[0], video.shape[1]
        x = self.normalize(video.flatten(0, 1)).to(parameter_dtype(self.backbone))
        return self.backbone(x)[:, 0].reshape(batch, frames, -1)

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        if self.head_type == "mean":
            return mean_probability_logits(self.head(features))
        return self.head(features)


# --------------------------------------------------------------------------- data
@dataclass(frozen=True)
class ShiftedBenchmarkSampler:
    """The benchmark's frame rule (``num_frames`` every ``round(fps / frame_rate)`` frames) started at a
    random offset: temporally coherent training clips for the temporal head, which still see every
    part of the video. Duck-types :class:`FrameSampler` for ``read_video_frames``."""

    num_frames: int
    frame_rate: float | None = None

    def indices(self, total: int, fps: float | None, generator: torch.Generator | None = None) -> list[int]:
        step = 1
        if self.frame_rate is not None:
            step = max(1, round((fps if fps and fps > 0 else 30.0) / self.frame_rate))
        grid = list(range(0, total, step))
        start = int(torch.randint(max(1, len(grid) - self.num_frames + 1), (1,), generator=generator))
        return pad_indices(grid[start : start + self.num_frames], self.num_frames)


@dataclass(frozen=True)
class RandomFrames:
    """``num_frames`` random distinct frames (GenD's frame-level training)."""

    num_frames: int

    def indices(self, total: int, fps: float | None, generator: torch.Generator | None = None) -> list[int]:
        return random_indices(total, self.num_frames, generator)


def gend_train_transform(size: int, jpeg_p: float = 0.5, strength: float = 1.0) -> v2.Compose:
    """GenD's augmentations, drawn once per clip (a ``tv_tensors.Video`` is one input): random resized
    crop, hflip 0.5, affine (10 deg, 0.1 translate, 0.9-1.1 scale), blur p 0.1, brightness/contrast
    0.1, JPEG 40-100."""
    return v2.Compose(
        [
            v2.RandomResizedCrop((size, size), scale=(0.6, 1.0), antialias=True),
            v2.RandomHorizontalFlip(0.5),
            v2.RandomAffine(
                degrees=10 * strength,
                translate=(0.1 * strength, 0.1 * strength),
                scale=(1 - 0.1 * strength, 1 + 0.1 * strength),
            ),
            v2.RandomApply([v2.GaussianBlur(5, sigma=(0.1, 1.5))], p=0.1),
            v2.ColorJitter(brightness=0.1 * strength, contrast=0.1 * strength),
            v2.RandomApply([v2.JPEG((40, 100))], p=jpeg_p),
        ]
    )


def _augment_clip(frames: torch.Tensor, transform: v2.Compose) -> torch.Tensor:
    return transform(tv_tensors.Video(frames)).as_subclass(torch.Tensor)


def gend_recipe(stage: str, data: GenDDataConfig, config: GenDConfig) -> SampleRecipe:
    """Clips ``uint8 [T, 3, S, S]``.

    Training: ``data.train_frames`` random frames (mean head) or a randomly shifted benchmark-rule
    clip of ``num_frames`` (temporal head), decoded at full resolution and augmented once per clip.
    Evaluation: the benchmark's frames and resize (centre crop to aspect, bilinear), exactly what the
    exported model receives, so the calibrator is fitted on the exported model's inputs.
    """
    size = config.image_size
    if stage == "train":
        if config.head == "mean":
            sampler: Any = RandomFrames(data.train_frames)
        else:
            sampler = ShiftedBenchmarkSampler(config.num_frames, config.frame_rate)
        if data.augment:
            transform = partial(
                _augment_clip, transform=gend_train_transform(size, jpeg_p=data.jpeg_p, strength=data.augment_strength)
            )
            return SampleRecipe(load=ClipLoader(sampler, None), transform=transform)
        return SampleRecipe(load=ClipLoader(sampler, (size, size)))
    # decoded evaluation clips are cached under --cache-dir (data.cache_dir) or data.frame_cache
    cache_root = data.frame_cache or (str(Path(data.cache_dir) / "frames") if data.cache_dir else None)
    sampler = FrameSampler("benchmark", config.num_frames, config.frame_rate)
    # the benchmark's decode, crop and resize (video.data.load_clip): calibration sees what the export gets
    return SampleRecipe(load=ClipLoader(sampler, (size, size), cache_dir=cache_root))


# --------------------------------------------------------------------------- detector
@register_detector
class GenDDetector(Detector):
    arch = "gend"
    modality = "video"
    config_class = GenDConfig
    data_config_class = GenDDataConfig

    def __init__(self, config: GenDConfig) -> None:
        super().__init__(config)
        # num_frames / frame_rate checked once here: the training samplers would fail per video
        FrameSampler("benchmark", config.num_frames, config.frame_rate)
        backbone = self.build_backbone(config.backbone, config.tuning)
        backbone.check_input_size(config.image_size, "model.image_size")
        temporal = None
        if config.head == "temporal":
            t = config.temporal
            temporal = {
                "width": t.width,
                "layers": t.layers,
                "heads": t.heads,
                "hidden": list(t.hidden),
                "max_frames": config.num_frames,
                "dropout": t.dropout,
            }
        self.net = self.build_network(
            GenDNetwork,
            backbone=backbone,
            head=config.head,
            mean=list(backbone.info.mean),
            std=list(backbone.info.std),
            temporal=temporal,
        )

    # ------------------------------------------------------------------ training
    def forward_batch(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """Frame-level training for the mean head: one logit row per frame (see :meth:`targets`)."""
        if not (self.training and self.config.head == "mean" and "x" in batch):
            return super().forward_batch(batch)
        features = self.forward_features(batch["x"]).flatten(0, 1)
        return features, self.net.head(features)

    def targets(self, batch: dict[str, Any], logits: torch.Tensor | None = None) -> torch.Tensor:
        """Video labels, repeated for every frame when the logits are per frame."""
        target = super().targets(batch)
        if logits is not None and logits.shape[0] != target.shape[0]:
            target = target.repeat_interleave(logits.shape[0] // target.shape[0])
        return target

    def training_losses(
        self, features: torch.Tensor, logits: torch.Tensor, batch: dict[str, Any]
    ) -> dict[str, torch.Tensor]:
        """``0.5 * uniformity + 0.1 * alignment`` on the L2-normalised per-frame features (float32)."""
        z = F.normalize(features.float().reshape(-1, features.shape[-1]), dim=-1)
        labels = super().targets(batch)
        if labels.numel() != z.shape[0]:  # video labels, frame features
            labels = labels.repeat_interleave(z.shape[0] // labels.numel())
        losses = {}
        if self.config.uniformity_weight:
            losses["uniformity"] = self.config.uniformity_weight * uniformity_loss(z)
        if self.config.alignment_weight:
            losses["alignment"] = self.config.alignment_weight * alignment_loss(z, labels)
        return losses

    # ------------------------------------------------------------------ data / export
    def data_recipe(self, stage: str, data: GenDDataConfig) -> SampleRecipe:
        return gend_recipe(stage, data, self.config)

    def preprocessing(self) -> dict[str, Any]:
        return square_clip_preprocessing(self.config.image_size, self.config.num_frames, self.config.frame_rate)

    def export_name(self) -> str:
        return f"{self.arch}-{self.config.head}-{self.config.tuning.mode}"
