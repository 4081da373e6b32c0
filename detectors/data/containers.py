"""Media stored inside container files: parquet shards of media bytes and zip / tar archives.

A medium inside a container is addressed as ``<container>::<member>`` (``MEMBER_SEPARATOR``):

- a parquet row: ``<shard>.parquet::<column>[<row>]`` (``row``: its index in the file). Media columns
  follow the Hugging Face layout: a struct ``{bytes, path}`` (``datasets.Image`` / ``Audio`` /
  ``Video``) or a plain binary column (base64 text is decoded, as the benchmark does);
- an archive member: ``<archive>::<member name>`` (``.zip``, ``.tar``, ``.tar.gz`` / ``.tgz``);
- ``<container>::`` (empty member): a container that cannot be listed at all (truncated, corrupt,
  no media inside); loading it raises :class:`MediaError` naming the container and the problem, so
  it is skipped and counted like any unreadable medium.

Decoders that read a file object (Pillow: the image loaders, marked :func:`reads_media_bytes`) get
the member's bytes straight from the container (:func:`member_data`, :class:`MediaBytes`): a zip
member, a plain tar member by one positional read at its offset (the archive is indexed once, when
the catalogue lists it, and forked workers inherit the index), a parquet row from the one row group
each worker keeps in memory. Decoders that need a path (decord, PyAV, libsndfile) get a file:
:func:`local_path` writes a member once into a content-keyed cache
(``member_cache_root()/<key[:2]>/<key>/media<ext>``, the key from the container's path, size and mtime
plus the member: a changed container misses) and returns that file. Writes are atomic (temp file +
rename, no fsync: the entry is a copy); concurrent DataLoader workers may write the same entry. A
miss reads as little as the container allows: one row group of a parquet shard (every row of it is
written, so the rest of the group hits), one member of a zip or plain tar, and, for a compressed tar
(no random access), every media member of the archive in one streaming pass. Memory is bounded by
one row group or one member.

Selection follows GASBench (v0.8.0 ``dataset/download/extract.py``): an archive's candidates are its
regular members with the modality's extensions (``__MACOSX`` left out), in the archive's order; a
parquet shard's media columns are ``data_columns`` (those present) or the modality's column rule
(:func:`media_columns`), rows filtered by ``filter_column == filter_value``, one medium per row and
media column.
"""

from __future__ import annotations

import base64
import binascii
import bisect
import contextlib
import functools
import io
import logging
import os
import re
import struct
import tarfile
import tempfile
import threading
import zipfile
import zlib
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence, TypeVar

from detectors.atomic import temp_prefix
from detectors.data.cache import MEMBER_SEPARATOR, make_key
from detectors.errors import MediaError

logger = logging.getLogger(__name__)

ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz")
PARQUET_SUFFIX = ".parquet"
MEMBER_CACHE_ENV = "FORENSIC_ADAPTERS_MEMBER_CACHE"
_ROW_MEMBER = re.compile(r"^(?P<column>.+)\[(?P<row>\d+)\]$")
# magic bytes -> extension, for parquet media without a file name (decoders pick by extension)
_MAGIC = (
    (b"\x89PNG", ".png"),
    (b"\xff\xd8\xff", ".jpg"),
    (b"GIF8", ".gif"),
    (b"BM", ".bmp"),
    (b"fLaC", ".flac"),
    (b"OggS", ".ogg"),
    (b"ID3", ".mp3"),
    (b"\xff\xfb", ".mp3"),
    (b"\xff\xf3", ".mp3"),
    (b"\x1aE\xdf\xa3", ".webm"),
    (b"II*\x00", ".tif"),
    (b"MM\x00*", ".tif"),
)


def member_cache_root() -> Path:
    """Where container members are written once (``$FORENSIC_ADAPTERS_MEMBER_CACHE`` or
    ``~/.cache/forensic-adapters/members``)."""
    configured = os.environ.get(MEMBER_CACHE_ENV)
    return Path(configured) if configured else Path.home() / ".cache" / "forensic-adapters" / "members"


def archive_kind(path: str | Path) -> str | None:
    """``"zip"``, ``"tar"`` (plain) or ``"tar.gz"`` from the file name; None for anything else."""
    name = str(path).lower()
    if name.endswith(".zip"):
        return "zip"
    if name.endswith((".tar.gz", ".tgz")):
        return "tar.gz"
    return "tar" if name.endswith(".tar") else None


def is_container(path: str | Path) -> bool:
    return archive_kind(path) is not None or str(path).lower().endswith(PARQUET_SUFFIX)


def member_ref(container: str | Path, member: str) -> str:
    return f"{container}{MEMBER_SEPARATOR}{member}"


def row_ref(shard: str | Path, column: str, row: int) -> str:
    return member_ref(shard, f"{column}[{row}]")


def split_member_ref(path: str | Path) -> tuple[Path, str] | None:
    """``(container, member)`` of a member of an archive or a media parquet shard; None for a
    plain path and for a video of a frames parquet shard (``<shard>.parquet::<video_id>``, read by
    ``detectors.video.io``)."""
    text = str(path)
    start = 0
    while (at := text.find(MEMBER_SEPARATOR, start)) >= 0:
        container, member = text[:at], text[at + len(MEMBER_SEPARATOR) :]
        if archive_kind(container) is not None:
            return Path(container), member
        if container.lower().endswith(PARQUET_SUFFIX):
            return (Path(container), member) if member == "" or _ROW_MEMBER.match(member) else None
        start = at + 1
    return None


def is_member_ref(path: str | Path) -> bool:
    return split_member_ref(path) is not None


# ----------------------------------------------------------------------------------------- parquet
_MEDIA_WORDS = {
    "audio": ("audio", "bytes", "content", "data", "wav", "mp3"),
    "video": ("video", "bytes", "content", "data"),
}


def media_columns(names: Sequence[str], modality: str, data_columns: Sequence[str] | None = None) -> list[str]:
    """The media columns of a shard, as the benchmark picks them: ``data_columns`` (those present),
    else for images ``image`` (any case), a column naming ``image`` that is not an ``_id`` column,
    any naming ``image``; for audio every ``audio`` column, else those naming audio/bytes/content/
    data/wav/mp3 (no ``_id``); for video the first named video/bytes/content/data, else one
    containing such a word (preferring non-``_id``)."""
    if data_columns:
        return [c for c in data_columns if c in names]
    low = {c: c.lower() for c in names}
    if modality == "image":
        found = (
            next((c for c in names if low[c] == "image"), None)
            or next((c for c in names if "image" in low[c] and "_id" not in low[c]), None)
            or next((c for c in names if "image" in low[c]), None)
        )
        return [found] if found else []
    words = _MEDIA_WORDS[modality]
    if modality == "audio":
        exact = [c for c in names if low[c] == "audio"]
        return exact or [c for c in names if "_id" not in low[c] and any(k in low[c] for k in words)]
    found = (
        next((c for c in names if low[c] in words), None)
        or next((c for c in names if any(k in low[c] for k in words) and "_id" not in low[c]), None)
        or next((c for c in names if any(k in low[c] for k in words)), None)
    )
    return [found] if found else []


def media_column_problem(schema: Any, column: str) -> str | None:
    """Why ``column`` of a parquet ``schema`` cannot hold media bytes (None: it can): binary, text
    (base64) or a struct with a binary field (the Hugging Face layout)."""
    import pyarrow as pa

    kind = schema.field(column).type
    if (
        pa.types.is_binary(kind)
        or pa.types.is_large_binary(kind)
        or pa.types.is_string(kind)
        or pa.types.is_large_string(kind)
    ):
        return None
    if pa.types.is_struct(kind) and any(pa.types.is_binary(f.type) or pa.types.is_large_binary(f.type) for f in kind):
        return None
    return f"column {column!r} is {kind}, not media bytes (binary, or a struct {{bytes, path}})"


def media_bytes(value: Any) -> tuple[bytes | None, str | None]:
    """``(bytes, file name)`` of one cell of a media column (struct ``{bytes, path}``, binary, or
    base64 text); ``(None, None)`` for an empty cell."""
    name = None
    if isinstance(value, dict):
        name = value.get("path") if isinstance(value.get("path"), str) else None
        value = next(
            (
                v
                for k, v in value.items()
                if isinstance(v, (bytes, bytearray))
                and any(s in k.lower() for s in ("bytes", "image", "video", "audio", "data", "content"))
            ),
            None,
        )
    if isinstance(value, str):
        try:
            value = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            return None, name
    if isinstance(value, (bytes, bytearray)) and value:
        return bytes(value), name
    return None, name


def _identity(path: Path) -> str:
    stat = path.stat()
    return f"{path}|{stat.st_size}|{stat.st_mtime_ns}|{stat.st_ino}"


class _ParquetFiles(threading.local):
    """Open ``ParquetFile`` handles of this process/worker (a forked worker opens its own)."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.files: OrderedDict[str, Any] = OrderedDict()

    def get(self, shard: Path) -> Any:
        import pyarrow.parquet as pq

        if self.pid != os.getpid():  # inherited through fork: never share file offsets
            self.files, self.pid = OrderedDict(), os.getpid()
        key = _identity(shard)  # a rewritten shard is opened afresh
        if key not in self.files:
            self.files[key] = pq.ParquetFile(shard, pre_buffer=False)
            while len(self.files) > 8:
                self.files.popitem(last=False)
        self.files.move_to_end(key)
        return self.files[key]


_PARQUET = _ParquetFiles()


@functools.lru_cache(maxsize=64)
def _group_starts(metadata: Any) -> list[int]:
    starts = [0]
    for group in range(metadata.num_row_groups):
        starts.append(starts[-1] + metadata.row_group(group).num_rows)
    return starts


def row_group_of(metadata: Any, row: int) -> tuple[int, int]:
    """``(row group, first row of that group)`` holding file row ``row``."""
    starts = _group_starts(metadata)
    if not 0 <= row < starts[-1]:
        raise IndexError(row)
    group = bisect.bisect_right(starts, row) - 1
    return group, starts[group]


def iter_row_group_media(shard: Path, column: str, group: int) -> Iterator[tuple[bytes | None, str | None]]:
    """``media_bytes`` of each row of one row group, one Python object at a time (the memory one
    read costs is the row group's Arrow buffers, not a second copy of every cell; the group stays
    kept for the next rows: :class:`_KeptRowGroup`)."""
    group_start = _group_starts(_PARQUET.get(shard).metadata)[group]
    values = _KEPT.rows(shard, column, group, group_start)
    for chunk in values.chunks:
        for index in range(len(chunk)):
            yield media_bytes(chunk[index].as_py())


class _KeptRowGroup(threading.local):
    """The last row group a process/worker read from a media column (its Arrow buffers: one row
    group, whatever the file's size), so the next rows of that group are not read again."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.key: tuple[str, str, int] | None = None
        self.first = 0
        self.values: Any = None

    def rows(self, shard: Path, column: str, group: int, first: int) -> Any:
        """The media column of row group ``group`` (first file row ``first``), read once."""
        key = (_identity(shard), column, group)
        if self.pid != os.getpid() or self.key != key:
            self.pid, self.key, self.values = os.getpid(), None, None  # the old group is freed first
            self.values = _PARQUET.get(shard).read_row_group(group, columns=[column]).column(column)
            self.key, self.first = key, first
        return self.values

    def get(self, shard: Path, column: str, row: int) -> tuple[bytes | None, str | None] | None:
        """The cell at file row ``row`` if it lies in the kept group, else None."""
        if self.pid != os.getpid() or self.key is None or self.key[:2] != (_identity(shard), column):
            return None
        offset = row - self.first
        if not 0 <= offset < len(self.values):
            return None
        return media_bytes(self.values[offset].as_py())


_KEPT = _KeptRowGroup()


def list_parquet(
    shard: Path,
    modality: str,
    *,
    data_columns: Sequence[str] | None = None,
    filter_column: str | None = None,
    filter_value: Any = None,
    label_column: str | None = None,
) -> tuple[list[tuple[int, Any]], list[str]]:
    """The rows of a shard that hold media as ``(row, label cell)`` (label cell None without
    ``label_column``), and its media columns (one medium per row and column: :func:`row_ref`). Rows are numbered in the file; only the filter and label columns are
    read, one row group at a time (none at all without them: the footer has the row counts).
    A row group whose filter or label column cannot be read gives one ref (its first row) that
    fails when loaded, naming the row group. Raises ``MediaError`` naming the shard for an
    unreadable footer, a missing or wrongly typed column."""
    try:
        handle = _PARQUET.get(shard)
        schema, metadata = handle.schema_arrow, handle.metadata
    except Exception as error:  # pyarrow: ArrowInvalid / OSError on a damaged footer
        raise MediaError(shard, f"unreadable parquet shard ({type(error).__name__}: {error})") from error
    names = schema.names
    columns = media_columns(names, modality, data_columns)
    if not columns:
        wanted = f"data_columns {list(data_columns)}" if data_columns else f"a {modality} column (benchmark rule)"
        raise MediaError(shard, f"no media column: needs {wanted}; the shard has {', '.join(names)}")
    for column in columns:
        problem = media_column_problem(schema, column)
        if problem:
            raise MediaError(shard, problem)
    for key, column in (("filter_column", filter_column), ("label_column", label_column)):
        if column is not None and column not in names:
            raise MediaError(shard, f"{key} {column!r} is not a column of the shard ({', '.join(names)})")
    rows: list[tuple[int, Any]] = []
    start = 0
    for group in range(metadata.num_row_groups):
        count = metadata.row_group(group).num_rows
        if filter_column is None and label_column is None:
            rows.extend((start + i, None) for i in range(count))
        else:
            read = [c for c in dict.fromkeys((filter_column, label_column)) if c is not None]
            try:
                table = handle.read_row_group(group, columns=read)
            except Exception as error:  # a damaged page of this row group
                logger.warning(
                    "%s: row group %d unreadable (%s); counted as one unreadable sample", shard, group, error
                )
                rows.append((start, None))
                start += count
                continue
            keep = [True] * count
            if filter_column is not None:
                keep = [str(v) == str(filter_value) for v in table.column(filter_column).to_pylist()]
            labels = table.column(label_column).to_pylist() if label_column is not None else [None] * count
            rows.extend((start + i, labels[i]) for i in range(count) if keep[i])
        start += count
    return rows, columns


# ---------------------------------------------------------------------------------------- archives
def open_archive(archive: Path) -> zipfile.ZipFile | tarfile.TarFile:
    return zipfile.ZipFile(archive) if archive_kind(archive) == "zip" else tarfile.open(archive, mode="r:*")


def list_archive(archive: Path, suffixes: Sequence[str]) -> tuple[list[str], str | None]:
    """Media members of an archive, in its order (regular members ending in one of ``suffixes``,
    any case, ``MACOSX`` left out), and the problem that cut the listing short (a truncated tar
    keeps the members read before the damage; a zip without its central directory has none).

    A plain tar's scan is kept as its member index (:func:`_tar_index`): DataLoader workers forked
    later inherit it instead of scanning the archive again."""
    names: list[str] = []
    problem = None
    try:
        identity = _identity(archive)
        with open_archive(archive) as handle:
            if isinstance(handle, zipfile.ZipFile):
                names = [info.filename for info in handle.infolist() if not info.is_dir()]
            else:
                index, problem = _scan_tar(handle)
                names = [name for name, info in index.items() if info.isreg()]
                _remember_tar_index(archive, identity, index)
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError, zlib.error) as error:
        problem = f"cannot read the archive ({type(error).__name__}: {error})"
    wanted = tuple(s.lower() for s in suffixes)
    return [n for n in names if n.lower().endswith(wanted) and "MACOSX" not in n], problem


def _scan_tar(handle: tarfile.TarFile) -> tuple[dict[str, tarfile.TarInfo], str | None]:
    """Every member header of a tar, in its order, and the problem that cut the scan short (the
    members read before a truncation are kept)."""
    index: dict[str, tarfile.TarInfo] = {}
    while True:
        try:
            info = handle.next()
        except (tarfile.TarError, EOFError, OSError, zlib.error) as error:
            return index, f"truncated or corrupt archive ({type(error).__name__}: {error})"
        if info is None:
            return index, None
        index[info.name] = info


# Plain tars' member indexes by archive identity, module-level on purpose: forked DataLoader workers
# inherit the catalogue's scan (a tar of 100k members takes seconds to scan in Python), and a
# rewritten archive has another identity. Bounded like the catalogue: one entry per archive listed.
_TAR_INDEXES: OrderedDict[str, dict[str, tarfile.TarInfo]] = OrderedDict()
_TAR_INDEXES_KEPT = 1024


def _remember_tar_index(archive: Path, identity: str, index: dict[str, tarfile.TarInfo]) -> None:
    """Keep a plain tar's index (a compressed tar's members are read in one streaming pass instead)."""
    if archive_kind(archive) != "tar":
        return
    _TAR_INDEXES[identity] = index
    _TAR_INDEXES.move_to_end(identity)
    while len(_TAR_INDEXES) > _TAR_INDEXES_KEPT:
        _TAR_INDEXES.popitem(last=False)


def _tar_index(archive: Path, identity: str, handle: tarfile.TarFile) -> dict[str, tarfile.TarInfo]:
    """The member index of a tar: the kept one (plain tars), else a scan of ``handle``, tolerating a
    truncated end (``TarFile.getmember`` would scan to the end and fail for every member)."""
    index = _TAR_INDEXES.get(identity)
    if index is None:
        index, _ = _scan_tar(handle)
        _remember_tar_index(archive, identity, index)
    return index


class _Archives(threading.local):
    """Open archives of this process/worker (a forked worker opens its own: no shared file
    offsets), each with its member index for tars (:func:`_tar_index`)."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.open: OrderedDict[str, tuple[Any, dict[str, tarfile.TarInfo]]] = OrderedDict()

    def get(self, archive: Path) -> tuple[zipfile.ZipFile | tarfile.TarFile, dict[str, tarfile.TarInfo]]:
        if self.pid != os.getpid():
            self.open, self.pid = OrderedDict(), os.getpid()
        key = _identity(archive)
        if key not in self.open:
            handle = open_archive(archive)
            index = _tar_index(archive, key, handle) if isinstance(handle, tarfile.TarFile) else {}
            self.open[key] = (handle, index)
            while len(self.open) > 4:
                self.open.popitem(last=False)[1][0].close()
        self.open.move_to_end(key)
        return self.open[key]

    def drop(self, archive: Path) -> None:
        entry = self.open.pop(_identity(archive), None)
        if entry is not None:
            entry[0].close()


_ARCHIVES = _Archives()


def read_archive_member(archive: Path, member: str) -> bytes:
    """The bytes of one member (zip, plain tar); raises what the archive library raises."""
    handle, index = _ARCHIVES.get(archive)
    try:
        if isinstance(handle, zipfile.ZipFile):
            return handle.read(member)
        info = index.get(member)
        if info is None:
            raise KeyError(f"no member {member!r} (or the archive is cut off before it)")
        if not info.isreg():
            raise KeyError(f"{member} is not a regular file")
        if info.sparse is None and isinstance(handle.fileobj, io.BufferedReader):
            # an uncompressed tar (whatever its name says) stores a member's bytes contiguously at its
            # indexed offset: one positional read (no shared file offset, no tarfile stream objects)
            data = os.pread(handle.fileobj.fileno(), info.size, info.offset_data)
        else:
            source = handle.extractfile(info)
            if source is None:
                raise KeyError(f"{member} is not a regular file")
            data = source.read()
        if len(data) != info.size:
            raise EOFError(f"unexpected end of data: member truncated, {len(data)} of {info.size} bytes")
        return data
    except Exception:
        _ARCHIVES.drop(archive)  # a damaged handle is not reused
        raise


# ------------------------------------------------------------------------------------ member cache
def _entry_dir(ref: str) -> str:
    """The member's cache folder: keyed by the container's absolute path, size and mtime and the
    member (plain ``os`` calls: this runs for every sample of every epoch)."""
    container, member = split_member_ref(ref)  # type: ignore[misc]  # callers pass member refs only
    status = os.stat(container)
    key = make_key("member", os.path.abspath(container), status.st_size, status.st_mtime_ns, member)
    return os.path.join(member_cache_root(), key[:2], key)


def _cached_file(ref: str) -> Path | None:
    try:
        with os.scandir(_entry_dir(ref)) as entries:
            return next((Path(e.path) for e in entries if e.name.startswith("media")), None)
    except OSError:
        return None


def _suffix_for(name: str | None, data: bytes) -> str:
    if name:
        lowered = name.lower()
        for suffix in (".tar.gz",):
            if lowered.endswith(suffix):
                return suffix
        suffix = Path(lowered).suffix
        if suffix and len(suffix) <= 6:
            return suffix
    head = data[:16]
    if head[:4] == b"RIFF":
        return {b"WAVE": ".wav", b"WEBP": ".webp", b"AVI ": ".avi"}.get(head[8:12], ".bin")
    if head[4:8] == b"ftyp":
        return ".m4a" if head[8:11] == b"M4A" else ".mp4"
    return next((ext for magic, ext in _MAGIC if head.startswith(magic)), ".bin")


def _store(ref: str, data: bytes, name: str | None) -> Path:
    target = Path(_entry_dir(ref)) / f"media{_suffix_for(name, data)}"
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        # temp file + rename (a reader never sees a partial entry), without atomic_open's fsync: the
        # entry is a copy of the container's bytes, and one fsync per member made the first epoch
        # several times slower
        descriptor, temp = tempfile.mkstemp(prefix=temp_prefix(target.name), dir=target.parent)
        try:
            with os.fdopen(descriptor, "wb") as handle:
                handle.write(data)
            os.replace(temp, target)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temp)
            raise
    except OSError as error:
        raise MediaError(
            ref,
            f"cannot write it to the member cache {member_cache_root()} "
            f"({error.strerror or error}; set {MEMBER_CACHE_ENV} to a writable folder)",
        ) from error
    return target


def _container_and_member(ref: str) -> tuple[Path, str]:
    """``split_member_ref(ref)`` of a container that exists and a member that is named."""
    parts = split_member_ref(ref)
    if parts is None:
        raise ValueError(f"not a container member: {ref}")
    container, member = parts
    if not container.is_file():
        raise MediaError(ref, "container file not found")
    if member == "":
        raise MediaError(container, _container_problem(container))
    return container, member


def local_path(ref: str | Path) -> Path:
    """A file holding the medium ``ref`` (``<container>::<member>``), written once into the member
    cache; :class:`MediaError` naming ``ref`` when the container or the member cannot be read.
    For decoders that need a path (decord, PyAV, libsndfile); :func:`member_data` skips the file."""
    ref = str(ref)
    container, member = _container_and_member(ref)
    cached = _cached_file(ref)
    if cached is not None:
        return cached
    if archive_kind(container) is None:
        return _materialize_parquet_rows(container, ref, member)
    if archive_kind(container) == "tar.gz":
        return _materialize_compressed_tar(container, ref, member)
    return _store(ref, _archive_member_bytes(container, ref, member), member)


@dataclass(frozen=True)
class MediaBytes:
    """A medium of a container held in memory, for decoders that read a file object
    (:func:`reads_media_bytes`); ``ref`` (``<container>::<member>``) is what their errors name."""

    ref: str
    data: bytes

    def __str__(self) -> str:
        return self.ref

    def open(self) -> io.BytesIO:
        return io.BytesIO(self.data)


_Decoder = TypeVar("_Decoder", bound=Callable[..., Any])


def reads_media_bytes(decoder: _Decoder) -> _Decoder:
    """Mark a decoder that takes :class:`MediaBytes` as well as a path: container members then reach
    it from memory (``load_media``), without a copy in the member cache."""
    decoder.reads_media_bytes = True  # type: ignore[attr-defined]
    return decoder


def accepts_media_bytes(load: Callable[..., Any]) -> bool:
    """Whether ``load`` (or the function a ``functools.partial`` wraps) is :func:`reads_media_bytes`."""
    while isinstance(load, functools.partial):
        load = load.func
    return bool(getattr(load, "reads_media_bytes", False))


def member_data(ref: str | Path) -> MediaBytes:
    """The bytes of the medium ``ref``, read from the container without a file in between: a zip
    member, a plain tar member by one positional read at its indexed offset, a parquet row from the
    row group this worker keeps (a row group read is kept and written to the member cache whole, so
    later epochs in any order read one cached file instead of a row group per sample); a compressed
    tar's member from the member cache (no random access in gzip). :class:`MediaError` naming
    ``ref`` when the container or the member cannot be read."""
    ref = str(ref)
    container, member = _container_and_member(ref)
    kind = archive_kind(container)
    if kind is None:
        return MediaBytes(ref, _parquet_row_bytes(container, ref, member))
    if kind == "tar.gz":
        return MediaBytes(ref, _cached_bytes(ref, local_path(ref)))
    return MediaBytes(ref, _archive_member_bytes(container, ref, member))


def _archive_member_bytes(archive: Path, ref: str, member: str) -> bytes:
    try:
        return read_archive_member(archive, member)
    except (KeyError, EOFError, OSError, zipfile.BadZipFile, tarfile.TarError, zlib.error, RuntimeError) as error:
        raise MediaError(ref, f"cannot read the member ({type(error).__name__}: {error})") from error


def _cached_bytes(ref: str, path: Path) -> bytes:
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except OSError as error:
        raise MediaError(ref, f"cannot read its copy in the member cache {path} ({error.strerror or error})") from error


def _parquet_row_bytes(shard: Path, ref: str, member: str) -> bytes:
    """A row from the kept row group, else from the row group's cell file in the member cache,
    else read from the shard: the group is kept and written whole as one cell file (one write per
    row group; later epochs, in any order, read a row with two positional reads)."""
    column, row = _row_member(member)
    kept = _KEPT.get(shard, column, row)
    if kept is not None:
        data = kept[0]
    else:
        group = None
        try:
            handle = _PARQUET.get(shard)
            group, first = row_group_of(handle.metadata, row)
            cells = _group_cells_path(shard, column, group)
            data = _CELLS.read(cells, row - first)
            if data is None:  # not cached yet
                problem = column_problem(handle.schema_arrow, column)
                if problem:
                    raise MediaError(ref, problem)
                values = _KEPT.rows(shard, column, group, first)
                _store_cells(ref, cells, values)
                data = media_bytes(values[row - first].as_py())[0]
        except MediaError:
            raise
        except IndexError as error:
            raise MediaError(ref, f"row {row} is past the shard's end") from error
        except Exception as error:  # pyarrow: ArrowInvalid, OSError, ... on damaged pages
            where = "the shard" if group is None else f"row group {group} of the shard"
            raise MediaError(ref, f"{where} is unreadable ({type(error).__name__}: {error})") from error
    if not data:
        raise MediaError(ref, _empty_cell(column))
    return data


def column_problem(schema: Any, column: str) -> str | None:
    """Why ``column`` of a shard's ``schema`` cannot be read as media (None: it can)."""
    if column not in schema.names:
        return f"no column {column!r} in the shard (columns: {', '.join(schema.names)})"
    return media_column_problem(schema, column)


# A row group's cells in one file: count n (uint64), n + 1 offsets into the data, the data.
_CELL_HEADER = struct.Struct("<Q")


def _group_cells_path(shard: Path, column: str, group: int) -> str:
    status = os.stat(shard)  # per sample: a rewritten shard gets other cell files
    return _cells_path(member_cache_root(), os.path.abspath(shard), status.st_size, status.st_mtime_ns, column, group)


@functools.lru_cache(maxsize=4096)
def _cells_path(root: Path, shard: str, size: int, mtime_ns: int, column: str, group: int) -> str:
    key = make_key("row-group", shard, size, mtime_ns, column, group)  # JSON + SHA-1: once per row group
    return os.path.join(root, key[:2], f"{key}.cells")


def _store_cells(ref: str, target: str, values: Any) -> None:
    """Write every cell of a row group (an empty cell as 0 bytes) into ``target``, atomically, one
    cell in memory at a time."""
    count = len(values)
    offsets = [0] * (count + 1)
    try:
        os.makedirs(os.path.dirname(target), exist_ok=True)
        descriptor, temp = tempfile.mkstemp(prefix=temp_prefix(os.path.basename(target)), dir=os.path.dirname(target))
        try:
            with os.fdopen(descriptor, "wb") as handle:
                handle.seek(_CELL_HEADER.size * (count + 2))
                for index in range(count):
                    data = media_bytes(values[index].as_py())[0] or b""
                    handle.write(data)
                    offsets[index + 1] = offsets[index] + len(data)
                handle.seek(0)
                handle.write(struct.pack(f"<{count + 2}Q", count, *offsets))
            os.replace(temp, target)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temp)
            raise
    except OSError as error:
        raise MediaError(
            ref,
            f"cannot write its row group to the member cache {member_cache_root()} "
            f"({error.strerror or error}; set {MEMBER_CACHE_ENV} to a writable folder)",
        ) from error


class _CellFiles(threading.local):
    """Open row-group cell files of this process/worker (a forked worker opens its own)."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.open: OrderedDict[str, int] = OrderedDict()

    def read(self, path: str, index: int) -> bytes | None:
        """Cell ``index`` of the cell file ``path``; None when there is no such file."""
        if self.pid != os.getpid():
            self.open, self.pid = OrderedDict(), os.getpid()  # the parent's descriptors stay the parent's
        descriptor = self.open.get(path)
        if descriptor is None:
            try:
                descriptor = os.open(path, os.O_RDONLY)
            except FileNotFoundError:
                return None
            self.open[path] = descriptor
            while len(self.open) > 16:
                os.close(self.open.popitem(last=False)[1])
        self.open.move_to_end(path)
        (count,) = _CELL_HEADER.unpack(os.pread(descriptor, _CELL_HEADER.size, 0))
        if not 0 <= index < count:
            raise IndexError(index)
        start, end = struct.unpack("<2Q", os.pread(descriptor, 16, _CELL_HEADER.size * (index + 1)))
        data = os.pread(descriptor, end - start, _CELL_HEADER.size * (count + 2) + start)
        if len(data) != end - start:
            raise EOFError(f"member cache file {path} is truncated")
        return data


_CELLS = _CellFiles()


def _row_member(member: str) -> tuple[str, int]:
    match = _ROW_MEMBER.match(member)
    assert match is not None  # split_member_ref accepted it
    return match["column"], int(match["row"])


def _empty_cell(column: str) -> str:
    return f"no media bytes in column {column!r} at this row (empty cell)"


def _container_problem(container: Path) -> str:
    """Why a container yields nothing (the catalogue lists it as ``<container>::`` then)."""
    if archive_kind(container) is not None:
        names, problem = list_archive(container, ("",))
        return problem or ("holds no media members" if names else "empty archive")
    try:
        _PARQUET.get(container).metadata  # noqa: B018 - reading the footer is the check
    except Exception as error:  # pyarrow raises ArrowInvalid / OSError on a damaged footer
        return f"unreadable parquet shard ({type(error).__name__}: {error})"
    return "no media column or no rows with media"


def _materialize_parquet_rows(shard: Path, ref: str, member: str) -> Path:
    column, row = _row_member(member)
    group: int | None = None
    try:
        handle = _PARQUET.get(shard)
        problem = column_problem(handle.schema_arrow, column)
        if problem:
            raise MediaError(ref, problem)
        group, first = row_group_of(handle.metadata, row)
        rows = iter_row_group_media(shard, column, group)
        target = None
        for offset, (data, name) in enumerate(rows):
            if data is None:
                continue
            path = _store(row_ref(shard, column, first + offset), data, name)
            if first + offset == row:
                target = path
    except MediaError:
        raise
    except IndexError as error:
        raise MediaError(ref, f"row {row} is past the shard's end") from error
    except Exception as error:  # pyarrow: ArrowInvalid, OSError, ... on damaged pages
        where = "the shard" if group is None else f"row group {group} of the shard"
        raise MediaError(ref, f"{where} is unreadable ({type(error).__name__}: {error})") from error
    if target is None:
        raise MediaError(ref, _empty_cell(column))
    return target


def _materialize_compressed_tar(archive: Path, ref: str, member: str) -> Path:
    """One streaming pass over a compressed tar writes every member (no random access in gzip)."""
    target = None
    try:
        with tarfile.open(archive, mode="r|*") as stream:
            for info in stream:
                if not info.isreg():
                    continue
                source = stream.extractfile(info)
                data = source.read() if source is not None else b""
                if len(data) != info.size:
                    break
                path = _store(member_ref(archive, info.name), data, info.name)
                if info.name == member:
                    target = path
    except (tarfile.TarError, EOFError, OSError, zlib.error) as error:
        if target is None:
            raise MediaError(
                ref, f"the archive is truncated or corrupt before this member ({type(error).__name__}: {error})"
            ) from error
    if target is None:
        raise MediaError(ref, "member not found in the archive (or cut off by its truncation)")
    return target


__all__ = [
    "ARCHIVE_SUFFIXES",
    "MEMBER_CACHE_ENV",
    "MediaBytes",
    "accepts_media_bytes",
    "archive_kind",
    "is_container",
    "is_member_ref",
    "iter_row_group_media",
    "list_archive",
    "local_path",
    "media_bytes",
    "media_column_problem",
    "media_columns",
    "member_cache_root",
    "member_data",
    "member_ref",
    "read_archive_member",
    "reads_media_bytes",
    "row_group_of",
    "row_ref",
    "split_member_ref",
]
