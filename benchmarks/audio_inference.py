"""Inference time per 6 s clip: exported BreathNet submission vs the in-library detector.

    python benchmarks/audio_inference.py [--run RUN_DIR] [--size demo|xls-r-300m] [--tuning lora]
        [--batch-sizes 1 8] [--repeats 5] [--device cpu|cuda] [--threads N]

Without ``--run`` a detector is built with random weights at the chosen backbone size (no hub
access: ``demo`` is the demo's 2-layer stand-in, ``xls-r-300m`` the full XLS-R 300M architecture),
exported to a temporary submission, and both are timed on the same random ``[B, 96000]`` batches.
Prints ms per clip (median over repeats after one warm-up, calls alternating) and the exported / in-library ratio.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch


def build_detector(args: argparse.Namespace):
    from detectors.backbones import KNOWN_TRANSFORMERS_ARCHITECTURES
    from detectors.base import load_detector
    from detectors.config import load_yaml
    from detectors.registry import create_detector

    if args.run:
        return load_detector(args.run)
    arch = dict(KNOWN_TRANSFORMERS_ARCHITECTURES["facebook/wav2vec2-xls-r-300m"])
    model: dict = {"tuning": {"mode": args.tuning}}
    if args.size == "demo":
        demo = load_yaml(Path(__file__).resolve().parents[1] / "configs" / "audio" / "breathnet.yaml")["demo"]["model"]
        arch.update(demo["backbone"]["fallback_overrides"])
        model.update({k: v for k, v in demo.items() if k not in ("backbone", "tuning")})
    model["backbone"] = {"name": "facebook/wav2vec2-xls-r-300m", "pretrained": False, "architecture": arch}
    return create_detector("breathnet", model)


def time_models(models: list[torch.nn.Module], x: torch.Tensor, repeats: int) -> list[float]:
    """Median milliseconds per clip of each model; calls alternate between the models so that load
    from other processes on a shared machine affects them alike. The first round is a warm-up."""
    samples: list[list[float]] = [[] for _ in models]
    with torch.inference_mode():
        for index in range(repeats + 1):
            for model, times in zip(models, samples):
                if x.device.type == "cuda":
                    torch.cuda.synchronize()
                start = time.perf_counter()
                model(x)
                if x.device.type == "cuda":
                    torch.cuda.synchronize()
                if index:
                    times.append(1000 * (time.perf_counter() - start) / x.shape[0])
    return [statistics.median(times) for times in samples]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, help="trained run directory (default: random weights)")
    parser.add_argument("--size", choices=["demo", "xls-r-300m"], default="demo")
    parser.add_argument("--tuning", default="lora", choices=["frozen", "layernorm", "lora", "full"])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, help="torch CPU threads")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    from export.__main__ import export_detector
    from export.benchmark_loader import load_submission

    detector = build_detector(args).eval()
    with tempfile.TemporaryDirectory() as tmp:
        report = export_detector(detector, Path(tmp) / "submission")
        exported, _ = load_submission(Path(tmp) / "submission", device=args.device)
    device = torch.device(args.device)
    detector = detector.to(device)
    params = sum(p.numel() for p in detector.parameters())
    print(
        f"BreathNet ({'run ' + str(args.run) if args.run else args.size + ', random weights'}), "
        f"{params / 1e6:.2f} M parameters, device {device}, torch threads {torch.get_num_threads()}, "
        f"export max |logit diff| {report['max_abs_logit_difference']:.1e}"
    )
    print(f"{'batch':>5} {'in-library ms/clip':>19} {'exported ms/clip':>17} {'ratio':>6}")
    generator = torch.Generator().manual_seed(0)
    for batch_size in args.batch_sizes:
        x = (torch.rand(batch_size, 96000, generator=generator) * 2 - 1).to(device)
        library, export = time_models([detector, exported], x, args.repeats)
        print(f"{batch_size:>5} {library:>19.2f} {export:>17.2f} {export / library:>6.2f}")


if __name__ == "__main__":
    main()
