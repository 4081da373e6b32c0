"""``python -m detectors.detect FILE... (--run RUN_DIR | --model SUBMISSION) [--json OUT]``

Fake probability of each image, video or audio file with any trained detector: a run directory (the
in-library model rebuilt with ``load_detector``) or an exported submission (loaded the way the
benchmark loads it). The modality comes from the model (detector.yaml / model_config.yaml), and each
file is decoded, cropped and resized exactly as the benchmark prepares it for that model
(``detectors.<modality>.data.benchmark_input_loader``). The decision is the benchmark's (argmax;
3-class heads: real vs not). An unreadable file, or one of another modality, is reported and the
others are still scored; the exit status is 1 when any file failed, 2 for a bad model path or option.

``python -m detectors.image.detect`` / ``detectors.video.detect`` / ``detectors.audio.detect`` are the
same command for one modality (they refuse models of another).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm  # not tqdm.auto: its asyncio variant calls iter() on a DataLoader twice (double workers)

from detectors import cli
from detectors.cli import command
from detectors.data.catalog import EXTENSIONS, MEDIA_TYPES, MODALITIES
from detectors.data.dataset import load_media
from detectors.errors import CheckpointError, ConfigError, MediaError
from detectors.training.predict import resolve_device

Predictor = Callable[[torch.Tensor], torch.Tensor]  # a batch of benchmark inputs -> logits [B, C]

# Files per forward pass when --batch-size is not given: a video clip is T frames, so one at a time.
DEFAULT_BATCH_SIZE = {"image": 16, "audio": 8, "video": 1}
FILE_NOUN = {"image": "image(s)", "video": "video(s)", "audio": "audio file(s)"}


@dataclass
class LoadedModel:
    """A detector ready to score files: ``predict`` maps a batch of benchmark inputs to logits,
    ``load`` decodes one file exactly as the benchmark does for this model."""

    name: str
    predict: Predictor
    load: Callable[[str], torch.Tensor]
    modality: str


def _article(word: str) -> str:
    return "an" if word[:1] in "aeiou" else "a"


def input_loader(modality: str, preprocessing: dict[str, Any], source: str | Path) -> Callable[[str], torch.Tensor]:
    """The benchmark's ``path -> model input`` for ``preprocessing`` (no robustness augmentations); a
    setting the loader rejects is a ConfigError naming ``source``, not a traceback."""
    from detectors.evaluate import benchmark_input_loader

    if modality not in MODALITIES:
        raise ConfigError(source, "modality", f"must be one of {', '.join(MODALITIES)}, got {modality!r}")
    try:
        return benchmark_input_loader(modality, preprocessing, False)
    except ConfigError:
        raise
    except ValueError as error:
        raise ConfigError(source, "preprocessing", str(error)) from error


def from_run(run_dir: str | Path, device: str | torch.device = "cpu", modality: str | None = None) -> LoadedModel:
    """A run directory's detector, fed what the benchmark would feed its export. ``modality``, when
    given, is the one the caller accepts."""
    from detectors.base import load_detector

    detector = load_detector(run_dir).to(device)
    if modality is not None and detector.modality != modality:
        raise ConfigError(
            run_dir,
            None,
            f"this run holds {_article(detector.modality)} {detector.modality} "
            f"detector, not {_article(modality)} {modality} one",
        )
    preprocessing = detector.preprocessing()  # what the export writes, without converting the backbone
    return LoadedModel(
        f"{detector.arch} ({run_dir})",
        lambda x: detector(x.to(device)),
        input_loader(detector.modality, preprocessing, Path(run_dir) / "detector.yaml"),
        detector.modality,
    )


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


def from_submission(path: str | Path, device: str | torch.device = "cpu", modality: str | None = None) -> LoadedModel:
    """An exported submission, loaded and fed as the benchmark does. ``modality``, when given, is the
    one the caller accepts: another is refused before the model is loaded."""
    from export.benchmark_loader import load_submission, run_model

    path = Path(path)
    declared = submission_modality(path)
    if modality is not None and declared is not None and declared != modality:
        # it would only fail inside its own forward on a batch of the other modality
        raise ConfigError(
            None,
            None,
            f"{path} is {_article(declared)} {declared} model (model_config.yaml "
            f"modality: {declared}); detect takes {modality} submissions",
        )
    model, config = load_submission(path, device=str(device))
    declared = str(config.get("modality", "image"))  # the benchmark's (and detectors.evaluate's) default
    return LoadedModel(
        f"{config.get('name', 'submission')} ({path})",
        lambda x: run_model(model, x),
        input_loader(declared, config.get("preprocessing") or {}, path / "model_config.yaml"),
        declared,
    )


def wrong_modality(path: str | Path, modality: str) -> str | None:
    """Why ``path`` is not an input of a ``modality`` model, judged by its extension (a folder is a
    video's frames); None when it may be one. Decoding an mp3 as an image fails with a decoder's
    message at best, and an mp4 fed to an audio model would silently score its sound track."""
    from detectors.data.containers import is_member_ref
    from detectors.video.io import split_frames_parquet_ref

    if is_member_ref(path):  # <archive>::<member> or <shard>.parquet::<column>[<row>]
        owners = [name for name, suffixes in EXTENSIONS.items() if Path(str(path)).suffix.lower() in suffixes]
        return (
            None
            if not owners or modality in owners
            else (f"{_article(owners[0])} {owners[0]} file, but this is {_article(modality)} {modality} model")
        )
    if split_frames_parquet_ref(path) is not None:  # <shard>.parquet::<video_id>: a video stored as frames
        return (
            None
            if modality == "video"
            else f"a video of a frames parquet shard, but this is {_article(modality)} {modality} model"
        )
    path = Path(path)
    if path.is_dir():
        return None if modality == "video" else f"a folder, but this is {_article(modality)} {modality} model"
    suffix = path.suffix.lower()
    owners = [name for name, suffixes in EXTENSIONS.items() if suffix in suffixes]
    if owners and modality not in owners:
        return (
            f"{_article(owners[0])} {owners[0]} file ({suffix}), but this is {_article(modality)} {modality} "
            f"model: give it {modality} files ({' '.join(EXTENSIONS[modality])})"
        )
    return None


class _FileInputs(Dataset):
    """``{"index", "x"}`` per readable file, ``{"index", "error"}`` per file that cannot be used."""

    def __init__(self, paths: Sequence[str], load: Callable[[str], torch.Tensor], modality: str) -> None:
        self.paths, self.load, self.modality = list(paths), load, modality

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict[str, Any]:
        path = self.paths[index]
        problem = wrong_modality(path, self.modality)
        if problem is not None:
            return {"index": index, "error": str(MediaError(path, problem))}
        try:
            return {"index": index, "x": load_media(self.load, path)}
        except MediaError as error:
            return {"index": index, "error": str(error)}


def expand_containers(paths: Sequence[str | Path], modality: str) -> list[str]:
    """``paths`` with every archive (.zip/.tar/.tar.gz) and parquet shard replaced by its media
    (``<container>::<member>``, scored one by one)."""
    from detectors.data.catalog import container_media

    out: list[str] = []
    for path in paths:
        try:
            members = container_media(path, modality)
        except ConfigError as error:  # a shard without a usable media column: one error row
            out.append(f"{path}::")
            print(f"error: {error}", file=sys.stderr)
            continue
        out.extend(members if members is not None else [str(path)])
    return out


def _collate(samples: list[dict[str, Any]]) -> dict[str, Any]:
    readable = [s for s in samples if "x" in s]
    return {
        "index": [s["index"] for s in readable],
        "x": torch.stack([s["x"] for s in readable]) if readable else None,
        "errors": [(s["index"], s["error"]) for s in samples if "error" in s],
    }


def describe_logits(logits: torch.Tensor) -> list[dict[str, Any]]:
    """Per row: ``prob_fake`` (the benchmark's, from float32 logits: ``metrics.benchmark_outputs``),
    ``label`` (the benchmark's decision: argmax, a tie is "real"; 3 classes: argmax != real, which can
    differ from ``prob_fake >= 0.5``) and, for 3-class heads, ``class_probs`` {real, synthetic,
    semisynthetic}."""
    from detectors.metrics import benchmark_outputs

    logits = logits.float().cpu()
    _, prob, fake = benchmark_outputs(logits)
    rows = [{"prob_fake": float(p), "label": "fake" if f else "real"} for p, f in zip(prob, fake)]
    if logits.ndim == 2 and logits.shape[1] == len(MEDIA_TYPES):
        for row, probs in zip(rows, torch.softmax(logits.double(), dim=1).tolist()):
            row["class_probs"] = dict(zip(MEDIA_TYPES, probs))
    return rows


NON_FINITE = "the model's output is not finite (NaN or inf logits), so there is no score"


def non_finite_row(path: str) -> dict[str, Any]:
    """The result of a file whose logits are NaN or infinite: an error, ``prob_fake``/``label`` null."""
    return {"path": path, "error": f"{path}: {NON_FINITE}", "prob_fake": None, "label": None}


def detect(
    model: LoadedModel,
    paths: Sequence[str | Path],
    *,
    batch_size: int = 1,
    num_workers: int = 0,
    progress: bool | None = None,
) -> list[dict[str, Any]]:
    """One result per path, in order: ``{"path", "prob_fake", "label"[, "class_probs"]}`` or
    ``{"path", "error"}`` (non-finite model outputs: also ``prob_fake`` and ``label`` None). Files are decoded (in ``num_workers`` processes) and scored
    ``batch_size`` at a time; the progress bar shows when there is more than one batch."""
    if batch_size < 1:
        raise ConfigError(None, "--batch-size", f"must be >= 1, got {batch_size}")
    paths = expand_containers(paths, model.modality)
    loader = DataLoader(
        _FileInputs(paths, model.load, model.modality),
        batch_size=batch_size,
        num_workers=num_workers,
        collate_fn=_collate,
    )
    results: list[dict[str, Any]] = [{} for _ in paths]
    show = len(loader) > 1 if progress is None else progress
    with tqdm(total=len(paths), unit="file", desc="detect", disable=not show) as bar:
        for batch in loader:
            for index, error in batch["errors"]:
                results[index] = {"path": paths[index], "error": error}
            if batch["x"] is not None:
                with torch.inference_mode():
                    logits = model.predict(batch["x"])
                finite = torch.isfinite(logits.float()).reshape(logits.shape[0], -1).all(dim=1).tolist()
                for index, row, ok in zip(batch["index"], describe_logits(logits), finite):
                    # NaN/inf logits have no probability: an error row (null in the JSON, never NaN)
                    results[index] = {"path": paths[index], **row} if ok else non_finite_row(paths[index])
            bar.update(len(batch["index"]) + len(batch["errors"]))
    return results


def format_result(row: dict[str, Any]) -> str:
    """One line per file: ``p(fake)  label  [class probabilities]  path``."""
    if "error" in row:
        return f"ERROR  {row['error']}"
    probs = row.get("class_probs")
    classes = "".join(f"  {name} {p:.4f}" for name, p in probs.items()) if probs else ""
    return f"{row['prob_fake']:.4f}  {row['label']:<4}{classes}  {row['path']}"


# --------------------------------------------------------------------------------------------- CLI
def add_detect_arguments(
    parser: argparse.ArgumentParser,
    *,
    metavar: str = "FILE",
    files_help: str = "media files",
    required_source: bool = True,
    batch_help: str = "files per forward pass (default: 16 images, 8 audio clips, 1 video)",
) -> argparse._MutuallyExclusiveGroup:
    """The options every detect command shares; returns the model-source group so a modality can
    add its own sources (video: ``--weights`` with ``--arch cakelens``)."""
    parser.add_argument("files", nargs="+", metavar=metavar, help=files_help)
    source = parser.add_mutually_exclusive_group(required=required_source)
    source.add_argument(
        "--run", type=Path, metavar="RUN_DIR", help="run directory written by python -m detectors.<modality>.fit"
    )
    source.add_argument("--model", type=Path, metavar="SUBMISSION", help="exported submission directory or zip")
    parser.add_argument("--json", type=Path, metavar="OUT", help="also write the results as JSON here")
    parser.add_argument(
        "--device", default="cuda" if torch.cuda.is_available() else "cpu", help="cpu, cuda, cuda:N or mps"
    )
    parser.add_argument("--batch-size", type=int, metavar="N", help=batch_help)
    parser.add_argument(
        "--num-workers", type=int, default=0, metavar="N", help="decode files in this many worker processes"
    )
    return source


def build_parser(prog: str = "python -m detectors.detect", modality: str | None = None) -> argparse.ArgumentParser:
    what = f"{modality} file" if modality else "image, video or audio file"
    parser = cli.ArgumentParser(
        prog=prog,
        description=f"Fake probability of each {what} with a trained "
        "detector (a run directory or an exported submission), as the benchmark scores it.",
    )
    add_detect_arguments(
        parser,
        metavar=(modality or "file").upper(),
        files_help=f"{modality} files" if modality else "image, video or audio files (the model's modality)",
    )
    return parser


def check_device(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """A malformed ``--device`` or one this machine lacks: a usage error, before anything loads."""
    try:
        resolve_device(args.device)
    except ConfigError as error:
        parser.error(str(error))


def load_model(args: argparse.Namespace, modality: str | None = None) -> LoadedModel:
    """The ``--run`` or ``--model`` named on the command line."""
    if args.run is not None:
        return from_run(args.run, args.device, modality)
    return from_submission(args.model, args.device, modality)


def run_detection(args: argparse.Namespace, modality: str | None = None) -> int:
    """Load the ``--run`` / ``--model`` (of ``modality`` if given), score ``args.files``, print one
    line per file, write ``--json``; the exit status (0, 1 when a file failed, 2 for a bad model)."""
    from detectors.atomic import write_json
    from export.benchmark_loader import SubmissionError

    try:
        if args.batch_size is not None and args.batch_size < 1:
            raise ConfigError(None, "--batch-size", f"must be >= 1, got {args.batch_size}")
        if args.num_workers < 0:
            raise ConfigError(None, "--num-workers", f"must be >= 0, got {args.num_workers}")
        model = load_model(args, modality)
        batch_size = args.batch_size or DEFAULT_BATCH_SIZE.get(model.modality, 1)
        results = detect(model, args.files, batch_size=batch_size, num_workers=args.num_workers)
    except (ConfigError, CheckpointError, SubmissionError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for row in results:
        print(format_result(row), file=sys.stderr if "error" in row else sys.stdout)
    failed = sum("error" in row for row in results)
    non_finite = sum("error" in row and "prob_fake" in row for row in results)
    if args.json is not None:
        write_json(
            args.json,
            {
                "model": model.name,
                "modality": model.modality,
                "results": results,
                "failed": failed,
                "non_finite": non_finite,
            },
        )
    noun = FILE_NOUN.get(model.modality, "file(s)")
    if failed - non_finite:
        print(f"{failed - non_finite} of {len(results)} {noun} could not be read", file=sys.stderr)
    if non_finite:
        print(
            f"{non_finite} of {len(results)} {noun} got non-finite model outputs (NaN or inf): not scored",
            file=sys.stderr,
        )
    return 1 if failed else 0


@command
def main(
    argv: list[str] | None = None, *, modality: str | None = None, prog: str = "python -m detectors.detect"
) -> int:
    """The detect command; ``modality`` restricts it to models of one modality (the aliases)."""
    parser = build_parser(prog, modality)
    args = parser.parse_args(argv)
    check_device(parser, args)
    return run_detection(args, modality)


if __name__ == "__main__":
    sys.exit(main())
