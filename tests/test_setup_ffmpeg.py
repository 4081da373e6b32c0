"""``scripts/ensure_ffmpeg.sh`` (run by ``scripts/setup.sh``): installs Debian's ffmpeg only when no
ffmpeg is on PATH, so CI on a clean machine runs the bit-exact H.264 tests. Exercised with a fake
``apt-get`` on a PATH of its own (nothing is installed)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "ensure_ffmpeg.sh"


def _bin(tmp_path: Path, *, apt_get: str | None, ffmpeg: bool = False) -> Path:
    """A PATH folder with bash, id and a pass-through sudo (the script uses ``sudo -n`` when not
    root), optionally a fake apt-get (its body, its arguments logged) and a fake ffmpeg."""
    folder = tmp_path / "bin"
    folder.mkdir(parents=True)
    for tool in ("bash", "id"):
        (folder / tool).symlink_to(shutil.which(tool))
    (folder / "sudo").write_text(f'#!{shutil.which("bash")}\n[ "$1" = -n ] && shift\nexec "$@"\n')
    (folder / "sudo").chmod(0o755)
    if apt_get is not None:
        (folder / "apt-get").write_text(f'#!{shutil.which("bash")}\necho "$@" >> {tmp_path / "calls"}\n{apt_get}\n')
        (folder / "apt-get").chmod(0o755)
    if ffmpeg:
        (folder / "ffmpeg").write_text("#!/bin/false\n")
        (folder / "ffmpeg").chmod(0o755)
    return folder


def _run(folder: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(folder / "bash"), str(SCRIPT)], env={"PATH": str(folder)}, capture_output=True, text=True
    )


def _calls(tmp_path: Path) -> list[str]:
    path = tmp_path / "calls"
    return path.read_text().splitlines() if path.exists() else []


def test_present_ffmpeg_is_left_alone(tmp_path: Path) -> None:
    folder = _bin(tmp_path, apt_get="exit 1", ffmpeg=True)
    assert _run(folder).returncode == 0
    assert _calls(tmp_path) == []


def test_missing_ffmpeg_is_installed_with_apt_get(tmp_path: Path) -> None:
    install = f'[ "$1" = install ] && printf "#!/bin/false\\n" > {tmp_path / "bin" / "ffmpeg"} && {shutil.which("chmod")} +x {tmp_path / "bin" / "ffmpeg"}'
    folder = _bin(tmp_path, apt_get=f"{install}; exit 0")
    done = _run(folder)
    assert done.returncode == 0, done.stderr
    assert _calls(tmp_path) == ["install -y -q --no-install-recommends ffmpeg"]
    assert (tmp_path / "bin" / "ffmpeg").exists()
    assert _run(folder).returncode == 0 and len(_calls(tmp_path)) == 1  # idempotent: present now


def test_stale_package_lists_are_updated_once(tmp_path: Path) -> None:
    # the first install fails (no package lists on a fresh machine), update, then install works
    body = (
        f'if [ "$1" = update ]; then : > {tmp_path / "updated"}; exit 0; fi\n'
        f"[ -e {tmp_path / 'updated'} ] || exit 100\n"
        f'printf "#!/bin/false\\n" > {tmp_path / "bin" / "ffmpeg"}; {shutil.which("chmod")} +x {tmp_path / "bin" / "ffmpeg"}'
    )
    folder = _bin(tmp_path, apt_get=body)
    done = _run(folder)
    assert done.returncode == 0, done.stderr
    assert [c.split()[0] for c in _calls(tmp_path)] == ["install", "update", "install"]


def test_failures_are_one_line_errors(tmp_path: Path) -> None:
    done = _run(_bin(tmp_path / "a", apt_get=None))
    assert done.returncode == 1 and "no ffmpeg executable and no apt-get" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    done = _run(_bin(tmp_path / "b", apt_get="exit 100"))
    assert done.returncode == 1 and "could not install ffmpeg" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
