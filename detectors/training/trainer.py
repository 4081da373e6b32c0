"""Lightning Trainer assembly: callbacks, loggers and atomic checkpoint writes."""

from __future__ import annotations

import os
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint, TQDMProgressBar
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from lightning.pytorch.plugins.io import TorchCheckpointIO

from detectors.atomic import atomic_path
from detectors.training.run import RunDir

TRAINER_KEYS = {
    "max_epochs", "max_steps", "accelerator", "devices", "num_nodes", "strategy", "precision",
    "accumulate_grad_batches", "gradient_clip_val", "log_every_n_steps", "limit_train_batches",
    "limit_val_batches", "val_check_interval", "check_val_every_n_epoch", "deterministic", "benchmark",
}


class AtomicCheckpointIO(TorchCheckpointIO):
    """torch.save into a temp file, then rename: a crash never leaves a truncated last.ckpt."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        with atomic_path(os.fspath(path)) as tmp:
            torch.save(checkpoint, tmp)


def build_trainer(trainer_config: dict[str, Any], run: RunDir,
                  extra_callbacks: list[L.Callback] | None = None) -> tuple[L.Trainer, ModelCheckpoint]:
    unknown = set(trainer_config) - TRAINER_KEYS - {"monitor"}
    if unknown:
        from detectors.errors import ConfigError

        raise ConfigError(None, "trainer", f"unknown key(s) {sorted(unknown)}; known: {sorted(TRAINER_KEYS)}")
    monitor = trainer_config.get("monitor", "val/score")
    checkpoint = ModelCheckpoint(dirpath=run.checkpoints, filename="best", monitor=monitor,
                                 mode="min" if monitor.endswith("loss") else "max", save_last=True,
                                 save_top_k=1, auto_insert_metric_name=False)
    kwargs = {k: v for k, v in trainer_config.items() if k in TRAINER_KEYS}
    kwargs.setdefault("log_every_n_steps", 5)
    kwargs.setdefault("accelerator", "auto")
    loggers = [TensorBoardLogger(save_dir=run.logs, name="tensorboard", version=""),
               CSVLogger(save_dir=run.logs, name="csv", version="")]
    trainer = L.Trainer(
        default_root_dir=run.root,
        callbacks=[checkpoint, LearningRateMonitor(logging_interval="step"), TQDMProgressBar(refresh_rate=5),
                   *(extra_callbacks or [])],
        logger=loggers,
        plugins=[AtomicCheckpointIO()],
        enable_model_summary=False,
        **kwargs,
    )
    return trainer, checkpoint
