"""Media packed into containers as they are published: a parquet shard of media bytes (the Hugging
Face ``{bytes, path}`` struct), tar and zip archives, and a benchmark cache folder; each with
chosen corrupt members. Shared by the container tests and benchmarks/container_reading.py."""

from __future__ import annotations

import io
import json
import tarfile
import zipfile
from pathlib import Path
from typing import Iterable, Sequence

import pyarrow as pa
import pyarrow.parquet as pq

CORRUPT = b"this is not media, it only has a media extension"


def media_files(root: Path, suffixes: Sequence[str]) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in suffixes)


def write_parquet_shard(
    path: Path,
    files: Sequence[Path],
    labels: Sequence[str],
    *,
    corrupt: Iterable[int] = (),
    row_group_size: int = 8,
    column: str = "image",
) -> Path:
    """One row per file: ``column`` a struct {bytes, path}, ``label`` text; rows in ``corrupt``
    hold bytes that are not media."""
    bad = set(corrupt)
    cells = [{"bytes": CORRUPT if i in bad else f.read_bytes(), "path": f.name} for i, f in enumerate(files)]
    table = pa.table({column: cells, "label": list(labels), "source": [f.parent.name for f in files]})
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path, row_group_size=row_group_size)
    return path


def write_archive(path: Path, members: dict[str, bytes]) -> Path:
    """A .zip, .tar or .tar.gz archive holding ``members`` (name -> bytes), in that order."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.name.endswith(".zip"):
        with zipfile.ZipFile(path, "w") as archive:
            for name, data in members.items():
                archive.writestr(name, data)
        return path
    with tarfile.open(path, "w:gz" if path.name.endswith((".tar.gz", ".tgz")) else "w") as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return path


def pack_files(path: Path, files: Sequence[Path], root: Path, *, corrupt: Iterable[str] = ()) -> Path:
    """``files`` (named relative to ``root``) into an archive, plus members named in ``corrupt``
    that carry a media extension but no media."""
    members = {f.relative_to(root).as_posix(): f.read_bytes() for f in files}
    members.update({name: CORRUPT for name in corrupt})
    return write_archive(path, members)


def write_benchmark_cache(
    cache: Path, name: str, files: Sequence[Path], modality: str, media_type: str, prefix: str = "img"
) -> Path:
    """A dataset as ``gasbench download`` leaves it: ``cache/datasets/<name>/samples/<prefix>_<n>.<ext>``
    with ``sample_metadata.json`` and ``dataset_info.json`` beside ``samples``."""
    folder = cache / "datasets" / name
    samples = folder / "samples"
    samples.mkdir(parents=True, exist_ok=True)
    metadata = {}
    for index, file in enumerate(files):
        target = samples / f"{prefix}_{index:06d}{file.suffix.lower()}"
        target.write_bytes(file.read_bytes())
        metadata[target.name] = {"source_file": file.name}
    (folder / "sample_metadata.json").write_text(json.dumps(metadata))
    (folder / "dataset_info.json").write_text(
        json.dumps({"name": name, "modality": modality, "media_type": media_type, "sample_count": len(files)})
    )
    return folder
