"""Temporary files of killed processes: atomic writes name their temps after the owner's
host and PID, and runs, exports and evaluations remove those of processes that no longer run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from detectors.atomic import (
    HOST_TAG,
    atomic_open,
    atomic_path,
    make_temp_dir,
    remove_stale_temp_files,
    temp_owner,
    temp_target,
)
from detectors.training.run import RunDir

ROOT = Path(__file__).resolve().parents[1]


def dead_pid() -> int:
    """The PID of a process that has exited (and been reaped)."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def stale_name(target: str, pid: int, suffix: str = ".tmp", host: str = HOST_TAG) -> str:
    return f".{target}.tmp-{host}-{pid}-abcd1234{suffix}"


def test_temp_names_record_host_and_pid(tmp_path) -> None:
    with atomic_path(tmp_path / "last.ckpt") as tmp:
        assert temp_owner(tmp) == (HOST_TAG, os.getpid()) and temp_target(tmp) == "last.ckpt"
        assert tmp.suffix == ".ckpt"  # savefig and friends still see the format
    with atomic_open(tmp_path / "metrics.json", "w") as handle:
        [name] = [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]
        assert temp_owner(name) == (HOST_TAG, os.getpid()) and temp_target(name) == "metrics.json"
        handle.write("{}")
    directory = make_temp_dir(tmp_path / "submission")
    assert temp_owner(directory) == (HOST_TAG, os.getpid()) and temp_target(directory) == "submission"


WRITE_AND_HANG = textwrap.dedent("""
    import signal, sys
    from pathlib import Path
    from detectors.atomic import atomic_path
    with atomic_path(Path(sys.argv[1]) / "last.ckpt") as tmp:
        tmp.write_bytes(b"x" * 1_000_000)  # a checkpoint half written
        print(tmp, flush=True)
        signal.pause()
""")


def test_a_checkpoint_temp_of_a_killed_process_is_removed_and_nothing_else(tmp_path) -> None:
    checkpoints = tmp_path / "run" / "checkpoints"
    checkpoints.mkdir(parents=True)
    child = subprocess.Popen(
        [sys.executable, "-c", WRITE_AND_HANG, str(checkpoints)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    temp = Path(child.stdout.readline().strip())
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=60)
    child.stdout.close()
    assert temp.is_file() and temp_owner(temp)[1] == child.pid  # what kill -9 leaves behind
    kept = [
        checkpoints / "last.ckpt",
        checkpoints / ".hidden",
        checkpoints / ".last.ckpt.k2j3h4g5.ckpt",
        checkpoints / stale_name("best.ckpt", dead_pid(), host="0123abcd"),  # another host's (shared disk)
        checkpoints / stale_name("best.ckpt", os.getpid()),
    ]  # a live process's
    for path in kept:
        path.write_bytes(b"keep")
    stale_dir = tmp_path / "run" / stale_name("submission", child.pid, suffix="")
    (stale_dir / "inner").mkdir(parents=True)

    assert remove_stale_temp_files(tmp_path / "run") == [stale_dir]  # not recursive: the top level only
    assert sorted(remove_stale_temp_files(tmp_path / "run", recursive=True)) == [temp]
    assert not temp.exists() and not stale_dir.exists()
    assert all(path.exists() for path in kept)
    assert remove_stale_temp_files(tmp_path / "missing") == []


def test_targets_limit_the_cleanup_to_the_named_files(tmp_path) -> None:
    pid = dead_pid()
    mine, other = tmp_path / stale_name("sub", pid, suffix=""), tmp_path / stale_name("notes.txt", pid)
    mine.mkdir()
    other.write_text("x")
    assert remove_stale_temp_files(tmp_path, targets={"sub", "sub.zip"}) == [mine]
    assert other.exists()


class Reached(Exception):
    pass


def test_a_fit_removes_the_temps_its_killed_predecessor_left(tmp_path, monkeypatch) -> None:
    from detectors.training.fit import run_fit
    from detectors.video.fit import DEFAULT_ARCH, VIDEO, VIDEO_ARCHS

    run = RunDir(tmp_path / "run")
    run.checkpoints.mkdir(parents=True)
    left = run.checkpoints / stale_name("last.ckpt", dead_pid(), suffix=".ckpt")
    left.write_bytes(b"x" * 1000)

    def is_finished(self):
        raise Reached

    monkeypatch.setattr(RunDir, "is_finished", is_finished)  # stop right after the run directory is claimed
    with pytest.raises(Reached):
        run_fit("video", VIDEO, VIDEO_ARCHS, DEFAULT_ARCH, ["--output", str(run.root)])
    assert not left.exists()


def test_evaluate_removes_stale_temps_in_its_output(tmp_path) -> None:
    from detectors.evaluate import main

    out = tmp_path / "eval"
    out.mkdir()
    left = out / stale_name("predictions.csv", dead_pid())
    left.write_text("partial")
    assert (
        main(
            [
                "--model",
                str(tmp_path / "none"),
                "--data",
                str(tmp_path / "none.yaml"),
                "--output",
                str(out),
                "--device",
                "cpu",
            ]
        )
        == 2
    )  # the model is missing, but the output was claimed first
    assert not left.exists()
