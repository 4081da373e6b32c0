"""A corpus of bad invocations of every command (fit, export, export.check, evaluate, detect,
calibration.sweep, detectors.config): each must end with exit status 2 and one line on stderr that
names the file or key and the problem, never a traceback."""

from __future__ import annotations

import io
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest
import yaml


@pytest.fixture(scope="module")
def ws(tmp_path_factory, tiny_dinov3) -> dict[str, Path]:
    """A finished (untrained) image run, its export, a dataset and assorted bad files."""
    from detectors.base import save_detector
    from detectors.image.demo import write_demo_images
    from detectors.registry import create_detector
    from export.__main__ import export_run

    root = tmp_path_factory.mktemp("bad_invocations")
    run = root / "run"
    detector = create_detector(
        "dinov3_image", {"backbone": {"name": str(tiny_dinov3)}, "image_size": 32, "tuning": {"mode": "frozen"}}
    )
    save_detector(detector, run)
    (run / "summary.json").write_text("{}")
    submission = root / "submission"
    export_run(run, submission)
    data = write_demo_images(root / "images", n_per_class=4, size=(40, 48))

    def write(name: str, content: str | bytes) -> Path:
        path = root / name
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
        return path

    files = {
        "run": run,
        "submission": submission,
        "data": data,
        "root": root,
        "binary": write("binary.yaml", bytes(range(256)) * 4),
        "latin1": write("latin1.yaml", "datasets:\n  - name: caf\xe9\n".encode("latin-1")),
        "nested": write("nested.yaml", "a: " + "[" * 5000 + "]" * 5000 + "\n"),
        "bomb": write(
            "bomb.yaml",
            "a: &a [x, x, x, x, x, x, x, x, x]\n"
            + "".join(
                f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, "
                f"*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}]\n"
                for i in range(9)
            ),
        ),
        "huge": write("huge.yaml", "# " + "x" * (2 << 20) + "\n"),
        "list": write("list.yaml", "- a\n- b\n"),
        "bad_syntax": write("bad_syntax.yaml", "model: {image_size: 32\n"),
        "no_media_type": write(
            "no_media_type.yaml",
            yaml.safe_dump({"datasets": [{"name": "x", "path": str(root / "images"), "modality": "image"}]}),
        ),
        "a_file": write("a_file.txt", "not a directory"),
        "space": write(
            "space.yaml",
            "fit: {modality: image, arch: flexcnn}\nparams:\n  optim.lr: {low: 1.0e-4, high: 1.0e-2, log: true}\n",
        ),
        "space_bad_key": write(
            "space_bad_key.yaml", "fit: {arch: flexcnn}\nparams:\n  model.fliters: {low: 8, high: 64}\n"
        ),
        "space_bad_range": write(
            "space_bad_range.yaml", "fit: {arch: flexcnn}\nparams:\n  model.dropout: {low: 0.1, high: 1.5}\n"
        ),
        "space_bad_type": write(
            "space_bad_type.yaml", "fit: {arch: flexcnn}\nparams:\n  model.n_layers: {low: 1, high: 2.5}\n"
        ),
        "not_zip": write("not_a_submission.zip", b"PK\x03\x04 truncated"),
        "empty_backbone": root / "empty_backbone",
        "not_a_run": root / "not_a_run",
        "non_export": root / "non_export",
    }
    files["empty_backbone"].mkdir()
    files["not_a_run"].mkdir()
    (files["not_a_run"] / "notes.txt").write_text("x")
    files["non_export"].mkdir()
    (files["non_export"] / "notes.txt").write_text("someone's file")
    broken = root / "broken_run"
    broken.mkdir()
    for name in ("detector.yaml", "calibration.json", "summary.json"):
        (broken / name).write_bytes((run / name).read_bytes())
    weights = bytearray((run / "detector.safetensors").read_bytes())
    (broken / "detector.safetensors").write_bytes(bytes(weights[: len(weights) // 3]))
    files["broken_run"] = broken
    unknown_arch = root / "unknown_arch_run"
    unknown_arch.mkdir()
    (unknown_arch / "detector.yaml").write_text("arch: no_such_arch\nmodality: image\nmodel: {}\n")
    (unknown_arch / "detector.safetensors").write_bytes((run / "detector.safetensors").read_bytes())
    files["unknown_arch_run"] = unknown_arch
    bad_yaml_run = root / "bad_yaml_run"
    bad_yaml_run.mkdir()
    (bad_yaml_run / "detector.yaml").write_text("arch: [dinov3_image\n")
    (bad_yaml_run / "detector.safetensors").write_bytes((run / "detector.safetensors").read_bytes())
    files["bad_yaml_run"] = bad_yaml_run
    bad_resize = root / "bad_resize"
    bad_resize.mkdir()
    for path in submission.iterdir():
        (bad_resize / path.name).write_bytes(path.read_bytes())
    config = yaml.safe_load((bad_resize / "model_config.yaml").read_text())
    config["preprocessing"]["resize"] = [0, -5]
    (bad_resize / "model_config.yaml").write_text(yaml.safe_dump(config))
    files["bad_resize"] = bad_resize
    return files


def _fit(argv: list[str]) -> int:
    from detectors.image.fit import IMAGE
    from detectors.registry import list_detectors
    from detectors.training.fit import run_fit

    run_fit("image", IMAGE, list_detectors("image"), "dinov3_image", argv)
    return 0


def _export(argv: list[str]) -> int:
    from export.__main__ import main

    return main(argv)


def _check(argv: list[str]) -> int:
    from export.check import main

    return main(argv)


def _evaluate(argv: list[str]) -> int:
    from detectors.evaluate import main

    return main(argv)


def _detect(argv: list[str]) -> int:
    from detectors.detect import main

    return main(argv)


def _sweep(argv: list[str]) -> int:
    from calibration.sweep import main

    return main(argv)


def _hpsweep(argv: list[str]) -> int:
    from detectors.sweep.__main__ import main

    return main(argv)


def _config(argv: list[str]) -> int:
    from detectors.config import main

    return main(argv)


def _baseline(argv: list[str]) -> int:
    from detectors.image.baseline import main

    return main(argv)


def _compare(argv: list[str]) -> int:
    from detectors.compare import main

    return main(argv)


COMMANDS = {
    "fit": _fit,
    "export": _export,
    "check": _check,
    "evaluate": _evaluate,
    "detect": _detect,
    "sweep": _sweep,
    "config": _config,
    "baseline": _baseline,
    "compare": _compare,
    "hpsweep": _hpsweep,
}

# (command, argv with {placeholders} from the workspace, text the one-line error must contain)
CASES = [
    # fit: settings
    ("fit", ["--data", "{data}", "--set", "model.image_size=abc", "--output", "{root}/f1"], "model.image_size"),
    ("fit", ["--data", "{data}", "--set", "model.image_size=0", "--output", "{root}/f2"], "must be >= 1"),
    ("fit", ["--data", "{data}", "--set", "split.val=1.5", "--output", "{root}/f3"], "split.val"),
    ("fit", ["--data", "{data}", "--batch-size", "0", "--output", "{root}/f4"], "data.batch_size"),
    ("fit", ["--data", "{data}", "--lr", "-1", "--output", "{root}/f5"], "optim.lr"),
    ("fit", ["--data", "{data}", "--lr", "nan", "--output", "{root}/f6"], "finite"),
    ("fit", ["--data", "{data}", "--max-epochs", "-1", "--output", "{root}/f7"], "trainer.max_epochs"),
    ("fit", ["--data", "{data}", "--num-workers", "-1", "--output", "{root}/f8"], "data.num_workers"),
    ("fit", ["--data", "{data}", "--set", "foo=1", "--output", "{root}/f9"], "unknown key"),
    ("fit", ["--data", "{data}", "--set", "data=5", "--output", "{root}/f10"], "expected a mapping"),
    ("fit", ["--data", "{data}", "--set", "loss.name=bogus", "--output", "{root}/f11"], "loss.name"),
    ("fit", ["--data", "{data}", "--set", "trainer.callbacks=[]", "--output", "{root}/f12"], "owned by the run"),
    ("fit", ["--data", "{data}", "--set", "model.tuning.lora.r=0", "--output", "{root}/f13"], "lora.r"),
    ("fit", ["--data", "{data}", "--precision", "bogus", "--output", "{root}/f14"], "trainer.precision"),
    ("fit", ["--data", "{data}", "--set", "optim.betas=[0.9]", "--output", "{root}/f15"], "optim.betas"),
    ("fit", ["--data", "{data}", "--set", "model.head_hidden=[0]", "--output", "{root}/f16"], "model.head_hidden"),
    ("fit", ["--data", "{data}", "--set", "model.features=patch", "--output", "{root}/f17"], "model.features"),
    ("fit", ["--data", "{data}", "--set", "seed=-3", "--output", "{root}/f18"], "seed"),
    ("fit", ["--data", "{data}", "--set", "KEYWITHOUTVALUE", "--output", "{root}/f19"], "KEY=VALUE"),
    # fit: files
    ("fit", ["--data", "{root}/missing.yaml", "--output", "{root}/f20"], "missing.yaml"),
    ("fit", ["--data", "{binary}", "--output", "{root}/f21"], "binary.yaml"),
    ("fit", ["--data", "{latin1}", "--output", "{root}/f22"], "latin1.yaml"),
    ("fit", ["--data", "{no_media_type}", "--output", "{root}/f23"], "media_type"),
    ("fit", ["--data", "{data}", "--config", "{nested}", "--output", "{root}/f24"], "nested.yaml"),
    ("fit", ["--data", "{data}", "--config", "{bomb}", "--output", "{root}/f25"], "bomb.yaml"),
    ("fit", ["--data", "{data}", "--config", "{huge}", "--output", "{root}/f26"], "huge.yaml"),
    ("fit", ["--data", "{data}", "--config", "{list}", "--output", "{root}/f27"], "list.yaml"),
    ("fit", ["--data", "{data}", "--config", "{bad_syntax}", "--output", "{root}/f28"], "bad_syntax.yaml"),
    ("fit", ["--data", "{data}", "--config", "{root}/missing_config.yaml", "--output", "{root}/f29"], "missing_config"),
    (
        "fit",
        ["--data", "{data}", "--backbone", "{root}/no_such_backbone", "--output", "{root}/f30"],
        "no_such_backbone",
    ),
    ("fit", ["--data", "{data}", "--backbone", "{empty_backbone}", "--output", "{root}/f31"], "empty_backbone"),
    ("fit", ["--data", "{data}", "--init-from", "{root}/no_such_run", "--output", "{root}/f32"], "no_such_run"),
    ("fit", ["--data", "{data}", "--init-from", "{not_a_run}", "--output", "{root}/f33"], "not_a_run"),
    ("fit", ["--data", "{data}", "--output", "{a_file}/run"], "a_file.txt"),
    ("fit", ["--data", "{data}", "--tuning", "bogus", "--output", "{root}/f35"], "--tuning"),
    ("fit", ["--data", "{data}", "--arch", "no_such_arch", "--output", "{root}/f36"], "--arch"),
    ("fit", ["--data", "{data}", "--batch-size", "many"], "--batch-size"),
    # export
    ("export", ["{root}/no_such_run", "--out", "{root}/e1"], "no_such_run"),
    ("export", ["{not_a_run}", "--out", "{root}/e2"], "detector.yaml"),
    ("export", ["{broken_run}", "--out", "{root}/e3"], "detector.safetensors"),
    ("export", ["{unknown_arch_run}", "--out", "{root}/e4"], "no_such_arch"),
    ("export", ["{bad_yaml_run}", "--out", "{root}/e5"], "detector.yaml"),
    ("export", ["{run}", "--out", "{a_file}/sub"], "a_file.txt"),
    ("export", ["{run}", "--out", "{non_export}"], "non_export"),
    ("export", ["{run}", "--out", "{root}/e8", "--dtype", "fp8"], "--dtype"),
    ("export", ["{run}"], "--out"),
    # export.check
    ("check", ["{root}/no_such_submission"], "no_such_submission"),
    ("check", ["{submission}", "--batch-size", "0"], "--batch-size"),
    # evaluate
    ("evaluate", ["--model", "{root}/no_such_model", "--data", "{data}", "--output", "{root}/v1"], "no_such_model"),
    ("evaluate", ["--model", "{submission}", "--data", "{root}/missing.yaml", "--output", "{root}/v2"], "missing.yaml"),
    ("evaluate", ["--model", "{submission}", "--data", "{bad_syntax}", "--output", "{root}/v3"], "bad_syntax.yaml"),
    (
        "evaluate",
        ["--model", "{submission}", "--data", "{data}", "--output", "{root}/v4", "--aug-per-dataset", "-1"],
        "--aug-per-dataset",
    ),
    ("evaluate", ["--model", "{submission}", "--data", "{data}", "--output", "{root}/v5", "--seed", "abc"], "--seed"),
    (
        "evaluate",
        ["--model", "{submission}", "--data", "{data}", "--output", "{root}/v6", "--holdout-share", "2"],
        "--holdout-share",
    ),
    ("evaluate", ["--model", "{submission}", "--data", "{data}", "--output", "{a_file}"], "a_file.txt"),
    (
        "evaluate",
        ["--model", "{submission}", "--data", "{data}", "--output", "{root}/v8", "--device", "gpu7"],
        "--device",
    ),
    (
        "evaluate",
        ["--model", "{submission}", "--data", "{data}", "--output", "{root}/v9", "--batch-size", "0"],
        "--batch-size",
    ),
    ("evaluate", ["--model", "{bad_resize}", "--data", "{data}", "--output", "{root}/v10"], "resize"),
    ("evaluate", ["--model", "{not_zip}", "--data", "{data}", "--output", "{root}/v11"], "not_a_submission.zip"),
    # baseline (an HF classifier) and compare
    ("baseline", ["--model", "{root}/no_such_model", "--data", "{data}", "--output", "{root}/b1"], "no_such_model"),
    (
        "baseline",
        ["--model", "{root}/no_such_model", "--data", "{data}", "--output", "{root}/b2", "--batch-size", "0"],
        "--batch-size",
    ),
    (
        "baseline",
        ["--model", "{root}/no_such_model", "--data", "{data}", "--output", "{root}/b3", "--device", "gpu7"],
        "--device",
    ),
    (
        "baseline",
        ["--model", "{root}/no_such_model", "--data", "{data}", "--output", "{root}/b4", "--calibration-share", "2"],
        "--calibration-share",
    ),
    ("compare", ["{root}/no_such_run"], "no_such_run"),
    ("compare", ["{not_a_run}", "--output", "{root}/c2"], "neither a run directory"),
    ("compare", ["{run}", "{run}", "--names", "one", "--output", "{root}/c3"], "--names"),
    # detect
    ("detect", ["{a_file}", "--run", "{root}/no_such_run"], "no_such_run"),
    ("detect", ["{a_file}", "--model", "{root}/no_such_model"], "no_such_model"),
    ("detect", ["--run", "{run}"], "arguments are required"),
    ("detect", ["{a_file}", "--run", "{run}", "--device", "gpu7"], "--device"),
    ("detect", ["{a_file}", "--run", "{run}", "--batch-size", "0"], "--batch-size"),
    ("detect", ["{a_file}", "--run", "{run}", "--num-workers", "-1"], "--num-workers"),
    ("detect", ["{a_file}", "--run", "{run}", "--model", "{submission}"], "not allowed with"),
    ("detect", ["{a_file}", "--model", "{bad_resize}"], "resize"),
    ("detect", ["{a_file}", "--run", "{broken_run}"], "detector.safetensors"),
    # calibration.sweep, detectors.config
    ("sweep", ["{root}/no_such_run"], "no_such_run"),
    ("sweep", ["{run}", "--grid", "abc"], "--grid"),
    ("config", ["no_such_arch"], "no_such_arch"),
    # detectors.sweep (hyperparameter search): every problem found before the first trial
    ("hpsweep", ["{bad_syntax}", "--data", "{data}", "--trials", "2", "--output", "{root}/h1"], "bad_syntax.yaml"),
    ("hpsweep", ["{list}", "--data", "{data}", "--trials", "2", "--output", "{root}/h2"], "list.yaml"),
    (
        "hpsweep",
        ["{root}/no_space.yaml", "--data", "{data}", "--trials", "2", "--output", "{root}/h3"],
        "no_space.yaml",
    ),
    (
        "hpsweep",
        ["{space_bad_key}", "--data", "{data}", "--trials", "2", "--output", "{root}/h4"],
        "params.model.fliters: unknown key for flexcnn (did you mean 'model.filters'?)",
    ),
    (
        "hpsweep",
        ["{space_bad_range}", "--data", "{data}", "--trials", "2", "--output", "{root}/h5"],
        "params.model.dropout.high: must be >= 0 and < 1, got 1.5",
    ),
    (
        "hpsweep",
        ["{space_bad_type}", "--data", "{data}", "--trials", "2", "--output", "{root}/h6"],
        "params.model.n_layers.high: expected an integer",
    ),
    ("hpsweep", ["{space}", "--data", "{root}/missing.yaml", "--trials", "2", "--output", "{root}/h7"], "missing.yaml"),
    ("hpsweep", ["{space}", "--data", "{data}", "--trials", "0", "--output", "{root}/h8"], "--trials"),
    ("hpsweep", ["{space}", "--data", "{data}", "--trials", "many", "--output", "{root}/h9"], "--trials"),
    ("hpsweep", ["{space}", "--data", "{data}", "--trials", "2"], "--output"),
    (
        "hpsweep",
        ["{space}", "--data", "{data}", "--trials", "2", "--output", "{root}/h11", "--storage", "bogus://x"],
        "--storage",
    ),
]


def _fill(argv: list[str], ws: dict[str, Path]) -> list[str]:
    return [arg.format(**{k: str(v) for k, v in ws.items()}) for arg in argv]


@pytest.mark.parametrize("command, argv, text", CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_bad_invocation_is_one_line_with_status_2(ws, command, argv, text):
    stderr, stdout = io.StringIO(), io.StringIO()
    with redirect_stderr(stderr), redirect_stdout(stdout):
        try:
            status = COMMANDS[command](_fill(argv, ws))
        except SystemExit as exit_info:
            status = exit_info.code
    err = stderr.getvalue()
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith(("WARNING", "INFO"))]
    assert status == 2, (status, err[-3000:])
    assert "Traceback" not in err
    assert len(lines) == 1 and lines[0].startswith("error: "), err[-3000:]
    assert text in lines[0], lines[0]


def test_the_corpus_is_large_and_covers_every_command():
    assert len(CASES) >= 60
    assert {command for command, _, _ in CASES} == set(COMMANDS)
