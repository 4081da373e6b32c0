"""Submission writer, checker and the stand-alone benchmark loader."""

from __future__ import annotations

import importlib.util
import re
import shutil
import textwrap
import zipfile
from pathlib import Path

import pytest
import torch
import yaml
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torchvision.transforms.v2 import functional as TF
from transformers import Dinov2Config, Dinov2Model, DINOv3ViTConfig, DINOv3ViTModel

from detectors.image.dinov3 import DinoImageNetwork
from export import benchmark_loader as loader
from export.check import check_model_source, check_submission, validate_config
from export.convert import convert_backbone
from export.spec import ExportSpec
from export.writer import build_model_source, write_submission

MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


def _backbone(kind: str) -> tuple[torch.nn.Module, tuple[int, int]]:
    torch.manual_seed(0)
    if kind == "dinov2":
        model = Dinov2Model(
            Dinov2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, image_size=28, patch_size=14)
        )
        size = (28, 42)
    else:
        config = DINOv3ViTConfig(
            hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, image_size=32,
            patch_size=16, num_register_tokens=4,
        )  # fmt: skip
        model, size = DINOv3ViTModel(config), (48, 32)
    with torch.no_grad():
        for param in model.parameters():
            param.mul_(0).add_(torch.randn_like(param) * 0.2)
    return model.train(False), size


def _image_spec(kind: str, features: str = "both") -> tuple[ExportSpec, torch.nn.Module]:
    backbone, size = _backbone(kind)
    vit_kwargs, vit_state = convert_backbone(backbone, size)
    init = {
        "backbone": vit_kwargs,
        "features": features,
        "head_hidden": [16],
        "mean": tuple(MEAN),
        "std": STD,
        "activation": "relu",
    }
    network = DinoImageNetwork(num_classes=2, **init)
    state = {f"network.{key}": value for key, value in network.state_dict().items() if not key.startswith("backbone.")}
    state.update({f"network.backbone.{key}": value for key, value in vit_state.items()})
    state["calibration.scale"] = torch.tensor([0.8])
    state["calibration.bias"] = torch.tensor([0.25, -0.25])
    spec = ExportSpec(
        modality="image",
        network_class=DinoImageNetwork,
        init_kwargs=init,
        state_dict=state,
        preprocessing={"resize": list(size)},
        name=f"tiny-{kind}",
    )
    return spec, backbone


def _expected_logits(spec: ExportSpec, backbone: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Independent computation: library backbone -> pooling -> head -> calibration, from the spec's weights."""
    state = spec.state_dict
    registers = spec.init_kwargs["backbone"]["num_register_tokens"]
    with torch.no_grad():
        tokens = backbone(pixel_values=TF.normalize(images.float() / 255, MEAN, STD)).last_hidden_state
        pooled = torch.cat([tokens[:, 0], tokens[:, 1 + registers :].mean(dim=1)], dim=-1)
        hidden = torch.relu(pooled @ state["network.head.layers.0.weight"].T + state["network.head.layers.0.bias"])
        logits = hidden @ state["network.head.layers.1.weight"].T + state["network.head.layers.1.bias"]
    return logits * state["calibration.scale"] + state["calibration.bias"]


@pytest.fixture(scope="module")
def dinov2_export(tmp_path_factory) -> tuple[Path, ExportSpec, torch.nn.Module]:
    spec, backbone = _image_spec("dinov2")
    return write_submission(spec, tmp_path_factory.mktemp("exports") / "dinov2"), spec, backbone


@pytest.fixture(scope="module")
def dinov3_export(tmp_path_factory) -> tuple[Path, ExportSpec, torch.nn.Module]:
    spec, backbone = _image_spec("dinov3")
    return write_submission(spec, tmp_path_factory.mktemp("exports") / "dinov3"), spec, backbone


def _copy(directory: Path, tmp_path: Path) -> Path:
    """A copy to edit by hand: without the export's SHA256SUMS, which would report every edit first
    (the manifest has its own tests in test_export_integrity.py)."""
    target = tmp_path / "submission"
    shutil.copytree(directory, target)
    (target / "SHA256SUMS").unlink()
    return target


# ----------------------------------------------------------------------------------------------
# valid submissions


@pytest.mark.parametrize("fixture", ["dinov2_export", "dinov3_export"])
def test_valid_submission_passes_and_matches_the_library(fixture: str, request) -> None:
    directory, spec, backbone = request.getfixturevalue(fixture)
    # the three submission files and the export's SHA256SUMS manifest
    assert sorted(p.name for p in directory.iterdir()) == sorted(
        ["model.py", "model_config.yaml", "model.safetensors", "SHA256SUMS"]
    )
    assert check_submission(directory) == []  # includes the fresh-interpreter load and run

    model, config = loader.load_submission(directory)
    assert config["dtype"] == "float32" and "dtype" not in config["model"]
    images = loader.example_input(config, batch_size=3)
    assert images.shape == (3, 3, *spec.preprocessing["resize"]) and images.dtype == torch.uint8
    logits = loader.run_model(model, images, num_classes=2)
    assert torch.allclose(logits, _expected_logits(spec, backbone, images), atol=1e-5)
    # uint8 (current benchmark) and float 0..255 (v0.5.3) inputs give identical logits
    assert torch.equal(logits, loader.run_model(model, images.float(), num_classes=2))


def test_config_and_source_layout(dinov2_export) -> None:
    directory, spec, _ = dinov2_export
    config = yaml.safe_load((directory / "model_config.yaml").read_text())
    assert list(config)[:4] == ["name", "version", "modality", "dtype"]
    assert config["model"]["num_classes"] == 2 and config["model"]["weights_file"] == "model.safetensors"
    assert config["model"]["mean"] == MEAN  # the tuple came back as a list
    assert config["model"]["backbone"] == spec.init_kwargs["backbone"]
    source = (directory / "model.py").read_text()
    assert check_model_source(source) == []
    assert "from ." not in source and "import detectors" not in source and "import export" not in source
    assert source.count("import torch.nn as nn") == 1
    assert source.count("from typing import") == 1
    assert "def load_model(weights_path, num_classes=2, **kwargs):" in source


def test_bf16_zip_loads_without_transformers_and_timm(tmp_path) -> None:
    spec, backbone = _image_spec("dinov3", features="mean")
    archive = write_submission(spec, tmp_path / "bf16", dtype="bf16", zip=True)
    assert archive == tmp_path / "bf16.zip"
    with zipfile.ZipFile(archive) as handle:
        assert sorted(handle.namelist()) == sorted(["model.py", "model_config.yaml", "model.safetensors"])
    with safe_open(str(tmp_path / "bf16" / "model.safetensors"), framework="pt") as weights:
        assert weights.get_tensor("network.backbone.blocks.0.attn.qkv.weight").dtype == torch.bfloat16
        assert weights.get_tensor("calibration.bias").dtype == torch.float32  # vectors stay float32
    assert check_submission(archive, also_block=["transformers", "timm"]) == []

    model, config = loader.load_submission(archive)
    assert config["dtype"] == "bfloat16"
    assert model.network.backbone.patch_embed.weight.dtype == torch.bfloat16
    images = loader.example_input(config, batch_size=2)
    logits = loader.run_model(model, images, num_classes=2)
    assert logits.dtype == torch.float32 and torch.isfinite(logits).all()
    reference = write_submission(spec, tmp_path / "fp32")
    fp32_logits = loader.run_model(loader.load_submission(reference)[0], images, num_classes=2)
    assert (logits - fp32_logits).abs().max() < 0.1 * fp32_logits.abs().max() + 0.05


# ----------------------------------------------------------------------------------------------
# broken submissions


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))


def test_forbidden_import_is_reported(dinov2_export, tmp_path) -> None:
    directory = _copy(dinov2_export[0], tmp_path)
    _edit(directory / "model.py", "import torch\n", "import torch\nimport os\n")
    problems = check_submission(directory)
    assert any("import of 'os' is not allowed" in p for p in problems), problems


def test_blocked_call_is_reported(dinov2_export, tmp_path) -> None:
    directory = _copy(dinov2_export[0], tmp_path)
    _edit(directory / "model.py", "    model.train(False)\n", "    getattr(model, 'train')(False)\n")
    problems = check_submission(directory)
    assert any("blocked call `getattr(`" in p for p in problems), problems
    assert any("eval(" in p for p in check_model_source("def load_model(weights_path, **kw):\n    m.eval()\n"))
    assert any("torch.jit.script" in p for p in check_model_source("import torch\nf = torch.jit.script\n"))


def test_dtype_under_model_is_reported(dinov2_export, tmp_path) -> None:
    directory = _copy(dinov2_export[0], tmp_path)
    config = yaml.safe_load((directory / "model_config.yaml").read_text())
    config["model"]["dtype"] = config.pop("dtype")
    (directory / "model_config.yaml").write_text(yaml.safe_dump(config))
    problems = check_submission(directory)
    assert any("dtype is under model:" in p for p in problems), problems
    assert any("top-level dtype missing" in p for p in problems), problems
    with pytest.raises(loader.SubmissionError, match="dtype is under model:"):
        loader.load_submission(directory)


def test_missing_weights_file_is_reported(dinov2_export, tmp_path) -> None:
    directory = _copy(dinov2_export[0], tmp_path)
    (directory / "model.safetensors").unlink()
    problems = check_submission(directory)
    assert any("weights file missing" in p for p in problems), problems


def test_wrong_output_shape_is_reported(dinov2_export, tmp_path) -> None:
    directory = _copy(dinov2_export[0], tmp_path)
    _edit(
        directory / "model.py",
        "return self.calibration(self.network(x))",
        "return self.calibration(self.network(x)).repeat(1, 2)",
    )
    problems = check_submission(directory)
    assert problems and all("output shape [2, 4]" in p for p in problems), problems


def test_zip_with_parent_folder_is_reported(dinov2_export, tmp_path) -> None:
    archive = tmp_path / "nested.zip"
    with zipfile.ZipFile(archive, "w") as handle:
        for path in dinov2_export[0].iterdir():
            handle.write(path, arcname=f"dinov2/{path.name}")
    problems = check_submission(archive)
    assert len(problems) == 1 and "parent folder (dinov2/)" in problems[0]
    with pytest.raises(loader.SubmissionError, match="parent folder"):
        loader.load_submission(archive)


def test_validate_config_rules() -> None:
    good = {
        "dtype": "bf16",
        "modality": "video",
        "preprocessing": {"resize": [224, 224], "num_frames": 16},
        "model": {"num_classes": 2},
    }
    assert validate_config(good) == []
    assert any("dtype 'float64' is invalid" in p for p in validate_config({**good, "dtype": "float64"}))
    assert any(
        "num_frames" in p for p in validate_config({**good, "preprocessing": {"resize": [224, 224], "num_frames": 65}})
    )
    assert any("resize" in p for p in validate_config({**good, "preprocessing": {"resize": [224]}}))
    audio = {
        "dtype": "float32",
        "modality": "audio",
        "preprocessing": {"sample_rate": 16000, "duration_seconds": 6.0},
        "model": {},
    }
    assert validate_config(audio) == []
    assert any(
        "sample_rate" in p
        for p in validate_config({**audio, "preprocessing": {"sample_rate": 22050, "duration_seconds": 6.0}})
    )
    assert any(
        "duration_seconds" in p
        for p in validate_config({**audio, "preprocessing": {"sample_rate": 16000, "duration_seconds": 4}})
    )


def test_load_model_signature_rule() -> None:
    problems = check_model_source("def load_model(path, num_classes=2, **kwargs):\n    return None\n")
    assert any("first parameter must be weights_path" in p for p in problems)
    assert any("no top-level load_model" in p for p in check_model_source("x = 1\n"))


# ----------------------------------------------------------------------------------------------
# writer


def test_writer_validates_before_writing(tmp_path) -> None:
    spec, _ = _image_spec("dinov2")
    spec.preprocessing = {"resize": [28]}
    with pytest.raises(ValueError, match="preprocessing.resize"):
        write_submission(spec, tmp_path / "out")
    assert list(tmp_path.iterdir()) == []  # nothing, not even a temp dir, is left behind
    with pytest.raises(ValueError, match="reserved"):
        ExportSpec("image", DinoImageNetwork, {"dtype": "bf16"}, {}, {"resize": [28, 28]})
    with pytest.raises(ValueError, match="nn.Module class"):
        ExportSpec("image", "DinoImageNetwork", {}, {}, {"resize": [28, 28]})


def test_writer_replaces_previous_export_only(tmp_path) -> None:
    spec, _ = _image_spec("dinov2")
    out = write_submission(spec, tmp_path / "out")
    spec.name = "second"
    write_submission(spec, out)
    assert yaml.safe_load((out / "model_config.yaml").read_text())["name"] == "second"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("keep")
    with pytest.raises(FileExistsError):
        write_submission(spec, tmp_path / "other")
    assert (tmp_path / "other" / "notes.txt").read_text() == "keep"


def test_build_model_source_defaults_make_the_retry_path_work(tmp_path) -> None:
    spec, _ = _image_spec("dinov2")
    source = tmp_path / "model.py"
    source.write_text(build_model_source(spec))
    module_spec = importlib.util.spec_from_file_location("generated_model", source)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    weights = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in spec.state_dict.items()}, str(weights))
    model = module.load_model(str(weights), num_classes=2)  # what the TypeError retry passes
    assert model.training is False
    assert model(torch.zeros(1, 3, 28, 42, dtype=torch.uint8)).shape == (1, 2)


# ----------------------------------------------------------------------------------------------
# benchmark loader rules


RETRY_MODEL = """
import torch
import torch.nn as nn
from safetensors.torch import load_file

CALLS = []


class Tiny(nn.Module):
    def __init__(self, num_classes):
        super().__init__()
        self.linear = nn.Linear(3, num_classes)

    def forward(self, x):
        return {"logits": self.linear(x.to(self.linear.weight.dtype).mean(dim=(2, 3)))}


def load_model(weights_path, num_classes=2, **kwargs):
    CALLS.append((type(weights_path).__name__, num_classes, sorted(kwargs)))
    if kwargs:
        raise TypeError("unexpected keyword arguments")
    model = Tiny(num_classes)
    model.load_state_dict(load_file(weights_path))
    model.calls = CALLS
    model.module_name = __name__
    return model
"""


def _retry_submission(tmp_path: Path, dtype: str = "bf16") -> Path:
    directory = tmp_path / "retry"
    directory.mkdir()
    (directory / "model.py").write_text(textwrap.dedent(RETRY_MODEL))
    save_file(
        {"linear.weight": torch.randn(3, 3), "linear.bias": torch.randn(3)}, str(directory / "weights.safetensors")
    )
    config = {
        "dtype": dtype,
        "modality": "image",
        "preprocessing": {"resize": [8, 8]},
        "model": {"num_classes": 3, "weights_file": "weights.safetensors", "features": "cls"},
    }
    (directory / "model_config.yaml").write_text(yaml.safe_dump(config))
    return directory


def test_loader_retries_with_num_classes_on_type_error(tmp_path) -> None:
    model, config = loader.load_submission(_retry_submission(tmp_path))
    assert model.calls == [("str", 3, ["features"]), ("str", 3, [])]  # first with the model: keys, then the retry
    assert model.module_name == "custom_model"
    assert model.linear.weight.dtype == torch.bfloat16 and model.training is False
    logits = loader.run_model(model, loader.example_input(config, 2), num_classes=3)
    assert logits.shape == (2, 3)
    assert check_submission(tmp_path / "retry", run=False) == []


def test_loader_output_rules() -> None:
    logits = torch.randn(2, 2)

    class WithLogits:
        def __init__(self, value):
            self.logits = value

    assert loader.extract_logits(logits) is logits
    assert loader.extract_logits(WithLogits(logits)) is logits
    assert loader.extract_logits({"output": logits}) is logits
    assert loader.extract_logits((logits,)) is logits
    with pytest.raises(loader.SubmissionError):
        loader.extract_logits((logits, logits))
    wide = torch.nn.Linear(3, 5)
    with pytest.raises(loader.SubmissionError, match="last dim"):
        loader.run_model(wide, torch.zeros(2, 3), num_classes=2)
    assert loader.run_model(wide, torch.zeros(2, 3), num_classes=5).shape == (2, 5)


def test_loader_input_shapes_and_dtypes(tmp_path) -> None:
    image = {"modality": "image", "preprocessing": {"resize": [20, 30]}}
    assert loader.input_shape(image, 4) == ([4, 3, 20, 30], torch.uint8)
    video = {"modality": "video", "preprocessing": {"resize": [20, 30], "num_frames": 100}}
    assert loader.input_shape(video, 2) == ([2, 64, 3, 20, 30], torch.uint8)
    assert loader.input_shape({"modality": "video", "preprocessing": {"resize": [8, 8]}}, 1)[0] == [1, 16, 3, 8, 8]
    audio = {"modality": "audio", "preprocessing": {"sample_rate": 16000, "duration_seconds": 6.0}}
    assert loader.input_shape(audio, 2) == ([2, 96000], torch.float32)
    samples = loader.example_input(audio, 2)
    assert samples.dtype == torch.float32 and samples.abs().max() <= 1
    directory = _retry_submission(tmp_path, dtype="float64")
    with pytest.raises(loader.SubmissionError, match="float64"):
        loader.load_submission(directory)


def test_bf16_cast_keeps_sensitive_buffers_in_float32():
    # the benchmark does model.to(device, bfloat16): normalisation and calibration constants must survive
    from detectors.networks.layers import ImageNormalize, LogitAffine

    affine, normalize = LogitAffine(2), ImageNormalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    affine.scale.fill_(1 / 3)
    affine.to(torch.bfloat16)
    normalize.to(torch.bfloat16)
    assert affine.scale.dtype == torch.float32 and affine.scale.item() == pytest.approx(1 / 3, abs=1e-7)
    assert normalize.mean.dtype == torch.float32
    x = torch.randint(0, 256, (1, 3, 4, 4), dtype=torch.uint8)
    reference = ImageNormalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))(x)
    assert torch.equal(normalize(x), reference)


# ----------------------------------------------------------------------------------------------
# messages name the file and the problem (review fixes)


def test_wrong_weight_keys_and_shapes_name_the_weights_file(dinov2_export, tmp_path) -> None:
    directory = _copy(dinov2_export[0], tmp_path)
    weights = {key: value for key, value in load_file(str(directory / "model.safetensors")).items()}
    good = dict(weights)
    weights["extra.weight"] = torch.zeros(2)
    del weights["network.head.layers.0.bias"]
    save_file(weights, str(directory / "model.safetensors"))
    problems = check_submission(directory)  # found by the fresh-interpreter load
    assert len(problems) == 1, problems
    assert f"{directory / 'model.safetensors'}" in problems[0] and f"{directory / 'model.py'}" in problems[0]
    assert "network.head.layers.0.bias" in problems[0] and "extra.weight" in problems[0]

    good["network.head.layers.0.weight"] = torch.zeros(3, 3)
    save_file(good, str(directory / "model.safetensors"))
    with pytest.raises(loader.SubmissionError, match=r"(?s)model\.safetensors: RuntimeError: .*size mismatch"):
        loader.load_submission(directory)


def test_zip_problems_name_the_zip_not_a_temporary_folder(dinov2_export, tmp_path) -> None:
    archive = tmp_path / "submission.zip"
    with zipfile.ZipFile(archive, "w") as handle:
        for path in dinov2_export[0].iterdir():
            if path.name not in ("model.safetensors", "model.py"):
                handle.write(path, arcname=path.name)
        handle.writestr("model.py", "import os\n" + (dinov2_export[0] / "model.py").read_text())
    problems = check_submission(archive, run=False)
    assert any(p.startswith(f"{archive / 'model.safetensors'}: weights file missing") for p in problems), problems
    assert any(p.startswith(f"{archive / 'model.py'}:1: import of 'os'") for p in problems), problems
    with pytest.raises(
        loader.SubmissionError, match=re.escape(f"{archive / 'model.safetensors'}: weights file missing")
    ):
        loader.load_submission(archive)


def test_undecodable_files_and_bad_yaml_are_reported_not_raised(dinov2_export, tmp_path) -> None:
    directory = _copy(dinov2_export[0], tmp_path)
    (directory / "model.py").write_bytes((directory / "model.py").read_bytes() + b"\n# caf\xe9\n")
    problems = check_submission(directory, run=False)
    assert problems == [
        f"{directory / 'model.py'}: not UTF-8 text (invalid continuation byte at byte "
        f"{len((dinov2_export[0] / 'model.py').read_bytes()) + 6}); save it as UTF-8"
    ]

    directory = _copy(dinov2_export[0], tmp_path / "yaml")
    config_path = directory / "model_config.yaml"
    config_path.write_text("name: x\nmodel: [unclosed\n")
    problems = check_submission(directory, run=False)
    assert len(problems) == 1 and problems[0].startswith(f"{config_path}: not valid YAML"), problems
    with pytest.raises(loader.SubmissionError, match="not valid YAML"):
        loader.load_submission(directory)
    config_path.write_bytes(b"name: caf\xe9\n")
    assert check_submission(directory, run=False)[0].startswith(f"{config_path}: not UTF-8 text")
    config_path.write_text("dtype: float32\nmodality: image\npreprocessing: {resize: [28, 42]}\nmodel: 3\n")
    assert check_submission(directory, run=False) == [
        f"{config_path}: model: must be a mapping (num_classes, weights_file, ...), got 3"
    ]
