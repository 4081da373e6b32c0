"""Image decoding with PIL, as the benchmark does it, with errors that name the file.

Decisions (matching the benchmark's ``Image.open(path).convert("RGB")``):
  - alpha is dropped, not composited (RGBA/LA/P-with-transparency keep their colour values);
  - EXIF orientation is NOT applied;
  - animated images (GIF/WebP) give their first frame;
  - CMYK, L, 1-bit, palette images go through PIL's ``convert("RGB")``.
Deliberate difference in ``load_image`` only: 16/32-bit greyscale (modes ``I;16*``, ``I``, ``F``) is
rescaled to 8 bits (65535 -> 255) instead of clipped, which would turn most of such an image white.
``detectors.image.data.load_image_rgb`` keeps the benchmark's plain ``convert("RGB")`` for everything.
"""

from __future__ import annotations

import contextlib
import warnings
from pathlib import Path
from typing import BinaryIO, Iterator

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torchvision.transforms.v2 import functional as F

from detectors.data.containers import MediaBytes, reads_media_bytes
from detectors.errors import MediaError, media_access_problem

#: Largest accepted image (pixels), PIL's own default bomb limit; larger files raise ``MediaError``.
MAX_PIXELS = 178_956_970


@contextlib.contextmanager
def open_image(path: str | Path | MediaBytes, max_pixels: int = MAX_PIXELS) -> Iterator[Image.Image]:
    """Open and fully decode an image (a file, or a container member's bytes); every failure
    becomes ``MediaError(path, problem)``."""
    if isinstance(path, MediaBytes):
        source: str | BinaryIO = path.open()
        problem = None if path.data else "empty file (0 bytes)"
    else:
        source = str(path)
        problem = media_access_problem(source)
    path = str(path)
    if problem:
        raise MediaError(path, problem)
    try:
        with warnings.catch_warnings():
            # PIL only warns between its limit and twice its limit; we want a clear error instead.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(source)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise MediaError(path, f"image too large (decompression bomb guard): {exc}") from exc
    except UnidentifiedImageError:
        raise MediaError(path, "not an image (PIL cannot identify the file format)") from None
    except OSError as exc:
        raise MediaError(path, f"cannot open image: {exc}") from exc
    with img:
        width, height = img.size
        if width <= 0 or height <= 0:
            raise MediaError(path, f"image has a zero dimension ({width}x{height})")
        if width * height > max_pixels:
            raise MediaError(path, f"image too large: {width}x{height} = {width * height} pixels > limit {max_pixels}")
        try:
            img.load()  # decode now: truncated or corrupt data fails here, not later in a transform
        except (OSError, SyntaxError, ValueError, EOFError) as exc:
            raise MediaError(path, f"truncated or corrupt image data: {exc}") from exc
        yield img


def to_rgb(img: Image.Image) -> Image.Image:
    """RGB conversion of ``load_image`` (see module docstring)."""
    if img.mode == "RGB":
        return img
    if img.mode.startswith("I") or img.mode == "F":
        return Image.fromarray(_high_bit_depth_to_uint8(np.asarray(img), img.mode), mode="L").convert("RGB")
    if img.mode == "P" and "transparency" in img.info:
        # Going through RGBA avoids PIL's transparency warning; the colours equal a direct convert.
        img = img.convert("RGBA")
    return img.convert("RGB")


def _high_bit_depth_to_uint8(array: np.ndarray, mode: str) -> np.ndarray:
    values = array.astype(np.float64)
    if mode.startswith("I;16"):
        scaled = values / 257.0  # 16-bit: 65535 -> 255
    elif mode == "F" and values.size and np.nanmin(values) >= 0.0 and np.nanmax(values) <= 1.0:
        scaled = values * 255.0  # float image in [0, 1]
    elif values.size and np.nanmax(values) > 255:
        scaled = values / 257.0  # 32-bit container holding 16-bit data (e.g. 16-bit PNG/TIFF)
    else:
        scaled = values  # already 0..255
    return np.clip(np.nan_to_num(scaled) + 0.5, 0, 255).astype(np.uint8)


@reads_media_bytes
def load_image(path: str | Path | MediaBytes, max_pixels: int = MAX_PIXELS) -> torch.Tensor:
    """Decode an image file to a ``uint8`` tensor ``[3, H, W]`` (RGB) at native resolution.

    The tensor is a channel-first view of the decoded HWC buffer (not contiguous), which saves a
    full-image copy; crops and ``torch.stack`` make contiguous copies of what they keep.
    """
    with open_image(path, max_pixels) as img:
        rgb = to_rgb(img)
        # A [3, H, W] view of the HWC pixel buffer (one copy); crops then copy only what they keep.
        return F.pil_to_tensor(rgb)


@reads_media_bytes
def load_image_crop(
    path: str | Path | MediaBytes, size: int, train: bool = True, max_pixels: int = MAX_PIXELS
) -> torch.Tensor:
    """A native-resolution ``size`` x ``size`` window (random in training, centred otherwise).

    Cropping the PIL image before the RGB conversion and the tensor copy is what makes training
    loading fast: only the window is converted. Images smaller than ``size`` come back whole (the
    ``NativeCrop`` transform that follows upscales them), so the result equals
    ``NativeCrop(size)(load_image(path))`` for the same window.
    """
    with open_image(path, max_pixels) as img:
        width, height = img.size
        if width >= size and height >= size:
            if train:
                left = int(torch.randint(0, width - size + 1, ()).item())
                top = int(torch.randint(0, height - size + 1, ()).item())
            else:
                left, top = (width - size) // 2, (height - size) // 2
            img = img.crop((left, top, left + size, top + size))
        return F.pil_to_tensor(to_rgb(img)).contiguous()
