"""ReStraV feature extraction throughput (videos/s): this pipeline vs a per-video loop, and the cache.

Run from the repository root: ``python -m benchmarks.restrav_features [--videos DIR] [--image-size 224]``.

- ``sequential``: what the official code does per video: decode one video in the main process, embed
  its frames in one backbone pass (``no_grad``), compute the 21 features, next video.
- ``pipeline``: the data stage's ``FeatureExtraction`` (``ReStraVDetector.feature_extraction``):
  DataLoader workers decode the next videos while the main process embeds the current one, in
  ``inference_mode``.
- ``cached``: the same extraction again with a filled ``FeatureCache`` (no decoding, no backbone).

All three use the same randomly initialised DINOv2-S/14 (the real ViT-S shape; no download), the same
frame rule (benchmark sampling, 24 frames at 12/s) and the same crop/resize. Videos: synthetic demo
clips of ``--video-size`` (default 360 x 640, 96 frames at 24 fps, so decoding costs what it costs on
real footage) unless ``--videos`` names a folder of mp4 files.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from detectors.registry import create_detector
from detectors.video.data import load_clip
from detectors.video.restrav import trajectory_features
from detectors.video.sampling import FrameSampler

DINOV2_SMALL = dict(
    hidden_size=384, num_hidden_layers=12, num_attention_heads=6, mlp_ratio=4, patch_size=14, image_size=518
)


def sequential(detector, paths: list[str], sampler: FrameSampler, size: int, device: torch.device) -> torch.Tensor:
    rows = []
    with torch.no_grad():
        for path in paths:
            clip = load_clip(path, sampler, (size, size)).to(device)
            rows.append(trajectory_features(detector.net.embed_frames(clip[None]))[0].cpu())
    return torch.stack(rows)


def main(argv: list[str] | None = None) -> None:
    from transformers import Dinov2Config, Dinov2Model

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=Path, help="folder of mp4 files (default: demo clips)")
    parser.add_argument("--num-videos", type=int, default=32)
    parser.add_argument(
        "--video-size",
        type=int,
        nargs=2,
        default=(360, 640),
        metavar=("H", "W"),
        help="size of the generated clips (the demo trains on 64 x 80)",
    )
    parser.add_argument("--video-frames", type=int, default=96, help="frames of the generated clips")
    parser.add_argument("--image-size", type=int, default=112)
    parser.add_argument("--batch-size", type=int, default=8, help="videos per backbone pass (pipeline)")
    parser.add_argument("--workers", type=int, default=2, help="decoding workers (pipeline)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if args.videos is None:
            from detectors.video.demo import write_demo_videos

            write_demo_videos(
                work / "videos",
                n_per_class=(args.num_videos + 1) // 2,
                num_frames=args.video_frames,
                size=tuple(args.video_size),
            )
            paths = sorted(str(p) for p in (work / "videos").rglob("*.mp4"))
        else:
            paths = sorted(str(p) for p in args.videos.rglob("*.mp4"))
        paths = paths[: args.num_videos]
        torch.manual_seed(0)
        Dinov2Model(Dinov2Config(**DINOV2_SMALL)).save_pretrained(work / "dinov2-small-random")
        detector = create_detector(
            "restrav", {"backbone": {"name": str(work / "dinov2-small-random")}, "image_size": args.image_size}
        ).eval()
        device = torch.device(args.device)
        sampler = FrameSampler("benchmark", 24, frame_rate=12.0)
        size = args.image_size
        print(
            f"{len(paths)} videos of {args.video_size[0]}x{args.video_size[1]}, DINOv2-S/14 (random) at {size} px, 24 frames each, device {device}, "
            f"{torch.get_num_threads()} torch threads"
        )

        detector.to(device)
        sequential(detector, paths[:2], sampler, size, device)  # warm-up (allocator, kernels)
        start = time.perf_counter()
        reference = sequential(detector, paths, sampler, size, device)
        t_seq = time.perf_counter() - start

        start = time.perf_counter()
        features, valid = detector.feature_extraction(
            sampler, batch_size=args.batch_size, num_workers=args.workers
        ).run(paths, device)
        t_pipe = time.perf_counter() - start
        assert bool(valid.all())
        difference = float((features - reference).abs().max())

        cached_extraction = detector.feature_extraction(
            sampler, cache_dir=work / "cache", batch_size=args.batch_size, num_workers=args.workers
        )
        cached_extraction.run(paths, device)
        start = time.perf_counter()
        cached, _ = cached_extraction.run(paths, device)
        t_cache = time.perf_counter() - start
        assert torch.equal(cached, features)

    n = len(paths)
    print(f"sequential (official-style loop): {n / t_seq:8.2f} videos/s")
    print(
        f"pipeline (batched, {args.workers} decode workers): {n / t_pipe:8.2f} videos/s   "
        f"x{t_seq / t_pipe:.2f} (goal >= 2)   max |feature diff| {difference:.1e}"
    )
    print(
        f"from the feature cache:            {n / t_cache:8.2f} videos/s   x{t_pipe / t_cache:.0f} vs pipeline "
        f"(goal >= 20)"
    )


if __name__ == "__main__":
    main()
