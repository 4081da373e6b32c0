"""``python -m detectors.detect`` (and the image / audio aliases) on a tiny 3-class image run, its
export and a tiny audio submission: p(fake) equals what the benchmark path gives for the same file
(``detectors.evaluate`` / the benchmark loader + model), unreadable and wrong-modality files are
reported per file while the others are scored, JSON output, batching."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
from PIL import Image

from detectors.registry import create_detector

ROOT = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def image_model(tiny_dinov3, tmp_path_factory) -> dict[str, Path]:
    """A 3-class DINOv3 image detector (32 px) saved as a run directory, and its export."""
    from detectors.base import load_detector, save_detector
    from export.__main__ import export_detector

    root = tmp_path_factory.mktemp("image_model")
    torch.manual_seed(0)
    detector = create_detector(
        "dinov3_image", {"backbone": {"name": str(tiny_dinov3)}, "image_size": 32, "head_hidden": [8], "num_classes": 3}
    )
    detector.calibrator.fit(torch.randn(64, 3) * 3, torch.randint(0, 3, (64,)))  # a non-trivial calibrator
    run = save_detector(detector, root / "run")
    report = export_detector(load_detector(run), root / "submission")
    assert report["max_abs_logit_difference"] <= 1e-4
    return {"run": run, "submission": Path(report["submission"])}


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> dict[str, object]:
    """Good images of several sizes, modes and formats in a dataset folder; a corrupt one and an
    audio file beside them."""
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    good = []
    for name, (h, w), mode in [
        ("real/a.png", (40, 52), "RGB"),
        ("real/b.jpg", (37, 33), "RGB"),
        ("fake/c.png", (64, 48), "RGBA"),
        ("fake/d.png", (45, 45), "L"),
        ("real/e.webp", (33, 70), "RGB"),
    ]:
        path = root / name
        path.parent.mkdir(exist_ok=True)
        pixels = rng.integers(0, 256, (h, w, len(mode) if mode != "L" else 1), dtype=np.uint8).squeeze()
        Image.fromarray(pixels, mode=None).convert(mode).save(path)
        good.append(str(path))
    broken = root / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    sound = root / "speech.mp3"
    soundfile.write(root / "speech.wav", rng.uniform(-0.5, 0.5, 16000).astype(np.float32), 16000)
    sound.write_bytes((root / "speech.wav").read_bytes())  # any bytes: the extension decides
    data = root / "data.yaml"
    data.write_text(
        "datasets:\n"
        "  - {name: r, path: real, modality: image, media_type: real}\n"
        "  - {name: f, path: fake, modality: image, media_type: synthetic}\n"
    )
    return {"good": good, "broken": str(broken), "sound": str(sound), "data": data}


@pytest.fixture(scope="module")
def audio_submission(tmp_path_factory) -> Path:
    """A tiny BreathNet (local wav2vec2 checkpoint, no hub) exported as a submission."""
    from transformers import Wav2Vec2Config, Wav2Vec2Model

    from export.__main__ import export_detector

    root = tmp_path_factory.mktemp("audio_model")
    torch.manual_seed(0)
    Wav2Vec2Model(
        Wav2Vec2Config(
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=64,
            conv_dim=(32, 32, 32),
            conv_kernel=(10, 8, 4),
            conv_stride=(10, 8, 4),
            num_conv_pos_embeddings=16,
            num_conv_pos_embedding_groups=2,
        )
    ).save_pretrained(root / "w2v")
    detector = create_detector(
        "breathnet",
        {
            "backbone": {"name": str(root / "w2v")},
            "tuning": {"mode": "frozen"},
            "spectral": {"channels": [8, 16], "embed_dim": 16},
            "fusion_dim": 32,
            "head_hidden": [16],
            "film_hidden": 16,
        },
    )
    detector.calibrator.fit(torch.randn(32, 2) * 3, torch.randint(0, 2, (32,)))
    return Path(export_detector(detector, root / "submission", verify=False)["submission"])


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> list[str]:
    """Speech-like noise: shorter and longer than 6 s (padded / centre-cropped), and not at 16 kHz."""
    root = tmp_path_factory.mktemp("clips")
    rng = np.random.default_rng(1)
    paths = []
    for name, seconds, rate in [("short.wav", 2.5, 16000), ("long.flac", 7.0, 16000), ("hifi.wav", 3.0, 22050)]:
        t = np.arange(int(seconds * rate)) / rate
        wave = 0.3 * np.sin(2 * np.pi * rng.uniform(100, 300) * t) + rng.normal(0, 0.05, t.shape)
        soundfile.write(root / name, wave.astype(np.float32), rate)
        paths.append(str(root / name))
    return paths


def prob_fake_3class(logits: torch.Tensor) -> np.ndarray:
    """The benchmark's 3-class p(fake), computed here from its definition: 1 - softmax[:, real]."""
    return 1.0 - torch.softmax(logits.double(), dim=-1)[:, 0].numpy()


def evaluated(submission: Path, data: Path, out: Path) -> dict[str, float]:
    """p(fake) per file from ``detectors.evaluate`` (the benchmark pass, batched as it batches)."""
    from detectors.evaluate import evaluate_submission

    evaluate_submission(submission, data, out, num_workers=0, batch_size=2)
    with open(out / "predictions.csv") as handle:
        return {str(Path(row["path"]).resolve()): float(row["prob_fake"]) for row in csv.DictReader(handle)}


# --------------------------------------------------------------------------------------------- image
def test_image_run_and_export_score_like_the_benchmark(image_model, images, tmp_path, capsys):
    from detectors.base import load_detector
    from detectors.detect import main
    from detectors.image.data import benchmark_input_loader
    from export.benchmark_loader import load_submission

    good = images["good"]
    expected = evaluated(image_model["submission"], images["data"], tmp_path / "eval")
    assert len(expected) == len(good)

    report = tmp_path / "model.json"
    assert main([*good, "--model", str(image_model["submission"]), "--json", str(report), "--batch-size", "2"]) == 0
    by_model = json.loads(report.read_text())
    assert by_model["modality"] == "image" and by_model["failed"] == 0
    assert [row["path"] for row in by_model["results"]] == good
    for row in by_model["results"]:
        assert row["prob_fake"] == pytest.approx(expected[str(Path(row["path"]).resolve())], abs=1e-6)

    # --run: the in-library detector fed exactly what the export's model_config.yaml preprocessing gives
    report_run = tmp_path / "run.json"
    assert main([*good, "--run", str(image_model["run"]), "--json", str(report_run)]) == 0
    by_run = json.loads(report_run.read_text())["results"]
    _, config = load_submission(image_model["submission"])
    load = benchmark_input_loader(config["preprocessing"])
    detector = load_detector(image_model["run"])
    with torch.no_grad():
        logits = torch.cat([detector(load(path)[None]) for path in good])
    assert [row["prob_fake"] for row in by_run] == pytest.approx(prob_fake_3class(logits).tolist(), abs=1e-6)
    # and the run agrees with its export, file by file, to the export tolerance
    assert [row["prob_fake"] for row in by_run] == pytest.approx(
        [expected[str(Path(p).resolve())] for p in good], abs=1e-5
    )

    # 3-class heads: class probabilities, p(fake) = 1 - p(real), the decision is argmax != real
    probs = torch.softmax(logits.double(), -1)
    for row, p in zip(by_run, probs):
        assert list(row["class_probs"]) == ["real", "synthetic", "semisynthetic"]
        assert list(row["class_probs"].values()) == pytest.approx(p.tolist(), abs=1e-6)
        assert row["label"] == ("real" if int(p.argmax()) == 0 else "fake")
    out = capsys.readouterr().out
    for row in by_run:  # one line per file: p(fake), decision, class probabilities, path
        assert f"{row['prob_fake']:.4f}  {row['label']:<4}  real {row['class_probs']['real']:.4f}" in out


def test_corrupt_and_wrong_modality_files_are_reported_and_the_others_scored(image_model, images, tmp_path, capsys):
    from detectors.detect import main

    good = images["good"]
    files = [good[0], images["broken"], good[1], images["sound"], good[2]]
    report = tmp_path / "out.json"
    code = main([*files, "--model", str(image_model["submission"]), "--json", str(report), "--batch-size", "2"])
    captured = capsys.readouterr()
    assert code == 1
    results = json.loads(report.read_text())
    assert results["failed"] == 2 and [row["path"] for row in results["results"]] == files
    broken, sound = results["results"][1], results["results"][3]
    assert set(broken) == {"path", "error"} and broken["error"].startswith(images["broken"])
    # the wrong modality names the file and both modalities, before any decoding is tried
    assert set(sound) == {"path", "error"} and sound["error"].startswith(images["sound"])
    assert "an audio file (.mp3)" in sound["error"] and "an image model" in sound["error"]
    assert "broken.png" in captured.err and "speech.mp3" in captured.err
    assert "2 of 5 image(s) could not be read" in captured.err
    # the readable files score as they do alone
    assert (
        main(
            [good[0], good[1], good[2], "--model", str(image_model["submission"]), "--json", str(tmp_path / "ok.json")]
        )
        == 0
    )
    alone = json.loads((tmp_path / "ok.json").read_text())["results"]
    mixed = [results["results"][i] for i in (0, 2, 4)]
    assert [row["prob_fake"] for row in mixed] == pytest.approx([row["prob_fake"] for row in alone], abs=1e-6)
    assert [row["label"] for row in mixed] == [row["label"] for row in alone]


def test_bad_model_paths_and_options_exit_2(image_model, images, tmp_path, capsys):
    from detectors.detect import main

    assert main([images["good"][0], "--model", str(tmp_path / "missing")]) == 2
    assert main([images["good"][0], "--run", str(tmp_path)]) == 2
    assert "detector.yaml missing" in capsys.readouterr().err
    assert main([images["good"][0], "--run", str(image_model["run"]), "--batch-size", "0"]) == 2
    assert "--batch-size" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:  # a model source is required
        main([images["good"][0]])
    assert exit_info.value.code == 2


# --------------------------------------------------------------------------------------------- audio
def test_audio_submission_batched_scores_like_the_benchmark(audio_submission, clips, tmp_path):
    from detectors.audio.data import benchmark_input_loader
    from detectors.detect import main
    from export.benchmark_loader import load_submission, run_model

    report = tmp_path / "audio.json"
    assert main([*clips, "--model", str(audio_submission), "--json", str(report), "--batch-size", "2"]) == 0
    results = json.loads(report.read_text())
    assert results["modality"] == "audio" and results["failed"] == 0

    model, config = load_submission(audio_submission)
    load = benchmark_input_loader(config["preprocessing"])
    for row, path in zip(results["results"], clips):  # one file at a time, as an independent pass
        logits = run_model(model, load(path)[None]).double()
        assert logits.shape == (1, 2) and "class_probs" not in row
        assert row["prob_fake"] == pytest.approx(torch.softmax(logits, -1)[0, 1].item(), abs=1e-6)
        assert row["label"] == ("fake" if logits[0, 1] > logits[0, 0] else "real")


def test_audio_model_refuses_images_and_videos_per_file(audio_submission, clips, images, tmp_path, capsys):
    from detectors.detect import main

    video = tmp_path / "clip.mp4"
    video.write_bytes(b"\x00\x00\x00\x18ftypmp42")  # an mp4 would otherwise give its sound track
    files = [images["good"][0], clips[0], str(video)]
    report = tmp_path / "out.json"
    assert main([*files, "--model", str(audio_submission), "--json", str(report)]) == 1
    rows = json.loads(report.read_text())["results"]
    assert "prob_fake" in rows[1]
    assert (
        rows[0]["error"].startswith(images["good"][0])
        and "an image file (.png), but this is an audio model" in rows[0]["error"]
    )
    assert (
        rows[2]["error"].startswith(str(video))
        and "a video file (.mp4), but this is an audio model" in rows[2]["error"]
    )
    assert "2 of 3 audio file(s) could not be read" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------- aliases
def test_modality_aliases(image_model, images, audio_submission, clips, tmp_path, capsys):
    from detectors.audio.detect import main as audio_main
    from detectors.detect import main
    from detectors.image.detect import main as image_main
    from detectors.video.detect import main as video_main

    # the image alias is the same command
    assert image_main([images["good"][0], "--run", str(image_model["run"]), "--json", str(tmp_path / "a.json")]) == 0
    assert main([images["good"][0], "--run", str(image_model["run"]), "--json", str(tmp_path / "b.json")]) == 0
    assert json.loads((tmp_path / "a.json").read_text()) == json.loads((tmp_path / "b.json").read_text())
    capsys.readouterr()
    # ... restricted to its modality, like detectors.video.detect
    assert audio_main([clips[0], "--model", str(image_model["submission"])]) == 2
    assert capsys.readouterr().err.strip() == (
        f"error: {image_model['submission']} is an image model "
        "(model_config.yaml modality: image); detect takes audio submissions"
    )
    assert image_main([clips[0], "--model", str(audio_submission)]) == 2
    assert "is an audio model" in capsys.readouterr().err
    assert video_main([clips[0], "--run", str(image_model["run"])]) == 2
    assert "this run holds an image detector, not a video one" in capsys.readouterr().err

    # python -m detectors.audio.detect: the module runs as a command
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "detectors.audio.detect",
            clips[0],
            "--model",
            str(audio_submission),
            "--device",
            "cpu",
            "--json",
            str(tmp_path / "cli.json"),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert main([clips[0], "--model", str(audio_submission), "--json", str(tmp_path / "in.json")]) == 0
    from_cli = json.loads((tmp_path / "cli.json").read_text())["results"][0]
    assert from_cli["prob_fake"] == pytest.approx(
        json.loads((tmp_path / "in.json").read_text())["results"][0]["prob_fake"], abs=1e-6
    )
    assert from_cli["path"] in done.stdout
