"""Write an ``ExportSpec`` as a benchmark submission: model_config.yaml, model.py, model.safetensors.

``model.py`` is the concatenation of ``export/standalone/<source>.py`` files (relative imports
stripped, top-level imports hoisted and de-duplicated) plus a generated ``load_model``. The whole
directory is written into a temporary sibling and renamed into place, so a reader never sees a
half-written export.

dtype: ``"float32"`` or ``"bf16"``. In bf16, weight matrices (ndim >= 2) are stored as bfloat16 and
vectors (norm weights/biases, layer scales, linear biases, the folded calibrator's scale/bias) stay
float32 in the file: they are a negligible share of the bytes and the place where rounding hurts
most. The benchmark then casts the whole module to the declared dtype at load time
(``model.to(device, dtype)``); the standalone heads compute normalisation and the calibration affine
in float32, so only the parameters themselves carry bf16 rounding.
"""

from __future__ import annotations

import ast
import os
import pprint
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import torch
import yaml
from safetensors.torch import save_file

from detectors.atomic import atomic_path, write_text
from export.spec import ExportSpec

STANDALONE_DIR = Path(__file__).resolve().parent / "standalone"
WEIGHTS_FILE = "model.safetensors"
SUBMISSION_FILES = ("model_config.yaml", "model.py", WEIGHTS_FILE)
_DTYPE_NAMES = {"float32": "float32", "fp32": "float32", "bf16": "bfloat16", "bfloat16": "bfloat16"}


# ----------------------------------------------------------------------------------------------
# model.py


def _split_source(text: str, origin: str) -> tuple[list[ast.stmt], str]:
    """Top-level absolute import statements and the rest of a standalone file (docstring dropped)."""
    tree = ast.parse(text, filename=origin)
    lines = text.splitlines()
    dropped: set[int] = set()
    imports: list[ast.stmt] = []
    for index, node in enumerate(tree.body):
        span = range(node.lineno - 1, node.end_lineno)
        is_docstring = (
            index == 0 and isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)
            and isinstance(node.value.value, str)
        )
        if is_docstring:
            dropped.update(span)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            dropped.update(span)
            if isinstance(node, ast.ImportFrom) and node.module == "__future__":
                raise ValueError(f"{origin}: `from __future__` imports cannot be concatenated; remove it")
            if isinstance(node, ast.ImportFrom) and node.level > 0:
                continue  # `from .x import y`: the names are defined earlier in the concatenation
            imports.append(node)
    body = "\n".join(line for number, line in enumerate(lines) if number not in dropped)
    return imports, body.strip("\n")


def _merge_imports(nodes: list[ast.stmt]) -> list[str]:
    """One line per ``import x`` and one ``from m import a, b`` per module, in first-seen order."""
    lines: list[str] = []
    from_names: dict[str, list[str]] = {}
    for node in nodes:
        if isinstance(node, ast.ImportFrom):
            names = from_names.setdefault(node.module, [])
            if not names:
                lines.append(f"from {node.module} import ")  # placeholder, completed below
            names += [ast.unparse(alias) for alias in node.names if ast.unparse(alias) not in names]
        else:
            line = ast.unparse(node)
            if line not in lines:
                lines.append(line)
    merged = []
    for line in lines:
        if line.startswith("from ") and line.endswith(" import "):
            module = line[len("from ") : -len(" import ")]
            line += ", ".join(from_names[module])
        merged.append(line)
    return merged


def _load_model_source(spec: ExportSpec) -> str:
    defaults = {key: value for key, value in spec.init_kwargs.items() if key != "num_classes"}
    literal = pprint.pformat(_plain(defaults), indent=4, width=100, sort_dicts=False)
    return f'''# Constructor arguments of this export; model_config.yaml `model:` passes the same values, and
# they also apply when the benchmark retries load_model(weights_path, num_classes=...) only.
DEFAULT_KWARGS = {literal}


def load_model(weights_path, num_classes={int(spec.num_classes)}, **kwargs):
    """Build {spec.model_class}, load the safetensors weights strictly, return it in inference mode."""
    config = dict(DEFAULT_KWARGS)
    config.update(kwargs)
    model = {spec.model_class}(num_classes=num_classes, **config)
    model.load_state_dict(load_file(str(weights_path)), strict=True)
    model.train(False)
    return model
'''


def build_model_source(spec: ExportSpec) -> str:
    """The submission's single-file model.py for ``spec``."""
    imports: list[ast.stmt] = []
    bodies: list[str] = []
    for name in spec.sources:
        path = STANDALONE_DIR / f"{name}.py"
        if not name.isidentifier() or not path.is_file():
            raise ValueError(f"ExportSpec.sources: no standalone module {name!r} (expected {path})")
        file_imports, body = _split_source(path.read_text(encoding="utf-8"), str(path))
        imports += file_imports
        bodies.append(f"# {'-' * 30} export/standalone/{name}.py {'-' * 30}\n\n{body}")
    imports += ast.parse("from safetensors.torch import load_file").body
    header = (
        f"# model.py of {spec.name!r} v{spec.version} ({spec.modality}), generated by forensic-adapters export.\n"
        "# One self-contained file (plain torch + safetensors); do not edit: re-export instead.\n"
        f"# Sources: {', '.join(f'export/standalone/{name}.py' for name in spec.sources)}.\n"
    )
    source = "\n\n\n".join([header + "\n" + "\n".join(_merge_imports(imports))] + bodies + [_load_model_source(spec)])
    tree = ast.parse(source)
    classes = {node.name for node in tree.body if isinstance(node, ast.ClassDef)}
    if spec.model_class not in classes:
        raise ValueError(f"ExportSpec.model_class {spec.model_class!r} is not defined in sources {spec.sources}")
    return source.rstrip("\n") + "\n"


# ----------------------------------------------------------------------------------------------
# model_config.yaml and weights


def _plain(value: Any) -> Any:
    """YAML/JSON-safe copy: tuples -> lists, tensor/numpy scalars -> Python numbers, str keys."""
    if isinstance(value, dict):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if isinstance(value, torch.Tensor):
        return _plain(value.tolist())
    if hasattr(value, "item") and callable(value.item):  # numpy scalar
        return value.item()
    if isinstance(value, Path):
        return str(value)
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"cannot write {type(value).__name__} to model_config.yaml: use plain lists, numbers, strings")


def submission_config(spec: ExportSpec, dtype: str = "float32") -> dict:
    """The model_config.yaml mapping for ``spec`` (dtype at the top level, kwargs under ``model:``)."""
    dtype_name = _DTYPE_NAMES.get(dtype)
    if dtype_name is None:
        raise ValueError(f"dtype must be one of {sorted(_DTYPE_NAMES)}, got {dtype!r}")
    model_section = {"num_classes": int(spec.num_classes), "weights_file": WEIGHTS_FILE}
    model_section.update({key: value for key, value in spec.init_kwargs.items() if key != "num_classes"})
    config = _plain(
        {
            "name": spec.name,
            "version": str(spec.version),
            "modality": spec.modality,
            "dtype": dtype_name,
            "preprocessing": spec.preprocessing,
            "model": model_section,
        }
    )
    if yaml.safe_load(yaml.safe_dump(config, sort_keys=False)) != config:
        raise ValueError("model_config.yaml does not survive a YAML round trip; check init_kwargs")
    return config


def cast_state_dict(state_dict: dict[str, torch.Tensor], dtype: str = "float32") -> dict[str, torch.Tensor]:
    """Contiguous CPU copies; floating matrices in ``dtype``, floating vectors kept float32 (see module doc)."""
    dtype_name = _DTYPE_NAMES.get(dtype)
    if dtype_name is None:
        raise ValueError(f"dtype must be one of {sorted(_DTYPE_NAMES)}, got {dtype!r}")
    out = {}
    for key, tensor in state_dict.items():
        tensor = tensor.detach().cpu()
        if tensor.is_floating_point():
            low = dtype_name == "bfloat16" and tensor.ndim >= 2
            tensor = tensor.to(torch.bfloat16 if low else torch.float32)
        out[key] = tensor.contiguous().clone()
    return out


# ----------------------------------------------------------------------------------------------
# writing


def _install(tmp: Path, out_dir: Path) -> None:
    """Move the finished temporary directory onto ``out_dir`` (replacing a previous export only)."""
    if out_dir.exists():
        if not out_dir.is_dir():
            raise FileExistsError(f"{out_dir}: exists and is not a directory")
        entries = list(out_dir.iterdir())
        if entries and not (out_dir / "model_config.yaml").is_file():
            raise FileExistsError(f"{out_dir}: not empty and not a previous export; choose another output directory")
        backup = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old.", dir=out_dir.parent))
        os.replace(out_dir, backup / out_dir.name)
        try:
            os.replace(tmp, out_dir)
        except BaseException:
            os.replace(backup / out_dir.name, out_dir)
            raise
        finally:
            shutil.rmtree(backup, ignore_errors=True)
    else:
        os.replace(tmp, out_dir)


def _make_readable(directory: Path) -> None:
    """Temp files are created private (0600/0700); a submission must be readable by whoever runs it."""
    umask = os.umask(0)
    os.umask(umask)
    directory.chmod(0o777 & ~umask)
    for path in directory.iterdir():
        path.chmod(0o666 & ~umask)


def write_zip(directory: Path, zip_path: Path) -> Path:
    """Zip the submission files at the archive root (no parent folder), atomically."""
    with atomic_path(zip_path) as tmp:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            for path in sorted(directory.iterdir()):
                if path.is_file():
                    archive.write(path, arcname=path.name)
        umask = os.umask(0)
        os.umask(umask)
        tmp.chmod(0o666 & ~umask)
    return zip_path


def write_submission(spec: ExportSpec, out_dir: str | Path, dtype: str = "float32", zip: bool = False) -> Path:
    """Write the submission directory; returns it, or ``<out_dir>.zip`` (written too) when ``zip``.

    Raises ValueError (nothing written) if the config breaks the benchmark's rules.
    """
    from export.check import validate_config  # local: check imports nothing from here, keep it that way

    out_dir = Path(out_dir)
    source = build_model_source(spec)
    config = submission_config(spec, dtype)
    problems = validate_config(config)
    if problems:
        raise ValueError("invalid model_config.yaml:\n" + "\n".join(problems))
    for name in spec.extra_files:
        if Path(name).name != name or name in SUBMISSION_FILES:
            raise ValueError(f"ExportSpec.extra_files: {name!r} must be a plain file name other than {SUBMISSION_FILES}")
    tensors = cast_state_dict(spec.state_dict, dtype)

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".tmp", dir=out_dir.parent))
    try:
        write_text(tmp / "model.py", source)
        write_text(tmp / "model_config.yaml", yaml.safe_dump(config, sort_keys=False, default_flow_style=None))
        with atomic_path(tmp / WEIGHTS_FILE) as weights:
            save_file(tensors, str(weights), metadata={"format": "pt", "name": spec.name, "version": str(spec.version)})
        for name, text in spec.extra_files.items():
            write_text(tmp / name, text)
        _make_readable(tmp)
        _install(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if zip:
        return write_zip(out_dir, out_dir.with_name(out_dir.name + ".zip"))
    return out_dir
