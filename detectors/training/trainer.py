"""Lightning Trainer assembly: callbacks, loggers and atomic checkpoint writes."""

from __future__ import annotations

import inspect
import os
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import EarlyStopping, LearningRateMonitor, ModelCheckpoint, TQDMProgressBar
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from lightning.pytorch.plugins.io import TorchCheckpointIO

from detectors.atomic import atomic_path
from detectors.training.run import RunDir

# The run directory owns these Trainer arguments (checkpoints, loggers, atomic writes; barebones and
# fast_dev_run switch those off); every other lightning.Trainer argument may be set in ``trainer:``.
_RUN_OWNED = {"callbacks", "logger", "plugins", "default_root_dir", "enable_checkpointing", "enable_model_summary",
              "barebones", "fast_dev_run"}
TRAINER_KEYS = frozenset(inspect.signature(L.Trainer.__init__).parameters) - _RUN_OWNED - {"self"}
# Keys of the ``trainer:`` section that configure this module's callbacks rather than the Trainer.
CALLBACK_KEYS = {"monitor", "early_stopping_patience", "early_stopping_min_delta"}


class AtomicCheckpointIO(TorchCheckpointIO):
    """torch.save into a temp file, then rename: a crash never leaves a truncated last.ckpt."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        with atomic_path(os.fspath(path)) as tmp:
            torch.save(checkpoint, tmp)


def build_trainer(trainer_config: dict[str, Any], run: RunDir,
                  extra_callbacks: list[L.Callback] | None = None) -> tuple[L.Trainer, ModelCheckpoint]:
    """A Trainer writing into ``run``: best + last checkpoints on ``trainer_config["monitor"]``
    (default val/score), TensorBoard and CSV logs, optional early stopping on the same metric."""
    unknown = set(trainer_config) - TRAINER_KEYS - CALLBACK_KEYS
    if unknown:
        from detectors.errors import ConfigError

        owned = sorted(unknown & _RUN_OWNED)
        problem = (f"{owned} cannot be set: the run directory owns checkpoints, loggers and callbacks" if owned else
                   f"unknown key(s) {sorted(unknown)}: not lightning.Trainer arguments nor {sorted(CALLBACK_KEYS)}")
        raise ConfigError(None, "trainer", problem)
    monitor = trainer_config.get("monitor", "val/score")
    mode = "min" if monitor.endswith("loss") else "max"
    checkpoint = ModelCheckpoint(dirpath=run.checkpoints, filename="best", monitor=monitor, mode=mode,
                                 save_last=True, save_top_k=1, auto_insert_metric_name=False)
    callbacks: list[L.Callback] = [checkpoint, LearningRateMonitor(logging_interval="step")]
    if trainer_config.get("enable_progress_bar", True):
        callbacks.append(TQDMProgressBar(refresh_rate=5))
    patience = trainer_config.get("early_stopping_patience")
    if patience is not None:
        # counted in validation runs; the best checkpoint, not the last, is what gets calibrated
        callbacks.append(EarlyStopping(monitor=monitor, mode=mode, patience=int(patience),
                                       min_delta=float(trainer_config.get("early_stopping_min_delta", 0.0))))
    kwargs = {k: v for k, v in trainer_config.items() if k in TRAINER_KEYS}
    kwargs.setdefault("log_every_n_steps", 5)
    kwargs.setdefault("accelerator", "auto")
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
