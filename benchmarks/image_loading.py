"""Image loading + augmentation throughput (images/s): ``MediaDataset`` + ``DataLoader`` against a naive loop.

A corpus of image files is written first (default 96 files: 1024x768 JPEG q90, 512x512 JPEG q95,
640x480 PNG and 256x192 JPEG, in turn; smooth random content). Each variant produces training
crops of ``--size`` px at the given augment level:

* ``naive``: main process, per file ``PIL.Image.open(...).convert("RGB")`` and torchvision v1
  transforms on PIL images (``RandomCrop(pad_if_needed)``, flips, ``ColorJitter`` for saturation and
  contrast, ``GaussianBlur`` at level 3, ``ToTensor``), then a Python list -> ``torch.stack``.
* ``ours-main``: the library's training dataset (``image_recipe``: native crop taken in PIL
  before the RGB/tensor conversion, then v2 transforms on uint8 tensors) through a ``DataLoader``
  with ``num_workers=0``.
* ``ours-workers``: the same with ``--workers`` worker processes and ``collate_skip``.

The file cache is warmed first; each variant runs ``--epochs`` passes and the best pass is reported.

    OMP_NUM_THREADS=1 python benchmarks/image_loading.py [--files 96] [--size 224] [--level 3] [--workers 2]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image
from scipy import ndimage
from torch.utils.data import DataLoader
from torchvision import transforms as T

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from detectors.atomic import write_json  # noqa: E402
from detectors.data.catalog import MediaItem  # noqa: E402
from detectors.data.dataset import MediaDataset, collate_skip  # noqa: E402
from detectors.image.data import ImageDataConfig, image_recipe  # noqa: E402

# (width, height, format, save options)
KINDS = [(1024, 768, "JPEG", {"quality": 90}), (512, 512, "JPEG", {"quality": 95}), (640, 480, "PNG", {}),
         (256, 192, "JPEG", {"quality": 90})]  # fmt: skip


def write_corpus(root: Path, count: int, seed: int = 0) -> list[Path]:
    rng = np.random.default_rng(seed)
    paths = []
    for index in range(count):
        width, height, fmt, options = KINDS[index % len(KINDS)]
        base = rng.normal(size=(height // 8, width // 8, 3))
        smooth = ndimage.zoom(ndimage.gaussian_filter(base, (2, 2, 0)), (8, 8, 1), order=1)
        pixels = np.clip(128 + 60 * smooth / (smooth.std() + 1e-9) + rng.normal(0, 3, smooth.shape), 0, 255)
        path = root / f"img_{index:04d}.{'png' if fmt == 'PNG' else 'jpg'}"
        Image.fromarray(pixels.astype(np.uint8)).save(path, format=fmt, **options)
        paths.append(path)
    return paths


def naive_transform(size: int, level: int) -> Callable:
    steps: list = [T.RandomCrop(size, pad_if_needed=True)]
    if level >= 1:
        steps += [T.RandomHorizontalFlip(), T.RandomVerticalFlip()]
    if level >= 2:
        steps.append(T.ColorJitter(contrast=(0.6, 1.0), saturation=(0.2, 1.0)))
    if level >= 3:
        steps.append(T.GaussianBlur(9, sigma=(0.1, 1.5)))
    steps.append(T.ToTensor())
    return T.Compose(steps)


def run_naive(paths: list[Path], size: int, level: int, batch_size: int) -> int:
    transform = naive_transform(size, level)
    count = 0
    batch = []
    for path in paths:
        with Image.open(path) as img:
            batch.append(transform(img.convert("RGB")))
        if len(batch) == batch_size:
            count += len(torch.stack(batch))
            batch = []
    if batch:
        count += len(torch.stack(batch))
    return count


def run_ours(paths: list[Path], size: int, level: int, batch_size: int, workers: int) -> Callable[[], int]:
    items = [MediaItem(str(p), 0, "real", "bench", "image") for p in paths]
    dataset = MediaDataset.from_recipe(
        items, image_recipe("train", ImageDataConfig(crop="native", augment_level=level), size)
    )
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=workers, collate_fn=collate_skip,
                        persistent_workers=workers > 0)  # fmt: skip

    def one_epoch() -> int:
        return sum(len(batch["x"]) for batch in loader if batch is not None)

    return one_epoch


def best_rate(fn: Callable[[], int], epochs: int) -> float:
    rates = []
    for _ in range(epochs):
        start = time.perf_counter()
        count = fn()
        rates.append(count / (time.perf_counter() - start))
    return max(rates)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--files", type=int, default=96)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--level", type=int, default=3, choices=[0, 1, 2, 3])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None, help="write the figures as JSON")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        paths = write_corpus(Path(tmp), args.files)
        for path in paths:  # warm the file cache
            path.read_bytes()
        results = {
            "naive": best_rate(lambda: run_naive(paths, args.size, args.level, args.batch_size), args.epochs),
            "ours-main": best_rate(run_ours(paths, args.size, args.level, args.batch_size, 0), args.epochs),
        }
        ours_workers = run_ours(paths, args.size, args.level, args.batch_size, args.workers)
        ours_workers()  # start the persistent workers outside the timing
        results[f"ours-workers{args.workers}"] = best_rate(ours_workers, args.epochs)

    print(f"files={args.files} size={args.size} level={args.level} batch={args.batch_size} "
          f"torch threads={torch.get_num_threads()}")  # fmt: skip
    for name, rate in results.items():
        print(f"{name:>15}: {rate:8.1f} images/s   x{rate / results['naive']:.2f} vs naive")
    if args.out is not None:
        write_json(args.out, {"settings": vars(args) | {"out": str(args.out)}, "images_per_s": results})


if __name__ == "__main__":
    main()
