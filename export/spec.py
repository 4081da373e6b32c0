"""What a detector hands to the writer to become a benchmark submission."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

MODALITIES = ("image", "video", "audio")


@dataclass
class ExportSpec:
    """Everything ``write_submission`` needs; produced by ``Detector.export_spec()``.

    ``network_class`` is the network the detector trains (its source, and what it uses from this
    project, is bundled into model.py by :func:`export.bundle.bundle`); the generated ``load_model``
    builds ``CalibratedNetwork(network_class(num_classes=..., **init_kwargs), num_classes)``, whose
    state dict is ``state_dict`` (keys ``network.*`` and ``calibration.scale`` / ``calibration.bias``).
    ``init_kwargs`` are written under ``model:`` in model_config.yaml, so they must be plain YAML data.
    ``preprocessing`` is ``{"resize": [H, W]}`` (+ ``num_frames``, ``frame_rate`` for video) or
    ``{"sample_rate": 16000, "duration_seconds": 6.0}``.
    """

    modality: str
    network_class: type[nn.Module]
    init_kwargs: dict
    state_dict: dict[str, torch.Tensor]
    preprocessing: dict
    num_classes: int = 2
    name: str = "detector"
    version: str = "1.0.0"
    extra_files: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.modality not in MODALITIES:
            raise ValueError(f"ExportSpec.modality must be one of {MODALITIES}, got {self.modality!r}")
        if not (isinstance(self.network_class, type) and issubclass(self.network_class, nn.Module)):
            raise ValueError(f"ExportSpec.network_class must be an nn.Module class, got {self.network_class!r}")
        if int(self.num_classes) < 1:
            raise ValueError(f"ExportSpec.num_classes must be >= 1, got {self.num_classes}")
        bad = [key for key, value in self.state_dict.items() if not isinstance(value, torch.Tensor)]
        if bad:
            raise ValueError(f"ExportSpec.state_dict values must be tensors: {bad[:5]}")
        # weights_file is the loader's; a dtype under model: is silently ignored by the benchmark.
        reserved = {"weights_file", "dtype", "num_classes"} & set(self.init_kwargs)
        if reserved:
            raise ValueError(f"ExportSpec.init_kwargs may not use the reserved key(s) {sorted(reserved)}")
