"""Metrics and evaluation edge cases (NaN outputs, empty passes, bad labels, list inputs)."""

from __future__ import annotations

import csv
import json
import math
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from safetensors.torch import save_file

from detectors import metrics
from detectors.evaluate import evaluate_submission, main

# A tiny image submission: p(fake) from the mean brightness through Linear(1, 2); an almost white image
# gives NaN logits (the kind of numerical bug an evaluation has to survive and report).
MODEL_PY = """
import torch
import torch.nn as nn
from safetensors.torch import load_file


class Brightness(nn.Module):
    def __init__(self, num_classes=2):
        super().__init__()
        self.linear = nn.Linear(1, num_classes)

    def forward(self, x):
        m = x.to(torch.float32).mean(dim=(1, 2, 3)) / 255.0
        z = self.linear(m[:, None])
        return torch.where((m > 0.9)[:, None], torch.full_like(z, float("nan")), z)


def load_model(weights_path, num_classes=2, **kwargs):
    model = Brightness(num_classes)
    model.load_state_dict(load_file(weights_path))
    model.train(False)
    return model
"""
WEIGHT, BIAS = torch.tensor([[-4.0], [4.0]]), torch.tensor([1.0, -1.0])


def _submission(root: Path) -> Path:
    directory = root / "submission"
    directory.mkdir()
    (directory / "model.py").write_text(textwrap.dedent(MODEL_PY))
    save_file({"linear.weight": WEIGHT, "linear.bias": BIAS}, str(directory / "model.safetensors"))
    config = {
        "name": "brightness",
        "version": "1.0.0",
        "modality": "image",
        "dtype": "float32",
        "preprocessing": {"resize": [16, 16]},
        "model": {"num_classes": 2, "weights_file": "model.safetensors"},
    }
    (directory / "model_config.yaml").write_text(yaml.safe_dump(config))
    return directory


def _dataset(root: Path, levels: dict[str, list[int]], corrupt: int = 0) -> Path:
    datasets = []
    for media_type, values in levels.items():
        folder = root / "data" / media_type
        folder.mkdir(parents=True)
        for i, value in enumerate(values):
            Image.new("RGB", (20, 16), (value, value, value)).save(folder / f"{i:02d}.png")
        for i in range(corrupt):
            (folder / f"broken{i}.png").write_bytes(b"not a png")
        datasets.append({"name": media_type, "path": str(folder), "modality": "image", "media_type": media_type})
    path = root / "data.yaml"
    path.write_text(yaml.safe_dump({"datasets": datasets}))
    return path


def _expected_prob(value: int) -> float:
    z = WEIGHT[:, 0].double() * (value / 255.0) + BIAS.double()
    return float(torch.softmax(z, 0)[1])


def test_evaluate_reports_nan_outputs_and_scores_the_rest(tmp_path) -> None:
    levels = {"real": [30, 60, 90, 140], "synthetic": [120, 170, 200, 250]}  # 250: NaN logits
    data = _dataset(tmp_path, levels, corrupt=1)
    results = evaluate_submission(_submission(tmp_path), data, tmp_path / "eval", num_workers=0, batch_size=3)

    base = results["base"]
    assert base["non_finite_outputs"] == 1 and base["skipped_unreadable"] == 2 and base["n"] == 7
    # metrics of the seven finite samples, from an independent computation of the model's probabilities
    values = [(0, v) for v in levels["real"]] + [(1, v) for v in levels["synthetic"][:3]]
    labels = np.array([label for label, _ in values])
    prob = np.array([_expected_prob(v) for _, v in values])
    expected = metrics.binary_metrics(labels, prob)
    for key in ("score", "mcc", "brier", "accuracy", "roc_auc"):
        assert base[key] == pytest.approx(expected[key], abs=1e-6), key
    assert base["brier"] == pytest.approx(np.mean((prob - labels) ** 2), abs=1e-6)

    saved = json.loads((tmp_path / "eval" / "results.json").read_text())  # strict JSON: no NaN anywhere
    assert saved["base"]["non_finite_outputs"] == 1
    with open(tmp_path / "eval" / "predictions.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 8 and sum(math.isnan(float(row["prob_fake"])) for row in rows) == 1
    assert "NaN/inf logits" in (tmp_path / "eval" / "summary.txt").read_text()


def test_evaluate_with_no_readable_sample_and_robustness_does_not_crash(tmp_path) -> None:
    data = _dataset(tmp_path, {"real": [], "synthetic": []}, corrupt=2)
    results = evaluate_submission(_submission(tmp_path), data, tmp_path / "eval", num_workers=0, robustness=True)
    assert results["base"]["n"] == 0 and results["base"]["skipped_unreadable"] == 4
    assert results["augmented"]["n"] == 0 and results["score"] is None
    assert json.loads((tmp_path / "eval" / "results.json").read_text())["score"] is None


def test_evaluate_cli_names_a_missing_submission(tmp_path, capsys) -> None:
    data = _dataset(tmp_path, {"real": [10], "synthetic": [200]})
    assert main(["--model", str(tmp_path / "nowhere"), "--data", str(data), "--output", str(tmp_path / "eval")]) == 2
    assert str(tmp_path / "nowhere") in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_evaluate_cli_names_a_device_this_machine_lacks(tmp_path, capsys) -> None:
    data, submission = _dataset(tmp_path, {"real": [10], "synthetic": [200]}), _submission(tmp_path)
    for device, message in (("cuda", "no such device on this machine"), ("gpu0", "not a device name")):
        code = main(
            ["--model", str(submission), "--data", str(data), "--output", str(tmp_path / "eval"), "--device", device]
        )
        assert code == 2 and message in capsys.readouterr().err


def test_binary_metrics_names_non_finite_probabilities() -> None:
    with pytest.raises(ValueError, match=r"1 non-finite value\(s\) of 3 \(first at index 1\)"):
        metrics.binary_metrics([0, 1, 1], [0.2, float("nan"), 0.9])


def test_multiclass_metrics_rejects_out_of_range_class_indices() -> None:
    p = np.full((3, 3), 1 / 3)
    with pytest.raises(ValueError, match="0..2"):
        metrics.multiclass_metrics([0, 1, 3], p)
    with pytest.raises(ValueError, match="0..2"):
        metrics.multiclass_metrics([0, 1, -1], p)  # used to wrap around to class 2 silently


def test_list_inputs_keep_float64_precision() -> None:
    # a Python list used to go through float32: brier([0.3], [0]) came out as 0.09000000357...
    assert metrics.brier([0.3], [0]) == 0.3**2
    assert metrics.brier([0.1, 0.7], [0, 1]) == pytest.approx((0.01 + 0.09) / 2, rel=1e-15)
    assert metrics.equal_error_rate([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == (0.5, 0.4)
    z = [[0.0, 0.1], [0.3, -0.2]]
    assert np.array_equal(metrics.prob_fake_from_logits(z), metrics.prob_fake_from_logits(np.array(z)))


def test_each_sample_is_decoded_once_with_worker_processes(tmp_path) -> None:
    """The progress bar must not iterate the DataLoader twice (tqdm.auto's asyncio variant calls
    iter() in its constructor: a second set of workers decoding the first batches again)."""
    import multiprocessing

    from detectors.data.catalog import MediaItem
    from detectors.evaluate import run_pass

    calls = multiprocessing.get_context("fork").Value("i", 0)

    def load(path: str) -> torch.Tensor:
        with calls.get_lock():
            calls.value += 1
        return torch.zeros(3, 8, 8, dtype=torch.uint8)

    class Constant(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.zeros(x.shape[0], 2)

    items = [
        MediaItem(str(tmp_path / f"{i}.png"), i % 2, "synthetic" if i % 2 else "real", "d", "image") for i in range(6)
    ]
    result = run_pass(
        Constant(), items, load, batch_size=2, num_workers=1, device=torch.device("cpu"), description="test"
    )
    assert len(result["items"]) == 6 and calls.value == 6
