"""Write an ``ExportSpec`` as a benchmark submission: model_config.yaml, model.py, model.safetensors.

``model.py`` is the concatenation of ``export/standalone/<source>.py`` files (relative imports
stripped, top-level imports hoisted and de-duplicated) plus a generated ``load_model``. The whole
directory is written into a temporary sibling and renamed into place, so a reader never sees a
half-written export.

The folder and its zip (``DIR``, ``DIR.zip``) are one unit: both are staged completely (the folder
with a ``SHA256SUMS`` manifest, the zip with the same manifest as its archive comment; see
:mod:`export.manifest`), then installed in an order whose every intermediate state is one export or
none, never a mix: the old zip is moved aside, the folder swapped in (atomically where the kernel
offers ``renameat2(RENAME_EXCHANGE)``), the new zip moved in. A process killed at any step leaves
the previous pair, or a folder without its zip; its staging temps are removed by the next export
(:func:`detectors.atomic.remove_stale_temp_files`). A re-export rewrites an existing ``DIR.zip`` of a
previous export even without ``zip=True``, so the pair never drifts apart.

dtype: ``"float32"`` or ``"bf16"``. In bf16, weight matrices (ndim >= 2) are stored as bfloat16 and
vectors (norm weights/biases, layer scales, linear biases, the folded calibrator's scale/bias) stay
float32 in the file: they are a negligible share of the bytes and the place where rounding hurts
most. The benchmark then casts the whole module to the declared dtype at load time
(``model.to(device, dtype)``); the standalone heads compute normalisation and the calibration affine
in float32, so only the parameters themselves carry bf16 rounding.
"""

from __future__ import annotations

import ast
import ctypes
import errno
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

from detectors.atomic import atomic_path, make_temp_dir, remove_stale_temp_files, temp_prefix, write_text
from detectors.locking import DirectoryLock
from export.manifest import MANIFEST_FILE, directory_digests, manifest_text
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


def _check_replaceable(out_dir: Path) -> None:
    """``out_dir`` may be (re)written: absent, empty, or a previous export (never someone's folder)."""
    if out_dir.exists() or out_dir.is_symlink():
        if not out_dir.is_dir() or out_dir.is_symlink():
            raise FileExistsError(f"{out_dir}: exists and is not a directory")
        if any(out_dir.iterdir()) and not (out_dir / "model_config.yaml").is_file():
            raise FileExistsError(f"{out_dir}: not empty and not a previous export; choose another output directory")


def _is_previous_export_zip(path: Path) -> bool:
    """A zip written by an earlier export of this folder (submission files at its root)."""
    if not path.is_file():
        return False
    try:
        with zipfile.ZipFile(path) as archive:
            return "model_config.yaml" in archive.namelist()
    except (zipfile.BadZipFile, OSError):
        return False


def _exchange(first: Path, second: Path) -> bool:
    """Swap two paths in one atomic step (Linux ``renameat2(RENAME_EXCHANGE)``); False where the C
    library or the filesystem does not offer it."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        return False
    at_fdcwd, rename_exchange = -100, 2  # <fcntl.h> AT_FDCWD, <linux/fs.h> RENAME_EXCHANGE
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if renameat2(at_fdcwd, os.fsencode(first), at_fdcwd, os.fsencode(second), rename_exchange) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), str(second))


def _retire_name(target: Path, suffix: str) -> Path:
    """A free temporary name next to ``target`` (owned by this process, see detectors.atomic)."""
    fd, name = tempfile.mkstemp(prefix=temp_prefix(target.name), suffix=suffix, dir=target.parent)
    os.close(fd)
    os.unlink(name)
    return Path(name)


def _fsync_directory(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _install(tmp: Path, out_dir: Path, staged_zip: Path | None = None, zip_path: Path | None = None) -> None:
    """Move the finished staging folder (and zip) onto ``out_dir`` (and ``zip_path``).

    Order: old zip aside -> folder swapped -> new zip in. Killed between any two steps, the paths hold
    the old pair, the old folder alone, or the new folder alone: never a folder and a zip of two exports.
    """
    retired: list[Path] = []
    try:
        if staged_zip is not None and zip_path is not None and (zip_path.exists() or zip_path.is_symlink()):
            aside = _retire_name(zip_path, ".old")
            os.replace(zip_path, aside)
            retired.append(aside)
        if out_dir.exists():
            if _exchange(tmp, out_dir):  # tmp now holds the previous export
                retired.append(tmp)
            else:
                aside = _retire_name(out_dir, ".old")
                os.replace(out_dir, aside)
                try:
                    os.replace(tmp, out_dir)
                except BaseException:
                    os.replace(aside, out_dir)
                    raise
                retired.append(aside)
        else:
            os.replace(tmp, out_dir)
        if staged_zip is not None and zip_path is not None:
            os.replace(staged_zip, zip_path)
        _fsync_directory(out_dir.parent)
    finally:
        for path in retired:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)


def _make_readable(directory: Path) -> None:
    """Temp files are created private (0600/0700); a submission must be readable by whoever runs it."""
    umask = os.umask(0)
    os.umask(umask)
    directory.chmod(0o777 & ~umask)
    for path in directory.iterdir():
        path.chmod(0o666 & ~umask)


def _write_zip_file(directory: Path, target: Path) -> None:
    """The submission files at the archive root (no parent folder, no manifest member); the manifest of
    exactly those members is the archive comment (export.manifest)."""
    digests = directory_digests(directory)
    with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name in sorted(digests):
            archive.write(directory / name, arcname=name)
        archive.comment = manifest_text(digests).encode("ascii")
    with open(target, "rb") as handle:
        os.fsync(handle.fileno())
    umask = os.umask(0)
    os.umask(umask)
    target.chmod(0o666 & ~umask)


def write_zip(directory: Path, zip_path: Path) -> Path:
    """Zip the submission files at the archive root (no parent folder), atomically."""
    with atomic_path(zip_path) as tmp:
        _write_zip_file(Path(directory), tmp)
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
        if Path(name).name != name or name in (*SUBMISSION_FILES, MANIFEST_FILE):
            raise ValueError(f"ExportSpec.extra_files: {name!r} must be a plain file name other than "
                             f"{(*SUBMISSION_FILES, MANIFEST_FILE)}")
    tensors = cast_state_dict(spec.state_dict, dtype)

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    zip_path = out_dir.with_name(out_dir.name + ".zip")
    # one export of this submission at a time: two interleaved installs could pair one's folder with
    # the other's zip (the lock sits beside the folder, which itself is swapped)
    with DirectoryLock(out_dir.parent, "export", name=f".{out_dir.name}.lock"):
        _write_locked(spec, out_dir, zip_path, source, config, tensors, zip)
    return zip_path if zip else out_dir


def _write_locked(spec: ExportSpec, out_dir: Path, zip_path: Path, source: str, config: dict,
                  tensors: dict[str, torch.Tensor], zip: bool) -> None:
    # staging folders and zips of killed exports of this submission (named with their PID)
    remove_stale_temp_files(out_dir.parent, targets={out_dir.name, zip_path.name})
    _check_replaceable(out_dir)
    with_zip = zip or _is_previous_export_zip(zip_path)  # an existing pair stays a pair
    tmp = make_temp_dir(out_dir)
    staged_zip: Path | None = None
    try:
        write_text(tmp / "model.py", source)
        write_text(tmp / "model_config.yaml", yaml.safe_dump(config, sort_keys=False, default_flow_style=None))
        with atomic_path(tmp / WEIGHTS_FILE) as weights:
            save_file(tensors, str(weights), metadata={"format": "pt", "name": spec.name, "version": str(spec.version)})
        for name, text in spec.extra_files.items():
            write_text(tmp / name, text)
        write_text(tmp / MANIFEST_FILE, manifest_text(directory_digests(tmp)))
        _make_readable(tmp)
        if with_zip:
            staged_zip = _retire_name(zip_path, ".zip")
            _write_zip_file(tmp, staged_zip)
        _install(tmp, out_dir, staged_zip, zip_path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if staged_zip is not None:
            staged_zip.unlink(missing_ok=True)
        raise
