"""The standalone ViT reproduces HF / timm DINOv2 and DINOv3 backbones; the standalone heads."""

from __future__ import annotations

import json

import pytest
import timm
import torch
import torch.nn.functional as F
from peft import LoraConfig, get_peft_model, inject_adapter_in_model
from torchvision.transforms.v2 import functional as TF
from transformers import (
    Dinov2Config,
    Dinov2Model,
    Dinov2WithRegistersConfig,
    Dinov2WithRegistersModel,
    DINOv3ViTConfig,
    DINOv3ViTModel,
)

from detectors.image.dinov3 import DinoImageNetwork
from detectors.networks.layers import MLP, CalibratedNetwork, ImageNormalize, LinearNorm, LogitAffine
from detectors.networks.vit import VisionTransformer
from export.convert import convert_backbone, detect_family

ATOL = 1e-5


def _hf_dinov2(size, **extra):
    return Dinov2Model(
        Dinov2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, image_size=28, patch_size=14, **extra)
    )


def _hf_dinov2_registers(size):
    config = Dinov2WithRegistersConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=4, image_size=28, patch_size=14, num_register_tokens=4
    )
    return Dinov2WithRegistersModel(config)


def _hf_dinov3(size, **extra):
    config = DINOv3ViTConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, image_size=32,
        patch_size=16, num_register_tokens=4, **extra,
    )  # fmt: skip
    return DINOv3ViTModel(config)


def _timm(name, size, **extra):
    kwargs = dict(pretrained=False, embed_dim=32, depth=2, num_classes=0, **extra)
    return timm.create_model(name, **kwargs)


# name -> (builder(size), patch size). timm models: dynamic ones resample from a square grid, the fixed
# one is built for the exact export size.
BUILDERS = {
    "hf_dinov2": (lambda size: _hf_dinov2(size), 14),
    "hf_dinov2_swiglu": (lambda size: _hf_dinov2(size, use_swiglu_ffn=True), 14),
    "hf_dinov2_registers": (_hf_dinov2_registers, 14),
    "hf_dinov3": (lambda size: _hf_dinov3(size), 16),
    "hf_dinov3_gated": (lambda size: _hf_dinov3(size, use_gated_mlp=True, hidden_act="silu"), 16),
    "timm_vit_dinov2": (
        lambda size: _timm("vit_small_patch14_dinov2", size, num_heads=4, img_size=28, dynamic_img_size=True),
        14,
    ),
    "timm_vit_dinov2_reg4_fixed": (
        lambda size: _timm("vit_small_patch14_reg4_dinov2", size, num_heads=4, img_size=list(size)),
        14,
    ),
    "timm_vit_dinov2_swiglu": (
        lambda size: _timm("vit_giant_patch14_dinov2", size, num_heads=4, img_size=28, dynamic_img_size=True),
        14,
    ),
    "timm_eva_dinov3_qkvb": (lambda size: _timm("vit_small_patch16_dinov3_qkvb", size, num_heads=2, img_size=32), 16),
    "timm_eva_dinov3_swiglu": (lambda size: _timm("vit_huge_plus_patch16_dinov3", size, num_heads=2, img_size=32), 16),
}


def _randomize(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Random weights everywhere (layer scales included), so every parameter affects the output."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            param.copy_(torch.randn(param.shape, generator=generator) * 0.2)
    return model.train(False)


def _library_tokens(model: torch.nn.Module, pixels: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        if hasattr(model, "forward_features"):
            return model.forward_features(pixels)
        return model(pixel_values=pixels).last_hidden_state


def _standalone_tokens(kwargs: dict, state_dict: dict, pixels: torch.Tensor) -> torch.Tensor:
    vit = VisionTransformer(**kwargs)
    vit.load_state_dict(state_dict, strict=True)
    with torch.no_grad():
        return vit.train(False)(pixels)


def _sizes(name: str, patch: int) -> list[tuple[int, int]]:
    sizes = [(2 * patch, 2 * patch), (2 * patch, 3 * patch)]  # square and non-square
    if name.startswith("hf_"):  # HF crops sizes that are not a multiple of the patch (timm refuses them)
        sizes.append((3 * patch + 5, 2 * patch + 3))
    return sizes


CASES = [(name, size) for name, (_, patch) in BUILDERS.items() for size in _sizes(name, patch)]


@pytest.mark.parametrize(("name", "size"), CASES, ids=[f"{n}-{s[0]}x{s[1]}" for n, s in CASES])
def test_standalone_matches_library(name: str, size: tuple[int, int]) -> None:
    build, patch = BUILDERS[name]
    model = _randomize(build(size))
    kwargs, state_dict = convert_backbone(model, size)
    json.dumps(kwargs)  # constructor kwargs are plain data
    pixels = torch.randn(2, 3, *size, generator=torch.Generator().manual_seed(1))
    expected = _library_tokens(model, pixels)
    actual = _standalone_tokens(kwargs, state_dict, pixels)
    registers = kwargs["num_register_tokens"]
    assert actual.shape == (2, 1 + registers + (size[0] // patch) * (size[1] // patch), 32)
    assert actual.shape == expected.shape
    assert (actual - expected).abs().max().item() <= ATOL


def test_detect_family_and_unsupported_model() -> None:
    assert detect_family(_hf_dinov3((32, 32))) == "hf_dinov3"
    assert detect_family(_hf_dinov2_registers((28, 28))) == "hf_dinov2_registers"
    assert detect_family(BUILDERS["timm_eva_dinov3_qkvb"][0]((32, 32))) == "timm_eva"
    with pytest.raises(TypeError, match="cannot export"):
        convert_backbone(torch.nn.Linear(3, 3), (28, 28))
    with pytest.raises(ValueError, match="multiple of the patch size"):
        convert_backbone(BUILDERS["timm_vit_dinov2"][0]((28, 28)), (30, 28))


def test_position_tables_come_from_the_library() -> None:
    """Registers get no position embedding; RoPE leaves CLS and registers unrotated."""
    _, sd2 = convert_backbone(_randomize(_hf_dinov2_registers((28, 28))), (28, 42))
    assert sd2["pos_embed"].shape == (1, 1 + 4 + 6, 32)
    assert torch.count_nonzero(sd2["pos_embed"][:, 1:5]) == 0
    assert torch.count_nonzero(sd2["pos_embed"][:, 0]) > 0
    _, sd3 = convert_backbone(_randomize(_hf_dinov3((32, 32))), (32, 48))
    assert torch.equal(sd3["rope_cos"][:5], torch.ones(5, 16))
    assert torch.equal(sd3["rope_sin"][:5], torch.zeros(5, 16))
    assert sd3["rope_cos"].shape == (5 + 6, 16)


def _old_dinov2_key(key: str) -> str:
    """transformers <= 5.17 attention names."""
    for new, old in (
        (".attention.q_proj.", ".attention.attention.query."),
        (".attention.k_proj.", ".attention.attention.key."),
        (".attention.v_proj.", ".attention.attention.value."),
        (".attention.o_proj.", ".attention.output.dense."),
    ):
        key = key.replace(new, old)
    return key


@pytest.mark.parametrize("builder", [lambda: _hf_dinov2((28, 28)), lambda: _hf_dinov2_registers((28, 28))])
def test_dinov2_old_attention_names(builder, monkeypatch) -> None:
    model = _randomize(builder())
    renamed = {_old_dinov2_key(k): v for k, v in model.state_dict().items()}
    assert any(".attention.attention.query." in k for k in renamed)
    monkeypatch.setattr(model, "state_dict", lambda *args, **kwargs: renamed)
    kwargs, state_dict = convert_backbone(model, (28, 42))
    pixels = torch.randn(1, 3, 28, 42)
    assert (_standalone_tokens(kwargs, state_dict, pixels) - _library_tokens(model, pixels)).abs().max() <= ATOL

    broken = {k.replace(".attention.attention.query.", ".attention.attention.q."): v for k, v in renamed.items()}
    monkeypatch.setattr(model, "state_dict", lambda *args, **kwargs: broken)
    with pytest.raises(ValueError, match="unknown Dinov2 attention layout"):
        convert_backbone(model, (28, 28))


def test_dinov3_flat_layer_layout(monkeypatch) -> None:
    """DINOv3 state dicts with ``layer.N`` (instead of ``model.layer.N``) keys convert the same way."""
    model = _randomize(_hf_dinov3((32, 32)))
    renamed = {k.replace("model.layer.", "layer."): v for k, v in model.state_dict().items()}
    monkeypatch.setattr(model, "state_dict", lambda *args, **kwargs: renamed)
    kwargs, state_dict = convert_backbone(model, (32, 32))
    pixels = torch.randn(1, 3, 32, 32)
    assert (_standalone_tokens(kwargs, state_dict, pixels) - _library_tokens(model, pixels)).abs().max() <= ATOL


def _randomize_lora(model: torch.nn.Module) -> None:
    generator = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.3)


@pytest.mark.parametrize(
    ("name", "targets"),
    [
        ("hf_dinov2", ["q_proj", "v_proj"]),
        ("hf_dinov3", ["q_proj", "v_proj", "up_proj"]),
        ("timm_vit_dinov2", ["qkv"]),
        # timm Eva with qkv bias calls F.linear on qkv.weight directly, so LoRA on `qkv` is inert there
        ("timm_eva_dinov3_qkvb", ["attn.proj", "mlp.fc1"]),
    ],
)
def test_lora_models_are_merged(name: str, targets: list[str]) -> None:
    build, patch = BUILDERS[name]
    size = (2 * patch, 3 * patch)
    base = _randomize(build(size))
    peft_model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=targets))
    _randomize_lora(peft_model)
    peft_model.train(False)
    pixels = torch.randn(2, 3, *size)
    with torch.no_grad():
        expected = _library_tokens(peft_model.base_model.model, pixels)  # adapters active, unmerged
    without_lora = _standalone_tokens(*convert_backbone(_randomize(build(size)), size), pixels)
    assert (expected - without_lora).abs().max() > 1e-3  # the LoRA weights matter

    kwargs, state_dict = convert_backbone(peft_model, size)
    assert (_standalone_tokens(kwargs, state_dict, pixels) - expected).abs().max() <= ATOL
    assert any("lora_" in key for key in peft_model.state_dict())  # the caller's model is not merged

    injected = inject_adapter_in_model(LoraConfig(r=4, lora_alpha=8, target_modules=targets), _randomize(build(size)))
    _randomize_lora(injected)
    injected.train(False)
    reference = _library_tokens(injected, pixels)
    kwargs, state_dict = convert_backbone(injected, size)
    assert (_standalone_tokens(kwargs, state_dict, pixels) - reference).abs().max() <= ATOL


def test_size_mismatch_is_reported() -> None:
    kwargs, state_dict = convert_backbone(_randomize(_hf_dinov3((32, 32))), (32, 32))
    vit = VisionTransformer(**kwargs)
    with pytest.raises(ValueError, match="built for 2x2"):
        vit(torch.zeros(1, 3, 48, 32))


# ----------------------------------------------------------------------------------------------
# heads


def test_logit_affine_folds_temperature_and_bias() -> None:
    affine = LogitAffine(3)
    affine.scale.fill_(1 / 1.7)
    affine.bias.copy_(torch.tensor([0.2, -0.1, 0.05]))
    logits = torch.randn(4, 3)
    assert torch.allclose(affine(logits), logits / 1.7 + torch.tensor([0.2, -0.1, 0.05]), atol=1e-6)
    assert affine.to(torch.bfloat16)(logits.bfloat16()).dtype == torch.float32
    assert set(affine.state_dict()) == {"scale", "bias"}


def test_mlp_matches_manual_computation() -> None:
    torch.manual_seed(0)
    for activation, act in (("relu", F.relu), ("gelu", F.gelu)):
        mlp = MLP([5, 7, 3], activation=activation)
        x = torch.randn(4, 5)
        w0, b0, w1, b1 = (p.detach() for p in mlp.parameters())
        expected = act(x @ w0.T + b0) @ w1.T + b1
        assert torch.allclose(mlp(x), expected, atol=1e-6)
    assert list(MLP([5, 2]).state_dict()) == ["layers.0.weight", "layers.0.bias"]
    with pytest.raises(ValueError):
        MLP([5])


def test_linear_norm_normalises_before_the_linear_layer() -> None:
    head = LinearNorm(6, 2)
    x = torch.randn(3, 6) * 10
    expected = (x / x.norm(dim=-1, keepdim=True)) @ head.linear.weight.detach().T + head.linear.bias.detach()
    assert torch.allclose(head(x), expected, atol=1e-6)
    assert torch.allclose(head(x), head(x * 5), atol=1e-6)


def test_image_normalize_uint8_and_float_inputs_agree() -> None:
    mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    normalize = ImageNormalize(mean, std)
    images = torch.randint(0, 256, (2, 3, 5, 4), dtype=torch.uint8)
    from_uint8 = normalize(images)
    assert torch.equal(from_uint8, normalize(images.float()))
    assert from_uint8.dtype == torch.float32
    expected = TF.normalize(images.float() / 255.0, mean, std)
    assert torch.allclose(from_uint8, expected, atol=1e-6)
    assert normalize.state_dict() == {}  # mean/std come from the constructor, not the weights


@pytest.mark.parametrize("features", ["cls", "mean", "both"])
def test_exported_image_network_pools_as_documented(features: str) -> None:
    kwargs, vit_state = convert_backbone(_randomize(_hf_dinov3((32, 32))), (32, 48))
    mean, std = [0.5, 0.4, 0.3], [0.2, 0.25, 0.3]
    network = DinoImageNetwork(kwargs, features=features, head_hidden=[8], num_classes=2, mean=mean, std=std)
    network.backbone.load_state_dict(vit_state)
    detector = CalibratedNetwork(network, 2)
    detector.calibration.scale.fill_(0.5)
    detector.calibration.bias.copy_(torch.tensor([0.3, -0.3]))
    detector.train(False)
    images = torch.randint(0, 256, (2, 3, 32, 48), dtype=torch.uint8)
    with torch.no_grad():
        tokens = network.backbone(TF.normalize(images.float() / 255, mean, std))
        cls, patches = tokens[:, 0], tokens[:, 5:].mean(dim=1)  # 1 CLS + 4 registers precede the patches
        pooled = {"cls": cls, "mean": patches, "both": torch.cat([cls, patches], dim=-1)}[features]
        expected = network.head(pooled) * 0.5 + torch.tensor([0.3, -0.3])
        actual = detector(images)
    assert actual.shape == (2, 2)
    assert torch.allclose(actual, expected, atol=1e-5)
    assert torch.equal(actual, detector(images.float()))
