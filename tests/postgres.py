"""A throwaway PostgreSQL server for tests: initdb in a temporary directory, pg_ctl start on a free
port, one database; stopped and removed afterwards. Debian's ``postgresql`` package provides the
programs (``scripts/ensure_postgresql.sh``, run by ``scripts/setup.sh``, installs it).

initdb refuses to run as root: as root the server runs as the ``postgres`` user (``runuser``)."""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path


class NoServer(Exception):
    """No PostgreSQL server can be started here (the reason is the message)."""


def _bin(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(
        glob.glob(f"/usr/lib/postgresql/*/bin/{name}"),
        key=lambda p: int(Path(p).parent.parent.name) if Path(p).parent.parent.name.isdigit() else 0,
    )
    return candidates[-1] if candidates else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def postgres_server(database: str = "optuna") -> Iterator[str]:
    """Yield the SQLAlchemy URL of a fresh database on a server started for the ``with`` block."""
    initdb, pg_ctl = _bin("initdb"), _bin("pg_ctl")
    if not (initdb and pg_ctl):
        raise NoServer(
            "no PostgreSQL server programs (initdb, pg_ctl): install Debian's postgresql package "
            "(bash scripts/ensure_postgresql.sh)"
        )
    as_user: list[str] = []
    root = tempfile.mkdtemp(prefix="sweep-pg-")  # under /tmp: pytest's own tmp dirs are private to root
    if os.geteuid() == 0:
        runuser = shutil.which("runuser")
        try:
            import pwd

            account = pwd.getpwnam("postgres")
        except KeyError:
            account = None
        if account is None or runuser is None:
            shutil.rmtree(root, ignore_errors=True)
            raise NoServer("running as root, and no 'postgres' user (or no runuser) to start the server as")
        os.chown(root, account.pw_uid, account.pw_gid)
        as_user = [runuser, "-u", "postgres", "--"]
    data, port = os.path.join(root, "data"), _free_port()

    def run(*command: str) -> subprocess.CompletedProcess:
        return subprocess.run([*as_user, *command], capture_output=True, text=True, timeout=120)

    started = False
    try:
        result = run(initdb, "-D", data, "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8")
        if result.returncode != 0:
            raise NoServer(f"initdb failed: {' '.join(result.stderr.split())[:300]}")
        options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off"
        result = run(
            pg_ctl, "-D", data, "-l", os.path.join(root, "server.log"), "-w", "-t", "60", "-o", options, "start"
        )
        if result.returncode != 0:
            log = Path(root, "server.log").read_text() if Path(root, "server.log").is_file() else ""
            raise NoServer(f"pg_ctl start failed: {' '.join((result.stderr + log).split())[:300]}")
        started = True
        import psycopg

        with psycopg.connect(f"host=127.0.0.1 port={port} user=postgres dbname=postgres", autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {database}")
        yield f"postgresql://postgres@127.0.0.1:{port}/{database}"
    finally:
        if started:
            run(pg_ctl, "-D", data, "-m", "immediate", "-w", "stop")
        shutil.rmtree(root, ignore_errors=True)
