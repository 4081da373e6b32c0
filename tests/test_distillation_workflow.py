"""Seed 004's workflow, as a new user would run it, with tiny models: an image set with a teacher's soft
scores and about 11 % fakes -> an off-the-shelf classifier (baseline), a frozen-DINO probe and a CNN
fine-tuned end to end with and without ``pos_weight: auto`` -> exports -> one comparison."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from PIL import Image

TINY_CONVNEXT = '{"depths": [1, 1, 1, 1], "dims": [8, 16, 32, 64]}'


def write_teacher_scored_set(root, n_real=32, n_fake=4, seed=0):
    """Real and fake images in one folder, labelled only by a teacher's p(fake) in a manifest."""
    from image_fixtures import _fake, _real

    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    for index in range(n_real + n_fake):
        fake = index >= n_real
        h, w = rng.integers(32, 44, 2)
        pixels = _fake(rng, h, w, 1.0, (22, 0, -16), 1.6) if fake else _real(rng, h, w, 1.0, 18.0)
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(root / f"{index:03d}.png")
        score = rng.uniform(0.55, 1.0) if fake else (rng.uniform(0.0, 0.1) if index % 4 else rng.uniform(0.1, 0.45))
        rows.append((f"{index:03d}.png", f"{score:.4f}"))
    with open(root / "teacher.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "ai_score"])
        writer.writerows(rows)
    yaml_path = root / "data.yaml"
    yaml_path.write_text(
        "datasets:\n  - {name: feed, path: teacher.csv, modality: image, media_type: synthetic, "
        "score_column: ai_score}\n"
    )
    return yaml_path


def _tiny_hub_classifier(directory):
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    torch.manual_seed(0)
    config = ViTConfig(
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        image_size=32,
        patch_size=16,
        id2label={0: "artificial", 1: "human"},
        label2id={"artificial": 0, "human": 1},
    )
    ViTForImageClassification(config).save_pretrained(directory)
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(directory)
    return directory


def test_baseline_probe_and_cnn_side_by_side(tiny_dinov3, tmp_path, capsys):
    from detectors.base import load_detector
    from detectors.compare import main as compare_main
    from detectors.data.catalog import read_split
    from detectors.image.baseline import run_baseline
    from detectors.image.fit import IMAGE
    from detectors.image.probe import run_probe
    from detectors.registry import list_detectors
    from detectors.training.fit import run_fit
    from export.__main__ import export_run
    from export.benchmark_loader import load_submission, run_model
    from export.check import check_submission

    data = write_teacher_scored_set(tmp_path / "feed")
    baseline = tmp_path / "baseline"
    results = run_baseline(str(_tiny_hub_classifier(tmp_path / "hub")), data, baseline, num_workers=0, report=False)
    assert results["base"]["n"] == 36 and results["baseline"]["fake_labels"] == ["artificial"]

    probe = run_probe(
        data, str(tiny_dinov3), tmp_path / "probe", image_size=32, num_workers=0, cache_dir=tmp_path / "cache"
    )
    runs = {}
    for name, extra in (("cnn", []), ("cnn_pos_weight", ["--set", "loss.pos_weight=auto"])):
        runs[name] = run_fit(
            "image",
            IMAGE,
            list_detectors("image"),
            "dinov3_image",
            [
                "--arch",
                "cnn",
                "--data",
                str(data),
                "--output",
                str(tmp_path / name),
                "--max-epochs",
                "1",
                "--num-workers",
                "0",
                "--batch-size",
                "8",
                "--set",
                "model.backbone.pretrained=false",
                "--set",
                f"model.backbone.timm_kwargs={TINY_CONVNEXT}",
                "--set",
                "model.image_size=32",
                "--set",
                "data.balanced_sampling=false",
                "--set",
                "trainer.enable_progress_bar=false",
                *extra,
            ],
        )
    out = capsys.readouterr().out
    assert "training soft labels (teacher scores): n=24" in out and "share >= 0.5: 0.083" in out
    assert (runs["cnn"] / "plots" / "label_distribution.png").is_file()

    train = [item for item in read_split(runs["cnn_pos_weight"] / "split.csv") if item.split == "train"]
    assert all(item.score is not None for item in train)
    negatives, positives = sum(item.label == 0 for item in train), sum(item.label == 1 for item in train)
    summaries = {name: json.loads((run / "summary.json").read_text()) for name, run in runs.items()}
    assert summaries["cnn_pos_weight"]["loss_class_weights"] == [1.0, pytest.approx(negatives / positives)]
    assert summaries["cnn"]["loss_class_weights"] is None
    assert summaries["cnn"]["label_distribution"]["soft_labels"] is True

    for run in (probe, *runs.values()):  # everything trainable exports and passes the benchmark's checks
        report = export_run(run, tmp_path / f"{run.name}-submission")
        assert report["max_abs_logit_difference"] <= 1e-4
        assert check_submission(tmp_path / f"{run.name}-submission") == []
    cnn_submission = tmp_path / "cnn_pos_weight-submission"
    assert "import timm" not in (cnn_submission / "model.py").read_text()  # plain torch: any timm version loads it
    assert any(".stem." in name for name in summaries["cnn_pos_weight"]["trainable_tensors"])  # end to end
    model, _ = load_submission(cnn_submission)  # as the benchmark loads it
    images = torch.randint(0, 256, (3, 3, 32, 32), dtype=torch.uint8)
    with torch.no_grad():
        torch.testing.assert_close(
            run_model(model, images).float(), load_detector(runs["cnn_pos_weight"])(images), atol=1e-5, rtol=0
        )

    comparison = tmp_path / "comparison"
    assert (
        compare_main([str(baseline), str(probe), *(str(run) for run in runs.values()), "--output", str(comparison)])
        == 0
    )
    table = capsys.readouterr().out
    for name in ("baseline", "probe", "cnn", "cnn_pos_weight"):
        assert f"| {name} |" in table
    with open(comparison / "comparison.csv", newline="") as handle:
        rows = {row["detector"]: row for row in csv.DictReader(handle)}
    assert set(rows) == {"baseline", "probe", "cnn", "cnn_pos_weight"}
    assert rows["baseline"]["trainable_parameters"] == "0"
    assert int(rows["cnn"]["trainable_parameters"]) > int(rows["probe"]["trainable_parameters"]) > 0
    assert all(row["roc_auc"] and row["pr_auc"] and row["ms_per_sample"] for row in rows.values())
    assert (comparison / "roc.png").stat().st_size > 0 and (comparison / "pr.png").stat().st_size > 0
    assert "no predictions.csv" not in table  # every detector has a curve
