"""Foundation-model adapters for detecting AI-generated images, videos and audio.

    from detectors import create_detector, list_detectors, load_detector

    detector = load_detector("runs/restrav")          # a trained run, rebuilt offline
    logits = detector(frames_uint8)                     # calibrated [B, 2]: 0 real, 1 fake

Detector architectures (``list_detectors()``): dinov3_image, restrav, gend, cakelens, breathnet.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["create_detector", "list_detectors", "load_detector", "__version__"]


def __getattr__(name: str) -> Any:
    # lazy: `import detectors.video.io` should not pay for torch models it does not use
    if name in ("create_detector", "list_detectors"):
        from detectors import registry

        return getattr(registry, name)
    if name == "load_detector":
        from detectors.base import load_detector

        return load_detector
    raise AttributeError(f"module 'detectors' has no attribute {name!r}")
