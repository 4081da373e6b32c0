"""Frozen-backbone training epochs: recomputing the backbone every epoch vs cached features.

A frozen DINOv2/DINOv3 image detector (random weights of the published ViT-S/14 architecture,
built offline) trains its head for ``--epochs`` epochs on ``--images`` images:

- recompute: every epoch decodes each image and runs the frozen backbone, then the head's step;
- cached: the first epoch computes each image's features once (``FeatureExtraction``, the data
  stage of ``--tuning frozen`` detectors and the probe) and stores them in a ``FeatureCache``; later
  epochs run the head on the cached features only.

Prints the seconds per epoch after the first and their ratio (goal: >= 20x).

    python benchmarks/frozen_feature_cache.py [--images 64] [--image-size 224] [--epochs 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def write_images(root: Path, count: int, size: int) -> list[str]:
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(count):
        height, width = rng.integers(size, size + 64, 2)
        path = root / f"{index:04d}.jpg"
        Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8)).save(path, quality=90)
        paths.append(str(path))
    return paths


def head_epoch(detector, features: torch.Tensor, labels: torch.Tensor, optimizer, batch_size: int) -> None:
    for start in range(0, len(features), batch_size):
        logits = detector.forward_head(features[start : start + batch_size])
        loss = torch.nn.functional.cross_entropy(logits, labels[start : start + batch_size])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args()

    from detectors.image.data import ImageDataConfig
    from detectors.registry import create_detector

    torch.manual_seed(0)
    detector = create_detector(
        "dinov3_image",
        {
            "backbone": {
                "name": "facebook/dinov2-small",
                "pretrained": False,
                "architecture": {
                    "model_type": "dinov2",
                    "hidden_size": 384,
                    "num_hidden_layers": 12,
                    "num_attention_heads": 6,
                    "mlp_ratio": 4,
                    "patch_size": 14,
                    "image_size": 518,
                },
            },
            "tuning": "frozen",
            "image_size": args.image_size,
            "head_hidden": [],
        },
    )
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    detector.to(device).train()
    optimizer = torch.optim.AdamW([p for p in detector.parameters() if p.requires_grad], lr=1e-3)
    labels = torch.arange(args.images, device=device) % 2

    with tempfile.TemporaryDirectory() as tmp:
        paths = write_images(Path(tmp) / "images", args.images, args.image_size)
        data = ImageDataConfig(cache_dir=str(Path(tmp) / "cache"), feature_batch_size=args.batch_size, decode_workers=2)
        recipe = detector.data_recipe("train", data)

        recompute = []
        for _ in range(args.epochs):  # the backbone runs on every image in every epoch
            start = time.perf_counter()
            for first in range(0, args.images, args.batch_size):
                images = torch.stack([recipe.load(path) for path in paths[first : first + args.batch_size]]).to(device)
                with torch.no_grad():
                    features = detector.forward_features(images)
                head_epoch(detector, features, labels[first : first + args.batch_size], optimizer, args.batch_size)
            recompute.append(time.perf_counter() - start)

        cached = []
        features = None
        for epoch in range(args.epochs):
            start = time.perf_counter()
            if epoch == 0:  # what the DataModule does once, before training
                features, valid = recipe.features.run(paths, device)
                assert bool(valid.all())
                features = features.to(device)
            head_epoch(detector, features, labels, optimizer, args.batch_size)
            cached.append(time.perf_counter() - start)
        reread = time.perf_counter()
        recipe.features.run(paths, device)  # a later run (another head, a sweep): the cache only
        reread = time.perf_counter() - reread

    later_recompute = statistics.mean(recompute[1:]) if args.epochs > 1 else recompute[0]
    later_cached = statistics.mean(cached[1:]) if args.epochs > 1 else cached[0]
    print(f"device {device}, {args.images} images at {args.image_size} px, random DINOv2-S/14, batch {args.batch_size}")
    print(f"recompute: first epoch {recompute[0]:.2f} s, later epochs {later_recompute:.3f} s")
    print(
        f"cached:    first epoch {cached[0]:.2f} s (features computed and stored), later epochs "
        f"{later_cached * 1000:.2f} ms; reading every feature back for a new run {reread:.2f} s"
    )
    print(f"later epochs, recompute / cached: {later_recompute / later_cached:.0f}x (goal >= 20x)")


if __name__ == "__main__":
    main()
