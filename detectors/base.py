"""The Detector interface every architecture implements, and saving/loading trained detectors.

A detector is an ``nn.Module`` holding

- ``config``: its settings (a dataclass, the ``model:`` section; architecture separate from weights);
- ``net``: the network it trains, a :class:`~detectors.networks.layers.DetectorNetwork` whose class
  is also what the exported ``model.py`` contains (:mod:`export.bundle` copies its source), built
  with :meth:`Detector.build_network` so its constructor arguments are recorded for the export;
- ``calibrator``: the :class:`~calibration.LogitCalibrator` fitted after training.

``forward`` takes the benchmark's input (uint8 or float 0..255; normalisation happens inside) and
returns calibrated logits ``[B, C]``. A detector adds what training needs around its network: the
samples it wants (:meth:`data_recipe`), auxiliary losses, optimiser groups and callbacks.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch
import yaml
from safetensors.torch import load_file, save_file
from torch import nn

from calibration import LogitCalibrator
from detectors.atomic import atomic_path, write_json, write_text
from detectors.config import parse, to_dict
from detectors.data.dataset import classification_target
from detectors.errors import CheckpointError, ConfigError, state_dict_mismatch, unreadable_weights_reason
from detectors.settings import DataConfig

if TYPE_CHECKING:
    from detectors.backbones import Backbone, BackboneConfig
    from detectors.data.dataset import SampleRecipe
    from detectors.tuning import TuningConfig
    from export.spec import ExportSpec

DETECTOR_CONFIG_FILE = "detector.yaml"
DETECTOR_WEIGHTS_FILE = "detector.safetensors"
CALIBRATION_FILE = "calibration.json"


class Detector(nn.Module):
    """Base class: subclasses set ``arch``, ``modality``, ``config_class`` (and ``data_config_class``),
    build ``self.net`` and declare their samples, preprocessing and training extras."""

    arch: ClassVar[str]
    modality: ClassVar[str]
    config_class: ClassVar[type]
    data_config_class: ClassVar[type] = DataConfig
    supported_num_classes: ClassVar[tuple[int, ...]] = (2, 3)  # 3: real / synthetic / semisynthetic
    modality_default: ClassVar[bool] = False  # the arch a modality's fit command trains without --arch
    gpu_precision: ClassVar[str | None] = None  # trainer.precision on a CUDA machine unless a layer sets it

    net: nn.Module

    def __init__(self, config: Any) -> None:
        super().__init__()
        self.config = config
        if self.num_classes not in self.supported_num_classes:
            raise ConfigError(
                None,
                "model.num_classes",
                f"{self.arch} supports {list(self.supported_num_classes)} classes, got {self.num_classes}",
            )
        self.calibrator = LogitCalibrator(self.num_classes)
        self.calibrator.requires_grad_(False)
        self.network_kwargs: dict[str, Any] = {}
        self._network_modules: dict[str, nn.Module] = {}

    # ----------------------------------------------------------------- construction
    @classmethod
    def from_config(cls, data: dict[str, Any] | Any) -> Detector:
        return cls(parse(cls.config_class, data, "model"))

    def config_dict(self) -> dict[str, Any]:
        return to_dict(self.config)

    @property
    def num_classes(self) -> int:
        return int(getattr(self.config, "num_classes", 2))

    def build_backbone(self, backbone: BackboneConfig, tuning: TuningConfig) -> Backbone:
        """Build and tune the backbone; its resolved architecture goes back into the config so
        :func:`load_detector` rebuilds the run offline."""
        from detectors.tuning import build_tuned_backbone

        built = build_tuned_backbone(
            backbone, tuning, allow_random_fallback=getattr(self.config, "allow_random_backbone", False)
        )
        self.config.backbone = built.config
        return built

    def build_network(self, network_class: type[nn.Module], **kwargs: Any) -> nn.Module:
        """``network_class(num_classes=..., **kwargs)``, recording the arguments for the export.

        Module arguments are training-time stand-ins: a :class:`~detectors.backbones.Backbone`
        (transformers/timm) is converted to its plain-torch equivalent at export; any other module
        (e.g. a memory-lean subclass of the network's own layer) must have the same weights as
        the layer the network builds without it.
        """
        kwargs = {"num_classes": self.num_classes, **kwargs}
        self._network_modules = {name: value for name, value in kwargs.items() if isinstance(value, nn.Module)}
        self.network_kwargs = {
            name: value for name, value in kwargs.items() if name not in self._network_modules and name != "num_classes"
        }
        return network_class(**kwargs)

    @property
    def backbone(self) -> Backbone | None:
        """The tuned transformers/timm backbone inside the network, if any."""
        from detectors.backbones import Backbone

        module = self._network_modules.get("backbone")
        return module if isinstance(module, Backbone) else None

    def set_gradient_checkpointing(self, enabled: bool = True) -> None:
        """Recompute the backbone's activations in backward (a training setting, kept in the config)."""
        backbone, tuning = self.backbone, getattr(self.config, "tuning", None)
        if backbone is None or tuning is None:
            raise ConfigError(None, "gradient_checkpointing", f"{self.arch} has no backbone to checkpoint")
        backbone.set_gradient_checkpointing(enabled)
        tuning.gradient_checkpointing = enabled

    # ----------------------------------------------------------------- forward
    def forward_features(self, x: torch.Tensor) -> Any:
        return self.net.forward_features(x)

    def forward_head(self, features: Any) -> torch.Tensor:
        return self.net.forward_head(features)

    def forward_uncalibrated(self, x: torch.Tensor) -> tuple[Any, torch.Tensor]:
        """(features, raw logits): what training and calibration fitting use."""
        features = self.forward_features(x)
        return features, self.forward_head(features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.calibrator(self.forward_uncalibrated(x)[1])

    def forward_batch(self, batch: dict[str, Any]) -> tuple[Any, torch.Tensor]:
        """(features, raw logits) of a training/evaluation batch.

        Batches may carry precomputed ``features`` (a frozen module's output, computed in the data
        stage) instead of media ``x``; then only the head runs.
        """
        if "features" in batch:
            features = batch["features"]
            return features, self.forward_head(features)
        return self.forward_uncalibrated(batch["x"])

    def targets(self, batch: dict[str, Any], logits: torch.Tensor | None = None) -> torch.Tensor:
        """Classification targets for the rows of ``logits`` (the binary label, or the class index
        for 3-class heads). Detectors whose training logits are per frame override it."""
        return classification_target(batch["label"], batch["class_index"], self.num_classes)

    def training_losses(self, features: Any, logits: torch.Tensor, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """Method-specific auxiliary losses (already weighted), added to the classification loss."""
        return {}

    # ----------------------------------------------------------------- data
    @classmethod
    def data_config(cls, values: dict[str, Any] | None = None) -> Any:
        """This detector's ``data:`` section from a mapping (defaults for missing keys)."""
        return parse(cls.data_config_class, values, "data")

    def data_recipe(self, stage: str, data: Any) -> SampleRecipe:
        """The samples this detector trains or is evaluated on for ``stage`` ("train", an evaluation
        split's name - "val", "calibration", "test" - or "eval" outside the DataModule), given the
        run's ``data`` section (an instance of ``data_config_class``)."""
        raise NotImplementedError(f"{type(self).__name__} does not declare its samples (data_recipe)")

    def on_train_data(self, dataset: Any, data: Any) -> None:
        """Called once the training split's dataset exists, before training (e.g. ReStraV sets its
        feature statistics from the training features)."""

    # ----------------------------------------------------------------- training hooks
    def parameter_groups(self, lr: float, backbone_lr: float | None, weight_decay: float) -> list[dict[str, Any]]:
        """AdamW groups: backbone vs head learning rates; no weight decay on norms and biases."""
        backbone_names = {id(p) for p in self.backbone.parameters()} if self.backbone is not None else set()
        groups: dict[tuple[bool, bool], list[nn.Parameter]] = {}
        for name, parameter in self.named_parameters():
            if not parameter.requires_grad:
                continue
            in_backbone = id(parameter) in backbone_names
            no_decay = parameter.ndim <= 1 or name.endswith(".bias")
            groups.setdefault((in_backbone, no_decay), []).append(parameter)
        result = []
        for (in_backbone, no_decay), params in groups.items():
            group_lr = backbone_lr if (in_backbone and backbone_lr is not None) else lr
            result.append({"params": params, "lr": group_lr, "weight_decay": 0.0 if no_decay else weight_decay})
        return result

    def extra_callbacks(self) -> list[Any]:
        """Lightning callbacks a method needs during training (e.g. CakeLens's TensorBoard logging)."""
        return []

    def summary(self) -> dict[str, Any]:
        """Extra facts for summary.json (e.g. backbone weight origin)."""
        backbone = self.backbone
        if backbone is None:
            return {}
        return {
            "backbone": backbone.config.name,
            "backbone_weights": backbone.weights_origin,
            "backbone_family": backbone.info.family,
            "backbone_source": backbone.info.source,
        }

    # ----------------------------------------------------------------- export
    def preprocessing(self) -> dict[str, Any]:
        """The ``preprocessing`` section of this detector's model_config.yaml: what the benchmark
        feeds it (resize, frames, sample rate). Cheap, unlike :meth:`export_spec`, which converts the
        backbone; ``detect --run`` and the export both read it here."""
        raise NotImplementedError(f"{type(self).__name__} does not declare its benchmark preprocessing")

    def example_input(self, batch_size: int = 2) -> torch.Tensor:
        """A random batch of what the benchmark feeds this detector (see :meth:`preprocessing`)."""
        preprocessing = self.preprocessing()
        generator = torch.Generator().manual_seed(0)
        if self.modality == "audio":
            from detectors.audio.io import BENCHMARK_NUM_SAMPLES

            return torch.rand(batch_size, BENCHMARK_NUM_SAMPLES, generator=generator) * 2 - 1
        height, width = (int(v) for v in preprocessing["resize"])
        shape = (batch_size, 3, height, width)
        if self.modality == "video":
            shape = (batch_size, int(preprocessing.get("num_frames", 16)), 3, height, width)
        return torch.randint(0, 256, shape, dtype=torch.uint8, generator=generator)

    def export_name(self) -> str:
        tuning = getattr(getattr(self.config, "tuning", None), "mode", None)
        return f"{self.arch}-{tuning}" if tuning else self.arch

    def export_spec(self) -> ExportSpec:
        """The submission of this detector: its network class and recorded constructor arguments,
        the network's weights with the backbone converted to plain torch, and the folded calibrator."""
        from detectors.backbones import Backbone
        from export.spec import ExportSpec

        kwargs = dict(self.network_kwargs)
        state: dict[str, torch.Tensor] = {}
        converted = []
        for name, module in self._network_modules.items():
            if isinstance(module, Backbone):
                resize = self.preprocessing().get("resize")
                kwargs[name], weights = module.export(tuple(int(v) for v in resize) if resize else None)
                state.update({f"network.{name}.{key}": value for key, value in weights.items()})
                converted.append(f"{name}.")
        state.update(
            {
                f"network.{key}": value
                for key, value in self.net.state_dict().items()
                if not key.startswith(tuple(converted))
            }
        )
        state.update(self.calibration_export_state())
        return ExportSpec(
            modality=self.modality,
            network_class=type(self.net),
            init_kwargs=to_dict(kwargs),
            state_dict=state,
            preprocessing=self.preprocessing(),
            num_classes=self.num_classes,
            name=self.export_name(),
        )

    def calibration_export_state(self, prefix: str = "calibration.") -> dict[str, torch.Tensor]:
        """The fitted calibrator as plain weights of ``LogitAffine``: x * scale + bias."""
        return {
            f"{prefix}scale": torch.tensor([1.0 / self.calibrator.temperature], dtype=torch.float32),
            f"{prefix}bias": torch.tensor(self.calibrator.bias, dtype=torch.float32),
        }


# --------------------------------------------------------------------------- persistence
def save_detector(detector: Detector, directory: str | Path) -> Path:
    """Write ``detector.yaml`` (arch + config), ``detector.safetensors`` and ``calibration.json``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    config = {"arch": detector.arch, "modality": detector.modality, "model": detector.config_dict()}
    write_text(directory / DETECTOR_CONFIG_FILE, yaml.safe_dump(config, sort_keys=False))
    state = {k: v.detach().contiguous().cpu() for k, v in detector.state_dict().items()}
    with atomic_path(directory / DETECTOR_WEIGHTS_FILE) as tmp:
        save_file(state, str(tmp), metadata={"arch": detector.arch})
    write_json(directory / CALIBRATION_FILE, detector.calibrator.state())
    return directory


def _upgrade_state(expected: dict[str, torch.Tensor], state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Weights saved before the networks moved under ``net.`` (``head.*`` -> ``net.head.*``,
    CakeLens' ``net.seq.*`` -> ``net.cnn.seq.*``): a key the detector lacks is renamed to the one
    expected key that ends with it (after ``net.``), if exactly one does; nothing else changes."""
    if all(key in expected for key in state):
        return state
    unclaimed = [key for key in expected if key not in state]
    upgraded = {}
    for key, value in state.items():
        if key not in expected:
            tail = key.removeprefix("net.")
            matches = [
                new
                for new in unclaimed
                if new.startswith("net.") and (new == f"net.{tail}" or new.endswith(f".{tail}"))
            ]
            if len(matches) == 1:
                key = matches[0]
                unclaimed.remove(key)
        upgraded[key] = value
    return upgraded


def load_detector(directory: str | Path, map_location: str | torch.device = "cpu") -> Detector:
    """Rebuild a detector saved by :func:`save_detector` (no hub access: the architecture is stored).

    ``calibration.json`` (written by fitting or by ``python -m calibration.sweep``) is authoritative
    for the calibrator.
    """
    from detectors.config import load_yaml
    from detectors.registry import create_detector

    directory = Path(directory)
    config_path = directory / DETECTOR_CONFIG_FILE
    weights_path = directory / DETECTOR_WEIGHTS_FILE
    if not config_path.is_file():
        raise ConfigError(
            config_path, None, "no trained detector here (detector.yaml missing); is this a run directory?"
        )
    if not weights_path.is_file():
        raise CheckpointError(f"{weights_path}: weights file missing")
    config = load_yaml(config_path)
    model_config = config.get("model") or {}
    backbone = model_config.get("backbone")
    if isinstance(backbone, dict):
        backbone["pretrained"] = False  # architecture only: the trained weights follow
    # Likewise a starting checkpoint (CakeLens' model.weights): it need not exist where the run is
    # loaded, and reading it would be wasted; the path stays in the config as provenance.
    initial_weights = model_config.get("weights")
    if initial_weights is not None:
        model_config["weights"] = None
    try:
        detector = create_detector(config["arch"], model_config)
    except KeyError as error:
        raise ConfigError(config_path, "arch", str(error.args[0])) from error
    if initial_weights is not None:
        detector.config.weights = initial_weights
    try:
        state = load_file(str(weights_path), device=str(map_location))
    except Exception as error:  # safetensors raises its own error types
        raise CheckpointError(f"{weights_path}: {unreadable_weights_reason(weights_path, error)}") from error
    expected = detector.state_dict()
    state = _upgrade_state(expected, state)
    mismatch = state_dict_mismatch(expected, state)
    if mismatch:
        raise CheckpointError(f"{weights_path}: weights do not match the {config['arch']} architecture: {mismatch}")
    detector.load_state_dict(state)
    calibration_path = directory / CALIBRATION_FILE
    if calibration_path.is_file():
        detector.calibrator.load_state(json.loads(calibration_path.read_text()))
    return detector.eval()
