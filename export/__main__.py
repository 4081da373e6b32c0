"""``python -m export RUN_DIR --out DIR [--zip] [--dtype float32|bf16]``: a benchmark submission.

Rebuilds the trained detector from its run directory (no hub access needed), asks it for its
:class:`export.spec.ExportSpec` (LoRA merged, calibrator folded into plain weights, backbone converted
to the stand-alone ViT), writes ``model_config.yaml`` / ``model.py`` / ``model.safetensors``
atomically, then loads the result the way the benchmark does and checks that its logits equal the
in-library detector's.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import torch

from detectors import cli
from detectors.base import Detector, load_detector
from detectors.cli import command
from detectors.errors import CheckpointError, ConfigError
from export.benchmark_loader import SubmissionError

EQUALITY_TOLERANCE = 1e-4  # float32: max |logit difference|
BF16_PROBABILITY_TOLERANCE = 0.05  # bf16 weights: max |p(fake) difference|


def export_detector(
    detector: Detector, out: str | Path, *, dtype: str = "float32", zip_file: bool = False, verify: bool = True
) -> dict[str, Any]:
    """Write ``detector`` as a submission; return the path and the max |logit difference| measured."""
    from export.benchmark_loader import load_submission, run_model
    from export.writer import write_submission

    detector = detector.cpu().eval()
    spec = detector.export_spec()
    path = write_submission(spec, out, dtype=dtype, zip=zip_file)
    report: dict[str, Any] = {"submission": str(path), "dtype": dtype}
    if verify:
        model, _ = load_submission(path, device="cpu")
        x = detector.example_input(batch_size=2)
        with torch.inference_mode():
            expected = detector(x).float()
            actual = run_model(model, x).float()
        difference = float((expected - actual).abs().max())
        prob_difference = float((expected.softmax(-1) - actual.float().softmax(-1)).abs().max())
        report["max_abs_logit_difference"] = difference
        report["max_abs_prob_difference"] = prob_difference
        if dtype in ("float32", "fp32") and difference > EQUALITY_TOLERANCE:
            raise RuntimeError(
                f"exported logits differ from the in-library model by {difference:.2e} "
                f"(> {EQUALITY_TOLERANCE}); please report this as a bug"
            )
        if dtype not in ("float32", "fp32") and prob_difference > BF16_PROBABILITY_TOLERANCE:
            raise RuntimeError(
                f"the {dtype} export moves p(fake) by up to {prob_difference:.3f} "
                f"(> {BF16_PROBABILITY_TOLERANCE}); export in float32 instead"
            )
    return report


def export_run(
    run_dir: str | Path, out: str | Path, *, dtype: str = "float32", zip_file: bool = False
) -> dict[str, Any]:
    return export_detector(load_detector(run_dir), out, dtype=dtype, zip_file=zip_file)


@command
def main(argv: list[str] | None = None) -> int:
    parser = cli.ArgumentParser(prog="python -m export", description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path, help="run directory written by a fit command")
    parser.add_argument("--out", required=True, type=Path, help="submission directory to write")
    parser.add_argument("--zip", action="store_true", help="also write DIR.zip with the three files at its root")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bf16"])
    args = parser.parse_args(argv)
    try:
        report = export_run(args.run_dir, args.out, dtype=args.dtype, zip_file=args.zip)
    except (ConfigError, CheckpointError, FileNotFoundError, FileExistsError, SubmissionError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"submission written: {report['submission']}")
    if "max_abs_logit_difference" in report:
        print(
            f"max |logit difference| vs the in-library model: {report['max_abs_logit_difference']:.2e} "
            f"(p(fake): {report['max_abs_prob_difference']:.2e})"
        )
    print(f"next: python -m export.check {report['submission']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
