"""``MediaDataset``: items -> model-ready samples, skipping unreadable files instead of crashing."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch
from torch.utils.data import Dataset, default_collate

from detectors.data.catalog import MediaItem
from detectors.errors import MediaError

logger = logging.getLogger(__name__)


def load_media(load: Callable[[str], Any], path: str) -> Any:
    """``load(path)``, with whatever a decoder raises (OSError, RuntimeError, ...) turned into a
    :class:`MediaError` naming the file. A medium inside an archive or a parquet shard
    (``<container>::<member>``) reaches a decoder that reads bytes
    (:func:`~detectors.data.containers.reads_media_bytes`) from memory
    (:func:`~detectors.data.containers.member_data`), any other from its copy in the member cache
    (:func:`~detectors.data.containers.local_path`); its errors name the container and member."""
    from detectors.data.containers import accepts_media_bytes, is_member_ref, local_path, member_data

    try:
        if is_member_ref(path) and accepts_media_bytes(load):
            return load(member_data(path))
        if is_member_ref(path):
            local = str(local_path(path))
            try:
                return load(local)
            except MediaError as error:
                problem = error.problem.replace(local, path)
                raise MediaError(path, problem if error.path == local else f"{error.path}: {problem}") from error
        return load(path)
    except MediaError:
        raise
    except Exception as exc:  # decoders raise anything from OSError to RuntimeError
        raise MediaError(path, f"cannot decode: {type(exc).__name__}: {exc}") from exc


def classification_target(label: torch.Tensor, class_index: torch.Tensor, num_classes: int) -> torch.Tensor:
    """What a classifier of ``num_classes`` outputs learns: the 3-class index (0 real, 1 synthetic,
    2 semisynthetic) for 3-class heads, else the binary label (0 real, 1 fake)."""
    return class_index if num_classes == 3 else label


@dataclass
class SampleRecipe:
    """How a detector's samples are made from dataset items for one stage; the DataModule builds
    the stage's dataset from it (``Detector.data_recipe``).

    - ``load``: ``path -> decoded media`` (picklable: it runs in DataLoader workers);
    - ``transform``: decoded media -> model input (augmentation, crops);
    - ``media_targets``: extra training targets computed on the decoded media before ``transform``
      (BreathNet's breath mask on the clean waveform);
    - ``item_targets``: extra targets of an item (CakeLens' 17 labels from ``generator_family``);
    - ``features``: the samples are features of a frozen module computed once per item and cached
      (ReStraV's trajectory geometry), not media: see :class:`detectors.data.features.FeatureExtraction`.
    """

    load: Callable[[str], Any]
    transform: Callable[[Any], Any] | None = None
    media_targets: Callable[[Any], dict[str, torch.Tensor]] | None = None
    item_targets: Callable[[MediaItem], dict[str, torch.Tensor]] | None = None
    features: Any = None  # FeatureExtraction


class MediaDataset(Dataset):
    """Loads ``items`` with ``load(path)`` and applies ``transform``.

    Each sample is a dict:
      - ``x``: the transformed media tensor
      - ``label``: binary label (0 real, 1 fake), long
      - ``class_index``: 3-class index (0 real, 1 synthetic, 2 semisynthetic), long
      - ``index``: position in ``items``; ``dataset_id``: index into ``dataset_names``
      - what ``media_targets(decoded)`` and ``item_targets(item)`` return

    An unreadable file (``MediaError`` or any exception raised by ``load``) gives
    :func:`unreadable_sample` and one logged warning per file; ``collate_skip`` drops such samples,
    counts them and lists their paths.
    """

    def __init__(
        self,
        items: Sequence[MediaItem],
        load: Callable[[str], Any],
        transform: Callable[[Any], Any] | None = None,
        media_targets: Callable[[Any], dict[str, torch.Tensor]] | None = None,
        item_targets: Callable[[MediaItem], dict[str, torch.Tensor]] | None = None,
    ) -> None:
        self.items = list(items)
        self.load = load
        self.transform = transform
        self.media_targets = media_targets
        self.item_targets = item_targets
        self.dataset_names: list[str] = sorted({item.dataset for item in self.items})
        self._dataset_ids = {name: i for i, name in enumerate(self.dataset_names)}
        self._warned: set[str] = set()  # per worker process: each bad file is reported once there

    @classmethod
    def from_recipe(cls, items: Sequence[MediaItem], recipe: SampleRecipe) -> MediaDataset:
        return cls(items, recipe.load, recipe.transform, recipe.media_targets, recipe.item_targets)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, Any] | None:
        item = self.items[index]
        try:
            x = load_media(self.load, item.path)
        except MediaError as err:
            if item.path not in self._warned:
                self._warned.add(item.path)
                logger.warning("skipping unreadable sample: %s", err)
            return unreadable_sample(item.path)
        extra = self.media_targets(x) if self.media_targets is not None else {}
        if self.item_targets is not None:
            extra.update(self.item_targets(item))
        x = apply_transform(self.transform, x, item.path)
        return labelled_sample(item, index, self._dataset_ids[item.dataset], x=torch.as_tensor(x), **extra)


def apply_transform(transform: Callable[[Any], Any] | None, x: Any, path: str) -> Any:
    """``transform(x)``; a failure names the file. It is not skipped like an unreadable file: a
    transform failing on a decoded sample is a bug or a configuration error, not bad media."""
    if transform is None:
        return x
    try:
        return transform(x)
    except Exception as exc:
        raise RuntimeError(
            f"{path}: {type(transform).__name__} failed on the decoded sample ({type(exc).__name__}: {exc})"
        ) from exc


def unreadable_sample(path: str) -> dict[str, str]:
    """What a dataset yields for a file it cannot read (``None`` is accepted too, without the path)."""
    return {"unreadable": path}


def is_unreadable(sample: dict[str, Any] | None) -> bool:
    return sample is None or "unreadable" in sample


def is_empty_batch(batch: dict[str, Any] | None) -> bool:
    """True for a batch without media or features (every sample unreadable)."""
    return batch is None or ("x" not in batch and "features" not in batch)


def labelled_sample(item: MediaItem, index: int, dataset_id: int, **payload: Any) -> dict[str, Any]:
    """The sample dict every dataset yields: ``payload`` (``x`` or ``features``, extra targets) plus
    the labels and provenance the training module and evaluation read."""
    if item.score is not None:  # a soft label (a teacher's p(fake)) the loss trains against
        payload["score"] = torch.tensor(item.score, dtype=torch.float32)
    return {
        **payload,
        "label": torch.tensor(item.label, dtype=torch.long),
        "class_index": torch.tensor(item.class_index, dtype=torch.long),
        "index": index,
        "dataset_id": dataset_id,
    }


def collate_skip(batch: Sequence[dict[str, Any] | None]) -> dict[str, Any]:
    """``default_collate`` over the readable samples, plus ``skipped`` (how many were dropped) and
    ``skipped_paths`` (those the dataset named; a sampler drawing with replacement may repeat them).

    When every sample of the batch was unreadable the result has only those two keys: consumers
    test :func:`is_empty_batch`, count ``batch["skipped"]`` and move on.
    """
    kept = [sample for sample in batch if not is_unreadable(sample)]
    paths = [sample["unreadable"] for sample in batch if sample is not None and "unreadable" in sample]
    out = default_collate(kept) if kept else {}
    out["skipped"] = len(batch) - len(kept)
    out["skipped_paths"] = paths
    return out
