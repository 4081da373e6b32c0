"""Small helpers shared by test modules (importable: the tests folder is on sys.path)."""

from __future__ import annotations

import textwrap
from typing import Any

from detectors.data.datamodule import build_dataset


def stage_dataset(detector: Any, items: list, stage: str, data: dict | None = None) -> Any:
    """What the DataModule builds for ``stage`` from the detector's recipe (features extracted),
    with the training hook run for ``stage == "train"`` as the LightningModule's ``setup`` does."""
    config = detector.data_config(data or {})
    dataset = build_dataset(detector.data_recipe(stage, config), items, stage)
    if stage == "train":
        detector.on_train_data(dataset, config)
    return dataset


# A detector defined outside the library in one module (tests/test_toy_detector.py,
# tests/test_fault_injection.py): the pattern of docs/architecture.md, "Adding a detector".
TOY_DETECTOR = textwrap.dedent('''
    """A toy image detector: mean colour and a tiny convolution -> linear head."""

    from __future__ import annotations

    from dataclasses import dataclass
    from typing import Any, Literal

    import torch
    import torch.nn as nn

    from detectors.base import Detector
    from detectors.config import setting
    from detectors.data.dataset import SampleRecipe
    from detectors.image.data import ImageDataConfig, image_recipe
    from detectors.networks.layers import DetectorNetwork, ImageNormalize
    from detectors.registry import register_detector


    @dataclass
    class ToyConfig:
        channels: int = setting(4, help="convolution channels", ge=1)
        image_size: int = setting(32, help="input side", ge=8)
        num_classes: Literal[2] = setting(2, help="real vs fake")


    class ToyNetwork(DetectorNetwork):
        """[B, 3, H, W] uint8 -> normalise -> conv -> ReLU -> global mean -> Linear -> logits."""

        def __init__(self, channels: int = 4, num_classes: int = 2):
            super().__init__()
            self.normalize = ImageNormalize((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
            self.conv = nn.Conv2d(3, channels, kernel_size=3, padding=1)
            self.head = nn.Linear(channels, num_classes)

        def forward_features(self, images: torch.Tensor) -> torch.Tensor:
            return torch.relu(self.conv(self.normalize(images))).mean(dim=(2, 3))

        def forward_head(self, features: torch.Tensor) -> torch.Tensor:
            return self.head(features)


    @register_detector
    class ToyDetector(Detector):
        arch = "toy_image"
        modality = "image"
        config_class = ToyConfig
        data_config_class = ImageDataConfig

        def __init__(self, config: ToyConfig) -> None:
            super().__init__(config)
            self.net = self.build_network(ToyNetwork, channels=config.channels)

        def data_recipe(self, stage: str, data: ImageDataConfig) -> SampleRecipe:
            return image_recipe(stage, data, self.config.image_size)

        def preprocessing(self) -> dict[str, Any]:
            return {"resize": [self.config.image_size, self.config.image_size]}
''')
