"""Image samples for training and evaluation: decode (PIL) -> crop/augment -> uint8 [3, S, S].

Training takes native-resolution crops (never downscale, only upscale images smaller than the
crop: generators' upsampling traces live in the high frequencies a resize removes; Durall et al.,
CVPR 2020) with DeeperForensics-style augment levels. Validation and calibration default to the
benchmark's own preprocessing (centre crop to aspect, resize) so the calibrator is fitted on what
the exported model will see.
"""

from __future__ import annotations

import hashlib
import json
import logging
import weakref
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Callable, Literal

import numpy as np
import torch

from detectors.config import setting
from detectors.data.cache import file_fingerprint
from detectors.data.containers import MediaBytes, reads_media_bytes
from detectors.data.dataset import SampleRecipe
from detectors.data.features import FeatureExtraction
from detectors.errors import ConfigError
from detectors.image.io import load_image, load_image_crop, open_image
from detectors.image.transforms import (
    benchmark_resize_array,
    build_eval_transform,
    build_train_transform,
    hwc_to_tensor,
    robustness_chain_array,
)
from detectors.settings import DataConfig

log = logging.getLogger(__name__)


@dataclass
class ImageDataConfig(DataConfig):
    crop: Literal["native", "resize"] = setting(
        "native", help="training crop: native resolution (never downscale) or a plain resize"
    )
    eval_crop: Literal["benchmark", "native", "resize"] = setting(
        "benchmark", help="validation/calibration input: the benchmark's crop and resize, or a crop"
    )
    augment_level: int = setting(2, help="0..3, DeeperForensics-style augmentation levels", ge=0, le=3)
    eval_robustness: bool = setting(False, help="validation/calibration through the robustness chain")
    feature_cache: bool = setting(
        True,
        help="frozen backbones (model.tuning: frozen, the probe): compute each "
        "image's features once and cache them (training augmentation off)",
    )
    cache_dir: str | None = setting(None, help="feature cache (null: ~/.cache/forensic-adapters/features)")
    feature_batch_size: int = setting(32, help="images per batch while computing features", ge=1)
    decode_workers: int = setting(2, help="DataLoader workers decoding images while computing features", ge=0)


def image_recipe(stage: str, data: ImageDataConfig, image_size: int) -> SampleRecipe:
    """Training: native-resolution crops with augmentation; evaluation: the benchmark's input."""
    if stage == "train":
        transform = build_train_transform(image_size, crop=data.crop, augment_level=data.augment_level)
        # native: crop in PIL before converting, so only the window is decoded to RGB and copied
        load = partial(load_image_crop, size=image_size, train=True) if data.crop == "native" else load_image
        return SampleRecipe(load=load, transform=transform)
    # the benchmark's plain convert("RGB") (16-bit images clip), not load_image's rescaling
    load = load_image_rgb if data.eval_crop == "benchmark" else load_image
    return SampleRecipe(
        load=load, transform=build_eval_transform(image_size, crop=data.eval_crop, robustness=data.eval_robustness)
    )


@dataclass(frozen=True)
class ImageInputLoader:
    """Picklable ``path -> uint8 [3, size, size]`` for DataLoader workers, deterministic, so its
    output can be cached (:meth:`cache_identity`): the benchmark's input (``benchmark``, optionally
    through its robustness chain), a native-resolution centre crop (``native``: images smaller than
    the crop are upscaled, bicubic) or a plain resize (``resize``)."""

    mode: str
    size: int
    robustness: bool = False

    def __call__(self, path: str) -> torch.Tensor:
        if self.mode == "benchmark":
            return benchmark_input_loader({"resize": [self.size, self.size]}, self.robustness)(path)
        if self.mode == "native" and not self.robustness:  # decode only the window
            image = load_image_crop(path, self.size, train=False)
        else:  # the robustness chain works on the whole image, as the benchmark's does
            image = load_image(path)
        return build_eval_transform(self.size, crop=self.mode, robustness=self.robustness)(image)

    def cache_identity(self, path: str) -> list[Any]:
        return [file_fingerprint(path), self.mode, self.size, self.robustness]


def default_feature_cache_dir() -> Path:
    return Path.home() / ".cache" / "forensic-adapters" / "features"


def frozen_feature_recipe(detector: Any, stage: str, data: ImageDataConfig, image_size: int) -> SampleRecipe | None:
    """Samples of a detector whose backbone is frozen: the features its network computes before
    the head (``net.forward_features``), once per image, cached under ``data.cache_dir`` keyed by
    the file, the input preparation and :func:`frozen_feature_identity`. Training takes the
    deterministic crop of ``data.crop`` (no augmentation: cached features would repeat it anyway).
    None when the backbone is tuned or ``data.feature_cache`` is off: the detector trains on media."""
    if getattr(getattr(detector.config, "tuning", None), "mode", None) != "frozen" or not data.feature_cache:
        return None
    if stage == "train":
        load = ImageInputLoader(data.crop, image_size)
        if detector not in _ANNOUNCED:
            _ANNOUNCED.add(detector)
            cache = Path(data.cache_dir or default_feature_cache_dir())
            log.info(
                "frozen backbone: features are computed once per image and cached in %s; training augmentation "
                "is off (training input: %s crops without augmentation; data.feature_cache: false trains on "
                "augmented media)",
                cache,
                data.crop,
            )
    else:
        load = ImageInputLoader(data.eval_crop, image_size, robustness=data.eval_robustness)
    return SampleRecipe(
        load=load,
        features=FeatureExtraction(
            detector.net,
            load,
            identity=frozen_feature_identity(detector),
            batch_size=data.feature_batch_size,
            cache_dir=Path(data.cache_dir or default_feature_cache_dir()),
            num_workers=data.decode_workers,
            cpu_chunk=None,
            forward=detector.net.forward_features,
        ),
    )


_ANNOUNCED: weakref.WeakSet = weakref.WeakSet()  # detectors whose cached mode was announced (once per run)

# network arguments that act after the cached features (the head): they do not change the features
_HEAD_ARGUMENTS = ("head_hidden", "dropout", "activation")


def frozen_feature_identity(detector: Any) -> str:
    """What shapes a frozen detector's features: its architecture, the network's feature
    arguments (pooling, normalisation) and a digest of every weight before the head."""
    digest = hashlib.sha1()
    arguments = {key: value for key, value in detector.network_kwargs.items() if key not in _HEAD_ARGUMENTS}
    digest.update(json.dumps([detector.arch, arguments], sort_keys=True, default=str).encode())
    for name, tensor in sorted(detector.net.state_dict().items()):
        if name.startswith(("head.", "head_dropout.")):
            continue
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return f"{detector.arch}-frozen-{digest.hexdigest()[:20]}"


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
    if not (
        isinstance(resize, (list, tuple))
        and len(resize) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in resize)
    ):
        raise ConfigError(
            "model_config.yaml",
            "preprocessing.resize",
            f"{modality} submissions need resize: [H, W] (two positive ints), got {resize!r}",
        )
    return int(resize[0]), int(resize[1])


@reads_media_bytes
def _benchmark_image(path: str | MediaBytes, resize: tuple[int, int], robustness: bool) -> torch.Tensor:
    pixels = _benchmark_pixels(path)
    if robustness:
        pixels = robustness_chain_array(pixels)
    return hwc_to_tensor(benchmark_resize_array(pixels, resize))
