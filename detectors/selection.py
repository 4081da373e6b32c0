"""Which samples of each dataset a benchmark run scores, and which it augments.

GASBench (https://github.com/BitMind-AI/gasbench, v0.8.0) reads every dataset from its cache folder
``<cache>/datasets/<name>/samples`` (``dataset/iterator.py``, ``DatasetIterator._load_from_cache_dir``):

- the folder is listed with ``os.listdir`` (names starting with ``.`` left out), in the order the
  file system returns;
- a regular dataset's list is shuffled with ``random.Random(seed).shuffle`` (the run's ``--seed``;
  without one, with the unseeded global generator) and cut to the dataset's cap; a dataset whose
  name contains ``gasstation`` is instead ordered by the first ``_<digits>`` number of each name,
  newest (largest) first, and is not shuffled;
- the base pass takes the first ``cap`` samples of that order, the cap coming from
  ``dataset/config.py`` ``calculate_weighted_dataset_sampling`` (full mode: the modality's total,
  55000 images / 26000 videos / 37000 audio clips, split evenly over the datasets and capped at 2000
  each, gasstation datasets weighted 5x with their own floor and cap);
- the robustness pass (``--n-aug-per-dataset N``, ``benchmarks/image_bench.py`` and
  ``video_bench.py``) opens a second iterator on the same folder with ``max_samples=N`` and the same
  seed: the first N of the same order. Audio has no robustness pass.

A sample that cannot be decoded still takes its place in that order (it is skipped, not replaced).

:func:`benchmark_order` applies the rule to a dataset folder of this project: when every item of a
dataset entry lies directly in its folder (the benchmark's cache layout), the listing is that
folder's ``os.listdir`` order, so pointing a dataset YAML at the benchmark's own
``samples`` folders selects exactly what the benchmark selects. Nested folders and manifests have no
benchmark listing; their items are ordered by path before the same shuffle (reported as ``sorted``).
"""

from __future__ import annotations

import os
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from detectors.data.catalog import DatasetEntry, MediaItem

#: ``BENCHMARK_TOTAL_OVERRIDES["full"]`` of GASBench's ``dataset/config.py``: samples per full run.
FULL_RUN_TOTAL = {"image": 55000, "video": 26000, "audio": 37000}
REGULAR_MIN_SAMPLES, REGULAR_MAX_SAMPLES = 100, 2000
GASSTATION_MIN_SAMPLES, GASSTATION_MAX_SAMPLES = 500, 10000
GASSTATION_WEIGHT = 5.0
_INDEX = re.compile(r"_(\d+)")


def is_gasstation(name: str) -> bool:
    return "gasstation" in name.lower()


def dataset_caps(names: Sequence[str], modality: str) -> dict[str, int]:
    """Samples per dataset of a full benchmark run over datasets ``names`` (``calculate_weighted_dataset_sampling``)."""
    total = FULL_RUN_TOTAL[modality]
    gasstation = [n for n in names if is_gasstation(n)]
    regular = [n for n in names if not is_gasstation(n)]
    if not gasstation:
        cap = min(REGULAR_MAX_SAMPLES, total // len(names)) if names else 0
        return {n: cap for n in names}
    per_unit = total / (len(regular) + len(gasstation) * GASSTATION_WEIGHT)
    regular_cap, gasstation_cap = int(per_unit), int(per_unit * GASSTATION_WEIGHT)
    # the benchmark scales its floors down to an even share of the total when there are many datasets
    even_share = max(1, total // (len(regular) + len(gasstation)))
    regular_min = min(REGULAR_MIN_SAMPLES, even_share)
    gasstation_min = min(GASSTATION_MIN_SAMPLES, max(1, int(even_share * GASSTATION_WEIGHT)))
    regular_cap = min(REGULAR_MAX_SAMPLES, max(regular_min, regular_cap))
    gasstation_cap = min(GASSTATION_MAX_SAMPLES, max(gasstation_min, gasstation_cap))
    return {n: gasstation_cap if is_gasstation(n) else regular_cap for n in names}


def list_folder(root: Path) -> list[str]:
    """A dataset folder's entries as the benchmark lists its cache folder: ``os.listdir`` order
    (whatever the file system returns), names starting with ``.`` left out."""
    return [name for name in os.listdir(root) if not name.startswith(".")]


def _index_of(name: str) -> int:
    match = _INDEX.search(name)
    return int(match.group(1)) if match else -1


def shuffle_names(names: Sequence[str], dataset: str, seed: int) -> list[str]:
    """The benchmark's order of a dataset's listing: seeded shuffle, or newest first for gasstation."""
    names = list(names)
    if is_gasstation(dataset):
        # sorted() is stable also with reverse=True: equal numbers keep their listing order, as there
        return sorted(names, key=_index_of, reverse=True)
    random.Random(seed).shuffle(names)
    return names


@dataclass(frozen=True)
class DatasetOrder:
    """A dataset's items in the benchmark's order and how the listing was obtained
    (``listing``: the folder's ``os.listdir`` order; ``sorted``: by path)."""

    items: list[MediaItem]
    listing: str


def benchmark_order(entry: DatasetEntry, items: Sequence[MediaItem], seed: int) -> DatasetOrder:
    """``items`` (one dataset entry's) in the order the benchmark would take them with ``seed``."""
    root = Path(entry.path)
    by_name = {Path(item.path).name: item for item in items}
    direct = root.is_dir() and len(by_name) == len(items) and all(Path(i.path).parent == root for i in items)
    if direct:
        listed = [name for name in list_folder(root) if name in by_name]
        names, listing = listed, "listing"
    else:
        names, listing = sorted(i.path for i in items), "sorted"
        by_name = {i.path: i for i in items}
    return DatasetOrder([by_name[name] for name in shuffle_names(names, entry.name, seed)], listing)


__all__ = [
    "DatasetOrder",
    "FULL_RUN_TOTAL",
    "benchmark_order",
    "dataset_caps",
    "is_gasstation",
    "list_folder",
    "shuffle_names",
]
