"""Lightning Trainer assembly: callbacks, loggers and atomic checkpoint writes."""

from __future__ import annotations

import csv
import dataclasses
import errno
import os
import shutil
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import EarlyStopping, LearningRateMonitor, ModelCheckpoint, TQDMProgressBar
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.plugins.io import TorchCheckpointIO

from detectors.atomic import atomic_open, atomic_path
from detectors.settings import parse_trainer_config
from detectors.training.run import RunDir

# Keys of the ``trainer:`` section that configure this module's callbacks rather than the Trainer.
CALLBACK_KEYS = frozenset({"monitor", "early_stopping_patience", "early_stopping_min_delta"})


class AtomicCheckpointIO(TorchCheckpointIO):
    """torch.save into a temp file, then rename: a crash never leaves a truncated last.ckpt."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        path = os.fspath(path)
        with atomic_path(path) as tmp:
            try:
                torch.save(checkpoint, tmp)
            except RuntimeError as error:
                # torch's writer reports a full disk as "basic_ios::clear: iostream error"
                if "iostream" in str(error) or "write" in str(error).lower():
                    free = shutil.disk_usage(os.path.dirname(path) or ".").free
                    raise OSError(
                        errno.ENOSPC,
                        f"cannot write the checkpoint ({free // 2**20} MiB free on the "
                        "device): no space left on device?",
                        path,
                    ) from error
                raise


class ResumingCSVLogger(CSVLogger):
    """Lightning's CSV logger, but a resumed run keeps the rows of its finished epochs.

    Lightning's writer deletes an existing ``metrics.csv``; here the file is kept, rows of epochs
    after ``resume_epoch`` (the interrupted epoch, which the resumed run logs again) are dropped,
    and new rows are appended under the existing header.
    """

    def __init__(self, *args: Any, resume_epoch: int | None = None, **kwargs: Any) -> None:
        self._resume_epoch = resume_epoch
        super().__init__(*args, **kwargs)

    @property
    def experiment(self) -> Any:
        if self._experiment is None:
            log_dir = self.log_dir
            self._experiment = _AppendingWriter(log_dir, self._resume_epoch)
        return self._experiment


class _AppendingWriter(ExperimentWriter):
    def __init__(self, log_dir: str, resume_epoch: int | None) -> None:
        self._resume_epoch = resume_epoch
        super().__init__(log_dir)

    def _check_log_dir_exists(self) -> None:
        path = Path(self.metrics_file_path)
        if not path.is_file():
            return
        with path.open(newline="") as handle:
            reader = csv.DictReader(handle)
            header, rows = list(reader.fieldnames or []), list(reader)
        if self._resume_epoch is None:  # a fresh run in a directory of an earlier one: start over
            path.unlink()
            return
        kept = [row for row in rows if _epoch(row) is None or _epoch(row) <= self._resume_epoch]
        self.metrics_keys = sorted(header)
        with atomic_open(path, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=self.metrics_keys)
            writer.writeheader()
            writer.writerows(kept)


def _epoch(row: dict[str, str]) -> int | None:
    try:
        return int(float(row.get("epoch") or ""))
    except ValueError:
        return None


def checkpoint_epoch(path: Path) -> int | None:
    """The epoch a Lightning checkpoint was saved in (its tensors are not read)."""
    try:
        return int(torch.load(path, map_location="cpu", weights_only=False, mmap=True)["epoch"])
    except Exception:  # an unreadable checkpoint: Lightning reports it when resuming
        return None


def build_trainer(
    trainer_config: Any, run: RunDir, extra_callbacks: list[L.Callback] | None = None, resume: bool = False
) -> tuple[L.Trainer, ModelCheckpoint]:
    """A Trainer writing into ``run`` from the ``trainer:`` section (a ``TrainerConfig``): the best
    checkpoint on ``monitor`` (default val/score), ``last.ckpt`` after every epoch (resume loses at
    most the epoch in progress), TensorBoard and CSV logs (kept across resumes), optional early
    stopping on the same metric; every other field is a ``lightning.Trainer`` argument."""
    trainer_config = parse_trainer_config(trainer_config)
    monitor = trainer_config.monitor
    mode = "min" if monitor.endswith("loss") else "max"
    checkpoint = ModelCheckpoint(
        dirpath=run.checkpoints,
        filename="best",
        monitor=monitor,
        mode=mode,
        save_top_k=1,
        auto_insert_metric_name=False,
    )
    # every finished epoch, whatever the score: a separate callback, as ModelCheckpoint's save_last
    # follows its own top-k saves
    last = ModelCheckpoint(
        dirpath=run.checkpoints,
        filename="last",
        monitor=None,
        save_top_k=1,
        every_n_epochs=1,
        enable_version_counter=False,
    )
    callbacks: list[L.Callback] = [checkpoint, last, LearningRateMonitor(logging_interval="step")]
    if trainer_config.enable_progress_bar is not False:
        callbacks.append(TQDMProgressBar(refresh_rate=5))
    if trainer_config.early_stopping_patience is not None:
        # counted in validation runs; the best checkpoint, not the last, is what gets calibrated
        callbacks.append(
            EarlyStopping(
                monitor=monitor,
                mode=mode,
                patience=trainer_config.early_stopping_patience,
                min_delta=trainer_config.early_stopping_min_delta,
            )
        )
    kwargs = {
        f.name: getattr(trainer_config, f.name)
        for f in dataclasses.fields(trainer_config)
        if f.name not in CALLBACK_KEYS
    }
    resume_epoch = checkpoint_epoch(run.last_checkpoint) if resume and run.last_checkpoint.is_file() else None
    loggers = [
        TensorBoardLogger(save_dir=run.logs, name="tensorboard", version=""),
        ResumingCSVLogger(save_dir=run.logs, name="csv", version="", resume_epoch=resume_epoch),
    ]
    trainer = L.Trainer(
        default_root_dir=run.root,
        callbacks=[*callbacks, *(extra_callbacks or [])],
        logger=loggers,
        plugins=[AtomicCheckpointIO()],
        enable_model_summary=False,
        **kwargs,
    )
    return trainer, checkpoint
