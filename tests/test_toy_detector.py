"""Adding a detector takes one file and one YAML (docs/architecture.md, "Adding a detector"): a toy
detector defined in a single module outside the library, with its settings in a single YAML, trains
with the fit command, exports, and passes export.check."""

from __future__ import annotations

import importlib.util
import json
import sys

import torch
import yaml
from helpers import TOY_DETECTOR

TOY_SETTINGS = {
    "model": {"channels": 6},
    "data": {"batch_size": 8, "num_workers": 0, "crop": "resize", "augment_level": 0},
    "loss": {"name": "cross_entropy"},
    "optim": {"lr": 0.01, "scheduler": "none"},
    "trainer": {"max_epochs": 2, "enable_progress_bar": False},
}


def test_a_detector_in_one_file_and_one_yaml_trains_exports_and_passes_the_check(tmp_path, monkeypatch):
    from detectors.base import load_detector
    from detectors.image.demo import write_demo_images
    from detectors.image.fit import IMAGE
    from detectors.registry import list_detectors
    from detectors.training.fit import run_fit
    from export.__main__ import export_run
    from export.benchmark_loader import load_submission, run_model
    from export.check import check_submission

    module_file = tmp_path / "toy_detector.py"
    module_file.write_text(TOY_DETECTOR)
    settings = tmp_path / "toy.yaml"
    settings.write_text(yaml.safe_dump(TOY_SETTINGS))
    spec = importlib.util.spec_from_file_location("toy_detector", module_file)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "toy_detector", module)
    spec.loader.exec_module(module)  # @register_detector runs: the arch is known by its one name
    assert "toy_image" in list_detectors("image")

    data = write_demo_images(tmp_path / "images", n_per_class=8, size=(40, 48))
    run = run_fit(
        "image",
        IMAGE,
        list_detectors("image"),
        "dinov3_image",
        ["--arch", "toy_image", "--data", str(data), "--config", str(settings), "--output", str(tmp_path / "run")],
    )
    summary = json.loads((run / "summary.json").read_text())
    assert summary["arch"] == "toy_image" and summary["epochs_completed"] == 2
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["model"]["channels"] == 6 and config["optim"]["lr"] == 0.01  # the YAML reached the run

    report = export_run(run, tmp_path / "submission")
    assert report["max_abs_logit_difference"] <= 1e-4
    assert check_submission(tmp_path / "submission") == []
    source = (tmp_path / "submission" / "model.py").read_text()
    assert "class ToyNetwork(DetectorNetwork):" in source and "class ToyDetector" not in source
    assert "register_detector" not in source  # only the network and what it uses are bundled
    model, _ = load_submission(tmp_path / "submission")  # as the benchmark loads it
    images = torch.randint(0, 256, (3, 3, 32, 32), dtype=torch.uint8)
    with torch.no_grad():
        torch.testing.assert_close(run_model(model, images).float(), load_detector(run)(images), atol=1e-5, rtol=0)
