"""``python -m detectors.evaluate``: run a submission the way the benchmark does and score it.

The submission is loaded with the benchmark's own rules (``export.benchmark_loader``: model.py via
``spec_from_file_location``, ``load_model``, dtype from model_config.yaml), the media are decoded and
resized like the benchmark (uint8 inputs), and every batch is timed. Outputs in ``--output``:
``results.json``, ``predictions.csv``, ``summary.txt`` and ROC / PR / reliability plots.
``--robustness`` adds the augmented pass and the benchmark's 0.8 / 0.2 blend.
"""

from __future__ import annotations

import argparse
import csv
import importlib
import io
import logging
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm  # not tqdm.auto: its asyncio variant calls iter() on a DataLoader twice (double workers)

from detectors.atomic import atomic_open, write_json, write_text
from detectors.data.catalog import MediaItem, load_items
from detectors.data.dataset import MediaDataset, collate_skip, is_empty_batch
from detectors.errors import ConfigError
from detectors.locking import claim_directory, releases_claims  # one process per output directory
from detectors.metrics import (binary_metrics, multiclass_metrics, per_dataset_metrics, predictions_from_logits, prob_fake_from_logits,
                               robustness_blend)
from detectors.training.predict import resolve_device
from export.benchmark_loader import SubmissionError

RESULT_KEYS = ("score", "mcc", "brier", "accuracy", "roc_auc", "pr_auc", "ece", "cross_entropy")

logger = logging.getLogger(__name__)


def benchmark_input_loader(modality: str, preprocessing: dict[str, Any], robustness: bool) -> Callable[[str], torch.Tensor]:
    """``path -> model input`` exactly as the benchmark prepares it, from ``detectors.<modality>.data``."""
    module = importlib.import_module(f"detectors.{modality}.data")
    return module.benchmark_input_loader(preprocessing, robustness)


def run_pass(model: torch.nn.Module, items: list[MediaItem], load: Callable[[str], torch.Tensor], *,
             batch_size: int, num_workers: int, device: torch.device,
             description: str) -> dict[str, Any]:
    """One benchmark pass: decode in workers, run the model batch by batch, time each batch."""
    from export.benchmark_loader import run_model

    loader = DataLoader(MediaDataset(items, load=load), batch_size=batch_size, num_workers=num_workers,
                        collate_fn=collate_skip)
    logits, indices, per_sample_ms = [], [], []
    skipped = 0
    for batch in tqdm(loader, desc=description, unit="batch"):
        skipped += int(batch["skipped"])
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
        per_sample_ms.append(1000 * (time.perf_counter() - start) / x.shape[0])
        logits.append(out.float().cpu())
        indices.extend(batch["index"].tolist())
    kept = [items[i] for i in indices]
    logits_t = torch.cat(logits) if logits else torch.zeros(0, 2)
    return {"items": kept, "logits": logits_t, "skipped": skipped, "ms": per_sample_ms}


def score_pass(result: dict[str, Any]) -> dict[str, Any]:
    """Metrics of one pass. Samples whose logits are NaN or infinite are left out of the metrics and
    counted in ``non_finite_outputs`` (predictions.csv still lists them, with their NaN p(fake))."""
    logits_all: torch.Tensor = result["logits"]
    result["prob"] = prob_fake_from_logits(logits_all)
    finite = torch.isfinite(logits_all).all(dim=1).numpy()
    result["finite"] = finite
    non_finite = int((~finite).sum())
    if non_finite:
        bad = [item.path for item, ok in zip(result["items"], finite) if not ok]
        logger.warning("%d sample(s) gave NaN or infinite logits and are left out of the metrics, e.g. %s",
                       non_finite, ", ".join(bad[:3]))
    items: list[MediaItem] = [item for item, ok in zip(result["items"], finite) if ok]
    if not items:
        return {"n": 0, "skipped_unreadable": result["skipped"], "non_finite_outputs": non_finite}
    logits = logits_all[torch.from_numpy(finite)]
    labels = np.array([i.label for i in items])
    prob = result["prob"][finite]
    preds = predictions_from_logits(logits)
    metrics = binary_metrics(labels, prob, preds=preds, datasets=[i.dataset for i in items])
    # the benchmark also reports per-generator stats (generator_family; reals grouped as "real")
    metrics["per_generator"] = per_dataset_metrics(
        labels, prob, preds, [i.generator_family or ("real" if i.label == 0 else "unspecified") for i in items])
    if logits.shape[1] == 3:  # real / synthetic / semisynthetic: the v0.9 multiclass score too
        metrics["multiclass"] = multiclass_metrics([i.class_index for i in items], torch.softmax(logits, -1))
    ms = np.array(result["ms"]) if result["ms"] else np.zeros(1)
    metrics["ms_per_sample_mean"] = float(ms.mean())
    metrics["ms_per_sample_p95"] = float(np.percentile(ms, 95))
    metrics["skipped_unreadable"] = result["skipped"]
    metrics["non_finite_outputs"] = non_finite
    return metrics


def write_predictions(path: Path, result: dict[str, Any]) -> None:
    with atomic_open(path, "w") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "dataset", "label", "prob_fake"])
        for item, p in zip(result["items"], result.get("prob", [])):
            writer.writerow([item.path, item.dataset, item.label, f"{float(p):.8f}"])


def summary_text(name: str, results: dict[str, Any]) -> str:
    out = io.StringIO()
    base = results["base"]
    out.write(f"Evaluation of {name}\n")
    out.write(f"samples: {base.get('n', 0)} (skipped unreadable: {base.get('skipped_unreadable', 0)})\n")
    if base.get("non_finite_outputs"):
        out.write(f"  WARNING: {base['non_finite_outputs']} sample(s) gave NaN/inf logits and are not scored "
                  "(prob_fake 'nan' in predictions.csv)\n")
    for key in RESULT_KEYS:
        value = base.get(key)
        out.write(f"  {key:<14} {'-' if value is None else f'{value:.4f}'}\n")
    out.write(f"  ms/sample      mean {base.get('ms_per_sample_mean', 0):.2f}  p95 {base.get('ms_per_sample_p95', 0):.2f}\n")
    if "augmented" in results and results.get("score") is not None:
        out.write(f"robustness: augmented score {results['augmented'].get('score', 0):.4f}, "
                  f"blended 0.8*base + 0.2*augmented = {results['score']:.4f}\n")
    out.write("per dataset:\n")
    for dataset, row in sorted(base.get("per_dataset", {}).items()):
        out.write(f"  {dataset:<24} n={row.get('n')} accuracy={row.get('accuracy', 0):.4f}\n")
    return out.getvalue()


def evaluate_submission(model_path: str | Path, data: str | Path, output: str | Path, *, robustness: bool = False,
                        batch_size: int = 16, num_workers: int = 2, device: str = "cpu",
                        max_per_dataset: int | None = None) -> dict[str, Any]:
    from detectors.plots import pr_curve_plot, reliability_diagram, roc_curve_plot
    from export.benchmark_loader import load_submission

    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    torch_device = torch.device(device)
    model, config = load_submission(model_path, device=device)
    modality = config.get("modality", "image")
    items = load_items(data, modality=modality)
    if max_per_dataset:
        items = _cap_per_dataset(items, max_per_dataset)
    preprocessing = config.get("preprocessing", {})
    common = dict(batch_size=batch_size, num_workers=num_workers, device=torch_device)

    base = run_pass(model, items, benchmark_input_loader(modality, preprocessing, False), description="benchmark pass", **common)
    results: dict[str, Any] = {"model": str(model_path), "data": str(data), "modality": modality,
                               "base": score_pass(base)}
    results.update({k: results["base"].get(k) for k in (*RESULT_KEYS, "ms_per_sample_mean", "ms_per_sample_p95")})
    write_predictions(output / "predictions.csv", base)
    if robustness:
        augmented = run_pass(model, items, benchmark_input_loader(modality, preprocessing, True),
                             description="augmented pass", **common)
        results["augmented"] = score_pass(augmented)
        base_score, augmented_score = results["base"].get("score"), results["augmented"].get("score")
        # a pass with no scorable sample has no score, and neither has the blend
        both = base_score is not None and augmented_score is not None
        results["score"] = robustness_blend(base_score, augmented_score) if both else None
        write_predictions(output / "predictions_augmented.csv", augmented)
    if base["finite"].any():
        labels = np.array([i.label for i, ok in zip(base["items"], base["finite"]) if ok])
        prob = base["prob"][base["finite"]]
        reliability_diagram(labels, prob, output / "reliability.png", title="reliability")
        roc_curve_plot(labels, prob, output / "roc.png", title="ROC")
        pr_curve_plot(labels, prob, output / "pr.png", title="precision-recall")
    write_json(output / "results.json", results)
    write_text(output / "summary.txt", summary_text(str(model_path), results))
    return results


def _cap_per_dataset(items: list[MediaItem], cap: int) -> list[MediaItem]:
    kept: dict[str, int] = {}
    out = []
    for item in sorted(items, key=lambda i: (i.dataset, i.path)):
        if kept.get(item.dataset, 0) < cap:
            kept[item.dataset] = kept.get(item.dataset, 0) + 1
            out.append(item)
    return out


@releases_claims  # the output directory's lock is released when main returns or raises
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m detectors.evaluate", description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, type=Path, help="submission directory or zip")
    parser.add_argument("--data", required=True, type=Path, help="dataset YAML")
    parser.add_argument("--output", required=True, type=Path)
    parser.add_argument("--robustness", action="store_true", help="add the augmented pass and the 0.8/0.2 blend")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--num-workers", type=int, default=2)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--max-per-dataset", type=int, help="cap per dataset (the benchmark uses 100..2000)")
    args = parser.parse_args(argv)
    try:
        resolve_device(args.device)
        claim_directory(args.output, "evaluate", recursive_cleanup=False)  # lock --output
        results = evaluate_submission(args.model, args.data, args.output, robustness=args.robustness,
                                      batch_size=args.batch_size, num_workers=args.num_workers, device=args.device,
                                      max_per_dataset=args.max_per_dataset)
    except (ConfigError, FileNotFoundError, SubmissionError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(summary_text(str(args.model), results))
    print(f"results written to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
