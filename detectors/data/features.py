"""The data stage of frozen-feature detectors: features of a frozen module, computed once per item.

A detector whose trainable part sees only the output of a frozen module (ReStraV: a frozen DINOv2
and the trajectory geometry; a frozen-backbone probe) declares a :class:`FeatureExtraction` in its
:class:`~detectors.data.dataset.SampleRecipe`. The DataModule then runs it over a split once: media
are decoded in DataLoader workers while the main process runs the module on the previous batch,
each item's features are stored in a :class:`~detectors.data.cache.FeatureCache` (keyed by the
module's identity and the loader's description of the input), and the split's dataset yields
``features`` instead of ``x``. Training then only runs the detector's head
(``Detector.forward_batch``), and a second run, another head or a sweep costs seconds. Under DDP
every item is computed by exactly one rank (round robin over the items not yet cached), and the
ranks then exchange their rows, so N processes do 1/N of the work each.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm  # not tqdm.auto: its asyncio variant calls iter() on a DataLoader twice (double workers)

from detectors.data.cache import FeatureCache
from detectors.data.catalog import MediaItem
from detectors.data.dataset import MediaDataset, collate_skip, is_empty_batch, labelled_sample, unreadable_sample

logger = logging.getLogger(__name__)


@dataclass
class FeatureExtraction:
    """Per-item features ``forward(load(path)[None])[0]`` of a frozen module (``forward`` defaults
    to ``extractor`` itself; the extractor is what moves to the device and runs in eval mode).

    ``identity`` names everything inside the extractor that shapes the features (weights digest,
    embedding settings): with ``cache_dir`` set, features are cached under it for the identity and
    the loader's ``cache_identity(path)``. ``batch_size`` items are decoded per DataLoader batch by
    ``num_workers`` workers; on a CPU, ``cpu_chunk`` items go through the extractor per forward pass
    (one 24-frame clip per pass is faster than several on a cache-bound CPU; ``None``: the whole batch).
    """

    extractor: nn.Module
    load: Callable[[str], torch.Tensor]
    identity: str
    cache_dir: Path | None = None
    batch_size: int = 8
    num_workers: int = 2
    cpu_chunk: int | None = 1
    forward: Callable[[torch.Tensor], torch.Tensor] | None = None

    def cache(self) -> FeatureCache | None:
        return None if self.cache_dir is None else FeatureCache(self.cache_dir, self.identity)

    def input_identity(self, path: str) -> list[Any] | None:
        describe = getattr(self.load, "cache_identity", None)
        if describe is None:
            return None
        try:
            return describe(path)
        except OSError:  # missing or unstat-able file: the decoder reports it and the item is skipped
            return None

    @torch.inference_mode()
    def run(
        self, paths: Sequence[str], device: torch.device | str | None = None, description: str = "features"
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(features [N, ...], valid [N] bool)``; unreadable items get ``valid`` False and NaN
        features; cached items skip decoding and the extractor."""
        cache = self.cache()
        # keys are taken before decoding: a file edited meanwhile is stored under its old identity
        identities = [self.input_identity(path) if cache is not None else None for path in paths]
        rows: dict[int, torch.Tensor] = {}
        missing = []
        for index, identity in enumerate(identities):
            cached = None if identity is None else cache.load(cache.key(identity))
            if cached is not None:
                rows[index] = cached
            else:
                missing.append(index)
        world, rank = _world()
        if world > 1:
            # under DDP each item is computed by one rank (and cached by it), then every rank gets all
            # rows; the ranks agree on rank 0's view of the cache (another rank may look later, when
            # part of it is being filled)
            agreed: list[Any] = [missing]
            torch.distributed.broadcast_object_list(agreed, src=0)
            missing = agreed[0]
            for index in set(range(len(paths))) - set(missing) - set(rows):
                value = cache.load(cache.key(identities[index]))
                if value is not None:  # (gone meanwhile: the item counts as unreadable, on this rank only)
                    rows[index] = value
            mine = missing[rank::world]
            computed = (
                self._compute([paths[i] for i in mine], mine, identities, cache, device, description) if mine else {}
            )
            gathered: list[Any] = [None] * world
            torch.distributed.all_gather_object(gathered, computed)
            for part in gathered:
                rows.update(part)
        elif missing:
            rows.update(self._compute([paths[i] for i in missing], missing, identities, cache, device, description))
        return _stack(rows, len(paths))

    def _compute(
        self,
        paths: list[str],
        positions: list[int],
        identities: list[Any],
        cache: FeatureCache | None,
        device: torch.device | str | None,
        description: str,
    ) -> dict[int, torch.Tensor]:
        items = [MediaItem(path=str(path), label=0, media_type="real", dataset="-", modality="-") for path in paths]
        loader = DataLoader(
            MediaDataset(items, load=self.load),
            batch_size=self.batch_size,
            num_workers=self.num_workers,
            collate_fn=collate_skip,
            pin_memory=torch.cuda.is_available(),
            prefetch_factor=2 if self.num_workers else None,
        )
        device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        extractor = self.extractor
        forward = self.forward or extractor
        original = next(extractor.parameters()).device
        was_training = extractor.training
        extractor.to(device).eval()
        rows: dict[int, torch.Tensor] = {}
        try:
            # workers decode the next batches while this one goes through the extractor
            for batch in tqdm(loader, desc=description, unit="batch", disable=len(loader) < 2):
                if is_empty_batch(batch):
                    continue
                inputs = batch["x"].to(device, non_blocking=True)
                step = len(inputs) if device.type == "cuda" or self.cpu_chunk is None else self.cpu_chunk
                values = torch.cat([forward(inputs[i : i + step]).float().cpu() for i in range(0, len(inputs), step)])
                for value, local in zip(values, batch["index"].tolist()):
                    position = positions[local]
                    rows[position] = value
                    if cache is not None and identities[position] is not None:
                        cache.save(cache.key(identities[position]), value)
        finally:
            extractor.to(original)
            extractor.train(was_training)
        return rows


def _world() -> tuple[int, int]:
    """(world size, rank) of the initialised process group, ``(1, 0)`` without one."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_world_size(), torch.distributed.get_rank()
    return 1, 0


def _stack(rows: dict[int, torch.Tensor], count: int) -> tuple[torch.Tensor, torch.Tensor]:
    valid = torch.zeros(count, dtype=torch.bool)
    if not rows:
        return torch.zeros(count, 0), valid
    shape = next(iter(rows.values())).shape
    features = torch.full((count, *shape), float("nan"))
    for index, value in rows.items():
        if value.shape == shape:
            features[index], valid[index] = value, True
    return features, valid


class FeatureDataset(Dataset):
    """Precomputed features, one sample per item: ``{"features", "label", "class_index", "index",
    "dataset_id"}``; an unreadable item gives :func:`unreadable_sample` (dropped and counted by
    ``collate_skip``). ``skipped`` counts them."""

    def __init__(self, items: Sequence[MediaItem], features: torch.Tensor, valid: torch.Tensor) -> None:
        self.items = list(items)
        self.features = features
        self.valid = valid
        self.dataset_names: list[str] = sorted({item.dataset for item in self.items})
        self._dataset_ids = {name: i for i, name in enumerate(self.dataset_names)}

    @property
    def skipped(self) -> int:
        return int((~self.valid).sum())

    def valid_features(self) -> torch.Tensor:
        return self.features[self.valid]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = self.items[index]
        if not self.valid[index]:
            return unreadable_sample(item.path)
        return labelled_sample(item, index, self._dataset_ids[item.dataset], features=self.features[index])


def build_feature_dataset(
    items: Sequence[MediaItem], extraction: FeatureExtraction, stage: str, device: torch.device | str | None = None
) -> FeatureDataset:
    features, valid = extraction.run([item.path for item in items], device, description=f"{stage} features")
    dataset = FeatureDataset(items, features, valid)
    if dataset.skipped:
        logger.warning("%s features: skipped %d unreadable item(s) of %d", stage, dataset.skipped, len(items))
    return dataset


__all__ = ["FeatureDataset", "FeatureExtraction", "build_feature_dataset"]
