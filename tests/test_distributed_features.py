"""Under DDP the data stage's feature extraction gives each item to exactly one rank: with two gloo
processes every ReStraV video goes through the backbone once, and both ranks end with all features."""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def _rank_main(rank: int, world: int, port: int, backbone: str, paths: list[str], cache: str, out: str) -> None:
    """Extract with a feature cache, then without one; save what this rank embedded and got."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        from detectors.registry import create_detector
        from detectors.video.sampling import FrameSampler

        detector = create_detector("restrav", {"backbone": {"name": backbone}, "image_size": 28})
        frames: list[int] = []
        detector.backbone.model.register_forward_hook(
            lambda module, args, output: frames.append(output.last_hidden_state.shape[0])
        )
        results = {}
        for name, cache_dir in (("cached", Path(cache)), ("uncached", None)):
            frames.clear()
            extraction = detector.feature_extraction(FrameSampler("benchmark", 8), cache_dir=cache_dir, num_workers=0)
            features, valid = extraction.run(paths)
            results[name] = {"frames_embedded": sum(frames), "features": features, "valid": valid}
        torch.save(results, Path(out) / f"{rank}.pt")
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    import socket

    with socket.socket() as handle:
        handle.bind(("127.0.0.1", 0))
        return handle.getsockname()[1]


def test_each_video_is_embedded_by_one_rank(tmp_path, tiny_dinov2):
    from detectors.video.demo import write_mp4

    paths = []
    for index in range(5):
        path = tmp_path / f"v{index}.mp4"
        write_mp4(
            path,
            torch.randint(0, 256, (10, 3, 32, 32), generator=torch.Generator().manual_seed(index), dtype=torch.uint8),
            fps=10,
        )
        paths.append(str(path))
    mp.spawn(
        _rank_main,
        args=(2, _free_port(), str(tiny_dinov2), paths, str(tmp_path / "cache"), str(tmp_path)),
        nprocs=2,
        join=True,
    )
    ranks = [torch.load(tmp_path / f"{rank}.pt") for rank in range(2)]
    for name in ("cached", "uncached"):  # with a feature cache and without one
        # 8 frames per video: every video through the backbone exactly once over both ranks (3 + 2)
        assert sorted(rank[name]["frames_embedded"] for rank in ranks) == [2 * 8, 3 * 8], name
        assert all(rank[name]["valid"].all() for rank in ranks)
        torch.testing.assert_close(ranks[0][name]["features"], ranks[1][name]["features"])
    torch.testing.assert_close(ranks[0]["cached"]["features"], ranks[0]["uncached"]["features"])


def test_dataset_balanced_sampling_keeps_its_shares_on_every_rank():
    """Lightning hands each DDP rank a slice of the weighted sampler's draws (DistributedSamplerWrapper):
    every rank sees each dataset at its configured share, not at its size."""
    from collections import Counter

    from lightning.fabric.utilities.distributed import DistributedSamplerWrapper

    from detectors.data.catalog import MediaItem, balanced_sample_weights
    from detectors.data.datamodule import EpochSeededSampler

    items = (
        [MediaItem(f"r{i}.png", 0, "real", "big-real", "image") for i in range(300)]
        + [MediaItem(f"a{i}.png", 1, "synthetic", "small-fake", "image") for i in range(20)]
        + [MediaItem(f"b{i}.png", 1, "synthetic", "other-fake", "image", weight=3.0) for i in range(80)]
    )
    sampler = EpochSeededSampler(balanced_sample_weights(items), num_samples=40_000, seed=0)
    expected = {"big-real": 0.5, "small-fake": 0.5 * 1 / 4, "other-fake": 0.5 * 3 / 4}
    for rank in range(2):
        shard = DistributedSamplerWrapper(sampler, num_replicas=2, rank=rank, shuffle=False)
        counts = Counter(items[index].dataset for index in shard)
        total = sum(counts.values())
        assert total == 20_000
        for dataset, share in expected.items():
            assert abs(counts[dataset] / total - share) < 0.01, (rank, dataset, counts[dataset] / total)
