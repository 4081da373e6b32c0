"""``python -m detectors.evaluate``: run a submission the way the benchmark does and score it.

The submission is loaded with the benchmark's own rules (``export.benchmark_loader``: model.py via
``spec_from_file_location``, ``load_model``, dtype from model_config.yaml), the media are decoded and
resized like the benchmark (uint8 inputs), and every batch is timed. Outputs in ``--output``:
``results.json``, ``predictions.csv``, ``summary.txt``, ROC / PR / reliability plots and
``report.html`` (:mod:`detectors.report`: one self-contained page; ``--explain`` adds attribution
maps of the worst errors, ``--no-report`` skips it).

What GASBench (https://github.com/BitMind-AI/gasbench, v0.8.0) does and this command follows:

- ``--seed S``: each dataset's samples in the benchmark's seeded order, cut to its full-run cap
  (:mod:`detectors.selection`); without a seed every sample is scored (``--max-per-dataset`` caps by
  path).
- ``--robustness --aug-per-dataset N``: the augmented pass on the N samples per dataset the benchmark
  would augment (``gasbench run --n-aug-per-dataset N``), the same ones for the same dataset folders
  and seed (drawn at random and reported when ``--seed`` is not given, as the benchmark's unseeded
  run draws them), then ``score = (1 - w) * base + w * augmented`` with ``w = --aug-weight`` (0.2).
  ``--robustness`` alone augments every scored sample (this project's stricter variant).
- Audio: the benchmark has no augmented pass, so an audio ``score`` is always the base score.
  ``--robustness`` runs this project's own audio chain as an extra, reported apart
  (``audio_robustness_extra``), never blended into ``score``.
- ``--holdout-share F`` / ``--gasstation-share G``: per-sample provenance weights (dataset names with
  ``-holdout-`` / ``gasstation``; the public corpus gets ``1 - F - G``) on score, MCC, Brier,
  accuracy and cross-entropy of both passes, with the composition reported.
- Probabilities as the benchmark computes them from float32 logits (``metrics.benchmark_outputs``).

This project's extras (not the benchmark's): TPR at 1 % and 5 % FPR beside the AUCs, and
``--frames-per-video N --aggregate mean|max``: an image submission scores the videos of ``--data``
frame by frame (:mod:`detectors.frame_scoring`), with video-level (headline) and frame-level metrics.
"""

from __future__ import annotations

import csv
import importlib
import io
import logging
import random
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm  # not tqdm.auto: its asyncio variant calls iter() on a DataLoader twice (double workers)

from detectors import cli
from detectors.atomic import atomic_open, write_json, write_text
from detectors.cli import command
from detectors.data.catalog import DatasetEntry, MediaItem, collect_items, load_dataset_config
from detectors.data.dataset import MediaDataset, collate_skip, is_empty_batch
from detectors.errors import ConfigError
from detectors.locking import claim_directory, releases_claims  # one process per output directory
from detectors.metrics import (
    ROBUSTNESS_WEIGHT,
    augmentation_metrics,
    benchmark_outputs,
    binary_metrics,
    multiclass_metrics,
    per_dataset_metrics,
    provenance,
    provenance_weights,
    robustness_blend,
    score_composition,
)
from detectors.selection import benchmark_order, dataset_caps
from detectors.training.predict import resolve_device
from export.benchmark_loader import SubmissionError

RESULT_KEYS = (
    "score",
    "mcc",
    "brier",
    "accuracy",
    "roc_auc",
    "pr_auc",
    "ece",
    "cross_entropy",
    "tpr_at_1pct_fpr",
    "tpr_at_5pct_fpr",
)
MODE_BENCHMARK = "benchmark_selection"  # N samples per dataset, the benchmark's choice
MODE_EVERY = "every_sample"  # every scored sample augmented (this project's variant)
MODE_NONE = "none"

logger = logging.getLogger(__name__)


def benchmark_input_loader(
    modality: str, preprocessing: dict[str, Any], robustness: bool
) -> Callable[[str], torch.Tensor]:
    """``path -> model input`` exactly as the benchmark prepares it, from ``detectors.<modality>.data``."""
    module = importlib.import_module(f"detectors.{modality}.data")
    return module.benchmark_input_loader(preprocessing, robustness)


def run_pass(
    model: torch.nn.Module,
    items: list[MediaItem],
    load: Callable[[str], torch.Tensor],
    *,
    batch_size: int,
    num_workers: int,
    device: torch.device,
    description: str,
) -> dict[str, Any]:
    """One benchmark pass: decode in workers, run the model batch by batch, time each batch."""
    from export.benchmark_loader import run_model

    loader = DataLoader(
        MediaDataset(items, load=load), batch_size=batch_size, num_workers=num_workers, collate_fn=collate_skip
    )
    logits, indices, per_sample_ms = [], [], []
    skipped = 0
    unreadable: list[str] = []
    for batch in tqdm(loader, desc=description, unit="batch"):
        skipped += int(batch["skipped"])
        unreadable.extend(batch["skipped_paths"])
        if is_empty_batch(batch):
            continue
        x = batch["x"].to(device)  # as the benchmark sends it: uint8 media, float32 audio
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        with torch.inference_mode():
            out = run_model(model, x)
        if device.type == "cuda":
            torch.cuda.synchronize()
        # the benchmark records batch time / batch size for every sample of the batch
        per_sample_ms.extend([1000 * (time.perf_counter() - start) / x.shape[0]] * x.shape[0])
        logits.append(out.float().cpu())
        indices.extend(batch["index"].tolist())
    kept = [items[i] for i in indices]
    logits_t = torch.cat(logits) if logits else torch.zeros(0, 2)
    return {
        "items": kept,
        "logits": logits_t,
        "skipped": skipped,
        "unreadable": sorted(unreadable),
        "ms": per_sample_ms,
        "requested": len(items),
    }


def score_pass(
    result: dict[str, Any], composition: dict[str, float] | None = None, class_weights: dict[str, float] | None = None
) -> dict[str, Any]:
    """Metrics of one pass. Samples whose logits are NaN or infinite are left out of the metrics and
    counted in ``non_finite_outputs`` (predictions.csv still lists them, with their NaN p(fake)).

    ``composition`` (base pass): provenance weights derived from this pass's samples, reported as the
    benchmark reports them. ``class_weights`` (augmented pass): the base pass's weight per provenance
    class, applied as they are (a class absent from the base pass weighs 1), as the benchmark does.
    """
    logits_all: torch.Tensor = result["logits"]
    probs, prob_fake, preds_all = benchmark_outputs(logits_all)
    result["prob"], result["probs"], result["pred"] = prob_fake, probs, preds_all
    finite = torch.isfinite(logits_all).all(dim=1).numpy() if logits_all.ndim == 2 else np.zeros(0, bool)
    result["finite"] = finite
    non_finite = int((~finite).sum())
    if non_finite:
        bad = [item.path for item, ok in zip(result["items"], finite) if not ok]
        logger.warning(
            "%d sample(s) gave NaN or infinite logits and are left out of the metrics, e.g. %s",
            non_finite,
            ", ".join(bad[:3]),
        )
    items: list[MediaItem] = [item for item, ok in zip(result["items"], finite) if ok]
    if not items:
        return {
            "n": 0,
            "skipped_unreadable": result["skipped"],
            "unreadable": result.get("unreadable", []),
            "non_finite_outputs": non_finite,
        }
    logits = logits_all[torch.from_numpy(finite)]
    labels = np.array([i.label for i in items])
    prob, preds = prob_fake[finite], preds_all[finite]
    datasets = [i.dataset for i in items]
    weights, report = None, {}
    if composition is not None:
        weights, report = provenance_weights(datasets, composition)
    elif class_weights is not None:
        weights = np.array([class_weights.get(provenance(name), 1.0) for name in datasets], dtype=np.float64)
    metrics = binary_metrics(labels, prob, preds=preds, datasets=datasets, sample_weight=weights)
    metrics.update(report)
    # the benchmark also reports per-generator stats (generator_family; reals grouped as "real")
    metrics["per_generator"] = per_dataset_metrics(
        labels, prob, preds, [i.generator_family or ("real" if i.label == 0 else "unspecified") for i in items]
    )
    if logits.shape[1] == 3:
        # this project's extra for real / synthetic / semisynthetic heads; the benchmark scores them as binary
        metrics["multiclass"] = multiclass_metrics([i.class_index for i in items], torch.softmax(logits.double(), -1))
    ms = np.array(result["ms"]) if result["ms"] else np.zeros(1)
    metrics["ms_per_sample_mean"] = float(ms.mean())
    metrics["ms_per_sample_p95"] = float(np.percentile(ms, 95))
    metrics["skipped_unreadable"] = result["skipped"]
    metrics["unreadable"] = result.get("unreadable", [])  # their paths (<container>::<member> inside archives)
    metrics["non_finite_outputs"] = non_finite
    return metrics


def write_predictions(path: Path, result: dict[str, Any]) -> None:
    with atomic_open(path, "w") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "dataset", "label", "prob_fake"])
        for item, p in zip(result["items"], result.get("prob", [])):
            writer.writerow([item.path, item.dataset, item.label, f"{float(p):.8f}"])


def _true_class_probs(result: dict[str, Any]) -> dict[str, float]:
    """path -> probability the model gives the sample's label (``probs[label]``), for paired degradation."""
    out = {}
    for item, probs, ok in zip(result["items"], result.get("probs", []), result.get("finite", [])):
        if ok and item.label < len(probs):
            out[item.path] = float(probs[item.label])
    return out


def summary_text(name: str, results: dict[str, Any]) -> str:
    out = io.StringIO()
    base = results["base"]
    out.write(f"Evaluation of {name}\n")
    out.write(f"samples: {base.get('n', 0)} (skipped unreadable: {base.get('skipped_unreadable', 0)})\n")
    selection = results.get("selection", {})
    if selection.get("seed") is not None:
        out.write(f"selection: the benchmark's, seed {selection['seed']}\n")
    if base.get("non_finite_outputs"):
        out.write(
            f"  WARNING: {base['non_finite_outputs']} sample(s) gave NaN/inf logits and are not scored "
            "(prob_fake 'nan' in predictions.csv)\n"
        )
    for key in RESULT_KEYS:
        value = base.get(key)
        out.write(f"  {key:<16} {'-' if value is None else f'{value:.4f}'}\n")
    out.write(
        f"  ms/sample        mean {base.get('ms_per_sample_mean', 0):.2f}  p95 {base.get('ms_per_sample_p95', 0):.2f}\n"
    )
    if "score_composition" in base:
        target = ", ".join(f"{k} {v:.3f}" for k, v in base["score_composition"].items())
        realized = ", ".join(f"{k} {v:.3f}" for k, v in base["realized_composition"].items())
        out.write(f"provenance weights: target {target}; samples {realized}\n")
    robustness = results.get("robustness", {})
    if "augmented" in results:
        augmented = results["augmented"]
        how = (
            f"{robustness.get('aug_per_dataset')} sample(s) per dataset, the benchmark's choice"
            if robustness.get("mode") == MODE_BENCHMARK
            else "every scored sample"
        )
        aug_score = augmented.get("score")
        out.write(
            f"robustness ({how}): {augmented.get('n', 0)} augmented, score "
            f"{'-' if aug_score is None else f'{aug_score:.4f}'}\n"
        )
        if results.get("score") is not None and robustness.get("blended"):
            w = robustness["aug_weight"]
            out.write(f"blended score {1 - w:g} * base + {w:g} * augmented = {results['score']:.4f}\n")
    if results.get("audio_robustness_extra") is not None:
        extra = results["audio_robustness_extra"]
        value = extra.get("score")
        out.write(
            "audio robustness chain (this project's extra; the benchmark has no audio augmented pass, "
            f"so it is not in the score): score {'-' if value is None else f'{value:.4f}'} on {extra.get('n', 0)} clips\n"
        )
    if "frame_level" in results:
        frame = results["frame_level"]
        auc = frame.get("roc_auc")
        out.write(
            f"image detector on videos: {results['frames_per_video']} frames per video, video p(fake) = "
            f"{results['aggregate']} of the frames'; the metrics above are video-level; frame-level: "
            f"{frame.get('n', 0)} frames, ROC-AUC {'-' if auc is None else f'{auc:.4f}'}\n"
        )
    if "multiclass" in base:
        out.write(
            f"3-class extra (this project's, not a benchmark score): R_K score {base['multiclass'].get('score', 0):.4f}\n"
        )
    out.write("per dataset:\n")
    augmented_counts = robustness.get("augmented_per_dataset", {})
    for dataset, row in sorted(base.get("per_dataset", {}).items()):
        extra = f" augmented={augmented_counts[dataset]['scored']}" if dataset in augmented_counts else ""
        out.write(f"  {dataset:<24} n={row.get('n')} accuracy={row.get('accuracy', 0):.4f}{extra}\n")
    return out.getvalue()


def select_items(
    entries: Sequence[DatasetEntry],
    modality: str,
    seed: int | None,
    max_per_dataset: int | None,
    aug_per_dataset: int | None,
) -> tuple[list[MediaItem], list[MediaItem], dict[str, Any]]:
    """(base items, augmented-pass items, report). With ``seed``: the benchmark's order per dataset, the
    base pass its first ``cap`` (``max_per_dataset`` or the full-run cap), the augmented pass its
    first ``aug_per_dataset``. Without: every item (or the first ``max_per_dataset`` by path)."""
    caps = dataset_caps([e.name for e in entries], modality)
    base: list[MediaItem] = []
    augmented: list[MediaItem] = []
    per_dataset: dict[str, Any] = {}
    for entry in entries:
        items = collect_items([entry], modality)
        if seed is None:
            chosen = sorted(items, key=lambda i: i.path)
            cap = max_per_dataset
            chosen = chosen[:cap] if cap else chosen
            per_dataset[entry.name] = {"available": len(items), "selected": len(chosen)}
        else:
            order = benchmark_order(entry, items, seed)
            cap = max_per_dataset or caps[entry.name]
            chosen = order.items[:cap]
            per_dataset[entry.name] = {
                "available": len(items),
                "cap": cap,
                "selected": len(chosen),
                "listing": order.listing,
            }
            if aug_per_dataset:
                augmented.extend(order.items[:aug_per_dataset])
        base.extend(chosen)
    report = {
        "seed": seed,
        "per_dataset": per_dataset,
        "mode": "benchmark" if seed is not None else ("capped_by_path" if max_per_dataset else "every_sample"),
    }
    return base, augmented, report


def check_options(
    aug_per_dataset: int | None, aug_weight: float, holdout_share: float | None, gasstation_share: float | None
) -> dict[str, float] | None:
    """Validate the benchmark options (ValueError naming the option); returns the score composition."""
    if aug_per_dataset is not None and aug_per_dataset < 1:
        raise ValueError(f"--aug-per-dataset must be >= 1, got {aug_per_dataset}")
    if not 0.0 <= aug_weight <= 1.0:
        raise ValueError(f"--aug-weight must lie in [0, 1], got {aug_weight}")
    return score_composition(holdout_share, gasstation_share)


def evaluate_submission(
    model_path: str | Path,
    data: str | Path,
    output: str | Path,
    *,
    robustness: bool = False,
    aug_per_dataset: int | None = None,
    seed: int | None = None,
    aug_weight: float = ROBUSTNESS_WEIGHT,
    holdout_share: float | None = None,
    gasstation_share: float | None = None,
    batch_size: int = 16,
    num_workers: int = 2,
    device: str = "cpu",
    max_per_dataset: int | None = None,
    frames_per_video: int | None = None,
    aggregate: str = "mean",
    report: bool = True,
    explain: bool = False,
    benchmark_cache: str | Path | None = None,
) -> dict[str, Any]:
    """Score the submission at ``model_path`` on the dataset YAML ``data`` as a benchmark run would;
    write results.json, predictions.csv, summary.txt, plots and report.html under ``output``. See the
    module docstring for ``robustness``, ``aug_per_dataset``, ``seed``, ``aug_weight``, the shares,
    ``frames_per_video`` / ``aggregate`` (an image detector scoring videos) and ``explain``. With
    ``benchmark_cache``, ``data`` is a benchmark dataset config read from that gasbench cache."""
    from export.benchmark_loader import load_submission

    composition = check_options(aug_per_dataset, aug_weight, holdout_share, gasstation_share)
    robustness = robustness or aug_per_dataset is not None
    seed_drawn = False
    if aug_per_dataset is not None and seed is None:
        # the benchmark's unseeded run draws its selection at random; draw one and report it, so the
        # run can be repeated
        seed, seed_drawn = random.SystemRandom().randrange(2**31), True

    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    torch_device = torch.device(device)
    model, config = load_submission(model_path, device=device)
    modality = config.get("modality", "image")
    entries = load_dataset_config(
        data, benchmark_cache, None if benchmark_cache is None else ("video" if frames_per_video else modality)
    )
    if frames_per_video is not None:
        if modality != "image":
            raise ConfigError(
                Path(model_path) / "model_config.yaml",
                "modality",
                f"--frames-per-video scores videos with an image detector; this is a {modality} model",
            )
        if robustness:
            raise ConfigError(None, "--frames-per-video", "cannot be combined with --robustness / --aug-per-dataset")
        results, headline = _evaluate_frames(
            model,
            config,
            entries,
            output,
            model_path=model_path,
            data=data,
            seed=seed,
            max_per_dataset=max_per_dataset,
            composition=composition,
            frames_per_video=frames_per_video,
            aggregate=aggregate,
            batch_size=batch_size,
            num_workers=num_workers,
            device=torch_device,
        )
        return finish_evaluation(
            output, model, config, results, headline, report=report, explain=explain, load=None, model_path=model_path
        )
    base_items, aug_items, selection = select_items(entries, modality, seed, max_per_dataset, aug_per_dataset)
    selection["seed_drawn"] = seed_drawn
    preprocessing = config.get("preprocessing", {})
    common = dict(batch_size=batch_size, num_workers=num_workers, device=torch_device)

    base = run_pass(
        model,
        base_items,
        benchmark_input_loader(modality, preprocessing, False),
        description="benchmark pass",
        **common,
    )
    base_metrics = score_pass(base, composition=composition)
    results: dict[str, Any] = {
        "model": str(model_path),
        "data": str(data),
        "modality": modality,
        "selection": selection,
        "base": base_metrics,
    }
    results.update({k: base_metrics.get(k) for k in (*RESULT_KEYS, "ms_per_sample_mean", "ms_per_sample_p95")})
    results["base_score"] = base_metrics.get("score")
    write_predictions(output / "predictions.csv", base)

    mode = MODE_NONE
    if robustness and modality != "audio":
        mode = MODE_BENCHMARK if aug_per_dataset is not None else MODE_EVERY
    results["robustness"] = {
        "mode": mode,
        "aug_per_dataset": aug_per_dataset,
        "seed": seed if mode == MODE_BENCHMARK else None,
        "aug_weight": aug_weight,
        "blended": False,
    }
    if robustness and modality == "audio":
        results["robustness"]["note"] = (
            "the benchmark has no audio augmented pass: score is the base score; "
            "this project's audio chain is reported as audio_robustness_extra"
        )
        extra_items = aug_items if aug_per_dataset is not None else base_items
        from detectors.audio.data import project_robustness_loader

        extra = run_pass(
            model, extra_items, project_robustness_loader(preprocessing), description="audio robustness extra", **common
        )
        results["audio_robustness_extra"] = {
            **score_pass(extra),
            "note": "this project's audio robustness chain (8 kHz round trip, -6 dB, 30 dB SNR "
            "noise); not part of the benchmark or of score",
        }
        write_predictions(output / "predictions_audio_robustness_extra.csv", extra)
    elif mode != MODE_NONE:
        augmented = run_pass(
            model,
            aug_items if mode == MODE_BENCHMARK else base_items,
            benchmark_input_loader(modality, preprocessing, True),
            description="augmented pass",
            **common,
        )
        class_weights = base_metrics.get("provenance_weights") if composition is not None else None
        results["augmented"] = aug_metrics = score_pass(augmented, class_weights=class_weights)
        base_score, augmented_score = base_metrics.get("score"), aug_metrics.get("score")
        results["augmented_score"] = augmented_score
        counts = {name: {"selected": 0, "scored": 0} for name in (e.name for e in entries)}
        for item in aug_items if mode == MODE_BENCHMARK else base_items:
            counts[item.dataset]["selected"] += 1
        for item, ok in zip(augmented["items"], augmented["finite"]):
            counts[item.dataset]["scored"] += int(bool(ok))
        results["robustness"]["augmented_per_dataset"] = counts
        if base_score is not None and augmented_score is not None:
            base_probs, aug_probs = _true_class_probs(base), _true_class_probs(augmented)
            pairs = [(base_probs[p], aug_probs[p]) for p in aug_probs if p in base_probs]
            results["robustness"].update(augmentation_metrics(base_score, augmented_score, pairs))
            if aug_weight > 0:
                results["score"] = robustness_blend(base_score, augmented_score, aug_weight)
                results["robustness"]["blended"] = True
        elif base_score is not None and aug_weight > 0:
            # a pass with no scorable sample has no score, and neither has the blend
            results["score"] = None
        write_predictions(output / "predictions_augmented.csv", augmented)
    return finish_evaluation(
        output,
        model,
        config,
        results,
        base,
        report=report,
        explain=explain,
        load=benchmark_input_loader(modality, preprocessing, False),
        model_path=model_path,
    )


def _evaluate_frames(
    model: torch.nn.Module,
    config: dict[str, Any],
    entries: Sequence[DatasetEntry],
    output: Path,
    *,
    model_path: str | Path,
    data: str | Path,
    seed: int | None,
    max_per_dataset: int | None,
    composition: dict[str, float] | None,
    frames_per_video: int,
    aggregate: str,
    batch_size: int,
    num_workers: int,
    device: torch.device,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """An image submission scoring the videos of ``entries`` (:mod:`detectors.frame_scoring`):
    ``(results, the video-level pass)``."""
    from detectors.frame_scoring import (
        aggregate_probabilities,
        frames_loader,
        run_frames_pass,
        score_frames_pass,
        write_frame_predictions,
    )

    aggregate_probabilities(np.zeros((0, 1)), aggregate)  # an unknown --aggregate fails before decoding
    items, _, selection = select_items(entries, "video", seed, max_per_dataset, None)
    load = frames_loader(config.get("preprocessing") or {}, frames_per_video)
    videos = run_frames_pass(
        model,
        items,
        load,
        batch_size=max(1, batch_size // frames_per_video),
        num_workers=num_workers,
        device=device,
        description="frames pass",
    )
    video_metrics, frame_metrics = score_frames_pass(videos, aggregate, composition)
    results: dict[str, Any] = {
        "model": str(model_path),
        "data": str(data),
        "modality": "image",
        "media": "video",
        "frames_per_video": frames_per_video,
        "aggregate": aggregate,
        "selection": selection,
        "base": video_metrics,
        "frame_level": frame_metrics,
    }
    results.update({k: video_metrics.get(k) for k in (*RESULT_KEYS, "ms_per_sample_mean", "ms_per_sample_p95")})
    results.update(
        {
            "base_score": video_metrics.get("score"),
            "video_roc_auc": video_metrics.get("roc_auc"),
            "frame_roc_auc": frame_metrics.get("roc_auc"),
            "robustness": {"mode": MODE_NONE, "blended": False},
        }
    )
    write_frame_predictions(output / "predictions.csv", output / "predictions_frames.csv", videos)
    return results, videos


def finish_evaluation(
    output: Path,
    model: torch.nn.Module,
    config: dict[str, Any],
    results: dict[str, Any],
    headline: dict[str, Any],
    *,
    report: bool,
    explain: bool,
    load: Callable[[str], torch.Tensor] | None,
    model_path: str | Path,
) -> dict[str, Any]:
    """Plots of the headline pass, results.json, summary.txt and report.html (with ``explain``:
    attribution maps of the worst errors under ``output/explain``)."""
    from detectors.plots import pr_curve_plot, reliability_diagram, roc_curve_plot

    finite = headline["finite"]
    plots = {
        "ROC": output / "roc.png",
        "precision-recall": output / "pr.png",
        "reliability": output / "reliability.png",
    }
    if finite.any():
        labels = np.array([i.label for i, ok in zip(headline["items"], finite) if ok])
        prob = headline["prob"][finite]
        reliability_diagram(labels, prob, plots["reliability"], title="reliability")
        roc_curve_plot(labels, prob, plots["ROC"], title="ROC")
        pr_curve_plot(labels, prob, plots["precision-recall"], title="precision-recall")
    write_json(output / "results.json", results)
    write_text(output / "summary.txt", summary_text(str(model_path), results))
    if report:
        from detectors.report import explain_worst, worst_errors, write_report

        items = [item for item, ok in zip(headline["items"], finite) if ok]
        prob, preds = headline["prob"][finite], np.asarray(headline["pred"])[finite]
        explanations = {}
        if explain:
            if load is None:  # frames of videos: explain the first frame of each as an image
                logger.warning(
                    "--explain: the worst videos are shown without maps when an image detector scores videos"
                )
            else:
                positives, negatives = worst_errors(items, prob, preds)
                explanations = explain_worst(
                    model,
                    load,
                    results.get("modality", "image"),
                    [item.path for item, _ in positives + negatives],
                    output / "explain",
                )
        write_report(
            output / "report.html",
            results,
            items=items,
            prob=prob,
            preds=preds,
            plots={name: path for name, path in plots.items() if path.is_file()},
            explanations=explanations,
        )
    return results


@releases_claims  # the output directory's lock is released when main returns or raises
@command
def main(argv: list[str] | None = None) -> int:
    parser = cli.ArgumentParser(prog="python -m detectors.evaluate", description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, type=Path, help="submission directory or zip")
    parser.add_argument("--data", required=True, type=Path, help="dataset YAML")
    parser.add_argument(
        "--benchmark-cache",
        type=Path,
        metavar="DIR",
        help="--data is a benchmark dataset config: read its datasets from this gasbench cache",
    )
    parser.add_argument("--output", required=True, type=Path)
    parser.add_argument(
        "--robustness",
        action="store_true",
        help="add the augmented pass and the 0.8/0.2 blend (image, video); every scored sample "
        "unless --aug-per-dataset; audio: this project's chain, reported apart",
    )
    parser.add_argument(
        "--aug-per-dataset",
        type=int,
        metavar="N",
        help="augment the N samples per dataset the benchmark picks (gasbench run --n-aug-per-dataset)",
    )
    parser.add_argument("--seed", type=int, help="the benchmark run's --seed: sample order per dataset")
    parser.add_argument(
        "--aug-weight",
        type=float,
        default=ROBUSTNESS_WEIGHT,
        help="weight of the augmented score in the blend (gasbench run --aug-weight, default 0.2)",
    )
    parser.add_argument(
        "--holdout-share",
        type=float,
        metavar="F",
        help="target share of the score carried by holdout datasets (names with '-holdout-')",
    )
    parser.add_argument(
        "--gasstation-share",
        type=float,
        metavar="F",
        help="target share of the score carried by gasstation datasets (names with 'gasstation')",
    )
    parser.add_argument("--batch-size", type=cli.int_at_least(1), default=16)
    parser.add_argument("--num-workers", type=cli.int_at_least(0), default=2)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--max-per-dataset",
        type=cli.int_at_least(1),
        help="cap per dataset (by default the benchmark's full-run cap with --seed, none without)",
    )
    parser.add_argument(
        "--frames-per-video",
        type=int,
        metavar="N",
        help="score the videos of --data with an IMAGE submission: N frames spread over each video, "
        "scored as images; video-level and frame-level metrics",
    )
    parser.add_argument(
        "--aggregate",
        choices=["mean", "max"],
        default="mean",
        help="--frames-per-video: a video's p(fake) is the mean (default) or max of its frames'",
    )
    parser.add_argument(
        "--explain",
        action="store_true",
        help="report.html: attribution maps of the worst false positives and negatives",
    )
    parser.add_argument("--no-report", action="store_true", help="do not write report.html")
    args = parser.parse_args(argv)
    try:
        check_options(args.aug_per_dataset, args.aug_weight, args.holdout_share, args.gasstation_share)
        if args.frames_per_video is not None and args.frames_per_video < 1:
            raise ValueError(f"--frames-per-video must be >= 1, got {args.frames_per_video}")
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    try:
        resolve_device(args.device)
        claim_directory(args.output, "evaluate", recursive_cleanup=False)  # lock --output
        results = evaluate_submission(
            args.model,
            args.data,
            args.output,
            robustness=args.robustness,
            aug_per_dataset=args.aug_per_dataset,
            seed=args.seed,
            aug_weight=args.aug_weight,
            holdout_share=args.holdout_share,
            gasstation_share=args.gasstation_share,
            batch_size=args.batch_size,
            num_workers=args.num_workers,
            device=args.device,
            max_per_dataset=args.max_per_dataset,
            frames_per_video=args.frames_per_video,
            aggregate=args.aggregate,
            report=not args.no_report,
            explain=args.explain,
            benchmark_cache=args.benchmark_cache,
        )
    except (ConfigError, FileNotFoundError, SubmissionError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(summary_text(str(args.model), results))
    print(f"results written to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
