"""An image detector scoring videos: ``detectors.evaluate --frames-per-video N --aggregate mean|max``.

Each video gives ``N`` frames spread evenly from its first to its last frame (videos stored as frame
folders or parquet shards alike), and every frame is prepared as the benchmark prepares an image for
the model (centre crop to the aspect of ``preprocessing.resize``, OpenCV bilinear resize) and scored
as one. A video's p(fake) is the mean (DeepfakeBench's video-level rule) or the maximum of its
frames' p(fake), its decision ``p(fake) > 0.5``. Both levels are reported: video-level metrics are
the evaluation's headline (``base``), frame-level ones (every frame labelled as its video)
``frame_level``; ``predictions.csv`` lists videos, ``predictions_frames.csv`` frames.
"""

from __future__ import annotations

import csv
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from detectors.atomic import atomic_open
from detectors.data.catalog import MediaItem
from detectors.data.dataset import MediaDataset, collate_skip, is_empty_batch
from detectors.metrics import benchmark_outputs, binary_metrics, per_dataset_metrics, provenance_weights

Aggregate = Literal["mean", "max"]
AGGREGATES = ("mean", "max")
logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class FramesAsImages:
    """Picklable ``path -> uint8 [N, 3, H, W]``: ``frames`` frames evenly spread over the video, each
    prepared as the benchmark prepares an image of an image submission with ``resize`` = (H, W)."""

    frames: int
    resize: tuple[int, int]

    def __call__(self, path: str) -> torch.Tensor:
        from detectors.image.transforms import benchmark_resize
        from detectors.video.io import read_video_frames
        from detectors.video.sampling import FrameSampler

        return benchmark_resize(read_video_frames(path, FrameSampler("uniform", self.frames), None), self.resize)


def frames_loader(preprocessing: dict[str, Any], frames: int) -> FramesAsImages:
    """:class:`FramesAsImages` for an image submission's ``preprocessing`` (``resize`` required)."""
    resize = preprocessing.get("resize")
    if not (isinstance(resize, (list, tuple)) and len(resize) == 2):
        raise ValueError("model_config.yaml preprocessing.resize is required for image submissions")
    if frames < 1:
        raise ValueError(f"--frames-per-video must be >= 1, got {frames}")
    return FramesAsImages(int(frames), (int(resize[0]), int(resize[1])))


def run_frames_pass(
    model: torch.nn.Module,
    items: list[MediaItem],
    load: Callable[[str], torch.Tensor],
    *,
    batch_size: int,
    num_workers: int,
    device: torch.device,
    description: str,
) -> dict[str, Any]:
    """Score every frame of every video: ``{"items", "frame_logits" [V, N, C], "skipped", "ms"}``
    (``ms``: batch time per video, as the benchmark times a batch). ``batch_size`` counts videos."""
    from export.benchmark_loader import run_model

    loader = DataLoader(
        MediaDataset(items, load=load), batch_size=batch_size, num_workers=num_workers, collate_fn=collate_skip
    )
    logits, indices, per_video_ms = [], [], []
    skipped = 0
    for batch in tqdm(loader, desc=description, unit="batch"):
        skipped += int(batch["skipped"])
        if is_empty_batch(batch):
            continue
        clips = batch["x"].to(device)  # [B, N, 3, H, W]
        start = time.perf_counter()
        out = run_model(model, clips.flatten(0, 1))  # the frames as a batch of images
        if device.type == "cuda":
            torch.cuda.synchronize()
        per_video_ms.extend([1000 * (time.perf_counter() - start) / clips.shape[0]] * clips.shape[0])
        logits.append(out.float().cpu().reshape(clips.shape[0], clips.shape[1], -1))
        indices.extend(batch["index"].tolist())
    frame_logits = torch.cat(logits) if logits else torch.zeros(0, 1, 2)
    return {
        "items": [items[i] for i in indices],
        "frame_logits": frame_logits,
        "skipped": skipped,
        "ms": per_video_ms,
        "requested": len(items),
    }


def aggregate_probabilities(frame_prob: np.ndarray, how: Aggregate) -> np.ndarray:
    """``[V, N]`` frame p(fake) -> ``[V]`` video p(fake) (NaN when a frame's is NaN)."""
    if how == "mean":
        return frame_prob.mean(axis=1)
    if how == "max":
        return frame_prob.max(axis=1)
    raise ValueError(f"--aggregate must be one of {', '.join(AGGREGATES)}, got {how!r}")


def score_frames_pass(
    result: dict[str, Any], how: Aggregate, composition: dict[str, float] | None = None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(video-level metrics, frame-level metrics) of :func:`run_frames_pass`'s result; adds
    ``prob``, ``pred``, ``finite`` (per video) and ``frame_prob`` to ``result``. Videos with a
    non-finite frame logit are left out of both and counted in ``non_finite_outputs``."""
    logits: torch.Tensor = result["frame_logits"]
    videos, frames = logits.shape[0], logits.shape[1]
    _, frame_prob, frame_pred = benchmark_outputs(logits.reshape(videos * frames, -1))
    frame_prob = frame_prob.reshape(videos, frames)
    video_prob = aggregate_probabilities(frame_prob, how)
    finite = np.isfinite(video_prob)
    result.update(
        {"frame_prob": frame_prob, "prob": video_prob, "pred": (video_prob > 0.5).astype(np.int64), "finite": finite}
    )
    non_finite = int((~finite).sum())
    if non_finite:
        logger.warning("%d video(s) had NaN or infinite frame logits and are left out of the metrics", non_finite)
    items = [item for item, ok in zip(result["items"], finite) if ok]
    base: dict[str, Any] = {"skipped_unreadable": result["skipped"], "non_finite_outputs": non_finite}
    if not items:
        return {"n": 0, **base}, {"n": 0, **base}
    labels = np.array([item.label for item in items])
    datasets = [item.dataset for item in items]
    weights, report = (None, {}) if composition is None else provenance_weights(datasets, composition)
    video = binary_metrics(labels, video_prob[finite], datasets=datasets, sample_weight=weights)
    video.update(report)
    video["per_generator"] = per_dataset_metrics(
        labels,
        video_prob[finite],
        (video_prob[finite] > 0.5).astype(np.int64),
        [item.generator_family or ("real" if item.label == 0 else "unspecified") for item in items],
    )
    ms = np.array(result["ms"]) if result["ms"] else np.zeros(1)
    video.update({"ms_per_sample_mean": float(ms.mean()), "ms_per_sample_p95": float(np.percentile(ms, 95)), **base})
    frame = binary_metrics(
        np.repeat(labels, frames),
        frame_prob[finite].reshape(-1),
        preds=frame_pred.reshape(videos, frames)[finite].reshape(-1),
        datasets=list(np.repeat(np.array(datasets, dtype=object), frames)),
    )
    frame.update({"frames_per_video": frames, **base})
    return video, frame


def write_frame_predictions(video_path: Path, frame_path: Path, result: dict[str, Any]) -> None:
    """``predictions.csv`` (one row per video) and ``predictions_frames.csv`` (one per frame)."""
    with atomic_open(video_path, "w") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "dataset", "label", "prob_fake"])
        for item, p in zip(result["items"], result["prob"]):
            writer.writerow([item.path, item.dataset, item.label, f"{float(p):.8f}"])
    with atomic_open(frame_path, "w") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "dataset", "label", "frame", "prob_fake"])
        for item, probs in zip(result["items"], result["frame_prob"]):
            for index, p in enumerate(probs):
                writer.writerow([item.path, item.dataset, item.label, index, f"{float(p):.8f}"])


__all__ = [
    "AGGREGATES",
    "FramesAsImages",
    "aggregate_probabilities",
    "frames_loader",
    "run_frames_pass",
    "score_frames_pass",
    "write_frame_predictions",
]
