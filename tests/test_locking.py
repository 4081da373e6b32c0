"""One process per run directory and per evaluation output: a second process gets a
one-line error naming the holder's PID, a stale lock of a killed process is taken over, the fit and
evaluate commands take the lock (only DDP rank 0 in a fit) and release it however they end."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from detectors.errors import ConfigError
from detectors.locking import LOCK_NAME, DirectoryBusyError, DirectoryLock
from detectors.training.run import RunDir

ROOT = Path(__file__).resolve().parents[1]

HOLD = textwrap.dedent("""
    import sys
    from detectors.locking import DirectoryLock
    try:
        lock = DirectoryLock(sys.argv[1], "test").acquire()
    except Exception as error:
        print(f"busy: {error}", flush=True)
        sys.exit(2)
    print("held", flush=True)
    sys.stdin.read()  # hold until the test closes stdin
    lock.release()
""")


def start_holder(directory: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", HOLD, str(directory)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


def finish(process: subprocess.Popen) -> int:
    for stream in (process.stdin, process.stdout, process.stderr):
        if stream and not stream.closed:
            stream.close()
    return process.wait(timeout=60)


@pytest.fixture
def holder(tmp_path):
    """A process holding tmp_path / "out"."""
    process = start_holder(tmp_path / "out")
    assert process.stdout.readline().strip() == "held", process.stderr.read()
    yield process
    finish(process)


def test_two_processes_locking_one_directory_exactly_one_proceeds(tmp_path) -> None:
    first, second = start_holder(tmp_path / "run"), start_holder(tmp_path / "run")
    try:
        lines = {process.pid: process.stdout.readline().strip() for process in (first, second)}
        winners = [pid for pid, line in lines.items() if line == "held"]
        assert len(winners) == 1, lines
        loser = second if first.pid in winners else first
        assert loser.wait(timeout=60) == 2
        message = lines[loser.pid]
        assert f"in use by process {winners[0]}" in message and str(tmp_path / "run") in message
        assert "\n" not in message
    finally:
        codes = [finish(first), finish(second)]
    assert sorted(codes) == [0, 2]
    assert not (tmp_path / "run" / LOCK_NAME).exists()  # released: the lock file goes with it
    with DirectoryLock(tmp_path / "run"):  # and the directory is free again
        pass


def test_a_stale_lock_of_a_killed_process_is_taken_over(tmp_path, caplog) -> None:
    process = start_holder(tmp_path / "run")
    assert process.stdout.readline().strip() == "held"
    process.send_signal(signal.SIGKILL)
    finish(process)
    lock_file = tmp_path / "run" / LOCK_NAME
    assert json.loads(lock_file.read_text())["pid"] == process.pid  # left behind by kill -9
    with caplog.at_level(logging.INFO, logger="detectors.locking"):
        with DirectoryLock(tmp_path / "run", "test"):
            assert json.loads(lock_file.read_text())["pid"] == os.getpid()
    assert f"took over the lock of process {process.pid}" in caplog.text


def test_a_held_lock_refuses_a_second_lock_in_the_same_process_and_survives_overwrite(tmp_path) -> None:
    run = RunDir(tmp_path / "run")
    (run.checkpoints).mkdir(parents=True)
    (run.checkpoints / "last.ckpt").write_bytes(b"x")
    (run.root / "summary.json").write_text("{}")
    with DirectoryLock(run.root, "fit"):
        run.clear()  # what --overwrite does: everything but the lock goes
        assert [path.name for path in run.root.iterdir()] == [LOCK_NAME]
        with pytest.raises(DirectoryBusyError, match=rf"in use by process {os.getpid()} \(fit: "):
            DirectoryLock(run.root, "fit").acquire()


def test_an_unwritable_directory_is_a_one_line_error(tmp_path, monkeypatch) -> None:
    import detectors.locking as locking

    def refuse(path, *args, **kwargs):  # a read-only folder (chmod does not stop root, who runs CI here)
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(locking.os, "open", refuse)
    with pytest.raises(ConfigError) as info:
        DirectoryLock(tmp_path / "run").acquire()
    assert str(info.value) == (
        f"{tmp_path / 'run'}: cannot create the lock file .lock (Permission denied); is the directory writable?"
    )
    assert not (tmp_path / "run").exists()  # the folder made for the lock is removed again


class Reached(Exception):
    """Raised where fit goes on after taking (or skipping) the lock."""


@pytest.fixture
def stop_after_lock(monkeypatch):
    def is_finished(self):
        raise Reached

    monkeypatch.setattr(RunDir, "is_finished", is_finished)


def video_fit(argv: list[str]):
    from detectors.training.fit import run_fit
    from detectors.video.fit import DEFAULT_ARCH, VIDEO, VIDEO_ARCHS

    return run_fit("video", VIDEO, VIDEO_ARCHS, DEFAULT_ARCH, argv)


def test_a_second_fit_into_a_locked_output_exits_2_naming_the_pid(tmp_path, holder, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        video_fit(["--output", str(tmp_path / "out")])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith(f"error: {tmp_path / 'out'}: in use by process {holder.pid}")
    assert "\n" not in error
    assert [path.name for path in (tmp_path / "out").iterdir()] == [LOCK_NAME]  # nothing written: no demo data


def test_fit_releases_its_lock_however_it_ends(tmp_path, stop_after_lock) -> None:
    with pytest.raises(Reached):
        video_fit(["--output", str(tmp_path / "out")])
    # released on the exception; the directory made only for the lock is gone too
    assert not (tmp_path / "out").exists()
    with DirectoryLock(tmp_path / "out"):
        pass


def test_ddp_children_do_not_take_the_run_lock(tmp_path, holder, stop_after_lock, monkeypatch) -> None:
    # Lightning's DDP launcher re-runs the command with LOCAL_RANK set; rank 0 (here: the holder) has it
    monkeypatch.setenv("LOCAL_RANK", "1")
    with pytest.raises(Reached):
        video_fit(["--output", str(tmp_path / "out")])
    monkeypatch.setenv("LOCAL_RANK", "0")
    with pytest.raises(SystemExit):
        video_fit(["--output", str(tmp_path / "out")])


def test_evaluate_refuses_a_locked_output_directory(tmp_path, holder, capsys) -> None:
    from detectors.evaluate import main

    code = main(
        [
            "--model",
            str(tmp_path / "none"),
            "--data",
            str(tmp_path / "none.yaml"),
            "--output",
            str(tmp_path / "out"),
            "--device",
            "cpu",
        ]
    )
    assert code == 2
    error = capsys.readouterr().err.strip()
    holder_info = json.loads((tmp_path / "out" / LOCK_NAME).read_text())
    assert holder_info["command"].startswith("test: python")  # the holder's own command line, on one line
    assert error == (
        f"error: {tmp_path / 'out'}: in use by process {holder.pid} ({holder_info['command']}, "
        f"since {holder_info['since']}); wait for it to finish or stop it, or choose another directory"
    )
