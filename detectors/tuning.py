"""Tuning modes shared by every detector: ``frozen``, ``layernorm`` (GenD) and ``lora`` (peft).

LoRA targets are resolved to explicit module paths from the backbone's own module names, so a bare
suffix such as ``proj`` can never silently hit the patch embedding (vision) or the feature-extractor
convolutions / feature projection (wav2vec 2.0): only Linear layers inside the transformer blocks
qualify.
"""

from __future__ import annotations

import typing
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from torch import nn

from detectors.backbones import Backbone, BackboneConfig
from detectors.config import setting
from detectors.errors import ConfigError

# Attention/MLP linear layers per (source, family), by the module-name suffix inside a block.
LORA_TARGET_PRESETS: dict[str, dict[str, tuple[str, ...]]] = {
    "transformers": {
        "qv": ("q_proj", "v_proj", "query", "value"),
        "qkv": ("q_proj", "k_proj", "v_proj", "query", "key", "value"),
        "attention": ("q_proj", "k_proj", "v_proj", "o_proj", "query", "key", "value", "attention.output.dense"),
        "all": (
            "q_proj",
            "k_proj",
            "v_proj",
            "o_proj",
            "query",
            "key",
            "value",
            "attention.output.dense",
            "up_proj",
            "down_proj",
            "gate_proj",
            "fc1",
            "fc2",
        ),
    },
    "timm": {
        "qv": ("attn.qkv",),
        "qkv": ("attn.qkv",),
        "attention": ("attn.qkv", "attn.proj"),
        "all": ("attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2", "mlp.fc1_g", "mlp.fc1_x"),
    },
    "wav2vec2": {
        "qv": ("attention.q_proj", "attention.v_proj"),
        "qkv": ("attention.q_proj", "attention.k_proj", "attention.v_proj"),
        "attention": ("attention.q_proj", "attention.k_proj", "attention.v_proj", "attention.out_proj"),
        "all": (
            "attention.q_proj",
            "attention.k_proj",
            "attention.v_proj",
            "attention.out_proj",
            "feed_forward.intermediate_dense",
            "feed_forward.output_dense",
        ),
    },
}

# Module paths of the transformer blocks per family: LoRA never leaves them.
BLOCK_PREFIXES = {"wav2vec2": ("encoder.layers.",)}


TuningMode = Literal["frozen", "layernorm", "lora", "full"]
TUNING_MODES: tuple[str, ...] = typing.get_args(TuningMode)


@dataclass
class LoraSettings:
    r: int = setting(8, help="LoRA rank", ge=1)
    alpha: float = setting(16, help="LoRA scaling alpha (the update is scaled by alpha / r)", gt=0)
    dropout: float = setting(0.05, help="dropout on the LoRA input", ge=0, lt=1)
    targets: str | list[str] = setting("qkv", help="a preset (qv, qkv, attention, all) or module-name suffixes")


@dataclass
class TuningConfig:
    """How a backbone is tuned; a bare string is read as ``mode``."""

    shorthand: ClassVar[str] = "mode"

    mode: TuningMode = setting("lora", help="frozen | layernorm (affine of every LayerNorm) | lora (peft) | full")
    lora: LoraSettings = setting(LoraSettings(), help="LoRA settings (mode: lora)")
    gradient_checkpointing: bool = setting(False, help="recompute the backbone's activations in backward")


def layernorm_parameter_names(backbone: Backbone) -> list[str]:
    """Names (relative to ``backbone``) of every LayerNorm affine parameter: norm1, norm2, final norm."""
    names = []
    for module_name, module in backbone.named_modules():
        if isinstance(module, nn.LayerNorm):
            names.extend(f"{module_name}.{p}" for p, _ in module.named_parameters(recurse=False))
    return names


def resolve_lora_targets(backbone: Backbone, targets: str | list[str]) -> list[str]:
    """Full module paths (inside ``backbone.model``) of the nn.Linear layers LoRA adapts."""
    presets = LORA_TARGET_PRESETS["wav2vec2" if backbone.info.family == "wav2vec2" else backbone.info.source]
    suffixes = presets.get(targets) if isinstance(targets, str) else tuple(targets)
    if suffixes is None:
        raise ConfigError(
            None,
            "model.tuning.lora.targets",
            f"unknown preset {targets!r}; use one of {sorted(presets)} or a list of module-name suffixes",
        )
    blocks = BLOCK_PREFIXES.get(backbone.info.family)
    found = [
        name
        for name, module in backbone.model.named_modules()
        if isinstance(module, nn.Linear)
        and any(name == s or name.endswith("." + s) for s in suffixes)
        and "patch_embed" not in name
        and (blocks is None or name.startswith(blocks))
    ]
    if backbone.info.source == "timm" and _fused_qkv_bias(backbone.model):
        # timm's Eva (DINOv3) applies attn.qkv with F.linear(x, qkv.weight, q/v bias): a LoRA wrapper
        # around attn.qkv would never run, so refuse it rather than train nothing.
        if any(name.endswith("attn.qkv") for name in found):
            raise ConfigError(
                None,
                "model.tuning.lora.targets",
                "this timm model applies attn.qkv through F.linear with separate q/v biases, so LoRA "
                "on attn.qkv would have no effect; use the transformers DINOv3 (q_proj/v_proj) or "
                "targets [attn.proj, mlp.fc1, mlp.fc2]",
            )
    if not found:
        raise ConfigError(
            None, "model.tuning.lora.targets", f"no nn.Linear module of the backbone matches {list(suffixes)}"
        )
    return found


def _fused_qkv_bias(model: nn.Module) -> bool:
    return any(getattr(module, "q_bias", None) is not None for module in model.modules())


def build_tuned_backbone(
    backbone: BackboneConfig, tuning: TuningConfig, *, allow_random_fallback: bool = False
) -> Backbone:
    """``build_backbone`` + ``apply_tuning``: what every detector's constructor starts with."""
    from detectors.backbones import build_backbone

    return apply_tuning(build_backbone(backbone, allow_random_fallback=allow_random_fallback), tuning)


def apply_tuning(backbone: Backbone, config: TuningConfig) -> Backbone:
    """Freeze/unfreeze the backbone (and inject LoRA adapters) according to ``config.mode``."""
    for parameter in backbone.parameters():
        parameter.requires_grad_(config.mode == "full")
    if config.mode == "layernorm":
        trainable = set(layernorm_parameter_names(backbone))
        for name, parameter in backbone.named_parameters():
            parameter.requires_grad_(name in trainable)
    elif config.mode == "lora":
        from peft import LoraConfig, inject_adapter_in_model

        lora = config.lora
        targets = resolve_lora_targets(backbone, lora.targets)
        peft_config = LoraConfig(
            r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, target_modules=targets, bias="none"
        )
        # inject in place (no PeftModel wrapper): forward signatures and module paths stay the same.
        inject_adapter_in_model(peft_config, backbone.model)
        for name, parameter in backbone.named_parameters():
            parameter.requires_grad_("lora_" in name)
    if config.gradient_checkpointing:
        backbone.set_gradient_checkpointing(True)
    return backbone


def trainable_summary(model: nn.Module) -> dict[str, Any]:
    """Trainable and total parameter counts and the names of trainable tensors (for summary.json)."""
    total = sum(p.numel() for p in model.parameters())
    trainable = [(n, p.numel()) for n, p in model.named_parameters() if p.requires_grad]
    count = sum(n for _, n in trainable)
    return {
        "total_parameters": total,
        "trainable_parameters": count,
        "trainable_fraction": count / total if total else 0.0,
        "trainable_tensors": [n for n, _ in trainable],
    }
