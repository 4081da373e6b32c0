"""YAML configuration: loading with clear errors, deep merging, dataclass conversion."""

from __future__ import annotations

import copy
import dataclasses
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from detectors.errors import ConfigError

T = TypeVar("T")

CONFIG_ROOT = Path(__file__).resolve().parent.parent / "configs"


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping; syntax errors and non-mapping documents name the file (and line)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(path, None, "file does not exist")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else None
        raise ConfigError(path, where, f"invalid YAML: {getattr(error, 'problem', error)}") from error
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(path, None, f"expected a mapping at the top level, got {type(data).__name__}")
    return data


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Recursively merge ``override`` into a copy of ``base`` (mappings merge, everything else replaces)."""
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def set_dotted(config: dict[str, Any], dotted: str, value: Any) -> None:
    """``set_dotted(cfg, "trainer.max_epochs", 3)``."""
    node = config
    *parents, leaf = dotted.split(".")
    for depth, key in enumerate(parents):
        node = node.setdefault(key, {})
        if not isinstance(node, dict):
            where = ".".join(parents[: depth + 1])
            raise ConfigError(None, dotted, f"cannot set it: {where} holds {node!r}, not a mapping")
    node[leaf] = value


def default_config(modality: str, arch: str) -> dict[str, Any]:
    """The shipped defaults for one detector: ``configs/<modality>/<arch>.yaml``."""
    return load_yaml(CONFIG_ROOT / modality / f"{arch}.yaml")


def from_dict(cls: type[T], data: dict[str, Any] | None, where: str = "", file: str | Path | None = None) -> T:
    """Build dataclass ``cls`` from a mapping, recursing into nested dataclasses; unknown keys are errors."""
    data = dict(data or {})
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(file, where or cls.__name__, f"unknown field(s) {unknown}; known: {sorted(fields)}")
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for name, value in data.items():
        hint = hints[name]
        nested = _dataclass_in(hint)
        if nested is not None and not dataclasses.is_dataclass(value):
            if hasattr(nested, "from_dict"):
                value = nested.from_dict(value)
            elif isinstance(value, dict):
                value = from_dict(nested, value, f"{where}.{name}" if where else name, file)
        kwargs[name] = value
    return cls(**kwargs)


def to_dict(obj: Any) -> Any:
    """Dataclasses -> plain dicts/lists (tuples become lists so YAML round-trips)."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def _dataclass_in(hint: Any) -> type | None:
    if dataclasses.is_dataclass(hint):
        return hint
    for arg in typing.get_args(hint):
        if dataclasses.is_dataclass(arg):
            return arg
    return None
