"""CakeLens detector wrapper: shapes, the AI_GEN head, masked label BCE, export, detect, training."""

from __future__ import annotations

import json
import math

import pytest
import torch
from helpers import stage_dataset

from detectors.data.catalog import MediaItem
from detectors.video.cakelens import LABELS, predict_video
from detectors.video.cakelens_detector import (
    CakeLensDetector,
    CakeLensDetectorConfig,
    detect_cakelens,
    format_cakelens_report,
    generator_targets,
    masked_label_bce,
)

SMALL = dict(crop=32, width=4, channel_step=2, num_blocks=1, hidden=[8])


def small_detector(**overrides) -> CakeLensDetector:
    torch.manual_seed(0)
    return CakeLensDetector(CakeLensDetectorConfig(**{**SMALL, **overrides}))


def test_forward_shapes_and_head_is_mean_sigmoid():
    detector = small_detector().eval()
    x = torch.randint(0, 256, (2, 12, 3, 40, 36), dtype=torch.uint8)  # 2 framesets, the 2nd padded
    with torch.no_grad():
        features = detector.forward_features(x)
        logits = detector.forward_head(features)
    assert features.shape == (2, 2, len(LABELS))
    assert logits.shape == (2, 2)
    p = torch.sigmoid(features[..., 0]).mean(1)
    assert torch.allclose(logits.softmax(-1)[:, 1], p, atol=1e-6)
    assert torch.allclose(logits.exp().sum(-1), torch.ones(2), atol=1e-6)


def test_generator_targets_and_masked_bce_ignore_unknown_labels():
    from detectors.video.cakelens_detector import GENERATOR_LABELS

    t_real, m_real = generator_targets(None, 0)
    t_sora, m_sora = generator_targets("sora", 1)
    t_fake, m_fake = generator_targets("some-new-model", 1)
    content = [LABELS.index(name) for name in ("ANIME_2D", "ANIME_3D", "VIDEO_GAME")]
    # a real video was made by no generator: those labels are known 0; its content type is not known
    assert m_real.sum() == 1 + len(GENERATOR_LABELS) and t_real.sum() == 0 and m_real[content].sum() == 0
    assert m_fake.sum() == 1 and t_fake.sum() == 1  # a fake of an unknown generator: AI_GEN only
    assert t_sora[0] == 1 and t_sora[LABELS.index("SORA")] == 1 and t_sora.sum() == 2
    assert m_sora[LABELS.index("ANIME_2D")] == 0 and m_sora[LABELS.index("KLING")] == 1
    logits = torch.randn(2, 3, len(LABELS))
    targets, mask = torch.stack([t_real, t_sora]), torch.stack([m_real, m_sora])
    loss = masked_label_bce(logits, targets, mask)
    # independent: average of -[y log s + (1-y) log(1-s)] over known (sample, frameset, label)
    terms = []
    for b in range(2):
        for f in range(3):
            for k in range(len(LABELS)):
                if mask[b, k]:
                    s = 1 / (1 + math.exp(-float(logits[b, f, k])))
                    y = float(targets[b, k])
                    terms.append(-(y * math.log(s) + (1 - y) * math.log(1 - s)))
    assert loss.item() == pytest.approx(sum(terms) / len(terms), rel=1e-5)
    # masked labels contribute nothing, whatever their logits
    changed = logits.clone()
    changed[0, :, content] += 50.0
    changed[1, :, LABELS.index("ANIME_2D")] -= 50.0
    assert masked_label_bce(changed, targets, mask).item() == pytest.approx(loss.item(), rel=1e-6)


def test_export_equals_in_library(tmp_path):
    from export.__main__ import export_detector

    detector = small_detector()
    with torch.no_grad():  # a non-trivial calibrator must be folded in
        detector.calibrator.log_temperature.fill_(math.log(1.7))
        detector.calibrator.logit_bias.copy_(torch.tensor([0.2, -0.1]))
    report = export_detector(detector, tmp_path / "sub")
    assert report["max_abs_logit_difference"] <= 1e-4
    from export.benchmark_loader import load_submission, run_model

    model, _ = load_submission(report["submission"], device="cpu")
    x = torch.randint(0, 256, (2, 9, 3, 30, 33), dtype=torch.uint8)  # smaller than crop: padding
    with torch.inference_mode():
        assert torch.allclose(run_model(model, x).float(), detector(x).float(), atol=1e-4)


def test_detect_on_mp4_matches_predict_video(tmp_path):
    from detectors.video.demo import write_mp4
    from detectors.video.io import read_frames

    detector = small_detector()
    weights = tmp_path / "small.pth"
    torch.save({"model_state_dict": detector.cnn.state_dict()}, weights)
    video = tmp_path / "clip.mp4"
    write_mp4(video, torch.randint(0, 256, (11, 3, 32, 48), dtype=torch.uint8), fps=10)
    out = tmp_path / "out.json"
    results = detect_cakelens([video], weights, json_out=out, progress=False, config=detector.cnn.config)
    saved = json.loads(out.read_text())
    assert saved["video"] == str(video) and saved["frame_count"] == 11
    assert list(saved["predictions"]) == list(LABELS)
    expected = predict_video(detector.cnn, read_frames(video, list(range(11))), progress=False)
    for label, p in saved["predictions"].items():
        assert 0.0 <= p <= 1.0
        assert p == pytest.approx(expected["probabilities"][label], abs=1e-6)
    assert "AI_GEN" in format_cakelens_report(results[0])


def test_train_one_epoch_export_and_check(tmp_path):
    import lightning as L
    from lightning.pytorch.loggers import TensorBoardLogger

    from detectors.data.datamodule import MediaDataModule
    from detectors.training.module import DetectorModule
    from detectors.video.demo import write_mp4
    from export.__main__ import export_detector
    from export.check import check_submission

    items = []
    g = torch.Generator().manual_seed(0)
    for i in range(6):
        path = tmp_path / f"v{i}.mp4"
        write_mp4(path, torch.randint(0, 256, (12, 3, 32, 32), generator=g, dtype=torch.uint8), fps=10)
        label = i % 2
        items.append(
            MediaItem(
                str(path),
                label,
                "synthetic" if label else "real",
                "demo",
                "video",
                generator_family="SORA" if label else None,
                split="train" if i < 4 else "val",
            )
        )
    detector = small_detector(tensorboard_every_n_steps=1, gradient_checkpointing=True)
    dataset = stage_dataset(detector, items, "train", {})
    sample = dataset[1]
    assert sample["x"].shape == (9, 3, 32, 32) and sample["label_mask"][LABELS.index("SORA")] == 1
    datamodule = MediaDataModule(
        items,
        detector.data_recipe,
        detector.data_config(
            {
                "batch_size": 2,
                "eval_batch_size": 2,
                "num_workers": 0,
                "balanced_sampling": False,
                "val_framesets": "benchmark",
            }
        ),
    )
    module = DetectorModule(detector, loss={"name": "focal_brier"}, optim={"lr": 1e-3, "scheduler": "none"})
    before = {k: v.clone() for k, v in detector.cnn.state_dict().items()}
    trainer = L.Trainer(
        max_epochs=1,
        accelerator="cpu",
        logger=TensorBoardLogger(tmp_path / "tb"),
        callbacks=detector.extra_callbacks(),
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        log_every_n_steps=1,
        num_sanity_val_steps=0,
    )
    forward_calls = []
    original_forward_batch = detector.forward_batch
    detector.forward_batch = lambda batch: forward_calls.append(trainer.state.stage) or original_forward_batch(batch)
    trainer.fit(module, datamodule=datamodule)
    assert "train/label_bce" in trainer.logged_metrics
    assert any(not torch.equal(before[k], v) for k, v in detector.cnn.state_dict().items())
    # one forward per validation batch: the PR-curve callback reuses the validation step's logits
    assert forward_calls.count("validate") == 1  # 2 val videos, batch size 2
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(
        str(next((tmp_path / "tb").rglob("events.out.tfevents*"))), size_guidance={"histograms": 0, "tensors": 0}
    ).Reload()
    assert "gradients/detector.net.cnn.seq.input_conv0.weight" in events.Tags()["histograms"]
    pr_curve = events.Tensors("val/pr_curve_ai_gen")[-1]
    assert pr_curve.step == trainer.global_step
    from tensorboard.util.tensor_util import make_ndarray

    true_pos, false_pos, true_neg, false_neg = make_ndarray(pr_curve.tensor_proto)[:4, 0]
    assert (true_pos + false_neg, false_pos + true_neg) == (1, 1)  # val: v4 real, v5 fake
    report = export_detector(detector, tmp_path / "submission")
    assert report["max_abs_logit_difference"] <= 1e-4
    assert check_submission(tmp_path / "submission") == []


def test_detect_keeps_going_past_unreadable_videos(tmp_path):
    from detectors.video.demo import write_mp4

    detector = small_detector()
    weights = tmp_path / "small.pth"
    torch.save({"model_state_dict": detector.cnn.state_dict()}, weights)
    good, bad = tmp_path / "good.mp4", tmp_path / "bad.mp4"
    write_mp4(good, torch.randint(0, 256, (9, 3, 32, 48), dtype=torch.uint8), fps=10)
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42 truncated")
    results = detect_cakelens(
        [bad, good], weights, json_out=tmp_path / "out.json", progress=False, config=detector.cnn.config
    )
    assert "error" in results[0] and str(bad) in results[0]["error"]
    assert results[1]["frame_count"] == 9
    assert len(json.loads((tmp_path / "out.json").read_text())) == 2


def test_detect_cli_reports_a_checkpoint_that_does_not_fit(tmp_path, capsys):
    from detectors.video.detect import main

    weights = tmp_path / "small.pth"
    torch.save({"model_state_dict": small_detector().cnn.state_dict()}, weights)
    assert main(["clip.mp4", "--arch", "cakelens", "--weights", str(weights)]) == 2
    assert "shape" in capsys.readouterr().err  # the full-size network names the mismatched tensors


def test_fit_cli_trains_exports_and_checks(tmp_path):
    import yaml

    from detectors.config import CONFIG_ROOT, load_yaml
    from detectors.training.fit import run_fit
    from detectors.video.demo import write_demo_videos
    from detectors.video.fit import VIDEO, VIDEO_ARCHS
    from export.__main__ import export_run
    from export.check import check_submission

    data = write_demo_videos(tmp_path / "videos", n_per_class=5, num_frames=12, size=(40, 48))
    demo_settings = tmp_path / "demo_settings.yaml"  # the demo's small network, on user data
    demo_settings.write_text(yaml.safe_dump(load_yaml(CONFIG_ROOT / "video" / "cakelens.yaml")["demo"]))
    run = run_fit(
        "video",
        VIDEO,
        VIDEO_ARCHS,
        "cakelens",
        [
            "--arch",
            "cakelens",
            "--data",
            str(data),
            "--output",
            str(tmp_path / "run"),
            "--config",
            str(demo_settings),
            "--max-epochs",
            "1",
            "--num-workers",
            "0",
            "--set",
            "split.val=0.3",
            "--set",
            "split.calibration=0.3",
        ],
    )
    summary = json.loads((run / "summary.json").read_text())
    assert summary["arch"] == "cakelens" and summary["epochs_completed"] == 1
    report = export_run(run, tmp_path / "submission")
    assert report["max_abs_logit_difference"] <= 1e-4
    assert check_submission(tmp_path / "submission") == []


def test_validation_judges_whole_videos_calibration_the_benchmark_input(tmp_path):
    from detectors.errors import ConfigError
    from detectors.video.cakelens import video_volume_from_benchmark_input
    from detectors.video.demo import write_mp4
    from detectors.video.io import centre_crop_resize, read_frames

    detector = small_detector().eval()
    video = tmp_path / "clip.mp4"
    write_mp4(video, torch.randint(0, 256, (20, 3, 32, 48), dtype=torch.uint8), fps=10)
    item = MediaItem(path=str(video), label=1, media_type="synthetic", dataset="gen", modality="video", split="val")
    data = {"eval_batch_size": 1}

    val = stage_dataset(detector, [item], "val", data)[0]
    assert val["x"].shape == (20, 3, 32, 32)  # every frame: framesets 0-8, 9-17 and a short 18-19
    with torch.no_grad():
        _, logits = detector.forward_batch({"x": val["x"][None]})
        frames = centre_crop_resize(read_frames(video, list(range(20))), (32, 32))
        per_frameset = detector.cnn(video_volume_from_benchmark_input(frames[None], detector.network_config))
    assert per_frameset.shape[0] == 3
    expected = torch.sigmoid(per_frameset[:, 0]).mean()  # the original verdict: mean AI_GEN probability
    assert torch.softmax(logits, -1)[0, 1].item() == pytest.approx(expected.item(), abs=1e-6)

    assert stage_dataset(detector, [item], "calibration", data)[0]["x"].shape == (
        9,
        3,
        32,
        32,
    )  # what the benchmark feeds
    assert stage_dataset(detector, [item], "val", {**data, "val_max_framesets": 1})[0]["x"].shape[0] == 9
    assert (
        stage_dataset(detector, [item], "val", {"val_framesets": "benchmark", "eval_batch_size": 4})[0]["x"].shape[0]
        == 9
    )
    with pytest.raises(ConfigError, match="eval_batch_size"):
        stage_dataset(detector, [item], "val", {"eval_batch_size": 4})


def test_long_videos_are_judged_in_chunks_with_the_same_result():
    from detectors.video.cakelens_detector import EVAL_CHUNK_FRAMESETS

    detector = small_detector().eval()
    frames = torch.randint(0, 256, (1, 9 * (EVAL_CHUNK_FRAMESETS + 2) - 4, 3, 32, 32), dtype=torch.uint8)
    with torch.no_grad():
        chunked = detector.forward_features(frames)
    whole = detector.forward_features(frames).detach()  # with gradients: one forward
    assert chunked.shape == (1, EVAL_CHUNK_FRAMESETS + 2, 17)
    torch.testing.assert_close(chunked, whole, rtol=1e-5, atol=1e-6)


def test_calibration_input_is_what_the_benchmark_feeds_the_export(tmp_path):
    """The calibration split's frameset equals the benchmark's input for the exported preprocessing
    (GASBench's OpenCV crop/resize), also when the frames must be scaled."""
    from detectors.video.data import benchmark_input_loader
    from detectors.video.demo import write_mp4

    detector = small_detector()
    video = tmp_path / "clip.mp4"
    write_mp4(video, torch.randint(0, 256, (12, 3, 40, 60), dtype=torch.uint8), fps=10)
    item = MediaItem(path=str(video), label=1, media_type="synthetic", dataset="gen", modality="video")
    calibration = stage_dataset(detector, [item], "calibration", {"eval_batch_size": 1})[0]["x"]
    assert torch.equal(calibration, benchmark_input_loader(detector.preprocessing())(str(video)))
