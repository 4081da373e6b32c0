"""Fault injection: a fit killed with SIGKILL (mid-epoch, while writing a checkpoint, during
calibration) resumes from its last finished epoch when rerun, and its CSV log holds every epoch's
rows once; a resumed run must be given the arguments it was started with."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml
from helpers import TOY_DETECTOR

REPO = Path(__file__).resolve().parent.parent
EPOCHS = 3

# Runs the image fit command on the toy detector, optionally killing itself with SIGKILL at one point.
DRIVER = textwrap.dedent("""
    import os, signal, sys
    sys.path.insert(0, sys.argv[1])
    import toy_detector  # registers the toy_image detector
    from detectors.image.fit import IMAGE
    from detectors.registry import list_detectors
    from detectors.training import trainer as trainer_module
    from detectors.training.fit import run_fit

    fault = os.environ.get("FAULT", "")

    def die():
        sys.stdout.flush()
        os.kill(os.getpid(), signal.SIGKILL)

    if fault == "mid_epoch":  # in the third epoch, after its first training step
        from detectors.training.module import DetectorModule
        step = DetectorModule.training_step
        def training_step(self, batch, batch_idx):
            if self.current_epoch == 2 and batch_idx == 1:
                die()
            return step(self, batch, batch_idx)
        DetectorModule.training_step = training_step
    elif fault == "checkpoint_write":  # the third last.ckpt: written to its temp file, never renamed
        import torch
        save, saved = torch.save, []
        def torch_save(obj, path, *args, **kwargs):
            save(obj, path, *args, **kwargs)
            if str(path).startswith(os.path.join(sys.argv[2], "checkpoints", ".last.ckpt")):
                saved.append(path)
                if len(saved) == 3:
                    die()
        trainer_module.torch.save = torch_save
    elif fault == "calibration":  # training finished, the calibrator is being fitted
        from calibration.calibrator import LogitCalibrator
        def fit(self, *args, **kwargs):
            die()
        LogitCalibrator.fit = fit

    run_fit("image", IMAGE, list_detectors("image"), "dinov3_image", sys.argv[3:])
""")


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> dict[str, Path]:
    import importlib

    from detectors.image.demo import write_demo_images

    root = tmp_path_factory.mktemp("faults")
    (root / "toy_detector.py").write_text(TOY_DETECTOR)
    sys.path.insert(0, str(root))  # the resumed fits run in this process (only the killed ones need their own)
    importlib.import_module("toy_detector")
    (root / "driver.py").write_text(DRIVER)
    settings = {
        "model": {"channels": 4},
        "data": {"batch_size": 4, "num_workers": 0, "crop": "resize", "augment_level": 0, "balanced_sampling": False},
        "optim": {"scheduler": "none"},
        "trainer": {"max_epochs": EPOCHS, "enable_progress_bar": False, "log_every_n_steps": 1},
    }
    (root / "toy.yaml").write_text(yaml.safe_dump(settings))
    data = write_demo_images(root / "images", n_per_class=6, size=(40, 48))
    return {"root": root, "data": data}


def _fit(
    workspace: dict[str, Path], run: Path, fault: str = "", extra: tuple[str, ...] = ()
) -> subprocess.CompletedProcess:
    argv = [
        "--arch",
        "toy_image",
        "--data",
        str(workspace["data"]),
        "--config",
        str(workspace["root"] / "toy.yaml"),
        "--output",
        str(run),
        *extra,
    ]
    env = {**os.environ, "FAULT": fault, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    return subprocess.run(
        [sys.executable, str(workspace["root"] / "driver.py"), str(workspace["root"]), str(run), *argv],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        check=False,
    )


def _fit_here(workspace: dict[str, Path], run: Path, *extra: str) -> int:
    """The same command in this process (cheaper than a new interpreter): its exit status."""
    from detectors.image.fit import IMAGE
    from detectors.registry import list_detectors
    from detectors.training.fit import run_fit

    argv = [
        "--arch",
        "toy_image",
        "--data",
        str(workspace["data"]),
        "--config",
        str(workspace["root"] / "toy.yaml"),
        "--output",
        str(run),
        *extra,
    ]
    try:
        run_fit("image", IMAGE, list_detectors("image"), "dinov3_image", argv)
    except SystemExit as exit_info:
        return int(exit_info.code)
    return 0


def _epoch_rows(run: Path) -> dict[int, int]:
    """Validation rows per epoch in the run's CSV log."""
    with (run / "logs" / "csv" / "metrics.csv").open(newline="") as handle:
        rows = [row for row in csv.DictReader(handle) if row.get("val/score")]
    counts: dict[int, int] = {}
    for row in rows:
        counts[int(float(row["epoch"]))] = counts.get(int(float(row["epoch"])), 0) + 1
    return counts


@pytest.mark.parametrize("fault, finished_before", [("mid_epoch", 2), ("checkpoint_write", 2), ("calibration", 3)])
def test_a_killed_fit_resumes_from_its_last_finished_epoch(workspace, fault, finished_before):
    import torch

    run = workspace["root"] / f"run-{fault}"
    killed = _fit(workspace, run, fault)
    assert killed.returncode == -9, killed.stderr[-2000:]  # SIGKILL: nothing could clean up
    checkpoint = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert checkpoint["epoch"] == finished_before - 1  # the last finished epoch was saved, whatever its score
    assert not (run / "summary.json").exists()

    assert _fit_here(workspace, run) == 0
    summary = json.loads((run / "summary.json").read_text())
    assert summary["resumed"] is True and summary["epochs_completed"] == EPOCHS
    # every epoch's validation row, once: the killed epoch was logged again, the earlier ones kept
    assert _epoch_rows(run) == {epoch: 1 for epoch in range(EPOCHS)}
    assert not list((run / "checkpoints").glob(".*tmp*"))  # the killed write's temp file was removed


def test_resuming_with_other_arguments_is_refused_before_anything_is_written(workspace, capsys):
    run = workspace["root"] / "run-changed"
    assert _fit(workspace, run, "mid_epoch").returncode == -9
    config_before = (run / "config.yaml").read_bytes()
    capsys.readouterr()
    assert _fit_here(workspace, run, "--set", "model.channels=8", "--lr", "0.5") == 2
    message = capsys.readouterr().err.strip().splitlines()[-1]
    assert message.startswith("error: ") and "model.channels: 4 -> 8" in message and "optim.lr: 0.001 -> 0.5" in message
    assert (run / "config.yaml").read_bytes() == config_before  # the saved run is untouched
    assert _fit_here(workspace, run, "--set", "model.channels=8", "--overwrite") == 0
    assert json.loads((run / "summary.json").read_text())["resumed"] is False
    assert yaml.safe_load((run / "config.yaml").read_text())["model"]["channels"] == 8
