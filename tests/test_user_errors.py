"""Errors a new user meets first: each must name the setting or file and say what to do.

Patch-size mismatches are caught when the detector is built, a local weights file or directory the
user named is never replaced by a random backbone, the random-fallback banner says why it happens,
``detect`` refuses a non-video submission up front, and checkpoint errors stay short and readable.
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

import pytest
import torch

from detectors.backbones import BackboneConfig, build_backbone
from detectors.errors import CheckpointError, ConfigError, format_key_mismatch, state_dict_mismatch
from detectors.registry import create_detector

# A 2-block, 32-wide DINOv2 in timm (patch 14): builds in well under a second.
TINY_TIMM = dict(embed_dim=32, depth=2, num_heads=2)


def image_detector_config(backbone: dict | str, image_size: int, **extra) -> dict:
    return {"backbone": backbone, "image_size": image_size, "head_hidden": [8], **extra}


def save_timm_weights(path: Path, **kwargs) -> Path:
    import timm
    from safetensors.torch import save_file

    model = timm.create_model("vit_small_patch14_dinov2", pretrained=False, num_classes=0, **kwargs)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


@pytest.fixture(scope="module")
def image_submission(tiny_dinov3, tmp_path_factory) -> Path:
    """An exported image detector (tiny DINOv3, 32 px): what a user may hand to a video tool."""
    from export.__main__ import export_detector

    torch.manual_seed(0)
    detector = create_detector("dinov3_image", image_detector_config({"name": str(tiny_dinov3)}, 32))
    return Path(export_detector(detector, tmp_path_factory.mktemp("image") / "submission", verify=False)["submission"])


# ------------------------------------------------------------------ 1. image size vs patch size


def test_timm_patch_size_mismatch_is_reported_when_the_detector_is_built():
    backbone = {"name": "vit_small_patch14_dinov2", "pretrained": False, "timm_kwargs": TINY_TIMM}
    with pytest.raises(ConfigError) as caught:
        create_detector("dinov3_image", image_detector_config(backbone, 64))
    message = str(caught.value)
    assert "model.image_size" in message and "patch size 14" in message
    assert "56 or 70" in message  # 4 * 14 and 5 * 14 around 64
    # a multiple of 14 other than the pretraining size (518) is fine: timm interpolates positions
    detector = create_detector("dinov3_image", image_detector_config(backbone, 70))
    assert detector(detector.example_input(1)).shape == (1, 2)


def test_transformers_patch_size_mismatch_is_reported(tiny_dinov2, tiny_dinov3):
    with pytest.raises(ConfigError, match=r"model\.image_size: 64 is not a multiple of the patch size 14.*56 or 70"):
        create_detector("dinov3_image", image_detector_config({"name": str(tiny_dinov2)}, 64))
    with pytest.raises(ConfigError, match=r"patch size 16.*32 or 48"):
        create_detector("dinov3_image", image_detector_config({"name": str(tiny_dinov3)}, 40))
    with pytest.raises(ConfigError, match=r"nearest valid sizes are 16\b"):  # below one patch
        create_detector("dinov3_image", image_detector_config({"name": str(tiny_dinov3)}, 10))
    # tiny_dinov3 was saved at 32 px; 48 is another multiple of 16 and must work (RoPE)
    detector = create_detector("dinov3_image", image_detector_config({"name": str(tiny_dinov3)}, 48))
    assert detector(detector.example_input(1)).shape == (1, 2)


@pytest.mark.parametrize("arch", ["gend", "restrav"])
def test_video_detectors_check_the_frame_size_against_the_patch_size(arch, tiny_dinov3):
    with pytest.raises(ConfigError, match=r"model\.image_size: 40 is not a multiple of the patch size 16"):
        create_detector(arch, {"backbone": {"name": str(tiny_dinov3)}, "image_size": 40})
    assert create_detector(arch, {"backbone": {"name": str(tiny_dinov3)}, "image_size": 48}).config.image_size == 48


def test_fixed_size_timm_backbone_takes_its_one_size_only():
    backbone = build_backbone(
        BackboneConfig(
            name="vit_small_patch14_dinov2",
            pretrained=False,
            timm_kwargs={**TINY_TIMM, "img_size": 56, "dynamic_img_size": False},
        )
    )
    backbone.check_input_size(56)
    with pytest.raises(ConfigError, match=r"takes 56x56 images only.*dynamic_img_size"):
        backbone.check_input_size(70)  # a multiple of 14, but the position embedding is fixed
    with pytest.raises(ConfigError, match=r"data\.size: 28x56"):
        backbone.check_input_size((28, 56), where="data.size")


# ------------------------------------------------------------------ 2. a named local file is never replaced


def test_missing_local_weights_file_is_an_error_even_with_the_random_fallback(tmp_path):
    config = BackboneConfig(
        name="vit_small_patch14_dinov2", weights=str(tmp_path / "nope.safetensors"), timm_kwargs=TINY_TIMM
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no random-fallback banner either
        with pytest.raises(
            ConfigError, match=r"model\.backbone\.weights: weights file .*nope\.safetensors does not exist"
        ):
            build_backbone(config, allow_random_fallback=True)
        backbone = {
            "name": "vit_small_patch14_dinov2",
            "weights": str(tmp_path / "nope.safetensors"),
            "timm_kwargs": TINY_TIMM,
        }
        with pytest.raises(ConfigError, match="nope.safetensors"):  # the demo path: allow_random_backbone
            create_detector("dinov3_image", image_detector_config(backbone, 56, allow_random_backbone=True))


def test_unreadable_or_wrong_local_weights_are_checkpoint_errors(tmp_path):
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x00" * 64)
    wrong = save_timm_weights(tmp_path / "wrong.safetensors", embed_dim=32, depth=3, num_heads=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(
            CheckpointError, match=r"junk\.safetensors: cannot be read as weights: not a readable safetensors"
        ):
            build_backbone(
                BackboneConfig(name="vit_small_patch14_dinov2", weights=str(junk), timm_kwargs=TINY_TIMM),
                allow_random_fallback=True,
            )
        with pytest.raises(CheckpointError) as caught:  # a 3-block file for a 2-block model
            build_backbone(
                BackboneConfig(name="vit_small_patch14_dinov2", weights=str(wrong), timm_kwargs=TINY_TIMM),
                allow_random_fallback=True,
            )
    message = str(caught.value)
    from safetensors import safe_open

    with safe_open(str(wrong), framework="pt") as handle:
        extra = [key for key in handle.keys() if key.startswith("blocks.2.")]
    assert "wrong.safetensors" in message and "vit_small_patch14_dinov2" in message
    assert f"{len(extra)} unexpected keys: blocks.2." in message and f"... and {len(extra) - 5} more" in message
    assert "missing" not in message


def test_unloadable_local_directory_is_an_error_even_with_the_random_fallback(tmp_path):
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text("{not json")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(CheckpointError, match=r"model: cannot load backbone weights"):
            build_backbone(BackboneConfig(name=str(tmp_path / "model")), allow_random_fallback=True)
    with pytest.raises(ConfigError, match="does not exist"):
        build_backbone(BackboneConfig(name=str(tmp_path / "absent")), allow_random_fallback=True)


# ------------------------------------------------------------------ 3. the fallback banner says why


def test_random_fallback_banner_names_the_setting_not_the_demo():
    tiny = {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2}
    with pytest.warns(UserWarning) as caught:  # the hub is offline in tests (conftest)
        backbone = build_backbone(
            BackboneConfig(name="facebook/dinov2-small", fallback_overrides=tiny), allow_random_fallback=True
        )
    message = "\n".join(str(w.message) for w in caught)
    assert "RANDOMLY INITIALISED" in message and "!" * 78 in message  # still loud
    assert "because model.allow_random_backbone is true" in message
    assert "DEMO" not in message and "demo" not in message
    assert backbone.weights_origin == "random"


# ------------------------------------------------------------------ 4. detect refuses other modalities


def test_detect_refuses_an_image_submission_before_loading_it(image_submission, tmp_path, capsys):
    from detectors.video.detect import main, submission_modality

    assert main(["clip.mp4", "--model", str(image_submission)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        f"error: {image_submission} is an image model (model_config.yaml modality: image); "
        "detect takes video submissions"
    )
    # a zipped submission is read without extracting it
    import shutil

    archive = Path(shutil.make_archive(str(tmp_path / "sub"), "zip", image_submission))
    assert submission_modality(archive) == "image"
    assert submission_modality(tmp_path / "absent") is None  # loading reports that itself


# ------------------------------------------------------------------ 5. short checkpoint errors


def small_cakelens():
    from detectors.video.cakelens import CakeLensConfig, CakeLensV5

    torch.manual_seed(0)
    return CakeLensV5(CakeLensConfig(width=8, channel_step=4, num_blocks=2, crop=64))


def test_format_key_mismatch_lists_counts_and_the_first_keys():
    unexpected = [f"k{i}" for i in range(12)]
    assert format_key_mismatch([], unexpected) == "12 unexpected keys: k0, k1, k2, k3, k4 ... and 7 more"
    assert format_key_mismatch(["a"], ["b", "c"], ["w: checkpoint (1,) vs model (2,)"]) == (
        "1 missing keys: a; 2 unexpected keys: b, c; 1 wrong-shape keys: w: checkpoint (1,) vs model (2,)"
    )
    assert format_key_mismatch([], []) == ""
    expected = {"a": torch.zeros(2, 3), "b": torch.zeros(4)}
    assert state_dict_mismatch(expected, {"a": (2, 3), "b": torch.zeros(5), "c": (1,)}) == (
        "1 unexpected keys: c; 1 wrong-shape keys: b: checkpoint (5,) vs model (4,)"
    )
    assert state_dict_mismatch(expected, {"a": torch.zeros(2, 3), "b": torch.zeros(4)}) == ""


def test_cakelens_wrong_safetensors_gives_a_short_error(image_submission):
    from detectors.video.cakelens import load_cakelens_checkpoint

    model = small_cakelens()
    weights = image_submission / "model.safetensors"
    from safetensors import safe_open

    with safe_open(str(weights), framework="pt") as handle:
        found = len(list(handle.keys()))
    with pytest.raises(CheckpointError) as caught:
        load_cakelens_checkpoint(weights, model)
    message = str(caught.value)
    expected = len(model.state_dict())
    assert f"{expected} missing keys: seq.input_conv0.weight" in message
    assert f"{found} unexpected keys: " in message and f"... and {found - 5} more" in message
    assert message.count(", ") <= 3 * 4 + 4  # at most five names per list
    assert "CakeLensV5 (width=8, channel_step=4, num_blocks=2, crop=64)" in message
    assert "mean=" not in message and len(message) < 1000


def test_cakelens_wrong_shapes_are_limited_too(tmp_path):
    from safetensors.torch import save_file

    from detectors.video.cakelens import load_cakelens_checkpoint

    model = small_cakelens()
    state = {k: torch.zeros(*v.shape[:-1], v.shape[-1] + 1) if v.ndim else v for k, v in model.state_dict().items()}
    save_file(state, str(tmp_path / "shapes.safetensors"))
    with pytest.raises(CheckpointError) as caught:
        load_cakelens_checkpoint(tmp_path / "shapes.safetensors", model)
    message = str(caught.value)
    assert (
        f"{len(state)} wrong-shape keys: seq.input_conv0.weight: checkpoint (8, 1, 3, 3, 4) vs model (8, 1, 3, 3, 3)"
        in message
    )
    assert f"... and {len(state) - 5} more" in message and "missing" not in message


def test_cakelens_unreadable_checkpoints_say_what_is_wrong(tmp_path):
    from detectors.video.cakelens import load_cakelens_checkpoint

    model = small_cakelens()
    junk = tmp_path / "junk.pth"
    junk.write_bytes(bytes(range(7, 256)) * 40)  # starts like no zip and no pickle
    with pytest.raises(
        CheckpointError,
        match=r"junk\.pth: cannot be read as a checkpoint: not a PyTorch checkpoint: "
        r"neither a zip archive nor a pickle",
    ):
        load_cakelens_checkpoint(junk, model)

    truncated = tmp_path / "truncated.pth"
    torch.save(model.state_dict(), truncated)
    truncated.write_bytes(truncated.read_bytes()[:2000])
    with pytest.raises(CheckpointError, match=r"truncated\.pth: .*zip archive .*truncated or corrupt"):
        load_cakelens_checkpoint(truncated, model)

    pickled = tmp_path / "namespace.pth"
    torch.save({"args": argparse.Namespace(lr=1)}, pickled)
    with pytest.raises(CheckpointError, match=r"objects other than tensors.*(Unsupported global|argparse)"):
        load_cakelens_checkpoint(pickled, model)

    empty = tmp_path / "empty.pth"
    empty.write_bytes(b"")
    with pytest.raises(CheckpointError, match="an empty file"):
        load_cakelens_checkpoint(empty, model)
