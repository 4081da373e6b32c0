"""One LightningDataModule for every modality: split items -> datasets -> loaders.

The detector declares its samples per stage (``Detector.data_recipe`` -> ``SampleRecipe``); this
module owns the split, dataset-balanced sampling, the data-stage feature extraction and the loader
settings. Under DDP, Lightning wraps the weighted
sampler in a distributed sampler automatically.
"""

from __future__ import annotations

import zlib
from typing import Any, Callable, Sequence

import lightning as L
import torch
from lightning.fabric.utilities.seed import pl_worker_init_function
from torch.utils.data import DataLoader, Dataset, WeightedRandomSampler, get_worker_info

from detectors.data.catalog import MediaItem, balanced_sample_weights
from detectors.data.dataset import MediaDataset, SampleRecipe, collate_skip
from detectors.settings import DataConfig

SPLITS = ("train", "val", "calibration", "test")


def reseed_private_generators(root: Any, seed: int, max_depth: int = 16) -> int:
    """Reseed every ``torch.Generator`` held by ``root`` or the objects it holds (transforms with
    their own generator, e.g. the audio augmentations), each from ``seed`` and its attribute path.

    Forked DataLoader workers inherit identical copies of such generators; without this every worker
    would draw the same "random" augmentation for its i-th sample. Returns how many were reseeded.
    """
    seen: set[int] = set()
    count = 0

    def visit(obj: Any, path: str, depth: int) -> None:
        nonlocal count
        if depth > max_depth or id(obj) in seen:
            return
        seen.add(id(obj))
        if isinstance(obj, torch.Generator):
            obj.manual_seed((seed * 1_000_003 + zlib.crc32(path.encode()) * 7919) % (2**63 - 1))
            count += 1
        elif isinstance(obj, dict):
            for key, value in obj.items():
                visit(value, f"{path}.{key}", depth + 1)
        elif isinstance(obj, (list, tuple)):
            for index, value in enumerate(obj):
                visit(value, f"{path}[{index}]", depth + 1)
        elif hasattr(obj, "__dict__") and not isinstance(obj, (torch.Tensor, torch.nn.Parameter)):
            visit(vars(obj), path, depth + 1)

    visit(root, "dataset", 0)
    return count


def seed_worker(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: Lightning's per-worker seeding of the global RNGs, plus distinct
    seeds for generators that transforms keep privately."""
    pl_worker_init_function(worker_id)
    info = get_worker_info()
    if info is not None:
        reseed_private_generators(info.dataset, info.seed)


class EpochSeededSampler(WeightedRandomSampler):
    """``WeightedRandomSampler`` whose draws depend on ``(seed, epoch)`` only.

    Lightning calls ``set_epoch`` before every training epoch, so a run resumed at epoch k draws
    what the uninterrupted run would have drawn at epoch k, not epoch 0's samples again.
    """

    def __init__(self, weights: Sequence[float], num_samples: int, seed: int) -> None:
        self.seed = seed
        super().__init__(
            weights, num_samples=num_samples, replacement=True, generator=torch.Generator().manual_seed(seed)
        )

    def set_epoch(self, epoch: int) -> None:
        self.generator.manual_seed(self.seed * 1_000_003 + epoch)


def build_dataset(
    recipe: SampleRecipe, items: list[MediaItem], stage: str, device: torch.device | str | None = None
) -> Dataset:
    """The dataset of ``items`` a :class:`SampleRecipe` describes: media samples, or, for a recipe
    with ``features``, the frozen module's features computed (or read from the cache) now."""
    if recipe.features is not None:
        from detectors.data.features import build_feature_dataset

        return build_feature_dataset(items, recipe.features, stage, device)
    return MediaDataset.from_recipe(items, recipe)


class MediaDataModule(L.LightningDataModule):
    """Split items -> the detector's datasets (its :class:`SampleRecipe` per stage) -> loaders.

    ``recipe(stage, data)`` is ``Detector.data_recipe``; a recipe with ``features`` makes the split a
    :class:`~detectors.data.features.FeatureDataset` (the frozen module runs once per item, in
    :meth:`setup` for the splits Lightning needs, else when a split is first asked for).
    """

    def __init__(
        self,
        items: list[MediaItem],
        recipe: Callable[[str, DataConfig], SampleRecipe],
        data: DataConfig,
        seed: int = 0,
        collate_fn: Callable = collate_skip,
    ) -> None:
        super().__init__()
        self.items = list(items)
        self.recipe = recipe
        self.data = data
        self.seed = seed
        self.collate_fn = collate_fn
        self.split_items = {name: [i for i in self.items if i.split == name] for name in SPLITS}
        unassigned = [i for i in self.items if i.split not in SPLITS]
        if unassigned:
            raise ValueError(
                f"{len(unassigned)} item(s) have no split, e.g. {unassigned[0].path}; call assign_splits first"
            )
        self._datasets: dict[str, Dataset] = {}

    @property
    def batch_size(self) -> int:
        return self.data.batch_size

    @property
    def eval_batch_size(self) -> int:
        return self.data.eval_batch_size or self.data.batch_size

    def setup(self, stage: str) -> None:
        """Build (and for feature recipes, extract) the datasets of the Lightning stage up front."""
        for split in {"fit": ("train", "val"), "validate": ("val",), "test": ("test",)}.get(stage, ()):
            self.dataset(split)

    def dataset(self, split: str) -> Dataset:
        if split not in self._datasets:
            # Evaluation splits are built under their own name ("val", "calibration", "test"): a
            # detector may treat them differently (CakeLens validates on whole videos).
            self._datasets[split] = build_dataset(
                self.recipe(split, self.data), self.split_items[split], split, self._device()
            )
        return self._datasets[split]

    def _device(self) -> torch.device | None:
        """Where feature extraction runs: the training device when attached to a Trainer."""
        trainer = getattr(self, "trainer", None)
        return trainer.strategy.root_device if trainer is not None else None

    def _loader(self, split: str, batch_size: int, sampler=None, shuffle: bool = False) -> DataLoader:
        workers = self.data.num_workers
        return DataLoader(
            self.dataset(split),
            batch_size=batch_size,
            sampler=sampler,
            shuffle=shuffle,
            num_workers=workers,
            pin_memory=torch.cuda.is_available(),
            persistent_workers=workers > 0 and split == "train",
            collate_fn=self.collate_fn,
            drop_last=False,
            worker_init_fn=seed_worker if workers > 0 else None,
        )

    def train_dataloader(self) -> DataLoader:
        items = self.split_items["train"]
        if not items:
            raise ValueError("the train split is empty")
        if self.data.balanced_sampling:
            sampler = EpochSeededSampler(balanced_sample_weights(items), num_samples=len(items), seed=self.seed)
            return self._loader("train", self.batch_size, sampler=sampler)
        return self._loader("train", self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", self.eval_batch_size)

    def calibration_dataloader(self) -> DataLoader:
        return self._loader("calibration", self.eval_batch_size)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", self.eval_batch_size)

    def loader(self, split: str) -> DataLoader:
        return self._loader(split, self.eval_batch_size)
