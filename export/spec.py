"""What a detector hands to the writer to become a benchmark submission."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

MODALITIES = ("image", "video", "audio")


@dataclass
class ExportSpec:
    """Everything ``write_submission`` needs; produced by a detector's ``export_spec()``.

    ``sources`` are module names under ``export/standalone`` concatenated in order into model.py;
    ``model_class`` is the class (defined in those sources) that ``load_model`` builds with
    ``init_kwargs`` (written under ``model:`` in model_config.yaml, so they must be plain YAML data)
    and into which ``state_dict`` loads strictly. ``preprocessing`` is ``{"resize": [H, W]}`` (+
    ``num_frames``, ``frame_rate`` for video) or ``{"sample_rate": 16000, "duration_seconds": 6.0}``.
    """

    modality: str
    model_class: str
    sources: list[str]
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
        if not self.sources:
            raise ValueError("ExportSpec.sources is empty: name the standalone modules to concatenate")
        if int(self.num_classes) < 1:
            raise ValueError(f"ExportSpec.num_classes must be >= 1, got {self.num_classes}")
        bad = [key for key, value in self.state_dict.items() if not isinstance(value, torch.Tensor)]
        if bad:
            raise ValueError(f"ExportSpec.state_dict values must be tensors: {bad[:5]}")
        # weights_file is the loader's; a dtype under model: is silently ignored by the benchmark.
        reserved = {"weights_file", "dtype"} & set(self.init_kwargs)
        if reserved:
            raise ValueError(f"ExportSpec.init_kwargs may not use the reserved key(s) {sorted(reserved)}")
        given = self.init_kwargs.get("num_classes", self.num_classes)
        if int(given) != int(self.num_classes):
            raise ValueError(
                f"ExportSpec.init_kwargs num_classes={given} disagrees with num_classes={self.num_classes}"
            )
