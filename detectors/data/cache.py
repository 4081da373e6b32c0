"""Verified on-disk caches: atomic entries, checksummed reads, and per-item feature tensors.

Entries are keyed by the SHA-1 (:func:`make_key`) of everything that shapes their content: the
input file's identity (absolute path, size, modification time: :func:`file_fingerprint`), how it
was decoded and preprocessed, and for features the identity of the model that computed them. A
changed file or setting simply misses the cache.

Entries are written atomically (temp file + rename): concurrent DataLoader workers or processes can
write the same entry; the last rename wins and a reader never sees a partial file. Every read is
verified (zstd frame checksum, or a BLAKE2 digest trailer for uncompressed ``.npy``, or a digest in
safetensors metadata, plus the expected shape and dtype); a corrupt or truncated entry is deleted and
reported as a miss so the caller computes it again.

- ``FeatureCache``: ``<root>/<key[:2]>/<key>.safetensors`` (one tensor named ``value``; metadata
  ``blake2b`` digest of its bytes) or ``<key>.npy`` with the trailer below.
- ``.npy`` entries end with a 32-byte trailer: magic ``b"DVC1"``, payload length as little-endian
  uint64, 20-byte BLAKE2b digest (``np.load`` ignores trailing bytes). ``.npy.zst`` entries are zstd
  frames with content size and checksum.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import struct
from pathlib import Path
from typing import Any, Callable, Literal

import numpy as np
import safetensors.torch
import torch
import zstandard

from detectors.atomic import atomic_open

logger = logging.getLogger(__name__)

CACHE_VERSION = 1
_TRAILER_MAGIC = b"DVC1"
_DIGEST_SIZE = 20
_TRAILER = struct.Struct(f"<4sQ{_DIGEST_SIZE}s")


class CorruptEntry(Exception):
    """A cache file failed verification (internal: turned into a cache miss)."""


# A medium stored inside a container file is addressed as ``<container>::<member>`` (e.g. one video
# of a frames-parquet shard: ``shard.parquet::<video_id>``).
MEMBER_SEPARATOR = "::"


def file_fingerprint(path: str | Path) -> list[Any]:
    """Absolute path, size and mtime (ns) of a file; for a frame folder, of all files in it; for a
    member of a container file (``<container>::<member>``), of the container plus the member."""
    container, separator, member = str(path).rpartition(MEMBER_SEPARATOR)
    if separator and Path(container).is_file():
        return [*file_fingerprint(container), member]
    path = Path(path).resolve()
    if path.is_dir():
        stats = [(p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(path.iterdir()) if p.is_file()]
        return [str(path), stats]
    stat = path.stat()
    return [str(path), stat.st_size, stat.st_mtime_ns]


def make_key(*parts: Any) -> str:
    """SHA-1 hex digest of a JSON rendering of ``parts`` (stable across processes and runs)."""
    text = json.dumps([CACHE_VERSION, *parts], sort_keys=True, default=str)
    return hashlib.sha1(text.encode()).hexdigest()


def _digest(data: bytes | memoryview) -> bytes:
    return hashlib.blake2b(data, digest_size=_DIGEST_SIZE).digest()


def _npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(array), allow_pickle=False)
    return buffer.getvalue()


def _load_npy(data: bytes) -> np.ndarray:
    try:
        return np.load(io.BytesIO(data), allow_pickle=False)
    except (ValueError, OSError, EOFError) as error:
        raise CorruptEntry(f"unreadable .npy payload ({error})") from error


def encode_npy(array: np.ndarray, compress: Literal["zstd", "none"]) -> bytes:
    payload = _npy_bytes(array)
    if compress == "zstd":
        return zstandard.ZstdCompressor(level=3, write_checksum=True, write_content_size=True).compress(payload)
    return payload + _TRAILER.pack(_TRAILER_MAGIC, len(payload), _digest(payload))


def decode_npy(data: bytes, compress: Literal["zstd", "none"]) -> np.ndarray:
    """Inverse of :func:`encode_npy`; raises :class:`CorruptEntry` on any inconsistency."""
    if compress == "zstd":
        try:
            payload = zstandard.ZstdDecompressor().decompress(data)
        except zstandard.ZstdError as error:
            raise CorruptEntry(f"zstd frame damaged or truncated ({error})") from error
        return _load_npy(payload)
    if len(data) < _TRAILER.size:
        raise CorruptEntry("file shorter than its integrity trailer")
    magic, length, digest = _TRAILER.unpack(data[-_TRAILER.size :])
    if magic != _TRAILER_MAGIC or length != len(data) - _TRAILER.size:
        raise CorruptEntry("integrity trailer missing or truncated file")
    payload = data[:length]
    if _digest(payload) != digest:
        raise CorruptEntry("checksum mismatch")
    return _load_npy(payload)


_WARNED_ROOTS: set[str] = set()  # caches already reported as unwritable (one warning per process)


class _EntryStore:
    """Shared mechanics: sharded paths, atomic writes, verified reads that delete bad entries."""

    suffix: str

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.disabled = False
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            self._disable(error)

    def entry_path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}{self.suffix}"

    def _write(self, key: str, data: bytes) -> None:
        """Store an entry; a cache that cannot be written (full disk, no permission) is switched off
        with one warning: the job goes on, recomputing instead of caching."""
        if self.disabled:
            return
        try:
            with atomic_open(self.entry_path(key), "wb") as handle:
                handle.write(data)
        except OSError as error:
            self._disable(error)

    def _disable(self, error: OSError) -> None:
        self.disabled = True
        if str(self.root) not in _WARNED_ROOTS:
            _WARNED_ROOTS.add(str(self.root))
            logger.warning(
                "cache %s cannot be written (%s); continuing without caching there", self.root, error.strerror or error
            )

    def _read(self, key: str, decode: Callable[[bytes], Any]) -> Any | None:
        path = self.entry_path(key)
        try:
            data = path.read_bytes()
        except OSError:  # absent, or the cache cannot be read (then it is recomputed, like a miss)
            return None
        try:
            return decode(data)
        except CorruptEntry as error:
            logger.warning("cache entry %s is corrupt (%s); deleting it, it will be rebuilt", path, error)
            with contextlib.suppress(FileNotFoundError):  # another worker may have removed it already
                os.unlink(path)
            return None


class FeatureCache(_EntryStore):
    """Per-item feature tensors (ReStraV's 21 features, embeddings, ...) of one model.

    ``model_key`` names the model that computes the features (backbone name, weights hash, embedding
    setting, ...): different models never share entries. An item's key also names its input
    (:meth:`key`: the file's identity and how it was decoded, as the loader describes it).
    """

    def __init__(self, root: str | Path, model_key: str, fmt: Literal["safetensors", "npy"] = "safetensors") -> None:
        if fmt not in ("safetensors", "npy"):
            raise ValueError(f"fmt must be 'safetensors' or 'npy', got {fmt!r}")
        super().__init__(root)
        self.model_key = model_key
        self.fmt = fmt
        self.suffix = ".safetensors" if fmt == "safetensors" else ".npy"

    def key(self, identity: list[Any]) -> str:
        """Cache key of the features of an input described by ``identity`` (JSON-able; e.g.
        ``ClipLoader.cache_identity(path)``: file fingerprint, decoder, sampler, resize)."""
        return make_key("features", self.model_key, *identity)

    def load(self, key: str) -> torch.Tensor | None:
        def decode(data: bytes) -> torch.Tensor:
            if self.fmt == "npy":
                return torch.from_numpy(decode_npy(data, "none"))
            try:
                tensors = safetensors.torch.load(data)
                header_len = struct.unpack("<Q", data[:8])[0]
                metadata = json.loads(data[8 : 8 + header_len]).get("__metadata__", {})
            except Exception as error:  # safetensors raises its own SafetensorError on bad bytes
                raise CorruptEntry(f"unreadable safetensors ({error})") from error
            if set(tensors) != {"value"}:
                raise CorruptEntry(f"expected one tensor named 'value', found {sorted(tensors)}")
            value = tensors["value"]
            if metadata.get("blake2b") != _digest(_tensor_bytes(value)).hex():
                raise CorruptEntry("checksum mismatch")
            return value

        return self._read(key, decode)

    def save(self, key: str, value: torch.Tensor) -> None:
        value = value.detach().cpu().contiguous()
        if self.fmt == "npy":
            data = encode_npy(value.numpy(), "none")
        else:
            metadata = {"blake2b": _digest(_tensor_bytes(value)).hex(), "model_key": self.model_key}
            data = safetensors.torch.save({"value": value}, metadata=metadata)
        self._write(key, data)

    def get_or_compute(self, identity: list[Any] | None, compute_fn: Callable[[], torch.Tensor]) -> torch.Tensor:
        """Cached features of the input ``identity``, or ``compute_fn()`` stored on a miss (never
        cached when ``identity`` is ``None``: a random input such as a random frame sample)."""
        if identity is None:
            return compute_fn()
        key = self.key(identity)
        value = self.load(key)
        if value is None:
            value = compute_fn()
            self.save(key, value)
        return value


def _tensor_bytes(value: torch.Tensor) -> memoryview:
    # A byte view of the tensor's storage, dtype-agnostic (bfloat16 has no numpy dtype).
    return memoryview(value.contiguous().view(-1).view(torch.uint8).numpy())
