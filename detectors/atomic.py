"""Atomic writes: a reader never sees a half-written checkpoint, cache entry or export.

Every write goes to a temporary file in the destination directory and is moved into place with
``os.replace`` (atomic on POSIX within one filesystem).

Temporary names carry their owner: ``.<name>.tmp-<host>-<pid>-<random><suffix>`` (``host``: 8 hex
digits of the host name's SHA-1). A process killed mid-write (a 42-88 MB checkpoint temp, an export's
staging folder) leaves such a file behind; :func:`remove_stale_temp_files`, called where runs, exports
and evaluations start, removes those whose process is gone. Temps of other hosts (a shared
filesystem) and of live processes are never touched.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import re
import shutil
import socket
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import IO, Any, Iterator

log = logging.getLogger(__name__)

HOST_TAG = hashlib.sha1(socket.gethostname().encode("utf-8", "replace")).hexdigest()[:8]
_TEMP_NAME = re.compile(r"^\.(?P<target>.+)\.tmp-(?P<host>[0-9a-f]{8})-(?P<pid>\d+)-[a-z0-9_]{8}(\.[^/]*)?$")


def temp_prefix(name: str) -> str:
    """The start of a temporary name for ``name`` owned by this process (``tempfile``'s ``prefix``)."""
    return f".{name}.tmp-{HOST_TAG}-{os.getpid()}-"


def make_temp_dir(target: str | Path, suffix: str = "") -> Path:
    """A new private directory next to ``target`` whose name records this process (see module doc)."""
    target = Path(target)
    return Path(tempfile.mkdtemp(prefix=temp_prefix(target.name), suffix=suffix, dir=target.parent))


def temp_owner(path: str | Path) -> tuple[str, int] | None:
    """(host tag, PID) of a temporary name made here, None for any other name."""
    match = _TEMP_NAME.match(Path(path).name)
    return (match["host"], int(match["pid"])) if match else None


def temp_target(path: str | Path) -> str | None:
    """The name a temporary file was going to replace (``.model.py.tmp-...`` -> ``model.py``)."""
    match = _TEMP_NAME.match(Path(path).name)
    return match["target"] if match else None


def process_alive(pid: int) -> bool:
    """Whether a process with this PID exists on this host (a PID of another user's process counts)."""
    if pid <= 0:
        return False
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError as error:  # e.g. EINVAL on odd platforms: assume alive, never delete on a guess
        return error.errno != errno.ESRCH
    return True


def is_stale_temp(path: str | Path) -> bool:
    """A temporary name made on this host by a process that no longer runs."""
    owner = temp_owner(path)
    return owner is not None and owner[0] == HOST_TAG and not process_alive(owner[1])


def remove_stale_temp_files(
    directory: str | Path, *, recursive: bool = False, targets: Iterable[str] | None = None
) -> list[Path]:
    """Remove temporary files and folders left in ``directory`` by dead processes; returns them.

    ``recursive`` descends into sub-folders (never through symbolic links); ``targets`` limits the
    removal to temps of these names (e.g. an export's folder and zip in a shared parent folder). A
    missing or unreadable directory is not an error: there is nothing to clean.
    """
    wanted = None if targets is None else set(targets)
    removed: list[Path] = []
    pending = [Path(directory)]
    while pending:
        folder = pending.pop()
        try:
            entries = list(os.scandir(folder))
        except OSError:
            continue
        for entry in entries:
            path = Path(entry.path)
            if is_stale_temp(path) and (wanted is None or temp_target(path) in wanted):
                try:
                    if entry.is_dir(follow_symlinks=False):
                        shutil.rmtree(path)
                    else:
                        path.unlink()
                except FileNotFoundError:
                    continue  # another process cleaned it first
                except OSError as error:
                    log.warning("could not remove the stale temporary %s: %s", path, error.strerror)
                    continue
                removed.append(path)
            elif recursive and entry.is_dir(follow_symlinks=False):
                pending.append(path)
    if removed:
        log.info("removed %d temporary file(s) left by processes that no longer run, e.g. %s", len(removed), removed[0])
    return removed


def _umask_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


@contextlib.contextmanager
def atomic_open(path: str | Path, mode: str = "wb", **open_kwargs: Any) -> Iterator[IO[Any]]:
    """Open a temporary file next to ``path`` (``open_kwargs`` as for ``open``, e.g. ``newline``);
    rename it onto ``path`` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=temp_prefix(path.name), suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode, **open_kwargs) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, _umask_mode())  # mkstemp creates 0600; give the file the usual permissions
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path for libraries that write by file name (torch.save, savefig, ...)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=temp_prefix(path.name), suffix=path.suffix or ".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, _umask_mode())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_text(path: str | Path, text: str) -> None:
    with atomic_open(path, "w") as handle:
        handle.write(text)


def write_json(path: str | Path, data: Any) -> None:
    write_text(path, json.dumps(data, indent=2, sort_keys=False, default=_json_default) + "\n")


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
