"""Plain-torch wav2vec 2.0 / XLS-R encoder (the module tree of transformers' ``Wav2Vec2Model``).

Module names follow ``Wav2Vec2Model`` (``feature_extractor.conv_layers.{i}.conv``,
``feature_projection.*``, ``encoder.pos_conv_embed.conv``, ``encoder.layers.{i}.attention.{q,k,v,out}_proj``,
...), so an exported state dict is a key-for-key copy of the trained one with two foldings done by
``export.convert.convert_wav2vec2``: LoRA adapters merged into the attention weights, and the
weight-norm parametrisation of the positional convolution replaced by the plain weight it computes.
Supported variants: feature extractor norm ``group`` (GroupNorm on the first conv only) and ``layer``
(LayerNorm after every conv); encoder layers with post-norm (``do_stable_layer_norm: false``,
wav2vec2-base) or pre-norm plus a final norm (``true``, XLS-R). Reference:
https://github.com/huggingface/transformers/blob/main/src/transformers/models/wav2vec2/modeling_wav2vec2.py
"""

from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from .layers import build_activation


def normalize_waveform(x: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """Zero mean, unit variance per clip (``Wav2Vec2FeatureExtractor(do_normalize=True)``)."""
    x = x.float()
    mean = x.mean(dim=-1, keepdim=True)
    var = x.var(dim=-1, keepdim=True, unbiased=False)
    return (x - mean) / torch.sqrt(var + eps)


def conv_frame_geometry(
    conv_kernel: Sequence[int], conv_stride: Sequence[int], num_samples: int
) -> tuple[int, int, int]:
    """(number of frames, stride in samples, receptive field in samples) of the conv feature encoder."""
    length = int(num_samples)
    stride = 1
    field = 1
    for kernel, step in zip(conv_kernel, conv_stride):
        length = (length - int(kernel)) // int(step) + 1
        field = field + (int(kernel) - 1) * stride
        stride = stride * int(step)
    return length, stride, field


class W2VConvLayer(nn.Module):
    """Conv1d -> (GroupNorm | LayerNorm over channels | nothing) -> activation."""

    def __init__(self, in_dim: int, out_dim: int, kernel: int, stride: int, bias: bool, norm: str, act: str):
        super().__init__()
        self.norm = norm
        self.conv = nn.Conv1d(in_dim, out_dim, kernel_size=kernel, stride=stride, bias=bias)
        if norm == "group":
            self.layer_norm = nn.GroupNorm(out_dim, out_dim, affine=True)
        elif norm == "layer":
            self.layer_norm = nn.LayerNorm(out_dim, elementwise_affine=True)
        else:
            self.layer_norm = nn.Identity()
        self.activation = build_activation(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        if self.norm == "layer":
            x = self.layer_norm(x.transpose(-2, -1)).transpose(-2, -1)
        else:
            x = self.layer_norm(x)
        return self.activation(x)


class W2VFeatureEncoder(nn.Module):
    def __init__(
        self,
        conv_dim: Sequence[int],
        conv_kernel: Sequence[int],
        conv_stride: Sequence[int],
        conv_bias: bool,
        feat_extract_norm: str,
        act: str,
    ):
        super().__init__()
        if feat_extract_norm not in ("group", "layer"):
            raise ValueError(f"feat_extract_norm must be 'group' or 'layer', got {feat_extract_norm!r}")
        layers = []
        for i in range(len(conv_dim)):
            norm = "layer" if feat_extract_norm == "layer" else ("group" if i == 0 else "none")
            layers.append(
                W2VConvLayer(
                    1 if i == 0 else int(conv_dim[i - 1]),
                    int(conv_dim[i]),
                    int(conv_kernel[i]),
                    int(conv_stride[i]),
                    conv_bias,
                    norm,
                    act,
                )
            )
        self.conv_layers = nn.ModuleList(layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, None]
        for layer in self.conv_layers:
            x = layer(x)
        return x  # [B, C, T]


class W2VFeatureProjection(nn.Module):
    def __init__(self, in_dim: int, hidden: int, eps: float):
        super().__init__()
        self.layer_norm = nn.LayerNorm(in_dim, eps=eps)
        self.projection = nn.Linear(in_dim, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.projection(self.layer_norm(x))


class W2VPositionalConv(nn.Module):
    """Grouped Conv1d positional embedding (weight norm already folded into ``conv.weight``)."""

    def __init__(self, hidden: int, kernel: int, groups: int, act: str):
        super().__init__()
        self.conv = nn.Conv1d(hidden, hidden, kernel_size=kernel, padding=kernel // 2, groups=groups)
        self.remove = 1 if kernel % 2 == 0 else 0
        self.activation = build_activation(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x.transpose(1, 2))
        if self.remove > 0:
            y = y[:, :, : y.shape[-1] - self.remove]
        return self.activation(y).transpose(1, 2)


class W2VAttention(nn.Module):
    def __init__(self, hidden: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = hidden // num_heads
        self.q_proj = nn.Linear(hidden, hidden)
        self.k_proj = nn.Linear(hidden, hidden)
        self.v_proj = nn.Linear(hidden, hidden)
        self.out_proj = nn.Linear(hidden, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, width = x.shape
        shape = (batch, tokens, self.num_heads, self.head_dim)
        q = self.q_proj(x).view(shape).transpose(1, 2)
        k = self.k_proj(x).view(shape).transpose(1, 2)
        v = self.v_proj(x).view(shape).transpose(1, 2)
        y = F.scaled_dot_product_attention(q, k, v)
        return self.out_proj(y.transpose(1, 2).reshape(batch, tokens, width))


class W2VFeedForward(nn.Module):
    def __init__(self, hidden: int, intermediate: int, act: str):
        super().__init__()
        self.intermediate_dense = nn.Linear(hidden, intermediate)
        self.activation = build_activation(act)
        self.output_dense = nn.Linear(intermediate, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.output_dense(self.activation(self.intermediate_dense(x)))


class W2VEncoderLayer(nn.Module):
    """Post-norm (wav2vec2-base) or pre-norm (``stable``, XLS-R) transformer layer."""

    def __init__(self, hidden: int, num_heads: int, intermediate: int, act: str, eps: float, stable: bool):
        super().__init__()
        self.stable = stable
        self.attention = W2VAttention(hidden, num_heads)
        self.layer_norm = nn.LayerNorm(hidden, eps=eps)
        self.feed_forward = W2VFeedForward(hidden, intermediate, act)
        self.final_layer_norm = nn.LayerNorm(hidden, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stable:
            x = x + self.attention(self.layer_norm(x))
            return x + self.feed_forward(self.final_layer_norm(x))
        x = self.layer_norm(x + self.attention(x))
        return self.final_layer_norm(x + self.feed_forward(x))


class W2VEncoder(nn.Module):
    def __init__(
        self,
        hidden: int,
        layers: int,
        num_heads: int,
        intermediate: int,
        act: str,
        eps: float,
        stable: bool,
        pos_kernel: int,
        pos_groups: int,
        pos_act: str,
    ):
        super().__init__()
        self.stable = stable
        self.pos_conv_embed = W2VPositionalConv(hidden, pos_kernel, pos_groups, pos_act)
        self.layer_norm = nn.LayerNorm(hidden, eps=eps)
        self.layers = nn.ModuleList(
            W2VEncoderLayer(hidden, num_heads, intermediate, act, eps, stable) for _ in range(layers)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.pos_conv_embed(x)
        if not self.stable:
            x = self.layer_norm(x)
        for layer in self.layers:
            x = layer(x)
        return self.layer_norm(x) if self.stable else x


class Wav2Vec2Encoder(nn.Module):
    """Normalised waveform ``[B, N]`` -> last hidden state ``[B, T, hidden_size]``.

    Keyword arguments are the fields of ``transformers.Wav2Vec2Config`` of the same names.
    """

    def __init__(
        self,
        conv_dim: Sequence[int],
        conv_kernel: Sequence[int],
        conv_stride: Sequence[int],
        hidden_size: int,
        num_hidden_layers: int,
        num_attention_heads: int,
        intermediate_size: int,
        num_conv_pos_embeddings: int,
        num_conv_pos_embedding_groups: int,
        conv_bias: bool = False,
        feat_extract_norm: str = "group",
        feat_extract_activation: str = "gelu",
        hidden_act: str = "gelu",
        layer_norm_eps: float = 1e-5,
        do_stable_layer_norm: bool = False,
    ):
        super().__init__()
        self.hidden_size = int(hidden_size)
        self.embed_dim = self.hidden_size  # the attribute every backbone of a network offers
        self.feature_extractor = W2VFeatureEncoder(
            conv_dim, conv_kernel, conv_stride, bool(conv_bias), feat_extract_norm, feat_extract_activation
        )
        self.feature_projection = W2VFeatureProjection(int(conv_dim[-1]), self.hidden_size, float(layer_norm_eps))
        self.encoder = W2VEncoder(
            self.hidden_size,
            int(num_hidden_layers),
            int(num_attention_heads),
            int(intermediate_size),
            hidden_act,
            float(layer_norm_eps),
            bool(do_stable_layer_norm),
            int(num_conv_pos_embeddings),
            int(num_conv_pos_embedding_groups),
            feat_extract_activation,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.feature_extractor(x).transpose(1, 2)
        return self.encoder(self.feature_projection(features))
