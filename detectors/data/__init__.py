"""Generic data plumbing shared by all modalities: dataset catalogue, splits, MediaDataset.

``detectors.data.datamodule`` (Lightning) is not imported here, so using the catalogue does not
import Lightning.
"""

from detectors.data.catalog import (
    EXTENSIONS,
    MEDIA_TYPES,
    MODALITIES,
    SPLITS,
    DatasetEntry,
    MediaItem,
    assign_splits,
    balanced_sample_weights,
    collect_items,
    load_dataset_config,
    load_items,
    read_split,
    summarise,
    write_split,
)
from detectors.data.dataset import MediaDataset, collate_skip

__all__ = [
    "EXTENSIONS", "MEDIA_TYPES", "MODALITIES", "SPLITS", "DatasetEntry", "MediaItem", "MediaDataset",
    "assign_splits", "balanced_sample_weights", "collate_skip", "collect_items", "load_dataset_config",
    "load_items", "read_split", "summarise", "write_split",
]  # fmt: skip
