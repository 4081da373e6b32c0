"""Convert HF transformers / timm DINOv2 and DINOv3 backbones to the plain-torch standalone ViT.

``convert_backbone(model, image_size)`` returns the constructor kwargs of
``detectors.networks.vit.VisionTransformer`` and a state dict with its key names. Everything that
depends on the image size is computed here by the source library's own code (HF
``interpolate_pos_encoding`` / ``rope_embeddings``, timm ``resample_abs_pos_embed`` /
``rope.get_embed``) and stored as weights, so the exported ``model.py`` never has to reproduce it.

Supported: HF ``Dinov2Model``, ``Dinov2WithRegistersModel`` (both attention naming schemes:
``query/key/value/dense`` up to transformers 5.17, ``q_proj/k_proj/v_proj/o_proj`` from 5.18),
``DINOv3ViTModel`` (``layer.N`` and ``model.layer.N`` layouts), timm ``VisionTransformer``
(``vit_*_patch14_dinov2*``) and timm ``Eva`` (``vit_*_patch16_dinov3*``). Adapters must be merged;
a peft model (``PeftModel`` or LoRA layers injected in place) is merged on a deep copy.
"""

from __future__ import annotations

import copy
from typing import Any, Callable

import torch
from torch import Tensor, nn

from detectors.networks.vit import VisionTransformer

HF_DINOV2 = "hf_dinov2"
HF_DINOV2_REGISTERS = "hf_dinov2_registers"
HF_DINOV3 = "hf_dinov3"
TIMM_VIT = "timm_vit"
TIMM_EVA = "timm_eva"

_CLASS_FAMILIES = {
    "Dinov2Model": HF_DINOV2,
    "Dinov2WithRegistersModel": HF_DINOV2_REGISTERS,
    "DINOv3ViTModel": HF_DINOV3,
    "VisionTransformer": TIMM_VIT,
    "Eva": TIMM_EVA,
}


def detect_family(model: nn.Module) -> str:
    """Family of a backbone from its class (or a base class): one of the ``HF_*`` / ``TIMM_*`` names."""
    for cls in type(model).__mro__:
        family = _CLASS_FAMILIES.get(cls.__name__)
        if family is not None:
            module = cls.__module__
            if family.startswith("hf_") and module.startswith("transformers."):
                return family
            if family.startswith("timm_") and module.startswith("timm."):
                return family
    raise TypeError(
        f"cannot export a {type(model).__module__}.{type(model).__name__}: supported backbones are HF "
        "Dinov2Model, Dinov2WithRegistersModel, DINOv3ViTModel and timm VisionTransformer / Eva"
    )


def merge_adapters(model: nn.Module) -> nn.Module:
    """Return ``model`` with LoRA (peft) adapters merged into plain weights; the input is not modified."""
    if hasattr(model, "merge_and_unload") and hasattr(model, "peft_config"):
        return copy.deepcopy(model).merge_and_unload()
    try:
        from peft.tuners.tuners_utils import BaseTunerLayer
    except ImportError:  # peft absent: nothing can be injected
        return model
    if not any(isinstance(module, BaseTunerLayer) for module in model.modules()):
        return model
    # Adapters injected in place (peft.inject_adapter_in_model): merge and swap in the base layers.
    model = copy.deepcopy(model)
    tuned = [(name, module) for name, module in model.named_modules() if isinstance(module, BaseTunerLayer)]
    for name, module in tuned:
        module.merge()
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, module.get_base_layer())
    return model


def convert_backbone(model: nn.Module, image_size: tuple[int, int]) -> tuple[dict, dict[str, Tensor]]:
    """Convert a (merged) backbone to ``(VisionTransformer kwargs, state dict)`` for ``image_size`` (H, W).

    The kwargs are JSON/YAML-able (lists, not tuples); tensors are float32 and contiguous.
    """
    height, width = int(image_size[0]), int(image_size[1])
    model = merge_adapters(model)
    family = detect_family(model)
    was_training = model.training
    model.train(False)  # RoPE augmentation and dropout are training-only
    try:
        with torch.no_grad():
            kwargs, state_dict = _CONVERTERS[family](model, height, width)
    finally:
        model.train(was_training)
    state_dict = {
        key: (value.detach().float() if value.is_floating_point() else value.detach()).contiguous().clone()
        for key, value in state_dict.items()
    }
    # Fail here, not in the benchmark, if a key or shape does not match the standalone module.
    VisionTransformer(**kwargs).load_state_dict(state_dict, strict=True)
    return kwargs, state_dict


def reference_tokens(model: nn.Module, pixel_values: Tensor) -> Tensor:
    """The library's final-norm token sequence, i.e. what the standalone ViT reproduces."""
    model = merge_adapters(model)
    if detect_family(model).startswith("hf_"):
        return model(pixel_values=pixel_values).last_hidden_state
    return model.forward_features(pixel_values)


def verify_backbone(
    model: nn.Module, kwargs: dict, state_dict: dict[str, Tensor], image_size: tuple[int, int], seed: int = 0
) -> float:
    """Max abs difference between the library model and the converted one on a random batch of 2."""
    generator = torch.Generator().manual_seed(seed)
    pixels = torch.randn(2, int(kwargs.get("in_chans", 3)), int(image_size[0]), int(image_size[1]), generator=generator)
    standalone = VisionTransformer(**kwargs)
    standalone.load_state_dict(state_dict, strict=True)
    standalone.train(False)
    was_training = model.training
    model.train(False)
    try:
        with torch.no_grad():
            expected = reference_tokens(model, pixels.to(next(model.parameters()).dtype)).float()
            actual = standalone(pixels)
    finally:
        model.train(was_training)
    return float((expected - actual).abs().max())


# ----------------------------------------------------------------------------------------------
# shared helpers


def _grid(height: int, width: int, patch_size: int) -> list[int]:
    if height < patch_size or width < patch_size:
        raise ValueError(f"image size {height}x{width} is smaller than the patch size {patch_size}")
    return [height // patch_size, width // patch_size]


def _fuse_qkv(q: Tensor, k: Tensor, v: Tensor, biases: list[Tensor | None]) -> tuple[Tensor, Tensor | None]:
    """Concatenate q/k/v projections; a missing bias (e.g. DINOv3's key) becomes zeros."""
    weight = torch.cat([q, k, v], dim=0)
    if all(bias is None for bias in biases):
        return weight, None
    parts = [bias if bias is not None else torch.zeros(w.shape[0], dtype=w.dtype) for bias, w in zip(biases, (q, k, v))]
    return weight, torch.cat(parts, dim=0)


def _prefix_rows(table: Tensor, num_prefix: int, fill: float) -> Tensor:
    """Prepend ``num_prefix`` rows filled with ``fill`` to a [tokens, dim] or [1, tokens, dim] table."""
    shape = list(table.shape)
    shape[-2] = num_prefix
    return torch.cat([torch.full(shape, fill, dtype=table.dtype), table], dim=-2)


def _rope_tables(cos: Tensor, sin: Tensor, num_prefix: int) -> dict[str, Tensor]:
    # Prefix tokens (CLS, registers) are not rotated: cos = 1, sin = 0 is the identity rotation.
    return {
        "rope_cos": _prefix_rows(cos.float(), num_prefix, 1.0),
        "rope_sin": _prefix_rows(sin.float(), num_prefix, 0.0),
    }


def _act_name(module: nn.Module) -> str:
    if isinstance(module, nn.GELU) or type(module).__name__ == "GELU":
        return "gelu_tanh" if getattr(module, "approximate", "none") == "tanh" else "gelu"
    if isinstance(module, nn.SiLU) or type(module).__name__ in ("SiLU", "Swish"):
        return "silu"
    if isinstance(module, nn.ReLU):
        return "relu"
    raise ValueError(f"unsupported activation {type(module).__name__}")


def _require_identity(module: nn.Module | None, what: str) -> None:
    if module is not None and not isinstance(module, nn.Identity):
        raise ValueError(f"cannot export: {what} ({type(module).__name__}) is not supported by the standalone ViT")


def _copy_linear(out: dict[str, Tensor], name: str, linear: nn.Linear) -> None:
    out[f"{name}.weight"] = linear.weight
    if linear.bias is not None:
        out[f"{name}.bias"] = linear.bias


def _copy_norm(out: dict[str, Tensor], name: str, norm: nn.Module) -> None:
    if not isinstance(norm, nn.LayerNorm) or norm.weight is None:
        raise ValueError(f"cannot export: {name} is {type(norm).__name__}, expected an affine LayerNorm")
    out[f"{name}.weight"] = norm.weight
    out[f"{name}.bias"] = norm.bias if norm.bias is not None else torch.zeros_like(norm.weight)


# ----------------------------------------------------------------------------------------------
# HF transformers


def _hf_linear(sd: dict[str, Tensor], name: str) -> tuple[Tensor, Tensor | None]:
    return sd[f"{name}.weight"], sd.get(f"{name}.bias")


def _dinov2_attention_names(sd: dict[str, Tensor], prefix: str) -> tuple[str, str, str, str]:
    """q, k, v, out projection names of one Dinov2 layer, for both transformers naming schemes."""
    if f"{prefix}attention.q_proj.weight" in sd:  # transformers >= 5.18
        return ("attention.q_proj", "attention.k_proj", "attention.v_proj", "attention.o_proj")
    if f"{prefix}attention.attention.query.weight" in sd:  # transformers <= 5.17
        return (
            "attention.attention.query",
            "attention.attention.key",
            "attention.attention.value",
            "attention.output.dense",
        )
    found = sorted(key for key in sd if key.startswith(prefix + "attention."))
    raise ValueError(f"unknown Dinov2 attention layout under {prefix!r}: {found}")


def _convert_hf_dinov2(model: nn.Module, height: int, width: int) -> tuple[dict, dict[str, Tensor]]:
    cfg = model.config
    sd = model.state_dict()
    patch = int(cfg.patch_size if isinstance(cfg.patch_size, int) else cfg.patch_size[0])
    grid = _grid(height, width, patch)
    dim = int(cfg.hidden_size)
    registers = int(getattr(cfg, "num_register_tokens", 0) or 0)
    out: dict[str, Tensor] = {
        "patch_embed.weight": sd["embeddings.patch_embeddings.projection.weight"],
        "patch_embed.bias": sd["embeddings.patch_embeddings.projection.bias"],
        "cls_token": sd["embeddings.cls_token"],
    }
    if registers:
        out["reg_tokens"] = sd["embeddings.register_tokens"]

    # Position embeddings for CLS + patches from the library's own interpolation; registers get none.
    pos = model.embeddings.position_embeddings
    placeholder = torch.zeros(1, 1 + grid[0] * grid[1], dim, dtype=pos.dtype)
    pos = model.embeddings.interpolate_pos_encoding(placeholder, height, width).float()
    if registers:
        pos = torch.cat([pos[:, :1], torch.zeros(1, registers, dim), pos[:, 1:]], dim=1)
    out["pos_embed"] = pos

    gated = bool(getattr(cfg, "use_swiglu_ffn", False))
    mlp_hidden = None
    qkv_bias = False
    for i in range(cfg.num_hidden_layers):
        src, dst = f"encoder.layer.{i}.", f"blocks.{i}."
        q_name, k_name, v_name, o_name = _dinov2_attention_names(sd, src)
        (qw, qb), (kw, kb), (vw, vb) = (_hf_linear(sd, src + n) for n in (q_name, k_name, v_name))
        weight, bias = _fuse_qkv(qw, kw, vw, [qb, kb, vb])
        out[dst + "attn.qkv.weight"] = weight
        if bias is not None:
            out[dst + "attn.qkv.bias"] = bias
            qkv_bias = True
        out[dst + "attn.proj.weight"], out[dst + "attn.proj.bias"] = _hf_linear(sd, src + o_name)
        for norm in ("norm1", "norm2"):
            out[dst + f"{norm}.weight"] = sd[src + f"{norm}.weight"]
            out[dst + f"{norm}.bias"] = sd[src + f"{norm}.bias"]
        out[dst + "ls1"] = sd[src + "layer_scale1.lambda1"]
        out[dst + "ls2"] = sd[src + "layer_scale2.lambda1"]
        if gated and f"{src}mlp.weights_in.weight" in sd:  # older transformers: packed [gate; up]
            fc1 = _hf_linear(sd, src + "mlp.weights_in")
            fc2 = _hf_linear(sd, src + "mlp.weights_out")
        elif gated:
            (gw, gb), (uw, ub) = _hf_linear(sd, src + "mlp.gate_proj"), _hf_linear(sd, src + "mlp.up_proj")
            fc1 = (torch.cat([gw, uw]), torch.cat([gb, ub]))
            fc2 = _hf_linear(sd, src + "mlp.down_proj")
        else:
            fc1, fc2 = _hf_linear(sd, src + "mlp.fc1"), _hf_linear(sd, src + "mlp.fc2")
        out[dst + "mlp.fc1.weight"], out[dst + "mlp.fc1.bias"] = fc1
        out[dst + "mlp.fc2.weight"], out[dst + "mlp.fc2.bias"] = fc2
        mlp_hidden = int(fc2[0].shape[1])
    out["norm.weight"], out["norm.bias"] = sd["layernorm.weight"], sd["layernorm.bias"]

    kwargs = {
        "embed_dim": dim,
        "depth": int(cfg.num_hidden_layers),
        "num_heads": int(cfg.num_attention_heads),
        "head_dim": int(out["blocks.0.attn.qkv.weight"].shape[0] // 3 // cfg.num_attention_heads),
        "patch_size": patch,
        "grid_size": grid,
        "mlp_hidden_dim": mlp_hidden,
        "num_register_tokens": registers,
        "act": "silu" if gated else str(cfg.hidden_act),
        "gated_mlp": gated,
        "layer_scale": True,
        "qkv_bias": qkv_bias,
        "proj_bias": True,
        "mlp_bias": True,
        "patch_bias": True,
        "norm_eps": float(cfg.layer_norm_eps),
        "final_norm": True,
        "use_pos_embed": True,
        "use_rope": False,
        "in_chans": int(cfg.num_channels),
    }
    return kwargs, out


def _dinov3_layer_prefix(sd: dict[str, Tensor]) -> str:
    for prefix in ("model.layer.", "layer."):  # transformers 5.23 vs earlier layouts
        if any(key.startswith(prefix + "0.") for key in sd):
            return prefix
    raise ValueError("cannot find the DINOv3 layers (neither 'model.layer.N' nor 'layer.N' keys)")


def _convert_hf_dinov3(model: nn.Module, height: int, width: int) -> tuple[dict, dict[str, Tensor]]:
    cfg = model.config
    sd = model.state_dict()
    patch = int(cfg.patch_size if isinstance(cfg.patch_size, int) else cfg.patch_size[0])
    grid = _grid(height, width, patch)
    registers = int(cfg.num_register_tokens)
    out: dict[str, Tensor] = {
        "patch_embed.weight": sd["embeddings.patch_embeddings.weight"],
        "patch_embed.bias": sd["embeddings.patch_embeddings.bias"],
        "cls_token": sd["embeddings.cls_token"],
    }
    if registers:
        out["reg_tokens"] = sd["embeddings.register_tokens"]
    pixels = torch.zeros(1, int(cfg.num_channels), height, width)
    cos, sin = model.rope_embeddings(pixels)  # the library's RoPE tables for this size, eval mode
    out.update(_rope_tables(cos, sin, 1 + registers))

    layer_prefix = _dinov3_layer_prefix(sd)
    gated = bool(cfg.use_gated_mlp)
    qkv_bias = bool(cfg.query_bias or cfg.key_bias or cfg.value_bias)
    for i in range(cfg.num_hidden_layers):
        src, dst = f"{layer_prefix}{i}.", f"blocks.{i}."
        (qw, qb), (kw, kb), (vw, vb) = (_hf_linear(sd, f"{src}attention.{n}") for n in ("q_proj", "k_proj", "v_proj"))
        weight, bias = _fuse_qkv(qw, kw, vw, [qb, kb, vb])
        out[dst + "attn.qkv.weight"] = weight
        if bias is not None:
            out[dst + "attn.qkv.bias"] = bias
        ow, ob = _hf_linear(sd, src + "attention.o_proj")
        out[dst + "attn.proj.weight"] = ow
        if ob is not None:
            out[dst + "attn.proj.bias"] = ob
        for norm in ("norm1", "norm2"):
            out[dst + f"{norm}.weight"] = sd[src + f"{norm}.weight"]
            out[dst + f"{norm}.bias"] = sd[src + f"{norm}.bias"]
        out[dst + "ls1"] = sd[src + "layer_scale1.lambda1"]
        out[dst + "ls2"] = sd[src + "layer_scale2.lambda1"]
        uw, ub = _hf_linear(sd, src + "mlp.up_proj")
        if gated:
            gw, gb = _hf_linear(sd, src + "mlp.gate_proj")
            uw = torch.cat([gw, uw])
            ub = torch.cat([gb, ub]) if ub is not None else None
        dw, db = _hf_linear(sd, src + "mlp.down_proj")
        out[dst + "mlp.fc1.weight"], out[dst + "mlp.fc2.weight"] = uw, dw
        if ub is not None:
            out[dst + "mlp.fc1.bias"], out[dst + "mlp.fc2.bias"] = ub, db
    out["norm.weight"], out["norm.bias"] = sd["norm.weight"], sd["norm.bias"]

    kwargs = {
        "embed_dim": int(cfg.hidden_size),
        "depth": int(cfg.num_hidden_layers),
        "num_heads": int(cfg.num_attention_heads),
        "head_dim": int(cfg.hidden_size // cfg.num_attention_heads),
        "patch_size": patch,
        "grid_size": grid,
        "mlp_hidden_dim": int(cfg.intermediate_size),
        "num_register_tokens": registers,
        "act": str(cfg.hidden_act),
        "gated_mlp": gated,
        "layer_scale": True,
        "qkv_bias": qkv_bias,
        "proj_bias": bool(cfg.proj_bias),
        "mlp_bias": bool(cfg.mlp_bias),
        "patch_bias": True,
        "norm_eps": float(cfg.layer_norm_eps),
        "final_norm": True,
        "use_pos_embed": False,
        "use_rope": True,
        "in_chans": int(cfg.num_channels),
    }
    return kwargs, out


# ----------------------------------------------------------------------------------------------
# timm


def _timm_mlp(out: dict[str, Tensor], dst: str, mlp: nn.Module) -> tuple[int, str, bool, bool]:
    """Copy a timm Mlp / GluMlp (packed SwiGLU) / SwiGLU; returns (hidden dim, act, gated, bias)."""
    _require_identity(getattr(mlp, "norm", None), f"{dst}mlp.norm")
    kind = type(mlp).__name__
    if kind == "SwiGLU":
        gate, up = mlp.fc1_g, mlp.fc1_x
        out[dst + "mlp.fc1.weight"] = torch.cat([gate.weight, up.weight])
        if gate.bias is not None:
            out[dst + "mlp.fc1.bias"] = torch.cat([gate.bias, up.bias])
        _copy_linear(out, dst + "mlp.fc2", mlp.fc2)
        return int(mlp.fc2.in_features), _act_name(mlp.act), True, gate.bias is not None
    if kind == "GluMlp":
        if mlp.gate_last or mlp.chunk_dim != -1:
            raise ValueError(f"cannot export {dst}mlp: only GluMlp with the gate first is supported")
        _copy_linear(out, dst + "mlp.fc1", mlp.fc1)
        _copy_linear(out, dst + "mlp.fc2", mlp.fc2)
        return int(mlp.fc2.in_features), _act_name(mlp.act), True, mlp.fc1.bias is not None
    if kind == "Mlp" and isinstance(mlp.fc1, nn.Linear):
        _copy_linear(out, dst + "mlp.fc1", mlp.fc1)
        _copy_linear(out, dst + "mlp.fc2", mlp.fc2)
        return int(mlp.fc2.in_features), _act_name(mlp.act), False, mlp.fc1.bias is not None
    raise ValueError(f"cannot export {dst}mlp: unsupported MLP {kind}")


def _timm_pos_embed(model: nn.Module, grid: list[int], dim: int) -> Tensor | None:
    """Full-sequence absolute position embedding, resampled the way the timm model does it."""
    if getattr(model, "pos_embed", None) is None:
        return None
    num_prefix = int(model.num_prefix_tokens)
    pos = model.pos_embed
    if tuple(grid) != tuple(model.patch_embed.grid_size):
        if not model.dynamic_img_size:
            raise ValueError(
                f"the timm model was built for a {tuple(model.patch_embed.grid_size)} patch grid; create it with "
                f"img_size={[g * model.patch_embed.patch_size[0] for g in grid]} or dynamic_img_size=True"
            )
        from timm.layers import resample_abs_pos_embed

        pos = resample_abs_pos_embed(
            pos,
            new_size=grid,
            old_size=model.patch_embed.grid_size,
            num_prefix_tokens=0 if model.no_embed_class else num_prefix,
        )
    pos = pos.float()
    if model.no_embed_class:  # prefix tokens get no position embedding
        pos = _prefix_rows(pos, num_prefix, 0.0)
    return pos


def _timm_common(model: nn.Module, height: int, width: int) -> tuple[dict, dict[str, Tensor]]:
    if model.cls_token is None:
        raise ValueError("cannot export a timm model without a class token")
    _require_identity(model.patch_embed.norm, "patch_embed.norm")
    _require_identity(model.norm_pre, "norm_pre")
    conv = model.patch_embed.proj
    patch = int(conv.kernel_size[0])
    if conv.kernel_size[0] != conv.kernel_size[1] or tuple(conv.stride) != tuple(conv.kernel_size):
        raise ValueError("cannot export: only square, non-overlapping patches are supported")
    if height % patch or width % patch:
        # timm asserts divisibility (or pads with dynamic_img_pad); HF crops. Keep the semantics exact.
        raise ValueError(f"image size {height}x{width} must be a multiple of the patch size {patch} for timm models")
    grid = _grid(height, width, patch)
    out: dict[str, Tensor] = {"patch_embed.weight": conv.weight, "cls_token": model.cls_token}
    if conv.bias is not None:
        out["patch_embed.bias"] = conv.bias
    registers = 0
    if getattr(model, "reg_token", None) is not None:
        out["reg_tokens"] = model.reg_token
        registers = int(model.reg_token.shape[1])
    if int(model.num_prefix_tokens) != 1 + registers:
        raise ValueError("cannot export: unexpected number of prefix tokens")
    pos = _timm_pos_embed(model, grid, int(model.embed_dim))
    if pos is not None:
        out["pos_embed"] = pos
    final_norm = not isinstance(model.norm, nn.Identity)
    if final_norm:
        _copy_norm(out, "norm", model.norm)
    kwargs = {
        "embed_dim": int(model.embed_dim),
        "depth": len(model.blocks),
        "patch_size": patch,
        "grid_size": grid,
        "num_register_tokens": registers,
        "patch_bias": conv.bias is not None,
        "final_norm": final_norm,
        "use_pos_embed": pos is not None,
        "in_chans": int(conv.in_channels),
    }
    return kwargs, out


def _convert_timm_vit(model: nn.Module, height: int, width: int) -> tuple[dict, dict[str, Tensor]]:
    kwargs, out = _timm_common(model, height, width)
    layer_scale = None
    for i, block in enumerate(model.blocks):
        dst = f"blocks.{i}."
        attn = block.attn
        if type(block).__name__ != "Block" or type(attn).__name__ != "Attention" or not hasattr(attn, "qkv"):
            raise ValueError(f"cannot export blocks.{i}: only timm's standard pre-norm Block is supported")
        for name in ("q_norm", "k_norm", "norm"):
            _require_identity(getattr(attn, name, None), f"blocks.{i}.attn.{name}")
        _copy_norm(out, dst + "norm1", block.norm1)
        _copy_norm(out, dst + "norm2", block.norm2)
        _copy_linear(out, dst + "attn.qkv", attn.qkv)
        _copy_linear(out, dst + "attn.proj", attn.proj)
        has_ls = not isinstance(block.ls1, nn.Identity)
        if has_ls:
            out[dst + "ls1"], out[dst + "ls2"] = block.ls1.gamma, block.ls2.gamma
        layer_scale = has_ls if layer_scale is None else layer_scale
        if has_ls != layer_scale:
            raise ValueError("cannot export: layer scale on some blocks only")
        hidden, act, gated, mlp_bias = _timm_mlp(out, dst, block.mlp)
    kwargs.update(
        num_heads=int(attn.num_heads),
        head_dim=int(attn.head_dim),
        mlp_hidden_dim=hidden,
        act=act,
        gated_mlp=gated,
        layer_scale=bool(layer_scale),
        qkv_bias=attn.qkv.bias is not None,
        proj_bias=attn.proj.bias is not None,
        mlp_bias=mlp_bias,
        norm_eps=float(model.blocks[0].norm1.eps),
        use_rope=False,
    )
    return kwargs, out


def _convert_timm_eva(model: nn.Module, height: int, width: int) -> tuple[dict, dict[str, Tensor]]:
    kwargs, out = _timm_common(model, height, width)
    if getattr(model, "rope_mixed", False):
        raise ValueError("cannot export: timm mixed-mode RoPE is not supported")
    layer_scale = None
    qkv_bias = False
    for i, block in enumerate(model.blocks):
        dst = f"blocks.{i}."
        attn = block.attn
        if type(block).__name__ != "EvaBlock" or type(attn).__name__ != "EvaAttention":
            raise ValueError(f"cannot export blocks.{i}: only timm EvaBlock with EvaAttention is supported")
        for name in ("q_norm", "k_norm", "norm"):
            _require_identity(getattr(attn, name, None), f"blocks.{i}.attn.{name}")
        if getattr(attn, "gate", None) is not None:
            raise ValueError(f"cannot export blocks.{i}: gated attention is not supported")
        if model.rope is not None and not getattr(attn, "rotate_half", False):
            raise ValueError("cannot export: only the 'rotate half' RoPE layout (DINOv3) is supported")
        _copy_norm(out, dst + "norm1", block.norm1)
        _copy_norm(out, dst + "norm2", block.norm2)
        if attn.qkv is not None:
            biases = [attn.q_bias, attn.k_bias, attn.v_bias] if attn.q_bias is not None else [None] * 3
            weights = attn.qkv.weight.chunk(3, dim=0)
        else:
            biases = [attn.q_proj.bias, attn.k_proj.bias, attn.v_proj.bias]
            weights = (attn.q_proj.weight, attn.k_proj.weight, attn.v_proj.weight)
        weight, bias = _fuse_qkv(*weights, biases)
        out[dst + "attn.qkv.weight"] = weight
        if bias is not None:
            out[dst + "attn.qkv.bias"] = bias
            qkv_bias = True
        _copy_linear(out, dst + "attn.proj", attn.proj)
        has_ls = block.gamma_1 is not None
        if has_ls and block.gamma_2 is None:
            raise ValueError("cannot export: attention-only layer scale is not supported")
        if has_ls:
            out[dst + "ls1"], out[dst + "ls2"] = block.gamma_1, block.gamma_2
        layer_scale = has_ls if layer_scale is None else layer_scale
        hidden, act, gated, mlp_bias = _timm_mlp(out, dst, block.mlp)

    use_rope = model.rope is not None
    if use_rope:
        grid = kwargs["grid_size"]
        if model.dynamic_img_size:
            embed = model.rope.get_embed(shape=grid)
        else:
            if tuple(grid) != tuple(model.patch_embed.grid_size):
                raise ValueError("the timm model's RoPE grid is fixed; create it with dynamic_img_size=True")
            embed = model.rope.get_embed()
        sin, cos = embed.chunk(2, dim=-1)  # timm packs [sin, cos]
        if sin.shape != (grid[0] * grid[1], int(attn.head_dim)):
            raise ValueError(f"unexpected timm RoPE table shape {tuple(embed.shape)}")
        out.update(_rope_tables(cos, sin, int(model.num_prefix_tokens)))
    kwargs.update(
        num_heads=int(attn.num_heads),
        head_dim=int(attn.head_dim),
        mlp_hidden_dim=hidden,
        act=act,
        gated_mlp=gated,
        layer_scale=bool(layer_scale),
        qkv_bias=qkv_bias,
        proj_bias=attn.proj.bias is not None,
        mlp_bias=mlp_bias,
        norm_eps=float(model.blocks[0].norm1.eps),
        use_rope=use_rope,
    )
    return kwargs, out


_CONVERTERS: dict[str, Callable[[nn.Module, int, int], tuple[dict, dict[str, Tensor]]]] = {
    HF_DINOV2: _convert_hf_dinov2,
    HF_DINOV2_REGISTERS: _convert_hf_dinov2,
    HF_DINOV3: _convert_hf_dinov3,
    TIMM_VIT: _convert_timm_vit,
    TIMM_EVA: _convert_timm_eva,
}

__all__ = [
    "convert_backbone",
    "detect_family",
    "merge_adapters",
    "reference_tokens",
    "verify_backbone",
]


# Fields of transformers' Wav2Vec2Config that detectors.networks.wav2vec2.Wav2Vec2Encoder takes.
WAV2VEC2_FIELDS = (
    "conv_dim",
    "conv_kernel",
    "conv_stride",
    "conv_bias",
    "feat_extract_norm",
    "feat_extract_activation",
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "intermediate_size",
    "hidden_act",
    "layer_norm_eps",
    "num_conv_pos_embeddings",
    "num_conv_pos_embedding_groups",
    "do_stable_layer_norm",
)


def wav2vec2_kwargs(config: Any) -> dict[str, Any]:
    """Constructor arguments of the plain-torch ``Wav2Vec2Encoder`` for a transformers ``Wav2Vec2Config``."""
    values = config.to_dict()
    return {
        key: list(values[key]) if isinstance(values[key], (tuple, list)) else values[key] for key in WAV2VEC2_FIELDS
    }


def convert_wav2vec2(model: nn.Module) -> dict[str, Tensor]:
    """State dict of a (LoRA-tuned) ``Wav2Vec2Model`` for the plain-torch ``Wav2Vec2Encoder`` of
    ``detectors/networks/wav2vec2.py``: adapters merged, the positional convolution's weight-norm
    parametrisation folded into a plain weight, the SpecAugment mask vector (training only) dropped.
    HF key names are kept."""
    model = merge_adapters(model)
    pos_conv = model.encoder.pos_conv_embed.conv
    folded = pos_conv.weight.detach().clone()  # the parametrisation computes g * v / ||v||
    state: dict[str, Tensor] = {}
    for key, value in model.state_dict().items():
        if "parametrizations" in key or key.startswith("masked_spec_embed") or key.endswith(("weight_g", "weight_v")):
            continue
        state[key] = value.detach().float().contiguous().clone()
    state["encoder.pos_conv_embed.conv.weight"] = folded.float().contiguous()
    return state


# ----------------------------------------------------------------------------------------------
# timm CNNs (``--arch cnn``) -> detectors.networks.cnn.ConvNeXt / ResNet

CNN_FAMILIES = ("convnext", "resnet")


def cnn_architecture(model: nn.Module) -> dict[str, Any]:
    """Constructor arguments of the plain-torch equivalent of a timm ``ConvNeXt`` or ``ResNet``
    (``{"family": ..., **kwargs}``); a ValueError naming what is not reproduced for anything else."""
    name = type(model).__name__
    if name == "ConvNeXt" and type(model).__module__.startswith("timm."):
        return _convnext_architecture(model)
    if name == "ResNet" and type(model).__module__.startswith("timm."):
        return _resnet_architecture(model)
    raise ValueError(
        f"the export reproduces timm ConvNeXt and ResNet/ResNeXt networks in plain torch; "
        f"{type(model).__module__}.{name} is not one of them"
    )


def _convnext_architecture(model: nn.Module) -> dict[str, Any]:
    stem = model.stem
    if not (
        isinstance(stem, nn.Sequential)
        and len(stem) == 2
        and isinstance(stem[0], nn.Conv2d)
        and stem[0].kernel_size[0] == stem[0].stride[0]
    ):
        raise ValueError("ConvNeXt: only the patchify stem (stem_type 'patch') is exported")
    _require_identity(model.norm_pre, "ConvNeXt norm_pre (head_norm_first)")
    if model.head.global_pool.pool_type != "avg" or not isinstance(model.head.pre_logits, nn.Identity):
        raise ValueError("ConvNeXt: only the average-pool head without a pre-logits MLP is exported")
    depths, dims, kernel, ratio, eps = [], [], None, None, None
    for index, stage in enumerate(model.stages):
        if index > 0 and not (
            isinstance(stage.downsample, nn.Sequential)
            and stage.downsample[1].kernel_size == (2, 2)
            and stage.downsample[1].stride == (2, 2)
        ):
            raise ValueError("ConvNeXt: only the 2x2, stride-2 downsampling is exported")
        if index == 0 and not isinstance(stage.downsample, nn.Identity):
            raise ValueError("ConvNeXt: the first stage must not downsample")
        for block in stage.blocks:
            if type(block.mlp).__name__ not in ("Mlp", "ConvMlp") or not isinstance(block.mlp.norm, nn.Identity):
                raise ValueError(f"ConvNeXt: {type(block.mlp).__name__} blocks (ConvNeXt V2's GRN) are not exported")
            _require_identity(block.shortcut, "ConvNeXt block shortcut")
            # torch's GELU or timm's (F.gelu, exact); not the tanh approximation
            if type(block.mlp.act).__name__ != "GELU" or getattr(block.mlp.act, "approximate", "none") != "none":
                raise ValueError("ConvNeXt: only GELU blocks are exported")
            kernel = block.conv_dw.kernel_size[0]
            ratio = block.mlp.fc1.out_channels if isinstance(block.mlp.fc1, nn.Conv2d) else block.mlp.fc1.out_features
            ratio = ratio / block.conv_dw.in_channels
            eps = block.norm.eps
        depths.append(len(stage.blocks))
        dims.append(
            int(stage.blocks[0].conv_dw.in_channels) if len(stage.blocks) else int(stage.downsample[1].out_channels)
        )
    return {
        "family": "convnext",
        "depths": depths,
        "dims": dims,
        "in_chans": int(stem[0].in_channels),
        "patch_size": int(stem[0].kernel_size[0]),
        "kernel_size": int(kernel),
        "mlp_ratio": float(ratio),
        "eps": float(eps),
    }


def _resnet_architecture(model: nn.Module) -> dict[str, Any]:
    if not isinstance(model.conv1, nn.Conv2d) or model.conv1.kernel_size != (7, 7):
        raise ValueError("ResNet: only the default 7x7 stem is exported (not the deep stems of resnet*d / *s)")
    if not isinstance(model.maxpool, nn.MaxPool2d):
        raise ValueError("ResNet: only the max-pool stem is exported")
    if model.global_pool.pool_type != "avg":
        raise ValueError("ResNet: only average pooling is exported")
    stages = [model.layer1, model.layer2, model.layer3, model.layer4]
    block_kind = type(stages[0][0]).__name__
    if block_kind not in ("BasicBlock", "Bottleneck"):
        raise ValueError(f"ResNet: {block_kind} blocks are not exported")
    groups = 1
    for stage in stages:
        for block in stage:
            if block.se is not None or not isinstance(block.aa, nn.Identity) or not isinstance(block.act1, nn.ReLU):
                raise ValueError("ResNet: blocks with attention, anti-aliasing or another activation are not exported")
            if block.downsample is not None and not (
                isinstance(block.downsample, nn.Sequential) and isinstance(block.downsample[0], nn.Conv2d)
            ):
                raise ValueError("ResNet: only the 1x1-convolution shortcut is exported (not avg_down)")
            if block_kind == "Bottleneck":
                groups = block.conv2.groups
    channels = [
        int(stage[0].bn1.num_features) if block_kind == "BasicBlock" else int(stage[0].conv3.out_channels) // 4
        for stage in stages
    ]
    kwargs: dict[str, Any] = {
        "family": "resnet",
        "block": "basic" if block_kind == "BasicBlock" else "bottleneck",
        "layers": [len(stage) for stage in stages],
        "channels": channels,
        "stem_width": int(model.conv1.out_channels),
        "in_chans": int(model.conv1.in_channels),
        "cardinality": int(groups),
        "base_width": 64,
    }
    if block_kind == "Bottleneck":
        width = int(stages[0][0].conv1.out_channels)
        kwargs["base_width"] = int(round(width / groups * 64 / channels[0]))
    return kwargs


def convert_cnn(model: nn.Module) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """``(architecture, state dict)`` of the plain-torch network for a timm ConvNeXt / ResNet: the
    same keys (timm's names) without the classifier; ConvNeXt's 1x1-conv MLPs become Linear weights
    and a missing layer scale becomes ones."""
    from detectors.networks.cnn import build_cnn

    model = merge_adapters(model)
    architecture = cnn_architecture(model)
    plain = build_cnn(architecture)
    expected = plain.state_dict()
    source = {key: value for key, value in model.state_dict().items() if not key.startswith(("head.fc.", "fc."))}
    state: dict[str, Tensor] = {}
    for key, reference in expected.items():
        value = source.get(key)
        if value is None and key.endswith(".gamma"):
            value = torch.ones_like(reference)  # ls_init_value None: no layer scale
        if value is None:
            raise ValueError(f"{type(model).__name__}: no weight for {key}")
        state[key] = value.detach().reshape(reference.shape).clone()
    unused = sorted(set(source) - set(state))
    if unused:
        raise ValueError(f"{type(model).__name__}: weights the plain network has no place for: {unused[:5]}")
    plain.load_state_dict(state, strict=True)
    return architecture, {key: (v.float() if v.is_floating_point() else v).contiguous() for key, v in state.items()}
