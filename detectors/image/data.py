"""Image samples for training and evaluation: decode (PIL) -> crop/augment -> uint8 [3, S, S].

Training takes native-resolution crops (never downscale, only upscale images smaller than the
crop: generators' upsampling traces live in the high frequencies a resize removes; Durall et al.,
CVPR 2020) with DeeperForensics-style augment levels. Validation and calibration default to the
benchmark's own preprocessing (centre crop to aspect, resize) so the calibrator is fitted on what
the exported model will see.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any, Callable, Literal

import numpy as np
import torch

from detectors.config import setting
from detectors.data.containers import MediaBytes, reads_media_bytes
from detectors.data.dataset import SampleRecipe
from detectors.errors import ConfigError
from detectors.image.io import load_image, load_image_crop, open_image
from detectors.image.transforms import (benchmark_resize_array, build_eval_transform, build_train_transform, hwc_to_tensor,
                                        robustness_chain_array)
from detectors.settings import DataConfig


@dataclass
class ImageDataConfig(DataConfig):
    crop: Literal["native", "resize"] = setting(
        "native", help="training crop: native resolution (never downscale) or a plain resize")
    eval_crop: Literal["benchmark", "native", "resize"] = setting(
        "benchmark", help="validation/calibration input: the benchmark's crop and resize, or a crop")
    augment_level: int = setting(2, help="0..3, DeeperForensics-style augmentation levels", ge=0, le=3)
    eval_robustness: bool = setting(False, help="validation/calibration through the robustness chain")


def image_recipe(stage: str, data: ImageDataConfig, image_size: int) -> SampleRecipe:
    """Training: native-resolution crops with augmentation; evaluation: the benchmark's input."""
    if stage == "train":
        transform = build_train_transform(image_size, crop=data.crop, augment_level=data.augment_level)
        # native: crop in PIL before converting, so only the window is decoded to RGB and copied
        load = partial(load_image_crop, size=image_size, train=True) if data.crop == "native" else load_image
        return SampleRecipe(load=load, transform=transform)
    # the benchmark's plain convert("RGB") (16-bit images clip), not load_image's rescaling
    load = load_image_rgb if data.eval_crop == "benchmark" else load_image
    return SampleRecipe(load=load, transform=build_eval_transform(image_size, crop=data.eval_crop,
                                                                  robustness=data.eval_robustness))


def _benchmark_pixels(path: str | MediaBytes) -> np.ndarray:
    """``uint8 [H, W, 3]`` exactly as the benchmark decodes: PIL ``Image.open(...).convert("RGB")``
    (alpha dropped, no EXIF rotation, 16-bit greyscale clipped rather than rescaled)."""
    with open_image(path) as image:
        return np.asarray(image.convert("RGB"))


@reads_media_bytes
def load_image_rgb(path: str | MediaBytes) -> torch.Tensor:
    """:func:`_benchmark_pixels` as ``uint8 [3, H, W]``."""
    return hwc_to_tensor(_benchmark_pixels(path))


def benchmark_input_loader(preprocessing: dict[str, Any], robustness: bool = False) -> Callable[[str], torch.Tensor]:
    """What the benchmark feeds an image submission, as uint8 ``[3, H, W]``: PIL ``convert("RGB")``
    -> (robustness chain, at full size) -> centre crop to the aspect of ``preprocessing.resize`` ->
    OpenCV bilinear resize to it (GASBench ``image_bench`` -> ``process_image_sample`` ->
    ``apply_random_augmentations(level=0, crop_prob=0)`` / ``apply_robustness_augmentations``)."""
    return partial(_benchmark_image, resize=preprocessing_resize(preprocessing, "image"), robustness=robustness)


def preprocessing_resize(preprocessing: dict[str, Any], modality: str) -> tuple[int, int]:
    """``preprocessing.resize`` of a model_config.yaml as ``(H, W)``; anything but two positive ints
    is a ConfigError naming the setting (not every media file failing to load)."""
    resize = preprocessing.get("resize")
    if not (isinstance(resize, (list, tuple)) and len(resize) == 2
            and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in resize)):
        raise ConfigError("model_config.yaml", "preprocessing.resize",
                          f"{modality} submissions need resize: [H, W] (two positive ints), got {resize!r}")
    return int(resize[0]), int(resize[1])


@reads_media_bytes
def _benchmark_image(path: str | MediaBytes, resize: tuple[int, int], robustness: bool) -> torch.Tensor:
    pixels = _benchmark_pixels(path)
    if robustness:
        pixels = robustness_chain_array(pixels)
    return hwc_to_tensor(benchmark_resize_array(pixels, resize))
