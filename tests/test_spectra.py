"""python -m detectors.spectra: per-dataset mean log spectra and real-minus-fake differences,
checked against numpy, and the fingerprints of the upsampling sets."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from detectors.spectra import main


def _log_spectrum(path: Path) -> np.ndarray:
    pixels = np.asarray(Image.open(path).convert("RGB"), dtype=np.float64) / 255.0
    grey = pixels @ np.array([0.299, 0.587, 0.114])
    return np.log(np.abs(np.fft.fftshift(np.fft.fft2(grey, norm="ortho"))) ** 2 + 1e-8)


def _radial(spectrum: np.ndarray) -> np.ndarray:
    y, x = np.indices(spectrum.shape)
    rings = np.hypot(y - spectrum.shape[0] // 2, x - spectrum.shape[1] // 2).astype(int)
    return np.bincount(rings.ravel(), spectrum.ravel()) / np.bincount(rings.ravel())


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    from detectors.image.upsampling_sets import write_upsampling_sets

    root = tmp_path_factory.mktemp("spectra")
    write_upsampling_sets(root, size=64, stride=24)
    entries = [{"name": "real", "path": "holdout_real", "modality": "image", "media_type": "real"}]
    entries += [
        {
            "name": kind,
            "path": f"holdout_{kind}",
            "modality": "image",
            "media_type": "synthetic",
            "generator_family": kind,
        }
        for kind in ("nearest", "tconv")
    ]
    path = root / "spectra.yaml"
    path.write_text(yaml.safe_dump({"datasets": entries}))
    return path


def test_mean_spectra_and_differences_match_numpy(data, tmp_path, capsys):
    out = tmp_path / "out"
    assert (
        main(
            ["--data", str(data), "--output", str(out), "--size", "64", "--max-per-dataset", "10", "--num-workers", "0"]
        )
        == 0
    )
    report = json.loads((out / "spectra.json").read_text())
    arrays = np.load(out / "spectra.npz")
    files = {
        name: sorted((data.parent / f"holdout_{name}").glob("*.png"))[:10] for name in ("real", "nearest", "tconv")
    }
    means = {name: np.mean([_log_spectrum(p) for p in paths], axis=0) for name, paths in files.items()}
    radial = {name: np.mean([_radial(_log_spectrum(p)) for p in paths], axis=0) for name, paths in files.items()}
    for name in files:
        assert report["datasets"][name]["n"] == 10
        np.testing.assert_allclose(arrays[f"mean_log_spectrum/{name}"], means[name], atol=2e-4)
        np.testing.assert_allclose(report["datasets"][name]["radial_mean"], radial[name], atol=2e-4)
    np.testing.assert_allclose(
        report["datasets"]["tconv"]["real_minus_fake_radial"], radial["real"] - radial["tconv"], atol=5e-4
    )
    np.testing.assert_allclose(arrays["real_minus_fake/nearest"], means["real"] - means["nearest"], atol=5e-4)
    assert report["datasets"]["all fake"]["n"] == 20
    assert len(report["frequency_cycles_per_pixel"]) == len(radial["real"])
    # the fingerprints: nearest upsampling removes energy at the corners, the transposed convolution's
    # checkerboard adds some there
    assert report["datasets"]["nearest"]["largest_differences"][0]["fake_has"] == "missing energy"
    assert report["datasets"]["tconv"]["largest_differences"][0]["fake_has"] == "excess energy"
    assert report["datasets"]["tconv"]["largest_differences"][0]["cycles_per_pixel"] > 0.6
    for figure in ("spectra_2d.png", "radial.png", "difference_2d.png", "difference_radial.png"):
        assert (out / figure).stat().st_size > 10_000
    assert "excess energy" in capsys.readouterr().out


def test_benchmark_input_and_bad_input(data, tmp_path, capsys):
    assert (
        main(
            [
                "--data",
                str(data),
                "--output",
                str(tmp_path / "b"),
                "--size",
                "32",
                "--input",
                "benchmark",
                "--max-per-dataset",
                "3",
                "--num-workers",
                "0",
            ]
        )
        == 0
    )
    report = json.loads((tmp_path / "b" / "spectra.json").read_text())
    assert report["input"] == "benchmark" and len(report["datasets"]["real"]["radial_mean"]) == 23  # rings of 32 px
    audio = tmp_path / "audio.yaml"
    audio.write_text(
        yaml.safe_dump({"datasets": [{"name": "a", "path": str(tmp_path), "modality": "audio", "media_type": "real"}]})
    )
    assert main(["--data", str(audio), "--output", str(tmp_path / "c")]) == 2
    assert "no image or video dataset" in capsys.readouterr().err
    assert main(["--data", str(tmp_path / "missing.yaml"), "--output", str(tmp_path / "d")]) == 2
    assert "missing.yaml" in capsys.readouterr().err
