"""Real photographs against two "generators" that differ only in how they upsample: a test of the
spectral detector's generalisation to a generator it never saw.

What it is, honestly: the real images are crops of the two photographs scikit-learn ships
(``sklearn.datasets.load_sample_images``: ``china.jpg`` and ``flower.jpg``, 427 x 640 JPEGs),
downscaled by 2 with ``cv2.INTER_AREA`` first (which also smooths away most of their 8 x 8 JPEG
block grid). A "fake" is the same crop downscaled by 2 again (``INTER_AREA``) and upsampled back by
one of three upsamplers:

- ``nearest``: pixel replication (``cv2.INTER_NEAREST``);
- ``bilinear``: ``cv2.INTER_LINEAR``;
- ``tconv``: a stride-2 transposed convolution with a fixed 4 x 4 kernel whose taps are uneven, as a
  learned kernel's are (zero insertion, then the kernel), which leaves a checkerboard.

So the fakes are "resolution forgeries", not images of a generative model: what they share with
generated images is the upsampling step, which is exactly what frequency-domain detectors look at
(Durall et al., CVPR 2020). Crops of ``china.jpg`` make the training set (real vs ``nearest``),
crops of ``flower.jpg`` the hold-out sets: new content, and a generator never seen
(``bilinear``, ``tconv``) or the training one (``nearest``). Real and fake crops share their
content, so content alone cannot separate them.

Nearest and bilinear upsampling both *remove* energy near the Nyquist frequency; the transposed
convolution's checkerboard *adds* some there. A linear model trained on one direction learns that
direction: expect the ``bilinear`` hold-out to be separated and the ``tconv`` one not (the README's
"Spectral detector" section has the numbers).

CLI: ``python -m detectors.image.upsampling_sets OUT_DIR [--size 96] [--stride 16]``: writes the
images and ``train.yaml``, ``holdout_bilinear.yaml``, ``holdout_tconv.yaml``, ``holdout_nearest.yaml``
(paths relative to the YAMLs; idempotent) and prints the YAML paths.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Callable

import cv2
import numpy as np
from PIL import Image
from scipy import ndimage

from detectors.atomic import atomic_path
from detectors.data.demo_sets import positive_int, recorded_params_match, write_demo_yaml

SET_VERSION = 1
YAML_NAMES = ("train.yaml", "holdout_bilinear.yaml", "holdout_tconv.yaml", "holdout_nearest.yaml")
# uneven taps of a "learned" 4 x 4 transposed-convolution kernel: a bilinear kernel, perturbed once
_TCONV_KERNEL = np.outer([0.25, 0.75, 0.75, 0.25], [0.25, 0.75, 0.75, 0.25]) * (
    1 + 0.3 * np.random.default_rng(7).normal(size=(4, 4))
)


def _photos() -> dict[str, np.ndarray]:
    from sklearn.datasets import load_sample_images

    data = load_sample_images()
    return {Path(name).stem: image for name, image in zip(data.filenames, data.images)}


def _half(image: np.ndarray) -> np.ndarray:
    return cv2.resize(image, (image.shape[1] // 2, image.shape[0] // 2), interpolation=cv2.INTER_AREA)


def nearest(image: np.ndarray) -> np.ndarray:
    """Downscale x2 (area), upsample x2 by pixel replication."""
    return cv2.resize(_half(image), (image.shape[1], image.shape[0]), interpolation=cv2.INTER_NEAREST)


def bilinear(image: np.ndarray) -> np.ndarray:
    """Downscale x2 (area), upsample x2 bilinearly."""
    return cv2.resize(_half(image), (image.shape[1], image.shape[0]), interpolation=cv2.INTER_LINEAR)


def tconv(image: np.ndarray) -> np.ndarray:
    """Downscale x2 (area), upsample x2 with a stride-2 transposed convolution (zero insertion, then
    the uneven 4 x 4 kernel)."""
    small = _half(image).astype(np.float64)
    zeros = np.zeros((2 * small.shape[0], 2 * small.shape[1], 3))
    zeros[::2, ::2] = small
    out = np.stack([ndimage.convolve(zeros[..., c], _TCONV_KERNEL, mode="reflect") for c in range(3)], axis=-1)
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


UPSAMPLERS: dict[str, Callable[[np.ndarray], np.ndarray]] = {"nearest": nearest, "bilinear": bilinear, "tconv": tconv}


def photo_crops(photo: np.ndarray, size: int, stride: int) -> list[np.ndarray]:
    """Crops ``size x size`` every ``stride`` pixels of the photo downscaled by 2 (area)."""
    base = _half(photo)
    return [
        np.ascontiguousarray(base[y : y + size, x : x + size])
        for y in range(0, base.shape[0] - size + 1, stride)
        for x in range(0, base.shape[1] - size + 1, stride)
    ]


def write_upsampling_sets(root: str | Path, size: int = 96, stride: int = 16) -> dict[str, Path]:
    """Write the sets under ``root``; returns ``{yaml name without .yaml: path}``."""
    if size < 16 or size % 2:
        raise ValueError(f"size must be an even number >= 16, got {size}")
    root = Path(root)
    params = {"version": SET_VERSION, "size": size, "stride": stride}
    paths = {name[:-5]: root / name for name in YAML_NAMES}
    if all(recorded_params_match(path, params) for path in paths.values()):
        return paths
    photos = _photos()
    folders: dict[str, tuple[str, str | None]] = {}
    for split, photo in (("train", "china"), ("holdout", "flower")):
        crops = photo_crops(photos[photo], size, stride)
        kinds = {
            "real": None,
            **{name: fn for name, fn in UPSAMPLERS.items() if split == "holdout" or name == "nearest"},
        }
        for kind, upsample in kinds.items():
            folder = f"{split}_{kind}"
            (root / folder).mkdir(parents=True, exist_ok=True)
            for index, crop in enumerate(crops):
                pixels = crop if upsample is None else upsample(crop)
                with atomic_path(root / folder / f"{photo}_{index:04d}.png") as tmp:
                    Image.fromarray(pixels).save(tmp, format="PNG")
            folders[folder] = ("real" if upsample is None else "synthetic", None if upsample is None else kind)

    def entry(folder: str) -> dict[str, object]:
        media_type, family = folders[folder]
        return {
            "name": folder,
            "path": folder,
            "modality": "image",
            "media_type": media_type,
            "generator_family": family,
            "source_format": "png",
            "notes": "written by detectors.image.upsampling_sets (sklearn sample photos; fakes re-upsampled)",
        }

    write_demo_yaml(paths["train"], params, [entry("train_real"), entry("train_nearest")])
    for kind in ("bilinear", "tconv", "nearest"):
        write_demo_yaml(paths[f"holdout_{kind}"], params, [entry("holdout_real"), entry(f"holdout_{kind}")])
    return paths


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m detectors.image.upsampling_sets", description=__doc__.splitlines()[0]
    )
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--size", type=positive_int, default=96, help="crop size (even; default 96)")
    parser.add_argument("--stride", type=positive_int, default=16, help="crop stride (default 16)")
    args = parser.parse_args(argv)
    try:
        paths = write_upsampling_sets(args.out_dir, size=args.size, stride=args.stride)
    except ValueError as error:
        parser.error(str(error))
    for path in paths.values():
        print(path)


if __name__ == "__main__":
    main()
