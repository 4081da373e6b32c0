"""TPR at a fixed FPR, and an image detector scoring videos (``--frames-per-video N --aggregate``)."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from detectors.errors import ConfigError
from detectors.evaluate import evaluate_submission, main
from detectors.metrics import binary_metrics, tpr_at_fpr

FIXTURES = Path(__file__).parent / "data" / "gasbench"
IMAGE_SUBMISSION = FIXTURES / "image" / "submission"


# --------------------------------------------------------------------------- TPR at a fixed FPR
def _brute_force(labels: np.ndarray, scores: np.ndarray, max_fpr: float) -> float:
    best = 0.0
    for threshold in [np.inf, *np.unique(scores)]:
        called = scores >= threshold
        fpr = called[labels == 0].mean()
        if fpr <= max_fpr:
            best = max(best, called[labels == 1].mean())
    return best


@pytest.mark.parametrize("seed", range(4))
def test_tpr_at_fpr_is_the_best_operating_point_within_the_fpr(seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, 300)
    scores = np.round(rng.normal(labels * 1.2, 1.0), 1)  # rounded: ties between classes
    for target in (0.0, 0.01, 0.05, 0.2):
        assert tpr_at_fpr(labels, scores, target) == pytest.approx(_brute_force(labels, scores, target))


def test_tpr_at_fpr_in_every_metrics_report():
    metrics = binary_metrics([0, 0, 0, 0, 1, 1], [0.1, 0.2, 0.3, 0.8, 0.7, 0.9])
    assert metrics["tpr_at_1pct_fpr"] == pytest.approx(0.5)  # only 0.9 above every real
    assert metrics["tpr_at_5pct_fpr"] == pytest.approx(0.5)
    assert binary_metrics([1, 1], [0.2, 0.9])["tpr_at_1pct_fpr"] is None  # one class


# --------------------------------------------------------------------------- frames of videos
def _video_data(root: Path) -> Path:
    entries = []
    for name, media_type in (("real-clips", "real"), ("gen-clips", "synthetic")):
        shutil.copytree(FIXTURES / "video" / "datasets" / name / "samples", root / name)
        entries.append({"name": name, "path": name, "modality": "video", "media_type": media_type})
    path = root / "videos.yaml"
    path.write_text(yaml.safe_dump({"datasets": entries}))
    return path


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> Path:
    return _video_data(tmp_path_factory.mktemp("videos"))


def test_an_image_detector_scores_videos_frame_by_frame(videos, tmp_path):
    from detectors.image.transforms import benchmark_resize
    from detectors.video.io import read_video_frames
    from detectors.video.sampling import FrameSampler
    from export.benchmark_loader import load_submission, run_model

    results = evaluate_submission(IMAGE_SUBMISSION, videos, tmp_path / "mean", num_workers=0, frames_per_video=4)
    assert results["frames_per_video"] == 4 and results["aggregate"] == "mean"
    assert results["base"]["n"] == 9 and results["frame_level"]["n"] == 36
    assert results["video_roc_auc"] == results["base"]["roc_auc"] and results["frame_roc_auc"] is not None
    frames = _rows(tmp_path / "mean" / "predictions_frames.csv")
    videos_rows = _rows(tmp_path / "mean" / "predictions.csv")
    assert len(frames) == 36 and len(videos_rows) == 9
    # an independent computation: the image model on four evenly spread frames, resized like images
    model, _ = load_submission(IMAGE_SUBMISSION)
    for row in videos_rows:
        clip = benchmark_resize(read_video_frames(row["path"], FrameSampler("uniform", 4), None), (40, 48))
        probs = torch.softmax(run_model(model, clip).float(), -1)[:, 1].double().numpy()
        assert float(row["prob_fake"]) == pytest.approx(probs.mean(), abs=1e-6)
        ours = [float(r["prob_fake"]) for r in frames if r["path"] == row["path"]]
        np.testing.assert_allclose(ours, probs, atol=1e-6)
    # max aggregation on the same frames
    maxed = evaluate_submission(
        IMAGE_SUBMISSION, videos, tmp_path / "max", num_workers=0, frames_per_video=4, aggregate="max"
    )
    by_path = {}
    for r in frames:
        by_path.setdefault(r["path"], []).append(float(r["prob_fake"]))
    for row in _rows(tmp_path / "max" / "predictions.csv"):
        assert float(row["prob_fake"]) == pytest.approx(max(by_path[row["path"]]), abs=1e-7)
    assert maxed["frame_level"]["roc_auc"] == pytest.approx(results["frame_level"]["roc_auc"])
    summary = (tmp_path / "mean" / "summary.txt").read_text()
    assert "4 frames per video" in summary and "frame-level: 36 frames" in summary
    assert "frame-level" in (tmp_path / "mean" / "report.html").read_text()


def test_frames_per_video_refuses_what_it_cannot_do(videos, tmp_path, capsys):
    with pytest.raises(ConfigError, match="this is a video model"):
        evaluate_submission(
            FIXTURES / "video" / "submission", videos, tmp_path / "a", num_workers=0, frames_per_video=2
        )
    with pytest.raises(ConfigError, match="--robustness"):
        evaluate_submission(
            IMAGE_SUBMISSION, videos, tmp_path / "b", num_workers=0, frames_per_video=2, robustness=True
        )
    assert (
        main(
            [
                "--model",
                str(IMAGE_SUBMISSION),
                "--data",
                str(videos),
                "--output",
                str(tmp_path / "c"),
                "--frames-per-video",
                "0",
            ]
        )
        == 2
    )
    assert "--frames-per-video must be >= 1" in capsys.readouterr().err
    assert (
        main(
            [
                "--model",
                str(IMAGE_SUBMISSION),
                "--data",
                str(videos),
                "--output",
                str(tmp_path / "d"),
                "--frames-per-video",
                "2",
                "--aggregate",
                "max",
                "--num-workers",
                "0",
                "--no-report",
            ]
        )
        == 0
    )
    written = json.loads((tmp_path / "d" / "results.json").read_text())
    assert written["aggregate"] == "max" and not (tmp_path / "d" / "report.html").exists()
