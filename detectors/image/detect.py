"""``python -m detectors.image.detect IMAGE... (--run RUN_DIR | --model SUBMISSION) [--json OUT]``

``python -m detectors.detect`` for image detectors (same options; models of another modality are refused).
"""

from __future__ import annotations

import sys

from detectors.detect import main as detect_main


def main(argv: list[str] | None = None) -> int:
    return detect_main(argv, modality="image", prog="python -m detectors.image.detect")


if __name__ == "__main__":
    sys.exit(main())
