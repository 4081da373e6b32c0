"""Small on-disk image sets for end-to-end tests: a training set and a hold-out set whose fakes carry
a related but different fingerprint (different palette, strength and generator settings)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage


def _scene(rng: np.random.Generator, h: int, w: int, palette: float) -> np.ndarray:
    base = rng.uniform(40, 200, 3) * palette
    image = np.ones((h, w, 3)) * base
    yy, xx = np.mgrid[:h, :w]
    for _ in range(rng.integers(3, 7)):
        cy, cx, r = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(5, h / 2)
        mask = ((yy - cy) ** 2 + (xx - cx) ** 2) < r * r
        image[mask] = rng.uniform(20, 235, 3)
    return ndimage.gaussian_filter(image, (1.0, 1.0, 0))


def _real(rng, h, w, palette, noise):
    return _scene(rng, h, w, palette) + rng.normal(0, noise, (h, w, 3))


def _fake(rng, h, w, palette, cast, smooth):
    image = ndimage.gaussian_filter(_scene(rng, h, w, palette), (smooth, smooth, 0))
    return image + np.array(cast)  # generator colour bias, no sensor noise


def write_image_set(root: Path, holdout: bool = False, n_per_class: int = 32, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed + (100 if holdout else 0))
    palette, noise = (0.8, 14.0) if holdout else (1.0, 18.0)
    cast, smooth = ((14, 2, -10), 1.2) if holdout else ((22, 0, -16), 1.6)
    for name in ("real", "fake"):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(n_per_class):
            h, w = rng.integers(32, 44, 2)
            pixels = _real(rng, h, w, palette, noise) if name == "real" else _fake(rng, h, w, palette, cast, smooth)
            fmt = "png" if i % 3 else "jpg"
            Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(root / name / f"{i:03d}.{fmt}")
    yaml_path = root / "data.yaml"
    yaml_path.write_text(
        "datasets:\n"
        f"  - {{name: {'holdout-' if holdout else ''}real, path: real, modality: image, media_type: real}}\n"
        f"  - {{name: {'holdout-' if holdout else ''}fake, path: fake, modality: image, media_type: synthetic,"
        " generator_family: test-gen}\n"
    )
    return yaml_path


def write_three_class_set(root: Path, n_per_class: int = 16, seed: int = 3) -> Path:
    """real / synthetic / semisynthetic (a real photo whose left half was regenerated)."""
    rng = np.random.default_rng(seed)
    for name in ("real", "synthetic", "semisynthetic"):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(n_per_class):
            h, w = rng.integers(32, 44, 2)
            pixels = _real(rng, h, w, 1.0, 18.0)
            if name == "synthetic":
                pixels = _fake(rng, h, w, 1.0, (22, 0, -16), 1.6)
            elif name == "semisynthetic":
                pixels[:, : w // 2] = _fake(rng, h, w, 1.0, (22, 0, -16), 1.6)[:, : w // 2]
            Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(root / name / f"{i:03d}.png")
    yaml_path = root / "data.yaml"
    yaml_path.write_text(
        "datasets:\n"
        + "".join(
            f"  - {{name: {name}, path: {name}, modality: image, media_type: {name}}}\n"
            for name in ("real", "synthetic", "semisynthetic")
        )
    )
    return yaml_path
