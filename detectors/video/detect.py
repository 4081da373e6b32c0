"""``python -m detectors.video.detect VIDEO... (--run RUN_DIR | --model SUBMISSION) [--json OUT]``

Fake probability of each video with any trained video detector: a run directory (the in-library
model rebuilt with ``load_detector``) or an exported submission (loaded the way the benchmark loads
it). Frames are sampled, cropped and resized exactly as the benchmark does it for the model's
``preprocessing`` (``num_frames`` / ``frame_rate`` / ``resize``). An unreadable video is reported
and skipped; the exit status is 1 when any video failed, 2 for a bad model path.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from detectors.errors import CheckpointError, ConfigError, MediaError
from detectors.training.predict import resolve_device

Predictor = Callable[[torch.Tensor], torch.Tensor]  # [1, T, 3, H, W] uint8 -> logits [1, C]


@dataclass
class VideoModel:
    """A loaded video detector: ``predict`` maps a clip batch to logits; ``load`` decodes a file."""

    name: str
    predict: Predictor
    load: Callable[[str], torch.Tensor]


def from_run(run_dir: Path, device: str = "cpu") -> VideoModel:
    from detectors.base import load_detector
    from detectors.video.data import benchmark_input_loader

    detector = load_detector(run_dir).to(device)
    if detector.modality != "video":
        raise ConfigError(run_dir, None, f"this run holds a {detector.modality} detector, not a video one")
    # what the benchmark would feed its export; detectors may expose it without building the export
    preprocessing = detector.preprocessing() if hasattr(detector, "preprocessing") else detector.export_spec().preprocessing
    return VideoModel(f"{detector.arch} ({run_dir})", lambda x: detector(x.to(device)),
                      benchmark_input_loader(preprocessing))


def submission_modality(path: Path) -> str | None:
    """``modality`` of a submission's model_config.yaml (directory or zip), read without loading the
    model; None when it cannot be read (loading the submission then reports why)."""
    import zipfile

    import yaml

    try:
        if path.is_file() and zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                text = archive.read("model_config.yaml").decode("utf-8")
        else:
            text = (path / "model_config.yaml").read_text(encoding="utf-8")
        config = yaml.safe_load(text)
    except (OSError, KeyError, UnicodeDecodeError, yaml.YAMLError, zipfile.BadZipFile):
        return None
    modality = config.get("modality") if isinstance(config, dict) else None
    return None if modality is None else str(modality)


def from_submission(path: Path, device: str = "cpu") -> VideoModel:
    from detectors.video.data import benchmark_input_loader
    from export.benchmark_loader import load_submission, run_model

    # An image or audio model would only fail inside its own forward on a video batch.
    modality = submission_modality(path)
    if modality is not None and modality != "video":
        raise ConfigError(None, None, f"{path} is {'an' if modality[:1] in 'aeiou' else 'a'} {modality} model "
                          f"(model_config.yaml modality: {modality}); detect takes video submissions")
    model, config = load_submission(path, device=device)
    return VideoModel(f"{config.get('name', 'submission')} ({path})", lambda x: run_model(model, x),
                      benchmark_input_loader(config.get("preprocessing") or {}))


def prob_fake(logits: torch.Tensor) -> float:
    from detectors.metrics import prob_fake_from_logits

    return float(prob_fake_from_logits(logits.float().cpu())[0])


def is_fake(logits: torch.Tensor) -> bool:
    """The benchmark's hard decision: argmax (a tie is "real"), ``argmax != 0`` for 3 classes. For 3
    classes this can differ from ``prob_fake >= 0.5`` (p = (0.4, 0.35, 0.25) is "real" at p(fake) 0.6)."""
    from detectors.metrics import predictions_from_logits

    return bool(predictions_from_logits(logits.float().cpu())[0])


def detect(model: VideoModel, videos: list[str]) -> list[dict[str, Any]]:
    """One result per video: ``{"path", "prob_fake", "label"}`` or ``{"path", "error"}``."""
    results = []
    for path in videos:
        try:
            clip = model.load(path)
        except MediaError as error:
            results.append({"path": path, "error": str(error)})
            continue
        except Exception as error:  # decoders raise anything from OSError to RuntimeError
            results.append({"path": path, "error": str(MediaError(path, f"cannot decode: {type(error).__name__}: {error}"))})
            continue
        with torch.inference_mode():
            logits = model.predict(clip.unsqueeze(0))
        results.append({"path": path, "prob_fake": prob_fake(logits), "label": "fake" if is_fake(logits) else "real"})
    return results


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m detectors.video.detect", description=__doc__.splitlines()[0])
    parser.add_argument("videos", nargs="+", help="video files (or folders of frames)")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--run", type=Path, help="run directory written by python -m detectors.video.fit")
    source.add_argument("--model", type=Path, help="exported submission directory or zip")
    source.add_argument("--weights", type=Path,
                        help="with --arch cakelens: the original CakeLens v5 checkpoint (.pth or .safetensors)")
    parser.add_argument("--arch", choices=["cakelens"], help="run an original checkpoint of this architecture")
    parser.add_argument("--json", type=Path, help="also write the results as JSON here")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch-size", type=int, default=4, help="framesets per forward pass (cakelens)")
    return parser


def main_cakelens(args: argparse.Namespace) -> int:
    """The original CakeLens v5 tool's output: 17 label percentages per video, JSON like the original."""
    from detectors.video.cakelens_detector import detect_cakelens, format_cakelens_report

    results = detect_cakelens(args.videos, args.weights, device=args.device, batch_size=args.batch_size,
                              json_out=args.json)
    for result in results:
        if "error" in result:
            print(f"ERROR  {result['error']}", file=sys.stderr)
        else:
            print(format_cakelens_report(result))
    return 1 if any("error" in r for r in results) else 0


def load_model(args: argparse.Namespace) -> VideoModel:
    """The model named on the command line; arch-specific sources (e.g. original weights) go here."""
    if args.run is not None:
        return from_run(args.run, args.device)
    return from_submission(args.model, args.device)


def main(argv: list[str] | None = None) -> int:
    from detectors.atomic import write_json
    from export.benchmark_loader import SubmissionError

    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        resolve_device(args.device)
    except ConfigError as error:
        parser.error(str(error))
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
    try:
        model = load_model(args)
    except (ConfigError, CheckpointError, SubmissionError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    results = detect(model, args.videos)
    for row in results:
        if "error" in row:
            print(f"ERROR  {row['error']}", file=sys.stderr)
        else:
            print(f"{row['prob_fake']:.4f}  {row['label']:<4}  {row['path']}")
    failed = sum("error" in row for row in results)
    if args.json is not None:
        write_json(args.json, {"model": model.name, "results": results, "failed": failed})
    if failed:
        print(f"{failed} of {len(results)} video(s) could not be read", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
