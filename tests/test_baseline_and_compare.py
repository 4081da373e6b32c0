"""``detectors.image.baseline`` (an HF image classifier as a detector) and ``detectors.compare``."""

from __future__ import annotations

import csv

import pytest
import torch


def _classifier(directory, labels):
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    torch.manual_seed(0)
    config = ViTConfig(
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        image_size=32,
        patch_size=16,
        id2label=dict(enumerate(labels)),
        label2id={n: i for i, n in enumerate(labels)},
    )
    ViTForImageClassification(config).save_pretrained(directory)
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(directory)
    return directory


def test_baseline_p_fake_is_the_fake_labels_softmax_mass(tmp_path):
    from image_fixtures import write_image_set
    from transformers import AutoModelForImageClassification

    from detectors.image.baseline import run_baseline
    from detectors.image.data import benchmark_input_loader

    model_dir = _classifier(tmp_path / "hub", ["Real", "AI-generated", "Artificial"])
    data = write_image_set(tmp_path / "set", n_per_class=4)
    results = run_baseline(
        str(model_dir), data, tmp_path / "out", fake_labels=["ai-generated", "artificial"], num_workers=0, report=False
    )
    assert results["baseline"]["fake_labels"] == ["AI-generated", "Artificial"]
    with open(tmp_path / "out" / "predictions.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 8 and (tmp_path / "out" / "results.json").is_file() and (tmp_path / "out" / "roc.png").is_file()
    reference = AutoModelForImageClassification.from_pretrained(model_dir).eval()
    load = benchmark_input_loader({"resize": [32, 32]})
    for row in rows[:3]:
        pixels = (load(row["path"]).float()[None] / 255 - 0.5) / 0.5  # ViTImageProcessor's mean/std
        with torch.no_grad():
            probs = torch.softmax(reference(pixel_values=pixels).logits, -1)[0]
        assert float(row["prob_fake"]) == pytest.approx(float(probs[1] + probs[2]), abs=1e-5)

    calibrated = run_baseline(
        str(model_dir),
        data,
        tmp_path / "calibrated",
        fake_labels=["artificial"],
        calibrate=True,
        calibration_share=0.5,
        num_workers=0,
        report=False,
    )
    assert calibrated["calibration"]["n"] == 4 and calibrated["base"]["n"] == 4  # half held out to calibrate
    assert calibrated["uncalibrated"]["n"] == 4 and calibrated["trainable_parameters"] == 3


def test_a_label_set_without_a_fake_class_is_a_clear_error(tmp_path, capsys):
    from image_fixtures import write_image_set

    from detectors.image.baseline import main

    model_dir = _classifier(tmp_path / "hub", ["cat", "dog"])
    data = write_image_set(tmp_path / "set", n_per_class=2)
    assert main(["--model", str(model_dir), "--data", str(data), "--output", str(tmp_path / "out")]) == 2
    error = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(error) == 1 and "no fake class among the model's labels ('cat', 'dog')" in error[0]
    assert "--fake-labels" in error[0]


def test_compare_refuses_a_directory_that_is_neither_a_run_nor_an_evaluation(tmp_path, capsys):
    from detectors.compare import main

    (tmp_path / "empty").mkdir()
    assert main([str(tmp_path / "empty"), "--output", str(tmp_path / "cmp")]) == 2
    assert "neither a run directory" in capsys.readouterr().err
