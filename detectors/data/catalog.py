"""Dataset catalogue: dataset YAML -> ``DatasetEntry`` -> ``MediaItem``; splits; sampling weights.

The YAML uses the benchmark's field names, so one file can describe the data for both training here
and a benchmark run::

    datasets:
      - name: coco-real
        path: data/coco            # folder (searched recursively) or a .csv/.parquet manifest
        modality: image            # image | video | audio
        media_type: real           # real | synthetic | semisynthetic
        include_paths: ["val2017/*"]   # optional fnmatch globs, relative to the dataset folder
        exclude_paths: ["*_thumb.*"]
        generator_family: null     # e.g. "diffusion", "gan"
        weight: 1.0                # sampling share (> 0), independent of dataset size
        split: null                # train | val | calibration | test: pin the whole dataset
        max_items: 500             # optional cap (deterministic, evenly spaced over sorted paths)
        media_per_archive: 100     # per archive / parquet shard (seeded choice; -1: all)
        archives_per_dataset: 2    # archives / shards taken (seeded choice; -1: all)
        data_columns: [image]      # parquet: the media column(s); default: the benchmark's column rule
        filter_column: label       # parquet: keep rows whose filter_column equals filter_value
        filter_value: fake
        label_column: null         # parquet: per-row label (0/1, real/fake or a media type)
        score_column: null         # manifests: a column of soft labels (a teacher's p(fake) in [0, 1])
        score_threshold: 0.5       # with score_column: label = fake where score >= threshold

``path`` is a folder (searched recursively for media files, frame folders, parquet shards and zip /
tar / tar.gz archives), a .csv/.parquet manifest of paths, a parquet shard of media bytes or an
archive (:mod:`detectors.data.containers`: media inside them are ``<container>::<member>`` items).
Relative ``path`` values are resolved against the YAML file's folder. Manifest rows are resolved
against the manifest's folder. Loose files of a folder count as one archive, so ``media_per_archive``
caps them like ``max_items`` does. The archive and row choices follow the benchmark's download
(``random.Random(seed).sample`` of archives and of an archive's members, pandas' ``DataFrame.sample``
of a shard's rows), ``seed`` being the YAML's top-level ``seed`` (default 0).

With ``benchmark_cache`` (``--benchmark-cache DIR``), the YAML is one of the benchmark's own dataset
configs: each entry's ``path`` names the remote repository, and the media are read from the folder
``gasbench download`` filled, ``DIR/datasets/<name>/samples`` (gasstation datasets: every week folder
``DIR/datasets/<name>/<week>/samples``); the download already applied the archive, row and path
choices. Other benchmark fields (``source``, ``generator_variant``, ``original_name``, ...) are kept.
Unknown fields are kept in ``DatasetEntry.extra`` and logged (they usually are typos).
"""

from __future__ import annotations

import csv
import fnmatch
import logging
import math
import os
import random
import zlib
from collections import Counter, defaultdict
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import torch

from detectors.atomic import atomic_open
from detectors.errors import ConfigError

logger = logging.getLogger(__name__)

MODALITIES = ("image", "video", "audio")
MEDIA_TYPES = ("real", "synthetic", "semisynthetic")
SPLITS = ("train", "val", "calibration", "test")
EXTENSIONS: dict[str, tuple[str, ...]] = {
    "image": (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif"),
    "video": (".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v"),
    "audio": (".wav", ".flac", ".ogg", ".mp3", ".m4a", ".opus"),
}
MANIFEST_SUFFIXES = (".csv", ".parquet")
SPLIT_COLUMNS = ("path", "dataset", "label", "media_type", "generator_family", "split", "modality", "weight", "score")

_REQUIRED = ("name", "path", "modality", "media_type")
_OPTIONAL = (
    "include_paths", "exclude_paths", "generator_family", "weight", "split", "max_items",
    "source_format", "content_category", "notes", "media_per_archive", "archives_per_dataset",
    "data_columns", "filter_column", "filter_value", "label_column",
    "score_column", "score_threshold",
)  # fmt: skip
# the benchmark's own fields that do not change what is read here (BenchmarkDatasetConfig)
_BENCHMARK_ONLY = ("source", "generator_variant", "original_name")
_TOP_LEVEL = ("datasets", "image", "video", "audio", "seed", "benchmark_size")
_LABEL_WORDS = {"real": 0, "fake": 1, "synthetic": 1, "semisynthetic": 1, "0": 0, "1": 1}


@dataclass(frozen=True)
class DatasetEntry:
    """One validated ``datasets:`` entry; ``path`` is absolute."""

    name: str
    path: str
    modality: str
    media_type: str
    include_paths: tuple[str, ...] = ()
    exclude_paths: tuple[str, ...] = ()
    generator_family: str | None = None
    weight: float = 1.0
    split: str | None = None
    max_items: int | None = None
    source_format: str | None = None
    content_category: str | None = None
    notes: str | None = None
    media_per_archive: int | None = None
    archives_per_dataset: int | None = None
    data_columns: tuple[str, ...] = ()
    filter_column: str | None = None
    filter_value: str | None = None
    label_column: str | None = None
    seed: int = 0
    score_column: str | None = None
    score_threshold: float = 0.5
    extra: Mapping[str, Any] = field(default_factory=dict, compare=False)
    config_file: str | None = field(default=None, compare=False)
    index: int = field(default=0, compare=False)

    @property
    def where(self) -> str:
        """Location used in error messages, e.g. ``datasets[2] (name 'sdxl')``."""
        return f"datasets[{self.index}] (name {self.name!r})"

    @property
    def cap(self) -> int | None:
        caps = [c for c in (self.max_items, self.media_per_archive) if c is not None]
        return min(caps) if caps else None


@dataclass(frozen=True)
class MediaItem:
    """One media file with its label. ``label``: 0 real, 1 fake. ``score``: a soft label (a teacher's
    p(fake) in [0, 1]) when the dataset has a ``score_column``; ``label`` is then the score binarised
    at the entry's ``score_threshold``."""

    path: str
    label: int
    media_type: str
    dataset: str
    modality: str
    generator_family: str | None = None
    weight: float = 1.0
    split: str | None = None
    score: float | None = None

    @property
    def class_index(self) -> int:
        """3-class target: 0 real, 1 synthetic, 2 semisynthetic."""
        return MEDIA_TYPES.index(self.media_type)


# ----------------------------------------------------------------------------------------- loading
def load_dataset_config(
    path: str | Path, benchmark_cache: str | Path | None = None, modality: str | None = None
) -> list[DatasetEntry]:
    """Read and validate a dataset YAML; every problem raises ``ConfigError`` naming the field.

    ``benchmark_cache``: the YAML is a benchmark dataset config and its media are read from that
    cache (module docstring); entries of another ``modality`` than the run's are left out, and
    datasets absent from the cache are left out with a warning (an error when none is there)."""
    path = Path(path).resolve()
    if not path.is_file():
        raise ConfigError(path, None, "dataset config file does not exist")
    from detectors.config import read_yaml_document  # size, encoding, alias and depth limits

    doc = read_yaml_document(path)
    if not isinstance(doc, dict):
        raise ConfigError(path, None, f"top level must be a mapping with a 'datasets' list, got {type(doc).__name__}")
    raw = doc.get("datasets")
    if raw is None and any(key in doc for key in MODALITIES):  # the benchmark's grouped form
        raw = []
        for key in MODALITIES:
            group = doc.get(key) or []
            if not isinstance(group, list):
                raise ConfigError(path, key, f"must be a list of dataset entries, got {type(group).__name__}")
            raw.extend(
                dict(spec, modality=spec.get("modality", key)) if isinstance(spec, dict) else spec for spec in group
            )
    if not isinstance(raw, list) or not raw:
        raise ConfigError(path, "datasets", "missing or empty 'datasets' list")
    seed = doc.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ConfigError(path, "seed", f"must be an integer, got {seed!r}")
    cache = None
    if benchmark_cache is not None:
        cache = Path(benchmark_cache).expanduser().resolve()
        if not cache.is_dir():
            raise ConfigError(None, "--benchmark-cache", f"not a folder: {cache}")

    entries: list[DatasetEntry] = []
    seen: dict[str, int] = {}
    absent: list[str] = []
    for index, spec in enumerate(raw):
        if (
            cache is not None
            and modality is not None
            and isinstance(spec, dict)
            and str(spec.get("modality", "")).strip().lower() != modality
        ):
            continue  # a benchmark config lists every modality's datasets
        entry = _parse_entry(spec, index, path, seed, cache)
        if entry is None:
            absent.append(str(spec["name"]))
            continue
        if entry.name in seen:
            raise ConfigError(
                path, f"{entry.where}.name", f"duplicate dataset name (also datasets[{seen[entry.name]}])"
            )
        seen[entry.name] = index
        entries.append(entry)
    if absent:
        logger.warning(
            "%s: %d dataset(s) not in the benchmark cache %s (run `gasbench download` for them), left out: %s",
            path,
            len(absent),
            cache,
            ", ".join(absent[:10]) + (" ..." if len(absent) > 10 else ""),
        )
    if not entries:
        raise ConfigError(
            path,
            "datasets",
            f"none of its {modality or ''} datasets is in the benchmark cache {cache} "
            "(expected DIR/datasets/<name>/samples)",
        )
    return entries


def benchmark_cache_folder(cache: Path, name: str) -> Path | None:
    """Where ``gasbench download`` left dataset ``name`` in ``cache`` (the cache root or its
    ``datasets`` folder): ``<name>/samples``, or ``<name>`` itself holding week folders
    (gasstation); None when absent."""
    for base in (cache / "datasets", cache):
        folder = base / name
        if (folder / "samples").is_dir():
            return folder / "samples"
        if folder.is_dir() and any(p.is_dir() for p in folder.glob("*/samples")):
            return folder
    return None


def _parse_entry(spec: Any, index: int, file: Path, seed: int = 0, cache: Path | None = None) -> DatasetEntry | None:
    where = f"datasets[{index}]"
    if not isinstance(spec, dict):
        raise ConfigError(file, where, f"each entry must be a mapping, got {type(spec).__name__}")
    for key in _REQUIRED:
        if spec.get(key) in (None, ""):
            raise ConfigError(file, f"{where}.{key}", f"missing required field '{key}'")
    for key in ("name", "path"):
        if isinstance(spec[key], (dict, list)):
            kind = "mapping" if isinstance(spec[key], dict) else "list"
            raise ConfigError(file, f"{where}.{key}", f"{key} must be a string, got a {kind}")
    name = str(spec["name"])
    where = f"datasets[{index}] (name {name!r})"

    def choice(key: str, allowed: Sequence[str]) -> str:
        value = str(spec[key]).strip().lower()
        if value not in allowed:
            raise ConfigError(file, f"{where}.{key}", f"unknown {key} {spec[key]!r}; allowed: {', '.join(allowed)}")
        return value

    modality = choice("modality", MODALITIES)
    media_type = choice("media_type", MEDIA_TYPES)
    split = choice("split", SPLITS) if spec.get("split") is not None else None

    weight = spec.get("weight", 1.0)
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight) or weight <= 0:
        raise ConfigError(file, f"{where}.weight", f"weight must be a number > 0, got {weight!r}")

    def count(key: str) -> int | None:
        value = spec.get(key)
        if value is None or (value == -1 and key in ("media_per_archive", "archives_per_dataset")):
            return None  # the benchmark's -1: all of them
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            allowed = " (or -1: all)" if key in ("media_per_archive", "archives_per_dataset") else ""
            raise ConfigError(file, f"{where}.{key}", f"{key} must be an integer >= 1{allowed}, got {value!r}")
        return value

    def patterns(key: str) -> tuple[str, ...]:
        value = spec.get(key)
        if value is None:
            return ()
        if isinstance(value, str):
            return (value,)
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return tuple(value)
        raise ConfigError(file, f"{where}.{key}", f"{key} must be a glob string or a list of them, got {value!r}")

    from detectors.data.containers import archive_kind

    if cache is not None:
        found = benchmark_cache_folder(cache, name)
        if found is None:
            return None
        data_path = found
    else:
        data_path = Path(str(spec["path"])).expanduser()
        if not data_path.is_absolute():
            data_path = file.parent / data_path
        data_path = data_path.resolve()
    if not data_path.exists():
        raise ConfigError(file, f"{where}.path", f"path does not exist: {data_path}")
    if data_path.is_file() and data_path.suffix.lower() not in MANIFEST_SUFFIXES and archive_kind(data_path) is None:
        raise ConfigError(
            file,
            f"{where}.path",
            f"path must be a folder, a {'/'.join(MANIFEST_SUFFIXES)} manifest or "
            "parquet shard, or a .zip/.tar/.tar.gz archive",
        )

    def columns(key: str) -> tuple[str, ...]:
        value = spec.get(key)
        if value is None:
            return ()
        value = [value] if isinstance(value, str) else value
        if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
            raise ConfigError(file, f"{where}.{key}", f"{key} must be a column name or a list of them, got {value!r}")
        return tuple(value)

    if (spec.get("filter_column") is None) != (spec.get("filter_value") is None):
        raise ConfigError(file, f"{where}.filter_column", "filter_column and filter_value go together")

    known = set(_REQUIRED) | set(_OPTIONAL) | set(_BENCHMARK_ONLY)
    extra = {k: v for k, v in spec.items() if k not in known}
    if extra:
        logger.warning("%s: %s: ignoring unknown field(s) %s", file, where, ", ".join(map(str, extra)))

    def text(key: str) -> str | None:
        return None if spec.get(key) is None else str(spec[key])

    score_column = text("score_column")
    if score_column is not None and not data_path.is_file():
        raise ConfigError(
            file,
            f"{where}.score_column",
            f"soft labels are read from a .csv/.parquet manifest; {data_path} is a folder",
        )
    threshold = spec.get("score_threshold", 0.5)
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0 < threshold < 1:
        raise ConfigError(file, f"{where}.score_threshold", f"must be a number in (0, 1), got {threshold!r}")

    entry = DatasetEntry(
        name=name, path=str(data_path), modality=modality, media_type=media_type,
        include_paths=patterns("include_paths"), exclude_paths=patterns("exclude_paths"),
        generator_family=text("generator_family"), weight=float(weight), split=split,
        max_items=count("max_items"), source_format=text("source_format"),
        content_category=text("content_category"), notes=text("notes"),
        media_per_archive=count("media_per_archive"), archives_per_dataset=count("archives_per_dataset"),
        data_columns=columns("data_columns"), filter_column=text("filter_column"),
        filter_value=text("filter_value"), label_column=text("label_column"), seed=seed,
        score_column=score_column, score_threshold=float(threshold),
        extra=extra, config_file=str(file), index=index,
    )  # fmt: skip
    if cache is not None:
        # the download already chose the archives, rows and paths: read every cached sample
        entry = replace(
            entry,
            include_paths=(),
            exclude_paths=(),
            media_per_archive=None,
            archives_per_dataset=None,
            data_columns=(),
            filter_column=None,
            filter_value=None,
        )
    return entry


def collect_items(entries: Iterable[DatasetEntry], modality: str | None = None) -> list[MediaItem]:
    """List the media files of every entry; ``modality`` (if given) must match every entry."""
    items: list[MediaItem] = []
    for entry in entries:
        if modality is not None and entry.modality != modality:
            raise ConfigError(
                entry.config_file, f"{entry.where}.modality",
                f"dataset is '{entry.modality}' but this run needs '{modality}' data",
            )  # fmt: skip
        items.extend(_entry_items(entry))
    if any(item.score is not None for item in items) and not all(item.score is not None for item in items):
        # datasets without soft labels train against their hard labels, as scores 0 and 1
        items = [item if item.score is not None else replace(item, score=float(item.label)) for item in items]
    return items


def load_items(
    yaml_path: str | Path, modality: str | None = None, benchmark_cache: str | Path | None = None
) -> list[MediaItem]:
    """``collect_items(load_dataset_config(yaml_path, benchmark_cache, modality), modality)``."""
    return collect_items(load_dataset_config(yaml_path, benchmark_cache, modality), modality)


def _matches(relative: str, patterns: Sequence[str]) -> bool:
    # A glob matches the relative posix path itself or, for a folder pattern like "train", anything below it.
    return any(
        fnmatch.fnmatchcase(relative, p) or fnmatch.fnmatchcase(relative, p.rstrip("/") + "/*") for p in patterns
    )


def _select(entry: DatasetEntry, relative: str) -> bool:
    if entry.include_paths and not _matches(relative, entry.include_paths):
        return False
    return not (entry.exclude_paths and _matches(relative, entry.exclude_paths))


def _entry_items(entry: DatasetEntry) -> list[MediaItem]:
    from detectors.data.containers import archive_kind

    root = Path(entry.path)
    containers: list[Path] = []
    if root.is_dir():
        rows, containers = _folder_rows(entry, root)
    elif archive_kind(root) is not None or (root.suffix.lower() == ".parquet" and not _is_path_manifest(root)):
        rows, containers = [], [root]
    else:
        rows = _manifest_rows(entry, root)
    rows.sort(key=lambda r: r[0])
    if not containers:
        rows = _evenly_spaced(rows, entry.cap)
    else:
        # loose files count as one archive; each container gets its own media_per_archive
        rows = _evenly_spaced(rows, entry.media_per_archive)
        chosen = sorted(containers)
        if entry.archives_per_dataset is not None and len(chosen) > entry.archives_per_dataset:
            chosen = sorted(random.Random(entry.seed).sample(chosen, entry.archives_per_dataset))
        base = root if root.is_dir() else root.parent
        for container in chosen:
            rows.extend(_container_rows(entry, container, container.relative_to(base).as_posix()))
        rows = _evenly_spaced(sorted(rows, key=lambda r: r[0]), entry.max_items)
    if not rows:
        searched = f"files with extensions {' '.join(EXTENSIONS[entry.modality])}" if root.is_dir() else "manifest rows"
        if containers:
            searched = f"{searched} and {len(containers)} archive(s) / parquet shard(s)"
        filters = ""
        if entry.include_paths or entry.exclude_paths:
            filters = f" (include_paths={list(entry.include_paths)}, exclude_paths={list(entry.exclude_paths)})"
        raise ConfigError(
            entry.config_file, f"{entry.where}.path", f"no media found in {root}: searched {searched}{filters}"
        )
    return [
        MediaItem(
            path=p, label=0 if mt == "real" else 1, media_type=mt, dataset=entry.name, modality=entry.modality,
            generator_family=entry.generator_family, weight=entry.weight, split=entry.split,
            score=score[0] if score else None,
        )
        for p, mt, *score in rows  # manifests with a score_column add the soft label
    ]  # fmt: skip


def container_media(path: str | Path, modality: str) -> list[str] | None:
    """Every medium of an archive or parquet shard named on a command line (``detect``), as
    ``<container>::<member>`` paths; None when ``path`` is not such a container. A frames parquet
    shard gives its videos; an unreadable or empty container gives one ``<container>::`` path."""
    from detectors.data.containers import is_container

    file = Path(path)
    if not is_container(file) or not file.is_file():
        return None
    entry = DatasetEntry(name=file.name, path=str(file.resolve()), modality=modality, media_type="real")
    if modality == "video" and file.suffix.lower() == ".parquet":
        from detectors.errors import MediaError
        from detectors.video.io import frames_parquet_ref, frames_parquet_video_ids

        try:
            ids = frames_parquet_video_ids(file)
        except MediaError:
            ids = []  # damaged: the container reader names it
        if ids:
            return [frames_parquet_ref(file.resolve(), video_id) for video_id in ids]
    return [ref for ref, _ in _container_rows(entry, file.resolve(), file.name)]


def _evenly_spaced(rows: list[tuple[str, str]], cap: int | None) -> list[tuple[str, str]]:
    # Evenly spaced over the sorted list, so a cap does not take only the first sub-folder.
    if cap is None or len(rows) <= cap:
        return rows
    keep = np.linspace(0, len(rows) - 1, cap).round().astype(int)
    return [rows[i] for i in keep]


def _is_path_manifest(file: Path) -> bool:
    """A parquet file listing media paths (a top-level ``path`` column of text), not media bytes."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        schema = pq.read_schema(file)
    except Exception:  # a damaged shard: the container reader reports it
        return False
    if "path" not in schema.names:
        return False
    kind = schema.field("path").type
    return pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_dictionary(kind)


def _container_rows(entry: DatasetEntry, container: Path, relative: str) -> list[tuple[str, str]]:
    """The selected media of one archive or parquet shard; an unreadable or empty one is one
    ``<container>::`` row, skipped and counted when loaded (its error says why)."""
    from detectors.data.containers import archive_kind, list_archive, list_parquet, member_ref, row_ref
    from detectors.errors import MediaError

    unreadable = [(member_ref(container, ""), entry.media_type)]
    if archive_kind(container) is not None:
        members, problem = list_archive(container, EXTENSIONS[entry.modality])
        if problem:
            logger.warning(
                "%s: %s%s",
                container,
                problem,
                f"; keeping the {len(members)} member(s) listed before it"
                if members
                else "; counted as one unreadable sample",
            )
        members = [m for m in members if _select_member(entry, relative, m)]
        if not members:
            if not problem:
                logger.warning(
                    "%s: no %s members%s; counted as one unreadable sample",
                    container,
                    entry.modality,
                    " matching include_paths/exclude_paths" if entry.include_paths or entry.exclude_paths else "",
                )
            return unreadable
        if entry.media_per_archive is not None and len(members) > entry.media_per_archive:
            members = random.Random(entry.seed).sample(members, entry.media_per_archive)
        return [(member_ref(container, m), entry.media_type) for m in members]
    try:
        rows, columns = list_parquet(
            container,
            entry.modality,
            data_columns=entry.data_columns or None,
            filter_column=entry.filter_column,
            filter_value=entry.filter_value,
            label_column=entry.label_column,
        )
    except MediaError as error:
        if (
            entry.data_columns
            or entry.filter_column
            or entry.label_column
            or error.problem.startswith(("column", "no media"))
        ):
            raise ConfigError(entry.config_file, f"{entry.where}.path", str(error)) from error
        logger.warning("%s; counted as one unreadable sample", error)
        return unreadable
    if not rows:
        logger.warning(
            "%s: no rows%s",
            container,
            f" with {entry.filter_column} == {entry.filter_value!r}" if entry.filter_column else "",
        )
        return []
    if entry.media_per_archive is not None and len(rows) > entry.media_per_archive:
        # pandas' DataFrame.sample(n, random_state=seed), as the benchmark samples a shard's rows
        picked = np.random.RandomState(entry.seed).choice(len(rows), size=entry.media_per_archive, replace=False)
        rows = [rows[i] for i in picked]
    out = []
    for row, label in rows:
        media_type = entry.media_type
        if entry.label_column is not None:
            value = None if label is None else str(label).strip().lower()
            record = {"media_type": value} if value in MEDIA_TYPES else {"label": value}
            media_type = _row_media_type(entry, record, container, row)
        out.extend((row_ref(container, column, row), media_type) for column in columns)
    return out


def _select_member(entry: DatasetEntry, archive: str, member: str) -> bool:
    """include_paths / exclude_paths for an archive member: a glob matches its path inside the
    archive or that path below the archive's own (``data/train.zip/cats/1.png``)."""
    paths = (member, f"{archive}/{member}")
    if entry.include_paths and not any(_matches(p, entry.include_paths) for p in paths):
        return False
    return not (entry.exclude_paths and any(_matches(p, entry.exclude_paths) for p in paths))


def _folder_rows(entry: DatasetEntry, root: Path) -> tuple[list[tuple[str, str]], list[Path]]:
    """Loose media files (and frame videos) of a folder, and its archives / media parquet shards.
    A broken or looping symbolic link with a media extension stays in the list (under its own
    path): loading it fails, naming the link, and it is counted with the unreadable media."""
    from detectors.data.containers import archive_kind

    suffixes = EXTENSIONS[entry.modality]
    rows: list[tuple[str, str]] = []
    containers: list[Path] = []
    dangling: list[str] = []
    for file in root.rglob("*"):
        if file.name.startswith("."):
            continue
        relative = file.relative_to(root).as_posix()
        if file.suffix.lower() in suffixes:
            if file.is_file():
                if _select(entry, relative):
                    rows.append((str(file.resolve()), entry.media_type))
            elif file.is_symlink() and _select(entry, relative):
                dangling.append(str(file))
                rows.append((os.path.abspath(file), entry.media_type))
        elif (
            archive_kind(file) is not None
            and file.is_file()
            and not (entry.exclude_paths and _matches(relative, entry.exclude_paths))
        ):
            containers.append(file.resolve())
    if dangling:
        logger.warning(
            "%s: %d broken or looping symbolic link(s), counted as unreadable: %s",
            root,
            len(dangling),
            ", ".join(dangling[:5]) + (" ..." if len(dangling) > 5 else ""),
        )
    frame_rows, shards = _parquet_and_frame_rows(entry, root)
    return rows + frame_rows, containers + shards


def _parquet_and_frame_rows(entry: DatasetEntry, root: Path) -> tuple[list[tuple[str, str]], list[Path]]:
    """Videos stored as frames below a video dataset folder, as the benchmark stores them: every
    sub-folder holding frame images (``detectors.video.io.frame_files``; the folder itself is the
    video) and every video of a ``*.parquet`` shard with a ``video_id`` column
    (``<shard>.parquet::<video_id>``). ``include_paths`` / ``exclude_paths`` match the folder or
    shard path. Other parquet shards (any modality) are returned as media containers; path
    manifests (a text ``path`` column) inside a data folder are not read."""
    from detectors.errors import MediaError

    rows: list[tuple[str, str]] = []
    shards: list[Path] = []
    if entry.modality == "video":
        from detectors.video.io import frame_files

        for folder in sorted(p for p in root.rglob("*") if p.is_dir() and not p.name.startswith(".")):
            if frame_files(folder) and _select(entry, folder.relative_to(root).as_posix()):
                rows.append((str(folder.resolve()), entry.media_type))
    for shard in sorted(root.rglob("*.parquet")):
        relative = shard.relative_to(root).as_posix()
        if not shard.is_file() or shard.name.startswith(".") or _is_path_manifest(shard):
            continue
        if entry.exclude_paths and _matches(relative, entry.exclude_paths):
            continue
        if entry.modality == "video":
            from detectors.video.io import frames_parquet_ref, frames_parquet_video_ids

            try:
                ids = frames_parquet_video_ids(shard)
            except MediaError:
                ids = []  # a damaged shard: the container reader names and counts it
            if ids:
                if _select(entry, relative):
                    rows.extend((frames_parquet_ref(shard.resolve(), video_id), entry.media_type) for video_id in ids)
                continue
        shards.append(shard.resolve())
    return rows, shards


def _manifest_rows(entry: DatasetEntry, manifest: Path) -> list[tuple[str, str, float | None]]:
    import pandas as pd

    where = f"{entry.where}.path"
    try:
        frame = pd.read_parquet(manifest) if manifest.suffix.lower() == ".parquet" else pd.read_csv(manifest, dtype=str)
    except Exception as exc:  # pandas/pyarrow raise many types for unreadable files
        raise ConfigError(entry.config_file, where, f"cannot read manifest {manifest}: {exc}") from exc
    if "path" not in frame.columns:
        raise ConfigError(
            entry.config_file,
            where,
            f"manifest {manifest} has no 'path' column (columns: {', '.join(map(str, frame.columns))})",
        )
    if entry.score_column is not None and entry.score_column not in frame.columns:
        raise ConfigError(
            entry.config_file,
            f"{entry.where}.score_column",
            f"manifest {manifest} has no {entry.score_column!r} column (columns: {', '.join(map(str, frame.columns))})",
        )
    rows: list[tuple[str, str, float | None]] = []
    missing: list[str] = []
    for number, record in enumerate(frame.to_dict("records"), start=2):  # CSV line numbers (header = 1)
        raw = str(record["path"])
        file = Path(raw) if Path(raw).is_absolute() else manifest.parent / raw
        relative = Path(raw).as_posix()
        if not _select(entry, relative):
            continue
        if not file.is_file():
            missing.append(raw)
            continue
        if entry.score_column is None:
            rows.append((str(file.resolve()), _row_media_type(entry, record, manifest, number), None))
        else:
            rows.append((str(file.resolve()), *_row_score(entry, record, manifest, number)))
    if missing:
        raise ConfigError(
            entry.config_file, where,
            f"{len(missing)} manifest row(s) of {manifest} point at missing files, e.g. {', '.join(missing[:3])}",
        )  # fmt: skip
    return rows


def _row_media_type(entry: DatasetEntry, record: Mapping[str, Any], manifest: Path, number: int) -> str:
    """A row's media type: its ``media_type`` column, else derived from ``label``, else the entry's."""
    where = f"{manifest.name} row {number}"
    media_type = _cell(record, "media_type")
    label = _cell(record, "label")
    if media_type is not None:
        media_type = media_type.lower()
        if media_type not in MEDIA_TYPES:
            raise ConfigError(
                entry.config_file,
                f"{entry.where}: {where}.media_type",
                f"unknown media_type {media_type!r}; allowed: {', '.join(MEDIA_TYPES)}",
            )
    if label is not None:
        key = label.lower().removesuffix(".0")
        if key not in _LABEL_WORDS:
            raise ConfigError(
                entry.config_file, f"{entry.where}: {where}.label", f"label must be 0/1 or real/fake, got {label!r}"
            )
        binary = _LABEL_WORDS[key]
        if media_type is not None and (media_type != "real") != bool(binary):
            raise ConfigError(
                entry.config_file, f"{entry.where}: {where}", f"label {label!r} contradicts media_type {media_type!r}"
            )
        if media_type is None:
            if binary == 0:
                media_type = "real"
            else:
                media_type = entry.media_type if entry.media_type != "real" else "synthetic"
    return media_type or entry.media_type


def _row_score(entry: DatasetEntry, record: Mapping[str, Any], manifest: Path, number: int) -> tuple[str, float]:
    """A row's (media type, soft label): the score in [0, 1], fake where it is >= the threshold."""
    raw = _cell(record, entry.score_column)
    where = f"{entry.where}: {manifest.name} row {number}.{entry.score_column}"
    try:
        score = float(raw) if raw is not None else math.nan
    except ValueError:
        score = math.nan
    if not 0 <= score <= 1:
        raise ConfigError(entry.config_file, where, f"a soft label must be a number in [0, 1], got {raw!r}")
    fake = score >= entry.score_threshold
    media_type = (entry.media_type if entry.media_type != "real" else "synthetic") if fake else "real"
    return media_type, score


def _cell(record: Mapping[str, Any], key: str) -> str | None:
    value = record.get(key)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    value = str(value).strip()
    return value or None


# ------------------------------------------------------------------------------------------ splits
def assign_splits(
    items: Sequence[MediaItem],
    fractions: Mapping[str, float] | None = None,
    seed: int = 0,
) -> list[MediaItem]:
    """Give every item a split, stratified per (dataset, media type); the result is sorted by path.

    In each stratum the sorted paths are shuffled by a generator seeded from ``seed``, the dataset
    name and the label (no Python ``hash``, so runs agree across processes), then
    ``round(n * fraction)`` items go to each split in ``fractions`` order and the rest to train. A
    stratum of n >= 1 keeps at least one train item; one of n >= 3 gets at least one ``val`` item.
    Items with an explicit split keep it. Strata are per media type, not per binary label, so a
    dataset mixing synthetic and semisynthetic rows gives the 3-class validation split both.

    A file listed more than once (duplicate manifest rows, overlapping dataset folders) is a
    ``ConfigError``: its copies would be split independently and could land in train and val alike.
    """
    fractions = dict({"val": 0.15, "calibration": 0.15} if fractions is None else fractions)
    for name, value in fractions.items():
        if name not in SPLITS or name == "train":
            raise ValueError(
                f"fractions: unknown split {name!r}; allowed: {', '.join(s for s in SPLITS if s != 'train')}"
            )
        if not 0 <= value < 1:
            raise ValueError(f"fractions[{name!r}] must be in [0, 1), got {value}")
    if sum(fractions.values()) >= 1:
        raise ValueError(f"split fractions must leave room for train, got {fractions}")

    _reject_duplicate_paths(items)
    fixed = [item for item in items if item.split is not None]
    strata: dict[tuple[str, int, str], list[MediaItem]] = defaultdict(list)
    for item in items:
        if item.split is None:
            strata[(item.dataset, item.label, item.media_type)].append(item)

    result = list(fixed)
    for (dataset, label, _), members in sorted(strata.items()):
        members.sort(key=lambda it: it.path)
        rng = np.random.default_rng([seed, zlib.crc32(dataset.encode("utf-8")), label])
        order = rng.permutation(len(members))
        counts = _split_counts(len(members), fractions)
        start = 0
        for split, size in counts.items():
            result.extend(replace(members[i], split=split) for i in order[start : start + size])
            start += size
        result.extend(replace(members[i], split="train") for i in order[start:])
    result.sort(key=lambda it: (it.path, it.dataset))
    return result


def _reject_duplicate_paths(items: Sequence[MediaItem]) -> None:
    datasets_of: dict[str, list[str]] = defaultdict(list)
    for item in items:
        datasets_of[item.path].append(item.dataset)
    repeated = {path: names for path, names in datasets_of.items() if len(names) > 1}
    if repeated:
        examples = "; ".join(
            f"{path} (datasets {', '.join(map(repr, names))})" for path, names in sorted(repeated.items())[:3]
        )
        raise ConfigError(
            None, "datasets",
            f"{len(repeated)} file(s) are listed more than once, e.g. {examples}; the copies could land in "
            "different splits (train/val leakage). Remove duplicate manifest rows, symlinks to one file or "
            "overlapping folders (include_paths/exclude_paths)",
        )  # fmt: skip


def _split_counts(n: int, fractions: Mapping[str, float]) -> dict[str, int]:
    counts = {name: math.floor(n * f + 0.5) for name, f in fractions.items()}
    min_val = 1 if n >= 3 and fractions.get("val", 0) > 0 else 0
    if "val" in counts:
        counts["val"] = max(counts["val"], min_val)
    # Keep at least one train item: take back from the last-listed splits first.
    excess = sum(counts.values()) - max(n - 1, 0)
    for name in reversed(list(counts)):
        if excess <= 0:
            break
        take = min(excess, counts[name] - (min_val if name == "val" else 0))
        counts[name] -= take
        excess -= take
    return counts


def write_split(items: Sequence[MediaItem], path: str | Path) -> None:
    """Write ``items`` as CSV (columns: ``SPLIT_COLUMNS``) atomically."""
    with atomic_open(path, "w") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(SPLIT_COLUMNS)
        for it in items:
            writer.writerow(
                [
                    it.path,
                    it.dataset,
                    it.label,
                    it.media_type,
                    it.generator_family or "",
                    it.split or "",
                    it.modality,
                    repr(it.weight),
                    "" if it.score is None else repr(it.score),
                ]
            )


def read_split(path: str | Path) -> list[MediaItem]:
    """Read a CSV written by ``write_split``."""
    path = Path(path)
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in ("path", "dataset", "label", "media_type", "split") if c not in (reader.fieldnames or [])]
        if missing:
            raise ConfigError(path, None, f"split file lacks column(s) {', '.join(missing)}")
        items = []
        for number, row in enumerate(reader, start=2):
            if row["media_type"] not in MEDIA_TYPES or row["label"] not in ("0", "1"):
                raise ConfigError(
                    path, f"line {number}", f"bad label/media_type {row['label']!r}/{row['media_type']!r}"
                )
            items.append(
                MediaItem(
                    path=row["path"], label=int(row["label"]), media_type=row["media_type"], dataset=row["dataset"],
                    modality=row.get("modality") or "image", generator_family=row.get("generator_family") or None,
                    weight=float(row.get("weight") or 1.0), split=row["split"] or None,
                    score=float(row["score"]) if row.get("score") else None,
                )
            )  # fmt: skip
    return items


# ---------------------------------------------------------------------------------------- sampling
def balanced_sample_weights(items: Sequence[MediaItem]) -> torch.Tensor:
    """Per-item weights for ``WeightedRandomSampler`` (float64, summing to 1).

    Real and fake items each get half of the mass when both exist. Within a class, each dataset's
    share is proportional to its ``weight`` (not its size) and is spread evenly over its items. A
    dataset holding both labels lends its weight to each label in proportion to its item counts.
    """
    if not items:
        return torch.zeros(0, dtype=torch.float64)
    dataset_sizes = Counter(it.dataset for it in items)
    cell_sizes = Counter((it.dataset, it.label) for it in items)
    dataset_weight = {it.dataset: it.weight for it in items}
    cell_weight = {cell: dataset_weight[cell[0]] * size / dataset_sizes[cell[0]] for cell, size in cell_sizes.items()}
    labels = sorted({label for _, label in cell_sizes})
    label_total = {y: sum(w for (_, label), w in cell_weight.items() if label == y) for y in labels}
    weights = [
        (1.0 / len(labels))
        * cell_weight[(it.dataset, it.label)]
        / label_total[it.label]
        / cell_sizes[(it.dataset, it.label)]
        for it in items
    ]
    return torch.tensor(weights, dtype=torch.float64)


def summarise(items: Sequence[MediaItem]) -> dict[str, Any]:
    """Counts per dataset / split / label, for the run summary."""
    label_name = ("real", "fake")
    by_dataset: dict[str, dict[str, Any]] = {}
    by_split: dict[str, dict[str, int]] = {}
    for it in sorted(items, key=lambda i: (i.dataset, i.path)):
        ds = by_dataset.setdefault(
            it.dataset, {"total": 0, "real": 0, "fake": 0, "media_type": it.media_type, "generator_family": it.generator_family, "splits": {}}
        )  # fmt: skip
        ds["total"] += 1
        ds[label_name[it.label]] += 1
        split = it.split or "unassigned"
        ds["splits"][split] = ds["splits"].get(split, 0) + 1
        sp = by_split.setdefault(split, {"total": 0, "real": 0, "fake": 0})
        sp["total"] += 1
        sp[label_name[it.label]] += 1
    return {
        "total": len(items),
        "real": sum(1 for it in items if it.label == 0),
        "fake": sum(1 for it in items if it.label == 1),
        "by_dataset": by_dataset,
        "by_split": dict(sorted(by_split.items())),
    }


def label_distribution(items: Sequence[MediaItem]) -> dict[str, Any]:
    """The labels of ``items`` (soft scores where present, else the binary labels): count, share
    below 0.1, share at or above 0.5, fake share (binarised labels) and whether they are soft."""
    values = np.array([it.score if it.score is not None else float(it.label) for it in items], dtype=np.float64)
    if not len(values):
        return {"n": 0}
    return {
        "n": int(len(values)),
        "soft_labels": any(it.score is not None for it in items),
        "share_below_0.1": float(np.mean(values < 0.1)),
        "share_at_least_0.5": float(np.mean(values >= 0.5)),
        "fake_share": float(np.mean([it.label for it in items])),
        "mean": float(values.mean()),
    }
