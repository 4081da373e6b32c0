"""``python -m detectors.video.detect VIDEO... (--run RUN_DIR | --model SUBMISSION) [--json OUT]``

``python -m detectors.detect`` for video detectors: the fake probability of each video with a trained
video detector (a run directory or an exported submission), frames sampled, cropped and resized
exactly as the benchmark does for the model's ``preprocessing`` (``num_frames`` / ``frame_rate`` /
``resize``). Image and audio models are refused. An unreadable video is reported and skipped; the
exit status is 1 when any video failed, 2 for a bad model path.

``--arch cakelens --weights PATH`` runs the original CakeLens v5 checkpoint instead and prints its 17
label percentages per video, like the original tool.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

from detectors import cli
from detectors import detect as shared
from detectors.cli import command
from detectors.detect import LoadedModel, detect, submission_modality  # noqa: F401  (this module's API)
from detectors.errors import CheckpointError, ConfigError

CAKELENS_BATCH_SIZE = 4  # framesets per forward pass


@dataclass
class VideoModel(LoadedModel):
    """A loaded video detector: ``predict`` maps a clip batch ``[B, T, 3, H, W]`` to logits; ``load``
    decodes a file."""

    modality: str = "video"


def from_run(run_dir: Path, device: str = "cpu") -> LoadedModel:
    return shared.from_run(run_dir, device, modality="video")


def from_submission(path: Path, device: str = "cpu") -> LoadedModel:
    return shared.from_submission(path, device, modality="video")


def build_parser() -> argparse.ArgumentParser:
    parser = cli.ArgumentParser(prog="python -m detectors.video.detect", description=__doc__.splitlines()[0])
    source = shared.add_detect_arguments(
        parser,
        metavar="VIDEO",
        files_help="video files (or folders of frames)",
        required_source=False,
        batch_help=f"videos per forward pass (default 1); with --arch cakelens: framesets (default {CAKELENS_BATCH_SIZE})",
    )
    source.add_argument(
        "--weights", type=Path, help="with --arch cakelens: the original CakeLens v5 checkpoint (.pth or .safetensors)"
    )
    parser.add_argument("--arch", choices=["cakelens"], help="run an original checkpoint of this architecture")
    return parser


def main_cakelens(args: argparse.Namespace) -> int:
    """The original CakeLens v5 tool's output: 17 label percentages per video, JSON like the original."""
    from detectors.video.cakelens_detector import detect_cakelens, format_cakelens_report

    batch_size = CAKELENS_BATCH_SIZE if args.batch_size is None else args.batch_size
    results = detect_cakelens(args.files, args.weights, device=args.device, batch_size=batch_size, json_out=args.json)
    for result in results:
        if "error" in result:
            print(f"ERROR  {result['error']}", file=sys.stderr)
        else:
            print(format_cakelens_report(result))
    return 1 if any("error" in r for r in results) else 0


@command
def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    shared.check_device(parser, args)
    if args.arch == "cakelens":
        if args.weights is None:
            parser.error("--arch cakelens needs --weights PATH (an original CakeLens v5 checkpoint)")
        try:
            return main_cakelens(args)
        except (CheckpointError, ConfigError) as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
    if args.run is None and args.model is None:
        parser.error("give --run RUN_DIR or --model SUBMISSION (or --arch cakelens --weights PATH)")
    return shared.run_detection(args, "video")


if __name__ == "__main__":
    sys.exit(main())
