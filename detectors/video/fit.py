"""``python -m detectors.video.fit --arch restrav|gend|cakelens``: train, calibrate and evaluate a
video detector.

Without ``--data`` it runs the built-in synthetic demo end to end (demo videos -> train -> calibrate
-> export -> ``export.check`` -> benchmark-style evaluation on the validation split) and prints where
the submission is. Frame sampling flags (``--num-frames``, ``--frame-rate``, ``--sampling``,
``--window-sec``, ``--cache-dir``) go into the config; see ``--help``.
"""

from __future__ import annotations

import argparse
import typing
from pathlib import Path

from detectors.registry import default_detector, list_detectors
from detectors.settings import ConfigLayers
from detectors.training.fit import ModalitySupport, main
from detectors.video.sampling import SamplingMode

SAMPLING_MODES = typing.get_args(SamplingMode)
VIDEO_ARCHS = list_detectors("video")  # every registered video detector (found by its `arch`)
DEFAULT_ARCH = default_detector("video")


def write_demo(root: Path) -> Path:
    from detectors.video.demo import write_demo_videos

    return write_demo_videos(root)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("video frames")
    group.add_argument("--num-frames", type=int, help="frames per video (exported as preprocessing.num_frames)")
    group.add_argument(
        "--frame-rate", type=float, help="frames per second sampled (benchmark rule: step round(fps / frame_rate))"
    )
    group.add_argument(
        "--sampling",
        choices=SAMPLING_MODES,
        help="frame rule for training/calibration: benchmark (what the benchmark feeds), "
        "window (ReStraV's centred window), uniform, random",
    )
    group.add_argument("--window-sec", type=float, help="span of the centred window (--sampling window)")
    group.add_argument("--cache-dir", type=Path, help="where decoded frames / features are cached")


def apply_arguments(args: argparse.Namespace, layers: ConfigLayers, model_fields: set[str]) -> None:
    """Sampling parameters the detector's model section defines (and exports) go there; otherwise
    into its data section (an arch without that setting then says the flag does not apply)."""
    for name in ("num_frames", "frame_rate", "window_sec"):
        value = getattr(args, name, None)
        if value is not None:
            layers.set(
                f"model.{name}" if name in model_fields else f"data.{name}", value, f"--{name.replace('_', '-')}"
            )
    if getattr(args, "sampling", None) is not None:
        layers.set("data.sampling", args.sampling, "--sampling")
    if getattr(args, "cache_dir", None) is not None:
        layers.set("data.cache_dir", str(args.cache_dir), "--cache-dir")


VIDEO = ModalitySupport(
    name="video", write_demo=write_demo, add_arguments=add_arguments, apply_arguments=apply_arguments
)

if __name__ == "__main__":
    main("video", VIDEO)
