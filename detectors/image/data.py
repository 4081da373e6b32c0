"""Image samples for training and evaluation: decode (PIL) -> crop/augment -> uint8 [3, S, S].

Training takes native-resolution crops (seed 004: never downscale, only upscale images smaller than
the crop) with the benchmark family's augment levels. Validation and calibration default to the
benchmark's own preprocessing (centre crop to aspect, resize) so the calibrator is fitted on what
the exported model will see.
"""

from __future__ import annotations

from functools import partial
from typing import Any, Callable, Sequence

import numpy as np
import torch

from detectors.data.catalog import MediaItem
from detectors.data.dataset import MediaDataset
from detectors.image.io import load_image, load_image_crop, open_image
from detectors.image.transforms import (benchmark_resize_array, build_eval_transform, build_train_transform, hwc_to_tensor,
                                        robustness_chain_array)


def build_image_dataset(items: Sequence[MediaItem], stage: str, data: dict[str, Any], image_size: int,
                        num_classes: int = 2) -> MediaDataset:
    load = load_image
    if stage == "train":
        crop = data.get("crop", "native")
        transform = build_train_transform(image_size, crop=crop, augment_level=int(data.get("augment_level", 1)))
        if crop == "native":
            # crop in PIL before converting: only the window is decoded to RGB and copied
            load = partial(load_image_crop, size=image_size, train=True)
    else:
        eval_crop = data.get("eval_crop", "benchmark")
        if eval_crop == "benchmark":
            # the benchmark's plain convert("RGB") (16-bit images clip), not load_image's rescaling
            load = load_image_rgb
        transform = build_eval_transform(image_size, crop=eval_crop, robustness=bool(data.get("eval_robustness", False)))
    return MediaDataset(items, load=load, transform=transform,
                        target="multiclass" if num_classes == 3 else "binary")


def _benchmark_pixels(path: str) -> np.ndarray:
    """``uint8 [H, W, 3]`` exactly as the benchmark decodes: PIL ``Image.open(...).convert("RGB")``
    (alpha dropped, no EXIF rotation, 16-bit greyscale clipped rather than rescaled)."""
    with open_image(path) as image:
        return np.asarray(image.convert("RGB"))


def load_image_rgb(path: str) -> torch.Tensor:
    """:func:`_benchmark_pixels` as ``uint8 [3, H, W]``."""
    return hwc_to_tensor(_benchmark_pixels(path))


def benchmark_input_loader(preprocessing: dict[str, Any], robustness: bool = False) -> Callable[[str], torch.Tensor]:
    """What the benchmark feeds an image submission, as uint8 ``[3, H, W]``: PIL ``convert("RGB")``
    -> (robustness chain, at full size) -> centre crop to the aspect of ``preprocessing.resize`` ->
    OpenCV bilinear resize to it (GASBench ``image_bench`` -> ``process_image_sample`` ->
    ``apply_random_augmentations(level=0, crop_prob=0)`` / ``apply_robustness_augmentations``)."""
    if "resize" not in preprocessing:
        raise ValueError("model_config.yaml preprocessing.resize is required for image submissions")
    return partial(_benchmark_image, resize=tuple(int(v) for v in preprocessing["resize"]), robustness=robustness)


def _benchmark_image(path: str, resize: tuple[int, int], robustness: bool) -> torch.Tensor:
    pixels = _benchmark_pixels(path)
    if robustness:
        pixels = robustness_chain_array(pixels)
    return hwc_to_tensor(benchmark_resize_array(pixels, resize))
