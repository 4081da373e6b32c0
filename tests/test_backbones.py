"""Backbone loading (transformers dirs, timm + local weights), tuning modes, checkpointing, errors."""

from __future__ import annotations

import pytest
import torch

from detectors.backbones import BackboneConfig, build_backbone
from detectors.config import parse
from detectors.errors import ConfigError
from detectors.tuning import (
    TuningConfig,
    apply_tuning,
    layernorm_parameter_names,
    resolve_lora_targets,
    trainable_summary,
)


def test_transformers_local_directory_loads_saved_weights(tiny_dinov3, tiny_dinov2):
    from transformers import AutoModel

    for directory, family, registers in ((tiny_dinov3, "dinov3", 4), (tiny_dinov2, "dinov2", 0)):
        backbone = build_backbone(BackboneConfig(name=str(directory)))
        reference = AutoModel.from_pretrained(directory).eval()
        size = 32 if family == "dinov3" else 28
        x = torch.randn(2, 3, size, size)
        with torch.no_grad():
            assert torch.equal(backbone.eval()(x), reference(pixel_values=x).last_hidden_state)
        assert backbone.info.family == family and backbone.info.num_registers == registers
        assert backbone.weights_origin == "pretrained"
        assert backbone.config.architecture["model_type"] in ("dinov3_vit", "dinov2")


def test_rebuild_from_stored_architecture_without_weights(tiny_dinov3):
    backbone = build_backbone(BackboneConfig(name=str(tiny_dinov3)))
    rebuilt = build_backbone(
        BackboneConfig(
            name="not-needed", source="transformers", pretrained=False, architecture=backbone.config.architecture
        )
    )
    rebuilt.load_state_dict(backbone.state_dict())
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(rebuilt.eval()(x), backbone.eval()(x))


def test_timm_with_local_weights_file(tmp_path):
    import timm
    from safetensors.torch import save_file

    kwargs = dict(img_size=28, embed_dim=32, depth=2, num_heads=2, num_classes=0)
    source = timm.create_model("vit_small_patch14_dinov2", pretrained=False, **kwargs)
    weights = tmp_path / "weights.safetensors"
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(weights))
    backbone = build_backbone(BackboneConfig(name="vit_small_patch14_dinov2", weights=str(weights), timm_kwargs=kwargs))
    x = torch.randn(1, 3, 28, 28)
    with torch.no_grad():
        assert torch.allclose(backbone.eval()(x), source.eval().forward_features(x))
    assert backbone.info.source == "timm" and backbone.info.patch_size == 14


def test_tuning_modes_select_exactly_the_right_tensors(tiny_dinov3):
    frozen = apply_tuning(build_backbone(BackboneConfig(name=str(tiny_dinov3))), TuningConfig(mode="frozen"))
    assert trainable_summary(frozen)["trainable_parameters"] == 0

    layernorm = apply_tuning(build_backbone(BackboneConfig(name=str(tiny_dinov3))), TuningConfig(mode="layernorm"))
    names = set(trainable_summary(layernorm)["trainable_tensors"])
    assert names == set(layernorm_parameter_names(layernorm))
    assert names and all(n.split(".")[-2] in ("norm1", "norm2", "norm") for n in names)

    lora = apply_tuning(build_backbone(BackboneConfig(name=str(tiny_dinov3))), TuningConfig(mode="lora"))
    names = trainable_summary(lora)["trainable_tensors"]
    assert names and all("lora_" in n for n in names)
    assert not any("patch" in n for n in names)
    # an adapter step changes the output only through LoRA weights
    x = torch.randn(2, 3, 32, 32)
    lora(x).sum().backward()
    assert all(p.grad is None for n, p in lora.named_parameters() if "lora_" not in n)


def test_lora_targets_never_hit_patch_embedding():
    backbone = build_backbone(
        BackboneConfig(
            name="vit_small_patch14_dinov2",
            pretrained=False,
            timm_kwargs=dict(img_size=28, embed_dim=32, depth=2, num_heads=2),
        )
    )
    targets = resolve_lora_targets(backbone, ["proj"])  # a bare suffix that also names patch_embed.proj
    assert targets and not any("patch_embed" in t for t in targets)


def test_gradient_checkpointing_gives_same_gradients(tiny_dinov3):
    def grads(checkpointing: bool) -> dict[str, torch.Tensor]:
        torch.manual_seed(0)
        backbone = build_backbone(BackboneConfig(name=str(tiny_dinov3)))
        apply_tuning(backbone, TuningConfig(mode="layernorm", gradient_checkpointing=checkpointing))
        backbone.train()
        backbone(torch.ones(2, 3, 32, 32)).pow(2).mean().backward()
        return {n: p.grad.clone() for n, p in backbone.named_parameters() if p.grad is not None}

    plain, checkpointed = grads(False), grads(True)
    assert plain.keys() == checkpointed.keys()
    for name in plain:
        assert torch.allclose(plain[name], checkpointed[name], atol=1e-6), name


def test_errors_name_the_problem(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        build_backbone(BackboneConfig(name=str(tmp_path / "missing")))
    with pytest.raises(ConfigError, match="cannot load backbone"):  # user data: no silent random fallback
        build_backbone(BackboneConfig(name="facebook/dinov2-small"))
    with pytest.raises(
        ConfigError, match=r"model\.tuning\.mode: expected one of 'frozen', 'layernorm', 'lora', 'full'"
    ):
        parse(TuningConfig, {"mode": "bitfit"}, "model.tuning")


def test_demo_fallback_is_random_and_recorded():
    with pytest.warns(UserWarning, match="RANDOMLY INITIALISED"):
        backbone = build_backbone(BackboneConfig(name="facebook/dinov2-small"), allow_random_fallback=True)
    assert backbone.weights_origin == "random"
    assert backbone.info.embed_dim == 384 and backbone.info.patch_size == 14


def test_lora_on_timm_eva_fused_qkv_bias_is_refused():
    # timm's DINOv3 "_qkvb" variants apply attn.qkv through F.linear: a LoRA wrapper would never run
    backbone = build_backbone(
        BackboneConfig(
            name="vit_small_patch16_dinov3_qkvb",
            pretrained=False,
            timm_kwargs=dict(img_size=32, embed_dim=32, depth=1, num_heads=2),
        )
    )
    with pytest.raises(ConfigError, match="no effect"):
        resolve_lora_targets(backbone, "qkv")
    assert resolve_lora_targets(backbone, ["attn.proj", "mlp.fc1"])


def test_frozen_backbone_stays_in_inference_mode(tiny_dinov3):
    frozen = apply_tuning(build_backbone(BackboneConfig(name=str(tiny_dinov3))), TuningConfig(mode="frozen"))
    frozen.train()
    assert not any(m.training for m in frozen.modules())
    tuned = apply_tuning(build_backbone(BackboneConfig(name=str(tiny_dinov3))), TuningConfig(mode="layernorm"))
    tuned.train()
    assert tuned.model.training
