"""GenD video detector (WACV 2026): a LayerNorm-tuned DINO ViT per frame, L2-normalised CLS features.

- Backbone frozen except its LayerNorm affine parameters (``model.tuning.mode: layernorm``; DINOv3
  ``norm1``, ``norm2``, final ``norm``; HF DINOv2 ``norm1``, ``norm2``, ``layernorm``); LoRA is the
  alternative (``mode: lora``).
- Feature: the CLS token of every frame. Head ``"mean"`` (GenD's own video rule): ``LinearNorm``
  (L2-normalise -> Linear) per frame, video probability = mean of the frame probabilities, output as
  the logits ``log(p_mean)`` so calibration and the benchmark's softmax see exactly that mean.
  Head ``"temporal"`` (the benchmark family's "GenD-style" model, seed 003): per-frame CLS ->
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

from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torchvision import tv_tensors
from torchvision.transforms import v2

from detectors.backbones import BackboneConfig
from detectors.base import Detector
from detectors.data.catalog import MediaItem
from detectors.data.dataset import MediaDataset
from detectors.registry import register_detector
from detectors.tuning import TuningConfig
from detectors.errors import ConfigError
from detectors.video.sampling import FrameSampler, pad_indices, random_indices
from detectors.video.data import ClipLoader, square_clip_preprocessing
from export.standalone.gend import TemporalHead, mean_probability_logits
from export.standalone.heads import ImageNormalize, LinearNorm

HEADS = ("mean", "temporal")
DEFAULT_BACKBONE = "facebook/dinov3-vitl16-pretrain-lvd1689m"


@dataclass
class TemporalHeadConfig:
    width: int = 512
    layers: int = 2
    heads: int = 8
    hidden: list[int] = field(default_factory=lambda: [256])  # width -> 256 -> num_classes
    dropout: float = 0.1


@dataclass
class GenDConfig:
    backbone: BackboneConfig = field(default_factory=lambda: BackboneConfig(name=DEFAULT_BACKBONE))
    tuning: TuningConfig = field(default_factory=lambda: TuningConfig(mode="layernorm"))
    head: str = "mean"  # mean (GenD: mean of frame probabilities) | temporal (seed 003)
    num_frames: int = 16  # frames per video at evaluation/export (and per temporal-head training clip)
    frame_rate: float | None = 8.0  # the benchmark's frame_rate (None: consecutive frames)
    image_size: int = 224
    uniformity_weight: float = 0.5
    alignment_weight: float = 0.1
    temporal: TemporalHeadConfig = field(default_factory=TemporalHeadConfig)
    num_classes: int = 2
    allow_random_backbone: bool = False  # built-in demo only


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
        return pad_indices(grid[start:start + self.num_frames], self.num_frames)


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
    return v2.Compose([
        v2.RandomResizedCrop((size, size), scale=(0.6, 1.0), antialias=True),
        v2.RandomHorizontalFlip(0.5),
        v2.RandomAffine(degrees=10 * strength, translate=(0.1 * strength, 0.1 * strength),
                        scale=(1 - 0.1 * strength, 1 + 0.1 * strength)),
        v2.RandomApply([v2.GaussianBlur(5, sigma=(0.1, 1.5))], p=0.1),
        v2.ColorJitter(brightness=0.1 * strength, contrast=0.1 * strength),
        v2.RandomApply([v2.JPEG((40, 100))], p=jpeg_p),
    ])


def _augment_clip(frames: torch.Tensor, transform: v2.Compose) -> torch.Tensor:
    return transform(tv_tensors.Video(frames)).as_subclass(torch.Tensor)


def build_gend_dataset(items: Sequence[MediaItem], stage: str, data: dict[str, Any], config: GenDConfig) -> MediaDataset:
    """Clips ``uint8 [T, 3, S, S]``.

    Training: ``data.train_frames`` random frames (mean head) or a randomly shifted benchmark-rule
    clip of ``num_frames`` (temporal head), decoded at full resolution and augmented once per clip.
    Evaluation: the benchmark's frames and resize (centre crop to aspect, bilinear), exactly what the
    exported model receives, so the calibrator is fitted on the exported model's inputs.
    """
    ignored = sorted(key for key in ("sampling", "train_sampling", "window_sec") if data.get(key) not in (None, "benchmark"))
    if ignored:  # silently training on other frames than asked would be worse than refusing
        raise ConfigError(None, f"data.{ignored[0]}", "GenD samples its own frames (training: random frames or "
                          "a shifted benchmark clip; evaluation: the benchmark's rule); remove "
                          + ", ".join(f"data.{key}" for key in ignored) + " (--sampling/--window-sec are ReStraV's)")
    size = config.image_size
    target = "multiclass" if config.num_classes == 3 else "binary"
    # decoded evaluation clips are cached under --cache-dir (data.cache_dir) or data.frame_cache
    cache_root = data.get("frame_cache") or (str(Path(data["cache_dir"]) / "frames") if data.get("cache_dir") else None)
    if stage == "train":
        if config.head == "mean":
            sampler: Any = RandomFrames(int(data.get("train_frames", 4)))
        else:
            sampler = ShiftedBenchmarkSampler(config.num_frames, config.frame_rate)
        transform = None
        if data.get("augment", True):
            transform = partial(_augment_clip, transform=gend_train_transform(
                size, jpeg_p=float(data.get("jpeg_p", 0.5)), strength=float(data.get("augment_strength", 1.0))))
            load = ClipLoader(sampler, None)
        else:
            load = ClipLoader(sampler, (size, size))
        return MediaDataset(items, load=load, transform=transform, target=target)
    sampler = FrameSampler("benchmark", config.num_frames, config.frame_rate)
    # the benchmark's decode, crop and resize (video.data.load_clip): calibration sees what the export gets
    load = ClipLoader(sampler, (size, size), cache_dir=cache_root)
    return MediaDataset(items, load=load, target=target)


# --------------------------------------------------------------------------- detector
@register_detector
class GenDDetector(Detector):
    arch = "gend"
    modality = "video"
    config_class = GenDConfig

    def __init__(self, config: GenDConfig) -> None:
        super().__init__(config)
        if config.head not in HEADS:
            raise ValueError(f"model.head must be one of {HEADS}, got {config.head!r}")
        # num_frames / frame_rate checked once here: the training samplers would fail per video
        FrameSampler("benchmark", config.num_frames, config.frame_rate)
        self.attach_backbone(config.backbone, config.tuning)
        self.backbone.check_input_size(config.image_size, "model.image_size")
        self.normalize = ImageNormalize(self.backbone.info.mean, self.backbone.info.std)
        dim = self.backbone.embed_dim
        if config.head == "mean":
            self.head = LinearNorm(dim, config.num_classes)
        else:
            t = config.temporal
            self.head = TemporalHead(dim, config.num_classes, width=t.width, layers=t.layers, heads=t.heads,
                                     hidden=t.hidden, max_frames=config.num_frames, dropout=t.dropout)

    # ------------------------------------------------------------------ forward
    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, T, 3, H, W]`` clips -> per-frame CLS features ``[B, T, D]``."""
        batch, frames = x.shape[:2]
        tokens = self.backbone(self.normalize(x.flatten(0, 1)))
        return self.backbone.cls_token(tokens).reshape(batch, frames, -1)

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        """Video logits ``[B, C]`` from ``[B, T, D]`` frame features."""
        if self.config.head == "mean":
            return mean_probability_logits(self.head(features))
        return self.head(features)

    def forward_batch(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """Frame-level training for the mean head: one logit row per frame (see :meth:`targets`)."""
        if not (self.training and self.config.head == "mean" and "x" in batch):
            return super().forward_batch(batch)
        features = self.forward_features(batch["x"]).flatten(0, 1)
        return features, self.head(features)

    def targets(self, batch: dict[str, Any], logits: torch.Tensor) -> torch.Tensor:
        """Video labels, repeated for every frame when the logits are per frame."""
        target = super().targets(batch, logits)
        if logits.shape[0] != target.shape[0]:
            target = target.repeat_interleave(logits.shape[0] // target.shape[0])
        return target

    def training_losses(self, features: torch.Tensor, logits: torch.Tensor, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """``0.5 * uniformity + 0.1 * alignment`` on the L2-normalised per-frame features (float32)."""
        z = F.normalize(features.float().reshape(-1, features.shape[-1]), dim=-1)
        labels = batch["class_index"] if self.num_classes == 3 else batch["label"]
        if labels.numel() != z.shape[0]:  # video labels, frame features
            labels = labels.repeat_interleave(z.shape[0] // labels.numel())
        losses = {}
        if self.config.uniformity_weight:
            losses["uniformity"] = self.config.uniformity_weight * uniformity_loss(z)
        if self.config.alignment_weight:
            losses["alignment"] = self.config.alignment_weight * alignment_loss(z, labels)
        return losses

    # ------------------------------------------------------------------ data / export
    def make_dataset(self, items: list, stage: str, data: dict) -> MediaDataset:
        return build_gend_dataset(items, stage, data, self.config)

    def example_input(self, batch_size: int = 2) -> torch.Tensor:
        size = self.config.image_size
        return torch.randint(0, 256, (batch_size, self.config.num_frames, 3, size, size), dtype=torch.uint8)

    def preprocessing(self) -> dict[str, Any]:
        """The exported ``preprocessing`` section (what the benchmark feeds; ``detect --run`` reads it
        without converting the backbone)."""
        return square_clip_preprocessing(self.config.image_size, self.config.num_frames, self.config.frame_rate)

    def export_spec(self):
        from export.convert import convert_backbone
        from export.spec import ExportSpec

        size = self.config.image_size
        vit_kwargs, vit_state = convert_backbone(self.backbone.model, (size, size))
        state = {**{f"vit.{k}": v for k, v in vit_state.items()},
                 **{f"head.{k}": v.detach().float().contiguous() for k, v in self.head.state_dict().items()},
                 **self.calibration_export_state()}
        init_kwargs: dict[str, Any] = {
            "vit": vit_kwargs, "head": self.config.head, "num_classes": self.num_classes,
            "mean": list(self.backbone.info.mean), "std": list(self.backbone.info.std)}
        if self.config.head == "temporal":
            t = self.config.temporal
            init_kwargs["temporal"] = {"width": t.width, "layers": t.layers, "heads": t.heads,
                                       "hidden": list(t.hidden), "max_frames": self.config.num_frames,
                                       "dropout": t.dropout}
        return ExportSpec(
            modality="video",
            model_class="GenDStandalone",
            sources=["vit", "heads", "gend"],
            init_kwargs=init_kwargs,
            state_dict=state,
            preprocessing=self.preprocessing(),
            num_classes=self.num_classes,
            name=f"{self.arch}-{self.config.head}-{self.config.tuning.mode}",
        )
