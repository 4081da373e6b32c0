"""After training: best weights -> calibrate on the held-out split -> metrics, plots, summary."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
from safetensors.torch import save_file

from detectors.atomic import atomic_path, write_json
from detectors.base import Detector, save_detector
from detectors.data.datamodule import MediaDataModule
from detectors.metrics import binary_metrics, multiclass_metrics, predictions_from_logits, prob_fake_from_logits
from detectors.training.predict import Predictions, predict
from detectors.training.run import RunDir
from detectors.tuning import trainable_summary

REPORTED = ("score", "mcc", "brier", "accuracy", "roc_auc", "pr_auc", "ece", "loss", "n")


def inference_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def metrics_of(predictions: Predictions, detector: Detector, criterion: Any = None) -> dict[str, Any]:
    if len(predictions) == 0:
        return {"n": 0, "skipped_unreadable": predictions.skipped}
    metrics = binary_metrics(
        predictions.labels.numpy(),
        prob_fake_from_logits(predictions.logits),
        preds=predictions_from_logits(predictions.logits),
        datasets=predictions.datasets or None,
    )
    if criterion is not None:
        metrics["loss"] = float(criterion(predictions.logits, predictions.targets(detector.num_classes)))
    if detector.num_classes == 3:
        metrics["multiclass"] = multiclass_metrics(predictions.class_index, torch.softmax(predictions.logits, -1))
    metrics["skipped_unreadable"] = predictions.skipped
    # the model's forward only (features precomputed in the data stage are not counted)
    metrics["ms_per_sample"] = 1000 * predictions.model_seconds / len(predictions)
    return metrics


def evaluate_split(
    detector: Detector, datamodule: MediaDataModule, split: str, calibrated: bool = True, criterion: Any = None
) -> dict[str, Any]:
    predictions = predict(
        detector,
        datamodule.loader(split),
        calibrated=calibrated,
        device=inference_device(),
        description=f"evaluate {split}",
    )
    return metrics_of(predictions, detector, criterion)


def save_calibration_logits(path: Path, predictions: Predictions, num_classes: int) -> None:
    with atomic_path(path) as tmp:
        save_file(
            {
                "logits": predictions.logits.float().contiguous(),
                "labels": predictions.targets(num_classes).long().contiguous(),
            },
            str(tmp),
        )


def write_run_predictions(path: Path, predictions: Predictions) -> None:
    """``predictions.csv`` of a run's validation split (path, dataset, label, prob_fake), the columns
    ``detectors.evaluate`` writes, so ``detectors.compare`` draws runs and evaluations alike."""
    from detectors.evaluate import write_predictions

    items = [
        SimpleNamespace(path=path, dataset=dataset, label=int(label))
        for path, dataset, label in zip(predictions.paths, predictions.datasets, predictions.labels.tolist())
    ]
    write_predictions(path, {"items": items, "prob": prob_fake_from_logits(predictions.logits)})


def plot_evaluation(predictions: Predictions, directory: Path, title: str) -> None:
    from detectors.plots import pr_curve_plot, reliability_diagram, roc_curve_plot

    if len(predictions) == 0:
        return
    labels = predictions.labels.numpy()
    prob = prob_fake_from_logits(predictions.logits)
    reliability_diagram(labels, prob, directory / "reliability.png", title=f"{title}: reliability")
    roc_curve_plot(labels, prob, directory / "roc.png", title=f"{title}: ROC")
    pr_curve_plot(labels, prob, directory / "pr.png", title=f"{title}: precision-recall")


def finalize_run(
    run: RunDir,
    module: Any,
    datamodule: MediaDataModule,
    trainer: Any,
    checkpoint: Any,
    config: Any,
    extra_summary: dict[str, Any],
    before: dict[str, Any] | None = None,
) -> None:
    detector: Detector = module.detector
    best = checkpoint.best_model_path
    if best and Path(best).is_file():
        state = torch.load(best, map_location="cpu", weights_only=False)["state_dict"]
        module.load_state_dict(state)
    device = inference_device()

    calibration = predict(
        detector, datamodule.loader("calibration"), calibrated=False, device=device, description="calibration logits"
    )
    save_calibration_logits(run.calibration_logits, calibration, detector.num_classes)
    if config.calibration.fit and len(calibration):
        detector.calibrator.fit(calibration.logits, calibration.targets(detector.num_classes))
    uncalibrated_cal = metrics_of(calibration, detector)

    validation = predict(detector, datamodule.loader("val"), calibrated=True, device=device, description="validation")
    metrics = metrics_of(validation, detector, module.criterion)
    plot_evaluation(validation, run.plots, "validation")
    write_run_predictions(run.predictions, validation)
    save_detector(detector.cpu(), run.root)

    # train: distinct unreadable files met while training (draws when the dataset does not name them)
    skipped = {
        "train": len(module.unreadable_train_files) or module.skipped_samples["train"],
        "train_draws": module.skipped_samples["train"],
        "val": validation.skipped,
        "calibration": calibration.skipped,
    }
    result = {
        "validation": metrics,
        "calibration_split_uncalibrated": uncalibrated_cal,
        "calibrator": detector.calibrator.state(),
        "skipped_unreadable": skipped,
    }
    # how the calibrator was fitted (split size, NLL before/after, fallback) and its warnings
    calibration_fit = detector.calibrator.last_fit if config.calibration.fit and len(calibration) else None
    result["calibration_fit"] = calibration_fit
    if before is not None:
        result["before_fine_tuning"] = before
        result["comparison"] = {k: {"before": before.get(k), "after": metrics.get(k)} for k in REPORTED}
    write_json(run.metrics, result)
    summary = {
        "arch": detector.arch,
        "modality": detector.modality,
        "tuning": getattr(getattr(detector.config, "tuning", None), "mode", None),
        **detector.summary(),
        **trainable_summary(detector),
        "epochs_completed": trainer.current_epoch,
        "global_steps": trainer.global_step,
        "best_checkpoint": best or None,
        "skipped_unreadable": skipped,
        **extra_summary,
        "calibration_warnings": list((calibration_fit or {}).get("warnings", [])),
        "loss_class_weights": module.class_weight,
    }
    run.write_summary(summary)
    print_report(run, metrics, before)


def print_report(run: RunDir, metrics: dict[str, Any], before: dict[str, Any] | None) -> None:
    def fmt(value: Any) -> str:
        return "-" if value is None else f"{value:.4f}" if isinstance(value, float) else str(value)

    print(f"\nRun directory: {run.root}")
    header = f"{'metric':<10} {'before':>10} {'after':>10}" if before else f"{'metric':<10} {'value':>10}"
    print(header)
    for key in REPORTED:
        row = (
            f"{key:<10} {fmt(before.get(key)):>10} {fmt(metrics.get(key)):>10}"
            if before
            else f"{key:<10} {fmt(metrics.get(key)):>10}"
        )
        print(row)
