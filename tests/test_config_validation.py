"""Config validation in the fit command: unknown keys and wrongly typed values are ConfigErrors that
name the key, where it was set and a close match, raised before any backbone or data is built; every
shipped config validates; Lightning's INFO lines are printed once."""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import sys
import textwrap
import typing
from pathlib import Path

import pytest

from detectors.config import CONFIG_ROOT, convert, deep_merge, flatten, load_yaml, to_dict
from detectors.errors import ConfigError

REPO = Path(__file__).resolve().parent.parent


class ExpensiveStepReached(Exception):
    """Raised by the patched demo writer / detector builder: validation let the run go on."""


@pytest.fixture()
def guarded(monkeypatch):
    """``fit`` for the video CLI where writing data or building a detector raises ExpensiveStepReached."""
    import detectors.registry
    from detectors.training import fit as fit_module
    from detectors.video.fit import VIDEO, VIDEO_ARCHS

    reached = []

    def expensive(*args, **kwargs):
        reached.append(args)
        raise ExpensiveStepReached

    monkeypatch.setattr(detectors.registry, "create_detector", expensive)
    monkeypatch.setattr("detectors.backbones.build_backbone", expensive)
    support = dataclasses.replace(VIDEO, write_demo=expensive)

    def run(argv: list[str]) -> None:
        parser = fit_module.build_parser("video", VIDEO_ARCHS, "restrav")
        support.add_arguments(parser)
        fit_module.fit(parser.parse_args(argv), "video", support)

    run.reached = reached
    return run


WALKTHROUGH = [
    # (argv, key, text in the problem)
    (["--set", "data.imag_size=64"], "data.imag_size", "did you mean 'model.image_size'"),
    (["--set", "foo=1"], "foo", "known top-level keys: arch, calibration, data"),
    (["--set", "optim.lrr=1"], "optim.lrr", "did you mean 'optim.lr'"),
    (["--set", "calibration.methd=x"], "calibration.methd", "known calibration keys: fit"),
    (["--set", "data.batch_size=abc"], "data.batch_size", "expected an integer"),
    (["--set", "trainer.max_epoch=3"], "trainer.max_epoch", "did you mean 'trainer.max_epochs'"),
    (["--set", "trainer.max_epochs=abc"], "trainer.max_epochs", "expected an integer or null"),
    (["--set", "trainer.max_epochs=0"], "trainer.max_epochs", "must be >= 1"),
    (["--set", "optim.lr=-1"], "optim.lr", "must be > 0"),
    (["--set", "optim.lr=nan"], "optim.lr", "must be a finite number"),
    (["--set", "split.val=1.5"], "split.val", "must be >= 0 and < 1"),
    (["--set", "model.image_size=0"], "model.image_size", "must be >= 1"),
    (["--set", "model.embedding=mean"], "model.embedding", "expected one of 'tokens', 'cls'"),
    (["--set", "data.sampling=middle"], "data.sampling", "expected one of 'benchmark', 'window', 'uniform', 'random'"),
    (["--set", "loss.gama=1"], "loss.gama", "did you mean 'loss.gamma'"),
    (["--set", "split.val=lots"], "split.val", "expected a number"),
    (["--set", "data.feature_cache=1"], "data.feature_cache", "expected true or false"),
    (["--set", "seed=[1]"], "seed", "expected an integer"),
    (["--set", "trainer.callbacks=[]"], "trainer.callbacks", "owned by the run directory"),
    (["--set", "data=5"], "data", "expected a mapping, got 5"),
    (["--set", "data.num_frames=8"], "data.num_frames", "did you mean 'model.num_frames'"),
]


@pytest.mark.parametrize("argv, key, text", WALKTHROUGH, ids=[case[1] for case in WALKTHROUGH])
def test_walkthrough_mistakes_fail_before_anything_is_built(guarded, tmp_path, argv, key, text):
    with pytest.raises(ConfigError) as info:
        guarded(["--arch", "restrav", "--output", str(tmp_path / "run"), *argv])
    error = info.value
    assert (error.where, error.file) == (key, "--set")
    assert text in error.problem, error.problem
    assert guarded.reached == []  # no demo data written, no detector / backbone built
    assert not (tmp_path / "run").exists()


def test_the_same_mistakes_in_a_config_file_name_the_file(guarded, tmp_path):
    config = tmp_path / "mine.yaml"
    config.write_text("data:\n  batch_size: 8\n  imag_size: 64\n")
    with pytest.raises(ConfigError) as info:
        guarded(["--config", str(config), "--output", str(tmp_path / "run")])
    assert (info.value.file, info.value.where) == (str(config), "data.imag_size")
    assert str(config) in str(info.value) and "model.image_size" in str(info.value)

    config.write_text("optim: {lr: 1.0e-3, scheduler: none}\ntrainer: {max_epochs: ten}\n")
    with pytest.raises(ConfigError) as info:
        guarded(["--config", str(config), "--output", str(tmp_path / "run")])
    assert (info.value.file, info.value.where) == (str(config), "trainer.max_epochs")
    # a later --set wins, and so it is the source named
    with pytest.raises(ConfigError) as info:
        guarded(["--config", str(config), "--set", "trainer.max_epochs=[2]", "--output", str(tmp_path / "run")])
    assert (info.value.file, info.value.where) == ("--set", "trainer.max_epochs")
    assert guarded.reached == []


def test_model_typos_are_caught_early_with_their_source(guarded, tmp_path):
    with pytest.raises(ConfigError) as info:
        guarded(["--arch", "gend", "--set", "model.tuning.lora.rank=4", "--output", str(tmp_path / "run")])
    assert (info.value.file, info.value.where) == ("--set", "model.tuning.lora.rank")
    assert "known model.tuning.lora keys: alpha, dropout, r, targets" in info.value.problem
    with pytest.raises(ConfigError) as info:
        guarded(["--arch", "restrav", "--set", "model.hiden=[8]", "--output", str(tmp_path / "run")])
    assert info.value.file == "--set" and "did you mean 'model.hidden'" in info.value.problem
    assert guarded.reached == []


def test_flags_an_arch_does_not_read_and_settings_of_another_arch(guarded, tmp_path):
    # CakeLens reads no frame cache: --cache-dir used to be ignored silently
    with pytest.raises(ConfigError) as info:
        guarded(["--arch", "cakelens", "--cache-dir", str(tmp_path / "cache"), "--output", str(tmp_path / "run")])
    assert (info.value.file, info.value.where) == ("--cache-dir", "data.cache_dir")
    assert "cakelens does not use this setting" in info.value.problem
    with pytest.raises(ConfigError) as info:  # CakeLens' frameset size is model.frameset_size
        guarded(["--arch", "cakelens", "--num-frames", "9", "--output", str(tmp_path / "run")])
    assert (info.value.file, info.value.where) == ("--num-frames", "data.num_frames")
    # GenD samples its own frames; the key belongs to ReStraV, which the message says
    with pytest.raises(ConfigError) as info:
        guarded(["--arch", "gend", "--sampling", "window", "--output", str(tmp_path / "run")])
    assert info.value.where == "data.sampling" and "setting of restrav" in info.value.problem
    assert guarded.reached == []


def test_a_config_of_another_arch_is_refused(guarded, tmp_path):
    config = tmp_path / "gend_run_config.yaml"
    config.write_text("arch: gend\nmodality: video\n")
    with pytest.raises(ConfigError, match="--arch gend") as info:
        guarded(["--config", str(config), "--output", str(tmp_path / "run")])
    assert (info.value.file, info.value.where) == (str(config), "arch")
    config.write_text("arch: restrav\nmodality: video\nseed: 3\n")  # a run's own config.yaml: fine
    with pytest.raises(ExpensiveStepReached):
        guarded(["--config", str(config), "--output", str(tmp_path / "run2")])


def test_valid_settings_of_every_section_pass_and_reach_the_run(guarded, tmp_path):
    from detectors.training.fit import build_parser, resolve_config
    from detectors.video.fit import VIDEO, VIDEO_ARCHS

    argv = [
        "--arch",
        "gend",
        "--set",
        "data.batch_size=8",
        "--set",
        "optim.lr=1e-3",
        "--set",
        "split.val=0.2",
        "--set",
        "calibration.fit=false",
        "--set",
        "seed=3",
        "--set",
        "trainer.max_epochs=2",
        "--set",
        "loss.gamma=1",
        "--set",
        "model.image_size=64",
        "--set",
        "optim.restart_period=5",
        "--set",
        "data.cache_dir=/tmp/frames",
        "--set",
        "split.seed=7",
        "--precision",
        "16",
        "--limit-train-batches",
        "0.5",
        "--set",
        "trainer.gradient_clip_val=1e-2",
    ]
    parser = build_parser("video", VIDEO_ARCHS, "restrav")
    VIDEO.add_arguments(parser)
    config = resolve_config(parser.parse_args(argv), "video", VIDEO, demo=False)
    assert config.data.batch_size == 8 and to_dict(config.split) == {"val": 0.2, "calibration": 0.15, "seed": 7}
    # PyYAML reads 1e-3 as a string; a float setting gets the number
    assert config.optim.lr == 0.001 and isinstance(config.optim.lr, float)
    assert config.trainer.gradient_clip_val == 0.01
    assert config.trainer.precision == "16" and config.trainer.limit_train_batches == 0.5
    assert (config.calibration.fit, config.seed, config.loss.gamma) == (False, 3, 1.0)
    assert config.model.image_size == 64 and config.optim.restart_period == 5
    # the same command goes on to the expensive steps (the guard above is really in the way)
    with pytest.raises(ExpensiveStepReached):
        guarded([*argv, "--output", str(tmp_path / "run")])
    assert len(guarded.reached) == 1


def _arches():
    from detectors.registry import detector_class, list_detectors

    return [(detector_class(arch).modality, arch) for arch in list_detectors()]


@pytest.mark.parametrize("modality, arch", _arches(), ids=[arch for _, arch in _arches()])
@pytest.mark.parametrize("demo", [False, True], ids=["defaults", "demo"])
def test_every_shipped_config_validates_and_only_overrides(modality, arch, demo):
    """The resolved config is the dataclass defaults with the arch's YAML (and demo section) on top;
    the YAML never restates a default (it only overrides: the defaults live in one place)."""
    import importlib

    from detectors.registry import detector_class
    from detectors.settings import run_config_class
    from detectors.training.fit import build_parser, resolve_config

    module = importlib.import_module(f"detectors.{modality}.fit")
    support = next(value for value in vars(module).values() if type(value).__name__ == "ModalitySupport")
    parser = build_parser(modality, [arch], arch)
    if support.add_arguments:
        support.add_arguments(parser)
    config = to_dict(resolve_config(parser.parse_args([]), modality, support, demo=demo))
    defaults = to_dict(run_config_class(detector_class(arch))())
    shipped = load_yaml(CONFIG_ROOT / modality / f"{arch}.yaml")
    demo_overrides = shipped.pop("demo", {})
    for key, value in flatten(shipped).items():
        assert flatten(defaults).get(key, object()) != value, f"{arch}.yaml restates the default of {key}"
    expected = deep_merge(defaults, shipped)
    for key, value in flatten(demo_overrides).items():
        assert flatten(expected).get(key, object()) != value, f"{arch}.yaml demo restates {key}"
    if demo:
        expected = deep_merge(expected, demo_overrides)
    assert flatten(config) == flatten(expected)


@pytest.mark.parametrize(
    "value, hint, ok",
    [
        (3, float, True),
        (3.5, int, False),
        (True, int, False),
        ("abc", int, False),
        (None, int, False),
        (None, int | None, True),
        ("anything", typing.Any, True),
        ([1], list[float], True),
        ("x", list[int], False),
        ("yes", bool, False),
        (False, bool, True),
        (1, str, False),
        ({"a": 1}, dict[str, typing.Any], True),
        ("1e-3", float, True),
        ("cls", typing.Literal["cls", "mean"], True),
        ("CLS", typing.Literal["cls"], False),
        (2, typing.Literal[2, 3], True),
        (2.0, typing.Literal[2, 3], False),
        ([0.9, 0.999], tuple[float, float], True),
        ([0.9], tuple[float, float], False),
    ],
)
def test_values_are_checked_against_the_annotation(value, hint, ok):
    if ok:
        convert(value, hint, "key")
    else:
        with pytest.raises(ConfigError, match="key: expected"):
            convert(value, hint, "key")


def test_schema_dump_lists_every_setting_with_type_value_and_help(capsys):
    from detectors.config import main

    assert main(["restrav", "--section", "data"]) == 0
    out = capsys.readouterr().out
    assert "data.feature_batch_size" in out and "videos per batch while extracting features" in out
    assert re.search(r"^data\.num_workers +\* 0 +int$", out, re.M)  # set by configs/video/restrav.yaml
    assert re.search(r"^data\.batch_size +32 +int$", out, re.M)  # a library default
    assert main(["cakelens", "--demo", "--section", "model"]) == 0
    assert re.search(r"^model\.crop +\* 64 +int$", capsys.readouterr().out, re.M)  # the demo's size


def test_lightning_info_lines_appear_once_and_ours_stay_visible():
    script = textwrap.dedent("""
        import logging
        from detectors.training.fit import configure_logging
        configure_logging()
        import lightning as L
        L.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False)
        logging.getLogger("detectors.fit").info("our info line")
        logging.getLogger("detectors.video").warning("our warning line")
        logging.getLogger("some.library").warning("a library warning")
    """)
    result = subprocess.run(
        [sys.executable, "-c", script],
        check=False,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == 0, result.stderr
    output = result.stdout + result.stderr
    assert output.count("GPU available") == 1, output
    for line in ("our info line", "our warning line", "a library warning"):
        assert output.count(line) == 1, output
