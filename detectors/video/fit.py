"""``python -m detectors.video.fit --arch restrav|gend|cakelens``: train, calibrate and evaluate a
video detector.

Without ``--data`` it runs the built-in synthetic demo end to end (demo videos -> train -> calibrate
-> export -> ``export.check`` -> benchmark-style evaluation on the validation split) and prints where
the submission is. Frame sampling flags (``--num-frames``, ``--frame-rate``, ``--sampling``,
``--window-sec``, ``--cache-dir``) go into the config; see ``--help``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from detectors.config import set_dotted
from detectors.training.fit import ModalitySupport, main

# Every video architecture the CLI offers; an arch whose module is not installed fails only when chosen.
VIDEO_ARCHS = ["restrav", "gend", "cakelens"]
DEFAULT_ARCH = "restrav"
SAMPLING_MODES = ("benchmark", "window", "uniform", "random")


def write_demo(root: Path) -> Path:
    from detectors.video.demo import write_demo_videos

    return write_demo_videos(root)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("video frames")
    group.add_argument("--num-frames", type=int, help="frames per video (exported as preprocessing.num_frames)")
    group.add_argument("--frame-rate", type=float,
                       help="frames per second sampled (benchmark rule: step round(fps / frame_rate))")
    group.add_argument("--sampling", choices=SAMPLING_MODES,
                       help="frame rule for training/calibration: benchmark (what the benchmark feeds), "
                            "window (ReStraV's centred window), uniform, random")
    group.add_argument("--window-sec", type=float, help="span of the centred window (--sampling window)")
    group.add_argument("--cache-dir", type=Path, help="where decoded frames / features are cached")


def apply_arguments(args: argparse.Namespace, config: dict[str, Any]) -> None:
    """Sampling parameters the detector config defines (and exports) go there; otherwise into data."""
    model = config.setdefault("model", {})
    for flag, key in (("num_frames", "num_frames"), ("frame_rate", "frame_rate"), ("window_sec", "window_sec")):
        value = getattr(args, flag, None)
        if value is not None:
            set_dotted(config, f"model.{key}" if key in model else f"data.{key}", value)
    if getattr(args, "sampling", None) is not None:
        set_dotted(config, "data.sampling", args.sampling)
    if getattr(args, "cache_dir", None) is not None:
        set_dotted(config, "data.cache_dir", str(args.cache_dir))


VIDEO = ModalitySupport(name="video", write_demo=write_demo, add_arguments=add_arguments,
                        apply_arguments=apply_arguments)

if __name__ == "__main__":
    main("video", VIDEO, archs=VIDEO_ARCHS, default_arch=DEFAULT_ARCH)
