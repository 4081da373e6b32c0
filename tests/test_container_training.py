"""Done-when of the containers issue, as a new user would try it: a parquet shard of image bytes, a
tar of videos and a zip of audio files, each with corrupt members: fit, evaluate and detect work and
count (and name) the bad members; a hand-built benchmark cache trains."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from container_fixtures import media_files, pack_files, write_benchmark_cache, write_parquet_shard

from detectors.data.catalog import EXTENSIONS


@pytest.fixture(autouse=True)
def member_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("FORENSIC_ADAPTERS_MEMBER_CACHE", str(tmp_path / "member-cache"))


def _fit_export(modality: str, arch: str, data: Path, root: Path, *extra: str, cache: Path | None = None) -> Path:
    from detectors.registry import list_detectors
    from detectors.training.fit import run_fit
    from export.__main__ import export_run

    support = __import__(f"detectors.{modality}.fit", fromlist=["x"]).__dict__[modality.upper()]
    argv = [
        "--arch",
        arch,
        "--data",
        str(data),
        "--output",
        str(root / "run"),
        "--num-workers",
        "0",
        "--set",
        "split.val=0.25",
        "--set",
        "split.calibration=0.25",
        *extra,
    ]
    if cache is not None:
        argv += ["--benchmark-cache", str(cache)]
    run = run_fit(modality, support, list_detectors(modality), arch, argv)
    export_run(run, root / "submission")
    return run


def _check_counts(run: Path, root: Path, data: Path, bad: set[str], container: Path, modality: str, capsys) -> None:
    from detectors.detect import main as detect
    from detectors.evaluate import main as evaluate

    summary = json.loads((run / "summary.json").read_text())
    skipped = summary["skipped_unreadable"]
    assert skipped["val"] + skipped["calibration"] + skipped["train"] >= 1, skipped  # the corrupt ones were met
    assert (
        evaluate(
            [
                "--model",
                str(root / "submission"),
                "--data",
                str(data),
                "--output",
                str(root / "eval"),
                "--num-workers",
                "0",
                "--no-report",
            ]
        )
        == 0
    )
    results = json.loads((root / "eval" / "results.json").read_text())["base"]
    assert results["skipped_unreadable"] == len(bad)
    assert {Path(p.split("::")[0]).name + "::" + p.split("::")[1] for p in results["unreadable"]} == bad
    capsys.readouterr()
    status = detect([str(container), "--model", str(root / "submission"), "--json", str(root / "detect.json")])
    assert status == 1  # some members failed
    rows = json.loads((root / "detect.json").read_text())["results"]
    failed = {Path(r["path"].split("::")[0]).name + "::" + r["path"].split("::")[1] for r in rows if "error" in r}
    inside = {name for name in bad if name.startswith(container.name + "::")}
    assert failed == inside and len(rows) > len(inside)
    assert all(0.0 <= r["prob_fake"] <= 1.0 for r in rows if "error" not in r)
    assert f"{len(inside)} of {len(rows)}" in capsys.readouterr().err


def test_parquet_shard_of_images(tmp_path, capsys):
    from detectors.image.demo import write_demo_images

    demo = write_demo_images(tmp_path / "demo", n_per_class=10, size=(40, 48)).parent
    files = media_files(demo, EXTENSIONS["image"])
    labels = ["real" if f.parent.name == "real" else "fake" for f in files]
    shard = write_parquet_shard(tmp_path / "data" / "shard.parquet", files, labels, corrupt=(3, 11), row_group_size=6)
    data = tmp_path / "data.yaml"
    data.write_text(
        yaml.safe_dump(
            {
                "datasets": [
                    {
                        "name": "hf-images",
                        "path": str(shard),
                        "modality": "image",
                        "media_type": "synthetic",
                        "label_column": "label",
                    }
                ]
            }
        )
    )
    run = _fit_export(
        "image",
        "spectral",
        data,
        tmp_path,
        "--max-epochs",
        "2",
        "--set",
        "model.image_size=32",
        "--set",
        f"data.cache_dir={tmp_path / 'features'}",
        "--set",
        "data.decode_workers=0",
    )
    _check_counts(run, tmp_path, data, {"shard.parquet::image[3]", "shard.parquet::image[11]"}, shard, "image", capsys)


def test_tar_of_videos(tmp_path, capsys):
    from detectors.video.demo import write_demo_videos

    demo = write_demo_videos(tmp_path / "demo", n_per_class=4, num_frames=16, size=(32, 40)).parent
    files = media_files(demo, EXTENSIONS["video"])
    archives = {}
    for media_type in ("real", "fake"):
        chosen = [f for f in files if (f.parent.name == "real") == (media_type == "real")]
        archives[media_type] = pack_files(
            tmp_path / "data" / f"{media_type}.tar", chosen, demo, corrupt=[f"{media_type}/broken.mp4"]
        )
    data = tmp_path / "data.yaml"
    data.write_text(
        yaml.safe_dump(
            {
                "datasets": [
                    {"name": "real-videos", "path": str(archives["real"]), "modality": "video", "media_type": "real"},
                    {
                        "name": "fake-videos",
                        "path": str(archives["fake"]),
                        "modality": "video",
                        "media_type": "synthetic",
                    },
                ]
            }
        )
    )
    run = _fit_export(
        "video",
        "spectral_video",
        data,
        tmp_path,
        "--max-epochs",
        "2",
        "--set",
        "model.image_size=32",
        "--set",
        "model.num_frames=4",
        "--set",
        "model.frame_rate=null",
        "--set",
        f"data.cache_dir={tmp_path / 'features'}",
        "--set",
        "data.decode_workers=0",
    )
    _check_counts(
        run,
        tmp_path,
        data,
        {"real.tar::real/broken.mp4", "fake.tar::fake/broken.mp4"},
        archives["fake"],
        "video",
        capsys,
    )


def test_hand_built_benchmark_cache_trains(tmp_path):
    """A benchmark dataset config as published (remote paths, -1 caps, benchmark-only fields, another
    modality's entry) read from a cache in gasbench's layout."""
    from detectors.data.catalog import load_items
    from detectors.image.demo import write_demo_images

    demo = write_demo_images(tmp_path / "demo", n_per_class=8, size=(40, 48)).parent
    files = media_files(demo, EXTENSIONS["image"])
    cache = tmp_path / "gasbench-cache"
    write_benchmark_cache(cache, "Real-Photos", [f for f in files if f.parent.name == "real"], "image", "real")
    write_benchmark_cache(
        cache, "Synthetic-Dog-Images", [f for f in files if f.parent.name != "real"], "image", "synthetic"
    )
    config = tmp_path / "benchmark_images.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "datasets": [
                    {
                        "name": "Real-Photos",
                        "path": "someorg/real-photos",
                        "modality": "image",
                        "media_type": "real",
                        "source_format": "jpg",
                        "media_per_archive": -1,
                        "archives_per_dataset": -1,
                        "source": "huggingface",
                    },
                    {
                        "name": "Synthetic-Dog-Images",
                        "path": "34data/Synthetic-Dog-Images",
                        "modality": "image",
                        "media_type": "synthetic",
                        "media_per_archive": 1000,
                        "archives_per_dataset": 1,
                        "generator_family": "sd",
                        "generator_variant": "sdxl",
                        "content_category": "animals",
                    },
                    {"name": "not-downloaded", "path": "x/y", "modality": "image", "media_type": "synthetic"},
                    {"name": "some-videos", "path": "x/z", "modality": "video", "media_type": "real"},
                ]
            }
        )
    )
    items = load_items(config, "image", benchmark_cache=cache)
    assert len(items) == len(files)
    assert {Path(i.path).parent for i in items} == {
        cache / "datasets" / n / "samples" for n in ("Real-Photos", "Synthetic-Dog-Images")
    }
    run = _fit_export(
        "image",
        "spectral",
        config,
        tmp_path,
        "--max-epochs",
        "1",
        "--set",
        "model.image_size=32",
        "--set",
        f"data.cache_dir={tmp_path / 'features'}",
        "--set",
        "data.decode_workers=0",
        cache=cache,
    )
    summary = json.loads((run / "summary.json").read_text())
    assert set(summary["data"]["by_dataset"]) == {"Real-Photos", "Synthetic-Dog-Images"}
    assert json.loads((run / "invocation.json").read_text())["benchmark_cache"] == str(cache.resolve())


def test_zip_of_audio(tmp_path, capsys):
    from transformers import Wav2Vec2Config, Wav2Vec2Model

    from detectors.audio.demo import write_demo_audio

    backbone = tmp_path / "tiny-xlsr"
    Wav2Vec2Model(
        Wav2Vec2Config(
            hidden_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=64,
            conv_dim=(32, 32, 32),
            conv_kernel=(10, 8, 4),
            conv_stride=(10, 8, 4),
            num_conv_pos_embeddings=16,
            num_conv_pos_embedding_groups=2,
            feat_extract_norm="layer",
            do_stable_layer_norm=True,
            conv_bias=True,
        )
    ).save_pretrained(backbone)
    demo = write_demo_audio(tmp_path / "demo", n_per_class=5, seconds=(3, 4)).parent
    files = media_files(demo, EXTENSIONS["audio"])
    archive = pack_files(
        tmp_path / "data" / "voices.zip",
        files,
        demo,
        corrupt=["demo_audio/real/broken.wav", "demo_audio/synthetic/broken.flac"],
    )
    data = tmp_path / "data.yaml"
    data.write_text(
        yaml.safe_dump(
            {
                "datasets": [
                    {
                        "name": "real-voices",
                        "path": str(archive),
                        "modality": "audio",
                        "media_type": "real",
                        "include_paths": ["*/real/*"],
                    },
                    {
                        "name": "fake-voices",
                        "path": str(archive),
                        "modality": "audio",
                        "media_type": "synthetic",
                        "exclude_paths": ["*/real/*"],
                    },
                ]
            }
        )
    )
    run = _fit_export(
        "audio",
        "breathnet",
        data,
        tmp_path,
        "--max-epochs",
        "1",
        "--batch-size",
        "4",
        "--backbone",
        str(backbone),
        "--tuning",
        "frozen",
        "--set",
        "model.spectral={channels: [8, 16], embed_dim: 16}",
        "--set",
        "model.fusion_dim=32",
        "--set",
        "model.head_hidden=[16]",
        "--set",
        "model.film_hidden=16",
        "--set",
        "data.augment_level=0",
    )
    _check_counts(
        run,
        tmp_path,
        data,
        {"voices.zip::demo_audio/real/broken.wav", "voices.zip::demo_audio/synthetic/broken.flac"},
        archive,
        "audio",
        capsys,
    )
