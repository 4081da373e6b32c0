"""Video CLI end to end on demo videos with a tiny local DINOv2: fit -> export -> export.check ->
benchmark-style loading -> hold-out separation; ``detectors.video.detect`` on runs, submissions and
unreadable files; the benchmark input loader; the video fit flags."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from sklearn.metrics import roc_auc_score

from detectors.data.catalog import load_items
from detectors.registry import list_detectors
from detectors.video.fit import VIDEO

VIDEO_ARCHS = list_detectors("video")

TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, image_size=28, patch_size=14)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> dict[str, Path]:
    from transformers import Dinov2Config, Dinov2Model

    from detectors.training.fit import run_fit
    from detectors.video.demo import write_demo_videos, write_holdout_videos
    from export.__main__ import export_run

    base = tmp_path_factory.getbasetemp()
    backbone = base / "tiny_dinov2"
    if not backbone.is_dir():
        torch.manual_seed(0)
        Dinov2Model(Dinov2Config(**TINY)).save_pretrained(backbone)
    videos = base / "restrav_videos"
    data = write_demo_videos(videos, n_per_class=6)  # the same files test_restrav.py uses
    holdout = write_holdout_videos(videos, n_per_class=5)
    root = tmp_path_factory.mktemp("video_cli")
    run = run_fit(
        "video",
        VIDEO,
        VIDEO_ARCHS,
        "restrav",
        [
            "--data",
            str(data),
            "--backbone",
            str(backbone),
            "--output",
            str(root / "run"),
            "--cache-dir",
            str(root / "cache"),
            "--max-epochs",
            "3",
            "--lr",
            "0.01",
            "--batch-size",
            "8",
            "--set",
            "model.image_size=28",
            "--set",
            "data.decode_workers=0",
            "--set",
            "split.val=0.25",
            "--set",
            "split.calibration=0.25",
        ],
    )
    submission = root / "submission"
    report = export_run(run, submission)
    return {"run": run, "submission": submission, "holdout": holdout, "root": root, "report": report, "data": data}


def test_fit_export_check_and_holdout(workspace):
    from detectors.base import load_detector
    from detectors.video.data import benchmark_input_loader
    from export.benchmark_loader import load_submission, run_model
    from export.check import check_submission

    run = workspace["run"]
    assert (run / "detector.safetensors").is_file() and (run / "metrics.json").is_file()
    assert workspace["report"]["max_abs_logit_difference"] <= 1e-4
    assert check_submission(workspace["submission"]) == []

    model, config = load_submission(workspace["submission"])
    assert config["modality"] == "video"
    assert config["preprocessing"] == {"resize": [28, 28], "num_frames": 24, "frame_rate": 12.0}
    load = benchmark_input_loader(config["preprocessing"])
    items = load_items(workspace["holdout"], modality="video")
    clips = torch.stack([load(item.path) for item in items])
    assert clips.shape == (len(items), 24, 3, 28, 28) and clips.dtype == torch.uint8
    logits = run_model(model, clips)
    prob = torch.softmax(logits.float(), -1)[:, 1].numpy()
    assert roc_auc_score([item.label for item in items], prob) > 0.6
    # the exported model equals the in-library one on real clips as well
    detector = load_detector(run)
    with torch.no_grad():
        torch.testing.assert_close(logits.float(), detector(clips), atol=1e-4, rtol=0)
    # the z-score statistics were set from the training features and saved with the model
    assert not torch.allclose(detector.net.feature_std, torch.ones(21))


def test_detect_cli_on_run_submission_and_corrupt_file(workspace, tmp_path, capsys):
    from detectors.video.detect import main

    items = load_items(workspace["holdout"], modality="video")
    videos = [items[0].path, items[-1].path]
    assert main([*videos, "--run", str(workspace["run"])]) == 0
    out_run = capsys.readouterr().out
    assert all(v in out_run for v in videos)

    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video at all")
    report = tmp_path / "out.json"
    code = main([videos[0], str(broken), videos[1], "--model", str(workspace["submission"]), "--json", str(report)])
    captured = capsys.readouterr()
    assert code == 1 and "broken.mp4" in captured.err
    results = json.loads(report.read_text())
    assert results["failed"] == 1 and [r["path"] for r in results["results"]] == [videos[0], str(broken), videos[1]]
    assert "error" in results["results"][1]
    probs = [results["results"][i]["prob_fake"] for i in (0, 2)]
    assert all(0.0 <= p <= 1.0 for p in probs)
    # the run and the submission agree on every video
    run_probs = [float(line.split()[0]) for line in out_run.splitlines() if line.strip()]
    assert run_probs == pytest.approx(probs, abs=1e-4)

    assert main([videos[0], "--model", str(tmp_path / "missing")]) == 2


def test_benchmark_input_loader_sampling(workspace):
    from detectors.image.transforms import benchmark_resize
    from detectors.video.data import benchmark_input_loader
    from detectors.video.io import probe_video, read_frames

    path = load_items(workspace["data"], modality="video")[0].path
    info = probe_video(path)  # demo clips: 48 frames at 24 fps, 64 x 80
    clip = benchmark_input_loader({"resize": [32, 32], "num_frames": 20, "frame_rate": 8.0})(path)
    # step round(24 / 8) = 3: frames 0, 3, ..., 45 (16 of them), then the last one repeated
    indices = list(range(0, info.num_frames, 3))[:20]
    indices += [indices[-1]] * (20 - len(indices))
    expected = benchmark_resize(read_frames(path, indices), (32, 32))
    assert torch.equal(clip, expected)
    robust = benchmark_input_loader({"resize": [32, 32], "num_frames": 8}, robustness=True)(path)
    assert robust.shape == (8, 3, 32, 32) and not torch.equal(robust, clip[:8])


def test_video_fit_flags_go_into_the_config():
    import argparse

    from detectors.registry import detector_class
    from detectors.settings import ConfigLayers
    from detectors.training.fit import build_parser

    parser = build_parser("video", VIDEO_ARCHS, "restrav")
    VIDEO.add_arguments(parser)
    assert VIDEO_ARCHS == [
        "cakelens",
        "gend",
        "restrav",
        "spectral_video",
    ]  # every registered video detector, found by name
    args = parser.parse_args(
        [
            "--num-frames",
            "16",
            "--frame-rate",
            "8",
            "--sampling",
            "window",
            "--window-sec",
            "1.5",
            "--cache-dir",
            "/tmp/x",
        ]
    )
    layers = ConfigLayers(detector_class("restrav"))
    VIDEO.apply_arguments(args, layers, {"num_frames", "frame_rate", "window_sec"})
    assert layers.raw["model"] == {"num_frames": 16, "frame_rate": 8.0, "window_sec": 1.5}
    assert layers.raw["data"] == {"sampling": "window", "cache_dir": "/tmp/x"}
    assert layers.sources["model.num_frames"] == "--num-frames" and layers.sources["data.sampling"] == "--sampling"
    other = ConfigLayers(detector_class("cakelens"))  # an arch without sampling fields in its model config
    VIDEO.apply_arguments(
        argparse.Namespace(num_frames=8, frame_rate=None, window_sec=None, sampling=None, cache_dir=None),
        other,
        {"crop"},
    )
    assert other.raw == {"data": {"num_frames": 8}}


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_detect_names_a_device_this_machine_lacks(tmp_path, capsys):
    from detectors.video.detect import main

    for device in ("cuda", "cuda:1", "gpu0"):
        with pytest.raises(SystemExit) as exit_info:
            main(
                [
                    str(tmp_path / "a.mp4"),
                    "--arch",
                    "cakelens",
                    "--weights",
                    str(tmp_path / "w.pth"),
                    "--device",
                    device,
                ]
            )
        assert exit_info.value.code == 2
        assert f"--device {device}" in capsys.readouterr().err.replace("'", "")
