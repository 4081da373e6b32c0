"""Image samples for training and evaluation: decode (PIL) -> crop/augment -> uint8 [3, S, S].

Training takes native-resolution crops (seed 004: never downscale, only upscale images smaller than
the crop) with the benchmark family's augment levels. Validation and calibration default to the
benchmark's own preprocessing (centre crop to aspect, resize) so the calibrator is fitted on what
the exported model will see.
"""

from __future__ import annotations

from typing import Any, Sequence

from detectors.data.catalog import MediaItem
from detectors.data.dataset import MediaDataset
from detectors.image.io import load_image
from detectors.image.transforms import build_eval_transform, build_train_transform


def build_image_dataset(items: Sequence[MediaItem], stage: str, data: dict[str, Any], image_size: int,
                        num_classes: int = 2) -> MediaDataset:
    if stage == "train":
        transform = build_train_transform(image_size, crop=data.get("crop", "native"),
                                          augment_level=int(data.get("augment_level", 1)))
    else:
        transform = build_eval_transform(image_size, crop=data.get("eval_crop", "benchmark"),
                                         robustness=bool(data.get("eval_robustness", False)))
    return MediaDataset(items, load=load_image, transform=transform,
                        target="multiclass" if num_classes == 3 else "binary")
