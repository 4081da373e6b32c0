"""``python -m detectors.image.fit``: train, calibrate and evaluate an image detector.

Without ``--data`` it runs the built-in synthetic demo end to end (train -> calibrate -> export ->
evaluate). See ``--help`` and the README for every option.
"""

from __future__ import annotations

from pathlib import Path

from detectors.training.fit import ModalitySupport, main


def write_demo(root: Path) -> Path:
    from detectors.image.demo import write_demo_images

    return write_demo_images(root)


IMAGE = ModalitySupport(name="image", write_demo=write_demo)

if __name__ == "__main__":
    main("image", IMAGE)
