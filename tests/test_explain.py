"""detectors.explain: maps that find what a detector was trained to find (a pasted patch, the known
fake frames of a video, a band in a time window), and the command on image, video and audio models."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
import torch.nn.functional as F
from PIL import Image
from scipy import ndimage
from torch import nn

from detectors.explain import ExplainOptions, explain_input
from detectors.explain.methods import fake_log_odds, find_last_conv, find_vit, resolve_method

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).parent / "data" / "gasbench"
SIZE, PATCH = 64, 16


# --------------------------------------------------------------------------- a pasted patch
def _background(rng: np.random.Generator) -> np.ndarray:
    image = ndimage.gaussian_filter(rng.normal(size=(SIZE, SIZE, 3)), (3, 3, 0))
    return (image - image.mean()) / image.std() * 30 + 128 + rng.normal(size=(SIZE, SIZE, 3)) * 3


def _pasted(rng: np.random.Generator, image: np.ndarray, grid: int = 8) -> tuple[np.ndarray, tuple[int, int]]:
    """Paste a nearest-upsampled noise patch with a colour cast at a random place on the 8-px grid."""
    y, x = (int(rng.integers(0, (SIZE - PATCH) // grid + 1)) * grid for _ in range(2))
    small = rng.normal(size=(PATCH // 2, PATCH // 2, 3)) * 40 + 128
    image = image.copy()
    image[y : y + PATCH, x : x + PATCH] = np.repeat(np.repeat(small, 2, 0), 2, 1) + np.array([60.0, -40.0, 40.0])
    return image, (y, x)


def _batch(rng: np.random.Generator, count: int) -> tuple[torch.Tensor, torch.Tensor, list]:
    images, labels, boxes = [], [], []
    for i in range(count):
        image, box = _background(rng), None
        if i % 2:
            image, box = _pasted(rng, image)
        images.append(np.clip(np.round(image), 0, 255))
        labels.append(i % 2)
        boxes.append(box)
    return torch.tensor(np.stack(images), dtype=torch.float32).permute(0, 3, 1, 2), torch.tensor(labels), boxes


def _train(model: nn.Module, steps: int, lr: float, parameters=None) -> nn.Module:
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    optimiser = torch.optim.Adam(parameters or model.parameters(), lr)
    model.train()
    for _ in range(steps):
        x, y, _ = _batch(rng, 16)
        loss = F.cross_entropy(model(x), y)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    return model.eval()


def _peaks_on_patch(model: nn.Module, method: str) -> tuple[int, int, float]:
    """(peaks inside the patch, fakes, accuracy) over 10 fresh fakes and 10 reals."""
    x, y, boxes = _batch(np.random.default_rng(1), 20)
    with torch.no_grad():
        accuracy = float((model(x).argmax(1) == y).float().mean())
    hits = 0
    for image, box in zip(x, boxes):
        if box is None:
            continue
        result = explain_input(model, image, "image", ExplainOptions(method=method))
        peak = result["map"]["peak"]
        hits += box[0] - 2 <= peak["y"] < box[0] + PATCH + 2 and box[1] - 2 <= peak["x"] < box[1] + PATCH + 2
    return hits, 10, accuracy


class PatchCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c1, self.c2, self.c3 = (
            nn.Conv2d(3, 8, 3, padding=1),
            nn.Conv2d(8, 16, 3, padding=1),
            nn.Conv2d(16, 16, 3, padding=1),
        )
        self.fc = nn.Linear(16, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = (x.float() / 255 - 0.5) / 0.25
        x = F.max_pool2d(F.relu(self.c2(F.relu(self.c1(x)))), 2)
        return self.fc(F.relu(self.c3(x)).amax(dim=(2, 3)))


@pytest.fixture(scope="module")
def patch_cnn() -> nn.Module:
    return _train(PatchCNN(), steps=120, lr=1e-2)


@pytest.mark.parametrize("method", ["gradcam", "occlusion"])
def test_a_cnn_trained_to_find_a_pasted_patch_peaks_on_it(patch_cnn, method):
    hits, fakes, accuracy = _peaks_on_patch(patch_cnn, method)
    assert accuracy >= 0.9
    assert hits >= 9, f"{method}: {hits}/{fakes} peaks on the patch"


def test_a_vit_detector_trained_to_find_a_pasted_patch_peaks_on_it(tmp_path):
    """The project's DINO image detector (a tiny random DINOv2, fully tuned): token Grad-CAM."""
    from transformers import Dinov2Config, Dinov2Model

    from detectors.registry import create_detector

    torch.manual_seed(0)
    Dinov2Model(
        Dinov2Config(
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=64,
            image_size=SIZE,
            patch_size=8,
        )
    ).save_pretrained(tmp_path / "vit")
    detector = create_detector(
        "dinov3_image",
        {
            "backbone": {"name": str(tmp_path / "vit")},
            "tuning": {"mode": "full"},
            "image_size": SIZE,
            "features": "mean",
            "dropout": 0.0,
            "head_hidden": [32],
        },
    )
    assert resolve_method(detector)[0] == "vit_gradcam"
    _train(detector, steps=80, lr=2e-3, parameters=[p for p in detector.parameters() if p.requires_grad])
    hits, fakes, accuracy = _peaks_on_patch(detector, "auto")
    assert accuracy >= 0.9
    assert hits >= 9, f"vit_gradcam: {hits}/{fakes} peaks on the patch"


def test_layers_are_found_and_the_log_odds_read_like_the_benchmark():
    cnn = PatchCNN()
    assert find_vit(cnn) is None and find_last_conv(cnn)[0] == "c3"
    assert resolve_method(nn.Linear(3, 2))[0] == "occlusion"
    with pytest.raises(ValueError, match="convolutional"):
        resolve_method(nn.Linear(3, 2), "gradcam")
    logits = torch.tensor([[0.0, 2.0], [1.0, -1.0]])
    torch.testing.assert_close(fake_log_odds(logits), torch.tensor([2.0, -2.0]))
    three = torch.tensor([[0.5, 1.0, 2.0]])
    p = torch.softmax(three, -1)[0]
    torch.testing.assert_close(fake_log_odds(three), torch.log((p[1] + p[2]) / p[0])[None])


# --------------------------------------------------------------------------- known fake frames
def _photo_frames(photo: str, count: int, fake: set[int], size: int = 64) -> torch.Tensor:
    """``count`` frames of a camera panning over a sample photograph; frames in ``fake`` are
    re-upsampled (nearest), the spectral fingerprint the detector learnt."""
    from detectors.image.upsampling_sets import _half, _photos, nearest

    base = _half(_photos()[photo])
    frames = []
    for t in range(count):
        crop = np.ascontiguousarray(base[40 : 40 + size, 20 + 3 * t : 20 + 3 * t + size])
        frames.append(nearest(crop) if t in fake else crop)
    return torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2)


@pytest.fixture(scope="module")
def spectral_video():
    """A spectral video detector trained on frames of one photograph: real crops against the same
    crops re-upsampled (nearest)."""
    from detectors.image.upsampling_sets import _half, _photos, nearest
    from detectors.registry import create_detector

    detector = create_detector("spectral_video", {"image_size": 64, "bins": 32, "num_frames": 8, "frame_rate": None})
    # single frames of many places: the head learns per-frame evidence, the clip averages it
    base = _half(_photos()["china"])
    crops = [np.ascontiguousarray(base[y : y + 64, x : x + 64]) for y in range(0, 140, 20) for x in range(0, 250, 25)]
    reals = torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2)
    fakes = torch.from_numpy(np.stack([nearest(c) for c in crops])).permute(0, 3, 1, 2)
    with torch.no_grad():
        features = torch.cat([detector.net.features(reals), detector.net.features(fakes)])
    detector.set_feature_statistics(features)
    labels = torch.cat([torch.zeros(len(reals)), torch.ones(len(fakes))]).long()
    optimiser = torch.optim.Adam(detector.net.head.parameters(), 0.05)
    for _ in range(200):
        loss = F.cross_entropy(detector.net.forward_head(features), labels)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    return detector.eval()


def test_a_video_s_known_fake_frames_are_ranked_first(spectral_video):
    clip = _photo_frames("flower", 8, {2, 5})
    result = explain_input(spectral_video, clip, "video", ExplainOptions(top_frames=2))
    assert set(result["ranking"][:2]) == {2, 5}, result["contributions"]
    assert result["top_frames"] == result["ranking"][:2] and len(result["frame_maps"]) == 2
    assert result["map_method"] == "occlusion"  # spectral features: no layer to hook
    assert all(c > 0 for c in np.array(result["contributions"])[[2, 5]])


def test_the_explain_command_on_a_trained_video_run(spectral_video, tmp_path):
    from detectors.base import save_detector
    from detectors.explain.__main__ import main

    save_detector(spectral_video, tmp_path / "run")
    folder = tmp_path / "video_frames"
    folder.mkdir()
    for t, frame in enumerate(_photo_frames("flower", 8, {1, 6})):
        Image.fromarray(frame.permute(1, 2, 0).numpy()).save(folder / f"{t:06d}.png")
    assert (
        main([str(folder), "--run", str(tmp_path / "run"), "--output", str(tmp_path / "out"), "--top-frames", "2"]) == 0
    )
    result = json.loads(next((tmp_path / "out").glob("000_*.json")).read_text())
    assert set(result["ranking"][:2]) == {1, 6} and result["num_frames"] == 8
    assert (tmp_path / "out" / Path(result["figures"][0]).name).stat().st_size > 10_000


# --------------------------------------------------------------------------- audio
class BandInWindow(nn.Module):
    """Fake log-odds = log energy of 2.5-3.5 kHz between 2 and 3 s (16 kHz, 6 s clips)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        spectrum = torch.stft(x.float(), 512, 128, window=torch.hann_window(512), return_complex=True).abs().pow(2)
        band = spectrum[:, 80:113, 250:375].mean(dim=(1, 2))  # bins 2.5-3.5 kHz, frames 2-3 s
        score = torch.log(band + 1e-6)
        return torch.stack([torch.zeros_like(score), score + 5.0], dim=1)


@pytest.mark.parametrize("method", ["ablation", "integrated_gradients"])
def test_audio_attribution_peaks_in_the_band_and_window_the_model_reads(method):
    rng = np.random.default_rng(0)
    t = np.arange(96000) / 16000
    clip = torch.tensor(rng.normal(0, 0.02, 96000) + 0.1 * np.sin(2 * np.pi * 3000 * t), dtype=torch.float32)
    result = explain_input(BandInWindow(), clip, "audio", ExplainOptions(method=method))
    peak = result["peak"]
    assert result["method"] == method and len(result["attribution"]) == 8 and len(result["attribution"][0]) == 24
    assert 2.0 <= peak["start_s"] < 3.0 and peak["low_hz"] <= 3000 <= peak["high_hz"]
    grid = np.array(result["attribution"])
    inside = np.zeros_like(grid, dtype=bool)
    inside[:, 8:12] = True
    assert np.abs(grid[~inside]).max() < 0.05 * np.abs(grid).max()  # nothing outside 2-3 s matters


def test_breaths_are_found_and_reported_with_the_attribution():
    from detectors.audio.demo import synth_speech

    speech = synth_speech(6.0, 16000, 3, breath_probability=1.0)
    clip = torch.tensor(speech.waveform[:96000], dtype=torch.float32)
    result = explain_input(BandInWindow(), clip, "audio")
    assert result["breath_segments"], "the demo speech has breaths"
    assert result["breath_share"] is None or 0.0 <= result["breath_share"] <= 1.0


# --------------------------------------------------------------------------- the command, every modality
def _write_speech(path: Path) -> Path:
    from detectors.audio.demo import synth_speech

    soundfile.write(path, synth_speech(6.0, 16000, 1).waveform, 16000)
    return path


def test_explain_command_draws_maps_for_image_video_and_audio_submissions(tmp_path):
    from detectors.explain.__main__ import main

    image = FIXTURES / "image" / "datasets" / "sdxl" / "samples" / "img_000000.png"
    video = FIXTURES / "video" / "datasets" / "gen-clips" / "samples" / "vid_000003_frames"
    audio = _write_speech(tmp_path / "speech.wav")
    for modality, files in (
        ("image", [image, tmp_path / "missing.png", audio]),
        ("video", [video]),
        ("audio", [audio]),
    ):
        out = tmp_path / modality
        status = main(
            [
                *map(str, files),
                "--model",
                str(FIXTURES / modality / "submission"),
                "--output",
                str(out),
                "--window",
                "8",
            ]
        )
        assert status == (1 if modality == "image" else 0)
        listing = json.loads((out / "explanations.json").read_text())
        ok = [row for row in listing["results"] if "error" not in row]
        assert len(ok) == 1 and 0.0 <= ok[0]["prob_fake"] <= 1.0
        assert all(Path(figure).stat().st_size > 10_000 for figure in ok[0]["figures"])
        if modality == "image":
            assert ok[0]["method"] == "gradcam" and len(ok[0]["map"]["grid"]) == 16
            errors = [row["error"] for row in listing["results"] if "error" in row]
            assert "file not found" in errors[0] and "audio file" in errors[1]
        elif modality == "video":
            assert len(ok[0]["contributions"]) == 8 and ok[0]["map_method"] == "gradcam"  # conv runs per frame
        else:
            assert ok[0]["duration_s"] == 6.0 and ok[0]["breath_segments"]


def test_explain_runs_as_a_module_and_rejects_a_method_of_another_modality(tmp_path, capsys):
    from detectors.explain.__main__ import main

    image = FIXTURES / "image" / "datasets" / "sdxl" / "samples" / "img_000000.png"
    arguments = [str(image), "--model", str(FIXTURES / "image" / "submission"), "--output", str(tmp_path / "out")]
    assert main([*arguments, "--method", "ablation"]) == 2
    assert "not a method for image models" in capsys.readouterr().err
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-m", "detectors.explain", *arguments, "--method", "occlusion"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    assert "(occlusion)" in done.stdout and (tmp_path / "out" / "000_img_000000.png").is_file()
