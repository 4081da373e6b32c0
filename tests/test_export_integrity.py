"""Export integrity: a SHA256SUMS manifest written at export and verified by export.check
(a flipped weight byte fails), the folder and its zip written as one unit (a re-export killed at any
step never leaves a folder and a zip of two exports; check reports such a pair), and stale staging
temps of killed exports removed by the next export."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest
import torch

from detectors.atomic import temp_owner
from export.check import check_submission
from export.check import main as check_main
from export.manifest import MANIFEST_FILE, parse_manifest, verify_directory, verify_zip
from export.writer import write_submission

sys.path.insert(0, str(Path(__file__).parent))
from test_export_check import _image_spec  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SUBMISSION = ["model.py", "model_config.yaml", "model.safetensors"]


@pytest.fixture(scope="module")
def specs():
    """Two exports that differ in name and weights."""
    first, _ = _image_spec("dinov2")
    second, _ = _image_spec("dinov2")
    second.name = "second"
    second.state_dict = {
        key: value + 0.5 if value.is_floating_point() else value for key, value in second.state_dict.items()
    }
    return first, second


def export_name(directory: Path) -> str:
    import yaml

    return yaml.safe_load((directory / "model_config.yaml").read_text())["name"]


def flip_byte(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def test_manifest_lists_every_file_and_the_zip_carries_it_as_comment(specs, tmp_path) -> None:
    zip_path = write_submission(specs[0], tmp_path / "sub", zip=True)
    directory = tmp_path / "sub"
    assert zip_path == tmp_path / "sub.zip"
    manifest = parse_manifest((directory / MANIFEST_FILE).read_text(), MANIFEST_FILE)
    assert sorted(manifest) == sorted(SUBMISSION)
    for name, digest in manifest.items():  # what `sha256sum -c SHA256SUMS` checks
        assert hashlib.sha256((directory / name).read_bytes()).hexdigest() == digest
    with zipfile.ZipFile(zip_path) as archive:
        assert sorted(archive.namelist()) == sorted(SUBMISSION)  # exactly the submission files
        assert parse_manifest(archive.comment.decode("ascii"), "comment") == manifest
    assert check_submission(directory, run=False) == []
    assert check_submission(zip_path, run=False) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sub", "sub.zip"]  # no temp left behind


def test_a_flipped_weight_byte_fails_export_check(specs, tmp_path, capsys) -> None:
    write_submission(specs[0], tmp_path / "sub", zip=True)
    copy = tmp_path / "copy"
    shutil.copytree(tmp_path / "sub", copy)
    weights = copy / "model.safetensors"
    flip_byte(weights, weights.stat().st_size // 2)  # inside tensor data: safetensors still parses it
    problems = check_submission(copy, run=False)
    assert problems == [
        f"{weights}: sha256 differs from {copy / MANIFEST_FILE} (changed or corrupted after export); re-export"
    ]
    assert check_main([str(copy), "--static-only"]) == 1
    assert "model.safetensors: sha256 differs" in capsys.readouterr().out

    # the same inside the zip: the member no longer matches its CRC
    zip_copy = tmp_path / "copy.zip"
    shutil.copy(tmp_path / "sub.zip", zip_copy)
    with zipfile.ZipFile(zip_copy) as archive:
        info = archive.getinfo("model.safetensors")
    flip_byte(zip_copy, info.header_offset + 30 + len(info.filename) + info.compress_size // 2)
    problems = check_submission(zip_copy, run=False)
    assert len(problems) == 1 and problems[0].startswith(f"{zip_copy}: corrupt zip"), problems


def test_added_and_missing_files_are_named(specs, tmp_path) -> None:
    directory = write_submission(specs[0], tmp_path / "sub")
    (directory / "notes.txt").write_text("mine")
    (directory / "model.py").unlink()
    problems, _ = verify_directory(directory)
    assert problems == [
        f"{directory}/model.py: listed in {directory / MANIFEST_FILE} but missing; re-export",
        f"{directory}/notes.txt: not listed in {directory / MANIFEST_FILE} (added after export?); "
        "remove it or re-export",
    ]


def test_a_folder_and_a_zip_of_different_exports_are_reported(specs, tmp_path) -> None:
    zip_path = write_submission(specs[0], tmp_path / "sub", zip=True)
    old_zip = zip_path.read_bytes()
    write_submission(specs[1], tmp_path / "sub", zip=True)
    assert check_submission(tmp_path / "sub", run=False) == []
    zip_path.write_bytes(old_zip)  # what the old writer could leave: new folder, old zip
    for path in (tmp_path / "sub", zip_path):
        problems = check_submission(path, run=False)
        assert len(problems) == 1 and "come from different exports" in problems[0], problems
        assert "model.safetensors" in problems[0] and "re-export with --zip" in problems[0]
    assert verify_zip(zip_path)[0] == []  # each half is intact on its own: only the pair is wrong


def test_a_reexport_without_zip_rewrites_the_previous_zip(specs, tmp_path) -> None:
    write_submission(specs[0], tmp_path / "sub", zip=True)
    assert write_submission(specs[1], tmp_path / "sub") == tmp_path / "sub"
    with zipfile.ZipFile(tmp_path / "sub.zip") as archive:
        assert b"name: second" in archive.read("model_config.yaml")
    assert check_submission(tmp_path / "sub", run=False) == []


def _pair_state(directory: Path) -> str:
    """'old', 'new', 'old+zip', 'new+zip' after checking that what is there is one consistent export."""
    zip_path = directory.with_name(directory.name + ".zip")
    assert directory.is_dir(), "the folder must never disappear"
    assert verify_directory(directory)[0] == []
    name = {"tiny-dinov2": "old", "second": "new"}[export_name(directory)]
    if zip_path.exists():
        assert check_submission(directory, run=False) == [], "folder and zip from different exports"
        return name + "+zip"
    return name


def test_reexport_killed_at_every_step_never_leaves_a_mixed_pair(specs, tmp_path) -> None:
    """Fault injection: a forked child re-exports and is killed with SIGKILL just before its n-th
    filesystem commit step (every os.replace and directory exchange of staging and installing), for
    every n until the export completes."""
    import export.writer as writer

    seen = []
    point = 0
    while True:
        point += 1
        root = tmp_path / f"kill{point}"
        root.mkdir()
        directory = root / "sub"
        write_submission(specs[0], directory, zip=True)
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:  # child: count commit steps, stop before the chosen one
            try:
                os.close(read_end)
                calls = [0]
                real_replace, real_exchange = os.replace, writer._exchange

                def step(function, calls=calls, point=point, write_end=write_end):  # bound now (the child never loops)
                    def hooked(*args, **kwargs):
                        calls[0] += 1
                        if calls[0] == point:
                            os.write(write_end, b"stopped")
                            signal.pause()  # until killed
                        return function(*args, **kwargs)

                    return hooked

                os.replace = step(real_replace)
                writer._exchange = step(real_exchange)
                write_submission(specs[1], directory, zip=True)
                os.write(write_end, b"done")
            finally:
                os._exit(0)
        os.close(write_end)
        message = os.read(read_end, 16)
        os.close(read_end)
        if message == b"stopped":
            os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        state = _pair_state(directory)
        seen.append(state)
        if message != b"stopped":
            assert state == "new+zip"
            break
        # the next export cleans up what the killed one left and writes the pair
        leftovers = [path for path in root.iterdir() if temp_owner(path)]
        write_submission(specs[1], directory, zip=True)
        assert sorted(p.name for p in root.iterdir()) == ["sub", "sub.zip"], leftovers
        assert _pair_state(directory) == "new+zip"
    assert len(seen) >= 5  # staging writes, zip aside, folder swap, zip in, done
    assert {"old+zip", "new+zip"} <= set(seen) and set(seen) <= {"old+zip", "old", "new", "new+zip"}


KILL_WHILE_ZIPPING = textwrap.dedent("""
    import os, signal, sys, zipfile
    import torch
    from export.spec import ExportSpec
    from export.writer import write_submission

    fields = torch.load(sys.argv[1], weights_only=False)
    real_write = zipfile.ZipFile.write

    def write(self, filename, arcname=None, *args, **kwargs):
        if arcname == "model.safetensors":  # half-way through the zip
            print("zipping", flush=True)
            signal.pause()
        return real_write(self, filename, arcname, *args, **kwargs)

    zipfile.ZipFile.write = write
    write_submission(ExportSpec(**fields), sys.argv[2], zip=True)
""")


def test_reexport_killed_while_writing_the_zip_keeps_the_old_pair(specs, tmp_path) -> None:
    """The issue's case with a real process: kill -9 while the zip is written. The old writer had
    already replaced the folder then, leaving new weights beside the old zip."""
    directory = tmp_path / "sub"
    write_submission(specs[0], directory, zip=True)
    spec_file = tmp_path / "spec.pt"
    torch.save(dict(vars(specs[1])), spec_file)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    child = subprocess.Popen(
        [sys.executable, "-c", KILL_WHILE_ZIPPING, str(spec_file), str(directory)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        line = child.stdout.readline()
        assert line.strip() == "zipping", child.stderr.read()
        child.send_signal(signal.SIGKILL)
    finally:
        child.wait(timeout=60)
        child.stdout.close()
        child.stderr.close()
    assert _pair_state(directory) == "old+zip"
    stale = [path for path in tmp_path.iterdir() if temp_owner(path)]
    assert stale and all(temp_owner(path)[1] == child.pid for path in stale)  # its staging folder and zip
    write_submission(specs[1], directory, zip=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["spec.pt", "sub", "sub.zip"]
    assert _pair_state(directory) == "new+zip"


def test_a_second_export_of_the_same_submission_waits_its_turn(specs, tmp_path) -> None:
    """Two exports interleaving their installs could pair one's folder with the other's zip: the
    second one is refused (one line naming the holder) while the first holds the submission's lock."""
    from detectors.locking import DirectoryBusyError, DirectoryLock

    with DirectoryLock(tmp_path, "export", name=".sub.lock"):
        with pytest.raises(DirectoryBusyError, match=rf"{tmp_path}: in use by process {os.getpid()} \(export: "):
            write_submission(specs[0], tmp_path / "sub", zip=True)
        assert [path.name for path in tmp_path.iterdir()] == [".sub.lock"]  # nothing staged
    write_submission(specs[0], tmp_path / "sub", zip=True)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["sub", "sub.zip"]
