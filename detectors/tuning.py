"""Tuning modes shared by every detector: ``frozen``, ``layernorm`` (GenD) and ``lora`` (peft).

LoRA targets are resolved to explicit module paths from the backbone's own module names, so a bare
suffix such as ``proj`` can never silently hit the patch embedding.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import nn

from detectors.backbones import Backbone
from detectors.errors import ConfigError

TUNING_MODES = ("frozen", "layernorm", "lora", "full")

# Attention/MLP linear layers per (source, family), by the module-name suffix inside a block.
LORA_TARGET_PRESETS: dict[str, dict[str, tuple[str, ...]]] = {
    "transformers": {
        "qv": ("q_proj", "v_proj", "query", "value"),
        "qkv": ("q_proj", "k_proj", "v_proj", "query", "key", "value"),
        "attention": ("q_proj", "k_proj", "v_proj", "o_proj", "query", "key", "value", "attention.output.dense"),
        "all": ("q_proj", "k_proj", "v_proj", "o_proj", "query", "key", "value", "attention.output.dense",
                "up_proj", "down_proj", "gate_proj", "fc1", "fc2"),
    },
    "timm": {
        "qv": ("attn.qkv",),
        "qkv": ("attn.qkv",),
        "attention": ("attn.qkv", "attn.proj"),
        "all": ("attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2", "mlp.fc1_g", "mlp.fc1_x"),
    },
}


@dataclass
class LoraSettings:
    r: int = 8
    alpha: int = 16
    dropout: float = 0.05
    targets: str | list[str] = "qkv"  # a preset name (qv, qkv, attention, all) or module-name suffixes


@dataclass
class TuningConfig:
    mode: str = "lora"
    lora: LoraSettings = field(default_factory=LoraSettings)
    gradient_checkpointing: bool = False

    @classmethod
    def from_dict(cls, data: dict[str, Any] | str | None) -> "TuningConfig":
        if data is None:
            return cls()
        if isinstance(data, str):
            data = {"mode": data}
        data = dict(data)
        lora = LoraSettings(**data.pop("lora", {}) or {})
        config = cls(lora=lora, **data)
        if config.mode not in TUNING_MODES:
            raise ConfigError(None, "model.tuning.mode",
                              f"unknown tuning mode {config.mode!r}; choose one of {', '.join(TUNING_MODES)}")
        return config


def layernorm_parameter_names(backbone: Backbone) -> list[str]:
    """Names (relative to ``backbone``) of every LayerNorm affine parameter: norm1, norm2, final norm."""
    names = []
    for module_name, module in backbone.named_modules():
        if isinstance(module, nn.LayerNorm):
            names.extend(f"{module_name}.{p}" for p, _ in module.named_parameters(recurse=False))
    return names


def resolve_lora_targets(backbone: Backbone, targets: str | list[str]) -> list[str]:
    """Full module paths (inside ``backbone.model``) of the nn.Linear layers LoRA adapts."""
    suffixes = LORA_TARGET_PRESETS[backbone.info.source].get(targets) if isinstance(targets, str) else tuple(targets)
    if suffixes is None:
        raise ConfigError(None, "model.tuning.lora.targets",
                          f"unknown preset {targets!r}; use one of {sorted(LORA_TARGET_PRESETS[backbone.info.source])} "
                          "or a list of module-name suffixes")
    found = [name for name, module in backbone.model.named_modules()
             if isinstance(module, nn.Linear) and any(name == s or name.endswith("." + s) for s in suffixes)
             and "patch_embed" not in name]
    if not found:
        raise ConfigError(None, "model.tuning.lora.targets",
                          f"no nn.Linear module of the backbone matches {list(suffixes)}")
    return found


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
        peft_config = LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                                 target_modules=targets, bias="none")
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
