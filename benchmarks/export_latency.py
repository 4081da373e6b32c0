"""Exported-submission latency vs the in-library detector (target ratio <= 1.05).

Same random DINOv3 ViT-S/16 image detector (LoRA-tuned, so export has to merge adapters), same
uint8 batch, timings interleaved so machine noise hits both sides alike.

    python benchmarks/export_latency.py [--size 224] [--batch 4] [--repeats 10] [--device cpu]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch

from detectors.backbones import KNOWN_TRANSFORMERS_ARCHITECTURES, BackboneConfig
from detectors.image.dinov3 import DinoImageDetector, ImageDetectorConfig
from detectors.tuning import TuningConfig
from export.__main__ import export_detector
from export.benchmark_loader import load_submission, run_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    name = "facebook/dinov3-vits16-pretrain-lvd1689m"
    backbone = BackboneConfig(name=name, pretrained=False, architecture=dict(KNOWN_TRANSFORMERS_ARCHITECTURES[name]))
    detector = DinoImageDetector(
        ImageDetectorConfig(backbone=backbone, tuning=TuningConfig(mode="lora"), image_size=args.size)
    ).eval()
    with tempfile.TemporaryDirectory() as tmp:
        report = export_detector(detector, f"{tmp}/sub")
        exported, _ = load_submission(f"{tmp}/sub", device=args.device)
    detector.to(args.device)
    x = torch.randint(0, 256, (args.batch, 3, args.size, args.size), dtype=torch.uint8, device=args.device)

    def timed(fn) -> float:
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        with torch.inference_mode():
            fn(x)
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        return time.perf_counter() - start

    for _ in range(2):  # warm-up
        timed(detector), timed(lambda t: run_model(exported, t))
    library, submission = [], []
    for _ in range(args.repeats):
        library.append(timed(detector))
        submission.append(timed(lambda t: run_model(exported, t)))
    lib_ms = 1000 * statistics.median(library) / args.batch
    sub_ms = 1000 * statistics.median(submission) / args.batch
    print(f"max |logit diff| {report['max_abs_logit_difference']:.2e}")
    print(
        f"in-library {lib_ms:.2f} ms/sample, exported {sub_ms:.2f} ms/sample, ratio {sub_ms / lib_ms:.3f} (target <= 1.05)"
    )


if __name__ == "__main__":
    main()
