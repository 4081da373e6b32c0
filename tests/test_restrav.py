"""ReStraV detector: embeddings, features, z-score statistics, feature cache, unreadable videos, export."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from detectors.data.catalog import load_items
from detectors.data.datamodule import build_dataset
from detectors.registry import create_detector
from detectors.video.data import load_clip
from detectors.video.sampling import FrameSampler

TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, image_size=28, patch_size=14)


@pytest.fixture(scope="session")
def tiny_backbone(tmp_path_factory) -> Path:
    from transformers import Dinov2Config, Dinov2Model

    path = tmp_path_factory.getbasetemp() / "tiny_dinov2"
    if not path.is_dir():
        torch.manual_seed(0)
        Dinov2Model(Dinov2Config(**TINY)).save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def demo_yaml(tmp_path_factory) -> Path:
    from detectors.video.demo import write_demo_videos

    return write_demo_videos(tmp_path_factory.getbasetemp() / "restrav_videos", n_per_class=6)


def make(tiny_backbone: Path, **overrides):
    return create_detector("restrav", {"backbone": {"name": str(tiny_backbone)}, "image_size": 28, **overrides})


def dataset_of(detector, items, stage: str, data: dict):
    """What the DataModule builds for ``stage`` (features extracted, statistics set for training)."""
    config = detector.data_config(data)
    dataset = build_dataset(detector.data_recipe(stage, config), items, stage)
    if stage == "train":
        detector.on_train_data(dataset, config)
    return dataset


@pytest.mark.parametrize("embedding", ["tokens", "cls"])
def test_embeddings_match_the_backbone_tokens(tiny_backbone, embedding):
    from transformers import Dinov2Model

    detector = make(tiny_backbone, embedding=embedding).eval()
    video = torch.randint(0, 256, (2, 9, 3, 28, 28), dtype=torch.uint8)
    with torch.no_grad():
        z = detector.net.embed_frames(video)
        hf = Dinov2Model.from_pretrained(tiny_backbone).eval()
        tokens = hf(pixel_values=video.flatten(0, 1).float() / 255).last_hidden_state  # no normalisation
    expected = tokens.flatten(1) if embedding == "tokens" else tokens[:, 0]  # CLS + 4 patches, or CLS
    assert z.shape == (2, 9, 5 * 32 if embedding == "tokens" else 32)
    torch.testing.assert_close(z, expected.reshape(2, 9, -1), atol=1e-5, rtol=1e-5)
    assert all(not p.requires_grad for p in detector.backbone.parameters())
    assert sum(p.numel() for p in detector.parameters() if p.requires_grad) == 21 * 64 + 64 + 64 * 32 + 32 + 32 * 2 + 2


def test_zscore_statistics_and_head(tiny_backbone, demo_yaml, tmp_path):
    detector = make(tiny_backbone)
    items = load_items(demo_yaml, modality="video")
    dataset = dataset_of(detector, items, "train", {"cache_dir": str(tmp_path), "decode_workers": 0})
    features = dataset.features.numpy().astype(np.float64)
    assert features.shape == (len(items), 21) and dataset.skipped == 0
    np.testing.assert_allclose(detector.net.feature_mean.numpy(), features.mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(detector.net.feature_std.numpy(), features.std(0, ddof=0), rtol=1e-4, atol=1e-6)
    sample = dataset[0]
    assert set(sample) >= {"features", "label", "class_index", "index", "dataset_id"}
    with torch.no_grad():
        z = (sample["features"] - torch.tensor(features.mean(0), dtype=torch.float32)) / (
            torch.tensor(features.std(0), dtype=torch.float32) + 1e-8
        )
        torch.testing.assert_close(
            detector.forward_head(sample["features"][None]), detector.net.head(z[None]), atol=1e-4, rtol=1e-4
        )
    # the buffers are part of the saved state (stored with the model)
    assert {"net.feature_mean", "net.feature_std"} <= set(detector.state_dict())
    # features of the dataset equal the in-library forward on the same frames
    sampler = FrameSampler("benchmark", 24, frame_rate=12.0)
    clip = load_clip(items[0].path, sampler, (28, 28))
    with torch.no_grad():
        torch.testing.assert_close(detector.forward_features(clip[None])[0], dataset.features[0], atol=1e-4, rtol=1e-4)


def test_feature_cache_skips_the_backbone(tiny_backbone, demo_yaml, tmp_path):
    detector = make(tiny_backbone)
    items = load_items(demo_yaml, modality="video")[:4]
    calls = []
    detector.backbone.model.register_forward_hook(lambda *args: calls.append(1))
    data = {"cache_dir": str(tmp_path), "decode_workers": 0, "feature_batch_size": 2}
    first = dataset_of(detector, items, "eval", data)
    assert len(calls) == 4  # one backbone pass per video on CPU (batches of 2 feed the decoding)
    second = dataset_of(detector, items, "eval", data)
    assert len(calls) == 4  # every video came from the cache
    torch.testing.assert_close(first.features, second.features)
    # another sampler, or another embedding, is another cache entry
    dataset_of(detector, items, "eval", {**data, "sampling": "uniform"})
    assert len(calls) == 8
    assert make(tiny_backbone, embedding="cls").model_key() != detector.model_key()


def test_unreadable_videos_are_skipped_and_counted(tiny_backbone, demo_yaml, tmp_path):
    from detectors.data.dataset import collate_skip

    detector = make(tiny_backbone)
    items = load_items(demo_yaml, modality="video")[:3]
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00\x00\x00\x18ftypmp42 definitely not a video")
    items[1] = dataclasses.replace(items[1], path=str(broken))
    dataset = dataset_of(detector, items, "train", {"feature_cache": False, "decode_workers": 0})
    assert dataset.skipped == 1 and dataset[1] == {"unreadable": str(broken)} and "features" in dataset[0]
    batch = collate_skip([dataset[i] for i in range(3)])
    assert batch["skipped"] == 1 and batch["index"].tolist() == [0, 2] and batch["skipped_paths"] == [str(broken)]
    # statistics come from the readable videos only
    torch.testing.assert_close(detector.net.feature_mean, dataset.features[[0, 2]].mean(0))


@pytest.mark.parametrize("embedding", ["tokens", "cls"])
def test_export_equals_in_library(tiny_backbone, demo_yaml, tmp_path, embedding):
    from export.__main__ import export_detector
    from export.benchmark_loader import load_submission, run_model
    from export.check import check_submission

    detector = make(tiny_backbone, embedding=embedding, imagenet_normalize=embedding == "cls", num_frames=12)
    detector.set_feature_statistics(torch.randn(10, 21) * 3 + 5)
    detector.calibrator.set(temperature=1.7, bias=[0.1, -0.2])
    report = export_detector(detector, tmp_path / "sub")
    assert report["max_abs_logit_difference"] <= 1e-4
    assert check_submission(tmp_path / "sub") == []
    model, config = load_submission(tmp_path / "sub")
    assert config["preprocessing"] == {"resize": [28, 28], "num_frames": 12, "frame_rate": 12.0}
    items = load_items(demo_yaml, modality="video")[:2]
    # real clips at another size exercise the in-model resize
    clips = torch.stack([load_clip(i.path, FrameSampler("benchmark", 12, frame_rate=12.0), (40, 40)) for i in items])
    with torch.no_grad():
        expected = detector.eval()(clips)
    torch.testing.assert_close(run_model(model, clips), expected, atol=1e-4, rtol=0)


def test_config_validation(tiny_backbone):
    with pytest.raises(ValueError, match="embedding"):
        make(tiny_backbone, embedding="mean")
    with pytest.raises(ValueError, match="num_frames"):
        make(tiny_backbone, num_frames=4)


def test_fine_tuning_keeps_the_loaded_feature_statistics(tiny_backbone, demo_yaml, tmp_path):
    detector = make(tiny_backbone)
    items = load_items(demo_yaml, modality="video")
    old_mean, old_std = torch.full((21,), 3.0), torch.full((21,), 2.0)
    detector.net.feature_mean.copy_(old_mean)
    detector.net.feature_std.copy_(old_std)  # as after --init-from: fitted statistics the MLP was trained with
    data = {"cache_dir": str(tmp_path), "decode_workers": 0}
    dataset_of(detector, items, "train", data)
    assert torch.equal(detector.net.feature_mean, old_mean) and torch.equal(detector.net.feature_std, old_std)
    dataset_of(detector, items, "train", {**data, "refit_feature_statistics": True})
    assert not torch.equal(detector.net.feature_mean, old_mean)
