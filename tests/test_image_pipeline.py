"""End to end on data the detector has never seen: fit (each tuning mode) -> calibrate -> export ->
export.check -> load as the benchmark does -> evaluate; plus resume, --init-from, DDP and the probe."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from detectors.image.fit import IMAGE
from detectors.metrics import benchmark_score, brier, mcc
from detectors.training.fit import run_fit

sys.path.insert(0, str(Path(__file__).parent))
from helpers import stage_dataset
from image_fixtures import write_image_set  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
FAST = [
    "--max-epochs",
    "10",
    "--set",
    "data.crop=resize",
    "--num-workers",
    "0",
    "--batch-size",
    "16",
    "--set",
    "model.image_size=32",
    "--set",
    "model.head_hidden=[32]",
    "--lr",
    "0.01",
    "--set",
    "optim.backbone_lr=0.003",
]


@pytest.fixture(scope="module")
def image_sets(tmp_path_factory):
    root = tmp_path_factory.mktemp("images")
    return write_image_set(root / "train"), write_image_set(root / "holdout", holdout=True)


def fit(args: list[str]) -> Path:
    return run_fit("image", IMAGE, ["dinov3_image"], "dinov3_image", args)


@pytest.fixture(scope="module")
def lora_run(image_sets, tiny_dinov3, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "lora"
    return fit(
        ["--data", str(image_sets[0]), "--backbone", str(tiny_dinov3), "--tuning", "lora", "--output", str(out), *FAST]
    )


def export_and_evaluate(run: Path, holdout_yaml: Path, tmp: Path) -> dict:
    from detectors.evaluate import evaluate_submission
    from export.__main__ import export_run
    from export.check import check_submission

    report = export_run(run, tmp / "submission")
    assert report["max_abs_logit_difference"] <= 1e-4
    assert check_submission(tmp / "submission") == []
    return evaluate_submission(tmp / "submission", holdout_yaml, tmp / "eval", num_workers=0)


def test_run_directory_contents(lora_run):
    for name in (
        "config.yaml",
        "split.csv",
        "checkpoints/last.ckpt",
        "summary.json",
        "metrics.json",
        "detector.safetensors",
        "calibration.json",
        "calibration_logits.safetensors",
        "plots/reliability.png",
        "plots/roc.png",
    ):
        assert (lora_run / name).is_file(), name
    summary = json.loads((lora_run / "summary.json").read_text())
    assert summary["tuning"] == "lora" and summary["backbone_weights"] == "pretrained"
    assert 0 < summary["trainable_parameters"] < summary["total_parameters"]
    assert all("lora_" in n or n.startswith("net.head.") for n in summary["trainable_tensors"])
    metrics = json.loads((lora_run / "metrics.json").read_text())["validation"]
    for key in ("score", "mcc", "brier", "accuracy", "roc_auc", "pr_auc", "ece", "loss"):
        assert key in metrics
    assert list((lora_run / "logs" / "tensorboard").glob("events.out.tfevents*"))


@pytest.mark.parametrize("tuning", ["lora", "layernorm", "frozen"])
def test_each_tuning_mode_generalises_to_unseen_generator(tuning, lora_run, image_sets, tiny_dinov3, tmp_path):
    run = (
        lora_run
        if tuning == "lora"
        else fit(
            [
                "--data",
                str(image_sets[0]),
                "--backbone",
                str(tiny_dinov3),
                "--tuning",
                tuning,
                "--output",
                str(tmp_path / tuning),
                *FAST,
            ]
        )
    )
    results = export_and_evaluate(run, image_sets[1], tmp_path)
    assert results["roc_auc"] > 0.65, results  # chance is 0.5; tiny random backbone, 10 short epochs
    # the score in results.json is the score of predictions.csv
    with open(tmp_path / "eval" / "predictions.csv") as handle:
        rows = list(csv.DictReader(handle))
    labels = np.array([int(r["label"]) for r in rows])
    prob = np.array([float(r["prob_fake"]) for r in rows])
    recomputed = benchmark_score(mcc(labels, (prob > 0.5).astype(int)), brier(prob, labels))
    assert recomputed == pytest.approx(results["score"], abs=1e-6)
    assert len(rows) == 64 and results["base"]["per_dataset"].keys() == {"holdout-real", "holdout-fake"}
    assert results["base"]["per_generator"]["test-gen"]["n"] == 32


def test_resume_after_crash_continues_from_last_checkpoint(image_sets, tiny_dinov3, tmp_path):
    args = [
        "--data",
        str(image_sets[0]),
        "--backbone",
        str(tiny_dinov3),
        "--tuning",
        "frozen",
        "--output",
        str(tmp_path / "run"),
        *FAST,
    ]
    fit([*args, "--max-epochs", "1"])
    # simulate a crash after the checkpoint but before the run was finalised
    (tmp_path / "run" / "summary.json").unlink()
    (tmp_path / "run" / "detector.safetensors").unlink()
    fit([*args, "--max-epochs", "2"])
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["resumed"] is True and summary["epochs_completed"] == 2


def test_finished_run_is_never_overwritten_silently(lora_run, image_sets, tiny_dinov3):
    with pytest.raises(SystemExit):
        fit(["--data", str(image_sets[0]), "--backbone", str(tiny_dinov3), "--output", str(lora_run), *FAST])


def test_init_from_reports_before_and_after(lora_run, image_sets, tmp_path):
    run = fit(
        [
            "--data",
            str(image_sets[1]),
            "--init-from",
            str(lora_run),
            "--output",
            str(tmp_path / "ft"),
            *FAST[:2],
            "--num-workers",
            "0",
            "--gradient-checkpointing",
        ]
    )
    metrics = json.loads((run / "metrics.json").read_text())
    assert set(metrics["comparison"]["score"]) == {"before", "after"}
    import yaml

    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["model"]["tuning"]["mode"] == "lora"  # architecture and tuning kept from the initial run
    assert config["model"]["tuning"]["gradient_checkpointing"] is True  # a training flag still applies
    summary = json.loads((run / "summary.json").read_text())
    assert summary["init_from"] == str(lora_run)

    # "before" is the previous detector as delivered: with its own fitted calibrator, on the new val split
    from torch.utils.data import DataLoader

    from detectors.base import load_detector
    from detectors.data.catalog import read_split
    from detectors.data.dataset import collate_skip
    from detectors.training.predict import predict

    previous = load_detector(lora_run)
    assert previous.calibrator.temperature != pytest.approx(1.0, abs=1e-3)  # a fitted calibrator matters here
    val = [item for item in read_split(run / "split.csv") if item.split == "val"]
    loader = DataLoader(stage_dataset(previous, val, "eval", config["data"]), batch_size=16, collate_fn=collate_skip)
    for calibrated, matches in ((True, True), (False, False)):
        predictions = predict(previous, loader, calibrated=calibrated)
        prob = torch.softmax(predictions.logits, -1)[:, 1].numpy()
        expected = brier(prob, predictions.labels.numpy())
        assert (metrics["before_fine_tuning"]["brier"] == pytest.approx(expected, abs=1e-6)) is matches


def test_unreadable_images_are_skipped_and_counted(image_sets, tiny_dinov3, tmp_path):
    import shutil

    from detectors.data.catalog import read_split

    data = tmp_path / "data"
    shutil.copytree(image_sets[0].parent, data)
    (data / "real" / "zero.png").write_bytes(b"")
    (data / "fake" / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    run = fit(
        [
            "--data",
            str(data / "data.yaml"),
            "--backbone",
            str(tiny_dinov3),
            "--tuning",
            "frozen",
            "--output",
            str(tmp_path / "run"),
            *FAST,
            "--max-epochs",
            "1",
        ]
    )
    summary = json.loads((run / "summary.json").read_text())
    skipped = summary["skipped_unreadable"]
    assert skipped["train"] + skipped["val"] + skipped["calibration"] >= 1
    # train counts distinct files (at most the two corrupt ones that landed there); draws may repeat them
    assert skipped["train"] <= sum(
        item.split == "train" and item.path.endswith(("zero.png", "corrupt.jpg"))
        for item in read_split(run / "split.csv")
    )
    assert skipped["train_draws"] >= skipped["train"]


def test_probe_baseline_is_exportable(image_sets, tiny_dinov3, tmp_path):
    from detectors.image.probe import run_probe

    run = run_probe(image_sets[0], str(tiny_dinov3), tmp_path / "probe", image_size=32, num_workers=0)
    results = export_and_evaluate(run, image_sets[1], tmp_path)
    assert results["roc_auc"] > 0.6


def test_ddp_two_cpu_processes(image_sets, tiny_dinov3, tmp_path):
    out = tmp_path / "ddp"
    command = [
        sys.executable,
        "-m",
        "detectors.image.fit",
        "--data",
        str(image_sets[0]),
        "--backbone",
        str(tiny_dinov3),
        "--tuning",
        "layernorm",
        "--output",
        str(out),
        "--accelerator",
        "cpu",
        "--devices",
        "2",
        "--strategy",
        "ddp",
        *FAST,
        "--max-epochs",
        "1",
    ]
    done = subprocess.run(
        command,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=400,
        env={**__import__("os").environ, "PL_DISABLE_FORK": "1"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["epochs_completed"] == 1
    assert "world_size=2" in done.stdout + done.stderr or "distributed_backend=gloo" in done.stdout + done.stderr


def test_three_class_head_trains_exports_and_scores_like_the_benchmark(tiny_dinov3, tmp_path):
    from image_fixtures import write_three_class_set

    from export.benchmark_loader import load_submission, run_model

    data = write_three_class_set(tmp_path / "data")
    run = fit(
        [
            "--data",
            str(data),
            "--backbone",
            str(tiny_dinov3),
            "--tuning",
            "layernorm",
            "--output",
            str(tmp_path / "run"),
            *FAST,
            "--max-epochs",
            "3",
            "--set",
            "model.num_classes=3",
        ]
    )
    results = export_and_evaluate(run, data, tmp_path)
    model, config = load_submission(tmp_path / "submission")
    assert config["model"]["num_classes"] == 3
    with open(tmp_path / "eval" / "predictions.csv") as handle:
        row = next(csv.DictReader(handle))
    from detectors.image.data import benchmark_input_loader

    x = benchmark_input_loader(config["preprocessing"])(row["path"])[None]
    logits = run_model(model, x)
    assert logits.shape == (1, 3)
    # the benchmark's 3-class rule: p(fake) = 1 - p(real)
    assert float(row["prob_fake"]) == pytest.approx(1 - torch.softmax(logits, -1)[0, 0].item(), abs=1e-5)
    assert results["base"]["n"] == 48
    multiclass = results["base"]["multiclass"]
    assert multiclass["n"] == 48 and multiclass["brier_baseline"] == pytest.approx(2 / 3)
    assert "multiclass" in json.loads((run / "metrics.json").read_text())["validation"]


def test_too_small_dataset_is_a_clear_error(tiny_dinov3, tmp_path):
    from detectors.errors import ConfigError
    from detectors.training.fit import build_parser
    from detectors.training.fit import fit as fit_args

    data = write_image_set(tmp_path / "tiny", n_per_class=1)
    args = build_parser("image", ["dinov3_image"], "dinov3_image").parse_args(
        ["--data", str(data), "--backbone", str(tiny_dinov3), "--output", str(tmp_path / "run")]
    )
    with pytest.raises(ConfigError, match="split"):
        fit_args(args, "image", IMAGE)


def test_evaluate_robustness_pass_and_blend(lora_run, image_sets, tmp_path):
    from detectors.evaluate import evaluate_submission, main
    from export.__main__ import export_run

    export_run(lora_run, tmp_path / "submission")
    results = evaluate_submission(
        tmp_path / "submission", image_sets[1], tmp_path / "eval", robustness=True, num_workers=0
    )
    assert results["score"] == pytest.approx(0.8 * results["base"]["score"] + 0.2 * results["augmented"]["score"])
    assert (tmp_path / "eval" / "predictions_augmented.csv").is_file()
    for name in ("results.json", "predictions.csv", "summary.txt", "roc.png", "pr.png", "reliability.png"):
        assert (tmp_path / "eval" / name).is_file(), name
    assert 0 < results["ms_per_sample_mean"] and 0 < results["ms_per_sample_p95"]
    # a missing dataset YAML is a clear error, not a traceback
    assert (
        main(
            [
                "--model",
                str(tmp_path / "submission"),
                "--data",
                str(tmp_path / "missing.yaml"),
                "--output",
                str(tmp_path / "eval2"),
            ]
        )
        == 2
    )


def test_bf16_mixed_precision_checkpointing_and_accumulation(image_sets, tiny_dinov3, tmp_path):
    from export.__main__ import export_run
    from export.check import check_submission

    run = fit(
        [
            "--data",
            str(image_sets[0]),
            "--backbone",
            str(tiny_dinov3),
            "--tuning",
            "lora",
            "--output",
            str(tmp_path / "run"),
            *FAST,
            "--max-epochs",
            "2",
            "--precision",
            "bf16-mixed",
            "--gradient-checkpointing",
            "--accumulate-grad-batches",
            "2",
        ]
    )
    summary = json.loads((run / "summary.json").read_text())
    assert summary["epochs_completed"] == 2 and summary["global_steps"] == 4  # 3 batches/epoch, 2 per step
    report = export_run(run, tmp_path / "submission", dtype="bf16")
    assert report["max_abs_prob_difference"] < 0.05  # bf16 weights: close, not equal
    assert check_submission(tmp_path / "submission") == []
