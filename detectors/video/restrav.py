"""ReStraV (Interno et al., NeurIPS 2025, "AI-Generated Video Detection via Perceptual Straightening";
https://github.com/ChristianInterno/ReStraV): how straight is a video's path through a frozen DINOv2's
embedding space?

Natural videos trace straighter, more evenly paced paths in a self-supervised encoder's embedding
space than generated ones. The network:

frames ``uint8 [B, T, 3, H, W]`` -> resize (bicubic, antialias) -> /255 (-> ImageNet normalisation,
off by default as in the official code) -> frozen ViT per frame -> per-frame embedding (``tokens``:
final-norm CLS + all patch tokens flattened, the official one; ``cls``: the CLS token) -> trajectory
``z_1..z_T`` -> 21 geometry features (:func:`trajectory_features`) -> z-score with statistics of
the TRAINING features (``feature_mean`` / ``feature_std``, stored with the model; divisor
``std + 1e-8``, population std) -> MLP 21 -> 64 -> ReLU -> 32 -> ReLU -> 2. Class 1 = fake (the
official code used 1 = real).

Training never runs the backbone twice: the data stage (:meth:`ReStraVDetector.data_recipe`)
computes each video's 21 features once with the frozen part of the network and caches them; the
LightningModule then trains only the head on feature vectors, and :meth:`ReStraVDetector.on_train_data`
sets the z-score statistics from the training features.

Frame sampling (our choice, documented in ``python -m detectors.config restrav``): the benchmark picks
the first ``num_frames`` frames at step ``round(fps / frame_rate)``, not the official centred window.
With ``num_frames`` 24 and ``frame_rate`` 12 the clip spans about 1.9 s at 24/25/60 fps but 1.5 s at
30 fps (``round(2.5)`` is 2), against the official 2 s window (spacing 2/23 s). Training and
calibration use this benchmark rule by default (``data.sampling: benchmark``), so the detector is
fitted on what it will be fed. ``data.sampling: window`` takes the official centred window's frames;
the resize stays the benchmark's (centre crop to aspect, bilinear) rather than the official bicubic
stretch, so that training inputs match the exported model's.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from detectors.backbones import IMAGENET_MEAN, IMAGENET_STD, BackboneConfig
from detectors.base import Detector
from detectors.config import setting
from detectors.data.dataset import SampleRecipe
from detectors.data.features import FeatureDataset, FeatureExtraction
from detectors.errors import ConfigError
from detectors.networks.layers import MLP, DetectorNetwork, parameter_dtype
from detectors.networks.vit import VisionTransformer
from detectors.registry import register_detector
from detectors.settings import DataConfig
from detectors.tuning import TuningConfig
from detectors.video.data import ClipLoader, square_clip_preprocessing
from detectors.video.sampling import FrameSampler, SamplingMode

NUM_FEATURES = 21
MIN_FRAMES = 8  # 7 distances need 8 frames; 6 angles need 7 steps, i.e. 8 frames as well
COSINE_EPS = 1e-8  # torch.nn.functional.cosine_similarity's default, used by the official code
STD_EPS = 1e-8
FEATURE_CACHE_VERSION = 1

FEATURE_NAMES: tuple[str, ...] = (
    *(f"d_{i}" for i in range(1, 8)),
    *(f"theta_{i}" for i in range(1, 7)),
    "d_mean",
    "d_min",
    "d_max",
    "d_var",
    "theta_mean",
    "theta_min",
    "theta_max",
    "theta_var",
)


def default_cache_dir() -> Path:
    return Path.home() / ".cache" / "forensic-adapters" / "restrav"


@dataclass
class ReStraVConfig:
    backbone: BackboneConfig = setting(
        BackboneConfig(name="facebook/dinov2-small"),
        help="the frozen ViT (hub id or local directory; the paper's: DINOv2 ViT-S/14)",
    )
    embedding: Literal["tokens", "cls"] = setting(
        "tokens", help="per-frame embedding: tokens (official: CLS + all patch tokens, flattened) or cls"
    )
    imagenet_normalize: bool = setting(False, help="ImageNet-normalise pixels (the official code feeds [0, 1])")
    num_frames: int = setting(24, help="frames per video (exported preprocessing.num_frames)", ge=MIN_FRAMES)
    frame_rate: float | None = setting(
        12.0,
        help="frames per second sampled, the benchmark's rule (24 frames at 12/s: "
        "1.5-1.9 s, fps-dependent; null: consecutive frames)",
        gt=0,
    )
    window_sec: float = setting(2.0, help="span of the official centred window (data.sampling: window)", gt=0)
    image_size: int = setting(224, help="frame size fed to the ViT", ge=1)
    hidden: list[int] = setting([64, 32], help="hidden sizes of the MLP on the 21 features", ge=1)
    num_classes: Literal[2, 3] = setting(2, help="2: real/fake; 3: real/synthetic/semisynthetic")
    allow_random_backbone: bool = setting(False, help="built-in demo only: random backbone when the hub is unreachable")


@dataclass
class ReStraVDataConfig(DataConfig):
    sampling: SamplingMode = setting(
        "benchmark", help="frame rule: benchmark (what the exported model is fed), window (official), uniform, random"
    )
    train_sampling: SamplingMode | None = setting(None, help="frame rule for training only (null: sampling)")
    cache_dir: str | None = setting(None, help="feature cache (null: ~/.cache/forensic-adapters/restrav)")
    feature_cache: bool = setting(True, help="cache per-video features (retraining the head takes seconds)")
    feature_batch_size: int = setting(8, help="videos per batch while extracting features", ge=1)
    decode_workers: int = setting(2, help="DataLoader workers decoding videos during extraction", ge=0)
    refit_feature_statistics: bool = setting(
        False, help="--init-from: recompute the z-score statistics on the new data"
    )


# --------------------------------------------------------------------------- the geometry
def trajectory_features(z: torch.Tensor) -> torch.Tensor:
    """The 21 ReStraV features of trajectories ``z [B, T, D]`` (T >= 8), as ``[B, 21]``.

    Steps ``D_t = z_{t+1} - z_t`` (T-1), distances ``d_t = ||D_t||``, curvature ``theta_t =
    degrees(arccos(clamp(cos(D_t, D_{t+1}), -1, 1)))`` (T-2), the cosine as
    ``torch.nn.functional.cosine_similarity`` computes it (eps 1e-8, as the official code does: a zero
    step gives cosine 0, i.e. 90 degrees). Features, in order: ``d_1..d_7``, ``theta_1..theta_6``,
    then mean, min, max and population variance of all ``d``, then the same of all ``theta``.
    """
    if z.dim() != 3:
        raise ValueError(f"expected embeddings [B, T, D], got shape {tuple(z.shape)}")
    if z.shape[1] < MIN_FRAMES:
        raise ValueError(
            f"trajectory_features needs at least {MIN_FRAMES} frames per video, got T={z.shape[1]}: the "
            "features include the first 7 step distances and the first 6 turning angles"
        )
    if not z.is_floating_point():
        z = z.float()
    steps = z[:, 1:] - z[:, :-1]
    distances = torch.linalg.vector_norm(steps, dim=-1)
    cosine = F.cosine_similarity(steps[:, :-1], steps[:, 1:], dim=-1, eps=COSINE_EPS)
    angles = torch.rad2deg(torch.acos(cosine.clamp(-1.0, 1.0)))
    parts = [distances[:, :7], angles[:, :6]]
    for values in (distances, angles):
        parts.append(
            torch.stack([values.mean(-1), values.amin(-1), values.amax(-1), values.var(-1, unbiased=False)], dim=-1)
        )
    return torch.cat(parts, dim=-1)


class ReStraVNetwork(DetectorNetwork):
    """``[B, T, 3, H, W]`` uint8 (or float 0..255) video -> 21 trajectory features -> z-score -> MLP ->
    logits ``[B, num_classes]``.

    ``backbone``: the frozen ViT (a module returning final-norm tokens, or the arguments of
    :class:`VisionTransformer`). Frames arriving at another size than ``image_size`` are resized
    (bicubic, antialias).
    """

    float32_buffers = ("feature_mean", "feature_std", "pixel_mean", "pixel_std")

    def __init__(
        self,
        backbone: nn.Module | dict,
        embedding: str = "tokens",
        image_size: int = 224,
        imagenet_normalize: bool = False,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
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
        self.backbone = backbone if isinstance(backbone, nn.Module) else VisionTransformer(**backbone)
        self.register_buffer("feature_mean", torch.zeros(NUM_FEATURES))
        self.register_buffer("feature_std", torch.ones(NUM_FEATURES))
        self.head = MLP([NUM_FEATURES] + [int(h) for h in hidden] + [int(num_classes)], activation="relu")

    def preprocess(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 (or float 0..255) ``[N, 3, H, W]`` -> float32 pixels at ``image_size``."""
        x = frames.to(torch.float32) / 255.0
        if x.shape[-2] != self.image_size or x.shape[-1] != self.image_size:
            x = F.interpolate(
                x, size=(self.image_size, self.image_size), mode="bicubic", align_corners=False, antialias=True
            )
        if self.imagenet_normalize:
            x = (x - self.pixel_mean.float()) / self.pixel_std.float()
        return x

    def embed_frames(self, video: torch.Tensor) -> torch.Tensor:
        """``[B, T, 3, H, W]`` -> per-frame embeddings ``[B, T, D']``."""
        if video.dim() != 5 or video.shape[2] != 3:
            raise ValueError(f"expected video [B, T, 3, H, W], got shape {tuple(video.shape)}")
        batch, frames = video.shape[0], video.shape[1]
        x = self.preprocess(video.flatten(0, 1))
        tokens = self.backbone(x.to(parameter_dtype(self.backbone))).float()
        if self.embedding == "cls":
            z = tokens[:, 0]
        else:  # CLS + patch tokens (registers, if any, are not part of the official embedding)
            z = torch.cat([tokens[:, :1], tokens[:, self.backbone.num_prefix_tokens :]], dim=1).flatten(1)
        return z.reshape(batch, frames, -1)

    def forward_features(self, video: torch.Tensor) -> torch.Tensor:
        return trajectory_features(self.embed_frames(video))

    def normalize_features(self, features: torch.Tensor) -> torch.Tensor:
        return (features.float() - self.feature_mean.float()) / (self.feature_std.float() + STD_EPS)

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(self.normalize_features(features).to(parameter_dtype(self.head)))


@register_detector
class ReStraVDetector(Detector):
    arch = "restrav"
    modality = "video"
    modality_default = True
    config_class = ReStraVConfig
    data_config_class = ReStraVDataConfig

    def __init__(self, config: ReStraVConfig) -> None:
        super().__init__(config)
        # ReStraV never trains the encoder
        backbone = self.build_backbone(config.backbone, TuningConfig(mode="frozen"))
        backbone.check_input_size(config.image_size, "model.image_size")
        self.net = self.build_network(
            ReStraVNetwork,
            backbone=backbone,
            embedding=config.embedding,
            image_size=config.image_size,
            imagenet_normalize=bool(config.imagenet_normalize),
            mean=list(backbone.info.mean),
            std=list(backbone.info.std),
            hidden=[int(h) for h in config.hidden],
        )

    # ------------------------------------------------------------------ data
    def data_recipe(self, stage: str, data: ReStraVDataConfig) -> SampleRecipe:
        """Per-video features of clips sampled by ``data.sampling`` (``train_sampling`` in training),
        computed once by the frozen part of the network and cached under ``data.cache_dir``."""
        mode = (data.train_sampling or data.sampling) if stage == "train" else data.sampling
        sampler = FrameSampler(
            mode, self.config.num_frames, frame_rate=self.config.frame_rate, window_sec=self.config.window_sec
        )
        cache_dir = Path(data.cache_dir or default_cache_dir()) / "features" if data.feature_cache else None
        return SampleRecipe(
            load=ClipLoader(sampler, (self.config.image_size, self.config.image_size)),
            features=self.feature_extraction(
                sampler, cache_dir=cache_dir, batch_size=data.feature_batch_size, num_workers=data.decode_workers
            ),
        )

    def feature_extraction(
        self, sampler: FrameSampler, *, cache_dir: Path | None = None, batch_size: int = 8, num_workers: int = 2
    ) -> FeatureExtraction:
        """The data-stage step: clips of ``sampler`` -> the frozen network's 21 features per video."""
        size = (self.config.image_size, self.config.image_size)
        return FeatureExtraction(
            self.net,
            ClipLoader(sampler, size),
            identity=self.model_key(),
            cache_dir=cache_dir,
            batch_size=batch_size,
            num_workers=num_workers,
            cpu_chunk=1,
            forward=self.net.forward_features,
        )

    def on_train_data(self, dataset: FeatureDataset, data: ReStraVDataConfig) -> None:
        """z-score statistics from the training features, unless the detector was loaded with
        ``--init-from`` (it keeps those its MLP was trained with; ``data.refit_feature_statistics``)."""
        if not (self.feature_statistics_unset() or data.refit_feature_statistics):
            return
        features = dataset.valid_features()
        if len(features) == 0:
            raise ConfigError(None, "train split", "no readable training video: cannot compute the feature statistics")
        self.set_feature_statistics(features)

    @torch.no_grad()
    def set_feature_statistics(self, features: torch.Tensor) -> None:
        """z-score statistics (mean, population std) of the training features ``[N, 21]``."""
        features = features.float()
        if features.dim() != 2 or features.shape[1] != NUM_FEATURES or len(features) == 0:
            raise ValueError(f"expected training features [N>0, {NUM_FEATURES}], got {tuple(features.shape)}")
        self.net.feature_mean.copy_(features.mean(0))
        self.net.feature_std.copy_(features.std(0, unbiased=False))

    def feature_statistics_unset(self) -> bool:
        return bool((self.net.feature_mean == 0).all() and (self.net.feature_std == 1).all())

    def model_key(self) -> str:
        """Identity of everything that shapes the features: backbone weights, embedding, input size.

        Recomputed on every call (a fraction of a second for ViT-S, once per split): a memoised key
        would outlive ``load_state_dict`` or ``.to(dtype)`` and serve stale features.
        """
        digest = hashlib.blake2b(digest_size=16)
        for name, tensor in sorted(self.net.backbone.state_dict().items()):
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
        return (
            f"restrav-v{FEATURE_CACHE_VERSION}-{self.config.embedding}-"
            f"norm{int(self.config.imagenet_normalize)}-s{self.config.image_size}-{digest.hexdigest()}"
        )

    # ------------------------------------------------------------------ export
    def preprocessing(self) -> dict[str, Any]:
        return square_clip_preprocessing(self.config.image_size, self.config.num_frames, self.config.frame_rate)

    def export_name(self) -> str:
        return f"{self.arch}-{self.config.embedding}"

    def summary(self) -> dict[str, Any]:
        return {
            **super().summary(),
            "embedding": self.config.embedding,
            "feature_mean": [round(float(v), 6) for v in self.net.feature_mean],
            "feature_std": [round(float(v), 6) for v in self.net.feature_std],
        }


__all__ = [
    "FEATURE_NAMES",
    "NUM_FEATURES",
    "ReStraVConfig",
    "ReStraVDataConfig",
    "ReStraVDetector",
    "ReStraVNetwork",
    "trajectory_features",
]
