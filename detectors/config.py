"""Typed configuration: dataclass settings with help and bounds, parsed from YAML with clear errors.

Every setting of a run is a field of a dataclass declared with :func:`setting` (default, one-line
help, optional bounds); ``Literal`` annotations list the choices. :func:`parse` builds such a
dataclass from the mapping a YAML file (or ``--set``) gives, checking every key and value against
the annotations: an unknown key names a close match, a wrong type or an out-of-range value names
the key, the expected type and where the value was set. :func:`to_dict` writes it back.

Why dataclasses and not pydantic: the same classes are the detectors' attribute-style configs and
the exported constructor arguments; they need no second type system, their defaults and help live
in one place, and the error messages (file, key, where it was set, a close match) are the
project's own. ``python -m detectors.config ARCH`` prints every setting of an architecture.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import math
import re
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml

from detectors.errors import ConfigError

T = TypeVar("T")

CONFIG_ROOT = Path(__file__).resolve().parent.parent / "configs"
Source = Callable[[str], "str | None"]  # dotted key -> where its value was set (a file, a flag)


#: Input limits of :func:`load_yaml`. A configuration or dataset YAML is a few KB; PyYAML
#: parses about 150 KB/s, so a 10 MB file took 65 s before failing. Aliases are shared when loaded,
#: but code walking the result sees them expanded: a 519-byte "billion laughs" file took 37 s and
#: 4.2 GB. Depth: PyYAML's composer recurses, so an absurdly nested file hits RecursionError.
MAX_YAML_BYTES = 1 << 20
MAX_YAML_NODES = 1_000_000  # values after expanding aliases
MAX_YAML_DEPTH = 100


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping (see :func:`read_yaml_document`); a document that is not a mapping is a
    ConfigError naming the file."""
    path = Path(path)
    data = read_yaml_document(path)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(path, None, f"expected a mapping at the top level, got {type(data).__name__}")
    return data


def read_yaml_document(path: str | Path) -> Any:
    """Parse a YAML file; syntax errors name the file and line.

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
        raise ConfigError(
            path,
            None,
            f"too large for a YAML configuration ({size / 2**20:.1f} MiB; the limit is "
            f"{MAX_YAML_BYTES / 2**20:g} MiB): is this the right file?",
        )
    if b"\x00" in raw:
        raise ConfigError(path, None, "a binary file, not YAML text: is this the right file?")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise ConfigError(
            path, None, f"not UTF-8 text (byte 0x{raw[error.start]:02x} at offset {error.start}); save it as UTF-8"
        ) from None
    return _parse_yaml(text, path)


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
                raise ConfigError(
                    path,
                    None,
                    f"its aliases expand to more than {MAX_YAML_NODES:,} values (an alias "
                    "bomb?); write the values out or use fewer aliases",
                )
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


# --------------------------------------------------------------------------- declaring settings
def setting(
    default: Any = dataclasses.MISSING,
    *,
    help: str,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
) -> Any:
    """A dataclass field: its default (lists, mappings and dataclasses are copied per instance), a
    one-line ``help`` for the schema dump, and optional bounds checked by :func:`parse`."""
    metadata = {
        "help": help,
        "bounds": {k: v for k, v in (("ge", ge), ("gt", gt), ("le", le), ("lt", lt)) if v is not None},
    }
    if isinstance(default, (list, dict, set)) or dataclasses.is_dataclass(default):
        return dataclasses.field(default_factory=lambda: copy.deepcopy(default), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def help_of(field: dataclasses.Field) -> str:
    return field.metadata.get("help", "")


# --------------------------------------------------------------------------- parsing
def parse(
    cls: type[T], data: Any, where: str = "", source: Source = lambda key: None, file: str | Path | None = None
) -> T:
    """Build dataclass ``cls`` from ``data`` (a mapping; ``None`` gives the defaults).

    ``where`` is the dotted key of ``data`` (``"model"``); ``source(dotted_key)`` names where a value
    was set and becomes the error's file (``file`` when it names nothing). A class with a
    ``shorthand`` class attribute also accepts a scalar for that field (``backbone: NAME``).
    """
    if isinstance(data, cls):
        return data
    if data is None:
        data = {}
    shorthand = getattr(cls, "shorthand", None)
    if shorthand and isinstance(data, str):
        data = {shorthand: data}
    if not isinstance(data, Mapping):
        raise ConfigError(_source(source, where, file), where or cls.__name__, f"expected a mapping, got {data!r}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    hints = typing.get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        dotted = f"{where}.{key}" if where else str(key)
        if key not in fields:
            raise ConfigError(_source(source, dotted, file), dotted, unknown_key_problem(dotted, fields))
        kwargs[key] = convert(_over_default(fields[key], value), hints[key], dotted, source, file)
        check_bounds(kwargs[key], fields[key], dotted, _source(source, dotted, file))
    try:
        return cls(**kwargs)
    except ConfigError as error:  # a check across fields in __post_init__, keyed relative to this section
        dotted = f"{where}.{error.where}" if where and error.where else (error.where or where)
        raise ConfigError(error.file or _source(source, dotted, file), dotted, error.problem) from None


def _over_default(field: dataclasses.Field, value: Any) -> Any:
    """A mapping (or shorthand) given for a section whose default is a configured instance (ReStraV's
    ``backbone`` defaults to DINOv2-small) overrides that instance's values, not the section class's."""
    if field.default_factory is dataclasses.MISSING:
        return value
    default = field.default_factory()
    if not dataclasses.is_dataclass(default):
        return value
    shorthand = getattr(type(default), "shorthand", None)
    if shorthand and isinstance(value, str):
        value = {shorthand: value}
    if not isinstance(value, Mapping):
        return value
    return deep_merge(to_dict(default), dict(value))


def _source(source: Source, dotted: str, file: str | Path | None) -> str | Path | None:
    return source(dotted) or file


def convert(
    value: Any, hint: Any, dotted: str, source: Source = lambda key: None, file: str | Path | None = None
) -> Any:
    """``value`` as the annotation ``hint`` wants it (nested dataclasses built, lists of numbers as
    lists, ``"1e-3"`` as a float), or a :class:`ConfigError` saying what was expected."""
    converted = _convert(value, hint, dotted, source, file)
    if converted is _INVALID:
        raise ConfigError(_source(source, dotted, file), dotted, f"expected {describe(hint)}, got {value!r}")
    return converted


_INVALID = object()
_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?|[-+]?(inf|nan)", re.IGNORECASE)


def _convert(value: Any, hint: Any, dotted: str, source: Source, file: str | Path | None) -> Any:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any or hint is object:
        return value
    if hint is type(None):
        return None if value is None else _INVALID
    if origin is typing.Union or origin is types.UnionType:
        # the exact type first: a float option must not turn an integer setting into a float
        for arg in sorted(args, key=lambda a: a is float):
            converted = _convert(value, arg, dotted, source, file)
            if converted is not _INVALID:
                return converted
        return _INVALID
    if origin is Literal:
        return value if any(value == a and type(value) is type(a) for a in args) else _INVALID
    if dataclasses.is_dataclass(hint):
        if value is None or isinstance(value, (Mapping, str)) or isinstance(value, hint):
            return parse(hint, value, dotted, source, file)
        return _INVALID
    if hint is bool:
        return value if isinstance(value, bool) else _INVALID
    if hint is int:
        return value if isinstance(value, int) and not isinstance(value, bool) else _INVALID
    if hint is float:
        if isinstance(value, str) and _NUMBER.fullmatch(value.strip()):  # YAML 1.1 reads 1e-3 as a string
            value = float(value)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if not math.isfinite(value):
                raise ConfigError(_source(source, dotted, file), dotted, f"must be a finite number, got {value!r}")
            return float(value)
        return _INVALID
    if hint is str:
        return value if isinstance(value, str) else _INVALID
    if origin in (list, tuple, typing.Sequence) or hint in (list, tuple):
        if not isinstance(value, (list, tuple)):
            return _INVALID
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                return _INVALID
            items = [_convert(v, a, dotted, source, file) for v, a in zip(value, args)]
            return _INVALID if _INVALID in items else tuple(items)
        item_hint = args[0] if args else Any
        items = [_convert(v, item_hint, dotted, source, file) for v in value]
        if any(item is _INVALID for item in items):
            return _INVALID
        return tuple(items) if origin is tuple else list(items)
    if origin in (dict, Mapping) or hint is dict:
        if not isinstance(value, Mapping):
            return _INVALID
        value_hint = args[1] if len(args) == 2 else Any
        items = {k: _convert(v, value_hint, f"{dotted}.{k}", source, file) for k, v in value.items()}
        return _INVALID if any(v is _INVALID for v in items.values()) else items
    # a class YAML cannot produce (a Lightning Strategy or Profiler object): leave it to its owner
    return value if value is not None else _INVALID


def check_bounds(value: Any, field: dataclasses.Field, dotted: str, where_set: str | Path | None) -> None:
    bounds = field.metadata.get("bounds") or {}
    if not bounds or value is None:
        return
    values = value if isinstance(value, (list, tuple)) else [value]
    for item in values:
        if not isinstance(item, (int, float)) or isinstance(item, bool):
            continue
        for name, limit in bounds.items():
            ok = {"ge": item >= limit, "gt": item > limit, "le": item <= limit, "lt": item < limit}[name]
            if not ok:
                symbol = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<"}[name]
                raise ConfigError(
                    where_set,
                    dotted,
                    f"must be {describe_bounds(bounds)}, got {value!r}"
                    if len(bounds) > 1
                    else f"must be {symbol} {_fmt(limit)}, got {value!r}",
                )


def describe_bounds(bounds: Mapping[str, float]) -> str:
    symbols = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<"}
    return " and ".join(f"{symbols[name]} {_fmt(limit)}" for name, limit in bounds.items())


def _fmt(number: float) -> str:
    return str(int(number)) if float(number).is_integer() else repr(number)


def describe(hint: Any) -> str:
    """``an integer``, ``true or false``, ``one of 'a', 'b'``, ``a number or null``, ... for messages."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Union or origin is types.UnionType:
        parts = [describe(arg) for arg in args if arg is not type(None)]
        text = " or ".join(dict.fromkeys(parts))
        return f"{text} or null" if type(None) in args else text
    if origin is Literal:
        return "one of " + ", ".join(repr(arg) for arg in args)
    if hint is type(None):
        return "null"
    if dataclasses.is_dataclass(hint):
        return "a mapping"
    if origin in (list, tuple, typing.Sequence) or hint in (list, tuple):
        if origin is tuple and args and args[-1] is not Ellipsis:
            return f"a list of {len(args)} {describe(args[0]).removeprefix('a ').removeprefix('an ')}s"
        return f"a list of {_plural(describe(args[0]))}" if args and args[0] is not Any else "a list"
    if origin in (dict, Mapping) or hint is dict:
        return "a mapping"
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(
        hint, getattr(hint, "__name__", str(hint))
    )


def _plural(text: str) -> str:
    for article in ("an ", "a "):
        if text.startswith(article):
            return text[len(article) :] + "s"
    return text


def type_name(hint: Any) -> str:
    """Short type for the schema dump: ``int``, ``float | null``, ``'cls' | 'mean'``, ``list[int]``."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Union or origin is types.UnionType:
        return " | ".join(dict.fromkeys("null" if a is type(None) else type_name(a) for a in args))
    if origin is Literal:
        return " | ".join(repr(a) for a in args)
    if origin in (list, tuple, dict, typing.Sequence, Mapping):
        inner = ", ".join("..." if a is Ellipsis else type_name(a) for a in args)
        return f"{getattr(origin, '__name__', 'list')}[{inner}]" if inner else getattr(origin, "__name__", "list")
    if dataclasses.is_dataclass(hint):
        return "section"
    if hint is Any:
        return "any"
    return getattr(hint, "__name__", str(hint).replace("typing.", ""))


def to_dict(obj: Any) -> Any:
    """Dataclasses -> plain dicts/lists (tuples become lists so YAML round-trips)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    if isinstance(obj, Path):
        return str(obj)
    return obj


def schema_rows(cls: type, prefix: str = "", instance: Any = None) -> list[tuple[str, str, Any, str]]:
    """``(dotted key, type, value, help)`` of every leaf setting of ``cls`` (values of ``instance``,
    or the defaults), nested sections flattened."""
    instance = instance if instance is not None else cls()
    hints = typing.get_type_hints(cls)
    rows = []
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        dotted = f"{prefix}{f.name}"
        value = getattr(instance, f.name)
        hint = hints[f.name]
        nested = next((a for a in (hint, *typing.get_args(hint)) if dataclasses.is_dataclass(a)), None)
        if nested is not None and dataclasses.is_dataclass(value):
            rows += schema_rows(type(value), f"{dotted}.", value)
        else:
            rows.append((dotted, type_name(hint), to_dict(value), help_of(f)))
    return rows


def find_setting(cls: type, dotted: str) -> tuple[dataclasses.Field, Any] | None:
    """The field and annotation of the leaf setting ``dotted`` (``model.tuning.lora.rank``) of the
    dataclass ``cls``; ``None`` when no such setting exists (a section is not a leaf)."""
    *sections, leaf = dotted.split(".")
    for name in sections:
        fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
        if name not in fields:
            return None
        hint = typing.get_type_hints(cls)[name]
        nested = next((a for a in (hint, *typing.get_args(hint)) if dataclasses.is_dataclass(a)), None)
        if nested is None:
            return None
        cls = nested
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    if leaf not in fields:
        return None
    hint = typing.get_type_hints(cls)[leaf]
    if any(dataclasses.is_dataclass(a) for a in (hint, *typing.get_args(hint))):
        return None
    return fields[leaf], hint


# --------------------------------------------------------------------------- messages
def close_match(key: str, candidates: Iterable[str]) -> str | None:
    """The candidate closest to ``key`` (difflib ratio >= 0.6), compared by the last dotted part."""
    leaf = key.rsplit(".", 1)[-1]
    best, best_ratio = None, 0.6
    for candidate in candidates:
        ratio = difflib.SequenceMatcher(None, leaf, candidate.rsplit(".", 1)[-1]).ratio()
        if ratio > best_ratio:
            best, best_ratio = candidate, ratio
    return best


def unknown_key_problem(
    key: str, known: Iterable[str], elsewhere: Iterable[str] = (), context: str = "", owners: Iterable[str] = ()
) -> str:
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
    hint = (
        f" ({key} is a setting of {', '.join(owners)})"
        if owners
        else f" (did you mean {suggestion!r}?)"
        if suggestion
        else ""
    )
    where = f"{section} keys" if section else "top-level keys"
    return f"unknown key{context}{hint}; known {where}: {', '.join(known)}"


# --------------------------------------------------------------------------- where values were set
def record_sources(sources: dict[str, str], values: Mapping[str, Any], label: str, prefix: str = "") -> None:
    """Remember ``label`` for every dotted key of ``values``; the latest setting moves to the end."""
    for key, value in values.items():
        dotted = f"{prefix}{key}"
        sources.pop(dotted, None)
        sources[dotted] = label
        if isinstance(value, Mapping):
            record_sources(sources, value, label, f"{dotted}.")


def source_of(sources: Mapping[str, str], dotted: str) -> str | None:
    """Where ``dotted`` was set. An error may name a parent (``model.tuning.lora: ...``): then the one
    source of the keys below it, else its nearest recorded parent's source; ``None`` when several
    sources are involved or only the defaults."""
    entries = [(key, label) for key, label in sources.items() if key == dotted or key.startswith(f"{dotted}.")]
    if entries and entries[-1][0] == dotted:
        return entries[-1][1]  # set last, as a whole (``--set data=5``)
    labels = {label for _, label in entries}
    if len(labels) == 1:
        return labels.pop()
    if labels:
        return None
    parts = dotted.split(".")
    for end in range(len(parts) - 1, 0, -1):
        label = sources.get(".".join(parts[:end]))
        if label is not None:
            return label
    return None


def flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def main(argv: list[str] | None = None) -> int:
    """``python -m detectors.config ARCH``: every setting of an architecture."""
    from detectors.cli import command
    from detectors.settings import schema_main

    return command(schema_main)(argv)


if __name__ == "__main__":
    raise SystemExit(main())
