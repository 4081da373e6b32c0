"""The LightningModule every detector trains with: model, loss, metrics, optimiser, scheduler.

Method-specific pieces stay in the detector (``training_losses`` for GenD's uniformity/alignment,
BreathNet's contrastive and breath losses, ...); everything else is shared here.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

import lightning as L
import torch
import torch.distributed as dist
from lightning_utilities.core.apply_func import apply_to_collection

from calibration import build_loss
from calibration.losses import LossConfig, class_weight_vector
from detectors.base import Detector
from detectors.config import parse
from detectors.data.dataset import is_empty_batch
from detectors.errors import ConfigError
from detectors.metrics import binary_metrics, predictions_from_logits, prob_fake_from_logits
from detectors.settings import OptimConfig

log = logging.getLogger(__name__)

IMBALANCE_SHARE = 0.2  # a fake share below this, without balanced sampling or loss weights, is warned about


def _record_if_cuda(tensor: torch.Tensor, stream: torch.cuda.Stream) -> None:
    if tensor.is_cuda:
        tensor.record_stream(stream)


class DetectorModule(L.LightningModule):
    def __init__(
        self,
        detector: Detector,
        loss: LossConfig | Mapping[str, Any] | None = None,
        optim: OptimConfig | Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.detector = detector
        self.loss_config = parse(LossConfig, loss, "loss")
        self.optim_config = parse(OptimConfig, optim, "optim")
        self.class_weight: list[float] | None = None  # resolved in setup when loss.pos_weight is auto
        if self.loss_config.pos_weight != "auto":
            self.class_weight = class_weight_vector(self.loss_config, detector.num_classes)
        self.criterion = build_loss(self.loss_config, self.class_weight)
        self.skipped_samples = {"train": 0, "val": 0}  # draws (balanced sampling may repeat a file)
        self.unreadable_train_files: set[str] = set()  # this process's; named by the dataset
        self._val_outputs: list[tuple[torch.Tensor, torch.Tensor]] = []
        self._val_skipped = 0  # unreadable samples of the current validation epoch (this process)
        self.last_val_metrics: dict[str, Any] = {}
        self._copy_stream: torch.cuda.Stream | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.detector(x)

    def setup(self, stage: str) -> None:
        """Before fitting, hand the detector its training data (e.g. ReStraV's feature statistics);
        the DataModule's own ``setup`` has built the datasets by then."""
        datamodule = getattr(self._trainer, "datamodule", None) if self._trainer is not None else None
        if stage == "fit" and datamodule is not None and hasattr(datamodule, "split_items"):
            self.weigh_classes(
                [item.label for item in datamodule.split_items["train"]],
                balanced_sampling=bool(getattr(datamodule.data, "balanced_sampling", False)),
            )
        if stage == "fit" and datamodule is not None and hasattr(datamodule, "dataset"):
            self.detector.on_train_data(datamodule.dataset("train"), datamodule.data)

    def weigh_classes(self, train_labels: Sequence[int], balanced_sampling: bool) -> None:
        """Resolve ``loss.pos_weight: auto`` (negatives / positives of ``train_labels``, binary labels)
        and warn once when fakes are rare and neither balanced sampling nor a loss weight corrects it."""
        positives = sum(1 for label in train_labels if label != 0)
        negatives = len(train_labels) - positives
        if self.loss_config.pos_weight == "auto":
            self.class_weight = class_weight_vector(self.loss_config, self.detector.num_classes, (negatives, positives))
            self.criterion = build_loss(self.loss_config, self.class_weight)
            log.info(
                "loss.pos_weight auto: %d real / %d fake training samples -> %.4g",
                negatives,
                positives,
                self.class_weight[1],
            )
        share = positives / max(1, len(train_labels))
        if share < IMBALANCE_SHARE and not balanced_sampling and self.class_weight is None and not _warned_imbalance:
            _warned_imbalance.append(True)
            log.warning(
                "only %.1f%% of the training samples are fake and neither data.balanced_sampling nor "
                "loss.pos_weight / loss.class_weights is on: a model can reach a low loss by calling "
                "everything real. Set loss.pos_weight: auto or data.balanced_sampling: true",
                100 * share,
            )

    def training_target(self, batch: dict[str, Any], logits: torch.Tensor) -> torch.Tensor:
        """The detector's classification target, or the batch's soft labels (``score``: a teacher's
        p(fake), from a dataset's ``score_column``) when it has them."""
        target = self.detector.targets(batch, logits)
        score = batch.get("score")
        if score is None:
            return target
        if self.detector.num_classes != 2:
            raise ConfigError(None, "score_column", "soft labels train binary heads (model.num_classes: 2)")
        if score.shape != target.shape:
            raise ConfigError(
                None,
                "score_column",
                f"{self.detector.arch} trains on {tuple(target.shape)} targets per "
                f"batch; soft labels give one per file ({tuple(score.shape)})",
            )
        return score.float()

    def transfer_batch_to_device(self, batch: Any, device: torch.device, dataloader_idx: int) -> Any:
        """On CUDA, copy the (pinned) batch on a side stream so the host-to-device transfer overlaps
        with the kernels of the previous step still running on the compute stream (a lesson of
        CakeLens' training: https://fangpenlin.com/posts/2025/06/03/i-built-ai-gen-video-detection-model-and-browser-extension-in-a-month/)."""
        if device.type != "cuda" or is_empty_batch(batch):
            return super().transfer_batch_to_device(batch, device, dataloader_idx)
        if self._copy_stream is None:
            self._copy_stream = torch.cuda.Stream(device)
        compute = torch.cuda.current_stream(device)
        with torch.cuda.stream(self._copy_stream):
            moved = super().transfer_batch_to_device(batch, device, dataloader_idx)
        compute.wait_stream(self._copy_stream)
        # memory allocated on the side stream is used on the compute stream: keep the allocator honest
        # for every tensor of the batch, however deeply nested (lists of clips, dicts of extras)
        apply_to_collection(moved, torch.Tensor, _record_if_cuda, compute)
        return moved

    # ------------------------------------------------------------------ steps
    def training_step(self, batch: dict[str, Any] | None, batch_idx: int) -> torch.Tensor | None:
        if batch is not None:
            self.skipped_samples["train"] += int(batch.get("skipped", 0))
            self.unreadable_train_files.update(batch.get("skipped_paths", ()))
        if is_empty_batch(batch):  # every sample of the batch was unreadable
            if self._trainer is not None and self._trainer.world_size > 1:
                # every DDP rank must join the gradient all-reduce: a zero loss touching all weights
                return sum(p.sum() for p in self.detector.parameters() if p.requires_grad) * 0.0
            return None
        features, logits = self.detector.forward_batch(batch)
        target = self.training_target(batch, logits)
        classification = self.criterion(logits.float(), target)
        extra = self.detector.training_losses(features, logits, batch)
        loss = classification + sum(extra.values()) if extra else classification
        batch_size = target.shape[0]
        self.log("train/loss", loss, prog_bar=True, batch_size=batch_size)
        self.log("train/classification_loss", classification, batch_size=batch_size)
        for name, value in extra.items():
            self.log(f"train/{name}", value, batch_size=batch_size)
        return loss

    def validation_step(self, batch: dict[str, Any] | None, batch_idx: int) -> dict[str, torch.Tensor] | None:
        """Collects this batch's logits for the epoch's metrics; returns them (CPU, float32) so callbacks
        can use the validation forward pass instead of running their own."""
        if batch is not None:
            self.skipped_samples["val"] += int(batch.get("skipped", 0))
            self._val_skipped += int(batch.get("skipped", 0))
        if is_empty_batch(batch):
            return None
        _, logits = self.detector.forward_batch(batch)
        target = self.detector.targets(batch, logits)
        logits, target = logits.detach().float().cpu(), target.detach().cpu()
        self._val_outputs.append((logits, target))
        return {"logits": logits, "target": target}

    def on_validation_epoch_end(self) -> None:
        outputs = _gather(list(self._val_outputs))
        self._val_outputs.clear()
        skipped, self._val_skipped = self._val_skipped, 0
        if not outputs:
            if self._trainer is not None and not self._trainer.sanity_checking:
                # Without a single readable sample there is no val/score for checkpointing; say why
                # instead of letting ModelCheckpoint fail with "could not find the monitored key".
                raise ConfigError(
                    None,
                    "val split",
                    f"no readable sample in the whole validation split ({skipped} "
                    "unreadable here, see the warnings above); fix or remove those files",
                )
            return
        logits = torch.cat([o[0] for o in outputs])
        targets = torch.cat([o[1] for o in outputs])
        loss = float(self.criterion(logits, targets))
        metrics = binary_metrics(
            (targets != 0).long().numpy(), prob_fake_from_logits(logits), preds=predictions_from_logits(logits)
        )
        metrics["loss"] = loss
        self.last_val_metrics = metrics
        for key in ("loss", "score", "mcc", "brier", "accuracy", "roc_auc", "ece"):
            value = metrics.get(key)
            if value is not None and math.isfinite(value):
                # values are identical on every rank (gathered), so no further sync is needed
                self.log(f"val/{key}", float(value), prog_bar=key in ("score", "roc_auc"), sync_dist=False)

    # ------------------------------------------------------------------ optimisation
    def configure_optimizers(self) -> dict[str, Any]:
        cfg = self.optim_config
        groups = self.detector.parameter_groups(cfg.lr, cfg.backbone_lr, cfg.weight_decay)
        if not groups:
            raise ConfigError(None, "model", "nothing to train: every parameter is frozen")
        if cfg.optimizer == "adamw":
            optimizer = torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas))
        elif cfg.optimizer == "adam":
            optimizer = torch.optim.Adam(groups, lr=cfg.lr, betas=tuple(cfg.betas))
        else:
            optimizer = torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum)
        if cfg.scheduler == "none":
            return {"optimizer": optimizer}
        total = max(1, int(self.trainer.estimated_stepping_batches))
        if cfg.scheduler == "cosine_restarts":  # GenD
            period = cfg.restart_period or max(1, total // 2)
            sched = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(optimizer, T_0=period)
        else:
            warmup = int(cfg.warmup_fraction * total)
            sched = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: _warmup_cosine(step, warmup, total))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def _warmup_cosine(step: int, warmup: int, total: int) -> float:
    if step < warmup:
        return (step + 1) / (warmup + 1)
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def _gather(outputs: list[Any]) -> list[Any]:
    """All ranks' validation outputs (lists of different lengths are fine: object gather)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return outputs
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, outputs)
    return [item for rank in gathered for item in rank]


_warned_imbalance: list[bool] = []  # the imbalance warning is given once per process


__all__ = ["DetectorModule"]
