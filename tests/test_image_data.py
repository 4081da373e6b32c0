"""Image decoding, transforms, MediaDataset/collate_skip and the demo image data."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch
from scipy import ndimage
from sklearn.metrics import roc_auc_score
from torch.utils.data import DataLoader
from torchvision.transforms import v2

from detectors.data.catalog import MediaItem, load_items
from detectors.data.dataset import MediaDataset, classification_target, collate_skip, is_empty_batch
from detectors.errors import MediaError
from detectors.image.demo import write_demo_images, write_holdout_images
from detectors.image.io import load_image
from detectors.image.transforms import (
    DISTORTION_LEVELS,
    ColourContrast,
    ColourSaturation,
    GaussianBlurLevel,
    GaussianNoiseColour,
    JPEGBlock,
    NativeCrop,
    ResizeCrop,
    RobustnessChain,
    build_eval_transform,
    build_train_transform,
)

RNG = np.random.default_rng(0)


def random_rgb(h: int, w: int) -> np.ndarray:
    return RNG.integers(0, 256, (h, w, 3), dtype=np.uint8)


def save(img: PIL.Image.Image, path: Path, **kwargs) -> Path:
    img.save(path, **kwargs)
    return path


# ----------------------------------------------------------------------------------------- decoding
def test_load_image_modes_match_pil_rgb(tmp_path: Path) -> None:
    rgb = random_rgb(20, 30)
    t = load_image(save(PIL.Image.fromarray(rgb), tmp_path / "a.png"))
    assert t.dtype == torch.uint8 and t.shape == (3, 20, 30)
    assert torch.equal(t, torch.from_numpy(rgb).permute(2, 0, 1))

    rgba = np.concatenate([rgb, RNG.integers(0, 256, (20, 30, 1), dtype=np.uint8)], axis=2)
    t = load_image(save(PIL.Image.fromarray(rgba, "RGBA"), tmp_path / "b.png"))
    assert torch.equal(t, torch.from_numpy(rgb).permute(2, 0, 1))  # alpha dropped, like convert("RGB")

    grey = rgb[..., 0]
    t = load_image(save(PIL.Image.fromarray(grey, "L"), tmp_path / "c.png"))
    assert torch.equal(t, torch.from_numpy(np.stack([grey] * 3)))

    palette = PIL.Image.fromarray(rgb).quantize(16)
    path = save(palette, tmp_path / "d.png", transparency=0)
    with PIL.Image.open(path) as img:
        assert img.mode == "P" and "transparency" in img.info
        expected = np.array(palette.convert("RGB"))
    assert torch.equal(load_image(path), torch.from_numpy(expected).permute(2, 0, 1))

    bits = PIL.Image.fromarray(grey > 127)
    t = load_image(save(bits, tmp_path / "e.png"))
    assert torch.equal(t[0], torch.from_numpy(np.where(grey > 127, 255, 0).astype(np.uint8)))

    cmyk = PIL.Image.fromarray(rgb).convert("CMYK")
    t = load_image(save(cmyk, tmp_path / "f.tif"))
    assert torch.equal(t, torch.from_numpy(np.array(cmyk.convert("RGB"))).permute(2, 0, 1))


def test_sixteen_bit_is_rescaled_not_clipped(tmp_path: Path) -> None:
    values = np.linspace(0, 65535, 24 * 16).reshape(24, 16).astype(np.uint16)
    t = load_image(save(PIL.Image.fromarray(values), tmp_path / "g16.png"))
    expected = np.floor(values / 257.0 + 0.5).astype(np.uint8)
    assert torch.equal(t[1], torch.from_numpy(expected)) and t[1].max() == 255 and (t[1] == 255).float().mean() < 0.01


def test_exif_orientation_is_not_applied(tmp_path: Path) -> None:
    exif = PIL.Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW" on display
    path = save(PIL.Image.fromarray(random_rgb(20, 40)), tmp_path / "o.jpg", exif=exif)
    assert load_image(path).shape == (3, 20, 40)


def test_decoding_errors_name_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    good = save(PIL.Image.fromarray(random_rgb(300, 300)), tmp_path / "good.jpg", quality=95)
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "text.png").write_text("not an image at all")
    (tmp_path / "cut.jpg").write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    cases = {
        "empty.png": "empty file",
        "text.png": "not an image",
        "cut.jpg": "truncated or corrupt",
        "missing.png": "file not found",
    }
    for name, phrase in cases.items():
        with pytest.raises(MediaError, match=phrase) as info:
            load_image(tmp_path / name)
        assert info.value.path == str(tmp_path / name)
    with pytest.raises(MediaError, match="too large"):
        load_image(good, max_pixels=300 * 299)
    # PIL's own bomb guard (open raises/warns) also becomes a MediaError, not a warning.
    monkeypatch.setattr(PIL.Image, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(MediaError, match="too large"):
        load_image(good)


# --------------------------------------------------------------------------------------- transforms
def test_distortion_tables_exact() -> None:
    assert DISTORTION_LEVELS == {
        "CS": (0.4, 0.3, 0.2, 0.1, 0.0),
        "CC": (0.85, 0.725, 0.6, 0.475, 0.35),
        "GNC": (0.001, 0.002, 0.005, 0.01, 0.05),
        "GB": (7, 9, 13, 17, 21),
        "JPEG": (2, 3, 4, 5, 6),
    }
    with pytest.raises(ValueError):
        ColourSaturation(6)


def test_colour_distortions_against_formulas() -> None:
    x = torch.from_numpy(random_rgb(16, 16)).permute(2, 0, 1).contiguous()
    xf = x.double()
    grey = 0.2989 * xf[0] + 0.587 * xf[1] + 0.114 * xf[2]
    for level, factor in enumerate(DISTORTION_LEVELS["CS"], start=1):
        expected = (factor * xf + (1 - factor) * grey).clamp(0, 255)
        # torchvision truncates the grey image and the blend to uint8: the output is at most 2 below.
        gap = expected - ColourSaturation(level)(x).double()
        assert gap.min() >= -1e-3 and gap.max() < 2
    out = ColourSaturation(5)(x)
    assert torch.equal(out[0], out[1]) and torch.equal(out[1], out[2])
    for level, factor in enumerate(DISTORTION_LEVELS["CC"], start=1):
        expected = (factor * xf + (1 - factor) * grey.floor().mean()).clamp(0, 255)
        gap = expected - ColourContrast(level)(x).double()
        assert gap.min() >= -1e-3 and gap.max() < 2
    assert torch.equal(ColourContrast(0)(x), x) and torch.equal(GaussianNoiseColour(0)(x), x)


def test_noise_variance_matches_table() -> None:
    flat = torch.full((3, 128, 128), 128, dtype=torch.uint8)
    torch.manual_seed(0)
    for level, variance in enumerate(DISTORTION_LEVELS["GNC"][:4], start=1):
        residual = (GaussianNoiseColour(level)(flat).double() - 128) / 255
        assert residual.var().item() == pytest.approx(variance, rel=0.06)
        assert abs(residual.mean().item()) < 0.01


def test_blur_and_block_distortions() -> None:
    impulse = torch.zeros((3, 41, 41), dtype=torch.uint8)
    impulse[:, 20, 20] = 255
    for level, kernel in enumerate(DISTORTION_LEVELS["GB"], start=1):
        sigma = kernel / 6
        taps = np.exp(-0.5 * (np.arange(kernel) - kernel // 2) ** 2 / sigma**2)
        taps /= taps.sum()
        expected = np.zeros((41, 41))
        half = kernel // 2
        expected[20 - half : 21 + half, 20 - half : 21 + half] = 255 * np.outer(taps, taps)
        out = GaussianBlurLevel(level)(impulse)[0].double().numpy()
        assert np.abs(out - expected).max() <= 1.0

    x = torch.from_numpy(random_rgb(24, 30)).permute(2, 0, 1).contiguous()
    for level, factor in enumerate(DISTORTION_LEVELS["JPEG"], start=1):
        out = JPEGBlock(level)(x)
        assert out.shape == x.shape and not torch.equal(out, x)
        if 24 % factor == 0 and 30 % factor == 0:  # nearest upsampling -> constant factor x factor blocks
            blocks = out.reshape(3, 24 // factor, factor, 30 // factor, factor)
            assert (blocks == blocks[:, :, :1, :, :1]).all()


def test_level_range_samples_every_level() -> None:
    x = torch.from_numpy(random_rgb(8, 8)).permute(2, 0, 1).contiguous()
    torch.manual_seed(0)
    t = ColourSaturation((0, 2))
    outputs = {tuple(t(x).flatten().tolist()) for _ in range(60)}
    assert outputs == {tuple(x.flatten().tolist())} | {
        tuple(ColourSaturation(level)(x).flatten().tolist()) for level in (1, 2)
    }


def test_native_crop_never_downscales_and_upscales_small() -> None:
    big = torch.from_numpy(random_rgb(150, 200)).permute(2, 0, 1).contiguous()
    torch.manual_seed(1)
    origins = set()
    for _ in range(10):
        out = NativeCrop(64)(big)
        hits = [
            (t, left)
            for t in range(150 - 63)
            for left in range(200 - 63)
            if torch.equal(big[:, t : t + 64, left : left + 64], out)
        ]
        assert len(hits) == 1
        origins.add(hits[0])
    assert len(origins) > 1  # random position
    assert torch.equal(NativeCrop(64, train=False)(big), big[:, 43:107, 68:132])

    small = torch.from_numpy(random_rgb(40, 50)).permute(2, 0, 1).contiguous()
    out = NativeCrop(64, train=False)(small)
    assert out.shape == (3, 64, 64)
    reference = torch.nn.functional.interpolate(
        small[None].float(), size=(64, 80), mode="bicubic", antialias=True, align_corners=False
    )
    reference = reference.round().clamp(0, 255)[0, :, :, 8:72]
    # torchvision's uint8 bicubic kernel differs from the float one by a few levels at sharp edges.
    diff = (out.float() - reference).abs()
    assert diff.mean() < 0.5 and diff.quantile(0.99) <= 4

    resized = ResizeCrop(64, train=False)(big)
    reference = torch.nn.functional.interpolate(
        big[None].float(), size=(64, 85), mode="bilinear", antialias=True, align_corners=False
    )
    assert (resized.float() - reference.round()[0, :, :, 10:74]).abs().max() <= 1


def test_train_and_eval_pipelines_shapes() -> None:
    x = torch.from_numpy(random_rgb(90, 120)).permute(2, 0, 1).contiguous()
    for crop in ("native", "resize"):
        for level in range(4):
            out = build_train_transform(64, crop=crop, augment_level=level)(x)
            assert out.shape == (3, 64, 64) and out.dtype == torch.uint8
        assert build_eval_transform(64, crop=crop)(x).shape == (3, 64, 64)
    assert build_eval_transform(48, crop="benchmark")(x).shape == (3, 48, 48)
    with pytest.raises(ValueError):
        build_train_transform(64, augment_level=4)


def test_clip_gets_one_parameter_draw_for_all_frames() -> None:
    base = torch.from_numpy(RNG.integers(0, 200, (80, 100, 3), dtype=np.uint8)).permute(2, 0, 1)
    clip = torch.stack([base + t for t in range(6)])  # frame t = frame 0 + t (no overflow)
    no_noise = v2.Compose(
        [
            NativeCrop(48),
            v2.RandomHorizontalFlip(0.5),
            v2.RandomVerticalFlip(0.5),
            ColourSaturation((0, 2)),
            GaussianBlurLevel((0, 2)),
        ]
    )
    same = torch.stack([base] * 4)
    for seed in range(8):
        torch.manual_seed(seed)
        out = build_train_transform(48, augment_level=1)(clip).int()
        assert out.shape == (6, 3, 48, 48)
        for t in range(6):
            assert torch.equal(out[t] - out[0], torch.full_like(out[0], t))  # same crop + flips on every frame
        torch.manual_seed(seed)
        out = no_noise(same)
        assert all(torch.equal(out[0], out[t]) for t in range(4))  # same distortion level on every frame


def test_robustness_chain_sizes_and_changes_pixels() -> None:
    # the benchmark scales down (each side to max(256, side / 2)) and back up: the size never changes
    big = torch.from_numpy(random_rgb(400, 600)).permute(2, 0, 1).contiguous()
    out = RobustnessChain()(big)
    assert out.shape == (3, 400, 600) and out.dtype == torch.uint8
    large = PIL.Image.fromarray(random_rgb(800, 600))
    assert RobustnessChain()(large).size == (600, 800)
    smooth = torch.from_numpy(ndimage.gaussian_filter(random_rgb(200, 300).astype(float), (2, 2, 0)).astype(np.uint8))
    smooth = smooth.permute(2, 0, 1).contiguous()
    out = RobustnessChain()(smooth)
    assert out.shape == smooth.shape  # shorter side already < 256: no resize
    diff = (out.float() - smooth.float()).abs()
    assert diff.mean() > 0.3 and diff.mean() < 20
    assert build_eval_transform(64, robustness=True)(big).shape == (3, 64, 64)


# ------------------------------------------------------------------------------------------ dataset
def test_media_dataset_skips_unreadable(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    good = save(PIL.Image.fromarray(random_rgb(40, 40)), tmp_path / "good.png")
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"garbage")
    items = [
        MediaItem(str(good), 1, "semisynthetic", "ds_b", "image"),
        MediaItem(str(bad), 0, "real", "ds_a", "image"),
        MediaItem(str(good), 0, "real", "ds_a", "image"),
    ]
    ds = MediaDataset(items, load_image, build_eval_transform(32))
    assert ds.dataset_names == ["ds_a", "ds_b"]
    sample = ds[0]
    assert sample["x"].shape == (3, 32, 32) and sample["label"].item() == 1 and sample["class_index"].item() == 2
    assert sample["dataset_id"] == 1 and sample["index"] == 0 and "target" not in sample
    # the classifier's target: the class index for 3-class heads, the binary label otherwise
    assert classification_target(sample["label"], sample["class_index"], 3).item() == 2
    assert classification_target(sample["label"], sample["class_index"], 2).item() == 1
    with caplog.at_level(logging.WARNING):
        assert ds[1] == {"unreadable": str(bad)} and ds[1] == {"unreadable": str(bad)}
    assert sum(str(bad) in r.getMessage() for r in caplog.records) == 1

    def explode(path: str):
        raise RuntimeError("decoder crashed")

    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert MediaDataset(items[:1], explode)[0] == {"unreadable": str(good)}
    assert "decoder crashed" in caplog.text and str(good) in caplog.text

    batch = next(iter(DataLoader(ds, batch_size=3, collate_fn=collate_skip)))
    assert batch["skipped"] == 1 and batch["x"].shape == (2, 3, 32, 32) and batch["skipped_paths"] == [str(bad)]
    assert batch["index"].tolist() == [0, 2] and batch["dataset_id"].tolist() == [1, 0]
    empty = collate_skip([None, {"unreadable": "a.png"}])  # None: a dataset that does not name the file
    assert empty == {"skipped": 2, "skipped_paths": ["a.png"]} and is_empty_batch(empty)


# --------------------------------------------------------------------------------------------- demo
def periodic_energy(image: torch.Tensor, period: int) -> float:
    """Share of high-pass residual energy that repeats with ``period`` in both directions."""
    grey = image.double().mean(0).numpy()
    residual = grey - ndimage.uniform_filter(grey, 5)
    h, w = (residual.shape[0] // period) * period, (residual.shape[1] // period) * period
    cells = residual[:h, :w].reshape(h // period, period, w // period, period).mean(axis=(0, 2))
    return float(cells.var() / residual.var())


def test_demo_images(tmp_path: Path) -> None:
    yaml_path = write_demo_images(tmp_path / "demo", n_per_class=16, size=(64, 80), seed=0)
    items = load_items(yaml_path, modality="image")
    counts = {
        name: sum(it.dataset == name for it in items) for name in ("demo_real", "demo_fake_gen_a", "demo_fake_gen_b")
    }
    assert counts == {"demo_real": 16, "demo_fake_gen_a": 8, "demo_fake_gen_b": 8}
    suffixes = {Path(it.path).suffix for it in items}
    assert suffixes == {".png", ".jpg"}
    images = [load_image(it.path) for it in items]
    assert all(64 <= im.shape[1] <= 96 and 80 <= im.shape[2] <= 112 for im in images)
    labels = [it.label for it in items]
    auc = roc_auc_score(labels, [periodic_energy(im, 4) for im in images])
    assert auc > 0.9

    stamp = yaml_path.stat().st_mtime_ns
    first_file = Path(items[0].path).read_bytes()
    assert write_demo_images(tmp_path / "demo", n_per_class=16, size=(64, 80), seed=0) == yaml_path
    assert yaml_path.stat().st_mtime_ns == stamp
    write_demo_images(tmp_path / "demo", n_per_class=6, size=(64, 80), seed=0)
    assert len(load_items(yaml_path)) == 12
    write_demo_images(tmp_path / "again", n_per_class=16, size=(64, 80), seed=0)
    assert (tmp_path / "again" / Path(items[0].path).relative_to(tmp_path / "demo")).read_bytes() == first_file

    holdout = load_items(write_holdout_images(tmp_path / "holdout", n_per_class=10, size=(64, 80)), modality="image")
    assert sorted({it.dataset for it in holdout}) == ["demo_fake_holdout", "demo_real_holdout"] and len(holdout) == 20
    ho_images = [load_image(it.path) for it in holdout]
    ho_labels = [it.label for it in holdout]
    assert roc_auc_score(ho_labels, [periodic_energy(im, 3) for im in ho_images]) > 0.9
    # Its fingerprint differs from the training generators': the period-4 statistic does not find it.
    assert roc_auc_score(ho_labels, [periodic_energy(im, 4) for im in ho_images]) < 0.8


def test_demo_keeps_foreign_files(tmp_path: Path) -> None:
    mine = tmp_path / "real" / "my_photo.jpg"
    mine.parent.mkdir(parents=True)
    mine.write_bytes(b"precious")
    write_demo_images(tmp_path, n_per_class=2, size=(32, 32), generators=1)
    assert mine.read_bytes() == b"precious"
    assert sorted(p.name for p in (tmp_path / "fake_gen_a").iterdir())[0].startswith("fake_gen_a_0000")


def test_load_image_crop_equals_native_crop_of_the_full_image(tmp_path):
    from detectors.image.io import load_image, load_image_crop
    from detectors.image.transforms import NativeCrop

    rng = np.random.default_rng(0)
    for name, shape in (("large.png", (90, 130, 3)), ("small.png", (40, 50, 3))):
        path = tmp_path / name
        PIL.Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(path)
        expected = NativeCrop(64, train=False)(load_image(path))
        assert torch.equal(NativeCrop(64, train=False)(load_image_crop(path, 64, train=False)), expected)
        window = load_image_crop(path, 64, train=True)
        if shape[0] >= 64:
            full = load_image(path)
            # the random window is a pixel-exact window of the original somewhere
            found = any(
                torch.equal(full[:, t : t + 64, left : left + 64], window)
                for t in range(shape[0] - 63)
                for left in range(shape[1] - 63)
            )
            assert found
