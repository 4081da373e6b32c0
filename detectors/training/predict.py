"""Batched inference over a loader: logits, labels and provenance for calibration and evaluation."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
from torch.utils.data import DataLoader
from tqdm import tqdm  # not tqdm.auto: its asyncio variant calls iter() on a DataLoader twice (double workers)

from detectors.base import Detector
from detectors.data.dataset import classification_target, is_empty_batch
from detectors.errors import ConfigError


def resolve_device(name: str) -> torch.device:
    """``--device`` of the inference commands as a torch device; a ConfigError (one line) for a
    malformed name or a device this machine does not have, instead of a CUDA/MPS traceback later."""
    try:
        device = torch.device(name)
    except RuntimeError as error:
        raise ConfigError(None, f"--device {name}", f"not a device name ({error})") from error
    available = {"cuda": torch.cuda.is_available, "mps": torch.backends.mps.is_available}
    if device.type in available and not available[device.type]():
        raise ConfigError(None, f"--device {name}", "no such device on this machine (try --device cpu)")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ConfigError(None, f"--device {name}", f"this machine has {torch.cuda.device_count()} CUDA device(s)")
    return device


@dataclass
class Predictions:
    logits: torch.Tensor  # [N, C] float32
    labels: torch.Tensor  # [N] binary 0 real / 1 fake
    class_index: torch.Tensor  # [N] 0 real / 1 synthetic / 2 semisynthetic
    paths: list[str] = field(default_factory=list)
    datasets: list[str] = field(default_factory=list)
    skipped: int = 0
    model_seconds: float = 0.0  # time in the model's forward (no decoding), synchronised on CUDA

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def targets(self, num_classes: int) -> torch.Tensor:
        """What a classifier of ``num_classes`` outputs is scored against (see ``classification_target``)."""
        return classification_target(self.labels, self.class_index, num_classes)


@torch.inference_mode()
def predict(
    detector: Detector,
    loader: DataLoader,
    *,
    calibrated: bool = True,
    device: str | torch.device = "cpu",
    autocast_dtype: torch.dtype | None = None,
    description: str = "predict",
) -> Predictions:
    """Run ``detector`` over ``loader`` (MediaDataset batches); unreadable samples are counted, not fatal."""
    detector = detector.to(device).eval()
    dataset = loader.dataset
    items = getattr(dataset, "items", None)
    names = getattr(dataset, "dataset_names", None)
    logits, labels, classes, paths, datasets = [], [], [], [], []
    skipped, model_seconds = 0, 0.0
    device = torch.device(device)
    for batch in tqdm(loader, desc=description, leave=False, disable=len(loader) < 2):
        skipped += int(batch.get("skipped", 0))
        if is_empty_batch(batch):
            continue
        batch = {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}
        _synchronize(device)
        start = time.perf_counter()
        with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            out = detector.forward_batch(batch)[1]
            out = detector.calibrator(out) if calibrated else out
        _synchronize(device)
        model_seconds += time.perf_counter() - start
        logits.append(out.float().cpu())
        labels.append(batch["label"].cpu())
        classes.append(batch["class_index"].cpu())
        index = batch["index"].tolist()
        if items is not None:
            paths.extend(items[i].path for i in index)
            datasets.extend(items[i].dataset for i in index)
        elif names is not None:
            datasets.extend(names[i] for i in batch["dataset_id"].tolist())
    if not logits:
        empty = torch.zeros(0, dtype=torch.long)
        return Predictions(torch.zeros(0, detector.num_classes), empty, empty, skipped=skipped)
    return Predictions(
        torch.cat(logits), torch.cat(labels), torch.cat(classes), paths, datasets, skipped, model_seconds
    )


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
