"""``python -m detectors.image.baseline``: an off-the-shelf Hugging Face image classifier as a detector.

Measure a downloaded detector on your own data before training anything (seed 004: a detector
advertised at 0.9997 AUC scored 0.68 on the author's images). ``--model`` is a hub id or a local
directory of an image-classification model; its p(fake) is the softmax mass of the labels named by
``--fake-labels`` (case-insensitive), every other label counting as real. Images are prepared as
the benchmark prepares a submission's (centre crop to the aspect, bilinear resize to the model
processor's size), then rescaled and normalised with the processor's mean and std.

The output is ``detectors.evaluate``'s: ``results.json``, ``predictions.csv``, ``summary.txt``,
ROC / PR / reliability plots and ``report.html``. ``--calibrate`` first fits a
:class:`~calibration.LogitCalibrator` on a stratified calibration split of ``--data``
(``--calibration-share``) and scores the rest, reporting the uncalibrated metrics of the same
samples beside the calibrated ones: what calibration buys.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from calibration import LogitCalibrator
from detectors import cli
from detectors.cli import command
from detectors.data.catalog import assign_splits, collect_items, load_dataset_config
from detectors.errors import ConfigError
from detectors.locking import claim_directory, releases_claims

DEFAULT_FAKE_LABELS = (
    "artificial",
    "fake",
    "ai",
    "ai-generated",
    "ai_generated",
    "generated",
    "synthetic",
    "deepfake",
    "sd",
    "dalle",
    "midjourney",
)


class HubClassifierDetector(nn.Module):
    """uint8 images ``[B, 3, H, W]`` -> the classifier's logits -> ``[log p(real), log p(fake)]``
    (softmax mass of the real and the fake labels) -> ``calibrator``."""

    def __init__(
        self,
        model: nn.Module,
        fake_indices: Sequence[int],
        mean: Sequence[float],
        std: Sequence[float],
        rescale: float = 1 / 255,
    ) -> None:
        super().__init__()
        self.model = model.eval()
        num_labels = int(model.config.num_labels)
        is_fake = torch.zeros(num_labels, dtype=torch.bool)
        is_fake[list(fake_indices)] = True
        self.register_buffer("is_fake", is_fake, persistent=False)
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.rescale = float(rescale)
        self.calibrator = LogitCalibrator(2)
        self.calibrator.requires_grad_(False)
        self.apply_calibration = True  # off while the passes collect raw logits

    def uncalibrated(self, images: torch.Tensor) -> torch.Tensor:
        pixels = (images.float() * self.rescale - self.mean) / self.std
        log_probs = torch.log_softmax(self.model(pixel_values=pixels).logits.float(), dim=-1)
        real = torch.logsumexp(log_probs.masked_fill(self.is_fake, float("-inf")), dim=-1)
        fake = torch.logsumexp(log_probs.masked_fill(~self.is_fake, float("-inf")), dim=-1)
        return torch.stack([real, fake], dim=-1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        logits = self.uncalibrated(images)
        return self.calibrator(logits) if self.apply_calibration else logits


def fake_label_indices(id2label: dict[Any, str], fake_labels: Sequence[str], source: str) -> list[int]:
    """Indices of the labels named in ``fake_labels``; a label set without a fake class, or without
    any other class, is a ConfigError naming the model."""
    wanted = {label.strip().lower() for label in fake_labels if label.strip()}
    labels = {int(index): str(name) for index, name in id2label.items()}
    fake = sorted(index for index, name in labels.items() if name.strip().lower() in wanted)
    shown = ", ".join(repr(labels[i]) for i in sorted(labels))
    if not fake:
        raise ConfigError(
            source,
            "id2label",
            f"no fake class among the model's labels ({shown}); name the labels "
            "that mean AI-generated with --fake-labels",
        )
    if len(fake) == len(labels):
        raise ConfigError(source, "id2label", f"every label ({shown}) is a fake class: nothing is left to mean real")
    return fake


def load_hub_detector(model_name: str, fake_labels: Sequence[str]) -> tuple[HubClassifierDetector, dict[str, Any]]:
    """The classifier at ``model_name`` (hub id or local directory) as a detector, and the
    ``preprocessing`` (benchmark resize) it takes."""
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    if model_name.startswith(("/", "./", "../", "~")) and not Path(model_name).expanduser().is_dir():
        raise ConfigError(model_name, None, "no such model directory")
    try:
        processor = AutoImageProcessor.from_pretrained(model_name)
        model = AutoModelForImageClassification.from_pretrained(model_name)
    except (OSError, ValueError, KeyError) as error:
        raise ConfigError(
            model_name,
            None,
            f"cannot load an image-classification model and its processor ({str(error).splitlines()[0]})",
        ) from error
    size = processor.size
    if isinstance(size, (int, float)):
        size = {"shortest_edge": int(size)}
    height, width = (
        getattr(size, key, None) if not isinstance(size, dict) else size.get(key) for key in ("height", "width")
    )
    if height and width:
        resize = [int(height), int(width)]
    else:  # shortest_edge models: the benchmark's input is square
        edge = size.get("shortest_edge") if isinstance(size, dict) else getattr(size, "shortest_edge", None)
        resize = [int(edge or 224)] * 2
    mean = processor.image_mean if getattr(processor, "do_normalize", True) else [0.0, 0.0, 0.0]
    std = processor.image_std if getattr(processor, "do_normalize", True) else [1.0, 1.0, 1.0]
    rescale = float(processor.rescale_factor) if getattr(processor, "do_rescale", True) else 1.0
    fake = fake_label_indices(model.config.id2label, fake_labels, f"{model_name} (config.json)")
    detector = HubClassifierDetector(model, fake, mean, std, rescale)
    return detector, {"resize": resize}


@releases_claims
def run_baseline(
    model_name: str,
    data: Path,
    output: Path,
    *,
    fake_labels: Sequence[str] = DEFAULT_FAKE_LABELS,
    calibrate: bool = False,
    calibration_share: float = 0.3,
    seed: int = 0,
    batch_size: int = 16,
    num_workers: int = 2,
    device: str = "cpu",
    report: bool = True,
) -> dict[str, Any]:
    """Score ``data`` with the classifier ``model_name``; write evaluate's outputs under ``output``."""
    from detectors.evaluate import (
        RESULT_KEYS,
        benchmark_input_loader,
        finish_evaluation,
        run_pass,
        score_pass,
        write_predictions,
    )
    from detectors.training.predict import resolve_device

    torch_device = resolve_device(device)
    if not 0 < calibration_share < 1:
        raise ConfigError(None, "--calibration-share", f"must be in (0, 1), got {calibration_share}")
    output = Path(output)
    claim_directory(output, "baseline")
    detector, preprocessing = load_hub_detector(model_name, fake_labels)
    detector.to(torch_device)
    detector.apply_calibration = False
    items = collect_items(load_dataset_config(data), modality="image")
    load = benchmark_input_loader("image", preprocessing, False)
    common = dict(batch_size=batch_size, num_workers=num_workers, device=torch_device)
    results: dict[str, Any] = {
        "model": model_name,
        "data": str(data),
        "modality": "image",
        "baseline": {
            "fake_labels": [detector.model.config.id2label[i] for i in detector.is_fake.nonzero().flatten().tolist()],
            "preprocessing": preprocessing,
        },
    }
    if calibrate:
        split = assign_splits(items, fractions={"calibration": calibration_share}, seed=seed)
        calibration_items = [item for item in split if item.split == "calibration"]
        items = [item for item in split if item.split != "calibration"]
        fitted = run_pass(detector, calibration_items, load, description="calibration pass", **common)
        if len(fitted["logits"]) == 0:
            raise ConfigError(data, "datasets", "no readable image in the calibration split")
        detector.calibrator.fit(fitted["logits"], torch.tensor([item.label for item in fitted["items"]]))
        results["calibration"] = {
            "n": len(fitted["items"]),
            "skipped_unreadable": fitted["skipped"],
            "calibrator": detector.calibrator.state(),
            "share": calibration_share,
            "seed": seed,
        }
    base = run_pass(detector, items, load, description="baseline pass", **common)
    if calibrate:
        uncalibrated = {**base, "logits": base["logits"].clone()}
        results["uncalibrated"] = score_pass(uncalibrated)
        with torch.no_grad():
            base["logits"] = detector.calibrator(base["logits"].to(torch_device)).float().cpu()
    metrics = score_pass(base)
    results["base"] = metrics
    results.update({key: metrics.get(key) for key in (*RESULT_KEYS, "ms_per_sample_mean", "ms_per_sample_p95")})
    results["base_score"] = metrics.get("score")
    results["selection"] = {"seed": None, "items": len(items)}
    results["robustness"] = {"mode": "none", "blended": False}
    # nothing of the classifier is trained here; a fitted calibrator has a temperature and a bias per class
    results["trainable_parameters"] = 3 if calibrate else 0
    write_predictions(output / "predictions.csv", base)
    detector.apply_calibration = True
    return finish_evaluation(
        output,
        detector,
        {"modality": "image", "preprocessing": preprocessing},
        results,
        base,
        report=report,
        explain=False,
        load=load,
        model_path=model_name,
    )


@command
def main(argv: list[str] | None = None) -> int:
    parser = cli.ArgumentParser(prog="python -m detectors.image.baseline", description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="hub id or local directory of an image-classification model")
    parser.add_argument("--data", required=True, type=Path, help="dataset YAML")
    parser.add_argument("--output", required=True, type=Path)
    parser.add_argument(
        "--fake-labels",
        default=",".join(DEFAULT_FAKE_LABELS),
        help="comma-separated labels that mean AI-generated (case-insensitive)",
    )
    parser.add_argument("--calibrate", action="store_true", help="fit a LogitCalibrator on a calibration split first")
    parser.add_argument("--calibration-share", type=float, default=0.3, help="--calibrate: share of --data held out")
    parser.add_argument("--seed", type=int, default=0, help="--calibrate: split seed")
    parser.add_argument("--batch-size", type=cli.int_at_least(1), default=16)
    parser.add_argument("--num-workers", type=cli.int_at_least(0), default=2)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--no-report", action="store_true", help="skip report.html")
    args = parser.parse_args(argv)
    results = run_baseline(
        args.model,
        args.data,
        args.output,
        fake_labels=args.fake_labels.split(","),
        calibrate=args.calibrate,
        calibration_share=args.calibration_share,
        seed=args.seed,
        batch_size=args.batch_size,
        num_workers=args.num_workers,
        device=args.device,
        report=not args.no_report,
    )
    print((args.output / "summary.txt").read_text(), end="")
    if "uncalibrated" in results:
        before, after = results["uncalibrated"], results["base"]
        print(
            "calibration (same samples):  "
            + "  ".join(
                f"{key} {before.get(key, float('nan')):.4f} -> {after.get(key, float('nan')):.4f}"
                for key in ("score", "brier", "ece")
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
