"""Frozen image detectors compute each image's features once: the cached features give the logits of
the uncached network, and the backbone does not run again in later epochs or later runs."""

from __future__ import annotations

import logging

import pytest
import torch


def _frozen_detector(backbone, **model):
    from detectors.registry import create_detector

    return create_detector(
        "dinov3_image", {"backbone": str(backbone), "tuning": "frozen", "image_size": 32, "head_hidden": [8], **model}
    )


@pytest.fixture()
def backbone_images(monkeypatch):
    """Counts the images every Backbone forward pass sees."""
    from detectors.backbones import Backbone

    seen = []
    original = Backbone.forward

    def counting(self, inputs):
        seen.append(int(inputs.shape[0]))
        return original(self, inputs)

    monkeypatch.setattr(Backbone, "forward", counting)
    return seen


def test_cached_features_give_the_uncached_logits_and_are_computed_once(tiny_dinov3, tmp_path, backbone_images):
    from image_fixtures import write_image_set

    from detectors.data.catalog import load_items
    from detectors.image.data import ImageDataConfig

    items = load_items(write_image_set(tmp_path / "set", n_per_class=4))
    paths = [item.path for item in items]
    detector = _frozen_detector(tiny_dinov3).eval()
    data = ImageDataConfig(cache_dir=str(tmp_path / "cache"), decode_workers=0, feature_batch_size=3)
    recipe = detector.data_recipe("train", data)
    assert recipe.features is not None
    features, valid = recipe.features.run(paths)
    assert valid.all() and sum(backbone_images) == len(paths)
    with torch.no_grad():
        uncached = detector.net(torch.stack([recipe.load(path) for path in paths]))
        torch.testing.assert_close(detector.forward_head(features), uncached, atol=1e-5, rtol=1e-5)
    backbone_images.clear()
    again, _ = detector.data_recipe(
        "val", ImageDataConfig(cache_dir=str(tmp_path / "cache"), decode_workers=0, eval_crop="native")
    ).features.run(paths)
    assert backbone_images == []  # the same crops, the same weights: read back from the cache
    torch.testing.assert_close(again, features)
    other = _frozen_detector(tiny_dinov3, features="cls")  # other features: other cache entries
    assert other.data_recipe("train", data).features.identity != recipe.features.identity


def test_tuned_backbones_and_the_spectral_branch_train_on_media(tiny_dinov3, caplog):
    from detectors.image.data import ImageDataConfig
    from detectors.registry import create_detector

    data = ImageDataConfig()
    tuned = create_detector("dinov3_image", {"backbone": str(tiny_dinov3), "tuning": "layernorm", "image_size": 32})
    assert tuned.data_recipe("train", data).features is None
    assert _frozen_detector(tiny_dinov3).data_recipe("train", ImageDataConfig(feature_cache=False)).features is None
    with caplog.at_level(logging.INFO, logger="detectors.image.dinov3"):
        spectral = _frozen_detector(tiny_dinov3, spectral_branch=True, spectral_bins=8)
        assert spectral.data_recipe("train", data).features is None
    assert "spectral_branch: features are not cached" in caplog.text


def test_a_frozen_fit_runs_the_backbone_once_per_image(tiny_dinov3, tmp_path, backbone_images, caplog):
    from image_fixtures import write_image_set

    from detectors.image.fit import IMAGE
    from detectors.registry import list_detectors
    from detectors.training.fit import run_fit

    data = write_image_set(tmp_path / "set", n_per_class=6)
    arguments = [
        "--arch",
        "dinov3_image",
        "--data",
        str(data),
        "--backbone",
        str(tiny_dinov3),
        "--tuning",
        "frozen",
        "--max-epochs",
        "3",
        "--num-workers",
        "0",
        "--set",
        "model.image_size=32",
        "--set",
        f"data.cache_dir={tmp_path / 'cache'}",
        "--set",
        "data.decode_workers=0",
        "--set",
        "trainer.enable_progress_bar=false",
    ]
    with caplog.at_level(logging.INFO, logger="detectors.image.data"):
        run_fit("image", IMAGE, list_detectors("image"), "dinov3_image", [*arguments, "--output", str(tmp_path / "a")])
    assert "training augmentation is off" in caplog.text
    assert sum(backbone_images) == 12  # every image once (train, val, calibration), not once per epoch
    backbone_images.clear()
    run_fit("image", IMAGE, list_detectors("image"), "dinov3_image", [*arguments, "--output", str(tmp_path / "b")])
    assert sum(backbone_images) == 0  # a second run (another head, a sweep) reads every feature back
