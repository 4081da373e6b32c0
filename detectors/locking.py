"""One process per run directory (and per evaluation output): a lock file that a second process meets.

``DIR/.lock`` is locked with ``flock`` (POSIX advisory lock). The kernel drops the lock when its
holder dies, however it dies (kill -9 included), so a stale lock of a dead process is taken over
without guessing from PIDs; the file's content (PID, host, command, start time) only serves the
message the second process prints::

    error: runs/x: in use by process 4242 (python -m detectors.image.fit ..., since 2026-12-02 14:03:11);
    wait for it to finish or stop it, or choose another directory

A releasing holder unlinks the file before unlocking it, so a waiting process that locked the
unlinked file checks that the path still names the file it locked and retries if not. The file is
opened close-on-exec (decoders and ffmpeg never inherit it); forked DataLoader workers share it and
exit within seconds of their parent, after which the lock is free.

Use :func:`claim_directory` as a context manager (``detectors.evaluate``), or, inside a function
decorated with :func:`releases_claims`, call it as a plain function: the claim is released when that
function returns or raises (the fit command: its run directory is known only halfway through).
Claiming also removes temporary files that dead processes left there (:mod:`detectors.atomic`).
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import json
import logging
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator, TypeVar

from detectors.atomic import process_alive, remove_stale_temp_files
from detectors.errors import ConfigError

try:  # POSIX; elsewhere an O_EXCL lock file with a PID liveness check stands in (see _acquire_exclusive)
    import fcntl
except ImportError:  # pragma: no cover - not on Linux/macOS
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

LOCK_NAME = ".lock"
F = TypeVar("F", bound=Callable[..., Any])


class DirectoryBusyError(ConfigError):
    """Another live process holds the directory's lock."""

    def __init__(self, directory: str | Path, holder: dict[str, Any]) -> None:
        self.holder = holder
        pid = holder.get("pid")
        who = f"process {pid}" if pid else "another process"
        details = ", ".join(
            str(part) for part in (holder.get("command"), holder.get("since") and f"since {holder['since']}") if part
        )
        host = holder.get("host")
        if host and host != socket.gethostname():
            who += f" on {host}"
        super().__init__(
            directory,
            None,
            f"in use by {who}{f' ({details})' if details else ''}; wait for it to "
            "finish or stop it, or choose another directory",
        )


def _holder_info(purpose: str) -> dict[str, Any]:
    argv = list(getattr(sys, "orig_argv", None) or [sys.executable, *sys.argv])  # "python -m detectors.image.fit ..."
    command = " ".join(" ".join([Path(argv[0]).name, *argv[1:]]).split())  # one line, whatever -c held
    if len(command) > 100:
        command = command[:100] + " ..."
    return {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "purpose": purpose,
        "command": f"{purpose}: {command}",
        "since": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


def _read_holder(fd: int) -> dict[str, Any]:
    try:
        text = os.pread(fd, 4096, 0).decode("utf-8", "replace")
        holder = json.loads(text) if text.strip() else {}
    except (OSError, ValueError):
        return {}
    return holder if isinstance(holder, dict) else {}


class DirectoryLock:
    """The lock of one directory; ``with DirectoryLock(path, "evaluate"):`` or acquire()/release()."""

    def __init__(self, directory: str | Path, purpose: str = "run", name: str = LOCK_NAME) -> None:
        self.directory = Path(directory)
        self.path = self.directory / name  # another name locks one entry of a shared folder (an export)
        self.purpose = purpose
        self._fd: int | None = None
        self._created_directory = False

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> DirectoryLock:
        if self._fd is not None:
            raise RuntimeError(f"{self.path}: already held by this DirectoryLock")
        self._created_directory = not self.directory.exists()
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise ConfigError(self.directory, None, f"cannot create the directory ({error.strerror})") from error
        try:
            self._fd = self._acquire_flock() if fcntl is not None else self._acquire_exclusive()
        except BaseException:
            self._remove_created_directory()
            raise
        return self

    def _open(self, flags: int) -> int:
        try:
            return os.open(self.path, flags | getattr(os, "O_CLOEXEC", 0), 0o644)
        except OSError as error:
            if isinstance(error, FileExistsError):
                raise
            raise ConfigError(
                self.directory,
                None,
                f"cannot create the lock file {self.path.name} ({error.strerror}); is the directory writable?",
            ) from error

    def _acquire_flock(self) -> int:
        for _ in range(100):  # only a holder releasing at this very moment makes us go round again
            fd = self._open(os.O_RDWR | os.O_CREAT)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                holder = _read_holder(fd)
                if not holder:  # the holder has locked but not yet written its name
                    time.sleep(0.05)
                    holder = _read_holder(fd)
                os.close(fd)
                raise DirectoryBusyError(self.directory, holder) from None
            try:
                same_file = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same_file = False
            if not same_file:  # locked a file its holder has just unlinked on release
                os.close(fd)
                continue
            previous = _read_holder(fd)
            if previous.get("pid") and previous.get("pid") != os.getpid():
                log.info(
                    "%s: took over the lock of process %s, which is no longer running", self.directory, previous["pid"]
                )
            self._write_holder(fd)
            return fd
        raise ConfigError(self.directory, None, "could not take its lock (it keeps changing hands)")

    def _acquire_exclusive(self) -> int:  # pragma: no cover - platforms without fcntl
        for _ in range(100):
            try:
                fd = self._open(os.O_RDWR | os.O_CREAT | os.O_EXCL)
            except FileExistsError:
                try:
                    holder = json.loads(self.path.read_text(encoding="utf-8") or "{}")
                except (OSError, ValueError):
                    holder = {}
                pid = holder.get("pid") if isinstance(holder, dict) else None
                if isinstance(pid, int) and not process_alive(pid):
                    with contextlib.suppress(FileNotFoundError):
                        self.path.unlink()
                    continue
                raise DirectoryBusyError(self.directory, holder if isinstance(holder, dict) else {}) from None
            self._write_holder(fd)
            return fd
        raise ConfigError(self.directory, None, "could not take its lock (it keeps changing hands)")

    def _write_holder(self, fd: int) -> None:
        data = (json.dumps(_holder_info(self.purpose)) + "\n").encode()
        os.ftruncate(fd, 0)
        os.pwrite(fd, data, 0)
        os.fsync(fd)

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            # unlink first, while still locked: whoever locks the old file afterwards sees it is gone
            if os.stat(self.path).st_ino == os.fstat(fd).st_ino:
                self.path.unlink()
        except OSError:
            pass
        finally:
            os.close(fd)  # closing drops the flock
        self._remove_created_directory()

    def _remove_created_directory(self) -> None:
        # a directory made only to hold the lock disappears with it (a failed run leaves nothing)
        if self._created_directory:
            with contextlib.suppress(OSError):
                self.directory.rmdir()  # only if empty

    def __enter__(self) -> DirectoryLock:
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()

    def __del__(self) -> None:  # a lock nobody released still must not outlive its owner object
        with contextlib.suppress(Exception):
            self.release()


# ------------------------------------------------------------------------------------- claims
_claims: contextvars.ContextVar[list[DirectoryLock] | None] = contextvars.ContextVar("directory_claims", default=None)


@contextlib.contextmanager
def claim(directory: str | Path, purpose: str, *, recursive_cleanup: bool = True) -> Iterator[DirectoryLock]:
    """Lock ``directory`` for this process, remove temps dead processes left in it, yield the lock."""
    with DirectoryLock(directory, purpose) as lock:
        remove_stale_temp_files(directory, recursive=recursive_cleanup)
        yield lock


def claim_directory(directory: str | Path, purpose: str, *, recursive_cleanup: bool = True) -> DirectoryLock:
    """Lock ``directory`` until the enclosing :func:`releases_claims` function returns or raises, and
    remove the temporary files dead processes left in it. Raises :class:`DirectoryBusyError` (a
    :class:`ConfigError`: one line naming the directory and the holder's PID) if a live process holds it."""
    claims = _claims.get()
    if claims is None:
        raise RuntimeError("claim_directory() needs an enclosing function decorated with @releases_claims")
    lock = DirectoryLock(directory, purpose).acquire()
    claims.append(lock)
    remove_stale_temp_files(directory, recursive=recursive_cleanup)
    return lock


def releases_claims(function: F) -> F:
    """Release every :func:`claim_directory` made while ``function`` runs, when it returns or raises."""

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        claims: list[DirectoryLock] = []
        token = _claims.set(claims)
        try:
            return function(*args, **kwargs)
        finally:
            _claims.reset(token)
            for lock in reversed(claims):
                lock.release()

    return wrapper  # type: ignore[return-value]
