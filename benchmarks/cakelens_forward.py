"""Forward time of ``detectors.video.cakelens.CakeLensV5`` against the original ``cakelens-v5`` model.

Both models get the same weights (the original's random initialisation, copied with
``load_cakelens_checkpoint``) and the same input. The original runs the way its ``Detector`` does
(``torch.no_grad``, contiguous NCDHW); ours runs with ``torch.inference_mode`` and, by default,
``channels_last_3d`` (``--bf16``: under bfloat16 autocast, for GPUs). The default setting is reduced but faithful: the full network (widths, 6
blocks, 9-frame framesets) on a 128x128 crop, batch 1; ``--full`` uses the real 512x512 crop
(about 1.4 TMAC per frameset, tens of seconds on 2 CPU cores).

    OMP_NUM_THREADS=2 python benchmarks/cakelens_forward.py [--full] [--repeats 5] [--out r.json]

Needs ``pip install --no-deps cakelens-v5==0.1.2`` (its model module imports only torch and
torchvision).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from detectors.atomic import write_json  # noqa: E402
from detectors.video.cakelens import CakeLensConfig, CakeLensV5, load_cakelens_checkpoint  # noqa: E402


def time_call(fn: Callable[[], torch.Tensor], repeats: int, warmup: int, device: torch.device) -> list[float]:
    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--full", action="store_true", help="real 512x512 crop (slow on CPU)")
    parser.add_argument("--crop", type=int, default=128, help="crop side when not --full")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--no-channels-last", action="store_true", help="run ours in NCDHW too")
    parser.add_argument(
        "--bf16",
        action="store_true",
        help="run ours under bfloat16 autocast (the original keeps float32, as its tool runs)",
    )
    parser.add_argument("--out", type=Path, help="write the results as JSON")
    args = parser.parse_args()

    try:
        from cakelens.model import Model as OriginalModel
    except ImportError:
        sys.exit("the baseline needs the original package: pip install --no-deps cakelens-v5==0.1.2")

    device = torch.device(args.device)
    config = CakeLensConfig(crop=512 if args.full else args.crop)
    torch.manual_seed(0)
    volume = torch.randn(args.batch, 1, config.depth, config.crop, config.crop, device=device)

    original = OriginalModel().to(device).eval()
    with torch.no_grad():
        original(volume[:1])  # materialise its LazyLinear layers for this crop
    ours = CakeLensV5(config, channels_last_3d=not args.no_channels_last)
    load_cakelens_checkpoint(original.state_dict(), ours)
    ours = ours.to(device).eval()

    def run_original() -> torch.Tensor:
        with torch.no_grad():
            return original(volume)

    def run_ours() -> torch.Tensor:
        with torch.inference_mode(), torch.autocast(device.type, torch.bfloat16, enabled=args.bf16):
            return ours(volume).float()

    difference = (run_ours() - run_original()).abs().max().item()
    # Interleave the two so that load from other processes on a shared machine hits both alike.
    for _ in range(args.warmup):
        run_original(), run_ours()
    times: dict[str, list[float]] = {"original": [], "ours": []}
    for _ in range(args.repeats):
        times["original"] += time_call(run_original, 1, 0, device)
        times["ours"] += time_call(run_ours, 1, 0, device)
    median = {name: statistics.median(values) for name, values in times.items()}
    ratio = median["ours"] / median["original"]

    print(f"device={device} threads={torch.get_num_threads()} torch={torch.__version__}")
    print(
        f"input {tuple(volume.shape)}, channels_last_3d={not args.no_channels_last}, bf16={args.bf16}, "
        f"max |logit diff| {difference:.2e}"
    )
    for name in ("original", "ours"):
        runs = ", ".join(f"{t:.3f}" for t in times[name])
        print(f"{name:>9}: median {median[name]:.3f} s per batch ({runs})")
    print(f"ratio ours/original = {ratio:.3f}")
    if args.out:
        write_json(
            args.out,
            {
                "device": str(device),
                "threads": torch.get_num_threads(),
                "torch": torch.__version__,
                "input_shape": list(volume.shape),
                "channels_last_3d": not args.no_channels_last,
                "bf16": args.bf16,
                "max_abs_diff": difference,
                "seconds": times,
                "median_seconds": median,
                "ratio": ratio,
            },
        )


if __name__ == "__main__":
    main()
