"""``python -m detectors.image.probe``: the frozen-embedding logistic-regression baseline.

Frozen DINOv2/DINOv3 embeddings -> ``StandardScaler`` -> ``LogisticRegression(max_iter=2000,
class_weight="balanced")``: frozen self-supervised features are a strong free baseline
(Ojha et al., CVPR 2023; Cozzolino et al., CVPRW 2024). The scaler and the regression are folded
into the single Linear head of a frozen :class:`DinoImageDetector`, so the probe is calibrated,
evaluated and exported exactly like every other detector (``python -m export RUN --out DIR``).
The embeddings are cached per image (``--cache-dir``; keyed by the file, its preparation and the
backbone's weights), so another ``--C`` or feature choice on the same data costs seconds.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from detectors import cli
from detectors.atomic import write_json
from detectors.backbones import BackboneConfig
from detectors.base import save_detector
from detectors.cli import command
from detectors.data.catalog import assign_splits, load_items, summarise, write_split
from detectors.data.datamodule import MediaDataModule
from detectors.data.dataset import is_empty_batch
from detectors.errors import ConfigError
from detectors.image.data import ImageDataConfig
from detectors.image.dinov3 import DinoImageDetector, ImageDetectorConfig
from detectors.training.finalize import (
    inference_device,
    metrics_of,
    plot_evaluation,
    print_report,
    save_calibration_logits,
    write_run_predictions,
)
from detectors.training.predict import predict
from detectors.training.run import RunDir
from detectors.tuning import TuningConfig, trainable_summary


@torch.inference_mode()
def embed(detector: DinoImageDetector, loader: torch.utils.data.DataLoader) -> tuple[np.ndarray, np.ndarray, int]:
    """Frozen pooled features of every readable sample: (features [N, D], labels [N], skipped)."""
    device = inference_device()
    detector.to(device).eval()
    features, labels, skipped = [], [], 0
    for batch in loader:
        skipped += int(batch["skipped"])
        if is_empty_batch(batch):
            continue
        if "features" in batch:  # computed (or read from the cache) in the data stage
            features.append(batch["features"].float().cpu())
        else:
            features.append(detector.forward_features(batch["x"].to(device)).float().cpu())
        labels.append(batch["label"])
    if not features:  # every sample unreadable (or an empty split): the caller says what is missing
        return np.zeros((0, 0), dtype=np.float32), np.zeros(0, dtype=np.int64), skipped
    return torch.cat(features).numpy(), torch.cat(labels).numpy(), skipped


def fold_probe_into_head(detector: DinoImageDetector, scaler: StandardScaler, regression: LogisticRegression) -> None:
    """Write ``w . (x - mu) / sigma + b`` into the 2-logit Linear head as ``[-z/2, z/2]``."""
    weight = regression.coef_[0] / scaler.scale_
    bias = regression.intercept_[0] - float(np.dot(weight, scaler.mean_))
    linear = detector.net.head.layers[-1]
    with torch.no_grad():
        w = torch.as_tensor(weight, dtype=linear.weight.dtype)
        linear.weight.copy_(torch.stack([-w / 2, w / 2]))
        linear.bias.copy_(torch.tensor([-bias / 2, bias / 2], dtype=linear.bias.dtype))


def run_probe(
    data: Path,
    backbone: str,
    output: Path,
    *,
    features: str = "both",
    image_size: int = 224,
    batch_size: int = 32,
    num_workers: int = 2,
    seed: int = 0,
    c: float = 1.0,
    overwrite: bool = False,
    cache_dir: Path | None = None,
    feature_cache: bool = True,
) -> Path:
    run = RunDir(output)
    if run.is_finished() and not overwrite:
        raise ConfigError(run.root, None, "a finished run is already here; pass --overwrite or choose another --output")
    run.root.mkdir(parents=True, exist_ok=True)
    started = time.time()
    items = assign_splits(load_items(data, modality="image"), seed=seed)
    write_split(items, run.split)
    config = ImageDetectorConfig(
        backbone=BackboneConfig(name=backbone),
        tuning=TuningConfig(mode="frozen"),
        features=features,
        head_hidden=[],
        dropout=0.0,
        image_size=image_size,
    )
    detector = DinoImageDetector(config)
    data = ImageDataConfig(
        batch_size=batch_size,
        num_workers=num_workers,
        eval_crop="benchmark",
        feature_cache=feature_cache,
        cache_dir=None if cache_dir is None else str(cache_dir),
        decode_workers=num_workers,
        feature_batch_size=batch_size,
    )
    # every split with the benchmark's input (the probe sees no training augmentation); the frozen
    # detector's recipe computes each image's embedding once and caches it
    datamodule = MediaDataModule(items, lambda stage, data: detector.data_recipe("eval", data), data)
    x_train, y_train, skipped_train = embed(detector, datamodule.loader("train"))
    if len(y_train) == 0:
        raise ConfigError(data, "datasets", f"no readable image in the train split ({skipped_train} unreadable)")
    if len(np.unique(y_train)) < 2:
        raise ConfigError(data, "datasets", "the probe needs real and fake images in the train split")
    scaler = StandardScaler().fit(x_train)
    regression = LogisticRegression(max_iter=2000, class_weight="balanced", C=c).fit(scaler.transform(x_train), y_train)
    fold_probe_into_head(detector, scaler, regression)

    device = inference_device()
    calibration = predict(detector, datamodule.loader("calibration"), calibrated=False, device=device)
    save_calibration_logits(run.calibration_logits, calibration, detector.num_classes)
    if len(calibration):
        detector.calibrator.fit(calibration.logits, calibration.targets(detector.num_classes))
    validation = predict(detector, datamodule.loader("val"), calibrated=True, device=device)
    metrics = metrics_of(validation, detector)
    plot_evaluation(validation, run.plots, "probe validation")
    write_run_predictions(run.predictions, validation)
    save_detector(detector.cpu(), run.root)
    run.write_config(
        {
            "arch": detector.arch,
            "modality": "image",
            "probe": {"C": c, "features": features},
            "model": detector.config_dict(),
            "seed": seed,
        }
    )
    write_json(
        run.metrics,
        {
            "validation": metrics,
            "calibrator": detector.calibrator.state(),
            "train_accuracy": float(regression.score(scaler.transform(x_train), y_train)),
        },
    )
    run.write_summary(
        {
            "arch": detector.arch,
            "method": "logistic-regression probe",
            "modality": "image",
            "tuning": "frozen",
            **detector.summary(),
            **trainable_summary(detector),
            "data": summarise(items),
            "skipped_unreadable": {
                "train": skipped_train,
                "calibration": calibration.skipped,
                "val": validation.skipped,
            },
            "train_seconds": round(time.time() - started, 1),
        }
    )
    print_report(run, metrics, None)
    return run.root


@command
def main(argv: list[str] | None = None) -> int:
    parser = cli.ArgumentParser(prog="python -m detectors.image.probe", description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, type=Path, help="dataset YAML")
    parser.add_argument("--backbone", default="facebook/dinov3-vits16-pretrain-lvd1689m")
    parser.add_argument("--output", required=True, type=Path)
    parser.add_argument("--features", default="both", choices=["cls", "mean", "both"])
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--num-workers", type=int, default=2)
    parser.add_argument("--C", dest="c", type=float, default=1.0, help="inverse regularisation strength")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--overwrite", action="store_true", help="replace a finished run in --output")
    parser.add_argument("--cache-dir", type=Path, help="embedding cache (default ~/.cache/forensic-adapters/features)")
    parser.add_argument("--no-feature-cache", action="store_true", help="recompute the embeddings")
    args = parser.parse_args(argv)
    try:
        run_probe(
            args.data,
            args.backbone,
            args.output,
            features=args.features,
            image_size=args.image_size,
            batch_size=args.batch_size,
            num_workers=args.num_workers,
            seed=args.seed,
            c=args.c,
            overwrite=args.overwrite,
            cache_dir=args.cache_dir,
            feature_cache=not args.no_feature_cache,
        )
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
