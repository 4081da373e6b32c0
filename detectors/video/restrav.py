"""ReStraV (NeurIPS 2025, "perceptual straightening"): how straight is a video's path through a frozen
DINOv2's embedding space?

frames ``uint8 [B, T, 3, H, W]`` -> resize (bicubic, antialias) -> /255 (-> ImageNet normalisation,
off by default as in the official code) -> frozen ViT per frame -> per-frame embedding (``tokens``:
final-norm CLS + all patch tokens flattened, the official one; ``cls``: the CLS token) -> trajectory
``Z [B, T, D']`` -> 21 geometry features (``detectors.video.geometry``) -> z-score with statistics of
the TRAINING features (buffers ``feature_mean`` / ``feature_std``, stored with the model; divisor
``std + 1e-8``, population std) -> MLP 21 -> 64 -> ReLU -> 32 -> ReLU -> 2. Class 1 = fake (the
official code used 1 = real).

Training never runs the backbone twice: :meth:`ReStraVDetector.make_dataset` computes each video's 21
features once (videos decoded in DataLoader workers while the main process embeds the previous
batch, several videos per forward pass, ``inference_mode``), caches them on disk with
``FeatureCache`` (keyed by the video file, the frame sampler, the resize and a hash of the backbone
weights and embedding settings) and returns a dataset of feature vectors; the LightningModule then
trains only the head (``Detector.forward_batch``). For the ``train`` stage it also sets the z-score
buffers from those features (:meth:`ReStraVDetector.set_feature_statistics`).

Frame sampling (our choice, documented in configs/video/restrav.yaml): the benchmark picks the first
``num_frames`` frames at step ``round(fps / frame_rate)``, not the official centred window. With
``num_frames`` 24 and ``frame_rate`` 12 the clip spans about 1.9 s at 24/25/60 fps but 1.5 s at 30 fps
(``round(2.5)`` is 2), against the official 2 s window (spacing 2/23 s). Training and calibration use
this benchmark rule by default (``data.sampling: benchmark``), so the detector is fitted on what it
will be fed. ``data.sampling: window`` takes the official centred window's frames; the resize stays
the benchmark's (centre crop to aspect, bilinear) rather than the official bicubic stretch, so that
training inputs match the exported model's.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm  # not tqdm.auto: its asyncio variant calls iter() on a DataLoader twice (double workers)

from detectors.backbones import BackboneConfig
from detectors.base import Detector
from detectors.data.catalog import MediaItem
from detectors.data.dataset import MediaDataset, collate_skip, is_empty_batch, labelled_sample, unreadable_sample
from detectors.registry import register_detector
from detectors.tuning import TuningConfig
from detectors.video.cache import FeatureCache
from detectors.video.data import ClipLoader, square_clip_preprocessing, video_sampler
from detectors.video.geometry import FEATURE_NAMES, NUM_FEATURES, trajectory_features
from detectors.video.sampling import FrameSampler
from export.standalone.heads import MLP

logger = logging.getLogger(__name__)

EMBEDDINGS = ("tokens", "cls")
STD_EPS = 1e-8
FEATURE_CACHE_VERSION = 1


def default_cache_dir() -> Path:
    return Path.home() / ".cache" / "forensic-adapters" / "restrav"


@dataclass
class ReStraVConfig:
    backbone: BackboneConfig = field(default_factory=lambda: BackboneConfig(name="facebook/dinov2-small"))
    embedding: str = "tokens"  # tokens (official: CLS + all patch tokens, flattened) | cls
    imagenet_normalize: bool = False  # the official code feeds [0, 1] pixels
    num_frames: int = 24
    frame_rate: float | None = 12.0  # exported preprocessing.frame_rate (24 frames: 1.5-1.9 s, fps-dependent)
    window_sec: float = 2.0  # span of the official centred window (data.sampling: window)
    image_size: int = 224
    hidden: list[int] = field(default_factory=lambda: [64, 32])
    num_classes: int = 2
    allow_random_backbone: bool = False  # built-in demo only


class ReStraVFeatureDataset(Dataset):
    """Per-video 21-d features, one sample per item (an unreadable video gives
    :func:`unreadable_sample`, which ``collate_skip`` drops and counts): ``{"features", "label", "class_index", "target", "index",
    "dataset_id"}``. ``skipped`` counts the unreadable videos."""

    def __init__(self, items: Sequence[MediaItem], features: torch.Tensor, valid: torch.Tensor,
                 target: str = "binary") -> None:
        self.items = list(items)
        self.features = features
        self.valid = valid
        self.target = target
        self.dataset_names: list[str] = sorted({item.dataset for item in self.items})
        self._dataset_ids = {name: i for i, name in enumerate(self.dataset_names)}

    @property
    def skipped(self) -> int:
        return int((~self.valid).sum())

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, Any] | None:
        if not self.valid[index]:
            return unreadable_sample(self.items[index].path)
        item = self.items[index]
        return labelled_sample(item, index, self._dataset_ids[item.dataset], self.target,
                               features=self.features[index])


@register_detector
class ReStraVDetector(Detector):
    arch = "restrav"
    modality = "video"
    config_class = ReStraVConfig

    def __init__(self, config: ReStraVConfig) -> None:
        super().__init__(config)
        if config.embedding not in EMBEDDINGS:
            raise ValueError(f"model.embedding must be one of {EMBEDDINGS}, got {config.embedding!r}")
        if config.num_frames < 8:
            raise ValueError(f"model.num_frames must be >= 8 (the features use 7 steps), got {config.num_frames}")
        self.attach_backbone(config.backbone, TuningConfig(mode="frozen"))  # ReStraV never trains the encoder
        self.backbone.check_input_size(config.image_size, "model.image_size")
        self.register_buffer("pixel_mean", torch.tensor(self.backbone.info.mean).view(-1, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(self.backbone.info.std).view(-1, 1, 1), persistent=False)
        self.register_buffer("feature_mean", torch.zeros(NUM_FEATURES))
        self.register_buffer("feature_std", torch.ones(NUM_FEATURES))
        self.head = MLP([NUM_FEATURES, *config.hidden, config.num_classes], activation="relu")

    # ------------------------------------------------------------------ forward
    def preprocess(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 (or float 0..255) ``[N, 3, H, W]`` -> float32 pixels at ``image_size``."""
        x = frames.to(torch.float32) / 255.0
        size = (self.config.image_size, self.config.image_size)
        if tuple(x.shape[-2:]) != size:
            x = F.interpolate(x, size=size, mode="bicubic", align_corners=False, antialias=True)
        if self.config.imagenet_normalize:
            x = (x - self.pixel_mean) / self.pixel_std
        return x

    def embed_frames(self, video: torch.Tensor) -> torch.Tensor:
        """``[B, T, 3, H, W]`` -> per-frame embeddings ``Z [B, T, D']``."""
        if video.dim() != 5 or video.shape[2] != 3:
            raise ValueError(f"expected video [B, T, 3, H, W], got shape {tuple(video.shape)}")
        batch, frames = video.shape[:2]
        x = self.preprocess(video.flatten(0, 1))
        tokens = self.backbone(x.to(next(self.backbone.parameters()).dtype)).float()
        if self.config.embedding == "cls":
            z = self.backbone.cls_token(tokens)
        else:  # CLS + patch tokens (registers, if any, are not part of the official embedding)
            z = torch.cat([tokens[:, :1], self.backbone.patch_tokens(tokens)], dim=1).flatten(1)
        return z.reshape(batch, frames, -1)

    def forward_features(self, video: torch.Tensor) -> torch.Tensor:
        return trajectory_features(self.embed_frames(video))

    def normalize_features(self, features: torch.Tensor) -> torch.Tensor:
        return (features.float() - self.feature_mean) / (self.feature_std + STD_EPS)

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(self.normalize_features(features))

    @torch.no_grad()
    def set_feature_statistics(self, features: torch.Tensor) -> None:
        """z-score statistics (mean, population std) of the training features ``[N, 21]``."""
        features = features.float()
        if features.dim() != 2 or features.shape[1] != NUM_FEATURES or len(features) == 0:
            raise ValueError(f"expected training features [N>0, {NUM_FEATURES}], got {tuple(features.shape)}")
        self.feature_mean.copy_(features.mean(0))
        self.feature_std.copy_(features.std(0, unbiased=False))

    # ------------------------------------------------------------------ data
    def model_key(self) -> str:
        """Identity of everything that shapes the features: backbone weights, embedding, input size.

        Recomputed on every call (a fraction of a second for ViT-S, once per ``make_dataset``):
        a memoised key would outlive ``load_state_dict`` or ``.to(dtype)`` and serve stale features.
        """
        digest = hashlib.blake2b(digest_size=16)
        for name, tensor in sorted(self.backbone.state_dict().items()):
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
        return (f"restrav-v{FEATURE_CACHE_VERSION}-{self.config.embedding}-"
                f"norm{int(self.config.imagenet_normalize)}-s{self.config.image_size}-{digest.hexdigest()}")

    def sampler(self, data: dict[str, Any], stage: str = "eval") -> FrameSampler:
        return video_sampler(data, stage, self.config.num_frames, self.config.frame_rate, self.config.window_sec)

    @torch.inference_mode()
    def compute_video_features(self, paths: Sequence[str], sampler: FrameSampler,
                               resize: tuple[int, int] | None = None, *, batch_size: int = 8,
                               num_workers: int = 2, cache: FeatureCache | None = None,
                               device: str | torch.device | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """21 features of each video: ``(features [N, 21], valid [N] bool)``; unreadable videos get
        ``valid`` False (and NaN features), cached ones skip decoding and the backbone."""
        resize = resize or (self.config.image_size, self.config.image_size)
        features = torch.full((len(paths), NUM_FEATURES), float("nan"))
        valid = torch.zeros(len(paths), dtype=torch.bool)
        options = {"resize_mode": "benchmark-crop"}

        def cache_key(path: str) -> str | None:
            if cache is None or not sampler.deterministic:
                return None
            try:
                return cache.key(path, sampler, resize, **options)
            except OSError:  # missing or unstat-able file: the decoder reports it and the video is skipped
                return None

        # keys are taken before decoding: a file edited meanwhile is stored under its old identity
        keys = [cache_key(path) for path in paths]
        missing = []
        for i, key in enumerate(keys):
            cached = None if key is None else cache.load(key)
            if cached is not None and cached.shape == (NUM_FEATURES,):
                features[i], valid[i] = cached, True
            else:
                missing.append(i)
        if not missing:
            return features, valid

        items = [MediaItem(path=str(paths[i]), label=0, media_type="real", dataset="-", modality="video")
                 for i in missing]
        loader = DataLoader(MediaDataset(items, load=ClipLoader(sampler, tuple(resize))), batch_size=batch_size,
                            num_workers=num_workers, collate_fn=collate_skip,
                            pin_memory=torch.cuda.is_available(), prefetch_factor=2 if num_workers else None)
        device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        original = next(self.parameters()).device
        self.to(device)
        was_training = self.training
        self.eval()
        try:
            # workers decode the next batches while this one is embedded
            for batch in tqdm(loader, desc="ReStraV features", unit="batch", disable=len(loader) < 2):
                if is_empty_batch(batch):
                    continue
                clips = batch["x"].to(device, non_blocking=True)
                # A GPU embeds the whole batch in one pass; on a CPU one 200-frame pass is ~30 % slower
                # than one pass per video (cache-bound ViT matmuls), so the batch there only feeds decoding.
                step = len(clips) if device.type == "cuda" else 1
                values = torch.cat([self.forward_features(clips[i:i + step]).float().cpu()
                                    for i in range(0, len(clips), step)])
                for row, local in zip(values, batch["index"].tolist()):
                    i = missing[local]
                    features[i], valid[i] = row, True
                    if keys[i] is not None:
                        cache.save(keys[i], row)
        finally:
            self.to(original)
            self.train(was_training)
        return features, valid

    def make_dataset(self, items: list, stage: str, data: dict) -> ReStraVFeatureDataset:
        """Cached per-video features of ``items``; for ``stage == "train"`` also sets the z-score buffers.

        Data settings: ``sampling`` / ``train_sampling`` / ``num_frames`` / ``frame_rate`` /
        ``window_sec`` (see :func:`detectors.video.data.video_sampler`), ``cache_dir`` (default
        ``~/.cache/forensic-adapters/restrav``; ``feature_cache: false`` disables the cache),
        ``feature_batch_size`` (videos per backbone pass) and ``decode_workers``.
        """
        sampler = self.sampler(data, stage)
        cache = None
        if data.get("feature_cache", True):
            root = Path(data.get("cache_dir") or default_cache_dir()) / "features"
            cache = FeatureCache(root, self.model_key())
        features, valid = self.compute_video_features(
            [item.path for item in items], sampler, batch_size=int(data.get("feature_batch_size", 8)),
            num_workers=int(data.get("decode_workers", 2)), cache=cache)
        dataset = ReStraVFeatureDataset(items, features, valid,
                                        target="multiclass" if self.num_classes == 3 else "binary")
        if dataset.skipped:
            logger.warning("ReStraV %s features: skipped %d unreadable video(s) of %d", stage, dataset.skipped, len(items))
        if stage == "train" and (self.feature_statistics_unset() or data.get("refit_feature_statistics", False)):
            # a detector loaded with --init-from keeps the statistics its MLP was trained with
            if not bool(valid.any()):
                raise ValueError("no readable training video: cannot compute the feature statistics")
            self.set_feature_statistics(features[valid])
        return dataset

    def feature_statistics_unset(self) -> bool:
        return bool((self.feature_mean == 0).all() and (self.feature_std == 1).all())

    # ------------------------------------------------------------------ export
    def example_input(self, batch_size: int = 2) -> torch.Tensor:
        size = self.config.image_size
        return torch.randint(0, 256, (batch_size, self.config.num_frames, 3, size, size), dtype=torch.uint8)

    def preprocessing(self) -> dict[str, Any]:
        return square_clip_preprocessing(self.config.image_size, self.config.num_frames, self.config.frame_rate)

    def export_spec(self):
        from export.convert import convert_backbone
        from export.spec import ExportSpec

        size = self.config.image_size
        vit_kwargs, vit_state = convert_backbone(self.backbone.model, (size, size))
        state = {**{f"vit.{k}": v for k, v in vit_state.items()},
                 "feature_mean": self.feature_mean.detach().float().clone(),
                 "feature_std": self.feature_std.detach().float().clone(),
                 **{f"head.{k}": v for k, v in self.head.state_dict().items()},
                 **self.calibration_export_state()}
        return ExportSpec(
            modality="video",
            model_class="ReStraVStandalone",
            sources=["vit", "heads", "restrav"],
            init_kwargs={"vit": vit_kwargs, "embedding": self.config.embedding, "image_size": size,
                         "imagenet_normalize": bool(self.config.imagenet_normalize),
                         "mean": list(self.backbone.info.mean), "std": list(self.backbone.info.std),
                         "hidden": [int(h) for h in self.config.hidden], "num_classes": self.num_classes},
            state_dict=state,
            preprocessing=self.preprocessing(),
            num_classes=self.num_classes,
            name=f"{self.arch}-{self.config.embedding}",
        )

    def summary(self) -> dict[str, Any]:
        return {**super().summary(), "embedding": self.config.embedding,
                "feature_mean": [round(float(v), 6) for v in self.feature_mean],
                "feature_std": [round(float(v), 6) for v in self.feature_std]}


__all__ = ["FEATURE_NAMES", "NUM_FEATURES", "ReStraVConfig", "ReStraVDetector", "ReStraVFeatureDataset",
           "trajectory_features"]
