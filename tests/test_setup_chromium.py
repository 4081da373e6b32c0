"""``scripts/ensure_chromium.sh`` (run by ``scripts/setup.sh``): installs Debian's chromium only when
no Chromium is on PATH, so CI on a clean machine runs the report.html browser tests; where it cannot
be installed it warns and the set-up goes on (those tests then skip, saying why). Exercised with a
fake ``apt-get`` on a PATH of its own (nothing is installed)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "ensure_chromium.sh"


def _bin(tmp_path: Path, *, apt_get: str | None, browser: str | None = None) -> Path:
    folder = tmp_path / "bin"
    folder.mkdir(parents=True)
    for tool in ("bash", "id"):
        (folder / tool).symlink_to(shutil.which(tool))
    (folder / "sudo").write_text(f'#!{shutil.which("bash")}\n[ "$1" = -n ] && shift\nexec "$@"\n')
    (folder / "sudo").chmod(0o755)
    if apt_get is not None:
        (folder / "apt-get").write_text(f'#!{shutil.which("bash")}\necho "$@" >> {tmp_path / "calls"}\n{apt_get}\n')
        (folder / "apt-get").chmod(0o755)
    if browser:
        (folder / browser).write_text("#!/bin/false\n")
        (folder / browser).chmod(0o755)
    return folder


def _run(folder: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(folder / "bash"), str(SCRIPT)], env={"PATH": str(folder)}, capture_output=True, text=True
    )


def _calls(tmp_path: Path) -> list[str]:
    path = tmp_path / "calls"
    return path.read_text().splitlines() if path.exists() else []


def test_a_present_chromium_is_left_alone(tmp_path: Path) -> None:
    for index, browser in enumerate(("chromium", "chromium-headless-shell")):
        folder = _bin(tmp_path / str(index), apt_get="exit 1", browser=browser)
        assert _run(folder).returncode == 0 and _calls(tmp_path / str(index)) == []


def test_a_missing_chromium_is_installed_once(tmp_path: Path) -> None:
    made = tmp_path / "bin" / "chromium"
    folder = _bin(
        tmp_path,
        apt_get=f'[ "$1" = install ] && printf "#!/bin/false\\n" > {made} && {shutil.which("chmod")} +x {made}; exit 0',
    )
    done = _run(folder)
    assert done.returncode == 0 and done.stderr == ""
    assert _calls(tmp_path) == ["install -y -q --no-install-recommends chromium"]
    assert _run(folder).returncode == 0 and len(_calls(tmp_path)) == 1  # idempotent


def test_where_it_cannot_be_installed_the_setup_goes_on_with_a_warning(tmp_path: Path) -> None:
    done = _run(_bin(tmp_path / "a", apt_get=None))
    assert done.returncode == 0 and "no Chromium and no apt-get" in done.stderr and "skipped" in done.stderr
    done = _run(_bin(tmp_path / "b", apt_get="exit 100"))
    assert done.returncode == 0 and "could not install chromium" in done.stderr
    assert [c.split()[0] for c in _calls(tmp_path / "b")] == ["install", "update"]


def test_setup_runs_it():
    assert "bash scripts/ensure_chromium.sh" in (ROOT / "scripts" / "setup.sh").read_text()
