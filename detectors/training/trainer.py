"""Lightning Trainer assembly: callbacks, loggers and atomic checkpoint writes."""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import EarlyStopping, LearningRateMonitor, ModelCheckpoint, TQDMProgressBar
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from lightning.pytorch.plugins.io import TorchCheckpointIO

from detectors.atomic import atomic_path
from detectors.settings import parse_trainer_config
from detectors.training.run import RunDir

# Keys of the ``trainer:`` section that configure this module's callbacks rather than the Trainer.
CALLBACK_KEYS = frozenset({"monitor", "early_stopping_patience", "early_stopping_min_delta"})


class AtomicCheckpointIO(TorchCheckpointIO):
    """torch.save into a temp file, then rename: a crash never leaves a truncated last.ckpt."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        with atomic_path(os.fspath(path)) as tmp:
            torch.save(checkpoint, tmp)


def build_trainer(trainer_config: Any, run: RunDir,
                  extra_callbacks: list[L.Callback] | None = None) -> tuple[L.Trainer, ModelCheckpoint]:
    """A Trainer writing into ``run`` from the ``trainer:`` section (a ``TrainerConfig``): best +
    last checkpoints on ``monitor`` (default val/score), TensorBoard and CSV logs, optional early
    stopping on the same metric; every other field is a ``lightning.Trainer`` argument."""
    trainer_config = parse_trainer_config(trainer_config)
    monitor = trainer_config.monitor
    mode = "min" if monitor.endswith("loss") else "max"
    checkpoint = ModelCheckpoint(dirpath=run.checkpoints, filename="best", monitor=monitor, mode=mode,
                                 save_last=True, save_top_k=1, auto_insert_metric_name=False)
    callbacks: list[L.Callback] = [checkpoint, LearningRateMonitor(logging_interval="step")]
    if trainer_config.enable_progress_bar is not False:
        callbacks.append(TQDMProgressBar(refresh_rate=5))
    if trainer_config.early_stopping_patience is not None:
        # counted in validation runs; the best checkpoint, not the last, is what gets calibrated
        callbacks.append(EarlyStopping(monitor=monitor, mode=mode, patience=trainer_config.early_stopping_patience,
                                       min_delta=trainer_config.early_stopping_min_delta))
    kwargs = {f.name: getattr(trainer_config, f.name) for f in dataclasses.fields(trainer_config)
              if f.name not in CALLBACK_KEYS}
    loggers = [TensorBoardLogger(save_dir=run.logs, name="tensorboard", version=""),
               CSVLogger(save_dir=run.logs, name="csv", version="")]
    trainer = L.Trainer(
        default_root_dir=run.root,
        callbacks=[*callbacks, *(extra_callbacks or [])],
        logger=loggers,
        plugins=[AtomicCheckpointIO()],
        enable_model_summary=False,
        **kwargs,
    )
    return trainer, checkpoint
