"""Spectral detector: features against numpy/scipy, statistics, what the benchmark's resize does,
export equality (image, video, DINO spectral branch), and generalisation to an unseen upsampler."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import scipy.fft
import torch
from helpers import stage_dataset
from PIL import Image

from detectors.image.spectral import SpectralFeatures
from detectors.registry import create_detector


# --------------------------------------------------------------------------- an independent computation
def durall_profile(image: np.ndarray, bins: int) -> np.ndarray:
    """Durall et al.'s recipe in numpy: luma, 2-D DFT, log power, mean per integer ring around the
    DC (``np.bincount`` over ``int(hypot)``), linear resampling to ``bins`` points."""
    grey = image.astype(np.float64) / 255.0 @ np.array([0.299, 0.587, 0.114])
    power = np.abs(np.fft.fftshift(np.fft.fft2(grey, norm="ortho"))) ** 2
    spectrum = np.log(power + 1e-8)
    y, x = np.indices(spectrum.shape)
    rings = np.hypot(y - spectrum.shape[0] // 2, x - spectrum.shape[1] // 2).astype(int)
    profile = np.bincount(rings.ravel(), spectrum.ravel()) / np.bincount(rings.ravel())
    return np.interp(np.linspace(0, len(profile) - 1, bins), np.arange(len(profile)), profile)


def frank_statistics(image: np.ndarray, grid: int) -> np.ndarray:
    """Frank et al.'s log |DCT-II| (scipy, orthonormal), averaged over ``grid x grid`` blocks the way
    adaptive average pooling cuts them (start floor(i n / g), end ceil((i + 1) n / g))."""
    grey = image.astype(np.float64) / 255.0 @ np.array([0.299, 0.587, 0.114])
    log_abs = np.log(np.abs(scipy.fft.dctn(grey, norm="ortho")) + 1e-8)
    n, m = log_abs.shape
    out = np.empty((grid, grid))
    for i in range(grid):
        for j in range(grid):
            rows = slice(i * n // grid, -(-(i + 1) * n // grid))
            cols = slice(j * m // grid, -(-(j + 1) * m // grid))
            out[i, j] = log_abs[rows, cols].mean()
    return out.ravel()


def natural_image(rng: np.random.Generator, size: int) -> np.ndarray:
    """1/f noise plus sensor-like noise, uint8 RGB (high-frequency power well above float32 noise)."""
    f = np.hypot(*np.meshgrid(np.fft.fftfreq(size), np.fft.fftfreq(size), indexing="ij")) + 1.0 / size
    texture = np.real(np.fft.ifft2(np.fft.fft2(rng.normal(size=(size, size))) / f))
    texture = (texture - texture.mean()) / texture.std() * 40 + 128
    image = texture[..., None] + rng.normal(0, 6, (size, size, 3)) + rng.normal(0, 20, 3)
    return np.clip(np.round(image), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("size", [40, 33])
def test_features_match_durall_and_frank_computed_with_numpy_and_scipy(size):
    rng = np.random.default_rng(size)
    images = np.stack([natural_image(rng, size) for _ in range(3)])
    features = SpectralFeatures(bins=20, dct=True, dct_grid=8)(torch.from_numpy(images).permute(0, 3, 1, 2))
    expected = np.stack([np.r_[durall_profile(i, 20), frank_statistics(i, 8)] for i in images])
    assert features.shape == (3, 20 + 64)
    np.testing.assert_allclose(features[:, :20].numpy(), expected[:, :20], atol=2e-4, rtol=0)
    # block means of log |c|: float32 rounding of near-zero coefficients moves a log by ~1e-4 more
    np.testing.assert_allclose(features[:, 20:].numpy(), expected[:, 20:], atol=1e-3, rtol=0)
    # the profile starts at the DC ring and ends at the corner ring
    assert features[:, 0].mean() > features[:, 19].mean() + 5


def test_the_benchmark_resize_cancels_a_checkerboard_and_the_features_see_it():
    """What the docs say: OpenCV's bilinear downscale by 2 averages pixel pairs, which removes a
    period-2 checkerboard (a transposed convolution's Nyquist peak) exactly."""
    rng = np.random.default_rng(0)
    base = natural_image(rng, 128).astype(np.float64)
    checker = (np.indices((128, 128)).sum(0) % 2 * 2 - 1)[..., None]
    fake = np.clip(np.round(base * (1 + 0.1 * checker)), 0, 255).astype(np.uint8)
    real = base.astype(np.uint8)

    def nyquist_power(image: np.ndarray) -> float:
        grey = image.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
        spectrum = np.abs(np.fft.fft2(grey, norm="ortho")) ** 2
        return float(spectrum[image.shape[0] // 2, image.shape[1] // 2])  # (0.5, 0.5) cycles/pixel

    assert nyquist_power(fake) > 100 * nyquist_power(real)
    small_fake, small_real = (cv2.resize(i, (64, 64), interpolation=cv2.INTER_LINEAR) for i in (fake, real))
    # 2.4e6 -> 16: five orders of magnitude, back to the level of the real image (8)
    assert nyquist_power(small_fake) < 1e-4 * nyquist_power(fake)
    assert nyquist_power(small_fake) < 5 * nyquist_power(small_real)
    features = SpectralFeatures(bins=32)
    tail = {
        name: features(torch.from_numpy(i[None]).permute(0, 3, 1, 2))[0, -6:].mean().item()
        for name, i in (("fake", fake), ("real", real), ("small_fake", small_fake), ("small_real", small_real))
    }
    assert tail["fake"] > tail["real"] + 1.0  # native: the checkerboard lifts the corner of the profile
    assert abs(tail["small_fake"] - tail["small_real"]) < 0.25  # resized: gone


# --------------------------------------------------------------------------- detector
@pytest.fixture(scope="module")
def upsampling_sets(tmp_path_factory) -> dict[str, Path]:
    from detectors.image.upsampling_sets import write_upsampling_sets

    return write_upsampling_sets(tmp_path_factory.mktemp("upsampling"), size=64, stride=24)


def test_feature_statistics_come_from_the_training_features(upsampling_sets, tmp_path):
    from detectors.data.catalog import load_items

    detector = create_detector("spectral", {"image_size": 64, "bins": 16, "dct": True, "dct_grid": 4})
    items = load_items(upsampling_sets["train"], modality="image")[:20]
    dataset = stage_dataset(detector, items, "train", {"cache_dir": str(tmp_path), "decode_workers": 0})
    features = dataset.features.numpy().astype(np.float64)
    assert features.shape == (20, 16 + 16) and dataset.skipped == 0
    np.testing.assert_allclose(detector.net.feature_mean.numpy(), features.mean(0), rtol=1e-5, atol=1e-5)
    std = features.std(0)
    np.testing.assert_allclose(detector.net.feature_std.numpy(), np.where(std < 1e-6, 1.0, std), rtol=1e-4, atol=1e-6)
    # the cached features are the network's own on the training input (a native 64 px crop: the image)
    image = torch.from_numpy(np.array(Image.open(items[0].path).convert("RGB"))).permute(2, 0, 1)
    with torch.no_grad():
        torch.testing.assert_close(detector.net.forward_features(image[None])[0], dataset.features[0])
    # the head is a logistic regression on the z-scored features
    assert [type(layer).__name__ for layer in detector.net.head.layers] == ["Linear"]
    with pytest.raises(ValueError, match="training features"):
        detector.set_feature_statistics(torch.zeros(3, 5))


def test_unreadable_images_are_skipped_and_counted(upsampling_sets, tmp_path):
    import dataclasses

    from detectors.data.catalog import load_items

    detector = create_detector("spectral", {"image_size": 64})
    items = load_items(upsampling_sets["train"], modality="image")[:3]
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    items[1] = dataclasses.replace(items[1], path=str(broken))
    dataset = stage_dataset(detector, items, "train", {"feature_cache": False, "decode_workers": 0})
    assert dataset.skipped == 1 and dataset[1] == {"unreadable": str(broken)}
    torch.testing.assert_close(detector.net.feature_mean, dataset.features[[0, 2]].mean(0))


def test_bad_settings_are_one_line_errors():
    from detectors.errors import ConfigError

    with pytest.raises(ConfigError, match="dct_grid"):
        create_detector("spectral", {"image_size": 32, "dct": True, "dct_grid": 64})
    with pytest.raises(ConfigError, match="bins"):
        create_detector("spectral", {"bins": 1})
    with pytest.raises(ValueError, match="frame_rate"):
        create_detector("spectral_video", {"frame_rate": -1})


def _export_and_compare(detector, inputs: torch.Tensor, tmp_path: Path) -> None:
    from export.__main__ import export_detector
    from export.benchmark_loader import load_submission, run_model
    from export.check import check_submission

    report = export_detector(detector, tmp_path / "sub")
    assert report["max_abs_logit_difference"] <= 1e-4
    assert check_submission(tmp_path / "sub") == []
    model, _ = load_submission(tmp_path / "sub")
    with torch.no_grad():
        expected = detector.eval()(inputs)
    torch.testing.assert_close(run_model(model, inputs), expected, atol=1e-4, rtol=0)
    assert "torch.fft.fft2" in (tmp_path / "sub" / "model.py").read_text()


@pytest.mark.parametrize("settings", [{"head_hidden": []}, {"dct": True, "dct_grid": 8, "head_hidden": [16]}])
def test_image_export_equals_in_library(settings, tmp_path):
    detector = create_detector("spectral", {"image_size": 48, "bins": 24, **settings})
    detector.set_feature_statistics(torch.randn(50, detector.net.features.num_features) * 2 + 1)
    detector.calibrator.set(temperature=1.5, bias=[0.2, -0.1])
    rng = np.random.default_rng(1)
    images = torch.from_numpy(np.stack([natural_image(rng, 48) for _ in range(3)])).permute(0, 3, 1, 2)
    _export_and_compare(detector, images, tmp_path)


def test_video_export_averages_frame_features_and_equals_in_library(tmp_path):
    detector = create_detector("spectral_video", {"image_size": 32, "bins": 12, "num_frames": 4, "frame_rate": None})
    detector.set_feature_statistics(torch.randn(20, 12))
    rng = np.random.default_rng(2)
    clips = (
        torch.from_numpy(np.stack([natural_image(rng, 32) for _ in range(8)]))
        .permute(0, 3, 1, 2)
        .reshape(2, 4, 3, 32, 32)
    )
    with torch.no_grad():
        per_frame = detector.net.features(clips.flatten(0, 1)).reshape(2, 4, -1).mean(1)
        torch.testing.assert_close(detector.net.forward_features(clips), per_frame)
    assert detector.preprocessing() == {"resize": [32, 32], "num_frames": 4}
    _export_and_compare(detector, clips, tmp_path)


def test_dino_spectral_branch_trains_its_statistics_and_exports(tmp_path):
    from transformers import Dinov2Config, Dinov2Model

    path = tmp_path / "tiny_dinov2"
    torch.manual_seed(0)
    Dinov2Model(
        Dinov2Config(hidden_size=32, num_hidden_layers=1, num_attention_heads=4, image_size=28, patch_size=14)
    ).save_pretrained(path)
    detector = create_detector(
        "dinov3_image",
        {
            "backbone": {"name": str(path)},
            "image_size": 28,
            "features": "cls",
            "head_hidden": [],
            "spectral_branch": True,
            "spectral_bins": 10,
        },
    )
    plain = create_detector(
        "dinov3_image", {"backbone": {"name": str(path)}, "image_size": 28, "features": "cls", "head_hidden": []}
    )
    assert plain.net.spectral is None and not any("spectral" in key for key in plain.state_dict())
    assert detector.net.head.layers[0].in_features == 32 + 10
    rng = np.random.default_rng(3)
    images = torch.from_numpy(np.stack([natural_image(rng, 28) for _ in range(6)])).permute(0, 3, 1, 2)
    detector.train()
    detector.forward_uncalibrated(images)  # a training step's forward updates the running statistics
    norm = detector.net.spectral.norm
    assert int(norm.num_batches_tracked) == 1 and float(norm.running_mean.abs().sum()) > 0
    with torch.no_grad():
        features = detector.eval().forward_features(images)
        expected = (detector.net.spectral.features(images) - norm.running_mean) / torch.sqrt(
            norm.running_var + norm.eps
        )
    torch.testing.assert_close(features[:, 32:], expected, atol=1e-5, rtol=1e-5)
    _export_and_compare(detector, images, tmp_path)


# --------------------------------------------------------------------------- as a new user would
@pytest.mark.slow
def test_trained_on_nearest_upsampling_it_separates_bilinear_fakes_it_never_saw(upsampling_sets, tmp_path):
    """The issue's test, through the commands' own entry points: fit (real vs nearest-upsampled crops
    of one photo) -> export -> export.check (a fresh interpreter) -> the benchmark-style evaluation on
    crops of another photo against bilinear-upsampled fakes."""
    from detectors.evaluate import main as evaluate
    from detectors.image.fit import IMAGE
    from detectors.registry import default_detector, list_detectors
    from detectors.training.fit import run_fit
    from export.__main__ import main as export
    from export.check import main as check

    run_fit(
        "image",
        IMAGE,
        list_detectors("image"),
        default_detector("image"),
        [
            "--arch",
            "spectral",
            "--data",
            str(upsampling_sets["train"]),
            "--output",
            str(tmp_path / "run"),
            "--set",
            "model.image_size=64",
            "--set",
            f"data.cache_dir={tmp_path / 'cache'}",
            "--max-epochs",
            "20",
        ],
    )
    assert export([str(tmp_path / "run"), "--out", str(tmp_path / "sub")]) == 0
    assert check([str(tmp_path / "sub")]) == 0
    assert (
        evaluate(
            [
                "--model",
                str(tmp_path / "sub"),
                "--data",
                str(upsampling_sets["holdout_bilinear"]),
                "--output",
                str(tmp_path / "eval"),
                "--num-workers",
                "0",
            ]
        )
        == 0
    )
    results = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert results["base"]["per_dataset"].keys() == {"holdout_real", "holdout_bilinear"}
    assert results["roc_auc"] >= 0.9, results["roc_auc"]
    assert results["tpr_at_5pct_fpr"] is not None and (tmp_path / "eval" / "report.html").is_file()
