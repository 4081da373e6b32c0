"""YAML configuration: loading with clear errors, deep merging, dataclass conversion."""

from __future__ import annotations

import copy
import dataclasses
import difflib
import re
import typing
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

import yaml

from detectors.errors import ConfigError

T = TypeVar("T")

CONFIG_ROOT = Path(__file__).resolve().parent.parent / "configs"


#: Input limits of :func:`load_yaml` (issue 17). A configuration or dataset YAML is a few KB; PyYAML
#: parses about 150 KB/s, so a 10 MB file took 65 s before failing. Aliases are shared when loaded,
#: but code walking the result sees them expanded: a 519-byte "billion laughs" file took 37 s and
#: 4.2 GB. Depth: PyYAML's composer recurses, so an absurdly nested file hits RecursionError.
MAX_YAML_BYTES = 1 << 20
MAX_YAML_NODES = 1_000_000  # values after expanding aliases
MAX_YAML_DEPTH = 100


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping; syntax errors and non-mapping documents name the file (and line).

    Refused with a one-line :class:`ConfigError` naming the file: a file larger than
    :data:`MAX_YAML_BYTES`, binary or non-UTF-8 content, aliases expanding to more than
    :data:`MAX_YAML_NODES` values (or referring to themselves), nesting deeper than
    :data:`MAX_YAML_DEPTH`.
    """
    path = Path(path)
    if not path.exists():
        raise ConfigError(path, None, "file does not exist")
    if path.is_dir():
        raise ConfigError(path, None, "is a directory, not a YAML file")
    if not path.is_file():
        raise ConfigError(path, None, "is not a regular file")
    try:
        with open(path, "rb") as handle:
            raw = handle.read(MAX_YAML_BYTES + 1)  # never more: a huge file is refused, not read
    except OSError as error:
        raise ConfigError(path, None, f"cannot read it ({error.strerror or error})") from error
    if len(raw) > MAX_YAML_BYTES:
        size = max(path.stat().st_size, len(raw))
        raise ConfigError(path, None, f"too large for a YAML configuration ({size / 2**20:.1f} MiB; the limit is "
                          f"{MAX_YAML_BYTES / 2**20:g} MiB): is this the right file?")
    if b"\x00" in raw:
        raise ConfigError(path, None, "a binary file, not YAML text: is this the right file?")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise ConfigError(path, None, f"not UTF-8 text (byte 0x{raw[error.start]:02x} at offset {error.start}); "
                          "save it as UTF-8") from None
    data = _parse_yaml(text, path)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(path, None, f"expected a mapping at the top level, got {type(data).__name__}")
    return data


def _parse_yaml(text: str, path: Path) -> Any:
    """``yaml.safe_load`` with the size of the composed document checked before it is constructed."""
    loader = None
    try:
        loader = yaml.SafeLoader(text)  # its reader already refuses control characters
        node = loader.get_single_node()
        if node is None:
            return None
        _check_expanded_size(node, path)
        return loader.construct_document(node)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else None
        if isinstance(error, yaml.reader.ReaderError):
            problem = f"unacceptable character #x{error.character:04x} at character {error.position}"
        else:
            problem = str(getattr(error, "problem", None) or error)
        problem = " ".join(problem.split())  # one line, whatever PyYAML put in it
        problem = problem if len(problem) <= 200 else problem[:200] + "..."
        raise ConfigError(path, where, f"invalid YAML: {problem}") from None
    except RecursionError:
        raise ConfigError(path, None, f"nested too deeply (more than {MAX_YAML_DEPTH} levels)") from None
    finally:
        if loader is not None:
            loader.dispose()


def _check_expanded_size(root: yaml.Node, path: Path) -> None:
    """Count the values ``root`` stands for with aliases expanded, without expanding them (each node
    once, iteratively): refuse alias bombs, self-referring aliases and excessive nesting."""
    size: dict[int, int] = {}
    height: dict[int, int] = {}
    on_path: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]

    def children(node: yaml.Node) -> list[yaml.Node]:
        if isinstance(node, yaml.MappingNode):
            return [part for pair in node.value for part in pair]
        if isinstance(node, yaml.SequenceNode):
            return list(node.value)
        return []

    while stack:
        node, finished = stack.pop()
        key = id(node)
        if finished:
            below = children(node)
            size[key] = 1 + sum(size[id(child)] for child in below)
            height[key] = 1 + max((height[id(child)] for child in below), default=0)
            on_path.discard(key)
            if size[key] > MAX_YAML_NODES:
                raise ConfigError(path, None, f"its aliases expand to more than {MAX_YAML_NODES:,} values (an alias "
                                  "bomb?); write the values out or use fewer aliases")
            if height[key] > MAX_YAML_DEPTH:
                raise ConfigError(path, None, f"nested too deeply (more than {MAX_YAML_DEPTH} levels)")
            continue
        if key in size:
            continue
        if key in on_path:
            raise ConfigError(path, None, "an alias refers to a value that contains it (a recursive alias)")
        on_path.add(key)
        stack.append((node, True))
        stack.extend((child, False) for child in children(node) if id(child) not in size)


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
        suggestion = close_match(unknown[0], fields)
        hint = f" (did you mean {suggestion!r}?)" if suggestion else ""
        raise ConfigError(file, where or cls.__name__, f"unknown field(s) {unknown}{hint}; known: {sorted(fields)}")
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


# --------------------------------------------------------------------------- validation
# A config is checked against the shipped defaults before anything expensive runs: an unknown key
# (a typo) or a value of the wrong type is an error naming the key, never a silently ignored setting
# or a traceback halfway through training.

_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


def close_match(key: str, candidates: Iterable[str]) -> str | None:
    """The candidate closest to ``key`` (difflib ratio >= 0.6), compared by the last dotted part."""
    leaf = key.rsplit(".", 1)[-1]
    best, best_ratio = None, 0.6
    for candidate in candidates:
        ratio = difflib.SequenceMatcher(None, leaf, candidate.rsplit(".", 1)[-1]).ratio()
        if ratio > best_ratio:
            best, best_ratio = candidate, ratio
    return best


def unknown_key_problem(key: str, known: Iterable[str], elsewhere: Iterable[str] = (), context: str = "",
                        owners: Iterable[str] = ()) -> str:
    """``unknown key (did you mean 'x'?); known keys: ...`` for ``key`` (``section.name``).

    ``known`` are the names the section accepts; ``elsewhere`` dotted keys of other sections, offered
    when the name belongs there (``data.image_size`` -> ``model.image_size``); ``owners`` the other
    architectures whose config has this key (said instead of a guess).
    """
    section = key.rsplit(".", 1)[0] if "." in key else None
    known = sorted(known)
    qualified = [f"{section}.{name}" if section else name for name in known]
    # a name that exists verbatim in another section beats a merely similar name in this one
    leaf = key.rsplit(".", 1)[-1]
    suggestion = next((other for other in elsewhere if other.rsplit(".", 1)[-1] == leaf), None)
    suggestion = suggestion or close_match(key, [*qualified, *elsewhere])
    owners = sorted(owners)
    hint = (f" ({key} is a setting of {', '.join(owners)})" if owners
            else f" (did you mean {suggestion!r}?)" if suggestion else "")
    where = f"{section} keys" if section else "top-level keys"
    return f"unknown key{context}{hint}; known {where}: {', '.join(known)}"


def value_type_problem(value: Any, default: Any) -> str | None:
    """Why ``value`` cannot replace ``default`` (``None`` if it can): the default's type decides; an
    int is a float, ``null`` only replaces ``null``, and a default of ``null`` accepts anything."""
    if default is None:
        return None
    if isinstance(default, bool):
        ok, expected = isinstance(value, bool), "true or false"
    elif isinstance(default, int):
        ok, expected = isinstance(value, int) and not isinstance(value, bool), "an integer"
    elif isinstance(default, float):
        ok, expected = isinstance(value, (int, float)) and not isinstance(value, bool), "a number"
    elif isinstance(default, str):
        ok, expected = isinstance(value, str), "a string"
    elif isinstance(default, (list, tuple)):
        ok, expected = isinstance(value, (list, tuple)), "a list"
    elif isinstance(default, dict):  # a section: its keys are checked on their own
        return None if isinstance(value, dict) else f"expected a mapping, got {value!r}"
    else:
        return None
    return None if ok else f"expected {expected} (default: {default!r}), got {value!r}"


def coerce_number(value: Any, default: Any) -> Any:
    """``"1e-3"`` -> ``0.001`` where the default is a float: PyYAML (YAML 1.1) reads exponent
    notation without a dot as a string, in config files and ``--set`` values alike."""
    if isinstance(default, float) and isinstance(value, str) and _NUMBER.fullmatch(value.strip()):
        return float(value)
    return value


def check_section(values: dict[str, Any], defaults: dict[str, Any], section: str, *,
                  extra_keys: dict[str, Any] | None = None, elsewhere: Iterable[str] = (),
                  source: Callable[[str], str | None] = lambda key: None, context: str = "",
                  owners: Callable[[str], Iterable[str]] = lambda key: (), recursive: bool = True) -> None:
    """Check ``values`` (one config section, ``section`` names it) against ``defaults``.

    Keys must be keys of ``defaults`` or of ``extra_keys`` (optional keys the code reads, with the
    type-defining default); values must have the defaults' types (:func:`value_type_problem`).
    Float strings are converted in place (:func:`coerce_number`). Nested mappings are checked
    recursively unless ``recursive`` is false. ``source(dotted_key)`` names where a value came from (a file, ``--set``), used as
    the error's file; ``owners(dotted_key)`` the other architectures that have an unknown key.
    """
    reference = {**(extra_keys or {}), **defaults}
    for key in list(values):
        dotted = f"{section}.{key}" if section else str(key)
        if key not in reference:
            raise ConfigError(source(dotted), dotted,
                              unknown_key_problem(dotted, reference, elsewhere, context, owners(dotted)))
        default = reference[key]
        values[key] = value = coerce_number(values[key], default)
        problem = value_type_problem(value, default)
        if problem:
            raise ConfigError(source(dotted), dotted, problem)
        if recursive and isinstance(default, dict) and default:
            check_section(value, default, dotted, source=source, context=context, owners=owners)
