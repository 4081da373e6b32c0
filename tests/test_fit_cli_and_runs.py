"""Fit CLI and run directories: --init-from defaults and checks, unusable splits, flags an arch cannot
take, --set, gradient checkpointing, export CLI errors, loading a run without its starting checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from detectors.errors import ConfigError


def fake_finished_run(root: Path, arch: str, modality: str) -> Path:
    """What RunDir.is_finished() and read_config() look at; nothing is trained."""
    root.mkdir(parents=True)
    (root / "config.yaml").write_text(f"arch: {arch}\nmodality: {modality}\n")
    (root / "summary.json").write_text(json.dumps({}))
    (root / "detector.safetensors").write_bytes(b"")
    return root


class Resolved(Exception):
    """Raised by the patched base_layers: the test only needs to see which defaults were read."""


def test_init_from_reads_the_defaults_of_the_runs_arch(tmp_path, monkeypatch):
    import detectors.training.fit as fit_module
    from detectors.training.fit import run_fit
    from detectors.video.fit import DEFAULT_ARCH, VIDEO, VIDEO_ARCHS

    previous = fake_finished_run(tmp_path / "gend_run", "gend", "video")
    assert DEFAULT_ARCH != "gend"  # the case that went wrong: no --arch, the run is not the default arch
    requested = []

    def base_layers(detector_cls, demo):
        requested.append((detector_cls.modality, detector_cls.arch))
        raise Resolved

    monkeypatch.setattr(fit_module, "base_layers", base_layers)
    with pytest.raises(Resolved):
        run_fit(
            "video",
            VIDEO,
            VIDEO_ARCHS,
            DEFAULT_ARCH,
            ["--init-from", str(previous), "--data", str(tmp_path / "data.yaml"), "--output", str(tmp_path / "out")],
        )
    assert requested == [("video", "gend")]  # not ReStraV's data/loss/optim/trainer defaults


def test_init_from_refuses_another_modality_and_architecture_flags(tmp_path):
    import argparse

    from detectors.training.fit import init_from_arch

    image_run = fake_finished_run(tmp_path / "image_run", "dinov3_image", "image")
    with open(image_run / "config.yaml", "a") as handle:
        handle.write("model:\n  backbone: {name: /models/dinov3}\n  tuning: {mode: lora}\n")

    def args(**flags):
        return argparse.Namespace(
            **{
                "init_from": image_run,
                "arch": "dinov3_image",
                "backbone": None,
                "backbone_weights": None,
                "tuning": None,
                **flags,
            }
        )

    assert init_from_arch(args(), "image") == "dinov3_image"
    assert init_from_arch(args(tuning="lora", backbone="/models/dinov3"), "image") == "dinov3_image"  # agree
    with pytest.raises(ConfigError, match="detectors.image.fit"):
        init_from_arch(args(arch="restrav"), "video")
    with pytest.raises(ConfigError, match="--tuning"):  # it used to be ignored silently
        init_from_arch(args(tuning="layernorm"), "image")
    with pytest.raises(ConfigError, match="--backbone"):
        init_from_arch(args(backbone="facebook/dinov2-small"), "image")


@pytest.fixture()
def module(tiny_dinov3):
    from detectors.registry import create_detector
    from detectors.training.module import DetectorModule

    detector = create_detector(
        "dinov3_image",
        {"backbone": {"name": str(tiny_dinov3)}, "image_size": 32, "tuning": {"mode": "frozen"}, "head_hidden": [8]},
    )
    return DetectorModule(detector, loss={"name": "cross_entropy"})


class FakeTrainer:
    world_size = 1

    def __init__(self, sanity_checking: bool) -> None:
        self.sanity_checking = sanity_checking


def test_all_unreadable_validation_split_is_a_clear_error(module):
    module._trainer = FakeTrainer(sanity_checking=True)
    module.validation_step({"skipped": 2}, 0)
    module.on_validation_epoch_end()  # the sanity check sees only a few batches: no verdict yet

    module._trainer = FakeTrainer(sanity_checking=False)
    module.validation_step({"skipped": 4}, 0)
    module.validation_step({"skipped": 3}, 1)
    with pytest.raises(ConfigError, match=r"no readable sample in the whole validation split \(7 unreadable"):
        module.on_validation_epoch_end()

    # one readable batch is enough: metrics as usual, and the per-epoch count starts again
    module.validation_step({"skipped": 1}, 0)
    module.detector.eval()
    batch = {
        "x": torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8),
        "label": torch.tensor([0, 1]),
        "class_index": torch.tensor([0, 1]),
        "skipped": 0,
    }
    module.log = lambda *args, **kwargs: None  # no trainer loop to log into
    module.validation_step(batch, 1)
    module.on_validation_epoch_end()
    assert module.last_val_metrics["n"] == 2 and module._val_skipped == 0
    assert module.skipped_samples["val"] == 2 + 7 + 1
    module._trainer = None


def test_probe_on_an_all_unreadable_train_split_is_a_clear_error(tiny_dinov3, tmp_path):
    from detectors.image.probe import run_probe

    for name in ("real", "fake"):
        (tmp_path / name).mkdir()
        for i in range(6):
            (tmp_path / name / f"{i}.png").write_bytes(b"")  # zero-byte files: every sample unreadable
    data = tmp_path / "data.yaml"
    data.write_text(
        "datasets:\n"
        "  - {name: real, path: real, modality: image, media_type: real}\n"
        "  - {name: fake, path: fake, modality: image, media_type: synthetic}\n"
    )
    with pytest.raises(ConfigError, match=r"no readable image in the train split \(8 unreadable\)"):
        run_probe(data, str(tiny_dinov3), tmp_path / "probe", image_size=32, num_workers=0)


def test_a_train_split_with_one_class_only_is_refused(tmp_path, capsys):
    from PIL import Image

    from detectors.image.fit import IMAGE
    from detectors.training.fit import run_fit

    for i in range(12):
        (tmp_path / "fake").mkdir(exist_ok=True)
        Image.new("RGB", (8, 8), (i, 0, 0)).save(tmp_path / "fake" / f"{i}.png")
    (tmp_path / "data.yaml").write_text(
        "datasets:\n  - {name: gen, path: fake, modality: image, media_type: synthetic}\n"
    )
    with pytest.raises(SystemExit) as exit_info:
        run_fit(
            "image",
            IMAGE,
            ["dinov3_image"],
            "dinov3_image",
            ["--data", str(tmp_path / "data.yaml"), "--output", str(tmp_path / "run")],
        )
    assert exit_info.value.code == 2
    assert "fake samples only" in capsys.readouterr().err
    assert not (tmp_path / "run" / "split.csv").exists()  # nothing written for an unusable data set


def test_export_cli_reports_a_non_empty_output_directory(tmp_path, capsys):
    from detectors.base import save_detector
    from detectors.registry import create_detector
    from export.__main__ import main as export_main

    detector = create_detector(
        "cakelens", {"crop": 64, "width": 8, "channel_step": 4, "num_blocks": 2, "hidden": [8, 8, 8]}
    )
    save_detector(detector, tmp_path / "run")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "notes.txt").write_text("someone's file")
    assert export_main([str(tmp_path / "run"), "--out", str(tmp_path / "out")]) == 2
    assert "not empty" in capsys.readouterr().err
    assert (tmp_path / "out" / "notes.txt").read_text() == "someone's file"  # never lost


def test_backbone_flags_for_an_arch_without_a_backbone_are_errors():
    from detectors.training.fit import build_parser, resolve_config
    from detectors.video.fit import VIDEO, VIDEO_ARCHS

    parser = build_parser("video", VIDEO_ARCHS, "restrav")
    for flags in (["--backbone", "facebook/dinov2-small"], ["--backbone-weights", "random"]):
        with pytest.raises(ConfigError, match=f"{flags[0]}.*cakelens has no"):
            resolve_config(parser.parse_args(["--arch", "cakelens", *flags]), "video", VIDEO, True)


def test_set_dotted_through_a_plain_value_names_the_key():
    from detectors.config import set_dotted

    config = {"trainer": {"max_epochs": 3}, "loss": "focal_brier"}
    set_dotted(config, "trainer.max_epochs", 5)
    assert config["trainer"] == {"max_epochs": 5}
    with pytest.raises(ConfigError, match=r"loss\.gamma.*loss holds 'focal_brier', not a mapping"):
        set_dotted(config, "loss.gamma", 2.0)


def test_unknown_image_feature_mode_is_a_config_error(tiny_dinov3):
    from detectors.registry import create_detector

    with pytest.raises(ConfigError, match="model.features"):
        create_detector("dinov3_image", {"backbone": {"name": str(tiny_dinov3)}, "features": "patch"})


@pytest.mark.parametrize("arch, own_switch", [("cakelens", True), ("gend", False)])
def test_gradient_checkpointing_flag_reaches_the_detector(arch, own_switch, tmp_path):
    """--gradient-checkpointing sets CakeLens' own switch, and a backbone detector's tuning."""
    from detectors.registry import create_detector
    from detectors.training.fit import build_parser, resolve_config
    from detectors.video.fit import VIDEO, VIDEO_ARCHS

    parser = build_parser("video", VIDEO_ARCHS, "restrav")
    config = resolve_config(parser.parse_args(["--arch", arch, "--gradient-checkpointing"]), "video", VIDEO, True)
    model = config.model
    assert (model.gradient_checkpointing if own_switch else model.tuning.gradient_checkpointing) is True
    if own_switch:
        detector = create_detector(arch, model)
        assert detector.cnn.gradient_checkpointing
        detector.set_gradient_checkpointing(False)  # what --init-from uses on a loaded run
        assert not detector.cnn.gradient_checkpointing and not detector.config_dict()["gradient_checkpointing"]


def test_a_run_loads_without_the_checkpoint_it_started_from(tmp_path):
    from detectors.base import load_detector, save_detector
    from detectors.registry import create_detector
    from detectors.video.cakelens import CakeLensConfig, CakeLensV5

    small = {"crop": 64, "width": 8, "channel_step": 4, "num_blocks": 2, "hidden": [8, 8, 8]}
    start = tmp_path / "cakelens-start.pth"
    original = CakeLensV5(CakeLensConfig(crop=64, width=8, channel_step=4, num_blocks=2, hidden=(8, 8, 8)))
    torch.save({"model_state_dict": original.state_dict()}, start)
    detector = create_detector("cakelens", {**small, "weights": str(start)})
    with torch.no_grad():  # "training" moved the weights away from the starting checkpoint
        detector.cnn.seq.input_conv0.bias.add_(1.0)
    save_detector(detector, tmp_path / "run")
    start.unlink()  # e.g. the run was copied to another machine
    loaded = load_detector(tmp_path / "run")
    torch.testing.assert_close(loaded.cnn.seq.input_conv0.bias, detector.cnn.seq.input_conv0.bias)
    assert loaded.config.weights == str(start)  # provenance kept


def test_demo_evaluation_yaml_survives_moving_the_run(tmp_path):
    """Manifests of the run's own data are relative, so a renamed run directory still evaluates."""
    from detectors.data.catalog import MediaItem, load_items
    from detectors.training.demo import write_split_dataset_yaml

    run, outside = tmp_path / "run", tmp_path / "elsewhere.png"
    (run / "demo_data").mkdir(parents=True)
    for name in ("a.png", "b.png"):
        (run / "demo_data" / name).write_bytes(b"x")
    outside.write_bytes(b"x")
    items = [
        MediaItem(str(run / "demo_data" / "a.png"), 0, "real", "demo", "image", split="val"),
        MediaItem(str(run / "demo_data" / "b.png"), 1, "synthetic", "demo-fake", "image", split="val"),
        MediaItem(str(outside), 1, "synthetic", "demo-fake", "image", split="val"),
        MediaItem(str(run / "demo_data" / "a.png"), 0, "real", "demo", "image", split="train"),
    ]
    write_split_dataset_yaml(items, "val", run / "evaluation" / "val.yaml", relative_to=run)
    moved = tmp_path / "renamed"
    run.rename(moved)
    loaded = sorted(Path(item.path) for item in load_items(moved / "evaluation" / "val.yaml"))
    assert loaded == sorted([moved / "demo_data" / "a.png", moved / "demo_data" / "b.png", outside.resolve()])


def test_runs_saved_before_the_networks_moved_under_net_still_load(tmp_path, tiny_dinov3):
    """detector.safetensors of earlier versions (head.*, backbone.*, CakeLens' net.seq.*) load."""
    from safetensors.torch import load_file, save_file

    from detectors.base import load_detector, save_detector
    from detectors.registry import create_detector

    cases = {
        "image": (
            create_detector("dinov3_image", {"backbone": {"name": str(tiny_dinov3)}, "image_size": 32}),
            lambda key: key.removeprefix("net."),
        ),
        "cakelens": (
            create_detector("cakelens", {"crop": 32, "width": 4, "channel_step": 2, "num_blocks": 1, "hidden": [8]}),
            lambda key: key.replace("net.cnn.", "net."),
        ),
    }
    for name, (detector, old_name) in cases.items():
        with torch.no_grad():
            for parameter in detector.parameters():
                parameter.add_(torch.rand_like(parameter))
        run = save_detector(detector, tmp_path / name)
        weights = run / "detector.safetensors"
        old = {old_name(key): value for key, value in load_file(str(weights)).items()}
        assert set(old) != set(detector.state_dict())  # really the earlier layout
        save_file(old, str(weights))
        loaded = load_detector(run)
        for key, value in detector.state_dict().items():
            torch.testing.assert_close(loaded.state_dict()[key], value, msg=f"{name}: {key}")
