"""The typed configuration of a training run: one dataclass per section, defaults in one place.

``RunConfig`` (built per architecture by :func:`run_config_class`) has the sections ``model`` (the
detector's config class), ``data`` (its data config class), ``split``, ``loss``, ``optim``,
``calibration`` and ``trainer``, plus ``seed``. Defaults live in the dataclasses; an architecture's
YAML (``configs/<modality>/<arch>.yaml``) only overrides them, and may hold a ``demo:`` mapping of
overrides for the built-in demo. :func:`resolve_run_config` merges the layers a command gives
(defaults <- arch YAML <- demo <- ``--config`` <- flags <- ``--set``) and parses the result, so every
error names the key, where it was set and a close match, before anything is built.

``python -m detectors.config ARCH`` prints every setting with its type, value and help.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import re
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from calibration.losses import LossConfig
from detectors import cli
from detectors.config import (
    CONFIG_ROOT,
    deep_merge,
    load_yaml,
    parse,
    record_sources,
    schema_rows,
    set_dotted,
    setting,
    source_of,
    to_dict,
    unknown_key_problem,
)
from detectors.errors import ConfigError

if typing.TYPE_CHECKING:
    from detectors.base import Detector

DEMO_KEY = "demo"  # the arch YAML's section of demo-only overrides


@dataclass
class DataConfig:
    """Loader settings every detector shares; a detector's ``data_config_class`` adds its own."""

    batch_size: int = setting(32, help="training batch size", ge=1)
    eval_batch_size: int | None = setting(None, help="validation/calibration batch size (null: batch_size)", ge=1)
    num_workers: int = setting(2, help="DataLoader worker processes decoding media", ge=0)
    balanced_sampling: bool = setting(True, help="draw every dataset and label equally often (dataset weight: share)")


@dataclass
class SplitConfig:
    val: float = setting(0.15, help="share of each dataset and label held out for validation", ge=0, lt=1)
    calibration: float = setting(0.15, help="share held out to fit the calibrator", ge=0, lt=1)
    seed: int | None = setting(None, help="split seed (null: the run's seed)")

    def __post_init__(self) -> None:
        if self.val + self.calibration >= 1:
            raise ConfigError(
                None, "calibration", f"val + calibration must leave a train share, got {self.val} + {self.calibration}"
            )


@dataclass
class OptimConfig:
    optimizer: Literal["adamw", "adam", "sgd"] = setting("adamw", help="optimiser")
    lr: float = setting(1e-3, help="learning rate (heads; tuned backbone parameters: backbone_lr)", gt=0)
    backbone_lr: float | None = setting(None, help="learning rate of tuned backbone parameters (null: lr)", gt=0)
    weight_decay: float = setting(0.01, help="decoupled weight decay (never on norms and biases)", ge=0)
    betas: tuple[float, float] = setting((0.9, 0.999), help="AdamW/Adam betas", ge=0, lt=1)
    momentum: float = setting(0.9, help="SGD momentum", ge=0, lt=1)
    scheduler: Literal["cosine", "cosine_restarts", "none"] = setting(
        "cosine", help="cosine (with warmup), cosine_restarts (GenD) or none"
    )
    warmup_fraction: float = setting(0.05, help="cosine: share of the steps spent warming up", ge=0, le=1)
    restart_period: int | None = setting(None, help="cosine_restarts: steps per cycle (null: half the steps)", ge=1)


@dataclass
class CalibrationConfig:
    fit: bool = setting(True, help="fit the LogitCalibrator on the calibration split after training")


# Trainer arguments the run directory owns (checkpoints, loggers, atomic writes; barebones and
# fast_dev_run switch those off): every other lightning.Trainer argument is a trainer setting.
RUN_OWNED_TRAINER_ARGUMENTS = frozenset(
    {
        "callbacks",
        "logger",
        "plugins",
        "default_root_dir",
        "enable_checkpointing",
        "enable_model_summary",
        "barebones",
        "fast_dev_run",
    }
)
_TRAINER_DEFAULTS = {"max_epochs": 10, "log_every_n_steps": 5, "precision": "32-true"}
_TRAINER_BOUNDS = {
    "max_epochs": {"ge": 1},
    "num_nodes": {"ge": 1},
    "accumulate_grad_batches": {"ge": 1},
    "log_every_n_steps": {"ge": 1},
    "limit_train_batches": {"gt": 0},
    "limit_val_batches": {"ge": 0},
    "gradient_clip_val": {"ge": 0},
    "check_val_every_n_epoch": {"ge": 1},
}


@functools.cache
def trainer_config_class() -> type:
    """``TrainerConfig``: every ``lightning.Trainer`` argument the run does not own (its annotation,
    its default, the first sentence of its documentation), plus the checkpoint/early-stopping keys."""
    import lightning as L

    signature = inspect.signature(L.Trainer.__init__)
    hints = typing.get_type_hints(L.Trainer.__init__)
    docs = _argument_docs(L.Trainer.__init__.__doc__ or "")
    fields: list[tuple[str, Any, Any]] = [
        (
            "monitor",
            str,
            setting(
                "val/score", help="validation metric that picks the best checkpoint (modes: min for *loss, else max)"
            ),
        ),
        (
            "early_stopping_patience",
            int | None,
            setting(None, help="stop after this many validations without improvement (null: never)", ge=1),
        ),
        ("early_stopping_min_delta", float, setting(0.0, help="smallest change that counts as improvement", ge=0)),
    ]
    for name, parameter in signature.parameters.items():
        if name == "self" or name in RUN_OWNED_TRAINER_ARGUMENTS:
            continue
        default = _TRAINER_DEFAULTS.get(name, parameter.default)
        bounds = _TRAINER_BOUNDS.get(name, {})
        fields.append(
            (name, hints[name], setting(default, help=f"lightning.Trainer: {docs.get(name, name)}", **bounds))
        )
    cls = dataclasses.make_dataclass("TrainerConfig", fields)
    cls.__module__ = __name__
    return cls


def parse_trainer_config(values: Any) -> Any:
    """A ``trainer:`` mapping as a ``TrainerConfig``; a Trainer argument the run owns is named as such."""
    try:
        return parse(trainer_config_class(), values, "trainer")
    except ConfigError as error:
        if (error.where or "").rpartition(".")[2] in RUN_OWNED_TRAINER_ARGUMENTS:
            raise ConfigError(
                error.file, error.where, "is owned by the run directory (checkpoints, loggers, callbacks); remove it"
            ) from None
        raise


def _argument_docs(doc: str) -> dict[str, str]:
    """First sentence of each ``name: text`` entry of a Google-style ``Args:`` section."""
    entries: dict[str, str] = {}
    current = None
    for line in doc.splitlines():
        match = re.match(r"\s{8,12}(\w+): (.*)", line)
        if match:
            current = match.group(1)
            entries[current] = match.group(2).strip()
        elif current and line.strip() and not entries[current].rstrip().endswith("."):
            entries[current] += " " + line.strip()
        elif not line.strip():
            current = None
    return {name: re.split(r"(?<=\.)\s", text, maxsplit=1)[0] for name, text in entries.items()}


@functools.cache
def run_config_class(detector_cls: type[Detector]) -> type:
    """The ``RunConfig`` dataclass of one architecture (its model and data sections typed)."""
    cls = dataclasses.make_dataclass(
        f"RunConfig_{detector_cls.arch}",
        [
            ("arch", Literal[detector_cls.arch], setting(detector_cls.arch, help="detector architecture")),
            ("modality", Literal[detector_cls.modality], setting(detector_cls.modality, help="image, video or audio")),
            ("seed", int, setting(0, help="seed of the run (weights, sampling, augmentation, split)", ge=0)),
            (
                "model",
                detector_cls.config_class,
                field(default_factory=detector_cls.config_class, metadata={"help": "the detector"}),
            ),
            (
                "data",
                detector_cls.data_config_class,
                field(default_factory=detector_cls.data_config_class, metadata={"help": "data loading"}),
            ),
            ("split", SplitConfig, field(default_factory=SplitConfig, metadata={"help": "held-out splits"})),
            ("loss", LossConfig, field(default_factory=LossConfig, metadata={"help": "classification loss"})),
            ("optim", OptimConfig, field(default_factory=OptimConfig, metadata={"help": "optimiser"})),
            (
                "calibration",
                CalibrationConfig,
                field(default_factory=CalibrationConfig, metadata={"help": "calibration"}),
            ),
            (
                "trainer",
                trainer_config_class(),
                field(default_factory=trainer_config_class(), metadata={"help": "lightning.Trainer"}),
            ),
        ],
    )
    cls.__module__ = __name__
    return cls


def arch_config_file(detector_cls: type[Detector]) -> Path:
    return CONFIG_ROOT / detector_cls.modality / f"{detector_cls.arch}.yaml"


def arch_overrides(detector_cls: type[Detector]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(overrides, demo overrides) of the architecture's YAML; empty when it ships none."""
    path = arch_config_file(detector_cls)
    if not path.is_file():
        return {}, {}
    overrides = load_yaml(path)
    demo = overrides.pop(DEMO_KEY, None) or {}
    if not isinstance(demo, dict):
        raise ConfigError(path, DEMO_KEY, f"expected a mapping of demo overrides, got {demo!r}")
    return overrides, demo


@dataclass
class ConfigLayers:
    """The raw settings of a command, layer by layer, with where each key was set last."""

    detector_cls: type
    raw: dict[str, Any] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)

    def add(self, values: Mapping[str, Any], label: str) -> None:
        self.raw = deep_merge(self.raw, dict(values))
        record_sources(self.sources, values, label)

    def set(self, dotted: str, value: Any, label: str) -> None:
        """One dotted key (``trainer.max_epochs``), set by ``label`` (a flag, ``--set``)."""
        values: dict[str, Any] = {}
        set_dotted(values, dotted, value)
        node = self.raw
        for part in dotted.split(".")[:-1]:  # ``--set data=5`` then ``--set data.x=1``: say which is wrong
            node = node.get(part) if isinstance(node, dict) else None
            if node is not None and not isinstance(node, dict):
                raise ConfigError(
                    self.source(part) or label, dotted, f"cannot set it: {part} holds {node!r}, not a mapping"
                )
        self.add(values, label)

    def source(self, dotted: str) -> str | None:
        return source_of(self.sources, dotted)


def base_layers(detector_cls: type[Detector], demo: bool) -> ConfigLayers:
    """The architecture's YAML overrides (and its demo overrides) on top of the dataclass defaults."""
    layers = ConfigLayers(detector_cls)
    overrides, demo_overrides = arch_overrides(detector_cls)
    path = str(arch_config_file(detector_cls))
    layers.add(overrides, path)
    if demo:
        layers.add(demo_overrides, f"{path} ({DEMO_KEY})")
    return layers


def resolve_run_config(layers: ConfigLayers) -> Any:
    """Parse the merged layers into the arch's ``RunConfig``; unknown keys get the best hint we have
    (another section's key, another architecture's setting, a flag that does not apply)."""
    cls = layers.detector_cls
    try:
        return parse(run_config_class(cls), layers.raw, "", layers.source)
    except ConfigError as error:
        if not (error.where and error.problem.startswith("unknown key")):
            raise
        raise explain_unknown_key(cls, error) from None


def explain_unknown_key(detector_cls: type[Detector], error: ConfigError) -> ConfigError:
    from detectors.registry import detector_class, list_detectors

    dotted = error.where or ""
    section, _, leaf = dotted.rpartition(".")
    rows = {row[0] for row in schema_rows(run_config_class(detector_cls))}
    top = {
        name: {key.split(".")[1] for key in rows if key.startswith(f"{name}.")}
        for name in {key.split(".")[0] for key in rows if "." in key}
    }
    known = top.get(section) if section else {key.split(".")[0] for key in rows}
    if section == "trainer" and leaf in RUN_OWNED_TRAINER_ARGUMENTS:
        return ConfigError(
            error.file, dotted, "is owned by the run directory (checkpoints, loggers, callbacks); remove it"
        )
    if known is None:  # deeper than a section (model.tuning.lora.rank): the parser's message stands
        return error
    elsewhere = [f"{name}.{key}" for name, keys in top.items() if name != section for key in keys]
    owners = []
    for arch in list_detectors(detector_cls.modality):
        if arch == detector_cls.arch:
            continue
        other = {row[0] for row in schema_rows(run_config_class(detector_class(arch)))}
        if dotted in other:
            owners.append(arch)
    context = f" for {detector_cls.arch}"
    problem = unknown_key_problem(dotted, known, elsewhere, context, owners)
    flag = str(error.file or "")
    if flag.startswith("--") and flag != "--set":
        # the user typed a flag, not the key: a guess at a similar key would only confuse
        known_part = problem[problem.find("; known") :]
        note = f" (a setting of {', '.join(owners)})" if owners else ""
        problem = f"{detector_cls.arch} does not use this setting{note}, so {flag} does not apply to it{known_part}"
    return ConfigError(error.file, dotted, problem)


def run_config_dict(config: Any) -> dict[str, Any]:
    """The resolved configuration as written to a run's config.yaml."""
    return to_dict(config)


# --------------------------------------------------------------------------- schema dump
def schema_main(argv: list[str] | None = None) -> int:
    from detectors.registry import detector_class, list_detectors

    parser = cli.ArgumentParser(
        prog="python -m detectors.config",
        description="Every setting of a detector architecture: key, type, value, help.",
    )
    parser.add_argument("arch", nargs="?", help=f"one of: {', '.join(list_detectors())}")
    parser.add_argument("--demo", action="store_true", help="with the built-in demo's overrides")
    parser.add_argument("--section", help="only this section (model, data, split, loss, optim, calibration, trainer)")
    args = parser.parse_args(argv)
    if args.arch is None:
        for arch in list_detectors():
            print(f"{arch:<16} {detector_class(arch).modality}")
        return 0
    try:
        cls = detector_class(args.arch)
        layers = base_layers(cls, demo=args.demo)
        config = resolve_run_config(layers)
    except (KeyError, ConfigError) as error:
        parser.exit(2, f"error: {error.args[0] if isinstance(error, KeyError) else error}\n")
    rows = schema_rows(type(config), "", config)
    if args.section:
        rows = [row for row in rows if row[0].startswith(f"{args.section}.")]
    print(
        f"# {cls.arch} ({cls.modality}): every setting, with the value this architecture starts from. "
        f"* = set by {arch_config_file(cls).relative_to(CONFIG_ROOT.parent)}; override with --config or --set."
    )
    width = max(len(row[0]) for row in rows) + 2
    for key, type_text, value, help_text in rows:
        marker = "*" if key in layers.sources else " "
        print(f"{key:<{width}}{marker} {value!r:<30} {type_text}")
        if help_text:
            print(f"{'':<{width + 2}}{help_text}")
    return 0
