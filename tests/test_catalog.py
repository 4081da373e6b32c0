"""Dataset YAML validation, item collection, splits, balanced sampling weights, summaries."""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from detectors.data.catalog import (
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
from detectors.errors import ConfigError


def touch(path: Path, data: bytes = b"x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def write_yaml(tmp_path: Path, datasets, name: str = "datasets.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump({"datasets": datasets}))
    return path


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    for i in range(4):
        touch(tmp_path / "real" / f"a{i}.jpg")
    touch(tmp_path / "real" / "sub" / "b0.PNG")
    touch(tmp_path / "real" / "notes.txt")
    touch(tmp_path / "real" / "clip.mp4")
    for i in range(3):
        touch(tmp_path / "fake" / f"f{i}.png")
    touch(tmp_path / "fake" / "thumbs" / "t0.png")
    return tmp_path


def test_folder_dataset_collects_by_extension_and_filters(tree: Path) -> None:
    cfg = write_yaml(
        tree,
        [
            {"name": "real", "path": "real", "modality": "image", "media_type": "real", "source_format": "jpg", "notes": "n"},
            {"name": "fake", "path": str(tree / "fake"), "modality": "image", "media_type": "synthetic",
             "generator_family": "gan", "weight": 2, "exclude_paths": ["thumbs"]},
        ],
    )  # fmt: skip
    entries = load_dataset_config(cfg)
    assert entries[0].source_format == "jpg" and entries[0].notes == "n" and entries[1].weight == 2.0
    items = collect_items(entries, modality="image")
    names = sorted(Path(it.path).relative_to(tree).as_posix() for it in items)
    assert names == ["fake/f0.png", "fake/f1.png", "fake/f2.png", "real/a0.jpg", "real/a1.jpg", "real/a2.jpg",
                     "real/a3.jpg", "real/sub/b0.PNG"]  # fmt: skip
    fake = [it for it in items if it.dataset == "fake"]
    assert all(
        it.label == 1 and it.class_index == 1 and it.generator_family == "gan" and it.weight == 2.0 for it in fake
    )
    assert all(Path(it.path).is_absolute() for it in items)

    only_sub = write_yaml(
        tree,
        [{"name": "r", "path": "real", "modality": "image", "media_type": "real", "include_paths": "sub/*"}],
        "b.yaml",
    )
    assert [Path(it.path).name for it in load_items(only_sub)] == ["b0.PNG"]


def test_cap_is_deterministic_and_spread(tree: Path) -> None:
    cfg = write_yaml(tree, [{"name": "r", "path": "real", "modality": "image", "media_type": "real", "max_items": 3}])
    got = [Path(it.path).relative_to(tree).as_posix() for it in load_items(cfg)]
    # sorted: a0 a1 a2 a3 sub/b0 -> evenly spaced indices 0, 2, 4
    assert got == ["real/a0.jpg", "real/a2.jpg", "real/sub/b0.PNG"]
    cfg2 = write_yaml(
        tree,
        [{"name": "r", "path": "real", "modality": "image", "media_type": "real", "media_per_archive": 1}],
        "c.yaml",
    )
    assert len(load_items(cfg2)) == 1


def test_manifest_with_labels(tmp_path: Path) -> None:
    touch(tmp_path / "m" / "x.png")
    touch(tmp_path / "m" / "y.png")
    touch(tmp_path / "m" / "z.png")
    abs_file = touch(tmp_path / "elsewhere" / "w.png")
    pd.DataFrame({"path": ["x.png", "y.png", "z.png", str(abs_file)], "label": ["real", "1", "fake", None],
                  "media_type": [None, "semisynthetic", None, None]}).to_csv(tmp_path / "m" / "list.csv", index=False)  # fmt: skip
    cfg = write_yaml(tmp_path, [{"name": "mix", "path": "m/list.csv", "modality": "image", "media_type": "synthetic"}])
    by_name = {Path(it.path).name: it for it in load_items(cfg)}
    assert {k: (v.label, v.media_type) for k, v in by_name.items()} == {
        "x.png": (0, "real"), "y.png": (1, "semisynthetic"), "z.png": (1, "synthetic"), "w.png": (1, "synthetic"),
    }  # fmt: skip

    pq = tmp_path / "m" / "list.parquet"
    pd.DataFrame({"path": ["x.png", "y.png"], "label": [0, 1]}).to_parquet(pq)
    cfg2 = write_yaml(
        tmp_path, [{"name": "p", "path": "m/list.parquet", "modality": "image", "media_type": "real"}], "p.yaml"
    )
    assert sorted((Path(it.path).name, it.label, it.media_type) for it in load_items(cfg2)) == [
        ("x.png", 0, "real"), ("y.png", 1, "synthetic")]  # fmt: skip


@pytest.mark.parametrize(
    ("datasets", "where", "message"),
    [
        ([{"name": "a", "path": "real", "modality": "image"}], "datasets[0].media_type", "missing required field"),
        ([{"name": "a", "path": "real", "modality": "image", "media_type": "fakeish"}],
         "datasets[0] (name 'a').media_type", "allowed: real, synthetic, semisynthetic"),
        ([{"name": "a", "path": "real", "modality": "picture", "media_type": "real"}],
         "datasets[0] (name 'a').modality", "allowed: image, video, audio"),
        ([{"name": "a", "path": "real", "modality": "image", "media_type": "real"},
          {"name": "a", "path": "fake", "modality": "image", "media_type": "synthetic"}],
         "datasets[1] (name 'a').name", "duplicate"),
        ([{"name": "a", "path": "nowhere", "modality": "image", "media_type": "real"}], "datasets[0] (name 'a').path", "does not exist"),
        ([{"name": "a", "path": "real", "modality": "image", "media_type": "real", "weight": 0}], "datasets[0] (name 'a').weight", "> 0"),
        ([{"name": "a", "path": "real", "modality": "image", "media_type": "real", "split": "dev"}],
         "datasets[0] (name 'a').split", "allowed: train, val, calibration, test"),
        ([{"name": "a", "path": "real", "modality": "image", "media_type": "real", "max_items": -1}], "datasets[0] (name 'a').max_items", ">= 1"),
    ],
)  # fmt: skip
def test_config_errors_name_entry_and_field(tree: Path, datasets, where: str, message: str) -> None:
    cfg = write_yaml(tree, datasets)
    with pytest.raises(ConfigError) as info:
        load_dataset_config(cfg)
    assert info.value.where == where and message in info.value.problem
    assert info.value.file == str(cfg.resolve())


def test_yaml_syntax_and_top_level_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("datasets:\n  - name: a\n    path: [unclosed\n")
    with pytest.raises(ConfigError, match="invalid YAML") as info:
        load_dataset_config(bad)
    assert info.value.where.startswith("line ")
    (tmp_path / "list.yaml").write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_dataset_config(tmp_path / "list.yaml")
    (tmp_path / "none.yaml").write_text("other: 1\n")
    with pytest.raises(ConfigError, match="'datasets' list") as info:
        load_dataset_config(tmp_path / "none.yaml")
    assert info.value.where == "datasets"


def test_empty_dataset_and_modality_mismatch(tree: Path) -> None:
    touch(tree / "empty" / "readme.txt")
    cfg = write_yaml(tree, [{"name": "e", "path": "empty", "modality": "image", "media_type": "real"}])
    with pytest.raises(ConfigError, match=r"no media found.*\.png .*\.gif") as info:
        load_items(cfg)
    assert info.value.where == "datasets[0] (name 'e').path"

    cfg = write_yaml(tree, [{"name": "v", "path": "real", "modality": "video", "media_type": "real"}], "v.yaml")
    # real/sub holds a frame image (b0.PNG): in a video dataset it is a video stored as frames
    assert [Path(it.path).name for it in load_items(cfg)] == ["clip.mp4", "sub"]
    with pytest.raises(ConfigError, match="dataset is 'video' but this run needs 'image'") as info:
        load_items(cfg, modality="image")
    assert info.value.where == "datasets[0] (name 'v').modality"


def test_manifest_errors(tmp_path: Path) -> None:
    touch(tmp_path / "a.png")
    pd.DataFrame({"file": ["a.png"]}).to_csv(tmp_path / "nopath.csv", index=False)
    cfg = write_yaml(tmp_path, [{"name": "m", "path": "nopath.csv", "modality": "image", "media_type": "real"}])
    with pytest.raises(ConfigError, match="no 'path' column"):
        load_items(cfg)
    pd.DataFrame({"path": ["a.png", "gone1.png", "gone2.png", "gone3.png", "gone4.png"]}).to_csv(
        tmp_path / "miss.csv", index=False
    )
    cfg = write_yaml(tmp_path, [{"name": "m", "path": "miss.csv", "modality": "image", "media_type": "real"}], "m.yaml")
    with pytest.raises(ConfigError, match=r"4 manifest row\(s\).*gone1.png, gone2.png, gone3.png$"):
        load_items(cfg)


def make_items(spec: dict[tuple[str, int], int], weights: dict[str, float] | None = None) -> list[MediaItem]:
    items = []
    for (dataset, label), n in spec.items():
        for i in range(n):
            items.append(
                MediaItem(path=f"/d/{dataset}/{label}/{i:04d}.png", label=label, media_type="real" if label == 0 else "synthetic",
                          dataset=dataset, modality="image", weight=(weights or {}).get(dataset, 1.0))
            )  # fmt: skip
    return items


def test_assign_splits_deterministic_stratified(tmp_path: Path) -> None:
    items = make_items({("a", 0): 100, ("b", 1): 40, ("c", 1): 3, ("d", 0): 1, ("e", 1): 2})
    pinned = MediaItem(path="/d/t/0.png", label=1, media_type="synthetic", dataset="t", modality="image", split="test")
    items.append(pinned)
    first = assign_splits(items, seed=3)
    shuffled = items[:]
    random.Random(1).shuffle(shuffled)
    assert assign_splits(shuffled, seed=3) == first
    assert assign_splits(items, seed=4) != first

    counts: dict[tuple[str, str], int] = Counter((it.dataset, it.split) for it in first)
    assert counts[("a", "val")] == 15 and counts[("a", "calibration")] == 15 and counts[("a", "train")] == 70
    assert counts[("b", "val")] == 6 and counts[("b", "calibration")] == 6 and counts[("b", "train")] == 28
    assert counts[("c", "val")] == 1 and counts[("c", "train")] >= 1
    assert counts[("d", "train")] == 1 and counts[("e", "train")] >= 1
    assert [it.split for it in first if it.dataset == "t"] == ["test"]
    assert sorted(it.path for it in first) == sorted(it.path for it in items)

    # A different stratum composition must not change another stratum's assignment.
    alone = assign_splits(make_items({("a", 0): 100}), seed=3)
    assert {it.path: it.split for it in alone} == {it.path: it.split for it in first if it.dataset == "a"}

    write_split(first, tmp_path / "split.csv")
    header = (tmp_path / "split.csv").read_text().splitlines()[0]
    assert header.startswith("path,dataset,label,media_type,generator_family,split")
    assert read_split(tmp_path / "split.csv") == first


def test_balanced_sample_weights_exact_shares() -> None:
    # Real: r1 (w 1, 10 items), r2 (w 3, 2 items). Fake: f1 (w 1, 50 items), f2 (w 1, 5 items).
    items = make_items({("r1", 0): 10, ("r2", 0): 2, ("f1", 1): 50, ("f2", 1): 5}, weights={"r1": 1, "r2": 3})
    w = balanced_sample_weights(items)
    assert w.dtype == torch.float64 and torch.isclose(w.sum(), torch.tensor(1.0, dtype=torch.float64))
    share = defaultdict(float)
    for item, value in zip(items, w.tolist()):
        share[item.dataset] += value
    assert share == pytest.approx({"r1": 0.5 * 1 / 4, "r2": 0.5 * 3 / 4, "f1": 0.25, "f2": 0.25}, abs=1e-12)
    # Items of one dataset are equally likely.
    f1 = [v for it, v in zip(items, w.tolist()) if it.dataset == "f1"]
    assert max(f1) == pytest.approx(min(f1))

    only_fake = make_items({("f1", 1): 7, ("f2", 1): 3}, weights={"f1": 2})
    share = defaultdict(float)
    for item, value in zip(only_fake, balanced_sample_weights(only_fake).tolist()):
        share[item.dataset] += value
    assert share == pytest.approx({"f1": 2 / 3, "f2": 1 / 3}, abs=1e-12)

    # A mixed-label dataset lends its weight to each label in proportion to its counts.
    mixed = make_items({("m", 0): 3, ("m", 1): 1, ("f", 1): 4})
    share = defaultdict(float)
    for item, value in zip(mixed, balanced_sample_weights(mixed).tolist()):
        share[(item.dataset, item.label)] += value
    assert share == pytest.approx({("m", 0): 0.5, ("m", 1): 0.5 * 0.25 / 1.25, ("f", 1): 0.5 * 1 / 1.25}, abs=1e-12)


def test_summarise_counts() -> None:
    items = assign_splits(make_items({("a", 0): 20, ("b", 1): 10}), seed=0)
    summary = summarise(items)
    assert summary["total"] == 30 and summary["real"] == 20 and summary["fake"] == 10
    assert summary["by_dataset"]["a"]["real"] == 20 and sum(summary["by_dataset"]["b"]["splits"].values()) == 10
    assert summary["by_split"]["val"] == {"total": 5, "real": 3, "fake": 2}
