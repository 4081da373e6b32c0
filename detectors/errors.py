"""Errors that name the file and the problem, so a user knows what to fix."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence


class MediaError(ValueError):
    """A media file cannot be used: corrupt, empty, truncated, wrong kind, too large."""

    def __init__(self, path: str | Path, problem: str) -> None:
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class ConfigError(ValueError):
    """A configuration file (dataset YAML, run config, model_config.yaml) is invalid.

    ``where`` locates the problem inside the file, e.g. ``datasets[2].media_type``.
    """

    def __init__(self, file: str | Path | None, where: str | None, problem: str) -> None:
        self.file = None if file is None else str(file)
        self.where = where
        self.problem = problem
        location = ": ".join(part for part in (self.file, self.where) if part)
        super().__init__(f"{location}: {problem}" if location else problem)


class CheckpointError(ValueError):
    """A checkpoint or weights file does not match the model (missing/unexpected keys, shapes)."""


def error_summary(error: BaseException, text: str | None = None) -> str:
    """``"KeyError: first line of the message"`` (at most 200 characters of it): one line for an
    error whose message may run over many lines. ``text`` replaces ``str(error)`` as the message."""
    lines = [line.strip() for line in (str(error) if text is None else text).splitlines() if line.strip()]
    return f"{type(error).__name__}: {lines[0][:200]}" if lines else type(error).__name__


def format_key_list(what: str, keys: Sequence[str], limit: int = 5) -> str:
    """``"400 unexpected keys: a, b, c, d, e ... and 395 more"``: a count and the first ``limit`` keys."""
    shown = ", ".join(keys[:limit])
    more = f" ... and {len(keys) - limit} more" if len(keys) > limit else ""
    return f"{len(keys)} {what}: {shown}{more}"


def format_key_mismatch(
    missing: Sequence[str], unexpected: Sequence[str] = (), wrong_shape: Sequence[str] = (), limit: int = 5
) -> str:
    """One short line for a state dict that does not fit a model (empty when everything fits).

    ``wrong_shape`` entries are pre-formatted, e.g. ``"head.weight: checkpoint (2, 8) vs model (3, 8)"``.
    Only the first ``limit`` names of each kind are listed: a wrong file can differ in hundreds of keys.
    """
    parts = [
        format_key_list(what, list(keys), limit)
        for what, keys in (
            ("missing keys", missing),
            ("unexpected keys", unexpected),
            ("wrong-shape keys", wrong_shape),
        )
        if keys
    ]
    return "; ".join(parts)


def state_dict_mismatch(expected: Mapping[str, Any], found: Mapping[str, Any], limit: int = 5) -> str:
    """How the checkpoint ``found`` differs from the model's ``expected`` state dict ("" if it fits).

    Values are tensors or shapes (anything with ``.shape``, or a sequence of ints), so a checkpoint's
    key list can be checked without reading its tensors.
    """

    def shape(value: Any) -> tuple[int, ...]:
        return tuple(getattr(value, "shape", value))

    missing = [key for key in expected if key not in found]
    unexpected = [key for key in found if key not in expected]
    wrong_shape = [
        f"{key}: checkpoint {shape(found[key])} vs model {shape(value)}"
        for key, value in expected.items()
        if key in found and shape(found[key]) != shape(value)
    ]
    return format_key_mismatch(missing, unexpected, wrong_shape, limit)


def unreadable_weights_reason(path: str | Path, error: BaseException) -> str:
    """What it means that ``path`` could not be read as weights, for a :class:`CheckpointError`.

    ``torch.load`` reports a file of another kind with the unpickler's raw complaint (a ``KeyError``
    whose text is a bare number, "Unsupported operand 236"); this says which case it is instead:
    not a checkpoint at all, a truncated or corrupt one, or a pickle holding more than tensors.
    """
    path = Path(path)
    kind = type(error).__name__
    text = str(error)
    if "WeightsUnpickler error:" in text:  # torch's long weights_only banner: keep its cause
        cause = text.split("WeightsUnpickler error:", 1)[1]
        text = cause if cause.strip() else text
    detail = error_summary(error, text)
    try:
        with open(path, "rb") as handle:
            head = handle.read(8)
    except OSError:
        head = b""
    if path.suffix == ".safetensors":
        return f"not a readable safetensors file (truncated, or another format under this name?) ({detail})"
    if not head:
        return "an empty file"
    if not head.startswith((b"PK", b"\x80")):  # torch writes a zip archive, or (legacy) a protocol-2+ pickle
        return (
            f"not a PyTorch checkpoint: neither a zip archive nor a pickle (the file starts with {head!r}; "
            f"the unpickler gave up with {kind})"
        )
    if "WeightsUnpickler" in str(error):
        return f"a pickle holding objects other than tensors, which the safe loader refuses ({detail})"
    if head.startswith(b"PK"):
        return f"a zip archive but not a readable PyTorch checkpoint (another kind of zip, or truncated or corrupt?) ({detail})"
    return f"a pickle that cannot be loaded as a PyTorch checkpoint (truncated or corrupt?) ({detail})"


def media_access_problem(path: str | Path) -> str | None:
    """Why a media file cannot be read before decoding it, in the user's words (``None``: it can):
    missing, a broken or looping symbolic link, not a regular file, no read permission, empty."""
    import errno
    import os

    path = Path(path)
    try:
        status = path.stat()
    except FileNotFoundError:
        if path.is_symlink():
            return f"broken symbolic link (to {os.readlink(path)})"
        return "file not found"
    except OSError as error:
        if error.errno == errno.ELOOP:
            return "symbolic link loop"
        if error.errno == errno.EACCES:
            return "permission denied"
        return f"cannot access it ({error.strerror or error})"
    import stat

    if not stat.S_ISREG(status.st_mode):
        return "not a regular file"
    if not os.access(path, os.R_OK):
        return "permission denied"
    if status.st_size == 0:
        return "empty file (0 bytes)"
    return None
