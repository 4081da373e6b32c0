"""python -m detectors.sweep: search spaces checked against the typed configuration, a study end to end
on tiny data (pruning, trials.csv, best.yaml, plots), best.yaml reproducing the best trial with the
fit command, two workers sharing one SQLite and one PostgreSQL storage, a Pareto front, and the
one-knob coordinate strategy."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import time
from contextlib import redirect_stdout
from pathlib import Path

import optuna
import pytest
import yaml
from postgres import NoServer, postgres_server

from detectors.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
TINY_FIXED = {
    "trainer.max_epochs": 1,
    "data.num_workers": 0,
    "data.batch_size": 8,
    "model.image_size": 16,
    "model.fc_size": 16,
}


@pytest.fixture(scope="module")
def tiny_images(tmp_path_factory) -> Path:
    from detectors.image.demo import write_demo_images

    return write_demo_images(tmp_path_factory.mktemp("sweep_data"), n_per_class=8, size=(24, 28))


def write_space(path: Path, params: dict, fixed: dict | None = None, **extra) -> Path:
    space = {
        "fit": {"modality": "image", "arch": "flexcnn"},
        "fixed": {**TINY_FIXED, **(fixed or {})},
        "params": params,
        **extra,
    }
    path.write_text(yaml.safe_dump(space, sort_keys=False))
    return path


def sweep(argv: list[str]) -> tuple[int, str]:
    from detectors.sweep.__main__ import sweep as run

    out = io.StringIO()
    with redirect_stdout(out):
        status = run([str(a) for a in argv])
    return status, out.getvalue()


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


# --------------------------------------------------------------------------- validation
@pytest.mark.parametrize(
    "params, where, problem",
    [
        ({"model.fliters": {"low": 8, "high": 64}}, "params.model.fliters", "did you mean 'model.filters'?"),
        ({"optim.lr": {"low": 0, "high": 0.1}}, "params.optim.lr.low", "must be > 0"),
        ({"model.dropout": {"low": 0.1, "high": 1.5}}, "params.model.dropout.high", "must be >= 0 and < 1, got 1.5"),
        ({"model.n_layers": {"low": 1, "high": 2.5}}, "params.model.n_layers.high", "expected an integer"),
        ({"model.n_layers": {"low": 3, "high": 1}}, "params.model.n_layers", "low (3) is above high (1)"),
        ({"model.image_size": {"choices": [16, "big"]}}, "params.model.image_size.choices[1]", "expected an integer"),
        ({"data.crop": {"low": 1, "high": 2}}, "params.data.crop", "list its values under choices"),
        ({"data.crop": {"choices": ["resize", "zoom"]}}, "params.data.crop.choices[1]", "one of 'native', 'resize'"),
        ({"model.filters": {"low": 8, "high": 64}}, "params.model.filters", "list setting"),
        (
            {"model.filters": {"low": 8, "high": 64, "length": "model.n_layers"}},
            "params.model.filters.length",
            "not a parameter of this space",
        ),
        ({"model": {"low": 1, "high": 2}}, "params.model", "is a section"),
        ({"optim.lr": {"low": 1e-4, "high": 1e-2, "log": True, "step": 1e-4}}, "params.optim.lr.step", "log range"),
        ({"optim.lr": {"low": 1e-4, "high": 1e-2, "lgo": True}}, "params.optim.lr.lgo", "unknown key"),
        ({"model.fc_size": {"low": 8, "high": 64}}, "params.model.fc_size", "also set in fixed"),
        ({"trainer.callbacks": {"choices": [None]}}, "params.trainer.callbacks", "owned by the run directory"),
    ],
)
def test_a_bad_space_is_a_one_line_error_naming_the_file_and_key(tmp_path, params, where, problem):
    from detectors.sweep.space import load_space

    path = write_space(tmp_path / "space.yaml", params)
    with pytest.raises(ConfigError) as caught:
        load_space(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: {where}: "), message
    assert problem in message and "\n" not in message, message


def test_bad_objectives_pruners_and_whole_configurations(tmp_path):
    from detectors.sweep.space import load_space

    params = {"optim.lr": {"low": 1e-4, "high": 1e-2, "log": True}}
    cases = [
        ({"objectives": ["scroe"]}, "objectives[0].metric: unknown metric 'scroe' (did you mean 'score'?)"),
        ({"objectives": [{"metric": "score", "direction": "up"}]}, "objectives[0].direction"),
        ({"pruner": "mean"}, "pruner: expected one of median, hyperband, none"),
        ({"fixed": {"model.n_layers": 3}}, "model.filters: needs one value per layer (n_layers = 3)"),
        ({"fit": {"arch": "flexcn"}}, "fit.arch: unknown architecture 'flexcn' (did you mean 'flexcnn'?)"),
        ({"fit": {"arch": "flexcnn", "modality": "video"}}, "fit.modality: flexcnn is a image detector"),
        ({"paramz": {}}, "paramz: unknown key (did you mean 'params'?)"),
    ]
    for extra, problem in cases:
        space = {"fit": {"arch": "flexcnn"}, "params": params, **extra}
        if "fixed" in extra:
            space["fixed"] = extra["fixed"]
        path = tmp_path / "space.yaml"
        path.write_text(yaml.safe_dump(space))
        with pytest.raises(ConfigError) as caught:
            load_space(path)
        assert problem in str(caught.value), (extra, str(caught.value))


def test_the_shipped_spaces_are_valid_and_fakefinder_has_the_seeds_ranges():
    from detectors.sweep.space import load_space

    spaces = {path.stem: load_space(path) for path in sorted((ROOT / "configs" / "sweeps").glob("*.yaml"))}
    assert {"fakefinder", "fakefinder_pareto", "dinov3_image", "restrav"} <= set(spaces)
    fakefinder = {p.key: p for p in spaces["fakefinder"].params}
    assert (fakefinder["model.n_layers"].low, fakefinder["model.n_layers"].high) == (1, 3)
    filters = fakefinder["model.filters"]
    assert (filters.low, filters.high, filters.step, filters.length) == (8, 64, 8, "model.n_layers")
    assert fakefinder["model.kernel_sizes"].choices == (3, 5)
    assert (fakefinder["model.dropout"].low, fakefinder["model.dropout"].high) == (0.1, 0.5)
    assert (fakefinder["model.fc_size"].low, fakefinder["model.fc_size"].high, fakefinder["model.fc_size"].step) == (
        64,
        512,
        64,
    )
    assert (fakefinder["optim.lr"].low, fakefinder["optim.lr"].high, fakefinder["optim.lr"].log) == (1e-4, 1e-2, True)
    assert fakefinder["model.image_size"].choices == (16, 32, 64)
    assert fakefinder["data.batch_size"].choices == (8, 16)
    assert [o.metric for o in spaces["fakefinder_pareto"].objectives] == ["score", "trainable_parameters"]
    assert {
        "optim.lr",
        "optim.backbone_lr",
        "model.tuning.lora.r",
        "loss.gamma",
        "loss.brier_weight",
        "data.augment_level",
    } == {p.key for p in spaces["dinov3_image"].params}
    assert spaces["restrav"].arch == "restrav"


def test_per_layer_lists_are_drawn_with_their_length():
    from detectors.sweep.space import load_space

    space = load_space(ROOT / "configs" / "sweeps" / "fakefinder.yaml")
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=3))
    for _ in range(12):
        trial = study.ask()
        values = space.suggest(trial)
        layers = values["model.n_layers"]
        assert len(values["model.filters"]) == len(values["model.kernel_sizes"]) == layers
        assert all(v in range(8, 65, 8) for v in values["model.filters"])
        assert sorted(trial.params) == sorted(
            [k for k in values if k not in ("model.filters", "model.kernel_sizes")]
            + [f"model.filters.{i}" for i in range(layers)]
            + [f"model.kernel_sizes.{i}" for i in range(layers)]
        )
        study.tell(trial, 0.0)


# --------------------------------------------------------------------------- a study end to end
def test_a_study_prunes_writes_results_and_best_yaml_reproduces_the_best_trial(tmp_path, tiny_images):
    from detectors.image.fit import IMAGE
    from detectors.registry import list_detectors
    from detectors.training.fit import run_fit

    space = write_space(
        tmp_path / "space.yaml",
        {
            "model.n_layers": {"low": 1, "high": 2},
            "model.filters": {"low": 4, "high": 8, "step": 4, "length": "model.n_layers"},
            "model.kernel_sizes": {"choices": [3, 5], "length": "model.n_layers"},
            "optim.lr": {"low": 1e-5, "high": 3e-2, "log": True},
        },
        fixed={"trainer.max_epochs": 3, "trainer.monitor": "val/loss"},
        pruner="median",
    )
    out = tmp_path / "sweep"
    status, stdout = sweep([space, "--data", tiny_images, "--trials", 6, "--output", out, "--seed", 1])
    assert status == 0, stdout
    lines = [line for line in stdout.splitlines() if line.startswith("trial ")]
    assert len(lines) == 6 and all(" best " in line for line in lines), stdout

    rows = read_csv(out / "trials.csv")
    assert [int(r["number"]) for r in rows] == list(range(6))
    states = [r["state"] for r in rows]
    assert "pruned" in states and "complete" in states, rows
    for row in rows:
        run = Path(row["run_dir"])
        assert run == out / f"trial-{int(row['number']):04d}"
        layers = int(row["model.n_layers"])
        assert len(json.loads(row["model.filters"])) == layers
        if row["state"] == "pruned":
            assert not (run / "metrics.json").exists() and row["score"] == "" and "pruned after epoch" in row["note"]
        else:
            config = yaml.safe_load((run / "config.yaml").read_text())
            assert config["model"]["filters"] == json.loads(row["model.filters"])
            assert config["split"]["seed"] == 1 and config["seed"] == 1  # every trial on the same split
            score = json.loads((run / "metrics.json").read_text())["validation"]["score"]
            assert float(row["score"]) == pytest.approx(score, abs=1e-12)
    split_files = {(Path(r["run_dir"]) / "split.csv").read_text() for r in rows}
    assert len(split_files) == 1
    for name in ("history.png", "importances.png"):
        assert (out / "plots" / name).stat().st_size > 1000

    complete = [r for r in rows if r["state"] == "complete"]
    best_row = max(complete, key=lambda r: float(r["score"]))
    best = yaml.safe_load((out / "best.yaml").read_text())
    assert best["arch"] == "flexcnn" and best["model"]["filters"] == json.loads(best_row["model.filters"])
    study = optuna.load_study(study_name="space", storage=f"sqlite:///{out / 'study.db'}")
    assert study.best_trial.number == int(best_row["number"])

    # a new user's reproduction: the fit command with best.yaml (no --arch: it comes from the file)
    repro = run_fit(
        "image",
        IMAGE,
        list_detectors("image"),
        "dinov3_image",
        ["--config", str(out / "best.yaml"), "--data", str(tiny_images), "--output", str(tmp_path / "r")],
    )
    score = json.loads((repro / "metrics.json").read_text())["validation"]["score"]
    assert score == pytest.approx(float(best_row["score"]), abs=1e-9)


def test_two_objectives_write_a_pareto_front(tmp_path, tiny_images):
    space = write_space(
        tmp_path / "pareto.yaml",
        {
            "model.n_layers": {"low": 1, "high": 2},
            "model.filters": {"low": 4, "high": 16, "step": 4, "length": "model.n_layers"},
            "model.kernel_sizes": {"choices": [3], "length": "model.n_layers"},
        },
        objectives=["score", "exported_size_mb"],
    )
    out = tmp_path / "sweep"
    status, stdout = sweep([space, "--data", tiny_images, "--trials", 3, "--output", out])
    assert status == 0 and "Pareto front" in stdout, stdout
    assert (out / "plots" / "pareto_front.png").stat().st_size > 1000
    rows = read_csv(out / "trials.csv")
    front = read_csv(out / "pareto_front.csv")
    assert front and {r["number"] for r in front} <= {r["number"] for r in rows}
    for row in rows:  # the size objective is the exported submission's size on disk
        submission = Path(row["run_dir"]) / "submission"
        size = sum(p.stat().st_size for p in submission.iterdir()) / 2**20
        assert float(row["exported_size_mb"]) == pytest.approx(size)
    study = optuna.load_study(study_name="pareto", storage=f"sqlite:///{out / 'study.db'}")
    assert all(t.user_attrs["ms_per_sample"] > 0 for t in study.trials)  # timed with the export
    # no trial on the front is dominated by another trial
    points = [(float(r["score"]), -float(r["exported_size_mb"])) for r in rows]
    for member in front:
        mine = (float(member["score"]), -float(member["exported_size_mb"]))
        assert not any(p[0] >= mine[0] and p[1] >= mine[1] and p != mine for p in points)


def test_the_coordinate_strategy_logs_each_steps_baseline_and_winner(tmp_path, tiny_images):
    space = write_space(
        tmp_path / "knobs.yaml",
        {
            "model.dropout": {"choices": [0.1, 0.4]},
            "optim.lr": {"low": 1e-4, "high": 1e-2, "log": True},
        },
    )
    out = tmp_path / "sweep"
    status, stdout = sweep(
        [
            space,
            "--data",
            tiny_images,
            "--trials",
            5,
            "--output",
            out,
            "--strategy",
            "coordinate",
            "--rounds",
            2,
            "--points",
            2,
        ]
    )
    assert status == 0, stdout
    steps = [line for line in stdout.splitlines() if line.startswith("round ")]
    assert steps[0].startswith("round 1 model.dropout: baseline 0.1 (score ") and " -> winner " in steps[0], stdout
    assert steps[1].startswith("round 1 optim.lr: baseline ") and " -> winner " in steps[1], stdout
    rows = read_csv(out / "trials.csv")
    # starting point (the arch's dropout 0.17 lies outside the choices: the first choice), then one
    # knob at a time: no configuration is evaluated twice
    assert rows[0]["model.dropout"] == "0.1" and float(rows[0]["optim.lr"]) == pytest.approx(1e-3)
    assert rows[1]["model.dropout"] == "0.4" and float(rows[1]["optim.lr"]) == pytest.approx(1e-3)
    combos = [(r["model.dropout"], r["optim.lr"]) for r in rows]
    assert len(combos) == len(set(combos)) <= 5
    winner = steps[0].split(" -> winner ")[1].split(" ")[0]
    scores = {r["model.dropout"]: float(r["score"]) for r in rows[:2]}
    assert float(winner) == float(max(scores, key=lambda k: (scores[k], k == "0.1")))
    assert (out / "best.yaml").is_file()


# --------------------------------------------------------------------------- several workers
def _two_workers(space: Path, data: Path, outputs: list[Path], trials: int, storage: str) -> tuple[str, str]:
    """A worker process started with the command line, and this test's process as the second worker,
    joining once the first has asked for a trial (so both really share the study)."""
    import detectors.sweep.__main__  # noqa: F401  (this worker's imports done before the other starts)
    import detectors.sweep.study  # noqa: F401
    import detectors.training.fit  # noqa: F401

    argv = [str(space), "--data", str(data), "--trials", str(trials), "--study-name", "shared"]
    storage_flags = [] if storage.startswith("sqlite") else ["--storage", storage]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "detectors.sweep", *argv, "--output", str(outputs[0]), *storage_flags],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.time() + 240
        while time.time() < deadline and process.poll() is None:
            try:
                if optuna.load_study(study_name="shared", storage=storage).get_trials(deepcopy=False):
                    break
            except KeyError:  # not created yet
                pass
            time.sleep(0.5)
        status, here = sweep([*argv, "--output", outputs[-1], *storage_flags])
        there = process.communicate(timeout=300)[0]
    finally:
        if process.poll() is None:
            process.kill()
    assert status == 0 and process.returncode == 0, (here, there)
    for log in (here, there):  # both workers ran trials
        assert any(line.startswith("trial ") for line in log.splitlines()), (here, there)
    return here, there


def _check_shared_study(study: optuna.Study, outputs: list[Path], trials: int) -> None:
    from detectors.sweep.study import counted

    finished = counted(study)
    assert sorted(t.number for t in finished) == list(range(trials))  # none lost, none twice
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in finished)
    runs = sorted(p.name for out in outputs for p in out.glob("trial-*"))
    assert runs == [f"trial-{n:04d}" for n in range(trials)]  # each trial ran in exactly one worker
    draws = [t.params["optim.lr"] for t in finished]
    assert len(set(draws)) == trials  # the workers never drew the same settings


def test_two_workers_share_one_sqlite_study(tmp_path, tiny_images):
    space = write_space(tmp_path / "shared.yaml", {"optim.lr": {"low": 1e-4, "high": 1e-2, "log": True}}, pruner="none")
    out = tmp_path / "sweep"
    out.mkdir()
    storage = f"sqlite:///{out / 'study.db'}"
    _two_workers(space, tiny_images, [out, out], trials=5, storage=storage)
    study = optuna.load_study(study_name="shared", storage=storage)
    _check_shared_study(study, [out], 5)
    assert len(read_csv(out / "trials.csv")) == 5


def test_two_workers_share_one_postgresql_study(tmp_path, tiny_images):
    space = write_space(tmp_path / "shared.yaml", {"optim.lr": {"low": 1e-4, "high": 1e-2, "log": True}}, pruner="none")
    try:
        server = postgres_server()
        url = server.__enter__()
    except NoServer as reason:
        pytest.skip(f"no PostgreSQL server could be started: {reason}")
    try:
        # two "machines": each worker has its own output directory, the study is in the server
        outputs = [tmp_path / "machine-a", tmp_path / "machine-b"]
        _two_workers(space, tiny_images, outputs, trials=5, storage=url)
        _check_shared_study(optuna.load_study(study_name="shared", storage=url), outputs, 5)
    finally:
        server.__exit__(None, None, None)


def test_joining_a_study_of_another_space_is_refused(tmp_path, tiny_images):
    first = write_space(tmp_path / "a.yaml", {"optim.lr": {"low": 1e-4, "high": 1e-2, "log": True}})
    second = write_space(tmp_path / "b.yaml", {"optim.lr": {"low": 1e-3, "high": 1e-2, "log": True}})
    out = tmp_path / "sweep"
    assert sweep([first, "--data", tiny_images, "--trials", 1, "--output", out, "--study-name", "s"])[0] == 0
    with pytest.raises(ConfigError, match="created from another search space"):
        sweep([second, "--data", tiny_images, "--trials", 2, "--output", out, "--study-name", "s"])


def test_a_dead_workers_trial_is_rerun_with_its_parameters(tmp_path, tiny_images, monkeypatch):
    from detectors.sweep import study as study_module

    monkeypatch.setattr(study_module, "HEARTBEAT_INTERVAL_S", 1)
    monkeypatch.setattr(study_module, "HEARTBEAT_GRACE_S", 2)
    space = write_space(tmp_path / "crash.yaml", {"optim.lr": {"low": 1e-4, "high": 1e-2, "log": True}})
    out = tmp_path / "sweep"
    out.mkdir()
    storage = f"sqlite:///{out / 'study.db'}"
    # a worker that asked for trial 0, drew its settings, beat once and died
    from detectors.sweep.space import load_space

    study = study_module.open_study(load_space(space), storage, "crash", seed=0, pruner="none", max_epochs=1)
    dead = study.ask()
    lr = dead.suggest_float("optim.lr", 1e-4, 1e-2, log=True)
    study._storage.record_heartbeat(dead._trial_id)
    time.sleep(3)
    status, stdout = sweep([space, "--data", tiny_images, "--trials", 2, "--output", out, "--study-name", "crash"])
    assert status == 0, stdout
    trials = optuna.load_study(study_name="crash", storage=storage).get_trials()
    assert trials[0].state == optuna.trial.TrialState.FAIL
    rerun = [t for t in trials if t.system_attrs.get("failed_trial") == 0]
    assert len(rerun) == 1 and rerun[0].state == optuna.trial.TrialState.COMPLETE
    assert rerun[0].params["optim.lr"] == pytest.approx(lr)
    rows = read_csv(out / "trials.csv")
    assert len(rows) == 2 and all(r["state"] == "complete" for r in rows)  # the dead trial is replaced, not lost
