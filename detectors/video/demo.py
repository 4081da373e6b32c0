"""Tiny synthetic real/fake video dataset for tests, examples and smoke runs.

"Real" clips: a static textured scene filmed by a camera that moves smoothly (constant velocity
plus gentle acceleration, slow zoom) with a constant level of sensor noise. "Fake" clips: similar
scenes with the temporal artifacts generators are known for: objects that pop in and out,
brightness flicker, frame-to-frame jitter, "boiling" texture and sudden direction changes. Real clips
trace straight, evenly paced trajectories; fake ones do not, which is what ReStraV measures.

Fake clips also carry per-frame generator traces, visible in a single frame (what per-frame detectors
such as GenD see): a decoder's upsampling leaves the frames over-smooth (no fine texture), the
palette is biased (over-saturated and tinted) and there is almost no camera sensor noise.

``write_holdout_videos`` uses a different scene generator (stripes and blobs instead of shapes) and
different motion and artifacts, for "never seen" evaluation; its generator fingerprint is related
but not the same: over-smooth through low-resolution decoding instead of a blur, more saturated, a
yellow-green instead of a warm cast, and soft-edged, half-transparent popping objects (so the fakes
carry no sharp edges the real stripe scenes lack).

CLI: ``python -m detectors.video.demo OUT_DIR [--n-per-class 24] [--seed S] [--holdout] [--num-frames 48]
[--size H W] [--fps 24]``: writes ``OUT_DIR/demo_video.yaml`` (and ``OUT_DIR/holdout_video.yaml``).
"""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import torch
import torch.nn.functional as F
from torchvision.transforms.v2 import functional as v2f

from detectors.atomic import atomic_path
from detectors.data.demo_sets import demo_argument_parser, recorded_params_match, write_demo_yaml

DEMO_VERSION = 3  # 2: per-frame generator traces on fake clips; 3: hold-out traces point the same way


# --------------------------------------------------------------------------------------------
# Scenes: a canvas twice the frame size, so the camera can pan and zoom inside it.


def _smooth_noise(rng: np.random.Generator, height: int, width: int, cells: int) -> np.ndarray:
    """Low-frequency noise in about [-1, 1]: a coarse random grid upsampled bicubically."""
    grid = torch.from_numpy(rng.standard_normal((1, 1, cells, cells)).astype(np.float32))
    return F.interpolate(grid, size=(height, width), mode="bicubic", align_corners=False)[0, 0].numpy()


def _shapes_scene(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Gradient background, random rectangles and discs, fine static texture: [3, H, W] in [0, 1]."""
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    top, bottom = rng.uniform(0.1, 0.9, 3), rng.uniform(0.1, 0.9, 3)
    canvas = top[:, None, None] + (bottom - top)[:, None, None] * (ys / height)[None]
    for _ in range(rng.integers(8, 16)):
        colour = rng.uniform(0, 1, 3)[:, None, None]
        cy, cx = rng.uniform(0, height), rng.uniform(0, width)
        size = rng.uniform(0.05, 0.2) * min(height, width)
        if rng.random() < 0.5:
            mask = (np.abs(ys - cy) < size) & (np.abs(xs - cx) < size * rng.uniform(0.5, 2))
        else:
            mask = (ys - cy) ** 2 + (xs - cx) ** 2 < size**2
        canvas = np.where(mask[None], colour, canvas)
    canvas = canvas + 0.06 * rng.standard_normal((3, height, width))  # texture moves with the scene
    return np.clip(canvas, 0, 1).astype(np.float32)


def _stripes_scene(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Hold-out scenes: oriented sinusoidal stripes mixed with soft colour blobs."""
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    canvas = np.zeros((3, height, width), np.float32)
    for channel in range(3):
        angle, freq = rng.uniform(0, np.pi), rng.uniform(0.05, 0.25)
        phase = rng.uniform(0, 2 * np.pi)
        stripes = 0.5 + 0.3 * np.sin(freq * (xs * np.cos(angle) + ys * np.sin(angle)) + phase)
        canvas[channel] = stripes + 0.3 * _smooth_noise(rng, height, width, cells=5)
    canvas += 0.04 * rng.standard_normal((3, height, width))
    return np.clip(canvas, 0, 1).astype(np.float32)


# --------------------------------------------------------------------------------------------
# Camera: per-frame centre (in the canvas' [-1, 1] coordinates), zoom and rotation.


def _render(
    canvas: np.ndarray, centre: np.ndarray, zoom: np.ndarray, angle: np.ndarray, size: tuple[int, int]
) -> torch.Tensor:
    """Sample ``T`` views of the canvas: float [T, 3, H, W]."""
    height, width = size
    canvas_t = torch.from_numpy(canvas)[None]
    frames = len(centre)
    scale_x = zoom * width / canvas.shape[2]
    scale_y = zoom * height / canvas.shape[1]
    cos, sin = np.cos(angle), np.sin(angle)
    theta = np.zeros((frames, 2, 3), np.float32)
    theta[:, 0, 0], theta[:, 0, 1], theta[:, 0, 2] = scale_x * cos, -scale_y * sin, centre[:, 0]
    theta[:, 1, 0], theta[:, 1, 1], theta[:, 1, 2] = scale_x * sin, scale_y * cos, centre[:, 1]
    grid = F.affine_grid(torch.from_numpy(theta), [frames, 3, height, width], align_corners=False)
    return F.grid_sample(
        canvas_t.expand(frames, -1, -1, -1), grid, mode="bilinear", padding_mode="reflection", align_corners=False
    )


def _smooth_path(rng: np.random.Generator, frames: int, speed: float) -> tuple[np.ndarray, np.ndarray]:
    """Constant velocity plus a gentle constant acceleration, and a slow linear zoom."""
    t = np.linspace(0, 1, frames)[:, None]
    start = rng.uniform(-0.2, 0.2, 2)
    velocity = rng.normal(0, 1, 2)
    velocity *= speed / np.linalg.norm(velocity)
    acceleration = rng.normal(0, 0.1 * speed, 2)
    centre = start + velocity * t + 0.5 * acceleration * t**2
    zoom = rng.uniform(0.9, 1.1) * (1 + rng.uniform(-0.15, 0.15) * t[:, 0])
    return centre, zoom


def _erratic_path(rng: np.random.Generator, frames: int, speed: float, jitter: float) -> tuple[np.ndarray, np.ndarray]:
    """Velocity that switches direction abruptly a few times, plus per-frame jitter."""
    switches = np.sort(rng.choice(np.arange(4, frames - 4), size=rng.integers(2, 5), replace=False))
    velocity = np.zeros((frames, 2))
    current = rng.normal(0, 1, 2)
    for frame in range(frames):
        if frame in switches:
            current = rng.normal(0, 1, 2)
        velocity[frame] = current / np.linalg.norm(current) * speed / frames
    centre = rng.uniform(-0.2, 0.2, 2) + np.cumsum(velocity, axis=0)
    centre += rng.normal(0, jitter, (frames, 2))
    zoom = rng.uniform(0.9, 1.1) * (1 + rng.normal(0, jitter, frames))
    return np.clip(centre, -0.5, 0.5), zoom


def _real_clip(rng: np.random.Generator, frames: int, size: tuple[int, int], holdout: bool) -> torch.Tensor:
    height, width = size
    scene = (_stripes_scene if holdout else _shapes_scene)(rng, 2 * height, 2 * width)
    centre, zoom = _smooth_path(rng, frames, speed=rng.uniform(0.1, 0.3) if not holdout else rng.uniform(0.3, 0.5))
    # Hold-out cameras also roll slowly at a constant rate.
    angle = np.linspace(0, rng.uniform(-0.2, 0.2), frames) if holdout else np.zeros(frames)
    video = _render(scene, centre, zoom, angle, size)
    noise_level = rng.uniform(0.015, 0.03)  # one sensor, one noise level for the whole clip
    return video + noise_level * torch.randn(
        video.shape, generator=torch.Generator().manual_seed(int(rng.integers(2**31)))
    )


def _generator_fingerprint(rng: np.random.Generator, video: torch.Tensor, holdout: bool) -> torch.Tensor:
    """Per-frame traces of a video generator's decoder: over-smoothing, over-saturation and a colour tint.

    The hold-out generator's traces point the same way but are made differently: its decoder works at
    a third of the resolution and upsamples bilinearly (instead of a Gaussian blur at full resolution), its
    saturation boost is stronger and its palette is cast towards yellow-green instead of warm.
    """
    if holdout:
        height, width = video.shape[-2:]
        half = F.interpolate(video, scale_factor=1 / 3, mode="area")
        video = F.interpolate(half, size=(height, width), mode="bilinear", align_corners=False)
        saturation = rng.uniform(0.5, 0.8)
        tint = np.array([0.03, 0.03, -0.05])
    else:
        sigma = rng.uniform(1.1, 1.6)
        video = v2f.gaussian_blur(video, kernel_size=[5, 5], sigma=[sigma, sigma])
        saturation = rng.uniform(0.4, 0.7)
        tint = np.array([0.05, 0.0, -0.05])  # warm palette
    grey = video.mean(dim=1, keepdim=True)
    video = grey + (video - grey) * (1 + saturation)
    return video + torch.from_numpy((tint * rng.uniform(0.7, 1.3)).astype(np.float32))[None, :, None, None]


def _fake_clip(rng: np.random.Generator, frames: int, size: tuple[int, int], holdout: bool) -> torch.Tensor:
    height, width = size
    scene = (_stripes_scene if holdout else _shapes_scene)(rng, 2 * height, 2 * width)
    centre, zoom = _erratic_path(rng, frames, speed=rng.uniform(0.1, 0.3), jitter=rng.uniform(0.005, 0.02))
    video = _render(scene, centre, zoom, np.zeros(frames), size)

    # Brightness flicker: a per-frame gain.
    gain = 1 + rng.normal(0, rng.uniform(0.02, 0.06), frames)
    video = video * torch.from_numpy(gain.astype(np.float32))[:, None, None, None]
    # Texture boiling: low-frequency noise drawn afresh every frame.
    boil = rng.uniform(0.02, 0.06)
    video = video + boil * torch.from_numpy(
        np.stack([_smooth_noise(rng, height, width, cells=6) for _ in range(3 * frames)]).reshape(
            frames, 3, height, width
        )
    )
    # Objects that appear for a while and vanish (hold-out: they also change colour while present).
    ys, xs = np.mgrid[0:height, 0:width]
    for _ in range(rng.integers(1, 4)):
        first = int(rng.integers(0, frames - 4))
        last = int(rng.integers(first + 2, min(frames, first + frames // 2)))
        cy, cx, radius = rng.uniform(0, height), rng.uniform(0, width), rng.uniform(0.08, 0.2) * min(size)
        distance = np.sqrt((ys - cy) ** 2 + (xs - cx) ** 2)
        if holdout:  # soft-edged, half-transparent blobs: the hold-out generator paints no hard edges
            alpha = 0.7 / (1 + np.exp((distance - radius) / (0.25 * radius)))
        else:
            alpha = (distance < radius).astype(np.float64)
        alpha = torch.from_numpy(alpha.astype(np.float32))[None]
        colour = torch.from_numpy(rng.uniform(0, 1, 3).astype(np.float32))
        for frame in range(first, last):
            if holdout and frame > first:
                colour = torch.from_numpy(rng.uniform(0, 1, 3).astype(np.float32))
            video[frame] = alpha * colour[:, None, None] + (1 - alpha) * video[frame]
    video = _generator_fingerprint(rng, video, holdout)
    if holdout:
        # Temporal stutter: some frames are held for an extra frame (zero steps), others skipped.
        order = np.clip(np.arange(frames) + rng.integers(-1, 2, frames), 0, frames - 1)
        video = video[torch.from_numpy(np.maximum.accumulate(order))]
    noise_level = rng.uniform(0.0, 0.004)  # generated frames carry (almost) no sensor noise
    return video + noise_level * torch.randn(
        video.shape, generator=torch.Generator().manual_seed(int(rng.integers(2**31)))
    )


# --------------------------------------------------------------------------------------------
# Writing


def write_mp4(path: str | Path, frames: torch.Tensor, fps: int, crf: int = 18) -> None:
    """Encode ``[T, 3, H, W]`` frames (uint8, or float in [0, 1]) as an mp4, atomically.

    libx264 (yuv420p) when the size is even, MPEG-4 Part 2 otherwise (it accepts odd sizes).
    """
    if frames.is_floating_point():
        frames = (frames.clamp(0, 1) * 255).round().to(torch.uint8)
    array = frames.permute(0, 2, 3, 1).contiguous().numpy()
    height, width = array.shape[1:3]
    even = height % 2 == 0 and width % 2 == 0
    with atomic_path(path) as tmp:
        with av.open(str(tmp), "w", format="mp4") as container:
            stream = container.add_stream("libx264" if even else "mpeg4", rate=fps)
            stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
            stream.options = {"crf": str(crf)} if even else {"qscale": "2"}
            for image in array:
                for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)


def _write_dataset(
    root: str | Path,
    *,
    name: str,
    holdout: bool,
    n_per_class: int,
    num_frames: int,
    size: tuple[int, int],
    fps: int,
    seed: int,
) -> Path:
    root = Path(root)
    yaml_path = root / f"{name}.yaml"
    params = {
        "version": DEMO_VERSION,
        "holdout": holdout,
        "n_per_class": n_per_class,
        "num_frames": num_frames,
        "size": list(size),
        "fps": fps,
        "seed": seed,
    }
    folders = {"real": f"{name}/real", "fake": f"{name}/fake"}
    if recorded_params_match(yaml_path, params) and all(
        len(list((root / folder).glob("*.mp4"))) == n_per_class for folder in folders.values()
    ):
        return yaml_path  # already generated with these parameters

    rng = np.random.default_rng([seed, int(holdout)])
    entries = []
    for label, make_clip, media_type in (("real", _real_clip, "real"), ("fake", _fake_clip, "synthetic")):
        folder = root / folders[label]
        folder.mkdir(parents=True, exist_ok=True)
        for stale in folder.glob("*.mp4"):
            stale.unlink()
        for index in range(n_per_class):
            with torch.no_grad():
                clip = make_clip(rng, num_frames, size, holdout)
            write_mp4(folder / f"{label}_{index:03d}.mp4", clip, fps)
        entry = {
            "name": f"{name}-{label}",
            # Relative to the YAML (the catalog resolves it so): the set survives moving or renaming
            # its folder, e.g. a run directory holding it in demo_data/.
            "path": folders[label],
            "modality": "video",
            "media_type": media_type,
            "source_format": "mp4",
        }
        if label == "fake":
            entry["generator_family"] = "demo-holdout" if holdout else "demo"
        entry["notes"] = f"synthetic demo clips ({'hold-out ' if holdout else ''}{label}); see detectors/video/demo.py"
        entries.append(entry)
    # Earlier versions recorded the parameters beside the YAML; they now live in its demo: block.
    (root / f".{name}.params.json").unlink(missing_ok=True)
    return write_demo_yaml(yaml_path, params, entries)


def write_demo_videos(
    root: str | Path,
    n_per_class: int = 24,
    num_frames: int = 48,
    size: tuple[int, int] = (64, 80),
    fps: int = 24,
    seed: int = 0,
) -> Path:
    """Write real/fake demo mp4 clips under ``root/demo_video`` and return the dataset YAML path.

    The YAML has a ``demo:`` block (the parameters) and a ``datasets:`` list with the benchmark's
    dataset fields (``name``, ``path`` relative to the YAML, ``modality``, ``media_type``,
    ``source_format``, ...). Calling it again with the same arguments reuses the files.
    """
    return _write_dataset(
        root,
        name="demo_video",
        holdout=False,
        n_per_class=n_per_class,
        num_frames=num_frames,
        size=size,
        fps=fps,
        seed=seed,
    )


def write_holdout_videos(
    root: str | Path,
    n_per_class: int = 24,
    num_frames: int = 48,
    size: tuple[int, int] = (64, 80),
    fps: int = 24,
    seed: int = 1,
) -> Path:
    """Like :func:`write_demo_videos`, with a scene generator, camera motion and artifacts the demo
    set never shows (clips under ``root/holdout_video``, YAML ``root/holdout_video.yaml``)."""
    return _write_dataset(
        root,
        name="holdout_video",
        holdout=True,
        n_per_class=n_per_class,
        num_frames=num_frames,
        size=size,
        fps=fps,
        seed=seed,
    )


def main(argv: list[str] | None = None) -> None:
    parser = demo_argument_parser(
        "python -m detectors.video.demo",
        __doc__.splitlines()[0],
        n_per_class=24,
        holdout_size="as many clips as the demo set",
    )
    parser.add_argument("--num-frames", type=int, default=48)
    parser.add_argument("--size", type=int, nargs=2, default=(64, 80), metavar=("H", "W"))
    parser.add_argument("--fps", type=int, default=24)
    args = parser.parse_args(argv)
    common = dict(n_per_class=args.n_per_class, num_frames=args.num_frames, size=tuple(args.size), fps=args.fps)
    print(write_demo_videos(args.out_dir, seed=args.seed, **common))
    if args.holdout:
        print(write_holdout_videos(args.out_dir, seed=args.seed + 1, **common))


if __name__ == "__main__":
    main()
