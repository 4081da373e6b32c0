"""CakeLens v5 as a trainable, calibratable, exportable video detector (arch ``cakelens``).

The network is :class:`detectors.video.cakelens.CakeLensV5` (checkpoint-compatible with the
original); this module wraps it in the :class:`~detectors.base.Detector` interface:

* ``forward_features``: video ``uint8 [B, T, 3, H, W]`` -> per-frameset logits ``[B, F, 17]``
  (framing of :func:`video_volume_from_benchmark_input`, ``F = ceil(T / 9)``).
* ``forward_head``: AI_GEN probability ``p`` = mean over the sample's framesets of
  ``sigmoid(logit)`` (the original verdict) -> logits ``[log(1 - p), log(p)]``, so the shared
  2-class loss, metrics, calibrator and export all act on AI_GEN.
* ``training_losses``: masked multi-label BCE over the 17 labels per frameset. A label a sample does
  not carry contributes nothing: every item knows AI_GEN; a real item also knows the generator
  labels (all 0), and so does a fake item whose ``generator_family`` names a CakeLens generator
  (e.g. ``SORA``; one-hot: one video has one generator). Content labels (ANIME_2D, ANIME_3D,
  VIDEO_GAME) stay unknown.
* ``make_dataset``: training takes one frameset (9 consecutive frames) at a random offset;
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
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor

from detectors.base import Detector
from detectors.data.catalog import MediaItem
from detectors.data.dataset import MediaDataset, is_unreadable
from detectors.registry import register_detector
from detectors.errors import ConfigError, MediaError
from detectors.metrics import prob_fake_from_logits
from detectors.video.cakelens import (
    CAKELENS_MEAN,
    CAKELENS_STD,
    LABELS,
    CakeLensConfig,
    CakeLensV5,
    load_cakelens_checkpoint,
    predict_video_file,
    video_volume_from_benchmark_input,
)
from detectors.image.transforms import benchmark_resize
from detectors.video.io import probe_video, read_frames

logger = logging.getLogger(__name__)

AI_GEN = LABELS.index("AI_GEN")
# Labels naming the generator of a fake video (mutually exclusive): used one-hot when known.
GENERATOR_LABELS: tuple[str, ...] = ("KLING", "HIGGSFIELD", "WAN", "MIDJOURNEY", "HAILUO", "RAY", "VEO",
                                     "RUNWAY", "SORA", "CHATGPT", "PIKA", "HUNYUAN", "VIDU")
GEOMETRIES = ("benchmark", "original")
EVAL_CHUNK_FRAMESETS = 4  # framesets per forward when judging a whole video without gradients


@dataclass
class CakeLensDetectorConfig:
    """Network size (the fields of :class:`CakeLensConfig`; defaults = the published v5) and training
    options. ``weights``: an original checkpoint (``.pth``/``.safetensors``) to start from."""

    width: int = 64
    channel_step: int = 32
    num_blocks: int = 6
    frameset_size: int = 9
    crop: int = 512
    hidden: list[int] = field(default_factory=lambda: [512, 256, 128])
    weights: str | None = None
    label_loss_weight: float = 1.0  # weight of the masked 17-label BCE added to the AI_GEN loss
    gradient_checkpointing: bool = False
    channels_last_3d: bool = False
    tensorboard_every_n_steps: int = 0  # >0: gradient histograms every N steps + validation PR curves
    num_classes: int = 2
    allow_random_backbone: bool = False  # set by the shared demo fit; CakeLens has no pretrained backbone

    def network_config(self) -> CakeLensConfig:
        return CakeLensConfig(width=self.width, channel_step=self.channel_step, num_blocks=self.num_blocks,
                              frameset_size=self.frameset_size, crop=self.crop, hidden=tuple(self.hidden))


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

    def __init__(self, frameset_size: int, crop: int, random_offset: bool, geometry: str = "benchmark",
                 max_framesets: int | None = None) -> None:
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


class CakeLensDataset(MediaDataset):
    """``MediaDataset`` samples plus ``multi_labels`` / ``label_mask`` ``[17]`` (see :func:`generator_targets`)."""

    def __getitem__(self, index: int) -> dict[str, Any] | None:
        sample = super().__getitem__(index)
        if not is_unreadable(sample):
            item = self.items[index]
            sample["multi_labels"], sample["label_mask"] = generator_targets(item.generator_family, item.label)
        return sample


# --------------------------------------------------------------------------------------------- detector
@register_detector
class CakeLensDetector(Detector):
    arch = "cakelens"
    modality = "video"
    config_class = CakeLensDetectorConfig
    supported_num_classes = (2,)  # AI_GEN vs real

    def __init__(self, config: CakeLensDetectorConfig) -> None:
        super().__init__(config)
        self.net = CakeLensV5(config.network_config(), gradient_checkpointing=config.gradient_checkpointing,
                              channels_last_3d=config.channels_last_3d)
        if config.weights:
            load_cakelens_checkpoint(config.weights, self.net)

    @property
    def network_config(self) -> CakeLensConfig:
        return self.net.config

    def set_gradient_checkpointing(self, enabled: bool = True) -> None:
        """Checkpoint the stem and the space-time blocks (see :class:`CakeLensV5`)."""
        self.net.gradient_checkpointing = enabled
        self.config.gradient_checkpointing = enabled

    def forward_features(self, x: Tensor) -> Tensor:
        """Video ``[B, T, 3, H, W]`` (uint8) -> per-frameset logits ``[B, ceil(T/9), 17]``."""
        if x.dtype != torch.uint8:  # the benchmark may hand float 0..255; framing expects uint8
            x = x.round().clamp(0, 255).to(torch.uint8)
        volume = video_volume_from_benchmark_input(x, self.network_config)
        if torch.is_grad_enabled() or volume.shape[0] <= EVAL_CHUNK_FRAMESETS:
            logits = self.net(volume)
        else:  # whole-video validation: bound the activations held by one forward
            logits = torch.cat([self.net(chunk) for chunk in volume.split(EVAL_CHUNK_FRAMESETS)])
        return logits.view(x.shape[0], -1, self.network_config.num_labels)

    def forward_head(self, features: Tensor) -> Tensor:
        """Per-frameset logits ``[B, F, 17]`` -> ``[log(1 - p), log(p)]`` with p the mean AI_GEN sigmoid."""
        logits = features[..., AI_GEN].float()
        count = math.log(logits.shape[1])
        log_p = torch.logsumexp(F.logsigmoid(logits), dim=1) - count
        log_not_p = torch.logsumexp(F.logsigmoid(-logits), dim=1) - count
        return torch.stack([log_not_p, log_p], dim=1)

    def training_losses(self, features: Tensor, logits: Tensor, batch: dict[str, Any]) -> dict[str, Tensor]:
        if "multi_labels" not in batch or self.config.label_loss_weight == 0:
            return {}
        loss = masked_label_bce(features.float(), batch["multi_labels"], batch["label_mask"])
        return {"label_bce": self.config.label_loss_weight * loss}

    def make_dataset(self, items: list[MediaItem], stage: str, data: dict[str, Any]) -> CakeLensDataset:
        """Training: one frameset at a random offset. Validation (``data.val_framesets: all``, the
        default): the whole video, up to ``data.val_max_framesets`` framesets, judged by the mean of
        its framesets' probabilities (the original verdict; needs ``eval_batch_size: 1``, as videos
        differ in length). Calibration and other evaluation: the benchmark's input, the first frameset,
        which is what the exported model will be calibrated for."""
        cfg = self.network_config
        train = stage == "train"
        geometry = data.get("train_geometry", "benchmark") if train else "benchmark"
        max_framesets = None
        if stage == "val" and data.get("val_framesets", "all") != "benchmark":
            if data.get("val_framesets", "all") != "all":
                raise ConfigError(None, "data.val_framesets", f"use 'all' or 'benchmark', got {data['val_framesets']!r}")
            if int(data.get("eval_batch_size") or data.get("batch_size", 1)) != 1:
                raise ConfigError(None, "data.eval_batch_size", "whole-video validation (data.val_framesets: all) "
                                  "needs eval_batch_size: 1 (videos differ in length), or val_framesets: benchmark")
            max_framesets = int(data.get("val_max_framesets", 8))
        loader = FramesetLoader(cfg.frameset_size, cfg.crop, random_offset=train, geometry=geometry,
                                max_framesets=max_framesets)
        return CakeLensDataset(items, load=loader, target="binary")

    def example_input(self, batch_size: int = 2) -> Tensor:
        cfg = self.network_config
        return torch.randint(0, 256, (batch_size, cfg.frameset_size, 3, cfg.crop, cfg.crop), dtype=torch.uint8)

    def extra_callbacks(self) -> list[L.Callback]:
        """Callbacks this detector wants in the Trainer (TensorBoard histograms/PR curves when enabled)."""
        every = int(self.config.tensorboard_every_n_steps)
        return [CakeLensTensorBoardCallback(every)] if every > 0 else []

    def summary(self) -> dict[str, Any]:
        return {"weights": self.config.weights or "random init",
                "parameters": sum(p.numel() for p in self.net.parameters())}

    def preprocessing(self) -> dict[str, Any]:
        # The original never resizes; the benchmark always does. resize = crop keeps the original
        # pixel scale for inputs of that size, and 9 consecutive frames are exactly one frameset.
        cfg = self.network_config
        return {"num_frames": cfg.frameset_size, "resize": [cfg.crop, cfg.crop]}

    def export_spec(self):
        from export.spec import ExportSpec

        cfg = self.network_config
        state = {f"net.{k}": v.detach().contiguous().float() for k, v in self.net.state_dict().items()}
        state.update(self.calibration_export_state())
        return ExportSpec(
            modality="video",
            model_class="CakeLensStandalone",
            sources=["heads", "cakelens"],
            init_kwargs={"width": cfg.width, "channel_step": cfg.channel_step, "num_blocks": cfg.num_blocks,
                         "frameset_size": cfg.frameset_size, "crop": cfg.crop, "hidden": list(cfg.hidden),
                         "num_labels": cfg.num_labels, "pool": cfg.pool, "negative_slope": cfg.negative_slope,
                         "norm_eps": cfg.norm_eps, "mean": list(cfg.mean), "std": list(cfg.std),
                         "ai_gen_index": AI_GEN, "num_classes": 2},
            state_dict=state,
            preprocessing=self.preprocessing(),
            num_classes=2,
            name=f"{self.arch}-v5",
        )


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

    def on_validation_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any,
                                batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        # the module's validation step returns its logits: no second (full-precision) forward pass here
        if outputs is None or trainer.sanity_checking:
            return
        self._probabilities.append(torch.as_tensor(prob_fake_from_logits(outputs["logits"])))
        self._targets.append(outputs["target"] != 0)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        writer = self._writer(trainer)
        if writer is not None and self._probabilities:
            writer.add_pr_curve("val/pr_curve_ai_gen", torch.cat(self._targets), torch.cat(self._probabilities),
                                trainer.global_step)
        self._probabilities.clear()
        self._targets.clear()


# --------------------------------------------------------------------------------------------- detect CLI
def detect_cakelens(paths: Sequence[str | Path], weights: str | Path, device: str = "cpu", batch_size: int = 4,
                    json_out: str | Path | None = None, progress: bool = True,
                    config: CakeLensConfig | None = None) -> list[dict[str, Any]]:
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
        results.append({"video": str(path), "frame_count": verdict["frame_count"],
                        "predictions": verdict["probabilities"]})
    if json_out is not None:
        write_json(Path(json_out), results[0] if len(results) == 1 else results)
    return results


def format_cakelens_report(result: dict[str, Any]) -> str:
    """Human-readable verdict like the original tool: one ``LABEL: xx.xx%`` line per label."""
    lines = [f"{result['video']} ({result['frame_count']} frames)"]
    lines += [f"  {label:<12s} {100.0 * p:6.2f}%" for label, p in result["predictions"].items()]
    return "\n".join(lines)


__all__ = ["CakeLensDetector", "CakeLensDetectorConfig", "CakeLensDataset", "CakeLensTensorBoardCallback",
           "FramesetLoader", "detect_cakelens", "format_cakelens_report", "generator_targets",
           "masked_label_bce", "CAKELENS_MEAN", "CAKELENS_STD"]
