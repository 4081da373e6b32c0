"""Image (and video-clip) transforms on ``uint8`` tensors, built on ``torchvision.transforms.v2``.

Every transform takes ``[..., 3, H, W]`` uint8 tensors. One call draws one set of random parameters,
so a video clip ``[T, 3, H, W]`` gets the same crop, flip and distortion level on every frame (the
Gaussian-noise distortion draws fresh noise per pixel and frame at the same variance).

- ``NativeCrop``: never downscale (generator fingerprints live
  in the highest frequencies); only images smaller than the crop are upscaled (shorter side to the
  crop size, bicubic with antialias). Random crop in training, centre crop in evaluation.
- ``ResizeCrop``: plain alternative: bilinear resize of the shorter side to the crop size, then crop.
- DeeperForensics-style distortions with the benchmark family's severity tables (``DISTORTION_LEVELS``),
  each taking a fixed severity or an inclusive range sampled per call; severity 0 means "no change".
- ``build_train_transform`` / ``build_eval_transform``: the benchmark family's augment levels 0..3.
- ``RobustnessChain``: the benchmark's image robustness pass (downscale, JPEG, WebP, JPEG).

The benchmark's own preprocessing (GASBench v0.8.0 ``processing/transforms.py``: ``ResizeShortestEdge``,
``apply_robustness_augmentations``; https://github.com/BitMind-AI/gasbench) works on HWC
uint8 numpy arrays with OpenCV, so :func:`benchmark_resize_array` and
:func:`robustness_chain_array` do too: the same OpenCV calls give the same pixels (OpenCV's uint8
``INTER_LINEAR`` is fixed-point and does not antialias, so torchvision cannot reproduce it).
"""

from __future__ import annotations

import io
import math
from typing import Any, Literal

import cv2
import numpy as np
import PIL.Image
import torch
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

#: Severity tables (levels 1..5) of the DeeperForensics-style distortions used by the benchmark family.
DISTORTION_LEVELS: dict[str, tuple[float, ...]] = {
    "CS": (0.4, 0.3, 0.2, 0.1, 0.0),  # colour saturation factor
    "CC": (0.85, 0.725, 0.6, 0.475, 0.35),  # contrast factor
    "GNC": (0.001, 0.002, 0.005, 0.01, 0.05),  # Gaussian noise variance (image scaled to [0, 1])
    "GB": (7, 9, 13, 17, 21),  # Gaussian blur kernel size; sigma = k / 6
    "JPEG": (2, 3, 4, 5, 6),  # block down/up-sampling factor
}

CropMode = Literal["native", "resize"]


# ------------------------------------------------------------------------------------------- crops
class _ScaledSquareCrop(v2.Transform):
    """Scale so the shorter side is at least ``size`` when :meth:`needs_resize` says so, then take a
    random (training) or centred square crop of ``size``."""

    interpolation = v2.InterpolationMode.BILINEAR

    def __init__(self, size: int, train: bool = True) -> None:
        super().__init__()
        self.size = int(size)
        self.train = train

    def needs_resize(self, shorter_side: int) -> bool:
        raise NotImplementedError

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        height, width = F.get_size(flat_inputs[0])
        resize = None
        if self.needs_resize(min(height, width)):
            scale = self.size / min(height, width)
            height, width = max(self.size, round(height * scale)), max(self.size, round(width * scale))
            resize = [height, width]
        return {"resize": resize, **_crop_origin(height, width, self.size, self.train)}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        if params["resize"] is not None:
            inpt = F.resize(inpt, params["resize"], interpolation=self.interpolation, antialias=True)
        return F.crop(inpt, params["top"], params["left"], self.size, self.size)


class NativeCrop(_ScaledSquareCrop):
    """Square crop of ``size`` at native resolution; upscale (bicubic) only images smaller than the crop."""

    interpolation = v2.InterpolationMode.BICUBIC

    def needs_resize(self, shorter_side: int) -> bool:
        return (
            shorter_side < self.size
        )  # never downscale: the fingerprints live in high frequencies (Durall et al., CVPR 2020)


class ResizeCrop(_ScaledSquareCrop):
    """Resize the shorter side to ``size`` (bilinear, antialias), then a random/centre square crop."""

    def needs_resize(self, shorter_side: int) -> bool:
        return shorter_side != self.size


class BenchmarkResize(v2.Transform):
    """The benchmark's preprocessing: centre crop to the aspect of ``size`` = (H, W), then OpenCV
    bilinear resize (see :func:`benchmark_resize`), on ``uint8 [..., 3, H, W]`` tensors."""

    _transformed_types = (torch.Tensor,)

    def __init__(self, size: int | tuple[int, int]) -> None:
        super().__init__()
        self.size = (size, size) if isinstance(size, int) else tuple(size)

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        return benchmark_resize(inpt, self.size)


# ------------------------------------------------------------------- the benchmark's resize
def benchmark_crop_box(height: int, width: int, size: tuple[int, int]) -> tuple[int, int, int, int]:
    """``(top, left, crop_h, crop_w)``: the largest centred crop with the aspect ratio of ``size``.

    As the benchmark computes it: ``scale = min(h / H, w / W)``, crop sides ``round(scale * H)`` and
    ``round(scale * W)`` (capped by the image), offsets floored (torchvision's ``center_crop``
    rounds them half-to-even instead, one pixel off for odd margins).
    """
    target_h, target_w = size
    scale = min(height / target_h, width / target_w)
    crop_h = min(int(round(scale * target_h)), height)
    crop_w = min(int(round(scale * target_w)), width)
    return (height - crop_h) // 2, (width - crop_w) // 2, crop_h, crop_w


def benchmark_resize_array(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The benchmark's resize of one ``uint8 [H, W, 3]`` array: :func:`benchmark_crop_box`, then
    ``cv2.resize(..., INTER_LINEAR)`` to ``size`` = (H, W) (no antialiasing, also when the size is
    already right: OpenCV then copies)."""
    top, left, crop_h, crop_w = benchmark_crop_box(image.shape[0], image.shape[1], size)
    crop = np.ascontiguousarray(image[top : top + crop_h, left : left + crop_w])
    return cv2.resize(crop, (int(size[1]), int(size[0])), interpolation=cv2.INTER_LINEAR)


def benchmark_resize(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """:func:`benchmark_resize_array` on ``uint8 [3, H, W]`` or ``[..., 3, H, W]`` (frame by frame,
    as the benchmark treats a clip): ``uint8 [..., 3, size[0], size[1]]``."""
    if images.dtype != torch.uint8 or images.dim() < 3 or images.shape[-3] != 3:
        raise ValueError(f"expected uint8 [..., 3, H, W], got {images.dtype} {tuple(images.shape)}")
    size = (int(size[0]), int(size[1]))
    frames = images.reshape(-1, *images.shape[-3:])
    out = [hwc_to_tensor(benchmark_resize_array(tensor_to_hwc(frame), size)) for frame in frames]
    return torch.stack(out).reshape(*images.shape[:-2], *size)


def tensor_to_hwc(image: torch.Tensor) -> np.ndarray:
    """``uint8 [3, H, W]`` tensor -> contiguous ``[H, W, 3]`` numpy array (a copy)."""
    return np.ascontiguousarray(image.permute(1, 2, 0).numpy())


def hwc_to_tensor(image: np.ndarray) -> torch.Tensor:
    """``[H, W, 3]`` numpy array -> contiguous ``uint8 [3, H, W]`` tensor (always a new buffer)."""
    return torch.from_numpy(np.array(image, copy=not image.flags.writeable)).permute(2, 0, 1).contiguous()


def _crop_origin(height: int, width: int, size: int, train: bool) -> dict[str, int]:
    if train:
        top = int(torch.randint(0, height - size + 1, ()).item())
        left = int(torch.randint(0, width - size + 1, ()).item())
    else:
        top, left = (height - size) // 2, (width - size) // 2
    return {"top": top, "left": left}


# ------------------------------------------------------------------------------------- distortions
class _LevelDistortion(v2.Transform):
    """Base class: a distortion with a severity table; ``level`` is fixed or an inclusive range.

    Severity 0 leaves the input unchanged; severity s in 1..5 uses ``DISTORTION_LEVELS[key][s - 1]``.
    """

    key: str = ""
    _transformed_types = (torch.Tensor,)

    def __init__(self, level: int | tuple[int, int] = (0, 1)) -> None:
        super().__init__()
        low, high = (level, level) if isinstance(level, int) else (int(level[0]), int(level[1]))
        if not 0 <= low <= high <= len(DISTORTION_LEVELS[self.key]):
            raise ValueError(f"{type(self).__name__}: level must be within 0..5 (low <= high), got {level!r}")
        self.low, self.high = low, high

    def check_inputs(self, flat_inputs: list[Any]) -> None:
        if any(isinstance(x, PIL.Image.Image) for x in flat_inputs):
            raise TypeError(f"{type(self).__name__} works on uint8 tensors; convert PIL images first")

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        level = self.low if self.low == self.high else int(torch.randint(self.low, self.high + 1, ()).item())
        return {"level": level, "value": DISTORTION_LEVELS[self.key][level - 1] if level else None}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        if params["level"] == 0:
            return inpt
        return self.apply(inpt, params["value"])

    def apply(self, image: torch.Tensor, value: float) -> torch.Tensor:
        raise NotImplementedError


class ColourSaturation(_LevelDistortion):
    """CS: blend with the greyscale image (saturation factor from the table; 0 = greyscale)."""

    key = "CS"

    def apply(self, image: torch.Tensor, value: float) -> torch.Tensor:
        return F.adjust_saturation(image, value)


class ColourContrast(_LevelDistortion):
    """CC: blend with the mean grey level of each image/frame (contrast factor from the table)."""

    key = "CC"

    def apply(self, image: torch.Tensor, value: float) -> torch.Tensor:
        return F.adjust_contrast(image, value)


class GaussianNoiseColour(_LevelDistortion):
    """GNC: additive Gaussian noise per pixel and channel, variance from the table on a [0, 1] scale."""

    key = "GNC"

    def apply(self, image: torch.Tensor, value: float) -> torch.Tensor:
        std = math.sqrt(value) * 255.0
        noisy = image.float() + torch.randn(image.shape) * std
        return noisy.round_().clamp_(0, 255).to(image.dtype)


class GaussianBlurLevel(_LevelDistortion):
    """GB: Gaussian blur with kernel size k from the table and sigma k / 6."""

    key = "GB"

    def apply(self, image: torch.Tensor, value: float) -> torch.Tensor:
        kernel = int(value)
        # Reflect padding needs the half-kernel to fit inside the image.
        limit = 2 * min(image.shape[-2:]) - 1
        kernel = min(kernel, limit if limit % 2 else limit - 1)
        return F.gaussian_blur(image, [kernel, kernel], [value / 6.0, value / 6.0])


class JPEGBlock(_LevelDistortion):
    """JPEG-like block artefacts: bilinear downsample by the table factor, nearest upsample back."""

    key = "JPEG"

    def apply(self, image: torch.Tensor, value: float) -> torch.Tensor:
        height, width = image.shape[-2:]
        factor = int(value)
        small = F.resize(image, [max(1, height // factor), max(1, width // factor)], antialias=True)
        return F.resize(small, [height, width], interpolation=v2.InterpolationMode.NEAREST)


# ----------------------------------------------------------------------------------- robustness
ROBUSTNESS_MIN_SIDE = 256  # the benchmark's floor for the downscale step, per side


class RobustnessChain(v2.Transform):
    """The benchmark's image robustness pass (:func:`robustness_chain_array`) on a ``uint8 [3, H, W]``
    tensor or a PIL image (returned as the same type, at the input's size)."""

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        if isinstance(inpt, PIL.Image.Image):
            return robustness_chain_pil(inpt)
        if inpt.ndim != 3 or inpt.dtype != torch.uint8:
            raise ValueError(f"RobustnessChain expects a uint8 [3, H, W] tensor, got {inpt.dtype} {tuple(inpt.shape)}")
        return hwc_to_tensor(robustness_chain_array(tensor_to_hwc(inpt)))


def robustness_downscale_size(
    height: int, width: int, scale: float = 0.5, min_side: int = ROBUSTNESS_MIN_SIDE
) -> tuple[int, int] | None:
    """The benchmark's robustness downscale (image and video alike): each side to
    ``max(min_side, round(side * scale))``, applied only when both sides shrink; ``None`` otherwise."""
    small_h = max(min_side, int(round(height * scale)))
    small_w = max(min_side, int(round(width * scale)))
    return (small_h, small_w) if small_h < height and small_w < width else None


def robustness_chain_array(image: np.ndarray, scale: float = 0.5, min_side: int = ROBUSTNESS_MIN_SIDE) -> np.ndarray:
    """The benchmark's robustness chain on ``uint8 [H, W, 3]`` RGB, before its resize to the model size
    (GASBench ``apply_robustness_augmentations``):

    1. each side to ``max(min_side, round(side * scale))``; only when both sides shrink: down with
       ``cv2.INTER_AREA``, then back up to the original size with ``cv2.INTER_LINEAR`` (the size
       does not change, the detail is lost);
    2. PIL JPEG q55 with 4:2:0 subsampling -> PIL WebP q75 (``method=4``) -> PIL JPEG q80 (4:2:0),
       each decoded back with ``convert("RGB")``.
    """
    image = np.ascontiguousarray(image, dtype=np.uint8)
    height, width = image.shape[:2]
    small = robustness_downscale_size(height, width, scale, min_side)
    if small is not None:
        image = cv2.resize(image, (small[1], small[0]), interpolation=cv2.INTER_AREA)
        image = cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR)
    for fmt, options in (
        ("JPEG", {"quality": 55, "subsampling": 2}),
        ("WEBP", {"quality": 75, "method": 4}),
        ("JPEG", {"quality": 80, "subsampling": 2}),
    ):
        image = _codec_round_trip(image, fmt, options)
    return image


def _codec_round_trip(image: np.ndarray, fmt: str, options: dict[str, Any]) -> np.ndarray:
    buffer = io.BytesIO()
    PIL.Image.fromarray(image).save(buffer, format=fmt, **options)
    buffer.seek(0)
    with PIL.Image.open(buffer) as decoded:
        return np.asarray(decoded.convert("RGB"))


def robustness_chain_pil(img: PIL.Image.Image) -> PIL.Image.Image:
    """:func:`robustness_chain_array` for a PIL image (converted to RGB first, as the benchmark does)."""
    return PIL.Image.fromarray(robustness_chain_array(np.asarray(img.convert("RGB"))))


# -------------------------------------------------------------------------------------- pipelines
def build_crop(size: int, crop: CropMode = "native", train: bool = True) -> v2.Transform:
    if crop == "native":
        return NativeCrop(size, train=train)
    if crop == "resize":
        return ResizeCrop(size, train=train)
    raise ValueError(f"crop must be 'native' or 'resize', got {crop!r}")


def build_train_transform(size: int, crop: CropMode = "native", augment_level: int = 0) -> v2.Compose:
    """Training pipeline following the benchmark family's augment levels.

    0: crop only; 1: + horizontal and vertical flips (p 0.5); 2: + CS and CC at severity 0-1;
    3: + CS, CC, GNC and GB at severity 0-2 (severity drawn uniformly per call, 0 = off).
    """
    if augment_level not in (0, 1, 2, 3):
        raise ValueError(f"augment_level must be 0, 1, 2 or 3, got {augment_level!r}")
    steps: list[v2.Transform] = [build_crop(size, crop, train=True)]
    if augment_level >= 1:
        steps += [v2.RandomHorizontalFlip(0.5), v2.RandomVerticalFlip(0.5)]
    if augment_level == 2:
        steps += [ColourSaturation((0, 1)), ColourContrast((0, 1))]
    if augment_level == 3:
        steps += [
            ColourSaturation((0, 2)),
            ColourContrast((0, 2)),
            GaussianNoiseColour((0, 2)),
            GaussianBlurLevel((0, 2)),
        ]
    return v2.Compose(steps)


def build_eval_transform(
    size: int, crop: Literal["native", "resize", "benchmark"] = "native", robustness: bool = False
) -> v2.Compose:
    """Evaluation pipeline: optional ``RobustnessChain``, then a centre crop (or the benchmark resize)."""
    steps: list[v2.Transform] = [RobustnessChain()] if robustness else []
    steps.append(BenchmarkResize(size) if crop == "benchmark" else build_crop(size, crop, train=False))
    return v2.Compose(steps)
