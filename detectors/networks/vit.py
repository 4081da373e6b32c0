"""Plain-torch Vision Transformer for exported DINOv2 / DINOv3 backbones.

One module reproduces the final-norm token sequence ``[B, 1 + registers + patches, D]`` of HF
``Dinov2Model``, ``Dinov2WithRegistersModel``, ``DINOv3ViTModel`` and timm's DINOv2
``VisionTransformer`` / DINOv3 ``Eva`` from weights converted by ``export/convert.py``.

Everything that depends on the image size (interpolated absolute position embeddings, RoPE cos/sin
tables) is computed at export time by the source library's own code and stored as weights, so this
file holds no interpolation or RoPE-generation code that could drift from the library:

- ``pos_embed`` covers the whole token sequence; rows of tokens that get no position embedding in the
  source model (registers, or CLS/registers in timm's ``no_embed_class`` models) are zero.
- ``rope_cos`` / ``rope_sin`` cover the whole sequence too, in the "rotate half" layout; prefix rows
  (CLS, registers) are cos = 1, sin = 0, which leaves those tokens unrotated exactly as the libraries
  do, without a split/concat per layer.

This file is concatenated into the submission's ``model.py``: only torch, math and typing imports,
and no dynamic attribute or code access of any kind.
"""

import torch
import torch.nn as nn
import torch.nn.functional as F

from .layers import build_activation


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """[x1, x2] -> [-x2, x1] on the last dimension (RoPE "rotate half" layout)."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


class Attention(nn.Module):
    """Multi-head self-attention with one fused qkv projection and optional RoPE."""

    def __init__(self, dim: int, num_heads: int, head_dim: int, qkv_bias: bool = True, proj_bias: bool = True):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = head_dim
        attn_dim = num_heads * head_dim
        # One matmul for q, k and v; biases a source model lacks (DINOv3's key) are stored as zeros.
        self.qkv = nn.Linear(dim, 3 * attn_dim, bias=qkv_bias)
        self.proj = nn.Linear(attn_dim, dim, bias=proj_bias)

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        batch, tokens, _ = x.shape
        qkv = self.qkv(x).reshape(batch, tokens, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # each [B, heads, N, head_dim]
        if rope is not None:
            cos, sin = rope
            q = q * cos + rotate_half(q) * sin
            k = k * cos + rotate_half(k) * sin
        x = F.scaled_dot_product_attention(q, k, v)
        x = x.transpose(1, 2).reshape(batch, tokens, self.num_heads * self.head_dim)
        return self.proj(x)


class Mlp(nn.Module):
    """Two-layer MLP; ``gated`` packs [gate; up] into ``fc1`` (SwiGLU: act(gate) * up)."""

    def __init__(self, dim: int, hidden_dim: int, act: str = "gelu", gated: bool = False, bias: bool = True):
        super().__init__()
        self.gated = gated
        self.fc1 = nn.Linear(dim, 2 * hidden_dim if gated else hidden_dim, bias=bias)
        self.act = build_activation(act)
        self.fc2 = nn.Linear(hidden_dim, dim, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.fc1(x)
        if self.gated:
            gate, up = x.chunk(2, dim=-1)
            x = self.act(gate) * up
        else:
            x = self.act(x)
        return self.fc2(x)


class Block(nn.Module):
    """Pre-norm transformer block with optional per-channel layer scale."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        head_dim: int,
        mlp_hidden_dim: int,
        act: str = "gelu",
        gated_mlp: bool = False,
        layer_scale: bool = True,
        qkv_bias: bool = True,
        proj_bias: bool = True,
        mlp_bias: bool = True,
        norm_eps: float = 1e-6,
    ):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = Attention(dim, num_heads, head_dim, qkv_bias=qkv_bias, proj_bias=proj_bias)
        self.ls1 = nn.Parameter(torch.ones(dim)) if layer_scale else None
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = Mlp(dim, mlp_hidden_dim, act=act, gated=gated_mlp, bias=mlp_bias)
        self.ls2 = nn.Parameter(torch.ones(dim)) if layer_scale else None

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        y = self.attn(self.norm1(x), rope)
        x = x + (y * self.ls1 if self.ls1 is not None else y)
        y = self.mlp(self.norm2(x))
        return x + (y * self.ls2 if self.ls2 is not None else y)


class VisionTransformer(nn.Module):
    """DINOv2/DINOv3-style ViT at one fixed input size; returns the final-norm token sequence.

    Input: normalised float images ``[B, in_chans, H, W]`` with ``H // patch_size, W // patch_size ==
    grid_size``. Output: ``[B, 1 + num_register_tokens + grid_h * grid_w, embed_dim]`` (CLS first, then
    registers, then patch tokens in row-major order).
    """

    def __init__(
        self,
        embed_dim: int,
        depth: int,
        num_heads: int,
        patch_size: int,
        grid_size: list[int],
        mlp_hidden_dim: int,
        head_dim: int | None = None,
        num_register_tokens: int = 0,
        act: str = "gelu",
        gated_mlp: bool = False,
        layer_scale: bool = True,
        qkv_bias: bool = True,
        proj_bias: bool = True,
        mlp_bias: bool = True,
        patch_bias: bool = True,
        norm_eps: float = 1e-6,
        final_norm: bool = True,
        use_pos_embed: bool = True,
        use_rope: bool = False,
        in_chans: int = 3,
    ):
        super().__init__()
        head_dim = head_dim or embed_dim // num_heads
        self.embed_dim = embed_dim
        self.patch_size = patch_size
        self.grid_size = (int(grid_size[0]), int(grid_size[1]))
        self.num_register_tokens = num_register_tokens
        self.num_prefix_tokens = 1 + num_register_tokens
        num_tokens = self.num_prefix_tokens + self.grid_size[0] * self.grid_size[1]

        self.patch_embed = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size, bias=patch_bias)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.reg_tokens = nn.Parameter(torch.zeros(1, num_register_tokens, embed_dim)) if num_register_tokens else None
        self.pos_embed = nn.Parameter(torch.zeros(1, num_tokens, embed_dim)) if use_pos_embed else None
        if use_rope:
            # Persistent: the tables are computed by the source library at export time.
            self.register_buffer("rope_cos", torch.ones(num_tokens, head_dim))
            self.register_buffer("rope_sin", torch.zeros(num_tokens, head_dim))
        else:
            self.rope_cos = None
            self.rope_sin = None
        self.blocks = nn.ModuleList(
            Block(
                embed_dim,
                num_heads,
                head_dim,
                mlp_hidden_dim,
                act=act,
                gated_mlp=gated_mlp,
                layer_scale=layer_scale,
                qkv_bias=qkv_bias,
                proj_bias=proj_bias,
                mlp_bias=mlp_bias,
                norm_eps=norm_eps,
            )
            for _ in range(depth)
        )
        self.norm = nn.LayerNorm(embed_dim, eps=norm_eps) if final_norm else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, _, height, width = x.shape
        grid = (height // self.patch_size, width // self.patch_size)
        if grid != self.grid_size:
            raise ValueError(
                f"input {height}x{width} gives a {grid[0]}x{grid[1]} patch grid; this export was built for "
                f"{self.grid_size[0]}x{self.grid_size[1]} (images of "
                f"{self.grid_size[0] * self.patch_size}x{self.grid_size[1] * self.patch_size})"
            )
        x = self.patch_embed(x).flatten(2).transpose(1, 2)
        prefix = [self.cls_token.expand(batch, -1, -1)]
        if self.reg_tokens is not None:
            prefix.append(self.reg_tokens.expand(batch, -1, -1))
        x = torch.cat(prefix + [x], dim=1)
        if self.pos_embed is not None:
            x = x + self.pos_embed
        rope = (self.rope_cos, self.rope_sin) if self.rope_cos is not None else None
        for block in self.blocks:
            x = block(x, rope)
        return self.norm(x)
