"""Data pipeline and settings: files listed twice (split leakage), 3-class strata, clear errors for
tuning/backbone config typos, epoch-seeded sampling, private generator seeds, failing transforms."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from detectors.data.catalog import MediaItem, assign_splits, load_items
from detectors.errors import ConfigError


def write_pngs(folder: Path, n: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        Image.new("RGB", (4, 4), (i, i, i)).save(folder / f"{i:02d}.png")
        paths.append(folder / f"{i:02d}.png")
    return paths


def test_a_file_listed_twice_is_refused_before_it_can_leak_across_splits(tmp_path):
    write_pngs(tmp_path / "real", 20)
    write_pngs(tmp_path / "fake", 20)
    # a manifest repeating a row, written two ways that resolve to the same file
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("path,label\n" + "".join(f"fake/{i:02d}.png,1\n" for i in range(20)) + "./fake/03.png,1\n")
    (tmp_path / "dup.yaml").write_text(
        "datasets:\n"
        "  - {name: real, path: real, modality: image, media_type: real}\n"
        "  - {name: listed, path: manifest.csv, modality: image, media_type: synthetic}\n"
    )
    items = load_items(tmp_path / "dup.yaml")
    # what went wrong before: the two copies were shuffled independently into different splits
    with pytest.raises(
        ConfigError, match=r"1 file\(s\) are listed more than once.*03\.png \(datasets 'listed', 'listed'\)"
    ):
        assign_splits(items, seed=3)

    # overlapping dataset folders: the parent folder also holds the fakes
    (tmp_path / "overlap.yaml").write_text(
        "datasets:\n"
        "  - {name: everything, path: ., modality: image, media_type: real}\n"
        "  - {name: fakes, path: fake, modality: image, media_type: synthetic}\n"
    )
    with pytest.raises(ConfigError, match=r"20 file\(s\) are listed more than once.*'everything', 'fakes'"):
        assign_splits(load_items(tmp_path / "overlap.yaml"), seed=0)

    # the same listing without the duplicate row splits as before
    manifest.write_text("path,label\n" + "".join(f"fake/{i:02d}.png,1\n" for i in range(20)))
    split = assign_splits(load_items(tmp_path / "dup.yaml"), seed=3)
    assert len({item.path for item in split}) == len(split) == 40


def test_semisynthetic_rows_of_a_mixed_dataset_reach_the_validation_split():
    synthetic = [MediaItem(f"/d/s{i:03d}.png", 1, "synthetic", "mixed", "image") for i in range(40)]
    semi = [MediaItem(f"/d/m{i:03d}.png", 1, "semisynthetic", "mixed", "image") for i in range(4)]
    real = [
        MediaItem(f"/d/r{i:03d}.png", 0, "real", "cam", "image") for i in range(30)
    ]  # 15 % of 30: 5 (4.5 rounds up)
    for seed in range(12):  # before: 7 of these 12 seeds left the 3-class val split without class 2
        split = assign_splits(synthetic + semi + real, seed=seed)
        val = [item.media_type for item in split if item.split == "val"]
        assert val.count("semisynthetic") == 1 and val.count("synthetic") == 6 and val.count("real") == 5, seed
        # a dataset without semisynthetic rows is split exactly as a (dataset, label) stratum always was
        alone = assign_splits(synthetic, seed=seed)
        assert {i.path: i.split for i in alone} == {i.path: i.split for i in split if i.media_type == "synthetic"}


def test_tuning_and_backbone_config_typos_name_the_field():
    from detectors.backbones import BackboneConfig
    from detectors.config import parse
    from detectors.tuning import TuningConfig

    with pytest.raises(ConfigError, match=r"model\.tuning\.lora\.rank: unknown key.*known model\.tuning\.lora keys"):
        parse(TuningConfig, {"mode": "lora", "lora": {"rank": 16}}, "model.tuning")
    with pytest.raises(ConfigError, match=r"model\.tuning\.lora_alpha: unknown key"):
        parse(TuningConfig, {"mode": "lora", "lora_alpha": 32}, "model.tuning")
    config = parse(TuningConfig, {"mode": "lora", "lora": {"r": 32, "alpha": 64, "dropout": 0.0}}, "model.tuning")
    assert (config.lora.r, config.lora.alpha, config.lora.targets) == (32, 64, "qkv")
    assert parse(BackboneConfig, None, "model.backbone") == BackboneConfig()  # ``backbone: null``: the defaults
    assert parse(TuningConfig, "layernorm", "model.tuning").mode == "layernorm"  # a bare mode is the mode


def test_tuning_typo_through_the_detector_config_is_a_config_error(tiny_dinov3):
    from detectors.registry import create_detector

    with pytest.raises(ConfigError, match="rank"):
        create_detector("dinov3_image", {"backbone": {"name": str(tiny_dinov3)}, "tuning": {"lora": {"rank": 4}}})


def test_balanced_sampler_draws_depend_on_seed_and_epoch_only():
    """A resumed run (fresh sampler, Lightning calls set_epoch(k)) draws what epoch k drew before."""
    import torch

    from detectors.data.datamodule import EpochSeededSampler

    weights = [0.1] * 30 + [0.9] * 10
    uninterrupted = EpochSeededSampler(weights, num_samples=40, seed=5)
    epochs = []
    for epoch in range(3):
        uninterrupted.set_epoch(epoch)
        epochs.append(list(uninterrupted))
    resumed = EpochSeededSampler(weights, num_samples=40, seed=5)
    resumed.set_epoch(2)
    assert list(resumed) == epochs[2]
    assert epochs[0] != epochs[1] != epochs[2]
    other_seed = EpochSeededSampler(weights, num_samples=40, seed=6)
    other_seed.set_epoch(2)
    assert list(other_seed) != epochs[2]
    # the balanced weighting itself is kept: the 10 heavy items take ~75 % of the draws
    heavy = sum(index >= 30 for epoch in epochs for index in epoch) / (3 * 40)
    assert 0.6 < heavy < 0.9
    assert isinstance(uninterrupted.generator, torch.Generator)


def test_private_generators_get_distinct_seeds_for_anagram_paths():
    import torch

    from detectors.data.datamodule import reseed_private_generators

    holder = {"ab": torch.Generator(), "ba": torch.Generator()}  # same character sum, different paths
    assert reseed_private_generators(holder, seed=0) == 2
    assert holder["ab"].initial_seed() != holder["ba"].initial_seed()


def test_a_failing_transform_names_the_file(tmp_path):
    from detectors.data.dataset import MediaDataset

    path = tmp_path / "a.png"
    Image.new("RGB", (4, 4)).save(path)
    item = MediaItem(path=str(path), label=1, media_type="synthetic", dataset="gen", modality="image", split="train")

    def broken(x):
        raise ValueError("bad crop size")

    dataset = MediaDataset([item], load=lambda p: [1.0, 2.0], transform=broken)
    with pytest.raises(
        RuntimeError, match=r"a\.png: function failed on the decoded sample \(ValueError: bad crop size\)"
    ):
        dataset[0]
    assert MediaDataset([item], load=lambda p: [1.0, 2.0], transform=lambda x: x)[0]["x"].tolist() == [1.0, 2.0]
