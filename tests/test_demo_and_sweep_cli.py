"""The demo generators' shared CLI and relocatable YAMLs, and the sweep's calibration history and export note."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import save_file

from calibration.sweep import main as sweep_main
from detectors.audio.demo import main as audio_main
from detectors.audio.demo import write_demo_audio
from detectors.data.catalog import load_items
from detectors.image.demo import main as image_main
from detectors.image.demo import write_demo_images, write_holdout_images
from detectors.video.demo import main as video_main
from detectors.video.demo import write_demo_videos, write_holdout_videos

TINY_VIDEO = ["--num-frames", "12", "--size", "32", "32"]


# ------------------------------------------------------------------------ 1. relocatable demo YAMLs


def _assert_relative_paths(yaml_path: Path) -> None:
    for entry in yaml.safe_load(yaml_path.read_text())["datasets"]:
        assert not Path(entry["path"]).is_absolute(), entry


@pytest.mark.parametrize("write", ["video", "video_holdout", "image", "image_holdout", "audio"])
def test_demo_sets_survive_renaming_their_folder(tmp_path: Path, write: str) -> None:
    writers = {
        "video": lambda root: write_demo_videos(root, n_per_class=1, num_frames=12, size=(32, 32)),
        "video_holdout": lambda root: write_holdout_videos(root, n_per_class=1, num_frames=12, size=(32, 32)),
        "image": lambda root: write_demo_images(root, n_per_class=2, size=(32, 32)),
        "image_holdout": lambda root: write_holdout_images(root, n_per_class=1, size=(32, 32)),
        "audio": lambda root: write_demo_audio(root, n_per_class=1, seconds=(1.0, 1.0)),
    }
    original = tmp_path / "run" / "demo_data"
    yaml_path = writers[write](original)
    before = load_items(yaml_path)
    _assert_relative_paths(yaml_path)

    renamed = tmp_path / "renamed"
    (tmp_path / "run").rename(renamed)  # like `mv runs/restrav runs/restrav-old`
    moved_yaml = renamed / "demo_data" / yaml_path.name
    after = load_items(moved_yaml)
    assert len(after) == len(before) >= 2
    assert all(Path(item.path).is_relative_to(renamed.resolve()) and Path(item.path).is_file() for item in after)
    assert sorted(Path(i.path).relative_to(original.resolve()) for i in before) == sorted(
        Path(i.path).relative_to((renamed / "demo_data").resolve()) for i in after
    )


def test_video_demo_reuses_files_and_replaces_the_old_params_file(tmp_path: Path) -> None:
    (tmp_path / ".demo_video.params.json").write_text("{}")  # what earlier versions wrote beside the YAML
    yaml_path = write_demo_videos(tmp_path, n_per_class=1, num_frames=12, size=(32, 32))
    assert not (tmp_path / ".demo_video.params.json").exists()
    assert yaml.safe_load(yaml_path.read_text())["demo"]["n_per_class"] == 1
    clip = tmp_path / "demo_video" / "real" / "real_000.mp4"
    stamp = clip.stat().st_mtime_ns
    assert write_demo_videos(tmp_path, n_per_class=1, num_frames=12, size=(32, 32)) == yaml_path
    assert clip.stat().st_mtime_ns == stamp
    write_demo_videos(tmp_path, n_per_class=2, num_frames=12, size=(32, 32))  # other parameters: rewritten
    assert len(load_items(yaml_path)) == 4


# ------------------------------------------------------------------------------ 2. one demo CLI


@pytest.mark.parametrize(
    ("modality", "main", "extra", "demo_count", "holdout_count"),
    [
        ("image", image_main, [], 3, 2),  # hold-out: 2/3 as many per class
        ("video", video_main, TINY_VIDEO, 3, 3),  # as many
        ("audio", audio_main, [], 3, 1),  # half as many
    ],
)
def test_demo_clis_share_n_per_class_and_holdout(tmp_path, capsys, modality, main, extra, demo_count, holdout_count):
    out = tmp_path / "out"
    main([str(out), "--n-per-class", "3", "--holdout", *extra])
    printed = capsys.readouterr().out.split()
    demo_yaml, holdout_yaml = out / f"demo_{modality}.yaml", out / f"holdout_{modality}.yaml"
    assert printed == [str(demo_yaml), str(holdout_yaml)]

    demo, holdout = load_items(demo_yaml, modality=modality), load_items(holdout_yaml, modality=modality)
    for items, per_class in ((demo, demo_count), (holdout, holdout_count)):
        assert sum(item.label == 0 for item in items) == per_class
        assert sum(item.label != 0 for item in items) == per_class
    assert not {item.path for item in demo} & {item.path for item in holdout}  # two sets side by side
    # the hold-out set is generated with seed + 1; the demo set with --seed
    assert yaml.safe_load(holdout_yaml.read_text())["demo"]["seed"] == 1
    assert yaml.safe_load(demo_yaml.read_text())["demo"]["seed"] == 0

    main([str(tmp_path / "plain"), "--n-per-class", "1", *extra])  # without --holdout: the demo set only
    assert capsys.readouterr().out.split() == [str(tmp_path / "plain" / f"demo_{modality}.yaml")]
    assert not (tmp_path / "plain" / f"holdout_{modality}.yaml").exists()


def test_image_demo_keeps_n_as_a_deprecated_alias(tmp_path, capsys) -> None:
    image_main([str(tmp_path), "--n", "2"])
    captured = capsys.readouterr()
    assert "deprecated" in captured.err and captured.out.split() == [str(tmp_path / "demo_image.yaml")]
    assert len(load_items(tmp_path / "demo_image.yaml")) == 4
    with pytest.raises(SystemExit):
        image_main([str(tmp_path), "--n", "2", "--n-per-class", "3"])


# ------------------------------------------------------------------- 3. sweep: history and exports


def _calibration_set(run_dir: Path, n: int = 400) -> None:
    generator = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 2, (n,), generator=generator)
    margin = (2 * labels - 1).float() * 1.5 + torch.randn(n, generator=generator)
    logits = torch.stack([-margin, margin], dim=1) * 2  # overconfident by about 2
    save_file({"logits": logits.contiguous(), "labels": labels.long()}, str(run_dir / "calibration_logits.safetensors"))


def _calibration(run_dir: Path) -> dict:
    return json.loads((run_dir / "calibration.json").read_text())


def test_fitted_calibration_survives_any_number_of_sweeps_and_can_be_restored(tmp_path, capsys) -> None:
    _calibration_set(tmp_path)
    fitted = {"temperature": 0.0123, "bias": [0.2, -0.2], "method": "lbfgs"}
    (tmp_path / "calibration.json").write_text(json.dumps(fitted))

    assert sweep_main([str(tmp_path), "--grid", "0.5,1,2,4"]) == 0
    first = _calibration(tmp_path)
    assert first["fitted"] == fitted and first["previous"] == fitted and first["method"] == "sweep"

    assert sweep_main([str(tmp_path), "--criterion", "nll"]) == 0
    second = _calibration(tmp_path)
    assert second["fitted"] == fitted  # not the first sweep's result
    assert second["previous"] == {key: first[key] for key in ("temperature", "bias", "method", "criterion")}
    # the fitted temperature still competes with the grid though it is no longer in force
    assert "0.0123" in (tmp_path / "temperature_sweep.csv").read_text()

    assert sweep_main([str(tmp_path), "--grid", "3"]) == 0
    assert _calibration(tmp_path)["fitted"] == fitted and _calibration(tmp_path)["temperature"] == 3.0

    capsys.readouterr()
    assert sweep_main([str(tmp_path), "--restore-fitted"]) == 0
    restored = _calibration(tmp_path)
    assert {key: restored[key] for key in fitted} == fitted
    assert restored["fitted"] == fitted and restored["previous"]["temperature"] == 3.0
    assert "python -m export" in capsys.readouterr().out
    assert sweep_main([str(tmp_path), "--grid", "1"]) == 0  # a sweep after a restore keeps the same fit
    assert _calibration(tmp_path)["fitted"] == fitted


def test_sweep_recovers_the_fit_from_a_file_written_by_the_old_sweep(tmp_path) -> None:
    _calibration_set(tmp_path)
    fit = {"temperature": 1.7, "bias": [0.0, 0.0], "method": "lbfgs"}
    legacy = {"temperature": 2.0, "bias": [0.0, 0.0], "method": "sweep", "criterion": "score", "previous": fit}
    (tmp_path / "calibration.json").write_text(json.dumps(legacy))
    assert sweep_main([str(tmp_path), "--grid", "1,2"]) == 0
    assert _calibration(tmp_path)["fitted"] == fit


def test_restore_without_a_recorded_fit_is_a_named_error(tmp_path, capsys) -> None:
    _calibration_set(tmp_path)
    assert sweep_main([str(tmp_path), "--grid", "1,2"]) == 0  # no calibration.json before: nothing fitted
    assert _calibration(tmp_path)["fitted"] is None
    text = (tmp_path / "calibration.json").read_text()
    assert sweep_main([str(tmp_path), "--restore-fitted"]) == 2
    assert "fitted" in capsys.readouterr().err and (tmp_path / "calibration.json").read_text() == text


def test_sweep_help_documents_the_history() -> None:
    from calibration import sweep

    assert "fitted" in sweep.__doc__ and "previous" in sweep.__doc__ and "python -m export" in sweep.__doc__
    with pytest.raises(SystemExit):
        sweep_main(["--help"])


def test_sweep_says_exports_are_stale_and_the_printed_command_refreshes_the_demo_submission(
    tiny_dinov3, tmp_path, capsys
) -> None:
    from detectors.base import load_detector, save_detector
    from detectors.registry import create_detector
    from export.__main__ import export_run
    from export.__main__ import main as export_main
    from export.benchmark_loader import load_submission, run_model

    run_dir = tmp_path / "run"
    torch.manual_seed(0)
    detector = create_detector("dinov3_image", {"backbone": {"name": str(tiny_dinov3)}, "image_size": 32})
    detector.calibrator.set(1.0, [0.0, 0.0], method="lbfgs")
    save_detector(detector, run_dir)
    _calibration_set(run_dir)
    export_run(run_dir, run_dir / "submission")  # what the demo does at the end of training

    def submission_matches_run() -> bool:
        model, _ = load_submission(run_dir / "submission", device="cpu")
        run_detector = load_detector(run_dir)
        x = run_detector.example_input(batch_size=2)
        with torch.inference_mode():
            return torch.allclose(run_model(model, x).float(), run_detector(x).float(), atol=1e-4)

    assert submission_matches_run()
    capsys.readouterr()
    assert sweep_main([str(run_dir), "--grid", "0.05"]) == 0  # T = 0.05: logits x 20
    out = capsys.readouterr().out
    assert not submission_matches_run()  # the stale export the note is about
    assert "keeps" in out and f"python -m export {run_dir} --out DIR" in out
    command = next(line for line in out.splitlines() if str(run_dir / "submission") in line)
    assert "demo" in command
    argv = shlex.split(command[command.index("python -m export") + len("python -m export") :])
    assert argv == [str(run_dir), "--out", str(run_dir / "submission")]
    assert export_main(argv) == 0
    assert submission_matches_run()

    # without RUN/submission the note still gives the command, but names no submission
    other = tmp_path / "other"
    other.mkdir()
    _calibration_set(other)
    capsys.readouterr()
    assert sweep_main([str(other), "--grid", "2"]) == 0
    out = capsys.readouterr().out
    assert f"python -m export {other} --out DIR" in out and "submission exists" not in out


def test_export_note_says_whether_the_values_changed(tmp_path) -> None:
    from calibration.sweep import stale_export_note

    (tmp_path / "submission").mkdir()
    (tmp_path / "submission" / "model_config.yaml").write_text("{}")
    old = {"temperature": 1.5, "bias": [0.1, -0.1], "method": "lbfgs"}
    same = {**old, "method": "sweep"}
    changed = stale_export_note(tmp_path, old, {**same, "temperature": 2.0})
    unchanged = stale_export_note(tmp_path, old, same)
    assert "now holds T = 2" in changed and "before: T = 1.5" in changed and "keeps its old calibration" in changed
    assert "unchanged" in unchanged and "keeps its old calibration" not in unchanged
    for note in (changed, unchanged):
        assert f"python -m export {tmp_path} --out {tmp_path / 'submission'}" in note
    assert "now holds" in stale_export_note(tmp_path, None, same)  # no calibration.json before
