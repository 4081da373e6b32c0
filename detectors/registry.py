"""A small timm-style registry: ``create_detector("restrav", **config)``.

Detector classes register themselves with ``@register_detector``; modules are imported lazily by
modality so that importing the registry stays cheap.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from detectors.base import Detector

_REGISTRY: dict[str, type["Detector"]] = {}

# arch name -> module that defines it (imported on first use)
_MODULES: dict[str, str] = {
    "dinov3_image": "detectors.image.dinov3",
    "restrav": "detectors.video.restrav",
    "gend": "detectors.video.gend",
    "cakelens": "detectors.video.cakelens_detector",
    "breathnet": "detectors.audio.breathnet",
}


def register_detector(cls: type["Detector"]) -> type["Detector"]:
    _REGISTRY[cls.arch] = cls
    return cls


def detector_class(arch: str) -> type["Detector"]:
    if arch not in _REGISTRY and arch in _MODULES:
        importlib.import_module(_MODULES[arch])
    if arch not in _REGISTRY:
        raise KeyError(f"unknown detector architecture {arch!r}; available: {', '.join(list_detectors())}")
    return _REGISTRY[arch]


def create_detector(arch: str, config: dict[str, Any] | None = None, **overrides: Any) -> "Detector":
    cls = detector_class(arch)
    return cls.from_config({**(config or {}), **overrides})


def list_detectors(modality: str | None = None) -> list[str]:
    names = sorted(set(_MODULES) | set(_REGISTRY))
    if modality is None:
        return names
    return [n for n in names if _MODULES.get(n, "").startswith(f"detectors.{modality}.")
            or (n in _REGISTRY and _REGISTRY[n].modality == modality)]


