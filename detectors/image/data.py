"""Image samples for training and evaluation: decode (PIL) -> crop/augment -> uint8 [3, S, S].

Training takes native-resolution crops (seed 004: never downscale, only upscale images smaller than
the crop) with the benchmark family's augment levels. Validation and calibration default to the
benchmark's own preprocessing (centre crop to aspect, resize) so the calibrator is fitted on what
the exported model will see.
"""

from __future__ import annotations

from functools import partial
from typing import Any, Callable, Sequence

import torch
from torchvision.transforms.v2.functional import pil_to_tensor

from detectors.data.catalog import MediaItem
from detectors.data.dataset import MediaDataset
from detectors.image.io import load_image, load_image_benchmark, load_image_crop, open_image, resize_to_aspect
from detectors.image.transforms import build_eval_transform, build_train_transform, robustness_chain_pil


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
        transform = build_eval_transform(image_size, crop=data.get("eval_crop", "benchmark"),
                                         robustness=bool(data.get("eval_robustness", False)))
    return MediaDataset(items, load=load, transform=transform,
                        target="multiclass" if num_classes == 3 else "binary")


def benchmark_input_loader(preprocessing: dict[str, Any], robustness: bool = False) -> Callable[[str], torch.Tensor]:
    """What the benchmark feeds an image submission: PIL RGB -> (robustness chain) -> centre crop to
    aspect -> resize to ``preprocessing.resize``, as uint8 ``[3, H, W]``."""
    if "resize" not in preprocessing:
        raise ValueError("model_config.yaml preprocessing.resize is required for image submissions")
    return partial(_benchmark_image, resize=tuple(int(v) for v in preprocessing["resize"]), robustness=robustness)


def _benchmark_image(path: str, resize: tuple[int, int], robustness: bool) -> torch.Tensor:
    if not robustness:
        return load_image_benchmark(path, resize)
    with open_image(path) as image:
        degraded = robustness_chain_pil(image.convert("RGB"))
    return resize_to_aspect(pil_to_tensor(degraded), resize)
