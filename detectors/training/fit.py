"""The fit command shared by every modality: ``python -m detectors.{image,video,audio}.fit``.

defaults (configs/<modality>/<arch>.yaml) <- ``--config YAML`` <- flags; data YAML -> split ->
Lightning Trainer (DDP/FSDP, bf16, accumulation, resume) -> calibration on the held-out split ->
``detector.safetensors``, ``metrics.json``, ``summary.json`` and plots in the run directory.
With no ``--data``, the built-in demo data of the modality is written and used.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import logging
import os
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml

from detectors import cli
from detectors.cli import USAGE_ERROR, expected_errors, one_line
from detectors.config import load_yaml, to_dict
from detectors.errors import ConfigError
from detectors.locking import claim_directory, releases_claims
from detectors.settings import ConfigLayers, base_layers, resolve_run_config

log = logging.getLogger("detectors.fit")


@dataclass
class ModalitySupport:
    """What a modality plugs into the shared fit: its demo data and extra CLI flags.

    ``apply_arguments(args, layers, model_fields)`` puts the modality's flags into the config layers
    (``layers.set(key, value, flag)``); ``model_fields`` are the settings of the arch's model section.
    """

    name: str
    write_demo: Callable[[Path], Path]  # root -> dataset YAML
    add_arguments: Callable[[argparse.ArgumentParser], None] | None = None
    apply_arguments: Callable[[argparse.Namespace, ConfigLayers, set[str]], None] | None = None


class _ArchAction(argparse.Action):
    """``--arch``, remembering that it was given (else a ``--config`` file's ``arch:`` chooses)."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        namespace.arch = values
        namespace.arch_given = True


def build_parser(modality: str, archs: list[str], default_arch: str) -> argparse.ArgumentParser:
    parser = cli.ArgumentParser(
        prog=f"python -m detectors.{modality}.fit",
        description=f"Train, calibrate and evaluate a detector for {modality}. Without --data the built-in "
        "(synthetic) demo data is used.",
    )
    parser.add_argument(
        "--arch",
        choices=archs,
        default=default_arch,
        action=_ArchAction,
        help=f"detector architecture (default: the --config file's arch:, else {default_arch})",
    )
    parser.add_argument("--data", type=Path, help="dataset YAML (benchmark fields); omit for the demo")
    parser.add_argument(
        "--benchmark-cache",
        type=Path,
        metavar="DIR",
        help="--data is a benchmark dataset config: read its datasets from this gasbench cache "
        "(DIR/datasets/<name>/samples)",
    )
    parser.add_argument("--backbone", help="hub id or local directory (transformers), or a timm model name")
    parser.add_argument("--backbone-weights", help="local weights file for a timm backbone")
    parser.add_argument("--tuning", choices=["frozen", "layernorm", "lora", "full"], help="backbone tuning mode")
    parser.add_argument("--output", type=Path, help="run directory (default runs/<arch>-<time>)")
    parser.add_argument("--config", type=Path, help="YAML overriding the shipped defaults")
    parser.add_argument("--init-from", type=Path, help="run directory of a trained detector to fine-tune on new data")
    parser.add_argument("--max-epochs", type=int)
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--num-workers", type=int)
    parser.add_argument("--lr", type=float)
    parser.add_argument("--seed", type=int)
    parser.add_argument("--loss", choices=["focal_brier", "cross_entropy", "score_surrogate", "focal_brier+score"])
    parser.add_argument("--gradient-checkpointing", action="store_true", help="recompute activations in backward")
    trainer = parser.add_argument_group("Lightning Trainer")
    trainer.add_argument("--accelerator", help="cpu, gpu, mps or auto")
    trainer.add_argument("--devices", help="number of devices or a list, e.g. 2 or 0,1")
    trainer.add_argument("--num-nodes", type=int)
    trainer.add_argument("--strategy", help="auto, ddp, ddp_spawn, fsdp, ...")
    trainer.add_argument("--precision", help="32-true, bf16-mixed, 16-mixed, ...")
    trainer.add_argument("--accumulate-grad-batches", type=int)
    trainer.add_argument("--limit-train-batches", type=float)
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override any config value, e.g. --set data.image_size=128 (YAML-parsed)",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace a finished run in --output")
    parser.add_argument("--no-export", action="store_true", help="demo only: skip export and evaluation")
    return parser


def resolve_config(args: argparse.Namespace, modality: str, support: ModalitySupport, demo: bool) -> Any:
    """defaults <- the arch's YAML (<- its demo overrides without --data) <- ``--config`` <- flags <-
    ``--set``, parsed into the arch's typed ``RunConfig`` before anything is built: errors name the
    key, where it was set and a close match."""
    from detectors.registry import detector_class

    cls = detector_class(args.arch)
    layers = base_layers(cls, demo)
    if cls.gpu_precision and torch.cuda.is_available() and "trainer.precision" not in layers.sources:
        layers.set("trainer.precision", cls.gpu_precision, f"{cls.arch} on a CUDA device")
    if args.config:
        overrides = load_yaml(args.config)
        for key, value in (("arch", args.arch), ("modality", modality)):
            # a run's config.yaml reused as --config carries these: they must agree with the command
            if overrides.get(key, value) != value:
                raise ConfigError(
                    args.config,
                    key,
                    f"this config is for {overrides[key]!r}, but the command trains "
                    f"{value!r}" + (f"; pass --arch {overrides[key]}" if key == "arch" else ""),
                )
        layers.add(overrides, str(args.config))
    model_fields = {f.name for f in dataclasses.fields(cls.config_class)}
    flags = [
        ("--backbone", "model.backbone.name", args.backbone),
        ("--backbone-weights", "model.backbone.weights", args.backbone_weights),
        ("--tuning", "model.tuning.mode", args.tuning),
        ("--max-epochs", "trainer.max_epochs", args.max_epochs),
        ("--batch-size", "data.batch_size", args.batch_size),
        ("--num-workers", "data.num_workers", args.num_workers),
        ("--lr", "optim.lr", args.lr),
        ("--seed", "seed", args.seed),
        ("--loss", "loss.name", args.loss),
        ("--accelerator", "trainer.accelerator", args.accelerator),
        ("--devices", "trainer.devices", _parse_devices(args.devices)),
        ("--num-nodes", "trainer.num_nodes", args.num_nodes),
        ("--strategy", "trainer.strategy", args.strategy),
        ("--precision", "trainer.precision", args.precision),
        ("--accumulate-grad-batches", "trainer.accumulate_grad_batches", args.accumulate_grad_batches),
        ("--limit-train-batches", "trainer.limit_train_batches", args.limit_train_batches),
    ]
    for flag, key, value in flags:
        if value is not None:
            if key.startswith("model.backbone.") and "backbone" not in model_fields:
                raise ConfigError(None, flag, f"{args.arch} has no DINOv2/DINOv3/wav2vec2 backbone to set")
            layers.set(key, value, flag)
    if args.gradient_checkpointing:  # a detector's own switch (CakeLens), else its tuned backbone's
        own = "gradient_checkpointing" in model_fields
        layers.set(
            "model.gradient_checkpointing" if own else "model.tuning.gradient_checkpointing",
            True,
            "--gradient-checkpointing",
        )
    for item in args.set:
        key, sep, raw = item.partition("=")
        if not sep:
            raise ConfigError(None, "--set", f"expected KEY=VALUE, got {item!r}")
        layers.set(key.strip(), yaml.safe_load(raw), "--set")
    if support.apply_arguments:
        support.apply_arguments(args, layers, model_fields)
    return resolve_run_config(layers)


def _parse_devices(value: str | None) -> Any:
    if value is None:
        return None
    if "," in value:
        return [int(v) for v in value.split(",") if v]
    return int(value) if value.isdigit() else value


def run_fit(
    modality: str, support: ModalitySupport, archs: list[str], default_arch: str, argv: list[str] | None = None
) -> Path:
    """Parse ``argv`` and train; returns the run directory."""
    parser = build_parser(modality, archs, default_arch)
    if support.add_arguments:
        support.add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        if not getattr(args, "arch_given", False):
            args.arch = config_arch(args.config, archs) or args.arch
        return fit(args, modality, support)
    except expected_errors() as error:  # one line, status 2 (see detectors.cli)
        parser.exit(USAGE_ERROR, f"error: {one_line(error)}\n")


def config_arch(config: Path | None, archs: list[str]) -> str | None:
    """The ``arch:`` a ``--config`` file names (a run's config.yaml, a sweep's best.yaml), when it is
    one of this command's; any other is left to :func:`resolve_config`'s check to name."""
    if config is None:
        return None
    arch = load_yaml(config).get("arch")
    return arch if arch in archs else None


def init_from_arch(args: argparse.Namespace, modality: str) -> str:
    """The architecture of the ``--init-from`` run, after checking that the run can be fine-tuned here."""
    from detectors.training.run import RunDir

    previous = RunDir(args.init_from)
    if not previous.is_finished():
        raise ConfigError(
            args.init_from, None, "--init-from needs a finished run directory (detector.safetensors missing)"
        )
    previous_config = previous.read_config()
    previous_modality = previous_config.get("modality", modality)
    if previous_modality != modality:
        raise ConfigError(
            previous.config,
            "modality",
            f"the --init-from run trained a {previous_modality} detector; "
            f"fine-tune it with python -m detectors.{previous_modality}.fit",
        )
    # the trained weights fix the architecture: a flag asking for another one would be ignored silently
    model = previous_config.get("model") or {}
    backbone = model.get("backbone") if isinstance(model.get("backbone"), dict) else {}
    tuning = model.get("tuning") if isinstance(model.get("tuning"), dict) else {}
    conflicts = [
        flag
        for flag, value, kept in (
            ("--backbone", args.backbone, backbone.get("name")),
            ("--backbone-weights", args.backbone_weights, backbone.get("weights")),
            ("--tuning", args.tuning, tuning.get("mode")),
        )
        if value is not None and value != kept
    ]
    if conflicts:
        raise ConfigError(
            None,
            " ".join(conflicts),
            f"--init-from keeps the backbone and tuning of {args.init_from}; "
            "drop these flags (or train from scratch without --init-from)",
        )
    return previous_config.get("arch", args.arch)


@releases_claims  # the run directory's lock is released when fit returns or raises
def fit(args: argparse.Namespace, modality: str, support: ModalitySupport, callbacks: Sequence[Any] = ()) -> Path:
    """Train, calibrate and evaluate one run; ``callbacks`` are extra Lightning callbacks for its
    Trainer (``detectors.sweep`` adds its pruning callback: a trial is an ordinary fit run)."""
    import lightning as L

    from detectors.base import load_detector
    from detectors.data.catalog import (
        assign_splits,
        load_items,
        read_split,
        summarise,
        write_split,
    )
    from detectors.data.datamodule import MediaDataModule
    from detectors.registry import create_detector
    from detectors.training.finalize import finalize_run
    from detectors.training.module import DetectorModule
    from detectors.training.run import RunDir
    from detectors.training.trainer import build_trainer

    demo = args.data is None
    if demo and args.benchmark_cache is not None:
        raise ConfigError(None, "--benchmark-cache", "needs --data: the benchmark dataset config to read from it")
    if args.init_from is not None:
        # before resolving: the defaults (data, loss, optim, trainer) must be those of the run's arch
        args.arch = init_from_arch(args, modality)
    config = resolve_config(args, modality, support, demo)
    run = RunDir(args.output or Path("runs") / f"{args.arch}-{time.strftime('%Y%m%d-%H%M%S')}")
    rank_zero = int(os.environ.get("LOCAL_RANK", "0")) == 0 and int(os.environ.get("NODE_RANK", "0")) == 0
    if rank_zero:  # lock the run directory (DDP children re-run this script: rank 0 holds it)
        claim_directory(run.root, "fit")
    started_here = run.config.is_file() or run.last_checkpoint.is_file()
    first_process = rank_zero  # DDP children (LOCAL_RANK / NODE_RANK > 0) re-run this script: never twice
    if started_here and args.overwrite and first_process:
        run.clear()  # keeps the lock file
    elif run.is_finished() and not args.overwrite:
        raise ConfigError(run.root, None, "a finished run is already here; pass --overwrite or choose another --output")
    elif started_here and first_process:
        # an interrupted run resumes only with the arguments it was started with
        differences = run_differences(run, config, args, demo)
        if differences:
            raise ConfigError(
                run.root,
                None,
                "an interrupted run was started here with other arguments ("
                + "; ".join(differences)
                + "): rerun it with the same ones to resume, or pass "
                "--overwrite to start afresh",
            )
    resume = run.last_checkpoint.is_file()
    L.seed_everything(config.seed, workers=True, verbose=False)

    data_yaml = args.data
    if demo:
        data_yaml = support.write_demo(run.root / "demo_data")
        print(f"[demo] no --data given: using the built-in SYNTHETIC demo data in {data_yaml.parent}")
    if resume and run.split.is_file():
        items = read_split(run.split)
    else:
        items = load_items(data_yaml, modality=modality, benchmark_cache=None if demo else args.benchmark_cache)
        split_seed = config.seed if config.split.seed is None else config.split.seed
        items = assign_splits(
            items, fractions={"val": config.split.val, "calibration": config.split.calibration}, seed=split_seed
        )
    counts = {name: sum(item.split == name for item in items) for name in ("train", "val", "calibration")}
    empty = [name for name, count in counts.items() if count == 0]
    if empty:
        raise ConfigError(
            data_yaml,
            "split",
            f"the {' and '.join(empty)} split(s) would be empty ({counts}); "
            "add samples (3 or more per dataset and label) or assign `split:` per dataset entry",
        )
    train_labels = {item.label for item in items if item.split == "train"}
    if len(train_labels) < 2:
        only = "real" if train_labels == {0} else "fake"
        raise ConfigError(
            data_yaml,
            "datasets",
            f"the train split holds {only} samples only; a detector learns "
            "from both real and fake media (check each dataset's label)",
        )
    if rank_zero and not (resume and run.split.is_file()):
        write_split(items, run.split)  # the run directory appears only once the data is known to be usable
    labels = report_label_distribution([item for item in items if item.split == "train"], run, show=rank_zero)

    if args.init_from is not None:
        detector = load_detector(args.init_from)
        if args.gradient_checkpointing:  # a training setting, not architecture: honour it here too
            detector.set_gradient_checkpointing(True)
    else:
        if demo:
            config.model.allow_random_backbone = True
        detector = create_detector(args.arch, config.model)
    config.model = detector.config  # with the backbone's resolved architecture (rebuilds offline)
    if rank_zero:
        run.write_config(to_dict(config))
        run.write_invocation(invocation(args, demo))

    datamodule = MediaDataModule(items, detector.data_recipe, config.data, seed=config.seed)
    before = None
    if args.init_from is not None and rank_zero:
        from detectors.training.finalize import evaluate_split

        # the previous detector as it was delivered, with its own fitted calibrator
        before = evaluate_split(detector, datamodule, "val", calibrated=True)
    if args.init_from is not None:
        detector.calibrator.reset()  # refitted on the new calibration split after training
    module = DetectorModule(detector, loss=config.loss, optim=config.optim)
    trainer, checkpoint = build_trainer(
        config.trainer, run, extra_callbacks=[*detector.extra_callbacks(), *callbacks], resume=resume
    )
    started = time.time()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        # intended: DetectorModule copies batches on a side CUDA stream whatever the DataModule
        warnings.filterwarnings("ignore", message=".*overridden `transfer_batch_to_device`.*")
        # intended: a frozen backbone stays in eval mode (Backbone.train), a fixed feature extractor
        warnings.filterwarnings("ignore", message=r".*module\(s\) in eval mode at the start of training.*")
        trainer.fit(module, datamodule=datamodule, ckpt_path=str(run.last_checkpoint) if resume else None)
    if not trainer.is_global_zero:
        return run.root
    finalize_run(
        run,
        module,
        datamodule,
        trainer,
        checkpoint,
        config,
        extra_summary={
            "data": summarise(items),
            "label_distribution": labels,
            "resumed": resume,
            "demo": demo,
            "init_from": str(args.init_from) if args.init_from else None,
            "train_seconds": round(time.time() - started, 1),
        },
        before=before,
    )
    if demo and not args.no_export:
        from detectors.training.demo import export_and_evaluate_demo

        export_and_evaluate_demo(run, items)
    return run.root


def report_label_distribution(train_items: list[Any], run: Any, show: bool = True) -> dict[str, Any]:
    """Print the training labels' distribution (share < 0.1, share >= 0.5, fake share) and plot their
    histogram into the run's plots: how imbalanced the data is decides the loss weighting."""
    from detectors.data.catalog import label_distribution
    from detectors.plots import label_histogram

    distribution = label_distribution(train_items)
    if show and distribution["n"]:
        kind = "soft labels (teacher scores)" if distribution["soft_labels"] else "labels"
        print(
            f"training {kind}: n={distribution['n']}  share < 0.1: {distribution['share_below_0.1']:.3f}  "
            f"share >= 0.5: {distribution['share_at_least_0.5']:.3f}  fake share: {distribution['fake_share']:.3f}"
        )
        values = [item.score if item.score is not None else float(item.label) for item in train_items]
        label_histogram(values, run.plots / "label_distribution.png")
    return distribution


# Settings a run fills in itself (the backbone's resolved architecture, the demo's random fallback):
# they differ from a command's before the detector is built, without the command differing.
_RESOLVED_BY_THE_RUN = ("model.backbone.architecture", "model.backbone.pretrained", "model.allow_random_backbone")
# how long to train may change on resume: Lightning continues the saved run to the new length
_TRAINING_LENGTH = ("trainer.max_epochs", "trainer.max_steps", "trainer.max_time")


def invocation(args: argparse.Namespace, demo: bool) -> dict[str, Any]:
    """What a run was started on besides its settings: the data (path and content digest) and the
    run it fine-tunes."""
    data = None if demo else str(Path(args.data).resolve())
    digest = None if demo or not Path(args.data).is_file() else hashlib.sha256(Path(args.data).read_bytes()).hexdigest()
    cache = getattr(args, "benchmark_cache", None)
    return {
        "data": data,
        "data_sha256": digest,
        "benchmark_cache": None if cache is None else str(Path(cache).resolve()),
        "init_from": None if args.init_from is None else str(Path(args.init_from).resolve()),
    }


def run_differences(run: Any, config: Any, args: argparse.Namespace, demo: bool) -> list[str]:
    """``key: saved -> new`` for every setting and input that differs from the interrupted run's."""
    from detectors.config import flatten

    differences = []
    if run.config.is_file():
        saved, new = flatten(run.read_config()), flatten(to_dict(config))
        # a fine-tuned run's model section comes from the --init-from run, compared below
        skipped = (*_RESOLVED_BY_THE_RUN, "model.") if args.init_from is not None else _RESOLVED_BY_THE_RUN
        for key in sorted(set(saved) | set(new)):
            if key.startswith(skipped) or key in _TRAINING_LENGTH or saved.get(key) == new.get(key):
                continue
            if new.get(key) == "auto" and key in saved:  # the run resolved it when it started
                continue
            differences.append(f"{key}: {saved.get(key, '(unset)')!r} -> {new.get(key, '(unset)')!r}")
    saved_inputs = run.read_invocation()
    if saved_inputs:
        current = invocation(args, demo)
        for key, label in (
            ("data", "--data"),
            ("data_sha256", "the --data file's content"),
            ("benchmark_cache", "--benchmark-cache"),
            ("init_from", "--init-from"),
        ):
            if saved_inputs.get(key) != current[key]:
                shown = f"{saved_inputs.get(key)!r} -> {current[key]!r}" if key != "data_sha256" else "changed"
                differences.append(f"{label}: {shown}")
    return differences


def configure_logging() -> None:
    """Our INFO lines and every library's warnings on stderr, each line once.

    Lightning prints through the handler it attaches to the ``lightning`` logger, and its records
    also propagate to the root logger: with a root handler beside it, each line would appear twice.
    """
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("detectors").setLevel(logging.INFO)
    logging.getLogger("lightning").propagate = False


def main(modality: str, support: ModalitySupport) -> None:
    """``python -m detectors.<modality>.fit``: every registered architecture of the modality."""
    from detectors.registry import default_detector, list_detectors

    configure_logging()
    torch.set_float32_matmul_precision("high")
    run_fit(modality, support, list_detectors(modality), default_detector(modality), sys.argv[1:])
