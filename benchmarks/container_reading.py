"""Reading media from parquet shards and archives vs loose files; memory while streaming a shard;
DDP ReStraV feature extraction work per rank over videos in a tar.

``python -m benchmarks.container_reading`` runs all three:

1. **throughput**: the same JPEG images as loose files, one parquet shard (HF ``{bytes, path}``
   struct, row groups of 64) and one tar, read through ``MediaDataset`` + ``load_image`` by a
   DataLoader with 2 workers in a shuffled order (as training reads them), the containers listed
   first in this process as the catalogue lists them. Containers are timed on
   the first pass (members written into a fresh member cache) and on the next (cache warm); the
   ratio is media/s against the loose files' (goal >= 1.0).
2. **memory**: a child process streams every row of a shard 10x (``--groups``) larger than a row
   group through ``load_media`` (row-group reads, member cache) in shard order; its peak RSS growth
   over the RSS after imports, as a ratio of one row group's bytes and of the file's; a second child
   reads the whole file with ``pq.read_table`` as the baseline.
3. **ddp**: 2 gloo processes extract ReStraV features (random tiny DINOv2) of the videos of a tar;
   each rank counts the videos its backbone embedded (goal: 1/N of them each, every video once).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from PIL import Image


def write_images(folder: Path, count: int, size: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    files = []
    for index in range(count):
        base = rng.integers(0, 255, (size // 8, size // 8, 3), dtype=np.uint8)
        image = Image.fromarray(base).resize((size, size), Image.BICUBIC)
        path = folder / f"{index:05d}.jpg"
        image.save(path, quality=90)
        files.append(path)
    return files


def timed_pass(paths: list[str], workers: int, seed: int) -> float:
    from torch.utils.data import DataLoader

    from detectors.data.catalog import MediaItem
    from detectors.data.dataset import MediaDataset, collate_skip
    from detectors.image.io import load_image

    items = [MediaItem(p, 0, "real", "d", "image") for p in paths]
    generator = torch.Generator().manual_seed(seed)
    loader = DataLoader(
        MediaDataset(items, load_image),
        batch_size=16,
        num_workers=workers,
        shuffle=True,
        generator=generator,
        collate_fn=lambda b: collate_skip(b)["skipped"],
        persistent_workers=False,
    )
    start = time.perf_counter()
    skipped = sum(loader)
    elapsed = time.perf_counter() - start
    assert skipped == 0, f"{skipped} unreadable"
    return len(paths) / elapsed


def throughput(work: Path, count: int, size: int, workers: int, repeats: int) -> None:
    import tarfile

    from detectors.data.containers import MEMBER_CACHE_ENV, list_archive, list_parquet, member_ref, row_ref

    files = write_images(work / "loose", count, size)
    shard = work / "images.parquet"
    pq.write_table(
        pa.table({"image": [{"bytes": f.read_bytes(), "path": f.name} for f in files]}), shard, row_group_size=64
    )
    archive = work / "images.tar"
    with tarfile.open(archive, "w") as handle:
        for f in files:
            handle.add(f, arcname=f.name)
    # listed as the catalogue lists them, in this (the parent) process: workers inherit what listing
    # learnt (a plain tar's member index, pyarrow imported)
    rows, columns = list_parquet(shard, "image")
    members, problem = list_archive(archive, (".jpg",))
    assert problem is None and len(members) == len(rows) == count, (problem, len(members), len(rows))
    sources = {
        "loose": [str(f) for f in files],
        "parquet": [row_ref(shard, columns[0], row) for row, _ in rows],
        "tar": [member_ref(archive, name) for name in members],
    }
    timed_pass(sources["loose"], workers, 1)  # page cache warm for everyone
    rates: dict[str, list[float]] = {name: [] for name in sources}
    firsts = {}
    for name in ("parquet", "tar"):  # first pass: members written into a fresh member cache
        os.environ[MEMBER_CACHE_ENV] = str(work / f"member-cache-{name}")
        firsts[name] = timed_pass(sources[name], workers, 2)
    for repeat in range(repeats):  # alternated, best of each: the machine is shared
        for name, paths in sources.items():
            os.environ[MEMBER_CACHE_ENV] = str(work / f"member-cache-{name}")
            rates[name].append(timed_pass(paths, workers, 3 + repeat))
    loose = max(rates["loose"])
    print(f"throughput: {count} JPEG {size}x{size}, {workers} workers, shuffled, batch 16")
    print(f"  loose files   {loose:8.1f} media/s (best of {repeats} passes)")
    for name in ("parquet", "tar"):
        first, second = firsts[name], max(rates[name])
        print(
            f"  {name:<8} first pass {first:8.1f} media/s ({first / loose:.2f}x), "
            f"cache warm {second:8.1f} media/s ({second / loose:.2f}x)"
        )


def rss_child(mode: str, shard: str, cache: str) -> None:
    """Print the peak RSS growth (bytes) of reading ``shard`` (``stream``: row by row; ``table``:
    ``pq.read_table``) over the RSS after imports."""
    from detectors.data.containers import MEMBER_CACHE_ENV, row_ref
    from detectors.data.dataset import load_media

    os.environ[MEMBER_CACHE_ENV] = cache
    with open("/proc/self/clear_refs", "w") as handle:  # reset the peak (VmHWM) to the RSS now
        handle.write("5")
    baseline = _current_rss()
    if mode == "table":
        table = pq.read_table(shard)
        total = sum(len(v["bytes"]) for v in table.column("image").to_pylist())
    else:
        rows = pq.ParquetFile(shard).metadata.num_rows
        total = 0
        for row in range(rows):
            total += load_media(lambda p: Path(p).stat().st_size, row_ref(shard, "image", row))
    # not getrusage's ru_maxrss: Linux carries the parent's peak across fork + exec
    peak = next(int(line.split()[1]) * 1024 for line in open("/proc/self/status") if line.startswith("VmHWM:"))
    print(max(peak - baseline, 0), total)


def _current_rss() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def memory(work: Path, groups: int, group_mb: int) -> None:
    rng = np.random.default_rng(0)
    per_row = 512 * 1024
    rows_per_group = max(1, group_mb * 1024 * 1024 // per_row)
    cells = [{"bytes": rng.bytes(per_row), "path": f"{i}.bin"} for i in range(rows_per_group * groups)]
    shard = work / "big.parquet"
    pq.write_table(pa.table({"image": cells}), shard, row_group_size=rows_per_group, compression="none")
    del cells
    group_bytes = rows_per_group * per_row
    results = {}
    for mode in ("stream", "table"):
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "benchmarks.container_reading",
                "--rss-child",
                mode,
                str(shard),
                str(work / f"rss-cache-{mode}"),
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        growth, total = map(int, out.stdout.split())
        results[mode] = growth
    size = shard.stat().st_size
    print(f"memory: shard {size / 2**20:.0f} MiB = {groups} row groups of {group_bytes / 2**20:.0f} MiB")
    print(
        f"  streamed row by row: peak RSS growth {results['stream'] / 2**20:7.1f} MiB = "
        f"{results['stream'] / group_bytes:.2f} row groups = {results['stream'] / size:.2f} of the file"
    )
    print(
        f"  pq.read_table:       peak RSS growth {results['table'] / 2**20:7.1f} MiB = "
        f"{results['table'] / group_bytes:.2f} row groups = {results['table'] / size:.2f} of the file"
    )


def _ddp_rank(rank: int, world: int, port: int, backbone: str, paths: list[str], out: str, cache: str) -> None:
    import torch.distributed as dist

    from detectors.data.containers import MEMBER_CACHE_ENV

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), **{MEMBER_CACHE_ENV: cache})
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        from detectors.registry import create_detector
        from detectors.video.sampling import FrameSampler

        detector = create_detector("restrav", {"backbone": {"name": backbone}, "image_size": 28})
        clips: list[int] = []
        detector.backbone.model.register_forward_hook(
            lambda module, args, output: clips.append(output.last_hidden_state.shape[0])
        )
        extraction = detector.feature_extraction(
            FrameSampler("benchmark", 8), cache_dir=Path(out) / "features", num_workers=0
        )
        start = time.perf_counter()
        features, valid = extraction.run(paths)
        elapsed = time.perf_counter() - start
        torch.save({"frames": sum(clips), "valid": int(valid.sum()), "seconds": elapsed}, Path(out) / f"{rank}.pt")
    finally:
        dist.destroy_process_group()


def ddp(work: Path, videos: int) -> None:
    import socket
    import tarfile

    import torch.multiprocessing as mp
    from transformers import Dinov2Config, Dinov2Model

    from detectors.data.containers import member_ref
    from detectors.video.demo import write_mp4

    torch.manual_seed(0)
    backbone = work / "tiny-dinov2"
    Dinov2Model(
        Dinov2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, image_size=28, patch_size=14)
    ).save_pretrained(backbone)
    archive = work / "videos.tar"
    with tarfile.open(archive, "w") as handle:
        for index in range(videos):
            clip = work / f"v{index}.mp4"
            write_mp4(
                clip,
                torch.randint(
                    0, 256, (10, 3, 32, 32), generator=torch.Generator().manual_seed(index), dtype=torch.uint8
                ),
                fps=10,
            )
            handle.add(clip, arcname=clip.name)
    paths = [member_ref(archive, f"v{index}.mp4") for index in range(videos)]
    with socket.socket() as handle:
        handle.bind(("127.0.0.1", 0))
        port = handle.getsockname()[1]
    mp.spawn(
        _ddp_rank, args=(2, port, str(backbone), paths, str(work), str(work / "ddp-member-cache")), nprocs=2, join=True
    )
    ranks = [torch.load(work / f"{rank}.pt") for rank in range(2)]
    embedded = [rank["frames"] // 8 for rank in ranks]
    print(f"ddp: {videos} videos in a tar, 2 gloo ranks, 8 frames per video")
    for index, (rank, count) in enumerate(zip(ranks, embedded)):
        print(
            f"  rank {index}: embedded {count} videos = {count / videos:.2f} of them, "
            f"{rank['valid']} features valid, {rank['seconds']:.1f} s"
        )
    print(f"  total embedded {sum(embedded)} (each video once: {sum(embedded) == videos})")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=["throughput", "memory", "ddp"])
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--groups", type=int, default=10, help="row groups of the memory test's shard")
    parser.add_argument("--group-mb", type=int, default=32)
    parser.add_argument("--videos", type=int, default=12)
    parser.add_argument("--rss-child", nargs=3, metavar=("MODE", "SHARD", "CACHE"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.rss_child:
        rss_child(*args.rss_child)
        return
    with tempfile.TemporaryDirectory(prefix="container-bench-") as folder:
        work = Path(folder)
        if args.only in (None, "throughput"):
            throughput(work, args.images, args.image_size, args.workers, args.repeats)
        if args.only in (None, "memory"):
            memory(work, args.groups, args.group_mb)
        if args.only in (None, "ddp"):
            ddp(work, args.videos)


if __name__ == "__main__":
    main()
