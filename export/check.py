"""Check a submission directory or zip against the benchmark's rules before uploading it.

``python -m export.check DIR_OR_ZIP [--batch-size 2]`` prints one line per problem (saying what to
fix) and exits 1 if there are any. ``check_submission(path)`` returns the same lines.

1. Static rules: model.py imports only allowed modules, reaches no blocked module through an allowed
   one's attributes (``torch.os.system``, ``torch.serialization.sys``, ``np.ctypeslib``,
   ``from torch import os``), makes none of the blocked calls (the source text is scanned like a
   sandbox would, so ``.eval(`` and words in comments count too), defines
   ``load_model(weights_path, ...)``; model_config.yaml has a valid top-level dtype, preprocessing
   consistent with the modality, no dtype under ``model:``; the weights file is readable; a zip
   holds the files at its root.
   Integrity (:mod:`export.manifest`): every file matches the export's ``SHA256SUMS`` (the folder's
   file, the zip's archive comment), and a folder and a zip of the same name (``DIR``, ``DIR.zip``)
   hold the same files, i.e. come from the same export.
2. Once the static rules pass, the submission is loaded and run the way the benchmark does, in a
   fresh isolated interpreter (``python -I export/benchmark_loader.py``, run from a temporary
   directory with this project's packages blocked), on a zero and a random batch of the declared
   input shape; the logits must be ``[B, num_classes]`` and finite.
"""

from __future__ import annotations

import ast
import errno
import importlib
import json
import re
import subprocess
import sys
import tempfile
import types
import zipfile
from pathlib import Path
from typing import Any

import yaml
from safetensors import safe_open

from detectors import cli
from detectors.cli import command
from export.benchmark_loader import DEFAULT_BLOCKED
from export.manifest import pair_problems, verify_directory, verify_zip

LOADER = Path(__file__).resolve().parent / "benchmark_loader.py"

ALLOWED_IMPORTS = frozenset(
    {
        "torch", "torch.nn", "torch.nn.functional", "torch.cuda.amp",
        "torchvision", "torchvision.models", "torchvision.transforms", "torchaudio",
        "transformers", "timm", "einops", "safetensors", "safetensors.torch", "flash_attn",
        "PIL", "cv2", "skimage", "decord", "numpy", "scipy", "scipy.ndimage", "scipy.signal",
        "fvcore", "ultralytics", "math", "functools", "typing", "collections", "dataclasses",
        "enum", "abc", "pathlib",
    }
)  # fmt: skip
BLOCKED_CALLS = ("eval", "exec", "compile", "__import__", "getattr", "setattr", "globals", "locals")
_BLOCKED_CALL_RE = re.compile(r"(?<![A-Za-z0-9_])(" + "|".join(re.escape(n) for n in BLOCKED_CALLS) + r")\s*\(")
_BLOCKED_TEXT = {
    r"\bjit\s*\.\s*script\b": "torch.jit.script",
    r"\bjit\s*\.\s*trace\b": "torch.jit.trace",
    r"\bcpp_extension\b": "torch.utils.cpp_extension",
    r"\bctypeslib\b": "numpy.ctypeslib",
}
# Modules the sandbox blocks (docs/submission-format.md: "os, sys, subprocess, ... and the like"), and
# the low-level modules behind the same capabilities (posix is what os wraps, _thread threading's core).
BLOCKED_MODULES = frozenset(
    {
        "os", "sys", "subprocess", "shutil", "socket", "requests", "urllib", "urllib3", "http", "asyncio",
        "pickle", "marshal", "shelve", "dill", "cloudpickle", "joblib", "importlib", "builtins", "code",
        "codeop", "runpy", "numba", "cython", "ctypes", "cffi", "mmap", "signal", "multiprocessing",
        "concurrent", "threading", "apex", "deepspeed", "tensorboard", "wandb", "mlflow", "boto3",
        "tempfile", "glob", "h5py", "posix", "nt", "_thread", "_posixsubprocess", "pty", "socketserver",
        "ftplib", "smtplib", "xmlrpc", "webbrowser",
    }
)  # fmt: skip
BLOCKED_SUBMODULES = ("numpy.ctypeslib", "torch.utils.cpp_extension")
# Attribute chains are followed on the real modules for these roots (already imported here or cheap
# and side-effect free); other roots fall back to matching attribute names against BLOCKED_MODULES.
_RESOLVABLE_ROOTS = frozenset(
    {
        "torch",
        "numpy",
        "safetensors",
        "math",
        "functools",
        "typing",
        "collections",
        "dataclasses",
        "enum",
        "abc",
        "pathlib",
    }
)
VALID_DTYPES = ("float32", "fp32", "float16", "fp16", "bfloat16", "bf16")
MODALITIES = ("image", "video", "audio")


# ----------------------------------------------------------------------------------------------
# model.py


def is_blocked_module_name(name: str) -> bool:
    """``os``, ``os.path``, ``numpy.ctypeslib`` ...: a module the sandbox refuses."""
    return name.split(".")[0] in BLOCKED_MODULES or any(
        name == blocked or name.startswith(blocked + ".") for blocked in BLOCKED_SUBMODULES
    )


def _module_bindings(tree: ast.AST) -> dict[str, str]:
    """Local name -> dotted path it stands for, for every import in the file (``np`` -> ``numpy``,
    ``nn`` -> ``torch.nn``, ``serialization`` -> ``torch.serialization``)."""
    bindings: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname:
                    bindings[alias.asname] = alias.name
                else:
                    root = alias.name.split(".")[0]
                    bindings[root] = root
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            for alias in node.names:
                if alias.name != "*":
                    bindings[alias.asname or alias.name] = f"{node.module}.{alias.name}"
    return bindings


def _dotted(node: ast.AST, bindings: dict[str, str]) -> str | None:
    """``torch.serialization.sys`` for that attribute chain on an imported name, else None."""
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name) or node.id not in bindings:
        return None
    return ".".join([bindings[node.id], *reversed(parts)])


def blocked_module_reached(dotted: str) -> str | None:
    """The blocked module that ``dotted`` (an import path plus attributes) reaches, or None.

    Followed on the real module objects where the root is resolvable (``torch.os`` is the ``os``
    module, ``torch.signal`` is torch's own, allowed ``torch.signal``); past what cannot be resolved,
    an attribute named like a blocked module (``timm.os``) counts as reaching it.
    """
    parts = dotted.split(".")
    obj: Any = None
    if parts[0] in _RESOLVABLE_ROOTS:
        try:
            obj = sys.modules.get(parts[0]) or importlib.import_module(parts[0])
        except Exception:  # not installed here: judge by names below
            obj = None
    for index in range(1, len(parts) + 1):
        prefix = ".".join(parts[:index])
        if obj is not None:
            if index > 1:
                try:
                    obj = getattr(obj, parts[index - 1])
                except Exception:
                    obj = None  # a missing attribute: fall back to the name rule from here on
            if isinstance(obj, types.ModuleType):
                if is_blocked_module_name(obj.__name__):
                    return obj.__name__
                continue
            if obj is not None:
                return None  # a class, function or value: not a module any more
        if (index > 1 and parts[index - 1] in BLOCKED_MODULES and prefix not in ALLOWED_IMPORTS) or any(
            prefix == blocked for blocked in BLOCKED_SUBMODULES
        ):
            return parts[index - 1] if parts[index - 1] in BLOCKED_MODULES else prefix
    return None


def _attribute_chain_problems(tree: ast.AST, source: str, filename: str) -> list[str]:
    bindings = _module_bindings(tree)
    lines = source.splitlines()
    found: list[tuple[int, str, str, str]] = []
    for node in ast.walk(tree):
        chains: list[tuple[str, str]] = []  # (as written, dotted path)
        if isinstance(node, ast.Attribute):
            dotted = _dotted(node, bindings)
            # the first blocked link only: torch.os.system and torch.os are one finding
            if dotted and (
                not isinstance(node.value, ast.Attribute)
                or blocked_module_reached(_dotted(node.value, bindings) or "") is None
            ):
                chains = [(ast.unparse(node), dotted)]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            chains = [
                (f"from {node.module} import {alias.name}", f"{node.module}.{alias.name}")
                for alias in node.names
                if alias.name != "*"
            ]
        for written, dotted in chains:
            if dotted.split(".")[0] in BLOCKED_MODULES:
                continue  # a blocked module imported or used directly: the import rule reports it
            blocked = blocked_module_reached(dotted)
            if blocked is None:
                continue
            line = lines[node.lineno - 1] if node.lineno <= len(lines) else ""
            if blocked in BLOCKED_SUBMODULES and blocked.rsplit(".", 1)[-1] in line:
                continue  # named on the line: the text rule below already reports it
            found.append((node.lineno, written, dotted, blocked))
    problems = []
    for line, written, dotted, blocked in sorted(set(found)):
        via = "" if written == dotted else f" ({dotted})"
        problems.append(
            f"{filename}:{line}: `{written}`{via} reaches the blocked module {blocked} through an "
            "allowed module's attribute; remove it"
        )
    return problems


def check_model_source(source: str, filename: str = "model.py") -> list[str]:
    """Static rules on model.py's text."""
    try:
        tree = ast.parse(source, filename=filename)
    except SyntaxError as error:
        return [f"{filename}:{error.lineno}: syntax error: {error.msg}"]
    except (RecursionError, MemoryError, ValueError) as error:  # absurdly nested or NUL bytes
        return [f"{filename}: cannot be parsed ({type(error).__name__}); is it a Python source file?"]
    problems = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name not in ALLOWED_IMPORTS:
                    problems.append(f"{filename}:{node.lineno}: import of {alias.name!r} is not allowed; remove it")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                problems.append(f"{filename}:{node.lineno}: relative import; model.py must be one self-contained file")
            elif node.module not in ALLOWED_IMPORTS:
                problems.append(f"{filename}:{node.lineno}: import from {node.module!r} is not allowed; remove it")
    problems += _attribute_chain_problems(tree, source, filename)
    for number, line in enumerate(source.splitlines(), start=1):
        for match in _BLOCKED_CALL_RE.finditer(line):
            problems.append(
                f"{filename}:{number}: blocked call `{match.group(1)}(` (the sandbox rejects it even in comments "
                "or as a method, e.g. use model.train(False) instead of .eval())"
            )
        for pattern, what in _BLOCKED_TEXT.items():
            if re.search(pattern, line):
                problems.append(f"{filename}:{number}: {what} is blocked; remove it")
    functions = {node.name: node for node in tree.body if isinstance(node, ast.FunctionDef)}
    load_model = functions.get("load_model")
    if load_model is None:
        problems.append(f"{filename}: no top-level load_model(weights_path, num_classes=2, **kwargs)")
    else:
        params = [arg.arg for arg in load_model.args.posonlyargs + load_model.args.args]
        if not params or params[0] != "weights_path":
            problems.append(f"{filename}: load_model's first parameter must be weights_path, got {params[:1]}")
        if load_model.args.kwarg is None:
            problems.append(f"{filename}: load_model should accept **kwargs (model: keys are passed to it)")
    return problems


# ----------------------------------------------------------------------------------------------
# model_config.yaml


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def validate_config(config: Any, filename: str = "model_config.yaml") -> list[str]:
    """Problems in a parsed model_config.yaml (empty list = valid)."""
    if not isinstance(config, dict):
        return [f"{filename}: must be a YAML mapping"]
    problems = []
    model = config.get("model")
    if model is None:
        problems.append(f"{filename}: model: section missing (needs num_classes and weights_file)")
    elif not isinstance(model, dict):
        problems.append(f"{filename}: model: must be a mapping (num_classes, weights_file, ...), got {model!r}")
    if not isinstance(model, dict):
        model = {}
    if "dtype" in model:
        problems.append(
            f"{filename}: dtype is under model:, where the benchmark passes it to load_model and ignores it; "
            "move it to the top level"
        )
    if "dtype" not in config:
        problems.append(f"{filename}: top-level dtype missing; add e.g. `dtype: float32`")
    elif str(config["dtype"]) not in VALID_DTYPES:
        problems.append(f"{filename}: dtype {config['dtype']!r} is invalid; use one of {', '.join(VALID_DTYPES)}")
    modality = config.get("modality")
    if modality not in MODALITIES:
        problems.append(f"{filename}: modality must be one of {', '.join(MODALITIES)}, got {modality!r}")
    prep = config.get("preprocessing")
    if not isinstance(prep, dict):
        problems.append(f"{filename}: preprocessing: section missing")
        prep = {}
    if modality in ("image", "video"):
        resize = prep.get("resize")
        if not (isinstance(resize, list) and len(resize) == 2 and all(_is_int(v) and v > 0 for v in resize)):
            problems.append(f"{filename}: preprocessing.resize must be [H, W] (two positive ints), got {resize!r}")
    if modality == "video":
        frames = prep.get("num_frames", 16)
        if not (_is_int(frames) and 1 <= frames <= 64):
            problems.append(f"{filename}: preprocessing.num_frames must be an int in 1..64, got {frames!r}")
        rate = prep.get("frame_rate")
        if rate is not None and not (_is_number(rate) and rate > 0):
            problems.append(f"{filename}: preprocessing.frame_rate must be a positive number, got {rate!r}")
    if modality == "audio":
        if prep.get("sample_rate") != 16000:
            problems.append(f"{filename}: preprocessing.sample_rate must be 16000, got {prep.get('sample_rate')!r}")
        duration = prep.get("duration_seconds")
        if not (_is_number(duration) and float(duration) == 6.0):
            problems.append(f"{filename}: preprocessing.duration_seconds must be 6.0, got {duration!r}")
    num_classes = model.get("num_classes", 2)
    if not (_is_int(num_classes) and num_classes >= 1):
        problems.append(f"{filename}: model.num_classes must be a positive int, got {num_classes!r}")
    weights = model.get("weights_file", "model.safetensors")
    if not isinstance(weights, str) or Path(weights).name != weights:
        problems.append(f"{filename}: model.weights_file must be a file name in the submission, got {weights!r}")
    return problems


# ----------------------------------------------------------------------------------------------
# files, zip, runtime


def _check_zip(path: Path) -> list[str]:
    with zipfile.ZipFile(path) as archive:
        names = [info.filename for info in archive.infolist() if not info.is_dir()]
        folders = sorted({name.split("/")[0] for name in names if "/" in name})
    problems = []
    if folders:
        problems.append(
            f"{path}: files are inside a parent folder ({', '.join(f + '/' for f in folders)}); "
            "zip the files themselves so model_config.yaml, model.py and the weights sit at the root"
        )
    return problems


def _is_submission_zip(path: Path) -> bool:
    try:
        with zipfile.ZipFile(path) as archive:
            return "model_config.yaml" in archive.namelist()
    except (zipfile.BadZipFile, OSError):
        return True  # corrupt: verify_zip says how


def _check_directory(directory: Path) -> list[str]:
    problems = []
    config_path, model_path = directory / "model_config.yaml", directory / "model.py"
    if not model_path.is_file():
        problems.append(f"{model_path}: missing")
    else:
        try:
            source = model_path.read_text(encoding="utf-8")
        except UnicodeDecodeError as error:  # Python reads source files as UTF-8: the import would fail
            problems.append(f"{model_path}: not UTF-8 text ({error.reason} at byte {error.start}); save it as UTF-8")
        else:
            problems += check_model_source(source, str(model_path))
    if not config_path.is_file():
        return problems + [f"{config_path}: missing"]
    try:
        config = yaml.safe_load(config_path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as error:
        return problems + [f"{config_path}: not UTF-8 text ({error.reason} at byte {error.start})"]
    except yaml.YAMLError as error:
        return problems + [f"{config_path}: not valid YAML: {error}"]
    problems += validate_config(config, str(config_path))
    model = config.get("model") if isinstance(config, dict) else None
    weights_name = (model or {}).get("weights_file", "model.safetensors") if isinstance(model, dict) else None
    if isinstance(weights_name, str):
        weights = directory / weights_name
        if not weights.is_file():
            problems.append(f"{weights}: weights file missing (model.weights_file names it)")
        else:
            try:
                with safe_open(str(weights), framework="pt") as handle:
                    if not list(handle.keys()):
                        problems.append(f"{weights}: holds no tensors")
            except Exception as error:  # any parse failure means the benchmark cannot read it either
                problems.append(f"{weights}: not a readable safetensors file: {error}")
    return problems


def run_in_fresh_interpreter(path: Path, batch_size: int = 2, also_block: list[str] | None = None) -> dict:
    """Run benchmark_loader.py on ``path`` in ``python -I`` from a temp dir; returns its JSON result.

    The project's packages and peft are always blocked; ``also_block`` adds more (e.g. transformers).
    """
    block = list(DEFAULT_BLOCKED) + list(also_block or [])
    command = [sys.executable, "-I", "-B", str(LOADER), str(path.resolve()), "--batch-size", str(batch_size)]
    command += ["--block", ",".join(block)]
    with tempfile.TemporaryDirectory(prefix="export_check_") as cwd:
        completed = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=900)
    lines = [line for line in completed.stdout.splitlines() if line.startswith("{")]
    if lines:
        return json.loads(lines[-1])
    tail = (completed.stderr or completed.stdout).strip().splitlines()[-5:]
    return {"ok": False, "problems": [f"loading crashed (exit {completed.returncode}): {' | '.join(tail)}"]}


def check_submission(
    path: str | Path, batch_size: int = 2, run: bool = True, also_block: list[str] | None = None
) -> list[str]:
    """All problems of a submission directory or zip (empty list = ready to upload).

    While loading, this project and peft are unimportable; ``also_block`` adds modules (e.g.
    ``["transformers", "timm"]`` to prove the export needs neither).
    """
    path = Path(path)
    if path.is_file() and zipfile.is_zipfile(path):
        problems = _check_zip(path)
        if problems:
            return problems
        integrity, zip_files = verify_zip(path)
        if zip_files is None:  # a corrupt member: nothing more can be read
            return integrity
        folder = path.with_name(path.name[: -len(".zip")]) if path.name.endswith(".zip") else None
        if folder is not None and (folder / "model_config.yaml").is_file():
            folder_problems, folder_files = verify_directory(folder)
            integrity += pair_problems(folder, folder_files, path, zip_files)
        with tempfile.TemporaryDirectory(prefix="export_check_zip_") as tmp:
            with zipfile.ZipFile(path) as archive:
                archive.extractall(tmp)
            # name the files inside the zip, not the temporary folder that is gone once this returns
            problems = integrity + [
                problem.replace(str(Path(tmp)), str(path)) for problem in _check_directory(Path(tmp))
            ]
    elif path.is_dir():
        problems, folder_files = verify_directory(path)
        zip_path = path.with_name(path.name + ".zip")
        if zip_path.is_file() and _is_submission_zip(zip_path):
            zip_problems, zip_files = verify_zip(zip_path)
            problems += zip_problems if zip_files is None else pair_problems(path, folder_files, zip_path, zip_files)
        problems += _check_directory(path)
    else:
        return [f"{path}: not a submission directory or zip file"]
    if problems or not run:
        return problems
    result = run_in_fresh_interpreter(path, batch_size, also_block)
    return [str(problem) for problem in result.get("problems", [])] or ([] if result.get("ok") else ["loading failed"])


@command
def main(argv: list[str] | None = None) -> int:
    parser = cli.ArgumentParser(prog="python -m export.check", description=__doc__.splitlines()[0])
    parser.add_argument("path", help="submission directory or zip")
    parser.add_argument("--batch-size", type=cli.int_at_least(1), default=2)
    parser.add_argument("--static-only", action="store_true", help="skip loading and running the model")
    parser.add_argument("--also-block", default="", help="comma-separated extra modules to block while loading")
    args = parser.parse_args(argv)
    if not Path(args.path).exists():  # nothing to check: a usage error, not a failed check
        raise FileNotFoundError(errno.ENOENT, "no such submission directory or zip", args.path)
    also_block = [name for name in args.also_block.split(",") if name]
    problems = check_submission(args.path, args.batch_size, run=not args.static_only, also_block=also_block)
    for problem in problems:
        print(problem)
    if not problems:
        print(f"{args.path}: OK")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
