"""FakeFinder's FlexibleCNN (``--arch flexcnn``): the network against a functional re-computation from
its weights, parameter counts by formula, settings checked, and the export equal to the in-library
model (loaded as the benchmark loads it, and through export.check)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from detectors.errors import ConfigError


def _detector(**settings):
    from detectors.registry import create_detector

    detector = create_detector("flexcnn", settings)
    torch.manual_seed(0)
    with torch.no_grad():  # non-trivial BatchNorm statistics, so eval mode matters
        for block in detector.net.features:
            block[1].running_mean.uniform_(-0.2, 0.2)
            block[1].running_var.uniform_(0.5, 1.5)
    return detector.eval()


def _functional_forward(state: dict[str, torch.Tensor], images: torch.Tensor, layers: int) -> torch.Tensor:
    """FakeFinder's forward from the weights alone: (conv 'same' -> BN -> ReLU -> maxpool 2) x layers ->
    flatten -> dropout (identity) -> fc -> ReLU -> fc."""
    x = images.float() / 255.0
    for i in range(layers):
        weight = state[f"features.{i}.0.weight"]
        x = F.conv2d(x, weight, state[f"features.{i}.0.bias"], padding=weight.shape[-1] // 2)
        x = F.batch_norm(
            x,
            state[f"features.{i}.1.running_mean"],
            state[f"features.{i}.1.running_var"],
            state[f"features.{i}.1.weight"],
            state[f"features.{i}.1.bias"],
            eps=1e-5,
        )
        x = F.max_pool2d(F.relu(x), 2)
    x = F.relu(F.linear(x.flatten(1), state["classifier.1.weight"], state["classifier.1.bias"]))
    return F.linear(x, state["classifier.4.weight"], state["classifier.4.bias"])


@pytest.mark.parametrize(
    "settings",
    [
        {"n_layers": 1, "filters": [8], "kernel_sizes": [3], "image_size": 16, "fc_size": 64},
        {"n_layers": 2, "filters": [32, 24], "kernel_sizes": [5, 3], "image_size": 32, "fc_size": 384},
        {"n_layers": 3, "filters": [16, 8, 64], "kernel_sizes": [5, 5, 3], "image_size": 20, "fc_size": 128},
    ],
)
def test_the_network_matches_fakefinders_definition(settings):
    detector = _detector(**settings)
    images = torch.randint(0, 256, (3, 3, settings["image_size"], settings["image_size"]), dtype=torch.uint8)
    state = detector.net.state_dict()
    with torch.no_grad():
        expected = _functional_forward(state, images, settings["n_layers"])
        torch.testing.assert_close(detector.net(images), expected, atol=1e-5, rtol=1e-5)
    side = settings["image_size"]
    for _ in range(settings["n_layers"]):
        side //= 2  # MaxPool2d(2) rounds down (20 -> 10 -> 5 -> 2)
    channels, total = 3, 0
    for width, kernel in zip(settings["filters"], settings["kernel_sizes"]):
        total += kernel * kernel * channels * width + width + 2 * width  # conv weight + bias, BN affine
        channels = width
    total += channels * side * side * settings["fc_size"] + settings["fc_size"] + settings["fc_size"] * 2 + 2
    assert sum(p.numel() for p in detector.parameters() if p.requires_grad) == total


@pytest.mark.parametrize(
    "settings, problem",
    [
        ({"n_layers": 3}, "model.filters: needs one value per layer (n_layers = 3), got 2"),
        ({"n_layers": 1, "filters": [8], "kernel_sizes": [3, 5]}, "model.kernel_sizes: needs one value per layer"),
        (
            {"n_layers": 3, "filters": [8, 8, 8], "kernel_sizes": [3, 3, 3], "image_size": 4},
            "model.n_layers: 3 poolings",
        ),
        ({"dropout": 1.0}, "model.dropout: must be >= 0 and < 1"),
    ],
)
def test_inconsistent_settings_are_named(settings, problem):
    from detectors.registry import create_detector

    with pytest.raises(ConfigError, match=problem.replace("(", r"\(").replace(")", r"\)")):
        create_detector("flexcnn", settings)


def test_the_export_equals_the_in_library_model(tmp_path):
    from export.__main__ import export_detector
    from export.benchmark_loader import load_submission, run_model
    from export.check import check_submission

    detector = _detector(n_layers=2, filters=[8, 16], kernel_sizes=[5, 3], image_size=32, fc_size=64)
    detector.calibrator.set(1.7, [0.1, -0.3])  # a fitted calibrator is folded into the export
    report = export_detector(detector, tmp_path / "submission")
    assert report["max_abs_logit_difference"] <= 1e-5
    assert check_submission(tmp_path / "submission") == []
    source = (tmp_path / "submission" / "model.py").read_text()
    assert "class FlexibleCNN(DetectorNetwork):" in source and "def flattened_side" in source
    model, config = load_submission(tmp_path / "submission")
    assert config["preprocessing"]["resize"] == [32, 32]
    images = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    with torch.no_grad():
        torch.testing.assert_close(run_model(model, images).float(), detector(images), atol=1e-5, rtol=0)
