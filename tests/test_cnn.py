"""``--arch cnn``: the plain-torch ConvNeXt / ResNet equal timm's forward, --backbone-weights loads
strictly, timm ViTs are refused. Training, export, export.check and logits equal in-library:
tests/test_distillation_workflow.py."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

TINY_CONVNEXT = {"depths": [1, 1, 1, 1], "dims": [8, 16, 32, 64]}

CASES = [
    ("convnext_tiny", TINY_CONVNEXT),
    ("convnext_atto", {"depths": [1, 1, 1, 1], "dims": [8, 16, 32, 64], "ls_init_value": None}),  # conv MLP
    ("resnet18", {"layers": [1, 1, 1, 1], "channels": [8, 16, 32, 64], "stem_width": 8}),
    ("resnet50", {"layers": [1, 2, 1, 1], "channels": [8, 16, 32, 64], "stem_width": 8}),
    ("resnext50_32x4d", {"layers": [1, 1, 1, 1], "channels": [16, 32, 64, 128], "stem_width": 8}),
]


def _randomise(model: torch.nn.Module, seed: int = 0) -> None:
    """Every weight and BatchNorm statistic random (timm's init zeroes layer scales and last BNs)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if tensor.is_floating_point():
                values = (
                    torch.rand(tensor.shape, generator=generator) * 0.5 + 0.5
                    if "running_var" in name
                    else torch.randn(tensor.shape, generator=generator) * 0.2
                )
                tensor.copy_(values)


@pytest.mark.parametrize("name,kwargs", CASES, ids=[case[0] for case in CASES])
def test_plain_torch_cnn_equals_timm(name, kwargs):
    import timm

    from detectors.networks.cnn import build_cnn
    from export.convert import convert_cnn

    model = timm.create_model(name, pretrained=False, num_classes=0, **kwargs).eval()
    _randomise(model)
    architecture, state = convert_cnn(model)
    plain = build_cnn(architecture)
    plain.load_state_dict(state, strict=True)
    plain.eval()
    x = torch.randn(2, 3, 48, 40, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected, actual = model(x), plain(x)
    assert actual.shape == expected.shape == (2, plain.embed_dim)
    torch.testing.assert_close(actual, expected, atol=1e-5, rtol=1e-5)


def test_unsupported_timm_cnn_is_named():
    import timm

    from export.convert import cnn_architecture

    with pytest.raises(ValueError, match="not one of them"):
        cnn_architecture(timm.create_model("mobilenetv3_small_050", pretrained=False, num_classes=0))
    with pytest.raises(ValueError, match="deep stems"):
        cnn_architecture(timm.create_model("resnet18d", pretrained=False, num_classes=0, layers=[1, 1, 1, 1]))


def test_backbone_weights_that_do_not_fit_are_an_error_naming_the_file(tmp_path):
    import timm

    from detectors.errors import CheckpointError
    from detectors.registry import create_detector

    model = timm.create_model("convnext_tiny", pretrained=False, num_classes=0, **TINY_CONVNEXT)
    _randomise(model, seed=3)
    good, bad = tmp_path / "tiny.safetensors", tmp_path / "bad.safetensors"
    state = {key: value.contiguous() for key, value in model.state_dict().items()}
    save_file(state, str(good))
    broken = dict(state)
    broken.pop("stem.0.bias")
    broken["extra.weight"] = torch.zeros(2)
    save_file(broken, str(bad))
    config = {
        "backbone": {"name": "convnext_tiny", "weights": str(good), "timm_kwargs": TINY_CONVNEXT},
        "image_size": 32,
    }
    detector = create_detector("cnn", config)
    torch.testing.assert_close(detector.backbone.inner.stem[0].weight, model.stem[0].weight)  # loaded, not random
    config["backbone"]["weights"] = str(bad)
    with pytest.raises(CheckpointError, match=r"bad\.safetensors.*Missing keys \(stem\.0\.bias\).*extra\.weight"):
        create_detector("cnn", config)


def test_vit_names_are_refused_by_the_cnn_arch():
    from detectors.errors import ConfigError
    from detectors.registry import create_detector

    with pytest.raises(ConfigError, match="not a timm CNN"):
        create_detector(
            "cnn",
            {
                "backbone": {
                    "name": "vit_small_patch16_224",
                    "pretrained": False,
                    "timm_kwargs": {"depth": 1, "embed_dim": 32, "num_heads": 2},
                },
                "image_size": 32,
            },
        )
