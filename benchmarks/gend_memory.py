"""GenD training step: LayerNorm-only tuning vs full fine-tuning, time and peak memory.

Each mode runs in its own subprocess on the same randomly initialised DINOv3 ViT (so one mode's
allocator state cannot leak into the other's numbers). Peak memory: CUDA ``max_memory_allocated``
when CUDA is available, else the process's peak RSS (``ru_maxrss``) minus its RSS before the model
was built (weights, gradients, optimiser state and activations), plus the transient part: peak RSS
minus the RSS after a warm-up step.

    python benchmarks/gend_memory.py [--hidden 384 --layers 12 --batch 4 --frames 4 --size 224]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _rss_mb() -> float:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def measure(args: argparse.Namespace) -> dict:
    import torch
    from transformers import DINOv3ViTConfig, DINOv3ViTModel

    from detectors.registry import create_detector
    from detectors.training.module import DetectorModule

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    before_model = _rss_mb()
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        DINOv3ViTModel(
            DINOv3ViTConfig(
                hidden_size=args.hidden,
                num_hidden_layers=args.layers,
                num_attention_heads=args.hidden // 64,
                intermediate_size=4 * args.hidden,
                patch_size=16,
                num_register_tokens=4,
            )
        ).save_pretrained(tmp)
        detector = create_detector(
            "gend",
            {
                "backbone": {"name": tmp},
                "image_size": args.size,
                "num_frames": args.frames,
                "tuning": {"mode": args.mode},
            },
        )
    detector.to(device).train()
    module = DetectorModule(detector, loss={"name": "cross_entropy"}, optim={"lr": 1e-4, "scheduler": "none"})
    optimizer = module.configure_optimizers()["optimizer"]
    labels = torch.arange(args.batch, device=device) % 2
    x = torch.randint(0, 256, (args.batch, args.frames, 3, args.size, args.size), dtype=torch.uint8, device=device)

    def step() -> None:
        batch = {"x": x, "label": labels.clone(), "class_index": labels.clone()}
        loss = module.training_step(batch, 0)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    import warnings

    warnings.filterwarnings("ignore")
    step()  # warm-up: allocates optimiser state and gradients
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    baseline = _rss_mb()
    times = []
    for _ in range(args.steps):
        start = time.perf_counter()
        step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated() / 2**20
        how = "cuda max_memory_allocated"
    else:
        max_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        peak = max_rss - before_model  # weights + gradients + optimiser state + activations
        how = f"peak RSS over pre-model RSS; step transient {max_rss - baseline:.0f} MiB"
    trainable = sum(p.numel() for p in detector.parameters() if p.requires_grad)
    total = sum(p.numel() for p in detector.parameters())
    return {
        "mode": args.mode,
        "device": device.type,
        "step_s": sorted(times)[len(times) // 2],
        "peak_mb": peak,
        "peak_measure": how,
        "trainable": trainable,
        "total": total,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, default=384)
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--batch", type=int, default=2, help="clips per step")
    parser.add_argument("--frames", type=int, default=4, help="frames per clip")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--mode", help=argparse.SUPPRESS)  # child process: measure one mode
    args = parser.parse_args()
    if args.hidden < 64 or args.hidden % 64:
        parser.error("--hidden must be a multiple of 64 (one attention head per 64 channels, like ViT-S/B/L)")
    if args.mode:
        print(json.dumps(measure(args)))
        return
    results = {}
    for mode in ("layernorm", "full"):
        argv = [sys.executable, __file__, *sys.argv[1:], "--mode", mode]
        out = subprocess.run(argv, check=True, capture_output=True, text=True).stdout
        results[mode] = json.loads(out.strip().splitlines()[-1])
        r = results[mode]
        print(
            f"{mode:10s} trainable {r['trainable']:>11,d} / {r['total']:,d}  step {r['step_s']:.3f} s  "
            f"peak {r['peak_mb']:.0f} MiB ({r['peak_measure']}, {r['device']})"
        )
    ln, full = results["layernorm"], results["full"]
    print(
        f"full / layernorm: step time x{full['step_s'] / ln['step_s']:.2f}, "
        f"peak memory x{full['peak_mb'] / max(ln['peak_mb'], 1e-6):.2f}, "
        f"trainable parameters x{full['trainable'] / ln['trainable']:.0f}"
    )


if __name__ == "__main__":
    main()
