"""Peak memory of one CakeLens v5 training step with and without activation checkpointing.

What is measured (one forward + backward of ``logits.square().sum()``, parameters already built):

* CUDA: ``torch.cuda.max_memory_allocated`` during the step minus the memory allocated before it
  (parameters + input), i.e. activations, saved tensors, gradients and workspaces.
* CPU: torch has no peak counter for host memory, so the step runs under ``torch.profiler`` with
  ``profile_memory=True``: every allocation and free of torch's CPU allocator is recorded with the
  running total, whose maximum is the step's peak (exact and deterministic; workspaces included).
  As a cross-check, each variant runs in a fresh subprocess and the growth of the peak resident set
  size (``ru_maxrss``) over the resident size before the step is reported too (glibc's mmap
  threshold pinned so that freed activations go back to the OS; a no-grad warm-up forward first, so
  that oneDNN's one-off buffers are not counted).

Besides the peak, autograd's own accounting gives an exact, noise-free figure for what
checkpointing acts on: the bytes of the distinct storages that the forward pass leaves saved for
backward (``torch.autograd.graph.saved_tensors_hooks`` around the forward; parameters and the input
volume excluded, since both variants hold them anyway). Inside a non-reentrant checkpoint the
checkpoint's own hooks take over, so what the outer hook sees is exactly what stays stored: the
checkpoints' inputs and everything outside them.

The default shape is the full architecture (widths 64 + 32 per conv, 6 blocks, 9-frame framesets)
on a 128x128 crop; ``--crop 512`` is the published configuration; ``--small`` uses the tiny test
configuration (crop 64, width 8, 2 blocks). ``--channels-last`` runs both variants in
``channels_last_3d`` (oneDNN's convolution backward then needs no layout copies); ``--bf16`` runs
the step under ``torch.autocast(dtype=torch.bfloat16)``, as ``precision: bf16-mixed`` trains.

    OMP_NUM_THREADS=2 python benchmarks/cakelens_memory.py [--small | --crop 512] [--batch 2] \
        [--channels-last] [--bf16] [--device cuda] [--out r.json]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Callable

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from detectors.atomic import write_json  # noqa: E402
from detectors.video.cakelens import CakeLensConfig, CakeLensV5  # noqa: E402

SMALL = CakeLensConfig(width=8, channel_step=4, num_blocks=2, crop=64)


def current_rss_bytes() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


class SavedActivations(torch.autograd.graph.saved_tensors_hooks):
    """Sums the bytes of the distinct storages saved for backward, except ``exclude``'s."""

    def __init__(self, exclude: list[torch.Tensor]) -> None:
        self.excluded = {t.untyped_storage().data_ptr() for t in exclude}
        self.storages: dict[int, int] = {}
        super().__init__(self.pack, lambda tensor: tensor)

    def pack(self, tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in self.excluded:
            self.storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    @property
    def bytes(self) -> int:
        return sum(self.storages.values())


def saved_activation_bytes(model: CakeLensV5, volume: torch.Tensor, bf16: bool = False) -> int:
    """Bytes kept alive between forward and backward by autograd (exact; no backward is run)."""
    saved = SavedActivations([*model.parameters(), volume])
    with saved, torch.autocast(volume.device.type, dtype=torch.bfloat16, enabled=bf16):
        model(volume)
    return saved.bytes


def profiled_peak_bytes(step: Callable[[], None]) -> int:
    """Peak of torch's CPU allocator during ``step`` above its level at the start (profiler events)."""
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    with tempfile.TemporaryDirectory() as folder:
        trace = Path(folder) / "trace.json"
        prof.export_chrome_trace(str(trace))
        events = json.loads(trace.read_text())["traceEvents"]
    # Each "[memory]" event carries the allocator's running total since profiling started.
    totals = [e["args"]["Total Allocated"] for e in events if e.get("name") == "[memory]"]
    return max(totals, default=0)


def measure(
    config: CakeLensConfig,
    batch: int,
    checkpointing: bool,
    channels_last: bool,
    device: torch.device,
    bf16: bool = False,
) -> dict:
    torch.manual_seed(0)
    model = CakeLensV5(config, gradient_checkpointing=checkpointing, channels_last_3d=channels_last).to(device)
    volume = torch.randn(batch, 1, config.depth, config.crop, config.crop, device=device)
    with torch.no_grad():
        model(volume)  # warm-up: kernels, oneDNN primitives, CUDA context
    # A tiny training step starts the autograd engine and the backward kernels without raising the
    # process's peak memory above what the measured step will need.
    tiny = CakeLensV5(SMALL, gradient_checkpointing=checkpointing, channels_last_3d=channels_last).to(device)
    tiny(torch.randn(1, 1, SMALL.depth, SMALL.crop, SMALL.crop, device=device)).sum().backward()
    del tiny
    grad_bytes = sum(p.numel() * p.element_size() for p in model.parameters())

    def step() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            logits = model(volume)
        logits.float().square().sum().backward()

    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        step()
        torch.cuda.synchronize(device)
        peak = torch.cuda.max_memory_allocated(device) - before
        return {
            "peak_bytes": peak,
            "parameter_grad_bytes": grad_bytes,
            "saved_bytes": saved_activation_bytes(model, volume, bf16),
            "method": "torch.cuda.max_memory_allocated - allocated before",
        }
    before, peak_before = current_rss_bytes(), peak_rss_bytes()
    peak = profiled_peak_bytes(step)
    peak_after = peak_rss_bytes()
    model.zero_grad(set_to_none=True)
    saved = saved_activation_bytes(model, volume, bf16)  # after the peak was read: cannot raise it
    return {
        "saved_bytes": saved,
        "peak_bytes": peak,
        "parameter_grad_bytes": grad_bytes,
        "method": "torch.profiler CPU allocator peak (profile_memory)",
        "rss_peak_bytes": peak_after - before,
        # If the step did not raise the process peak, the RSS figure is only a lower bound.
        "rss_step_set_new_peak": peak_after > peak_before,
    }


def run_variant(args: argparse.Namespace, checkpointing: bool) -> dict:
    command = [sys.executable, __file__, "--child", "--batch", str(args.batch), "--device", args.device]
    command += ["--small"] if args.small else ["--crop", str(args.crop)]
    command += ["--checkpointing"] if checkpointing else []
    command += ["--channels-last"] if args.channels_last else []
    command += ["--bf16"] if args.bf16 else []
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="131072")
    output = subprocess.run(command, env=env, check=True, capture_output=True, text=True).stdout
    return json.loads(output.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--small", action="store_true", help="tiny test configuration")
    parser.add_argument("--crop", type=int, default=128)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--channels-last", action="store_true", help="channels_last_3d weights and activations")
    parser.add_argument("--bf16", action="store_true", help="bfloat16 autocast (mixed precision)")
    parser.add_argument("--out", type=Path, help="write the results as JSON")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--checkpointing", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    config = SMALL if args.small else CakeLensConfig(crop=args.crop)

    if args.child:
        print(
            json.dumps(
                measure(
                    config,
                    args.batch,
                    args.checkpointing,
                    args.channels_last,
                    torch.device(args.device),
                    bf16=args.bf16,
                )
            )
        )
        return

    results = {name: run_variant(args, flag) for name, flag in (("plain", False), ("checkpointed", True))}
    ratio = results["checkpointed"]["peak_bytes"] / results["plain"]["peak_bytes"]
    # Parameter gradients are the same in both variants; without them the ratio compares what
    # checkpointing acts on (activations and their gradients).
    activations = {name: r["peak_bytes"] - r["parameter_grad_bytes"] for name, r in results.items()}
    activation_ratio = activations["checkpointed"] / activations["plain"]
    layout = ("channels_last_3d" if args.channels_last else "contiguous") + (", bf16 autocast" if args.bf16 else "")
    print(f"config {config}, batch {args.batch}, device {args.device}, {layout}")
    print(f"method: {results['plain']['method']}")
    for name, result in results.items():
        rss = ""
        if "rss_peak_bytes" in result:
            bound = "" if result["rss_step_set_new_peak"] else ", a lower bound: no new process peak"
            rss = f"; RSS growth {result['rss_peak_bytes'] / 2**20:.1f} MiB{bound}"
        print(
            f"{name:>13}: {result['peak_bytes'] / 2**20:9.1f} MiB, "
            f"{activations[name] / 2**20:9.1f} MiB without parameter gradients{rss}"
        )
    print(f"ratio checkpointed/plain = {ratio:.3f} ({activation_ratio:.3f} without parameter gradients)")
    saved_ratio = results["checkpointed"]["saved_bytes"] / results["plain"]["saved_bytes"]
    print(
        "saved for backward (autograd, exact): "
        + ", ".join(f"{name} {r['saved_bytes'] / 2**20:.1f} MiB" for name, r in results.items())
        + f"; ratio = {saved_ratio:.3f}"
    )
    if args.out:
        write_json(
            args.out,
            {
                "config": vars(config),
                "batch": args.batch,
                "device": args.device,
                "channels_last_3d": args.channels_last,
                "bf16": args.bf16,
                "results": results,
                "ratio": ratio,
                "activation_ratio": activation_ratio,
                "saved_ratio": saved_ratio,
            },
        )


if __name__ == "__main__":
    main()
