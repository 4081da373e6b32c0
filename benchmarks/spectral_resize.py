"""The spectral detector: generalisation to an unseen upsampler, and what the benchmark's resize does.

Data: ``detectors.image.upsampling_sets`` (crops of scikit-learn's two sample photographs; fakes
are the crops downscaled x2 and upsampled back by nearest / bilinear / a transposed convolution;
train on ``china.jpg`` real vs nearest, hold out ``flower.jpg`` crops against each upsampler).
Every run goes through the library as a user would: ``python -m detectors.image.fit --arch spectral``
(in process), ``export``, ``detectors.evaluate`` (the benchmark's decode, centre crop and OpenCV
bilinear resize to ``model.image_size``).

1. Generalisation: crops of ``image_size`` (no resize at evaluation).
2. The resize: crops of 1x, 1.5x and 2x ``image_size``, so the benchmark resizes the evaluation
   images by those factors; trained on the same resized input (``data.crop: benchmark``, the
   default) or on native-resolution centre crops (``data.crop: native``).

    python benchmarks/spectral_resize.py [--image-size 64] [--epochs 25] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def fit_export_evaluate(
    sets: dict[str, Path],
    image_size: int,
    crop: str,
    epochs: int,
    work: Path,
    holdouts: tuple[str, ...] = ("bilinear", "nearest", "tconv"),
) -> dict[str, dict[str, float]]:
    from detectors.evaluate import evaluate_submission
    from detectors.image.fit import IMAGE
    from detectors.registry import default_detector, list_detectors
    from detectors.training.fit import run_fit
    from export.__main__ import export_run

    run = work / "run"
    run_fit(
        "image",
        IMAGE,
        list_detectors("image"),
        default_detector("image"),
        [
            "--arch",
            "spectral",
            "--data",
            str(sets["train"]),
            "--output",
            str(run),
            "--max-epochs",
            str(epochs),
            "--set",
            f"model.image_size={image_size}",
            "--set",
            f"data.crop={crop}",
            "--set",
            f"data.cache_dir={work / 'cache'}",
        ],
    )
    export_run(run, work / "submission")
    out = {}
    for kind in holdouts:
        results = evaluate_submission(
            work / "submission", sets[f"holdout_{kind}"], work / f"eval_{kind}", num_workers=0, report=False
        )
        real = results["base"]["per_dataset"]["holdout_real"]["accuracy"]
        out[kind] = {
            "roc_auc": results["roc_auc"],
            "tpr_at_5pct_fpr": results["tpr_at_5pct_fpr"],
            "accuracy": results["accuracy"],
            "real_accuracy": real,
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=25)
    parser.add_argument("--out", type=Path, help="keep the runs here (default: a temporary folder)")
    args = parser.parse_args()
    from detectors.image.upsampling_sets import write_upsampling_sets

    root = args.out or Path(tempfile.mkdtemp(prefix="spectral-bench-"))
    size = args.image_size
    rows = []
    for factor in (1.0, 1.5, 2.0):
        crop_size = int(round(size * factor / 2)) * 2
        sets = write_upsampling_sets(root / f"sets_{crop_size}", size=crop_size, stride=16)
        for crop in ("benchmark",) if factor == 1.0 else ("benchmark", "native"):
            started = time.time()
            result = fit_export_evaluate(sets, size, crop, args.epochs, root / f"run_{crop_size}_{crop}")
            rows.append(
                {
                    "crops": crop_size,
                    "resize_factor": factor,
                    "train_input": crop,
                    **result,
                    "seconds": round(time.time() - started, 1),
                }
            )
            print(json.dumps(rows[-1]), flush=True)
    print(f"\nimage_size {size}; held-out photo; ROC-AUC (TPR at 5 % FPR) [accuracy on held-out reals]")
    print(
        f"{'crops':>6} {'resize':>6} {'train input':>12}  {'bilinear (unseen)':>26} {'nearest (seen)':>26} "
        f"{'tconv (unseen)':>26}"
    )
    for row in rows:
        cells = [
            f"{row[k]['roc_auc']:.3f} ({row[k]['tpr_at_5pct_fpr']:.3f}) [{row[k]['real_accuracy']:.2f}]"
            for k in ("bilinear", "nearest", "tconv")
        ]
        print(
            f"{row['crops']:>6} {row['resize_factor']:>5}x {row['train_input']:>12}  "
            + " ".join(f"{c:>26}" for c in cells)
        )
    (root / "results.json").write_text(json.dumps(rows, indent=1))
    print(f"\nruns in {root}")


if __name__ == "__main__":
    main()
