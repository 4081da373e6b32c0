"""Video detectors: ReStraV feature-cache identity and missing files, the detect CLI's decision
rule and its error on a submission without ``preprocessing.resize``, GenD's preprocessing."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import safetensors.torch
import torch
import yaml

from detectors.data.cache import FeatureCache
from detectors.registry import create_detector
from detectors.video.data import ClipLoader
from detectors.video.sampling import FrameSampler

TINY = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "image_size": 28, "patch_size": 14}


@pytest.fixture(scope="module")
def tiny_backbone(tmp_path_factory) -> Path:
    from transformers import Dinov2Config, Dinov2Model

    path = tmp_path_factory.mktemp("review_video") / "tiny_dinov2"
    torch.manual_seed(0)
    Dinov2Model(Dinov2Config(**TINY)).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> Path:
    from detectors.video.demo import write_mp4

    path = tmp_path_factory.mktemp("review_video_clip") / "clip.mp4"
    torch.manual_seed(1)
    write_mp4(path, torch.randint(0, 256, (12, 3, 32, 48), dtype=torch.uint8), fps=24)
    return path


def restrav(tiny_backbone: Path):
    return create_detector("restrav", {"backbone": {"name": str(tiny_backbone)}, "image_size": 28})


# ---------------------------------------------------------------------------------- ReStraV cache
def test_model_key_follows_the_backbone_weights(tiny_backbone):
    detector, fresh = restrav(tiny_backbone), restrav(tiny_backbone)
    before = detector.model_key()
    assert before == fresh.model_key()
    with torch.no_grad():
        detector.backbone.model.embeddings.patch_embeddings.projection.weight.mul_(2.0)
    # the key must name the weights that compute the features now, not those of its first call
    assert detector.model_key() != before
    assert fresh.model_key() == before


def test_changed_weights_never_reuse_cached_features(tiny_backbone, video, tmp_path):
    detector = restrav(tiny_backbone)
    sampler = FrameSampler("benchmark", 8)
    first, valid = detector.feature_extraction(sampler, cache_dir=tmp_path, num_workers=0).run([str(video)])
    assert valid.all()
    with torch.no_grad():
        detector.backbone.model.embeddings.patch_embeddings.projection.weight.mul_(2.0)
    second, _ = detector.feature_extraction(sampler, cache_dir=tmp_path, num_workers=0).run([str(video)])
    # independent reference: the new weights on the same frames, no cache involved
    expected, _ = detector.feature_extraction(sampler, num_workers=0).run([str(video)])
    torch.testing.assert_close(second, expected)
    assert not torch.allclose(first, second)


def test_missing_video_is_skipped_with_a_feature_cache(tiny_backbone, video, tmp_path):
    detector = restrav(tiny_backbone)
    cache = FeatureCache(tmp_path / "features", detector.model_key())
    paths = [str(video), str(tmp_path / "gone.mp4")]
    features, valid = detector.feature_extraction(
        FrameSampler("benchmark", 8), cache_dir=tmp_path / "features", num_workers=0
    ).run(paths)
    assert valid.tolist() == [True, False]
    assert torch.isfinite(features[0]).all() and torch.isnan(features[1]).all()
    # the readable video was cached, under the key of the file as it was read
    assert (
        cache.load(cache.key(ClipLoader(FrameSampler("benchmark", 8), (28, 28)).cache_identity(str(video)))) is not None
    )


# ---------------------------------------------------------------------------------- detect CLI
class _FixedLogits(torch.nn.Module):
    def __init__(self, logits: list[float]) -> None:
        super().__init__()
        self.register_buffer("logits", torch.tensor([logits]))

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        return self.logits.expand(video.shape[0], -1)


@pytest.mark.parametrize(
    "probs, label",
    [
        ((0.40, 0.35, 0.25), "real"),  # argmax is "real" although p(fake) = 1 - 0.40 = 0.60
        ((0.30, 0.20, 0.50), "fake"),
        ((0.50, 0.50), "real"),  # a tie is "real" (argmax takes the first maximum)
        ((0.45, 0.55), "fake"),
    ],
)
def test_detect_label_is_the_benchmark_decision(probs, label):
    from detectors.video.detect import VideoModel, detect

    logits = [math.log(p) for p in probs]
    model = VideoModel("fixed", _FixedLogits(logits), lambda path: torch.zeros(8, 3, 4, 4, dtype=torch.uint8))
    (result,) = detect(model, ["clip.mp4"])
    assert result["label"] == label
    expected_fake = probs[1] if len(probs) == 2 else 1.0 - probs[0]
    assert result["prob_fake"] == pytest.approx(expected_fake, abs=1e-6)


MODEL_PY = """
import torch
import torch.nn as nn
from safetensors.torch import load_file


class Fixed(nn.Module):
    def __init__(self):
        super().__init__()
        self.register_buffer("logits", torch.zeros(1, 3))

    def forward(self, video):
        return self.logits.expand(video.shape[0], -1)


def load_model(weights_path, num_classes=3, **kwargs):
    model = Fixed()
    model.load_state_dict(load_file(weights_path))
    return model
"""


def _submission(root: Path, preprocessing: dict) -> Path:
    root.mkdir()
    (root / "model.py").write_text(MODEL_PY)
    safetensors.torch.save_file(
        {"logits": torch.tensor([[math.log(0.4), math.log(0.35), math.log(0.25)]])}, str(root / "model.safetensors")
    )
    config = {
        "name": "fixed",
        "modality": "video",
        "dtype": "float32",
        "preprocessing": preprocessing,
        "model": {"num_classes": 3, "weights_file": "model.safetensors"},
    }
    (root / "model_config.yaml").write_text(yaml.safe_dump(config))
    return root


def test_detect_cli_three_class_submission_and_missing_resize(video, tmp_path, capsys):
    from detectors.video.detect import main

    good = _submission(tmp_path / "good", {"resize": [16, 16], "num_frames": 8})
    report = tmp_path / "out.json"
    assert main([str(video), "--model", str(good), "--json", str(report)]) == 0
    (row,) = json.loads(report.read_text())["results"]
    assert row["label"] == "real" and row["prob_fake"] == pytest.approx(0.6, abs=1e-6)
    capsys.readouterr()

    bad = _submission(tmp_path / "bad", {"num_frames": 8})
    assert main([str(video), "--model", str(bad)]) == 2  # a clear error, not a traceback
    assert "preprocessing.resize" in capsys.readouterr().err


def test_benchmark_input_loader_rejects_bad_resize():
    from detectors.errors import ConfigError
    from detectors.video.data import benchmark_input_loader

    for preprocessing in ({}, {"resize": 224}, {"resize": [224]}, {"resize": [0, 224]}, {"resize": ["a", 2]}):
        with pytest.raises(ConfigError, match="preprocessing.resize"):
            benchmark_input_loader(preprocessing)
    assert callable(benchmark_input_loader({"resize": [224, 224]}))


# ---------------------------------------------------------------------------------- GenD
def test_detect_on_a_gend_run_reads_preprocessing_without_converting_the_backbone(tiny_dinov3, monkeypatch):
    import detectors.base
    from detectors.video.detect import from_run

    detector = create_detector(
        "gend", {"backbone": {"name": str(tiny_dinov3)}, "image_size": 32, "num_frames": 4, "frame_rate": 6.0}
    )
    expected = {"resize": [32, 32], "num_frames": 4, "frame_rate": 6.0}
    assert detector.export_spec().preprocessing == expected

    def no_export() -> None:  # converting (deep-copying) a ViT-L just to read three numbers
        raise AssertionError("from_run must not build the export")

    monkeypatch.setattr(detector, "export_spec", no_export)
    monkeypatch.setattr(detectors.base, "load_detector", lambda run_dir: detector.eval())
    model = from_run(Path("run"))
    assert model.load.keywords["sampler"] == FrameSampler("benchmark", 4, frame_rate=6.0)  # a functools.partial
    assert model.load.keywords["resize"] == (32, 32)


# ---------------------------------------------------------------------------------- sampling
@pytest.mark.parametrize(
    "bad",
    [
        {"frame_rate": 0.0},
        {"frame_rate": -8.0},
        {"frame_rate": float("nan")},
        {"window_sec": 0.0},
        {"window_sec": -2.0},
    ],
)
def test_bad_sampling_settings_fail_once_not_per_video(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        FrameSampler("benchmark", 16, **bad)


def test_bad_frame_rate_is_a_setting_error_not_unreadable_videos(tiny_backbone, video):
    # before the check, every video came back "unreadable" and training failed with "no readable video"
    with pytest.raises(ValueError, match="frame_rate"):
        create_detector("restrav", {"backbone": {"name": str(tiny_backbone)}, "image_size": 28, "frame_rate": 0.0})
    assert FrameSampler("window", 24, frame_rate=None, window_sec=2.0).indices(48, 24.0)[0] == 0


def test_gend_checks_its_frame_rate_when_built(tiny_dinov3):
    with pytest.raises(ValueError, match="frame_rate"):
        create_detector("gend", {"backbone": {"name": str(tiny_dinov3)}, "image_size": 32, "frame_rate": 0.0})


def test_gend_refuses_sampling_settings_it_would_ignore():
    from detectors.errors import ConfigError
    from detectors.video.gend import GenDDetector

    # GenD samples its own frames: ReStraV's sampling settings are not part of its data section
    for data in ({"sampling": "window"}, {"train_sampling": "uniform"}, {"window_sec": 3.0}):
        with pytest.raises(ConfigError, match=f"data.{next(iter(data))}"):
            GenDDetector.data_config(data)


def test_an_unwritable_feature_cache_degrades_to_no_caching(tmp_path, caplog):
    import logging
    import os

    from detectors.data.cache import FeatureCache

    if os.geteuid() == 0:  # root ignores permissions: a full device is simulated by a file in the way
        blocked = tmp_path / "cache"
        blocked.write_text("a file where the cache directory should be")
        root = blocked / "features"
    else:
        (tmp_path / "ro").mkdir(mode=0o500)
        root = tmp_path / "ro" / "features"
    with caplog.at_level(logging.WARNING):
        cache = FeatureCache(root, "model")
        cache.save(cache.key(["a"]), torch.zeros(3))
        cache.save(cache.key(["b"]), torch.zeros(3))
    assert cache.disabled and cache.load(cache.key(["a"])) is None
    assert sum("continuing without caching" in record.getMessage() for record in caplog.records) == 1
    assert cache.get_or_compute(["c"], lambda: torch.ones(2)).sum() == 2  # computed, not stored
