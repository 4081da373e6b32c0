"""The Detector interface every architecture implements, and saving/loading trained detectors.

A detector is an ``nn.Module`` with a config object (architecture separate from weights) and the
timm-style split ``forward_features`` -> ``forward_head``. ``forward`` takes the benchmark's input
(uint8 or float 0..255; normalisation happens inside) and returns calibrated logits ``[B, C]``.
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
from detectors.config import from_dict, to_dict
from detectors.errors import CheckpointError, ConfigError, state_dict_mismatch, unreadable_weights_reason

if TYPE_CHECKING:
    from detectors.backbones import Backbone, BackboneConfig
    from detectors.tuning import TuningConfig
    from export.spec import ExportSpec

DETECTOR_CONFIG_FILE = "detector.yaml"
DETECTOR_WEIGHTS_FILE = "detector.safetensors"
CALIBRATION_FILE = "calibration.json"


class Detector(nn.Module):
    """Base class: subclasses set ``arch``, ``modality``, ``config_class`` and the forward pieces."""

    arch: ClassVar[str]
    modality: ClassVar[str]
    config_class: ClassVar[type]
    supported_num_classes: ClassVar[tuple[int, ...]] = (2, 3)  # 3: real / synthetic / semisynthetic

    def __init__(self, config: Any) -> None:
        super().__init__()
        self.config = config
        if self.num_classes not in self.supported_num_classes:
            raise ConfigError(None, "model.num_classes", f"{self.arch} supports {list(self.supported_num_classes)} "
                                                         f"classes, got {self.num_classes}")
        self.calibrator = LogitCalibrator(self.num_classes)
        self.calibrator.requires_grad_(False)

    def attach_backbone(self, backbone: "BackboneConfig", tuning: "TuningConfig") -> "Backbone":
        """Build and tune ``self.backbone``; the resolved architecture goes back into the config so
        :func:`load_detector` rebuilds the run offline."""
        from detectors.tuning import build_tuned_backbone

        self.backbone = build_tuned_backbone(backbone, tuning,
                                             allow_random_fallback=getattr(self.config, "allow_random_backbone", False))
        self.config.backbone = self.backbone.config
        return self.backbone

    def set_gradient_checkpointing(self, enabled: bool = True) -> None:
        """Recompute the backbone's activations in backward (a training setting, kept in the config)."""
        backbone, tuning = getattr(self, "backbone", None), getattr(self.config, "tuning", None)
        if backbone is None or tuning is None:
            raise ConfigError(None, "gradient_checkpointing", f"{self.arch} has no backbone to checkpoint")
        backbone.set_gradient_checkpointing(enabled)
        tuning.gradient_checkpointing = enabled

    # ----------------------------------------------------------------- construction
    @classmethod
    def from_config(cls, data: dict[str, Any] | Any) -> "Detector":
        if isinstance(data, cls.config_class):
            return cls(data)
        return cls(from_dict(cls.config_class, data, where="model"))

    def config_dict(self) -> dict[str, Any]:
        return to_dict(self.config)

    @property
    def num_classes(self) -> int:
        return int(getattr(self.config, "num_classes", 2))

    # ----------------------------------------------------------------- forward
    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward_uncalibrated(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(features, raw logits): what training and calibration fitting use."""
        features = self.forward_features(x)
        return features, self.forward_head(features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.calibrator(self.forward_uncalibrated(x)[1])

    def forward_batch(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """(features, raw logits) of a training/evaluation batch.

        Batches may carry precomputed ``features`` (e.g. ReStraV's cached trajectory features of a
        frozen backbone) instead of media ``x``; then only the head runs.
        """
        if "features" in batch:
            features = batch["features"]
            return features, self.forward_head(features)
        return self.forward_uncalibrated(batch["x"])

    def targets(self, batch: dict[str, Any], logits: torch.Tensor) -> torch.Tensor:
        """Classification targets for the rows of ``logits``: the binary label (0 real, 1 fake) or,
        for 3-class heads, the class index. Detectors whose training logits are per frame override it."""
        return batch["class_index"] if self.num_classes == 3 else batch["label"]

    def training_losses(self, features: torch.Tensor, logits: torch.Tensor, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """Method-specific auxiliary losses (already weighted), added to the classification loss."""
        return {}

    # ----------------------------------------------------------------- training hooks
    def parameter_groups(self, lr: float, backbone_lr: float | None, weight_decay: float) -> list[dict[str, Any]]:
        """AdamW groups: backbone vs head learning rates; no weight decay on norms and biases."""
        groups: dict[tuple[bool, bool], list[nn.Parameter]] = {}
        for name, parameter in self.named_parameters():
            if not parameter.requires_grad:
                continue
            in_backbone = name.startswith("backbone.")
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
        backbone = getattr(self, "backbone", None)
        if backbone is None:
            return {}
        return {"backbone": backbone.config.name, "backbone_weights": backbone.weights_origin,
                "backbone_family": backbone.info.family, "backbone_source": backbone.info.source}

    # ----------------------------------------------------------------- export
    def preprocessing(self) -> dict[str, Any]:
        """The ``preprocessing`` section of this detector's model_config.yaml: what the benchmark
        feeds it (resize, frames, sample rate). Cheap, unlike :meth:`export_spec`, which converts the
        backbone; ``detect --run`` and the export both read it here."""
        raise NotImplementedError(f"{type(self).__name__} does not declare its benchmark preprocessing")

    def export_spec(self) -> "ExportSpec":
        raise NotImplementedError(f"{type(self).__name__} does not implement export")

    def example_input(self, batch_size: int = 2) -> torch.Tensor:
        raise NotImplementedError

    def calibration_export_state(self, prefix: str = "calibration.") -> dict[str, torch.Tensor]:
        """The fitted calibrator as plain weights of the standalone ``LogitAffine``: x * scale + bias."""
        return {f"{prefix}scale": torch.tensor([1.0 / self.calibrator.temperature], dtype=torch.float32),
                f"{prefix}bias": torch.tensor(self.calibrator.bias, dtype=torch.float32)}


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
        raise ConfigError(config_path, None, "no trained detector here (detector.yaml missing); is this a run directory?")
    if not weights_path.is_file():
        raise CheckpointError(f"{weights_path}: weights file missing")
    config = load_yaml(config_path)
    model_config = config.get("model", {})
    backbone = model_config.get("backbone")
    if isinstance(backbone, dict):
        backbone["pretrained"] = False  # architecture only: the trained weights follow
    # Likewise a starting checkpoint (CakeLens' model.weights): it need not exist where the run is
    # loaded, and reading it would be wasted; the path stays in the config as provenance.
    initial_weights = model_config.get("weights")
    if initial_weights is not None:
        model_config["weights"] = None
    detector = create_detector(config["arch"], model_config)
    if initial_weights is not None:
        detector.config.weights = initial_weights
    try:
        state = load_file(str(weights_path), device=str(map_location))
    except Exception as error:  # safetensors raises its own error types
        raise CheckpointError(f"{weights_path}: {unreadable_weights_reason(weights_path, error)}") from error
    mismatch = state_dict_mismatch(detector.state_dict(), state)
    if mismatch:
        raise CheckpointError(f"{weights_path}: weights do not match the {config['arch']} architecture: {mismatch}")
    detector.load_state_dict(state)
    calibration_path = directory / CALIBRATION_FILE
    if calibration_path.is_file():
        detector.calibrator.load_state(json.loads(calibration_path.read_text()))
    return detector.eval()
