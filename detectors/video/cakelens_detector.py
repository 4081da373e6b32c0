"""CakeLens v5 as a trainable, calibratable, exportable video detector (arch ``cakelens``).

The network is :class:`detectors.video.cakelens.CakeLensNetwork` (checkpoint-compatible with the
original; trained through the memory-lean :class:`~detectors.video.cakelens.CakeLensV5`); this
module wraps it in the :class:`~detectors.base.Detector` interface:

* ``forward_features``: video ``uint8 [B, T, 3, H, W]`` -> per-frameset logits ``[B, F, 17]``
  (``F = ceil(T / 9)``), in chunks of framesets when judging whole videos without gradients.
* ``forward_head``: AI_GEN probability ``p`` = mean over the sample's framesets of
  ``sigmoid(logit)`` (the original verdict) -> logits ``[log(1 - p), log(p)]``, so the shared
  2-class loss, metrics, calibrator and export all act on AI_GEN.
* ``training_losses``: masked multi-label BCE over the 17 labels per frameset. A label a sample does
  not carry contributes nothing: every item knows AI_GEN; a real item also knows the generator
  labels (all 0), and so does a fake item whose ``generator_family`` names a CakeLens generator
  (e.g. ``SORA``; one-hot: one video has one generator). Content labels (ANIME_2D, ANIME_3D,
  VIDEO_GAME) stay unknown.
* ``data_recipe``: training takes one frameset (9 consecutive frames) at a random offset;
  validation judges the whole video (up to ``data.val_max_framesets`` framesets, mean of their
  probabilities, ``eval_batch_size: 1``); calibration takes the benchmark's input (the first 9
  frames), which the exported model is calibrated for. All resize to ``crop x crop`` the benchmark's
  way (``data.train_geometry: original`` trains on the original's top-left crop with zero padding).

Training switches: ``gradient_checkpointing`` / ``channels_last_3d`` (model config), mixed precision
and accumulation from the Trainer flags; pinned-memory loading and host-to-device copies on a side
CUDA stream come from the shared ``DetectorModule``; :class:`CakeLensTensorBoardCallback` logs gradient histograms and PR curves
(``extra_callbacks()``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Sequence

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor

from detectors.base import Detector
from detectors.config import setting
from detectors.data.catalog import MediaItem
from detectors.data.dataset import SampleRecipe
from detectors.errors import ConfigError, MediaError
from detectors.image.transforms import benchmark_resize
from detectors.metrics import prob_fake_from_logits
from detectors.registry import register_detector
from detectors.settings import DataConfig
from detectors.video.cakelens import (
    CAKELENS_MEAN,
    CAKELENS_STD,
    LABELS,
    CakeLensConfig,
    CakeLensNetwork,
    CakeLensV5,
    load_cakelens_checkpoint,
    predict_video_file,
)
from detectors.video.io import probe_video, read_frames

logger = logging.getLogger(__name__)

AI_GEN = LABELS.index("AI_GEN")
# Labels naming the generator of a fake video (mutually exclusive): used one-hot when known.
GENERATOR_LABELS: tuple[str, ...] = (
    "KLING",
    "HIGGSFIELD",
    "WAN",
    "MIDJOURNEY",
    "HAILUO",
    "RAY",
    "VEO",
    "RUNWAY",
    "SORA",
    "CHATGPT",
    "PIKA",
    "HUNYUAN",
    "VIDU",
)
GEOMETRIES = ("benchmark", "original")
EVAL_CHUNK_FRAMESETS = 4  # framesets per forward when judging a whole video without gradients


@dataclass
class CakeLensDetectorConfig:
    """Network size (defaults = the published v5) and training options."""

    width: int = setting(64, help="channels after the input convolution (published: 64)", ge=1)
    channel_step: int = setting(32, help="channels each convolution of a space-time block adds", ge=1)
    num_blocks: int = setting(6, help="space-time blocks", ge=1)
    frameset_size: int = setting(9, help="frames per frameset (exported preprocessing.num_frames)", ge=1)
    crop: int = setting(512, help="frame side (exported preprocessing.resize [crop, crop])", ge=1)
    hidden: list[int] = setting([512, 256, 128], help="hidden sizes of the classifier", ge=1)
    weights: str | None = setting(None, help="original checkpoint to start from (cakelens-model-5.0.pth)")
    label_loss_weight: float = setting(1.0, help="masked 17-label BCE (AI_GEN + known generator labels)", ge=0)
    gradient_checkpointing: bool = setting(False, help="recompute each space-time block in backward (~1.4x step time)")
    channels_last_3d: bool = setting(
        False, help="channels_last_3d weights and activations (CPU: 0.48x peak with checkpointing)"
    )
    tensorboard_every_n_steps: int = setting(
        0, help=">0: gradient histograms every N steps + validation PR curves", ge=0
    )
    num_classes: Literal[2] = setting(2, help="AI_GEN vs real")
    allow_random_backbone: bool = setting(False, help="set by the shared demo fit; CakeLens has no pretrained backbone")

    def __post_init__(self) -> None:
        self.network_config()  # a size too small for the network is an error naming the fields

    def network_config(self) -> CakeLensConfig:
        return CakeLensConfig(
            width=self.width,
            channel_step=self.channel_step,
            num_blocks=self.num_blocks,
            frameset_size=self.frameset_size,
            crop=self.crop,
            hidden=tuple(self.hidden),
        )


@dataclass
class CakeLensDataConfig(DataConfig):
    batch_size: int = setting(4, help="training batch size (framesets)", ge=1)
    eval_batch_size: int | None = setting(1, help="validation batches (whole videos differ in length: 1)", ge=1)
    num_workers: int = setting(4, help="DataLoader worker processes decoding media", ge=0)
    train_geometry: Literal["benchmark", "original"] = setting(
        "benchmark", help="benchmark (centre crop + resize to crop) | original (top-left crop, zero pad)"
    )
    val_framesets: Literal["all", "benchmark"] = setting(
        "all", help="all: mean over the video's framesets (the original verdict) | benchmark (first frameset)"
    )
    val_max_framesets: int = setting(8, help="framesets read per validation video", ge=1)


def generator_targets(generator_family: str | None, label: int) -> tuple[Tensor, Tensor]:
    """``(targets [17], mask [17])`` of one item: AI_GEN always; the generator labels are known
    for a real item (all 0: no generator made it) and for a fake one whose ``generator_family``
    (case-insensitive) is a CakeLens generator label (one-hot). The content labels (ANIME_2D,
    ANIME_3D, VIDEO_GAME) are never known from a dataset YAML."""
    targets = torch.zeros(len(LABELS))
    mask = torch.zeros(len(LABELS))
    targets[AI_GEN] = float(label != 0)
    mask[AI_GEN] = 1.0
    name = (generator_family or "").strip().upper()
    if label == 0:
        for generator in GENERATOR_LABELS:
            mask[LABELS.index(generator)] = 1.0
    elif name in GENERATOR_LABELS:
        for generator in GENERATOR_LABELS:
            mask[LABELS.index(generator)] = 1.0
        targets[LABELS.index(name)] = 1.0
    return targets, mask


def masked_label_bce(frameset_logits: Tensor, targets: Tensor, mask: Tensor) -> Tensor:
    """Mean BCE over the known (mask 1) labels of every frameset: logits ``[B, F, L]``, targets and
    mask ``[B, L]`` (a sample's labels hold for all its framesets). 0 when nothing is known."""
    frames = frameset_logits.shape[1]
    targets = targets.unsqueeze(1).expand_as(frameset_logits).to(frameset_logits.dtype)
    weights = mask.unsqueeze(1).expand_as(frameset_logits).to(frameset_logits.dtype)
    losses = F.binary_cross_entropy_with_logits(frameset_logits, targets, reduction="none")
    return (losses * weights).sum() / (mask.sum() * frames).clamp_min(1.0)


# --------------------------------------------------------------------------------------------- data
class FramesetLoader:
    """Picklable ``path -> uint8 [9, 3, crop, crop]``: one frameset of consecutive frames.

    ``random_offset``: start anywhere (training) instead of at frame 0 (the benchmark's first 9
    frames). Short videos repeat their last frame (as the benchmark's loader does). ``geometry``:
    ``benchmark`` (centre crop to aspect + resize to crop) or ``original`` (top-left crop, centred
    zero padding: black before normalisation, as the original tool).
    """

    def __init__(
        self,
        frameset_size: int,
        crop: int,
        random_offset: bool,
        geometry: str = "benchmark",
        max_framesets: int | None = None,
    ) -> None:
        if geometry not in GEOMETRIES:
            raise ValueError(f"data.train_geometry must be one of {GEOMETRIES}, got {geometry!r}")
        self.frameset_size, self.crop, self.random_offset, self.geometry = frameset_size, crop, random_offset, geometry
        self.max_framesets = max_framesets  # set: every frame of the video (up to this many framesets)

    def __call__(self, path: str) -> Tensor:
        total = probe_video(path).num_frames
        if self.max_framesets is not None:
            # the whole video: forward_features cuts it into framesets, the last one centred-padded
            indices = list(range(min(total, self.max_framesets * self.frameset_size)))
        else:
            start = int(torch.randint(0, max(1, total - self.frameset_size + 1), ())) if self.random_offset else 0
            indices = [min(start + i, total - 1) for i in range(self.frameset_size)]
        frames = read_frames(path, indices)
        if self.geometry == "benchmark":
            return benchmark_resize(frames, (self.crop, self.crop))
        frames = frames[:, :, : self.crop, : self.crop]
        pad_h, pad_w = self.crop - frames.shape[2], self.crop - frames.shape[3]
        return F.pad(frames, (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2))


def item_label_targets(item: MediaItem) -> dict[str, Tensor]:
    """``multi_labels`` / ``label_mask`` ``[17]`` of an item (see :func:`generator_targets`)."""
    targets, mask = generator_targets(item.generator_family, item.label)
    return {"multi_labels": targets, "label_mask": mask}


# --------------------------------------------------------------------------------------------- detector
@register_detector
class CakeLensDetector(Detector):
    arch = "cakelens"
    modality = "video"
    config_class = CakeLensDetectorConfig
    data_config_class = CakeLensDataConfig
    supported_num_classes = (2,)  # AI_GEN vs real

    def __init__(self, config: CakeLensDetectorConfig) -> None:
        super().__init__(config)
        architecture = config.network_config()
        cnn = CakeLensV5(
            architecture, gradient_checkpointing=config.gradient_checkpointing, channels_last_3d=config.channels_last_3d
        )
        if config.weights:
            load_cakelens_checkpoint(config.weights, cnn)
        self.net = self.build_network(CakeLensNetwork, **architecture.network_kwargs(), ai_gen_index=AI_GEN, cnn=cnn)

    @property
    def cnn(self) -> CakeLensV5:
        """The space-time CNN (original checkpoint keys), with its memory-lean training forward."""
        return self.net.cnn

    @property
    def network_config(self) -> CakeLensConfig:
        return self.cnn.config

    def set_gradient_checkpointing(self, enabled: bool = True) -> None:
        """Checkpoint the stem and the space-time blocks (see :class:`CakeLensV5`)."""
        self.cnn.gradient_checkpointing = enabled
        self.config.gradient_checkpointing = enabled

    def forward_features(self, x: Tensor) -> Tensor:
        """Video ``[B, T, 3, H, W]`` -> per-frameset logits ``[B, ceil(T/9), 17]``; whole videos judged
        without gradients go through the CNN a few framesets at a time to bound the activations."""
        if torch.is_grad_enabled() or x.shape[1] <= EVAL_CHUNK_FRAMESETS * self.network_config.frameset_size:
            return self.net.forward_features(x)
        span = EVAL_CHUNK_FRAMESETS * self.network_config.frameset_size
        return torch.cat(
            [self.net.forward_features(x[:, start : start + span]) for start in range(0, x.shape[1], span)], dim=1
        )

    def training_losses(self, features: Tensor, logits: Tensor, batch: dict[str, Any]) -> dict[str, Tensor]:
        if "multi_labels" not in batch or self.config.label_loss_weight == 0:
            return {}
        loss = masked_label_bce(features.float(), batch["multi_labels"], batch["label_mask"])
        return {"label_bce": self.config.label_loss_weight * loss}

    def data_recipe(self, stage: str, data: CakeLensDataConfig) -> SampleRecipe:
        """Training: one frameset at a random offset. Validation (``data.val_framesets: all``, the
        default): the whole video, up to ``data.val_max_framesets`` framesets, judged by the mean of
        its framesets' probabilities (the original verdict; needs ``eval_batch_size: 1``, as videos
        differ in length). Calibration and other evaluation: the benchmark's input, the first frameset,
        which is what the exported model will be calibrated for."""
        cfg = self.network_config
        train = stage == "train"
        max_framesets = None
        if stage == "val" and data.val_framesets == "all":
            if (data.eval_batch_size or data.batch_size) != 1:
                raise ConfigError(
                    None,
                    "data.eval_batch_size",
                    "whole-video validation (data.val_framesets: all) "
                    "needs eval_batch_size: 1 (videos differ in length), or val_framesets: benchmark",
                )
            max_framesets = data.val_max_framesets
        loader = FramesetLoader(
            cfg.frameset_size,
            cfg.crop,
            random_offset=train,
            geometry=data.train_geometry if train else "benchmark",
            max_framesets=max_framesets,
        )
        return SampleRecipe(load=loader, item_targets=item_label_targets)

    def extra_callbacks(self) -> list[L.Callback]:
        """Callbacks this detector wants in the Trainer (TensorBoard histograms/PR curves when enabled)."""
        every = int(self.config.tensorboard_every_n_steps)
        return [CakeLensTensorBoardCallback(every)] if every > 0 else []

    def summary(self) -> dict[str, Any]:
        return {
            "weights": self.config.weights or "random init",
            "parameters": sum(p.numel() for p in self.cnn.parameters()),
        }

    def preprocessing(self) -> dict[str, Any]:
        # The original never resizes; the benchmark always does. resize = crop keeps the original
        # pixel scale for inputs of that size, and 9 consecutive frames are exactly one frameset.
        cfg = self.network_config
        return {"num_frames": cfg.frameset_size, "resize": [cfg.crop, cfg.crop]}

    def export_name(self) -> str:
        return f"{self.arch}-v5"


# --------------------------------------------------------------------------------------------- training aids
class CakeLensTensorBoardCallback(L.Callback):
    """Gradient histograms every ``every_n_steps`` optimiser steps and a validation PR curve of
    p(AI_GEN) per epoch, written to the Trainer's TensorBoard logger (if any)."""

    def __init__(self, every_n_steps: int = 50) -> None:
        self.every_n_steps = max(1, int(every_n_steps))
        self._probabilities: list[Tensor] = []
        self._targets: list[Tensor] = []

    @staticmethod
    def _writer(trainer: L.Trainer) -> Any:
        from lightning.pytorch.loggers import TensorBoardLogger

        for logger_ in trainer.loggers:
            if isinstance(logger_, TensorBoardLogger):
                return logger_.experiment
        return None

    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: Any) -> None:
        writer = self._writer(trainer)
        if writer is None or trainer.global_step % self.every_n_steps != 0:
            return
        for name, parameter in pl_module.named_parameters():
            if parameter.grad is not None:
                writer.add_histogram(f"gradients/{name}", parameter.grad.detach().float().cpu(), trainer.global_step)

    def on_validation_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        # the module's validation step returns its logits: no second (full-precision) forward pass here
        if outputs is None or trainer.sanity_checking:
            return
        self._probabilities.append(torch.as_tensor(prob_fake_from_logits(outputs["logits"])))
        self._targets.append(outputs["target"] != 0)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        writer = self._writer(trainer)
        if writer is not None and self._probabilities:
            writer.add_pr_curve(
                "val/pr_curve_ai_gen", torch.cat(self._targets), torch.cat(self._probabilities), trainer.global_step
            )
        self._probabilities.clear()
        self._targets.clear()


# --------------------------------------------------------------------------------------------- detect CLI
def detect_cakelens(
    paths: Sequence[str | Path],
    weights: str | Path,
    device: str = "cpu",
    batch_size: int = 4,
    json_out: str | Path | None = None,
    progress: bool = True,
    config: CakeLensConfig | None = None,
) -> list[dict[str, Any]]:
    """The original tool's whole-video verdict for each video: ``[{"video", "frame_count",
    "predictions": {label: p}}]`` (mean over all framesets of the per-label sigmoid). ``weights`` is an
    original checkpoint (``.pth``/``.safetensors``; ``config`` = its network size, default the
    published one). Written to ``json_out`` (a
    dict for one video, a list for several) when given. An unreadable video gives
    ``{"video": ..., "error": message}`` and the others are still processed."""
    from detectors.atomic import write_json

    if batch_size < 1:  # checked before the (1 GB) weights are read; the CLI reports a ConfigError
        raise ConfigError(None, "batch_size", f"must be >= 1 framesets per forward pass, got {batch_size}")
    model = load_cakelens_checkpoint(weights, config=config)  # reads the file before building 270 M parameters
    results: list[dict[str, Any]] = []
    for path in paths:
        try:
            verdict = predict_video_file(model, path, batch_size=batch_size, device=device, progress=progress)
        except MediaError as error:
            results.append({"video": str(path), "error": str(error)})
            continue
        results.append(
            {"video": str(path), "frame_count": verdict["frame_count"], "predictions": verdict["probabilities"]}
        )
    if json_out is not None:
        write_json(Path(json_out), results[0] if len(results) == 1 else results)
    return results


def format_cakelens_report(result: dict[str, Any]) -> str:
    """Human-readable verdict like the original tool: one ``LABEL: xx.xx%`` line per label."""
    lines = [f"{result['video']} ({result['frame_count']} frames)"]
    lines += [f"  {label:<12s} {100.0 * p:6.2f}%" for label, p in result["predictions"].items()]
    return "\n".join(lines)


__all__ = [
    "CakeLensDataConfig",
    "CakeLensDetector",
    "CakeLensDetectorConfig",
    "CakeLensTensorBoardCallback",
    "FramesetLoader",
    "detect_cakelens",
    "format_cakelens_report",
    "generator_targets",
    "item_label_targets",
    "masked_label_bce",
    "CAKELENS_MEAN",
    "CAKELENS_STD",
]
