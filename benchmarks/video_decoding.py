"""Decoding throughput: decord vs PyAV, and the frame cache (npy / zstd) vs decoding.

Run from the repository root: ``python -m benchmarks.video_decoding [--work DIR] [--repeats N]``.
Uses the demo clips (64 x 80, 48 frames) and a larger 256 x 256 clip generated here, one decoding
thread (as in DataLoader workers).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Callable

import torch

from detectors.video.cache import FrameCache
from detectors.video.demo import write_demo_videos, write_mp4
from detectors.video.io import probe_video, read_frames, read_video_frames
from detectors.video.sampling import FrameSampler


def _best_of(repeats: int, fn: Callable[[], int]) -> tuple[float, int]:
    """Fastest of ``repeats`` runs (seconds) and the number of frames one run produced."""
    best, frames = float("inf"), 0
    for _ in range(repeats):
        start = time.perf_counter()
        frames = fn()
        best = min(best, time.perf_counter() - start)
    return best, frames


def _decode_all(paths: list[Path], backend: str) -> Callable[[], int]:
    def run() -> int:
        total = 0
        for path in paths:
            count = probe_video(path, backend=backend).num_frames
            total += len(read_frames(path, list(range(count)), backend=backend))
        return total

    return run


def _large_clip(work: Path, frames: int = 240) -> Path:
    path = work / "large_256.mp4"
    if not path.is_file():
        generator = torch.Generator().manual_seed(0)
        base = torch.rand(3, 320, 320, generator=generator)
        # A panning view of a smooth random scene: realistic motion for the codec.
        base = torch.nn.functional.avg_pool2d(base[None], 5, 1, 2)[0]
        clip = torch.stack([base[:, 16 + t // 8 : 272 + t // 8, t // 4 : 256 + t // 4] for t in range(frames)])
        write_mp4(path, clip, fps=30)
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=None, help="folder for the clips (default: a temp dir)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)

    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        demo_yaml = write_demo_videos(work)
        demo = sorted((demo_yaml.parent / "demo_video").rglob("*.mp4"))
        large = [_large_clip(work)]

        print(f"{'clip set':<28}{'decord fps':>12}{'pyav fps':>12}{'decord/pyav':>13}")
        for name, paths in ((f"demo 64x80 ({len(demo)} clips)", demo), ("256x256, 240 frames", large)):
            rates = {}
            for backend in ("decord", "pyav"):
                seconds, frames = _best_of(args.repeats, _decode_all(paths, backend))
                rates[backend] = frames / seconds
            print(f"{name:<28}{rates['decord']:>12.0f}{rates['pyav']:>12.0f}{rates['decord'] / rates['pyav']:>13.2f}")

        print()
        print("ReStraV clip (window, 24 frames, 224x224 bicubic stretch) from the 256x256 clip:")
        sampler, size = FrameSampler("window", 24), (224, 224)
        options = {"resize_mode": "stretch"}
        decode_s, _ = _best_of(args.repeats, lambda: len(read_video_frames(large[0], sampler, size, **options)))
        print(f"  decode + resize            {decode_s * 1000:8.1f} ms")
        for compress in ("none", "zstd"):
            cache = FrameCache(work / f"cache_{compress}", compress=compress)
            cache.get_or_decode(large[0], sampler, size, **options)  # fill
            read_s, _ = _best_of(
                args.repeats, lambda cache=cache: len(cache.get_or_decode(large[0], sampler, size, **options))
            )
            entry = cache.entry_path(cache.key(large[0], sampler, size, **options))
            print(
                f"  cache read ({compress:<4})          {read_s * 1000:8.1f} ms   "
                f"{decode_s / read_s:6.1f}x faster than decoding   entry {entry.stat().st_size / 1e6:.2f} MB"
            )


if __name__ == "__main__":
    main()
