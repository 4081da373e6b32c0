"""Built-in demo image data: small real-vs-generated image sets written as ordinary files + YAML.

The images are synthetic stand-ins that carry the cues real detectors rely on, so a small model can
learn them from scratch in a few CPU epochs:

- "real" (camera-like): smooth shapes on a gradient background + 1/f ("natural") texture rendered at
  full resolution, then signal-dependent sensor noise, mostly saved as JPEG (q 85-95) like a camera.
- "fake_gen_a" (GAN-like): content rendered at half resolution, over-smoothed and 2x upsampled the
  way a stride-2 transposed convolution does it, which leaves a multiplicative period-2 checkerboard
  (spectral peak at Nyquist); no sensor noise; mostly PNG.
- "fake_gen_b" (latent-diffusion-like): over-smooth full-resolution content plus a faint fixed
  period-4 decoder pattern (peaks at multiples of 1/4); no sensor noise; mostly PNG.

Both classes mix PNG and JPEG, so the file format is not the answer. The periodic traces survive a
random crop (their period is tiny), so native-resolution crops keep them. Their strength (10-15 %
multiplicative checkerboard, 6-10 grey levels of period-4 pattern) was chosen so that a 3-layer CNN
with BatchNorm trained from scratch on 64 px native crops of the default set (82 training images,
batch 16, Adam 1e-3) reaches validation AUC ~0.92 after 6 epochs and ~0.97 after 10 on 2 CPU
cores (about a minute), while staying at AUC 0.5-0.6 on the holdout set; 3-4 % traces took far
longer to learn.

``write_holdout_images`` writes a set with a *different* fingerprint (period-3 bilinear upsampling
with stripes, another colour palette, another camera noise/JPEG quality) for "never seen" tests.

Both sets write their images into class folders directly under the root (``real/``, ``fake_gen_a/``,
``fake_gen_b/``; ``real_holdout/``, ``fake_holdout/``), so they can share one folder; their YAMLs are
``demo_image.yaml`` and ``holdout_image.yaml``, with paths relative to the YAML.

CLI: ``python -m detectors.image.demo OUT_DIR [--n-per-class 60] [--seed S] [--holdout]``: writes
``OUT_DIR/demo_image.yaml`` and, with ``--holdout``, also ``OUT_DIR/holdout_image.yaml`` (2/3 as many
images per class, seed S + 1); prints the YAML paths. ``--n`` is a deprecated spelling of ``--n-per-class``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Callable

import numpy as np
from PIL import Image
from scipy import ndimage

from detectors.atomic import atomic_path
from detectors.data.demo_sets import demo_argument_parser, positive_int, recorded_params_match, write_demo_yaml

DEMO_VERSION = 4
#: Dataset YAML of each set, by kind; the sets can share a root folder.
YAML_NAMES = {"train": "demo_image.yaml", "holdout": "holdout_image.yaml"}

# Colour palettes (RGB) for content; the holdout set uses its own.
_PALETTE_MAIN = np.array(
    [[70, 110, 160], [200, 180, 140], [90, 140, 70], [180, 80, 60], [230, 220, 200], [40, 50, 60], [150, 120, 200]],
    dtype=np.float64,
)
_PALETTE_HOLDOUT = np.array(
    [[250, 170, 40], [20, 160, 160], [240, 90, 150], [120, 200, 90], [30, 30, 120]], dtype=np.float64
)


# ---------------------------------------------------------------------------------------- content
def _content(rng: np.random.Generator, height: int, width: int, palette: np.ndarray) -> np.ndarray:
    """Natural-looking float RGB image in 0..255: gradient, soft shapes, 1/f texture."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    yy /= max(height - 1, 1)
    xx /= max(width - 1, 1)
    angle = rng.uniform(0, 2 * np.pi)
    t = np.cos(angle) * xx + np.sin(angle) * yy
    t = (t - t.min()) / max(np.ptp(t), 1e-9)
    c0, c1 = palette[rng.choice(len(palette), 2, replace=False)] + rng.normal(0, 12, (2, 3))
    image = c0 * (1 - t[..., None]) + c1 * t[..., None]

    for _ in range(rng.integers(3, 8)):
        cy, cx = rng.uniform(-0.1, 1.1, 2)
        ry, rx = rng.uniform(0.08, 0.45, 2)
        softness = rng.uniform(0.02, 0.12)
        if rng.random() < 0.5:  # ellipse
            dist = np.sqrt(((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2) - 1
        else:  # rectangle
            dist = np.maximum(np.abs(yy - cy) / ry, np.abs(xx - cx) / rx) - 1
        mask = 1 / (1 + np.exp(np.clip(dist / softness, -50, 50)))
        colour = palette[rng.integers(len(palette))] + rng.normal(0, 20, 3)
        image = image * (1 - mask[..., None]) + colour * mask[..., None]

    # 1/f^beta texture, shared by the channels with a slight per-channel gain.
    fy = np.fft.fftfreq(height)[:, None]
    fx = np.fft.fftfreq(width)[None, :]
    spectrum = 1.0 / (np.sqrt(fy**2 + fx**2) + 1.0 / max(height, width)) ** rng.uniform(0.9, 1.4)
    texture = np.real(np.fft.ifft2(np.fft.fft2(rng.normal(size=(height, width))) * spectrum))
    texture = (texture - texture.mean()) / (texture.std() + 1e-9) * rng.uniform(6, 16)
    image = image + texture[..., None] * (1 + rng.normal(0, 0.1, 3))
    return np.clip(image, 0, 255)


def _sensor_noise(rng: np.random.Generator, image: np.ndarray, read: float, shot: float) -> np.ndarray:
    """Camera-like noise: Gaussian read noise plus shot noise growing with the signal."""
    sigma = np.sqrt(read**2 + shot * image)
    return image + rng.normal(size=image.shape) * sigma


def _blur(image: np.ndarray, sigma: float) -> np.ndarray:
    return ndimage.gaussian_filter(image, sigma=(sigma, sigma, 0), mode="reflect")


def _generator_look(
    rng: np.random.Generator, image: np.ndarray, saturation: tuple[float, float], tint: np.ndarray
) -> np.ndarray:
    """The colour signature many generators share: boosted saturation and a slight colour cast.

    Unlike the periodic traces, it survives the benchmark's downscaling, so a detector evaluated on
    resized inputs has something to find.
    """
    grey = image.mean(axis=-1, keepdims=True)
    boosted = grey + (image - grey) * rng.uniform(*saturation)
    return boosted + tint * rng.uniform(0.7, 1.3)


def _transposed_conv_upsample(image: np.ndarray, factor: int, strength: float) -> np.ndarray:
    """Upsample by ``factor`` like a strided transposed convolution with uneven kernel overlap.

    The output pixels inside each ``factor x factor`` cell receive different kernel taps, which shows
    up as a multiplicative periodic pattern (a checkerboard for factor 2).
    """
    up = np.repeat(np.repeat(image, factor, axis=0), factor, axis=1)
    up = _blur(up, 0.5 * factor)  # the learned kernel smooths most of the blockiness away...
    phase = np.indices((factor, factor)).sum(axis=0) % 2 * 2.0 - 1.0  # ...but not the uneven overlap
    pattern = np.tile(phase, (image.shape[0], image.shape[1]))
    return up * (1 + strength * pattern[..., None])


# ------------------------------------------------------------------------------------- generators
def _real(
    rng: np.random.Generator, h: int, w: int, palette: np.ndarray = _PALETTE_MAIN, read: float = 2.0
) -> np.ndarray:
    return _sensor_noise(rng, _content(rng, h, w, palette), read=read, shot=rng.uniform(0.02, 0.06))


_TINT_MAIN = np.array([10.0, 2.0, -8.0])
_TINT_HOLDOUT = np.array([6.0, 4.0, -6.0])


def _gen_a(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    small = _blur(_content(rng, h // 2, w // 2, _PALETTE_MAIN), rng.uniform(0.5, 0.9))
    image = _transposed_conv_upsample(small, 2, strength=rng.uniform(0.10, 0.15))
    return _generator_look(rng, image, (1.4, 1.8), _TINT_MAIN)


_GEN_B_TILE = np.random.default_rng(1234).normal(0, 1, (4, 4, 1))


def _gen_b(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    image = _blur(_content(rng, h, w, _PALETTE_MAIN), rng.uniform(0.9, 1.3))
    pattern = np.tile(_GEN_B_TILE, (h // 4 + 1, w // 4 + 1, 1))[:h, :w]
    return _generator_look(rng, image + pattern * rng.uniform(6.0, 10.0), (1.4, 1.8), _TINT_MAIN)


def _holdout_real(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    return _real(rng, h, w, _PALETTE_HOLDOUT, read=3.5)


def _holdout_fake(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    small = _content(rng, -(-h // 3), -(-w // 3), _PALETTE_HOLDOUT)
    zoom = ndimage.zoom(small, (3, 3, 1), order=1)[:h, :w]  # bilinear 3x upsampling
    stripes = np.cos(2 * np.pi * np.arange(w) / 3)[None, :, None]
    image = _blur(zoom, 0.4) * (1 + rng.uniform(0.07, 0.10) * stripes)
    return _generator_look(rng, image, (1.25, 1.6), _TINT_HOLDOUT)


# Folder -> (media_type, generator_family, renderer, probability of JPEG, JPEG quality range)
_Spec = tuple[str, str | None, Callable[[np.random.Generator, int, int], np.ndarray], float, tuple[int, int]]
_SETS: dict[str, dict[str, _Spec]] = {
    "train": {
        "real": ("real", None, _real, 0.75, (85, 95)),
        "fake_gen_a": ("synthetic", "gan-transposed-conv-x2", _gen_a, 0.3, (90, 97)),
        "fake_gen_b": ("synthetic", "latent-diffusion-period4", _gen_b, 0.3, (90, 97)),
    },
    "holdout": {
        "real_holdout": ("real", None, _holdout_real, 0.75, (75, 88)),
        "fake_holdout": ("synthetic", "bilinear-x3-stripes", _holdout_fake, 0.4, (88, 96)),
    },
}


# ---------------------------------------------------------------------------------------- writing
def write_demo_images(
    root: str | Path, n_per_class: int = 60, size: tuple[int, int] = (96, 128), seed: int = 0, generators: int = 2
) -> Path:
    """Write the demo training set under ``root`` and return its dataset YAML.

    ``n_per_class`` real images and ``n_per_class`` fake images (split over ``generators`` (1 or 2)
    fake folders). Image sizes vary between ``size`` and ``size + 32`` (H, W). The YAML is
    ``root/demo_image.yaml``; nothing is rewritten when it already records the same parameters and
    all files exist.
    """
    if generators not in (1, 2):
        raise ValueError(f"generators must be 1 or 2, got {generators}")
    folders = ["real", "fake_gen_a", "fake_gen_b"][: 1 + generators]
    counts = {"real": n_per_class}
    for i, folder in enumerate(folders[1:]):
        counts[folder] = n_per_class // generators + (1 if i < n_per_class % generators else 0)
    return _write_set(Path(root), "train", counts, size, seed)


def write_holdout_images(
    root: str | Path, n_per_class: int = 40, size: tuple[int, int] = (96, 128), seed: int = 1
) -> Path:
    """Write a set with an unseen fingerprint and palette (see module docstring); returns its YAML,
    ``root/holdout_image.yaml``."""
    return _write_set(Path(root), "holdout", {"real_holdout": n_per_class, "fake_holdout": n_per_class}, size, seed)


def _write_set(root: Path, kind: str, counts: dict[str, int], size: tuple[int, int], seed: int) -> Path:
    if min(counts.values()) < 1 or min(size) < 16:
        raise ValueError(f"need at least one image per folder and sizes >= 16, got {counts}, {size}")
    yaml_path = root / YAML_NAMES[kind]
    params = {"kind": kind, "version": DEMO_VERSION, "counts": counts, "size": list(size), "seed": seed}
    if _up_to_date(yaml_path, params):
        return yaml_path

    datasets = []
    for folder_index, (folder, count) in enumerate(counts.items()):
        media_type, family, render, p_jpeg, quality = _SETS[kind][folder]
        out_dir = root / folder
        out_dir.mkdir(parents=True, exist_ok=True)
        # Stale files from other parameters would join the dataset; remove only files we named.
        for stale in out_dir.glob(f"{folder}_[0-9][0-9][0-9][0-9].*"):
            if stale.suffix in (".png", ".jpg"):
                stale.unlink()
        for i in range(count):
            rng = np.random.default_rng([seed, DEMO_VERSION, folder_index, i, len(kind)])
            h = size[0] + 2 * int(rng.integers(0, 17))  # even sizes: the x2 generator needs them
            w = size[1] + 2 * int(rng.integers(0, 17))
            pixels = np.clip(np.round(render(rng, h, w)), 0, 255).astype(np.uint8)
            img = Image.fromarray(pixels, mode="RGB")
            if rng.random() < p_jpeg:
                with atomic_path(out_dir / f"{folder}_{i:04d}.jpg") as tmp:
                    img.save(tmp, format="JPEG", quality=int(rng.integers(quality[0], quality[1] + 1)))
            else:
                with atomic_path(out_dir / f"{folder}_{i:04d}.png") as tmp:
                    img.save(tmp, format="PNG")
        datasets.append(
            {
                "name": f"demo_{folder}", "path": folder, "modality": "image", "media_type": media_type,
                "source_format": "jpg+png", "generator_family": family, "content_category": "synthetic-scenes",
                "notes": f"demo data ({kind}) written by detectors.image.demo",
            }
        )  # fmt: skip
    return write_demo_yaml(yaml_path, params, datasets)


def _up_to_date(yaml_path: Path, params: dict[str, Any]) -> bool:
    if not recorded_params_match(yaml_path, params):
        return False
    root = yaml_path.parent
    return all(
        sum(1 for f in (root / folder).glob(f"{folder}_[0-9][0-9][0-9][0-9].*") if f.suffix in (".png", ".jpg")) == n
        for folder, n in params["counts"].items()
    )


def main(argv: list[str] | None = None) -> None:
    parser = demo_argument_parser(
        "python -m detectors.image.demo",
        __doc__.splitlines()[0],
        n_per_class=60,
        holdout_size="2/3 as many images per class as the demo set",
    )
    parser.add_argument("--n", type=positive_int, default=None, help="deprecated spelling of --n-per-class")
    args = parser.parse_args(argv)
    n_per_class = args.n_per_class
    if args.n is not None:
        given = sys.argv[1:] if argv is None else argv
        if any(arg == "--n-per-class" or arg.startswith("--n-per-class=") for arg in given):
            parser.error("give --n-per-class only (--n is its deprecated spelling)")
        print("warning: --n is deprecated; use --n-per-class", file=sys.stderr)
        n_per_class = args.n
    # One fake image cannot be split over two generators.
    generators = 1 if n_per_class == 1 else 2
    print(write_demo_images(args.out_dir, n_per_class=n_per_class, seed=args.seed, generators=generators))
    if args.holdout:
        print(write_holdout_images(args.out_dir, n_per_class=max(1, n_per_class * 2 // 3), seed=args.seed + 1))


if __name__ == "__main__":
    main()
