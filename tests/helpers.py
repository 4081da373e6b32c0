"""Small helpers shared by test modules (importable: the tests folder is on sys.path)."""

from __future__ import annotations

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
