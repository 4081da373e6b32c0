"""Media inside parquet shards and zip / tar archives: the benchmark's column and selection rules,
reading by row group, and every kind of bad container named and counted, never a crash."""

from __future__ import annotations

import gzip
import io
import random
import tarfile
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
import yaml
from container_fixtures import CORRUPT, write_archive
from PIL import Image

from detectors.data.catalog import collect_items, load_dataset_config, load_items
from detectors.data.containers import local_path, media_columns, member_cache_root, member_data
from detectors.data.dataset import MediaDataset, collate_skip, load_media
from detectors.errors import ConfigError, MediaError
from detectors.image.io import load_image


@pytest.fixture(autouse=True)
def member_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("FORENSIC_ADAPTERS_MEMBER_CACHE", str(tmp_path / "member-cache"))


def png(seed: int, size: tuple[int, int] = (12, 16)) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 255, (*size, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


def yaml_file(tmp_path: Path, *entries: dict, **top) -> Path:
    path = tmp_path / "data.yaml"
    path.write_text(yaml.safe_dump({"datasets": list(entries), **top}))
    return path


def entry(path: Path, **fields) -> dict:
    return {
        "name": fields.pop("name", "d"),
        "path": str(path),
        "modality": "image",
        "media_type": "synthetic",
        **fields,
    }


def relative(items) -> list[str]:
    return [Path(i.path.split("::")[0]).name + "::" + i.path.split("::")[1] for i in items]


# ----------------------------------------------------------------------------------------- parquet
def test_media_columns_follow_the_benchmark_rule():
    assert media_columns(["image_id", "Image", "caption"], "image") == ["Image"]
    assert media_columns(["image_id", "src_image"], "image") == ["src_image"]
    assert media_columns(["audio_id", "wav_bytes", "text"], "audio") == ["wav_bytes"]
    assert media_columns(["audio", "mp3"], "audio") == ["audio"]
    assert media_columns(["video_id", "content"], "video") == ["content"]
    assert media_columns(["src_img", "tgt_img", "x"], "image", ["src_img", "tgt_img", "gone"]) == ["src_img", "tgt_img"]


def test_hf_struct_and_binary_columns_filter_labels_and_data_columns(tmp_path):
    rows = 10
    table = pa.table(
        {
            "src": [{"bytes": png(i), "path": f"{i}.png"} for i in range(rows)],  # the HF Image struct
            "tgt": [png(100 + i) for i in range(rows)],  # a plain binary column
            "kind": ["keep" if i % 3 else "drop" for i in range(rows)],
            "label": ["real" if i % 2 else "1" for i in range(rows)],
        }
    )
    shard = tmp_path / "pairs.parquet"
    pq.write_table(table, shard, row_group_size=4)
    items = load_items(
        yaml_file(
            tmp_path,
            entry(shard, data_columns=["src", "tgt"], filter_column="kind", filter_value="keep", label_column="label"),
        ),
        "image",
    )
    kept = [i for i in range(rows) if i % 3]
    assert relative(items) == sorted(f"pairs.parquet::{c}[{i}]" for i in kept for c in ("src", "tgt"))
    assert {i.path.split("::")[1]: i.label for i in items}["src[1]"] == 0
    assert {i.path.split("::")[1]: i.media_type for i in items}["tgt[2]"] == "synthetic"
    first = items[0]
    decoded = load_media(load_image, first.path)
    row = int(first.path.split("[")[-1].rstrip("]"))
    expected = np.asarray(Image.open(io.BytesIO(png(row if "src" in first.path else 100 + row))))
    assert np.array_equal(decoded.permute(1, 2, 0).numpy(), expected)


def test_media_per_archive_samples_rows_as_pandas_does(tmp_path):
    shard = tmp_path / "s.parquet"
    pq.write_table(pa.table({"image": [png(i) for i in range(30)]}), shard, row_group_size=7)
    items = load_items(yaml_file(tmp_path, entry(shard, media_per_archive=5), seed=11), "image")
    expected = pd.DataFrame({"r": range(30)}).sample(n=5, random_state=11)["r"].tolist()
    assert relative(items) == sorted(f"s.parquet::image[{r}]" for r in expected)


def test_one_row_reads_its_row_group_only(tmp_path):
    shard = tmp_path / "s.parquet"
    pq.write_table(pa.table({"image": [png(i) for i in range(20)]}), shard, row_group_size=5)
    items = load_items(yaml_file(tmp_path, entry(shard)), "image")
    load_media(load_image, next(i.path for i in items if i.path.endswith("[7]")))  # a decoder reading bytes
    cells = list(member_cache_root().rglob("*.cells"))
    assert len(cells) == 1 and not list(member_cache_root().rglob("media*"))  # one file for the group
    assert len(cells[0].read_bytes()) == 8 * 7 + sum(len(png(i)) for i in range(5, 10))  # rows 5..9 only
    assert member_data(f"{shard}::image[9]").data == png(9)
    local_path(f"{shard}::image[6]")  # a decoder needing a path: one file per row of the group
    written = sorted(p for p in member_cache_root().rglob("media*"))
    assert len(written) == 5  # rows 5..9: the row group, not the file
    assert local_path(f"{shard}::image[9]") in written  # the rest of the group now hits


def test_workers_read_a_shard_and_an_archive(tmp_path):
    shard = tmp_path / "s.parquet"
    pq.write_table(pa.table({"image": [png(i) for i in range(12)]}), shard, row_group_size=4)
    archive = write_archive(tmp_path / "a.tar", {f"x/{i}.png": png(50 + i) for i in range(6)})
    items = load_items(yaml_file(tmp_path, entry(shard), entry(archive, name="t")), "image")
    from torch.utils.data import DataLoader

    loader = DataLoader(MediaDataset(items, load_image), batch_size=3, num_workers=2, collate_fn=collate_skip)
    batches = list(loader)
    assert sum(len(b["index"]) for b in batches) == 18 and all(b["skipped"] == 0 for b in batches)


def corrupt_row_group(shard: Path, group: int) -> None:
    meta = pq.ParquetFile(shard).metadata.row_group(group).column(0)
    data = bytearray(shard.read_bytes())
    start = meta.data_page_offset
    data[start : start + 64] = b"\xff" * 64
    shard.write_bytes(bytes(data))


def test_a_corrupt_row_group_is_named_and_counted_the_others_load(tmp_path):
    shard = tmp_path / "s.parquet"
    pq.write_table(pa.table({"image": [png(i) for i in range(12)]}), shard, row_group_size=4, compression="none")
    corrupt_row_group(shard, 1)
    items = load_items(yaml_file(tmp_path, entry(shard)), "image")
    assert len(items) == 12  # the footer lists every row
    dataset = MediaDataset(items, load_image)
    batch = collate_skip([dataset[i] for i in range(len(items))])
    assert batch["skipped"] == 4
    assert sorted(
        relative([type(items[0])(p, 1, "synthetic", "d", "image") for p in batch["skipped_paths"]])
    ) == sorted(f"s.parquet::image[{r}]" for r in range(4, 8))
    with pytest.raises(MediaError, match=r"s\.parquet::image\[5\]: row group 1 of the shard is unreadable"):
        load_media(load_image, f"{shard}::image[5]")


def test_a_corrupt_row_group_while_filtering_is_one_counted_sample(tmp_path):
    shard = tmp_path / "s.parquet"
    pq.write_table(
        pa.table({"label": ["fake"] * 9, "image": [png(i) for i in range(9)]}),
        shard,
        row_group_size=3,
        compression="none",
    )
    corrupt_row_group(shard, 2)  # column 0 is the filter column
    items = load_items(yaml_file(tmp_path, entry(shard, filter_column="label", filter_value="fake")), "image")
    assert relative(items) == sorted([f"s.parquet::image[{r}]" for r in range(6)] + ["s.parquet::image[6]"])


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"data_columns": ["picture"]}, r"s\.parquet: no media column: needs data_columns \['picture'\]"),
        ({"data_columns": ["size"]}, r"s\.parquet: column 'size' is int64, not media bytes"),
        ({"filter_column": "kind", "filter_value": "x"}, r"s\.parquet: filter_column 'kind' is not a column"),
        ({"label_column": "truth"}, r"s\.parquet: label_column 'truth' is not a column"),
    ],
)
def test_missing_or_wrongly_typed_columns_are_one_line_errors_naming_the_shard(tmp_path, fields, message):
    shard = tmp_path / "s.parquet"
    pq.write_table(pa.table({"image": [png(0)], "size": [3]}), shard)
    with pytest.raises(ConfigError, match=message) as error:
        load_items(yaml_file(tmp_path, entry(shard, **fields)), "image")
    assert "\n" not in str(error.value) and "data.yaml" in str(error.value)


def test_an_unreadable_shard_in_a_folder_is_counted_not_fatal(tmp_path):
    folder = tmp_path / "shards"
    folder.mkdir()
    pq.write_table(pa.table({"image": [png(i) for i in range(3)]}), folder / "good.parquet")
    (folder / "bad.parquet").write_bytes(b"PAR1 truncated")
    items = load_items(yaml_file(tmp_path, entry(folder)), "image")
    assert relative(items) == [
        "bad.parquet::",
        "good.parquet::image[0]",
        "good.parquet::image[1]",
        "good.parquet::image[2]",
    ]
    with pytest.raises(MediaError, match=r"bad\.parquet: unreadable parquet shard"):
        load_media(load_image, items[0].path)


# ---------------------------------------------------------------------------------------- archives
@pytest.mark.parametrize("name", ["a.zip", "a.tar", "a.tar.gz"])
def test_archive_members_caps_and_globs(tmp_path, name):
    members = {f"train/{i:02d}.png": png(i) for i in range(12)}
    members.update({"val/v.png": png(99), "__MACOSX/train/._00.png": b"x", "notes.txt": b"hello"})
    archive = write_archive(tmp_path / name, members)
    every = load_items(yaml_file(tmp_path, entry(archive)), "image")
    assert len(every) == 13  # media members only, __MACOSX left out
    capped = load_items(
        yaml_file(tmp_path, entry(archive, media_per_archive=4, include_paths=["train/*"]), seed=5), "image"
    )
    candidates = [f"train/{i:02d}.png" for i in range(12)]
    assert relative(capped) == sorted(f"{name}::{m}" for m in random.Random(5).sample(candidates, 4))
    excluded = load_items(yaml_file(tmp_path, entry(archive, exclude_paths=["train"])), "image")
    assert relative(excluded) == [f"{name}::val/v.png"]
    loaded = load_media(load_image, capped[0].path)
    assert loaded.shape == (3, 12, 16)


def test_archives_per_dataset_is_a_seeded_choice(tmp_path):
    folder = tmp_path / "archives"
    for k in range(5):
        write_archive(folder / f"part{k}.zip", {f"{k}.png": png(k)})
    items = load_items(yaml_file(tmp_path, entry(folder, archives_per_dataset=2), seed=3), "image")
    chosen = random.Random(3).sample(sorted(folder.glob("*.zip")), 2)
    assert sorted(Path(i.path.split("::")[0]) for i in items) == sorted(chosen)


def test_truncated_tar_keeps_what_precedes_the_damage_and_names_the_cut_member(tmp_path):
    archive = write_archive(tmp_path / "a.tar", {f"{i}.png": png(i, (64, 64)) for i in range(4)})
    data = archive.read_bytes()
    with tarfile.open(archive) as handle:
        last = handle.getmembers()[-1]
    archive.write_bytes(data[: last.offset_data + 100])  # cut inside the last member
    items = load_items(yaml_file(tmp_path, entry(archive)), "image")
    assert relative(items) == [f"a.tar::{i}.png" for i in range(4)]
    batch = collate_skip([MediaDataset(items, load_image)[i] for i in range(4)])
    assert batch["skipped"] == 1 and batch["skipped_paths"] == [f"{archive}::3.png"]
    with pytest.raises(MediaError, match=r"a\.tar::3\.png: cannot read the member .*end of data"):
        load_media(load_image, f"{archive}::3.png")


@pytest.mark.parametrize("name", ["a.zip", "a.tar.gz"])
def test_truncated_zip_or_tar_gz_and_empty_archives_are_counted(tmp_path, name):
    archive = write_archive(tmp_path / "set" / name, {f"{i}.png": png(i, (64, 64)) for i in range(4)})
    archive.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    write_archive(tmp_path / "set" / "empty.zip", {})
    write_archive(tmp_path / "set" / "text.tar", {"readme.txt": b"no media here"})
    write_archive(tmp_path / "set" / "ok.tar", {"fine.png": png(1, (64, 64)), "lie.png": CORRUPT})
    items = load_items(yaml_file(tmp_path, entry(tmp_path / "set")), "image")
    batch = collate_skip([MediaDataset(items, load_image)[i] for i in range(len(items))])
    readable = len(items) - batch["skipped"]
    assert readable >= 1 and "empty.zip::" in relative(items) and "text.tar::" in relative(items)
    assert f"{tmp_path / 'set' / 'ok.tar'}::lie.png" in batch["skipped_paths"]
    with pytest.raises(MediaError, match=r"empty\.zip: empty archive"):
        load_media(load_image, f"{tmp_path / 'set' / 'empty.zip'}::")
    with pytest.raises(MediaError, match=r"ok\.tar::lie\.png: not an image"):
        load_media(load_image, f"{tmp_path / 'set' / 'ok.tar'}::lie.png")


def test_a_changed_archive_is_read_again(tmp_path):
    archive = write_archive(tmp_path / "a.zip", {"x.png": png(1)})
    first = load_media(load_image, f"{archive}::x.png")
    write_archive(archive, {"x.png": png(2)})
    second = load_media(load_image, f"{archive}::x.png")
    assert not np.array_equal(first.numpy(), second.numpy())


def test_a_gzipped_archive_named_tar_gives_its_members_bytes(tmp_path):
    """The positional read is for uncompressed tars: a compressed one misnamed ``.tar`` is read
    through tarfile, not at its (decompressed-stream) offsets."""
    members = {"a.png": png(1), "b.png": png(2)}
    plain = write_archive(tmp_path / "plain.tar", members)
    misnamed = tmp_path / "misnamed.tar"
    misnamed.write_bytes(gzip.compress(plain.read_bytes()))
    for name, data in members.items():
        assert member_data(f"{misnamed}::{name}").data == data
        assert member_data(f"{plain}::{name}").data == data


def test_workers_reuse_the_tar_index_of_the_listing(tmp_path, monkeypatch):
    """A tar's member index comes from the catalogue's listing (forked workers inherit it) instead of a
    scan per worker; a rewritten archive is scanned again."""
    from detectors.data import containers

    archive = write_archive(tmp_path / "set.tar", {f"{i}.png": png(i) for i in range(3)})
    names, problem = containers.list_archive(archive, (".png",))
    assert problem is None and names == ["0.png", "1.png", "2.png"]
    monkeypatch.setattr(containers, "_ARCHIVES", containers._Archives())  # a fresh worker's handles
    scans = []
    real_scan = containers._scan_tar
    monkeypatch.setattr(containers, "_scan_tar", lambda handle: scans.append(1) or real_scan(handle))
    assert [member_data(f"{archive}::{name}").data for name in names] == [png(i) for i in range(3)]
    assert scans == []
    write_archive(archive, {"0.png": png(7), "extra.png": png(8)})
    assert member_data(f"{archive}::0.png").data == png(7)
    assert scans == [1]


# ---------------------------------------------------------------------------- catalogue leftovers
def test_dangling_symlinks_and_loops_are_named_and_counted(tmp_path, caplog):
    folder = tmp_path / "imgs"
    folder.mkdir()
    (folder / "ok.png").write_bytes(png(0))
    (folder / "gone.png").symlink_to(tmp_path / "missing.png")
    (folder / "loop_a.png").symlink_to(folder / "loop_b.png")
    (folder / "loop_b.png").symlink_to(folder / "loop_a.png")
    items = load_items(yaml_file(tmp_path, entry(folder)), "image")
    assert sorted(Path(i.path).name for i in items) == ["gone.png", "loop_a.png", "loop_b.png", "ok.png"]
    assert "3 broken or looping symbolic link(s)" in caplog.text
    batch = collate_skip([MediaDataset(items, load_image)[i] for i in range(len(items))])
    assert batch["skipped"] == 3
    with pytest.raises(MediaError, match="gone.png: broken symbolic link"):
        load_media(load_image, str(folder / "gone.png"))
    with pytest.raises(MediaError, match="loop_a.png: symbolic link loop"):
        load_media(load_image, str(folder / "loop_a.png"))


@pytest.mark.parametrize("name, kind", [({"a": 1}, "mapping"), (["a", "b"], "list")])
def test_a_dataset_name_that_is_a_mapping_or_list_is_refused(tmp_path, name, kind):
    (tmp_path / "imgs").mkdir()
    path = yaml_file(tmp_path, {"name": name, "path": "imgs", "modality": "image", "media_type": "real"})
    with pytest.raises(ConfigError) as error:
        load_dataset_config(path)
    assert str(error.value) == f"{path}: datasets[0].name: name must be a string, got a {kind}"


# ------------------------------------------------------------------------------- benchmark config
def test_benchmark_config_forms_and_missing_cache_entries(tmp_path):
    cache = tmp_path / "cache" / "datasets" / "A" / "samples"
    cache.mkdir(parents=True)
    (cache / "img_000000.png").write_bytes(png(0))
    grouped = tmp_path / "grouped.yaml"
    grouped.write_text(
        yaml.safe_dump(
            {
                "image": [
                    {
                        "name": "A",
                        "path": "org/a",
                        "media_type": "real",
                        "media_per_archive": -1,
                        "data_columns": ["image"],
                    },
                    {"name": "B", "path": "org/b", "media_type": "synthetic"},
                ],
                "video": [{"name": "V", "path": "org/v", "media_type": "real"}],
            }
        )
    )
    entries = load_dataset_config(grouped, tmp_path / "cache", "image")
    assert [e.name for e in entries] == ["A"] and entries[0].path == str(cache)
    assert entries[0].data_columns == () and entries[0].media_per_archive is None  # the download applied them
    assert len(collect_items(entries, "image")) == 1
    with pytest.raises(ConfigError, match="none of its video datasets is in the benchmark cache"):
        load_dataset_config(grouped, tmp_path / "cache", "video")
    with pytest.raises(ConfigError, match="--benchmark-cache: not a folder"):
        load_dataset_config(grouped, tmp_path / "nowhere", "image")


def encoded(seed: int, fmt: str) -> bytes:
    """A smooth 40x56 picture (lossy codecs keep detail to differ on) as ``fmt`` bytes."""
    base = np.random.default_rng(seed).integers(0, 255, (5, 7, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(base).resize((56, 40), Image.BICUBIC).save(buffer, fmt, **({"quality": 85} if fmt != "PNG" else {}))
    return buffer.getvalue()


def test_members_decoded_from_memory_equal_the_files(tmp_path):
    """Image decoders read container members from their bytes (no member-cache file); the pixels
    equal decoding the same file from disk, for every image loader and container kind."""
    from functools import partial

    from detectors.data.containers import accepts_media_bytes
    from detectors.image.data import benchmark_input_loader, load_image_rgb
    from detectors.image.io import load_image_crop

    media = {f"{fmt.lower()}{i}.{fmt.lower()}": encoded(i, fmt) for i in range(3) for fmt in ("PNG", "JPEG", "WEBP")}
    loose = tmp_path / "loose"
    loose.mkdir()
    for name, data in media.items():
        (loose / name).write_bytes(data)
    names = list(media)
    shard = tmp_path / "s.parquet"
    pq.write_table(pa.table({"image": [{"bytes": media[n], "path": n} for n in names]}), shard, row_group_size=4)
    containers = {
        "tar": write_archive(tmp_path / "a.tar", media),
        "zip": write_archive(tmp_path / "a.zip", media),
        "tar.gz": write_archive(tmp_path / "a.tar.gz", media),
    }
    loaders = [
        load_image,
        load_image_rgb,
        partial(load_image_crop, size=32, train=False),
        benchmark_input_loader({"resize": [24, 24]}),
    ]
    assert all(accepts_media_bytes(load) for load in loaders)
    for load in loaders:
        for row, name in enumerate(names):
            expected = load(str(loose / name))
            refs = [f"{c}::{name}" for c in containers.values()] + [f"{shard}::image[{row}]"]
            for ref in refs:
                assert torch.equal(load_media(load, ref), expected), (ref, load)
    files = list(member_cache_root().rglob("media*"))
    assert len(files) == len(media)  # the .tar.gz's members, written once; tar/zip/parquet rows left none


def test_member_bytes_errors_name_container_and_member(tmp_path):
    archive = write_archive(tmp_path / "a.tar", {"ok.png": png(1), "bad.png": CORRUPT, "empty.png": b""})
    shard = tmp_path / "s.parquet"
    pq.write_table(
        pa.table(
            {
                "image": [
                    {"bytes": png(2), "path": "a.png"},
                    {"bytes": None, "path": None},
                    {"bytes": b"not an image", "path": "b.png"},
                ]
            }
        ),
        shard,
    )
    for ref, problem in (
        (f"{archive}::bad.png", "not an image|corrupt"),
        (f"{archive}::empty.png", "empty"),
        (f"{archive}::gone.png", "no member 'gone.png'"),
        (f"{shard}::image[1]", "empty cell"),
        (f"{shard}::image[2]", "not an image"),
        (f"{shard}::image[9]", "past the shard's end"),
        (f"{shard}::other[0]", "no column 'other'"),
    ):
        with pytest.raises(MediaError, match=problem) as caught:
            load_media(load_image, ref)
        assert caught.value.path == ref
