"""On-disk cache of decoded video frames (see :mod:`detectors.data.cache` for the entry format).

Decoding dominates video training time, and the frames a deterministic sampler picks never change,
so they are decoded once and stored. Keys name the video's identity and everything that shapes the
frames: sampler, resize, decode options, the decoder and its library versions
(:func:`detectors.video.io.decoder_key`), so decoding with decord where PyAV filled the cache (or
after a library upgrade) simply misses the cache.

``FrameCache``: ``<root>/<key[:2]>/<key>.npy.zst`` (zstd frame with content size and checksum,
holding ``.npy`` bytes) or ``<key>.npy`` (``.npy`` bytes plus the integrity trailer). Content:
``uint8 [T, 3, H, W]``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Literal

import numpy as np
import torch

from detectors.data.cache import CorruptEntry, _EntryStore, decode_npy, encode_npy, file_fingerprint, make_key
from detectors.video.io import decoder_key, read_video_frames
from detectors.video.sampling import FrameSampler


class FrameCache(_EntryStore):
    """Decoded (and resized) frames of videos: ``uint8 [T, 3, H, W]`` per entry."""

    def __init__(self, root: str | Path, compress: Literal["zstd", "none"] = "zstd") -> None:
        if compress not in ("zstd", "none"):
            raise ValueError(f"compress must be 'zstd' or 'none', got {compress!r}")
        super().__init__(root)
        self.compress = compress
        self.suffix = ".npy.zst" if compress == "zstd" else ".npy"

    def key(self, path: str | Path, sampler: FrameSampler, resize: tuple[int, int] | None, **options: Any) -> str:
        """Cache key of ``path`` sampled by ``sampler``, resized to ``resize``, decoded with ``options``
        (``options["backend"]``, default ``"auto"``, picks the decoder named in the key)."""
        size = None if resize is None else [int(v) for v in resize]
        decoder = decoder_key(path, options.get("backend", "auto"))
        return make_key("frames", file_fingerprint(path), decoder, sampler.key(), size, options)

    def load(self, key: str, expected_shape: tuple[int | None, ...] | None = None) -> torch.Tensor | None:
        """The cached frames, or None when absent or corrupt (then the entry is deleted)."""

        def decode(data: bytes) -> torch.Tensor:
            array = decode_npy(data, self.compress)
            if array.dtype != np.uint8 or array.ndim != 4 or array.shape[1] != 3:
                raise CorruptEntry(f"expected uint8 [T, 3, H, W], found {array.dtype} {array.shape}")
            if expected_shape is not None and any(
                want is not None and want != got for want, got in zip(expected_shape, array.shape)
            ):
                raise CorruptEntry(f"expected shape {expected_shape}, found {array.shape}")
            return torch.from_numpy(array)

        return self._read(key, decode)

    def save(self, key: str, frames: torch.Tensor) -> None:
        if frames.dtype != torch.uint8 or frames.dim() != 4 or frames.shape[1] != 3:
            raise ValueError(f"FrameCache stores uint8 [T, 3, H, W], got {frames.dtype} {tuple(frames.shape)}")
        self._write(key, encode_npy(frames.cpu().numpy(), self.compress))

    def get_or_decode(
        self,
        path: str | Path,
        sampler: FrameSampler,
        resize: tuple[int, int] | None = None,
        decode_fn: Callable[..., torch.Tensor] | None = None,
        **options: Any,
    ) -> torch.Tensor:
        """Cached frames of ``path``, decoding (``decode_fn(path, sampler, resize, **options)``,
        default :func:`detectors.video.io.read_video_frames`) and storing them on a miss.

        Random samplers are never cached (each call must draw new frames). ``options`` are passed
        to ``decode_fn`` and are part of the key; a custom ``decode_fn`` should be named by an option
        (e.g. ``tag="mine"``) if its output differs from the default's.
        """
        decode_fn = decode_fn or read_video_frames
        if not sampler.deterministic:
            return decode_fn(path, sampler, resize, **options)
        key = self.key(path, sampler, resize, **options)
        expected = (sampler.clip_length, 3, *(resize if resize is not None else (None, None)))
        frames = self.load(key, expected_shape=expected)
        if frames is None:
            frames = decode_fn(path, sampler, resize, **options)
            self.save(key, frames)
        return frames
