"""Errors that name the file and the problem, so a user knows what to fix."""

from __future__ import annotations

from pathlib import Path


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
