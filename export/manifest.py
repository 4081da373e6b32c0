"""SHA-256 manifest of a submission: written at export, verified by ``python -m export.check``.

The folder holds ``SHA256SUMS`` in the format of GNU ``sha256sum`` (``<64 hex>  <name>`` per line,
so ``cd DIR && sha256sum -c SHA256SUMS`` verifies it too). The zip carries the same text as its
archive comment instead of a member, so the uploaded archive still holds exactly the submission
files (docs/submission-format.md). A flipped byte in ``model.safetensors`` changes its digest, and
a folder and a zip of the same name (``DIR``, ``DIR.zip``) whose files differ come from different
exports: both are reported.

This module imports nothing of the project, like ``export.check`` which uses it.
"""

from __future__ import annotations

import hashlib
import re
import zipfile
import zlib
from pathlib import Path
from typing import IO

MANIFEST_FILE = "SHA256SUMS"
_LINE = re.compile(r"^(?P<digest>[0-9a-f]{64}) [ *](?P<name>[^/\\]+)$")
_IGNORED_DIRS = {"__pycache__"}  # importing model.py in place may leave bytecode here


def stream_digest(handle: IO[bytes]) -> str:
    digest = hashlib.sha256()
    for block in iter(lambda: handle.read(1 << 20), b""):
        digest.update(block)
    return digest.hexdigest()


def file_digest(path: str | Path) -> str:
    with open(path, "rb") as handle:
        return stream_digest(handle)


def manifest_text(digests: dict[str, str]) -> str:
    """``sha256sum`` lines, sorted by name."""
    return "".join(f"{digests[name]}  {name}\n" for name in sorted(digests))


def parse_manifest(text: str, source: str) -> dict[str, str]:
    """Name -> digest; a malformed line is a ValueError naming ``source`` and the line."""
    digests: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        match = _LINE.match(line)
        if match is None:
            raise ValueError(f"{source}: line {number} is not '<sha256>  <file name>': {line[:80]!r}")
        digests[match["name"]] = match["digest"]
    return digests


def directory_digests(directory: str | Path) -> dict[str, str]:
    """Digest of every regular file directly in ``directory`` except the manifest."""
    return {
        path.name: file_digest(path)
        for path in sorted(Path(directory).iterdir())
        if path.is_file() and path.name != MANIFEST_FILE
    }


def zip_digests(archive: zipfile.ZipFile) -> dict[str, str]:
    """Digest of every member (decompressed); a corrupt member raises ``zipfile.BadZipFile``."""
    digests = {}
    for info in archive.infolist():
        if info.is_dir():
            continue
        with archive.open(info) as handle:  # zipfile checks each member's CRC-32 once read to the end
            digests[info.filename] = stream_digest(handle)
    return digests


def zip_manifest(archive: zipfile.ZipFile, source: str) -> dict[str, str] | None:
    """The manifest in a zip's comment, None when the comment is not one (another tool's zip)."""
    try:
        text = archive.comment.decode("ascii")
        digests = parse_manifest(text, source)
    except (UnicodeDecodeError, ValueError):
        return None
    return digests or None


def compare(expected: dict[str, str], actual: dict[str, str], where: str, manifest: str) -> list[str]:
    """One line per file that is missing, changed or not listed."""
    problems = []
    for name in sorted(expected):
        if name not in actual:
            problems.append(f"{where}{name}: listed in {manifest} but missing; re-export")
        elif actual[name] != expected[name]:
            problems.append(
                f"{where}{name}: sha256 differs from {manifest} (changed or corrupted after export); re-export"
            )
    for name in sorted(set(actual) - set(expected)):
        problems.append(f"{where}{name}: not listed in {manifest} (added after export?); remove it or re-export")
    return problems


def verify_directory(directory: str | Path) -> tuple[list[str], dict[str, str]]:
    """(problems, digests of the folder's files). No manifest: nothing to verify (hand-made submission)."""
    directory = Path(directory)
    digests = directory_digests(directory)
    manifest = directory / MANIFEST_FILE
    if not manifest.is_file():
        return [], digests
    try:
        expected = parse_manifest(manifest.read_text(encoding="ascii"), str(manifest))
    except UnicodeDecodeError:
        return [f"{manifest}: not a sha256sum manifest (not ASCII text); re-export"], digests
    except ValueError as error:
        return [f"{error}; re-export"], digests
    return compare(expected, digests, f"{directory}/", str(manifest)), digests


def verify_zip(path: str | Path) -> tuple[list[str], dict[str, str] | None]:
    """(problems, member digests or None when a member is unreadable)."""
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as archive:
            digests = zip_digests(archive)
            expected = zip_manifest(archive, f"{path} (archive comment)")
    except (zipfile.BadZipFile, zlib.error, OSError, EOFError) as error:
        return [
            f"{path}: corrupt zip ({str(error).splitlines()[0] if str(error) else type(error).__name__}); "
            "re-export with --zip"
        ], None
    if expected is None:
        return [], digests
    return compare(expected, digests, f"{path}:", "its SHA256SUMS comment"), digests


def pair_problems(
    directory: Path, directory_files: dict[str, str], zip_path: Path, zip_files: dict[str, str]
) -> list[str]:
    """A folder and its zip of the same name must hold the same files (the zip has no manifest member)."""
    folder = {name: digest for name, digest in directory_files.items()}
    differing = sorted(name for name in set(folder) | set(zip_files) if folder.get(name) != zip_files.get(name))
    if not differing:
        return []
    shown = ", ".join(differing[:5]) + (f" ... and {len(differing) - 5} more" if len(differing) > 5 else "")
    return [
        f"{directory} and {zip_path} come from different exports ({shown} differ); re-export with --zip "
        "so that both are written again"
    ]
