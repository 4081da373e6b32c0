"""Stand-alone copy of the benchmark's submission loading rules (GASBench v0.8.0).

This file never imports the project: ``export.check`` runs it as ``python -I benchmark_loader.py DIR``
from a temporary directory so that a submission is loaded exactly as the benchmark would, with no
access to ``detectors`` / ``export`` (and, with ``--block``, without transformers/timm either).

Rules reproduced (see docs/submission-format.md):
- ``model_config.yaml``: top-level ``dtype`` in float32|fp32|float16|fp16|bfloat16|bf16 (default
  float32); the benchmark silently passes a ``dtype`` under ``model:`` to ``load_model``, where it has
  no effect, so it is reported as an error here.
- ``model.py`` is imported with ``spec_from_file_location("custom_model", path)`` (no sys.path entry).
- ``load_model(str(weights_path), **model_section_without_weights_file)``; on TypeError the loader
  retries ``load_model(str(weights_path), num_classes=num_classes)``.
- ``model.to(device, dtype).eval()``; output: tensor, ``.logits``, dict ``logits``/``output`` or a
  1-tuple; last dim must be 1, 2, 3 or num_classes.
- Inputs: image ``[B, 3, H, W]`` uint8, video ``[B, T, 3, H, W]`` uint8 (T = num_frames, default 16,
  clamped to 64), audio ``[B, 96000]`` float32.

CLI: ``python benchmark_loader.py DIR_OR_ZIP [--batch-size 2] [--device cpu] [--block a,b]`` loads the
submission, runs a zero batch and a random batch, checks ``[B, num_classes]`` finite logits, prints one
JSON line and exits 1 if anything is wrong.
"""

from __future__ import annotations

import argparse
import atexit
import importlib.abc
import importlib.util
import json
import shutil
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import torch
import yaml

DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "float16": torch.float16,
    "fp16": torch.float16,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
}
AUDIO_SAMPLES = 96000
DEFAULT_NUM_FRAMES = 16
MAX_NUM_FRAMES = 64
DEFAULT_BLOCKED = ("detectors", "export", "calibration", "peft")


class SubmissionError(ValueError):
    """The submission does not follow the benchmark's loading rules."""


def resolve_submission(path: str | Path) -> Path:
    """The submission directory; a zip is extracted to a temporary directory (removed at exit)."""
    path = Path(path)
    if path.is_file() and zipfile.is_zipfile(path):
        target = Path(tempfile.mkdtemp(prefix="submission_"))
        atexit.register(shutil.rmtree, target, True)
        with zipfile.ZipFile(path) as archive:
            archive.extractall(target)
        if not (target / "model_config.yaml").is_file():
            raise SubmissionError(
                f"{path}: no model_config.yaml at the zip root (are the files inside a parent folder?)"
            )
        return target
    if not path.is_dir():
        raise SubmissionError(f"{path}: not a directory or zip file")
    return path


def read_config(directory: Path, shown: Path | None = None) -> dict:
    """Parse and validate the parts of model_config.yaml the loader relies on.

    ``shown`` is the submission as the user named it (a zip is extracted elsewhere) for messages.
    """
    config_path = directory / "model_config.yaml"
    shown_path = (shown or directory) / "model_config.yaml"
    if not config_path.is_file():
        raise SubmissionError(f"{shown_path}: missing")
    try:
        with open(config_path, encoding="utf-8") as handle:
            config = yaml.safe_load(handle)
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        raise SubmissionError(f"{shown_path}: not valid YAML: {error}") from error
    config_path = shown_path
    if not isinstance(config, dict):
        raise SubmissionError(f"{config_path}: must be a mapping")
    model_section = config.get("model") or {}
    if not isinstance(model_section, dict):
        raise SubmissionError(f"{config_path}: model: must be a mapping")
    if "dtype" in model_section:
        raise SubmissionError(
            f"{config_path}: dtype is under model:, where the benchmark passes it to load_model and ignores "
            "it; move it to the top level"
        )
    dtype = str(config.get("dtype", "float32"))
    if dtype not in DTYPES:
        raise SubmissionError(f"{config_path}: dtype {dtype!r} is not one of {sorted(DTYPES)}")
    return config


def model_dtype(config: dict) -> torch.dtype:
    return DTYPES[str(config.get("dtype", "float32"))]


def load_submission(path: str | Path, device: str = "cpu") -> tuple[torch.nn.Module, dict]:
    """Load a submission directory or zip the way the benchmark does; returns (model, config)."""
    shown = Path(path)  # messages name the files as the user knows them, also inside a zip
    directory = resolve_submission(path)
    config = read_config(directory, shown)
    model_section = dict(config.get("model") or {})
    weights_name = str(model_section.pop("weights_file", "model.safetensors"))
    weights_path = directory / weights_name
    if not weights_path.is_file():
        raise SubmissionError(f"{shown / weights_name}: weights file missing (model.weights_file names it)")
    num_classes = int(model_section.get("num_classes", 2))

    model_path = directory / "model.py"
    if not model_path.is_file():
        raise SubmissionError(f"{shown / 'model.py'}: missing")
    spec = importlib.util.spec_from_file_location("custom_model", model_path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as error:
        raise SubmissionError(f"{shown / 'model.py'}: import failed: {type(error).__name__}: {error}") from error
    if not hasattr(module, "load_model"):
        raise SubmissionError(f"{shown / 'model.py'}: defines no load_model(weights_path, num_classes=2, **kwargs)")
    try:
        try:
            model = module.load_model(str(weights_path), **model_section)
        except TypeError:
            model = module.load_model(str(weights_path), num_classes=num_classes)
    except Exception as error:  # e.g. a state dict with missing/unexpected keys or wrong shapes
        raise SubmissionError(
            f"{shown / 'model.py'}: load_model({weights_name!r}) failed on {shown / weights_name}: "
            f"{type(error).__name__}: {error}"
        ) from error
    if not isinstance(model, torch.nn.Module):
        raise SubmissionError(f"load_model returned {type(model).__name__}, not a torch.nn.Module")
    model = model.to(device, model_dtype(config)).eval()
    return model, config


def extract_logits(output: Any) -> torch.Tensor:
    """The benchmark's output rules: tensor, ``.logits``, dict logits/output, or a 1-tuple."""
    if isinstance(output, torch.Tensor):
        return output
    if hasattr(output, "logits") and isinstance(output.logits, torch.Tensor):
        return output.logits
    if isinstance(output, dict):
        for key in ("logits", "output"):
            if isinstance(output.get(key), torch.Tensor):
                return output[key]
    if isinstance(output, tuple) and len(output) == 1 and isinstance(output[0], torch.Tensor):
        return output[0]
    raise SubmissionError(f"unsupported model output {type(output).__name__}: return a logits tensor")


def _device_of(model: torch.nn.Module) -> torch.device:
    for tensor in list(model.parameters()) + list(model.buffers()):
        return tensor.device
    return torch.device("cpu")


def run_model(model: torch.nn.Module, inputs: torch.Tensor, num_classes: int | None = None) -> torch.Tensor:
    """Run one batch; returns the logits and checks the last dim is 1, 2, 3 or num_classes."""
    with torch.inference_mode():
        logits = extract_logits(model(inputs.to(_device_of(model))))
    allowed = {1, 2, 3} | ({int(num_classes)} if num_classes else set())
    if logits.ndim < 1 or logits.shape[-1] not in allowed:
        raise SubmissionError(f"output shape {list(logits.shape)}: last dim must be one of {sorted(allowed)}")
    return logits


def input_shape(config: dict, batch_size: int, modality: str | None = None) -> tuple[list[int], torch.dtype]:
    """Shape and dtype of the batches the benchmark sends for this config."""
    modality = modality or str(config.get("modality", "image"))
    preprocessing = config.get("preprocessing") or {}
    if modality == "audio":
        return [batch_size, AUDIO_SAMPLES], torch.float32
    height, width = (int(v) for v in preprocessing.get("resize", [224, 224]))
    if modality == "image":
        return [batch_size, 3, height, width], torch.uint8
    if modality == "video":
        frames = min(int(preprocessing.get("num_frames", DEFAULT_NUM_FRAMES)), MAX_NUM_FRAMES)
        return [batch_size, frames, 3, height, width], torch.uint8
    raise SubmissionError(f"unknown modality {modality!r}")


def example_input(config: dict, batch_size: int = 2, kind: str = "random", seed: int = 0) -> torch.Tensor:
    """A batch of the declared shape: ``kind`` "zeros" or "random" (uint8 media / audio in [-1, 1])."""
    shape, dtype = input_shape(config, batch_size)
    if kind == "zeros":
        return torch.zeros(shape, dtype=dtype)
    generator = torch.Generator().manual_seed(seed)
    if dtype == torch.uint8:
        return torch.randint(0, 256, shape, dtype=torch.uint8, generator=generator)
    return torch.rand(shape, generator=generator) * 2 - 1


class _BlockModules(importlib.abc.MetaPathFinder):
    """Make the named top-level packages unimportable, as they are in the benchmark sandbox."""

    def __init__(self, names: list[str]) -> None:
        self.names = set(names)

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> None:
        if fullname.split(".")[0] in self.names:
            raise ModuleNotFoundError(f"No module named {fullname!r} (blocked: not available to submissions)")
        return None


def block_modules(names: list[str]) -> None:
    for name in list(sys.modules):
        if name.split(".")[0] in names:
            del sys.modules[name]
    sys.meta_path.insert(0, _BlockModules(names))


def check_run(path: str | Path, batch_size: int = 2, device: str = "cpu") -> dict:
    """Load, run a zero and a random batch, and collect problems; the CLI prints this as JSON."""
    result: dict[str, Any] = {"ok": False, "problems": []}
    try:
        model, config = load_submission(path, device=device)
    except Exception as error:  # report any loading failure the way the benchmark would see it
        result["problems"].append(f"loading failed: {type(error).__name__}: {error}")
        return result
    num_classes = int((config.get("model") or {}).get("num_classes", 2))
    result["dtype"] = str(model_dtype(config)).replace("torch.", "")
    for kind in ("zeros", "random"):
        try:
            inputs = example_input(config, batch_size, kind)
            result["input_shape"] = list(inputs.shape)
            logits = run_model(model, inputs, num_classes)
        except Exception as error:
            result["problems"].append(f"forward on a {kind} batch failed: {type(error).__name__}: {error}")
            continue
        result["output_shape"] = list(logits.shape)
        if list(logits.shape) != [batch_size, num_classes]:
            result["problems"].append(
                f"output shape {list(logits.shape)} on a {kind} batch; expected [{batch_size}, {num_classes}] "
                "(batch, model.num_classes)"
            )
        elif not bool(torch.isfinite(logits.float()).all()):
            result["problems"].append(f"non-finite logits on a {kind} batch")
        else:
            result[f"logits_{kind}"] = logits.float().tolist()
    result["ok"] = not result["problems"]
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Load and run a submission the way the benchmark does.")
    parser.add_argument("path", help="submission directory or zip")
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--block",
        default=",".join(DEFAULT_BLOCKED),
        help="comma-separated top-level modules to make unimportable (default: %(default)s)",
    )
    args = parser.parse_args(argv)
    sys.dont_write_bytecode = True  # never leave __pycache__ inside the submission
    block_modules([name for name in args.block.split(",") if name])
    result = check_run(args.path, batch_size=args.batch_size, device=args.device)
    print(json.dumps(result))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
