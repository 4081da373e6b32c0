"""``detectors.evaluate`` options beyond the fixtures' replay: robustness modes, drawn seeds, caps,
no blend, option errors, the benchmark's order of dataset folders, and videos stored as frames
(catalogue, evaluation and detect), with the tiny submissions of ``tests/data/gasbench``."""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from detectors import selection
from detectors.data.catalog import load_dataset_config, load_items
from detectors.errors import MediaError
from detectors.evaluate import evaluate_submission, main

FIXTURES = Path(__file__).parent / "data" / "gasbench"
IMAGE_SUBMISSION = FIXTURES / "image" / "submission"
VIDEO_SUBMISSION = FIXTURES / "video" / "submission"


def _image_data(root: Path, names=("coco-real", "sdxl")) -> Path:
    entries = []
    for name in names:
        shutil.copytree(FIXTURES / "image" / "datasets" / name / "samples", root / name)
        media_type = "real" if "real" in name else "synthetic"
        entries.append({"name": name, "path": name, "modality": "image", "media_type": media_type})
    path = root / "data.yaml"
    path.write_text(yaml.safe_dump({"datasets": entries}))
    return path


def test_robustness_without_a_count_augments_every_scored_sample(tmp_path: Path) -> None:
    results = evaluate_submission(
        IMAGE_SUBMISSION, _image_data(tmp_path), tmp_path / "out", robustness=True, num_workers=0
    )
    robustness = results["robustness"]
    assert robustness["mode"] == "every_sample" and robustness["seed"] is None and robustness["blended"]
    assert results["selection"]["mode"] == "every_sample"
    # 6 + 6 files, one of them unreadable: every readable one is augmented too
    assert results["base"]["n"] == 11 and results["augmented"]["n"] == 11
    assert robustness["augmented_per_dataset"] == {
        "coco-real": {"selected": 6, "scored": 6},
        "sdxl": {"selected": 6, "scored": 5},
    }
    assert results["score"] == pytest.approx(0.8 * results["base"]["score"] + 0.2 * results["augmented"]["score"])
    summary = (tmp_path / "out" / "summary.txt").read_text()
    assert "robustness (every scored sample)" in summary and "augmented=5" in summary


def test_aug_per_dataset_without_seed_draws_and_reports_one(tmp_path: Path) -> None:
    data = _image_data(tmp_path)
    first = evaluate_submission(IMAGE_SUBMISSION, data, tmp_path / "a", aug_per_dataset=3, num_workers=0)
    seed = first["robustness"]["seed"]
    assert first["selection"]["seed_drawn"] and first["selection"]["seed"] == seed and isinstance(seed, int)
    assert first["robustness"]["mode"] == "benchmark_selection"  # --aug-per-dataset implies --robustness
    again = evaluate_submission(
        IMAGE_SUBMISSION, data, tmp_path / "b", robustness=True, aug_per_dataset=3, seed=seed, num_workers=0
    )
    assert not again["selection"]["seed_drawn"]
    assert again["score"] == first["score"] and again["augmented"]["n"] == first["augmented"]["n"]
    # the augmented samples are the first 3 of each dataset's seeded order, the same folder listing
    chosen = set()
    for entry in load_dataset_config(data):
        items = [i for i in load_items(data) if i.dataset == entry.name]
        chosen |= {i.path for i in selection.benchmark_order(entry, items, seed).items[:3]}
    written = (tmp_path / "b" / "predictions_augmented.csv").read_text().splitlines()[1:]
    assert {line.split(",")[0] for line in written} <= chosen and len(written) == first["augmented"]["n"]


def test_seed_caps_the_base_pass_and_aug_weight_zero_does_not_blend(tmp_path: Path) -> None:
    results = evaluate_submission(
        IMAGE_SUBMISSION,
        _image_data(tmp_path),
        tmp_path / "out",
        aug_per_dataset=2,
        seed=3,
        aug_weight=0.0,
        max_per_dataset=4,
        num_workers=0,
    )
    per_dataset = results["selection"]["per_dataset"]
    assert per_dataset["coco-real"] == {"available": 6, "cap": 4, "selected": 4, "listing": "listing"}
    assert results["robustness"]["blended"] is False and "augmented" in results
    assert results["score"] == results["base_score"] == results["base"]["score"]
    # without --max-per-dataset the cap is the benchmark's full-run one (2000 for two image datasets)
    results = evaluate_submission(IMAGE_SUBMISSION, tmp_path / "data.yaml", tmp_path / "out2", seed=3, num_workers=0)
    assert results["selection"]["per_dataset"]["sdxl"]["cap"] == 2000 and "augmented" not in results


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--holdout-share", "0.7", "--gasstation-share", "0.4"], "sum to <= 1"),
        (["--holdout-share", "-0.1"], "must be >= 0"),
        (["--aug-per-dataset", "0"], "--aug-per-dataset must be >= 1"),
        (["--aug-weight", "1.5"], "--aug-weight must lie in [0, 1]"),
    ],
)
def test_bad_benchmark_options_are_one_line_errors(tmp_path: Path, capsys, argv, message) -> None:
    code = main(
        [
            "--model",
            str(IMAGE_SUBMISSION),
            "--data",
            str(tmp_path / "none.yaml"),
            "--output",
            str(tmp_path / "out"),
            *argv,
        ]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2 and message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "out").exists()  # refused before anything ran


def test_audio_submission_refuses_a_benchmark_augmented_loader() -> None:
    from detectors.audio.data import benchmark_input_loader, project_robustness_loader

    with pytest.raises(ValueError, match="no audio augmented pass"):
        benchmark_input_loader({}, robustness=True)
    assert callable(project_robustness_loader({}))


# ------------------------------------------------------------------------------ dataset order
def _entry(tmp_path: Path, name: str, files: list[str], nested: bool = False):
    folder = tmp_path / name
    for file in files:
        path = folder / ("sub" if nested else "") / file
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (8, 8)).save(path)
    (folder / ".hidden.png").write_bytes(b"")  # dot files are never listed
    (folder / "notes.txt").write_text("not media")
    config = tmp_path / f"{name}.yaml"
    config.write_text(
        yaml.safe_dump({"datasets": [{"name": name, "path": name, "modality": "image", "media_type": "real"}]})
    )
    return load_dataset_config(config)[0], load_items(config)


def test_order_follows_the_folder_listing_and_the_seeded_shuffle(tmp_path: Path) -> None:
    names = [f"img_{i:06d}.png" for i in range(9)]
    entry, items = _entry(tmp_path, "plain", names)
    order = selection.benchmark_order(entry, items, seed=11)
    listed = [n for n in os.listdir(tmp_path / "plain") if n.endswith(".png") and not n.startswith(".")]
    random.Random(11).shuffle(listed)  # the benchmark: os.listdir order, then random.Random(seed).shuffle
    assert order.listing == "listing" and [Path(i.path).name for i in order.items] == listed
    # nested folders are no benchmark cache: sorted paths, then the same shuffle
    entry, items = _entry(tmp_path, "nested", names, nested=True)
    order = selection.benchmark_order(entry, items, seed=11)
    expected = sorted(i.path for i in items)
    random.Random(11).shuffle(expected)
    assert order.listing == "sorted" and [i.path for i in order.items] == expected


def test_gasstation_datasets_are_taken_newest_first(tmp_path: Path) -> None:
    entry, items = _entry(tmp_path, "gasstation-week", ["img_000002.png", "img_000010.png", "x.png", "img_000001.png"])
    order = selection.benchmark_order(entry, items, seed=5)
    assert [Path(i.path).name for i in order.items][:3] == ["img_000010.png", "img_000002.png", "img_000001.png"]
    assert Path(order.items[-1].path).name == "x.png"  # no number: last
    # 55000 images over weights 1 + 5: capped at 2000 and 10000
    assert selection.dataset_caps(["a", "gasstation-week"], "image") == {"a": 2000, "gasstation-week": 10000}


# ----------------------------------------------------------------------- videos stored as frames
def _frames(folder: Path, count: int, size=(36, 52), start: int = 0) -> list[np.ndarray]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(count)
    frames = [rng.integers(0, 256, (*size, 3), dtype=np.uint8) for _ in range(count)]
    for i, frame in enumerate(frames):
        Image.fromarray(frame).save(folder / f"{start + i:06d}.png")
    return frames


def test_frame_folder_clip_skips_undecodable_frames_and_ignores_frame_rate(tmp_path: Path) -> None:
    from detectors.video.io import read_video_frames
    from detectors.video.sampling import FrameSampler

    folder = tmp_path / "clip"
    frames = _frames(folder, 10)
    (folder / "000001.png").write_bytes(b"broken")  # the benchmark skips it, then pads at the end
    (folder / "fps.txt").write_text("50")
    clip = read_video_frames(folder, FrameSampler("benchmark", 4, frame_rate=5.0)).permute(0, 2, 3, 1).numpy()
    # first 4 files, the broken one skipped, the last good one repeated; no step from frame_rate
    assert [np.array_equal(clip[i], frames[j]) for i, j in enumerate([0, 2, 3, 3])] == [True] * 4
    for i in range(10):
        (folder / f"{i:06d}.png").write_bytes(b"broken")
    with pytest.raises(MediaError, match="can be decoded"):
        read_video_frames(folder, FrameSampler("benchmark", 4))


def test_frame_folders_are_listed_evaluated_and_detected(tmp_path: Path, capsys) -> None:
    from detectors.detect import main as detect_main

    for name in ("real", "fake"):
        for clip in range(2):
            _frames(tmp_path / name / f"clip{clip}", 5 + clip)
        shutil.copy(FIXTURES / "video" / "datasets" / "real-clips" / "samples" / "vid_000000.mp4", tmp_path / name)
    (tmp_path / "real" / "empty_dir").mkdir()  # not a video: no frames
    config = tmp_path / "data.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "datasets": [
                    {"name": "real", "path": "real", "modality": "video", "media_type": "real"},
                    {
                        "name": "fake",
                        "path": "fake",
                        "modality": "video",
                        "media_type": "synthetic",
                        "exclude_paths": ["clip1"],
                    },
                ]
            }
        )
    )
    items = load_items(config)
    assert sorted(Path(i.path).name for i in items) == ["clip0", "clip0", "clip1", "vid_000000.mp4", "vid_000000.mp4"]
    results = evaluate_submission(
        VIDEO_SUBMISSION, config, tmp_path / "out", robustness=True, aug_per_dataset=1, seed=2, num_workers=0
    )
    assert results["base"]["n"] == 5 and results["augmented"]["n"] == 2
    assert (
        json.loads((tmp_path / "out" / "results.json").read_text())["selection"]["per_dataset"]["real"]["listing"]
        == "listing"
    )
    # detect scores a frame folder like the evaluation did
    code = detect_main(
        [str(tmp_path / "real" / "clip0"), "--model", str(VIDEO_SUBMISSION), "--json", str(tmp_path / "detect.json")]
    )
    assert code == 0
    detected = json.loads((tmp_path / "detect.json").read_text())
    rows = detected if isinstance(detected, list) else detected["results"]
    with open(tmp_path / "out" / "predictions.csv") as handle:
        expected = {line.split(",")[0]: float(line.split(",")[3]) for line in handle.read().splitlines()[1:]}
    assert rows[0]["prob_fake"] == pytest.approx(expected[str((tmp_path / "real" / "clip0").resolve())], abs=1e-6)
    capsys.readouterr()


def test_frames_parquet_errors_name_the_shard_and_video(tmp_path: Path) -> None:
    from detectors.video.io import open_video

    shard = tmp_path / "frames.parquet"
    shutil.copy(FIXTURES / "video" / "frames_parquet" / "shard.parquet", shard)
    with pytest.raises(MediaError, match="no rows with video_id 'nope'") as caught:
        open_video(f"{shard}::nope")
    assert "frames.parquet::nope" in str(caught.value)
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"video_id": ["a"], "label": [1]}), tmp_path / "plain.parquet")
    with pytest.raises(MediaError, match="not a frames parquet shard"):
        open_video(f"{tmp_path / 'plain.parquet'}::a")
    assert torch.is_tensor(open_video(f"{shard}::clip-a").frames([0, 1]))
