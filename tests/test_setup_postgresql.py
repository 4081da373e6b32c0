"""``scripts/ensure_postgresql.sh`` (run by ``scripts/setup.sh``): installs Debian's postgresql only when
its server programs are missing, so CI on a clean machine runs the PostgreSQL sweep test; where it
cannot be installed it warns and the set-up goes on (that test then skips, saying why). Exercised with
a fake ``apt-get`` on a PATH of its own and a library folder of its own (nothing is installed)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "ensure_postgresql.sh"


def _bin(tmp_path: Path, *, apt_get: str | None) -> Path:
    folder = tmp_path / "bin"
    folder.mkdir(parents=True)
    for tool in ("bash", "id"):
        (folder / tool).symlink_to(shutil.which(tool))
    if apt_get is not None:
        (folder / "apt-get").write_text(f'#!{shutil.which("bash")}\necho "$@" >> {tmp_path / "calls"}\n{apt_get}\n')
        (folder / "apt-get").chmod(0o755)
    return folder


def _run(tmp_path: Path, folder: Path) -> subprocess.CompletedProcess:
    env = {"PATH": str(folder), "POSTGRESQL_LIB": str(tmp_path / "lib")}
    return subprocess.run([str(folder / "bash"), str(SCRIPT)], env=env, capture_output=True, text=True)


def _calls(tmp_path: Path) -> list[str]:
    path = tmp_path / "calls"
    return path.read_text().splitlines() if path.exists() else []


def _install_server(tmp_path: Path) -> None:
    programs = tmp_path / "lib" / "15" / "bin"
    programs.mkdir(parents=True)
    for name in ("initdb", "pg_ctl"):
        (programs / name).write_text("#!/bin/false\n")


def test_installed_server_programs_are_left_alone(tmp_path: Path) -> None:
    _install_server(tmp_path)
    folder = _bin(tmp_path, apt_get="exit 1")
    assert _run(tmp_path, folder).returncode == 0 and _calls(tmp_path) == []


def test_missing_server_programs_are_installed_once(tmp_path: Path) -> None:
    made = tmp_path / "lib" / "15" / "bin"
    folder = _bin(
        tmp_path,
        apt_get=f'[ "$1" = install ] && {shutil.which("mkdir")} -p {made} && '
        f"{shutil.which('touch')} {made}/initdb {made}/pg_ctl; exit 0",
    )
    done = _run(tmp_path, folder)
    assert done.returncode == 0 and done.stderr == ""
    assert _calls(tmp_path) == ["install -y -q --no-install-recommends postgresql"]
    assert _run(tmp_path, folder).returncode == 0 and len(_calls(tmp_path)) == 1  # idempotent


def test_a_failed_install_warns_and_setup_goes_on(tmp_path: Path) -> None:
    folder = _bin(tmp_path, apt_get="exit 100")
    done = _run(tmp_path, folder)
    assert done.returncode == 0
    assert "warning:" in done.stderr and "PostgreSQL sweep test will be skipped" in done.stderr
    # the package lists are refreshed once the first install fails; that fails too: a warning
    assert _calls(tmp_path) == ["install -y -q --no-install-recommends postgresql", "update -q"]


def test_setup_runs_it() -> None:
    assert "bash scripts/ensure_postgresql.sh" in (ROOT / "scripts" / "setup.sh").read_text()
