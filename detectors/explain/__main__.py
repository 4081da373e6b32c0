"""``python -m detectors.explain FILE... (--run RUN_DIR | --model SUBMISSION) --output DIR``

Attribution maps for each file, with any trained detector (a run directory or an exported
submission): image heat maps, video frame contributions and top-frame maps, audio attribution over
time and mel bands with breath segments. PNGs plus a JSON of the numbers per file, and
``explanations.json``. Exit status 1 when a file could not be read, 2 for a bad model or option.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from detectors.errors import CheckpointError, ConfigError


def load_model(
    run: Path | None, submission: Path | None, device: str
) -> tuple[nn.Module, Callable[[str], Any], str, str]:
    """``(module, path -> model input, modality, name)`` of a run directory or a submission."""
    from detectors.detect import input_loader

    if run is not None:
        from detectors.base import load_detector

        detector = load_detector(run).to(device)
        return (
            detector,
            input_loader(detector.modality, detector.preprocessing(), run / "detector.yaml"),
            detector.modality,
            f"{detector.arch} ({run})",
        )
    from export.benchmark_loader import load_submission

    model, config = load_submission(submission, device=device)
    modality = str(config.get("modality", "image"))
    return (
        model,
        input_loader(modality, config.get("preprocessing") or {}, submission / "model_config.yaml"),
        modality,
        f"{config.get('name', 'submission')} ({submission})",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m detectors.explain",
        description=__doc__.splitlines()[0],
        epilog="image/video methods: auto (ViT token Grad-CAM, CNN Grad-CAM, else "
        "occlusion), vit_gradcam, gradcam, occlusion; audio: auto (ablation), "
        "ablation, integrated_gradients",
    )
    parser.add_argument("files", nargs="+", metavar="FILE", help="image, video or audio files (the model's modality)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--run", type=Path, metavar="RUN_DIR", help="run directory of a fit command")
    source.add_argument("--model", type=Path, metavar="SUBMISSION", help="exported submission directory or zip")
    parser.add_argument("--output", type=Path, required=True, metavar="DIR", help="where the PNGs and JSON go")
    parser.add_argument("--method", default="auto", help="attribution method (see below)")
    parser.add_argument("--top-frames", type=int, default=3, metavar="K", help="video: maps of the K top frames")
    parser.add_argument("--window", type=int, metavar="PX", help="occlusion window (default: 1/8 of the shorter side)")
    parser.add_argument("--bands", type=int, default=8, help="audio: mel bands (default 8)")
    parser.add_argument("--window-seconds", type=float, default=0.25, help="audio: time window (default 0.25 s)")
    parser.add_argument("--steps", type=int, default=16, help="audio integrated gradients: steps (default 16)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    return parser


def main(argv: list[str] | None = None) -> int:
    from detectors.explain import ExplainOptions, explain_files
    from detectors.explain.audio import AUDIO_METHODS
    from detectors.explain.methods import IMAGE_METHODS
    from detectors.training.predict import resolve_device
    from export.benchmark_loader import SubmissionError

    parser = build_parser()
    args = parser.parse_args(argv)
    for flag, value, low in (
        ("--top-frames", args.top_frames, 0),
        ("--bands", args.bands, 1),
        ("--steps", args.steps, 1),
        ("--window", args.window, 2),
    ):
        if value is not None and value < low:
            parser.error(f"{flag} must be >= {low}, got {value}")
    if args.window_seconds <= 0:
        parser.error(f"--window-seconds must be > 0, got {args.window_seconds}")
    try:
        resolve_device(args.device)
        model, load, modality, name = load_model(args.run, args.model, args.device)
        methods = AUDIO_METHODS if modality == "audio" else IMAGE_METHODS
        if args.method not in methods:
            raise ConfigError(
                None,
                "--method",
                f"{args.method!r} is not a method for {modality} models; use one of {', '.join(methods)}",
            )
        options = ExplainOptions(
            method=args.method,
            top_frames=args.top_frames,
            window=args.window,
            bands=args.bands,
            window_s=args.window_seconds,
            steps=args.steps,
            progress=True,
        )
        results = explain_files(model, load, modality, args.files, args.output, options)
    except (ConfigError, CheckpointError, SubmissionError, FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"model: {name}")
    for row in results:
        if "error" in row:
            print(f"ERROR  {row['error']}", file=sys.stderr)
            continue
        if modality == "image":
            peak = row["map"]["peak"]
            where = f"peak at x={peak['x']}, y={peak['y']} ({row['method']})"
        elif modality == "video":
            where = f"top frames {row['top_frames']} (maps: {row['map_method']})"
        else:
            peak = row["peak"]
            where = (
                f"peak {peak['start_s']:.2f}-{peak['end_s']:.2f} s, {peak['low_hz']:.0f}-{peak['high_hz']:.0f} Hz; "
                f"{len(row['breath_segments'])} breath(s) ({row['method']})"
            )
        print(f"{row['prob_fake']:.4f}  {where}  {row['path']} -> {', '.join(row['figures'])}")
    failed = sum("error" in row for row in results)
    print(f"written to {args.output}")
    if failed:
        print(f"{failed} of {len(results)} file(s) could not be read", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
