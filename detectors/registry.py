"""A small timm-style registry: ``create_detector("restrav", config)``, ``list_detectors("video")``.

An architecture's name is written once, as the ``arch`` attribute of its ``@register_detector``
class. The registry finds detectors without importing them: it reads the modules of
``detectors/image``, ``detectors/video`` and ``detectors/audio`` (their syntax tree only) for such
classes, and imports a module when one of its architectures is first asked for. Detectors living
elsewhere register by being imported (``@register_detector`` runs), or, for installed packages,
through the ``forensic_adapters.detectors`` entry-point group (``name = "package.module"``).
"""

from __future__ import annotations

import ast
import functools
import importlib
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from detectors.base import Detector

MODALITY_PACKAGES = ("image", "video", "audio")
ENTRY_POINT_GROUP = "forensic_adapters.detectors"

_REGISTRY: dict[str, type[Detector]] = {}


@dataclass(frozen=True)
class _Declared:
    """What the source of a detector module says about one of its architectures."""

    module: str
    modality: str
    modality_default: bool


def register_detector(cls: type[Detector]) -> type[Detector]:
    """Class decorator: make ``cls.arch`` available to :func:`create_detector` and the CLIs."""
    existing = _REGISTRY.get(cls.arch)
    if existing is not None and existing is not cls and existing.__qualname__ != cls.__qualname__:
        raise ValueError(
            f"detector architecture {cls.arch!r} is defined twice: {existing.__module__}.{existing.__name__} "
            f"and {cls.__module__}.{cls.__name__}"
        )
    _REGISTRY[cls.arch] = cls
    return cls


@functools.cache
def _declared() -> dict[str, _Declared]:
    """arch -> declaration, read from the syntax trees of the modality packages (no imports)."""
    root = Path(__file__).resolve().parent
    found: dict[str, _Declared] = {}
    for package in MODALITY_PACKAGES:
        for path in sorted((root / package).glob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
            for node in tree.body:
                if isinstance(node, ast.ClassDef) and any(_is_register(d) for d in node.decorator_list):
                    values = _class_constants(node)
                    if isinstance(values.get("arch"), str):
                        found[values["arch"]] = _Declared(
                            f"detectors.{package}.{path.stem}",
                            str(values.get("modality", package)),
                            bool(values.get("modality_default", False)),
                        )
    return found


@functools.cache
def _load_plugins() -> None:
    """Import the detector modules installed packages announce (they register when imported)."""
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        importlib.import_module(entry.value)


def _is_register(decorator: ast.expr) -> bool:
    target = decorator.func if isinstance(decorator, ast.Call) else decorator
    return (isinstance(target, ast.Name) and target.id == "register_detector") or (
        isinstance(target, ast.Attribute) and target.attr == "register_detector"
    )


def _class_constants(node: ast.ClassDef) -> dict[str, Any]:
    values = {}
    for statement in node.body:
        targets = (
            statement.targets
            if isinstance(statement, ast.Assign)
            else [statement.target]
            if isinstance(statement, ast.AnnAssign) and statement.value is not None
            else []
        )
        for target in targets:
            if isinstance(target, ast.Name):
                try:
                    values[target.id] = ast.literal_eval(statement.value)
                except ValueError:
                    pass
    return values


def detector_class(arch: str) -> type[Detector]:
    if arch not in _REGISTRY:
        declared = _declared().get(arch)
        if declared is not None:
            importlib.import_module(declared.module)
    if arch not in _REGISTRY:
        _load_plugins()
    if arch not in _REGISTRY:
        raise KeyError(f"unknown detector architecture {arch!r}; available: {', '.join(list_detectors())}")
    return _REGISTRY[arch]


def create_detector(arch: str, config: dict[str, Any] | Any | None = None) -> Detector:
    return detector_class(arch).from_config(config)


def list_detectors(modality: str | None = None) -> list[str]:
    """Architectures of ``modality`` (all when ``None``): the declared ones and any registered since."""
    _load_plugins()
    names = {arch: declared.modality for arch, declared in _declared().items()}
    names.update({arch: cls.modality for arch, cls in _REGISTRY.items()})
    return sorted(arch for arch, found in names.items() if modality is None or found == modality)


def default_detector(modality: str) -> str:
    """The architecture a modality's fit command trains without ``--arch`` (``modality_default = True``)."""
    defaults = [
        arch for arch, declared in _declared().items() if declared.modality == modality and declared.modality_default
    ]
    defaults += [
        arch
        for arch, cls in _REGISTRY.items()
        if cls.modality == modality and getattr(cls, "modality_default", False) and arch not in defaults
    ]
    if len(defaults) != 1:
        available = list_detectors(modality)
        if len(available) == 1:
            return available[0]
        raise LookupError(f"expected one default {modality} detector (modality_default = True), found {defaults}")
    return defaults[0]


__all__ = ["create_detector", "default_detector", "detector_class", "list_detectors", "register_detector"]
