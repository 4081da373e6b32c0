"""Exported BreathNet: plain-torch wav2vec 2.0 + BreathFiLM + log-mel CNN + fusion head + LogitAffine.

``[B, 96000]`` float32 16 kHz mono -> calibrated logits ``[B, num_classes]``.

The wav2vec 2.0 / XLS-R forward is re-implemented here with the module names of HF
``Wav2Vec2Model`` (``feature_extractor.conv_layers.{i}.conv``, ``feature_projection.*``,
``encoder.pos_conv_embed.conv``, ``encoder.layers.{i}.attention.{q,k,v,out}_proj``, ...), so the
export is a key-for-key copy of the trained state dict with two foldings done at export time:
LoRA adapters are merged into the attention weights, and the weight-norm parametrisation of the
positional convolution is replaced by the plain weight it computes. Supported variants: feature
extractor norm ``group`` (GroupNorm on the first conv only) and ``layer`` (LayerNorm after every
conv), and encoder layers with post-norm (``do_stable_layer_norm: false``, wav2vec2-base) or
pre-norm plus a final norm (``true``, XLS-R).

The log-mel front-end uses ``torch.stft`` and a mel filterbank stored as a weight (``mel_fb``),
which is what torchaudio's ``MelSpectrogram`` computes, without depending on its version.

Shared with the in-library detector (``detectors/audio/breathnet.py``): ``BreathFiLM``,
``SpectralCNN`` and ``statistics_pooling``. Only torch, math and typing imports; no dynamic
attribute access.
"""

import math
from typing import List, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from .heads import Float32Buffers, MLP, LogitAffine


def w2v_activation(name: str) -> nn.Module:
    """Activation by HF ``ACT2FN`` name."""
    if name == "gelu":
        return nn.GELU()
    if name in ("gelu_new", "gelu_pytorch_tanh"):
        return nn.GELU(approximate="tanh")
    if name in ("silu", "swish"):
        return nn.SiLU()
    if name == "relu":
        return nn.ReLU()
    raise ValueError(f"unsupported activation {name!r}; use gelu, gelu_new, silu or relu")


def normalize_waveform(x: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """Zero mean, unit variance per clip (``Wav2Vec2FeatureExtractor(do_normalize=True)``)."""
    x = x.float()
    mean = x.mean(dim=-1, keepdim=True)
    var = x.var(dim=-1, keepdim=True, unbiased=False)
    return (x - mean) / torch.sqrt(var + eps)


def statistics_pooling(frames: torch.Tensor) -> torch.Tensor:
    """``[B, T, D]`` -> ``[B, 2D]``: mean and (population) standard deviation over time."""
    mean = frames.mean(dim=1)
    std = (frames - mean.unsqueeze(1)).pow(2).mean(dim=1).clamp_min(1e-6).sqrt()
    return torch.cat([mean, std], dim=-1)


def conv_frame_geometry(conv_kernel: Sequence[int], conv_stride: Sequence[int], num_samples: int) -> Tuple[int, int, int]:
    """(number of frames, stride in samples, receptive field in samples) of the conv feature encoder."""
    length = int(num_samples)
    stride = 1
    field = 1
    for kernel, step in zip(conv_kernel, conv_stride):
        length = (length - int(kernel)) // int(step) + 1
        field = field + (int(kernel) - 1) * stride
        stride = stride * int(step)
    return length, stride, field


# ----------------------------------------------------------------------------------------------
# BreathNet pieces shared with the in-library detector


class BreathFiLM(nn.Module):
    """Breath-presence predictor over frame features and the FiLM it drives.

    ``p = sigmoid(MLP(h))`` per frame; ``gamma = 1 + softplus(a) * p`` and ``beta = b * p`` (``a``,
    ``b`` learned per channel), so ``h' = gamma * h + beta``. ``softplus(a) >= 0`` makes gamma >= 1
    and increasing in ``p``: breath-bearing frames are amplified, never suppressed.
    Returns ``(modulated frames [B, T, D], breath logits [B, T])``.
    """

    def __init__(self, dim: int, hidden: int = 64, init_scale: float = 1.0):
        super().__init__()
        self.predictor = MLP([dim, hidden, 1], activation="gelu")
        # softplus(raw) = init_scale at initialisation
        raw = math.log(math.expm1(init_scale)) if init_scale > 0 else -10.0
        self.scale_raw = nn.Parameter(torch.full((dim,), float(raw)))
        self.shift = nn.Parameter(torch.zeros(dim))

    def gamma_beta(self, prob: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        p = prob.unsqueeze(-1)
        return 1.0 + F.softplus(self.scale_raw) * p, self.shift * p

    def forward(self, frames: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        logits = self.predictor(frames).squeeze(-1)
        gamma, beta = self.gamma_beta(torch.sigmoid(logits))
        return frames * gamma + beta, logits


class SpectralCNN(nn.Module):
    """Log-mel ``[B, n_mels, T]`` -> embedding ``[B, embed_dim]``.

    Per-clip standardisation of the log-mel (gain invariance), then ``len(channels)`` blocks of
    Conv2d(3x3) -> GroupNorm -> GELU -> MaxPool(2), global average pooling and a Linear layer.
    """

    def __init__(self, channels: Sequence[int] = (16, 32, 64), embed_dim: int = 128, groups: int = 4):
        super().__init__()
        blocks: List[nn.Module] = []
        previous = 1
        for width in channels:
            blocks.append(nn.Conv2d(previous, int(width), kernel_size=3, padding=1))
            blocks.append(nn.GroupNorm(min(int(groups), int(width)), int(width)))
            blocks.append(nn.GELU())
            blocks.append(nn.MaxPool2d(2))
            previous = int(width)
        self.blocks = nn.Sequential(*blocks)
        self.proj = nn.Linear(previous, int(embed_dim))

    def forward(self, log_mel: torch.Tensor) -> torch.Tensor:
        mean = log_mel.mean(dim=(1, 2), keepdim=True)
        std = log_mel.std(dim=(1, 2), keepdim=True).clamp_min(1e-5)
        x = ((log_mel - mean) / std).unsqueeze(1)
        x = self.blocks(x).mean(dim=(2, 3))
        return self.proj(x)


class LogMel(Float32Buffers):
    """``log(mel power spectrogram + eps)`` with ``torch.stft`` and a stored filterbank ``mel_fb``
    ``[n_fft // 2 + 1, n_mels]`` (torchaudio's ``MelSpectrogram`` defaults: Hann window, centred,
    reflect padding, power 2)."""

    float32_buffers = ("mel_fb", "window")

    def __init__(self, n_fft: int = 512, win_length: int = 400, hop_length: int = 160, n_mels: int = 64,
                 log_eps: float = 1e-6):
        super().__init__()
        self.n_fft = n_fft
        self.win_length = win_length
        self.hop_length = hop_length
        self.log_eps = log_eps
        self.register_buffer("mel_fb", torch.zeros(n_fft // 2 + 1, n_mels))
        self.register_buffer("window", torch.hann_window(win_length), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        spec = torch.stft(x.float(), n_fft=self.n_fft, hop_length=self.hop_length, win_length=self.win_length,
                          window=self.window.float(), center=True, pad_mode="reflect", normalized=False,
                          onesided=True, return_complex=True)
        power = spec.abs().pow(2.0)  # [B, F, T]
        mel = torch.matmul(power.transpose(-1, -2), self.mel_fb.float()).transpose(-1, -2)
        return torch.log(mel + self.log_eps)


# ----------------------------------------------------------------------------------------------
# wav2vec 2.0 (HF Wav2Vec2Model layout)


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
        self.activation = w2v_activation(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        if self.norm == "layer":
            x = self.layer_norm(x.transpose(-2, -1)).transpose(-2, -1)
        else:
            x = self.layer_norm(x)
        return self.activation(x)


class W2VFeatureEncoder(nn.Module):
    def __init__(self, conv_dim: Sequence[int], conv_kernel: Sequence[int], conv_stride: Sequence[int],
                 conv_bias: bool, feat_extract_norm: str, act: str):
        super().__init__()
        if feat_extract_norm not in ("group", "layer"):
            raise ValueError(f"feat_extract_norm must be 'group' or 'layer', got {feat_extract_norm!r}")
        layers = []
        for i in range(len(conv_dim)):
            norm = "layer" if feat_extract_norm == "layer" else ("group" if i == 0 else "none")
            layers.append(W2VConvLayer(1 if i == 0 else int(conv_dim[i - 1]), int(conv_dim[i]), int(conv_kernel[i]),
                                       int(conv_stride[i]), conv_bias, norm, act))
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
        self.activation = w2v_activation(act)

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
        self.activation = w2v_activation(act)
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
    def __init__(self, hidden: int, layers: int, num_heads: int, intermediate: int, act: str, eps: float,
                 stable: bool, pos_kernel: int, pos_groups: int, pos_act: str):
        super().__init__()
        self.stable = stable
        self.pos_conv_embed = W2VPositionalConv(hidden, pos_kernel, pos_groups, pos_act)
        self.layer_norm = nn.LayerNorm(hidden, eps=eps)
        self.layers = nn.ModuleList(
            W2VEncoderLayer(hidden, num_heads, intermediate, act, eps, stable) for _ in range(layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.pos_conv_embed(x)
        if not self.stable:
            x = self.layer_norm(x)
        for layer in self.layers:
            x = layer(x)
        return self.layer_norm(x) if self.stable else x


class Wav2Vec2Standalone(nn.Module):
    """Normalised waveform ``[B, N]`` -> last hidden state ``[B, T, hidden_size]``.

    Keyword arguments are the fields of ``transformers.Wav2Vec2Config`` of the same names.
    """

    def __init__(self, conv_dim: Sequence[int], conv_kernel: Sequence[int], conv_stride: Sequence[int],
                 hidden_size: int, num_hidden_layers: int, num_attention_heads: int, intermediate_size: int,
                 num_conv_pos_embeddings: int, num_conv_pos_embedding_groups: int, conv_bias: bool = False,
                 feat_extract_norm: str = "group", feat_extract_activation: str = "gelu",
                 hidden_act: str = "gelu", layer_norm_eps: float = 1e-5, do_stable_layer_norm: bool = False):
        super().__init__()
        self.hidden_size = int(hidden_size)
        self.feature_extractor = W2VFeatureEncoder(conv_dim, conv_kernel, conv_stride, bool(conv_bias),
                                                   feat_extract_norm, feat_extract_activation)
        self.feature_projection = W2VFeatureProjection(int(conv_dim[-1]), self.hidden_size, float(layer_norm_eps))
        self.encoder = W2VEncoder(self.hidden_size, int(num_hidden_layers), int(num_attention_heads),
                                  int(intermediate_size), hidden_act, float(layer_norm_eps), bool(do_stable_layer_norm),
                                  int(num_conv_pos_embeddings), int(num_conv_pos_embedding_groups),
                                  feat_extract_activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.feature_extractor(x).transpose(1, 2)
        return self.encoder(self.feature_projection(features))


# ----------------------------------------------------------------------------------------------
# The exported detector


class BreathNetStandalone(nn.Module):
    """``[B, 96000]`` float32 waveform -> calibrated logits ``[B, num_classes]`` (float32).

    temporal: normalise -> wav2vec 2.0 -> BreathFiLM -> mean+std pooling;
    spectral: log-mel -> SpectralCNN; fusion: concat -> Linear -> GELU; head: MLP; LogitAffine.
    """

    def __init__(self, wav2vec2: dict, film_hidden: int = 64, spectral: dict = None, mel: dict = None,
                 fusion_dim: int = 256, head_dims: Sequence[int] = (), num_classes: int = 2):
        super().__init__()
        self.wav2vec2 = Wav2Vec2Standalone(**wav2vec2)
        hidden = self.wav2vec2.hidden_size
        self.film = BreathFiLM(hidden, film_hidden)
        self.log_mel = LogMel(**(mel or {}))
        spectral = spectral or {}
        self.spectral = SpectralCNN(**spectral)
        spectral_dim = int(spectral.get("embed_dim", 128))
        self.fusion = nn.Linear(2 * hidden + spectral_dim, int(fusion_dim))
        self.head = MLP([int(fusion_dim)] + [int(d) for d in head_dims] + [int(num_classes)], activation="gelu")
        self.calibration = LogitAffine(num_classes)

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        dtype = self.fusion.weight.dtype
        x = waveform.float()
        frames = self.wav2vec2(normalize_waveform(x).to(dtype))
        frames, _ = self.film(frames)
        temporal = statistics_pooling(frames)
        spectral = self.spectral(self.log_mel(x).to(dtype))
        fused = F.gelu(self.fusion(torch.cat([temporal, spectral], dim=-1)))
        return self.calibration(self.head(fused))
