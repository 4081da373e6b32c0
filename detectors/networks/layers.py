"""Plain-torch building blocks of every detector network, in training and in the exported model.py.

Everything under ``detectors/networks/`` (and every network class in a detector file) is export-safe:
torch, math and typing only, no dynamic attribute or code access, no ``from __future__`` import.
``export.bundle`` copies these sources verbatim into a submission's single ``model.py``.

- :class:`DetectorNetwork`: the timm-style ``forward_features`` -> ``forward_head`` split; ``forward``
  returns uncalibrated logits ``[B, C]``. A network takes its backbone as a module (training: the
  transformers/timm model behind ``detectors.backbones.Backbone``) or as the constructor arguments
  of the plain-torch equivalent (export: :class:`~detectors.networks.vit.VisionTransformer`).
- :class:`CalibratedNetwork`: what the exported ``load_model`` returns, ``LogitAffine(network(x))``.
- ``LogitAffine`` (``scale`` [1], ``bias`` [C]): a fitted temperature T and per-class bias folded as
  ``scale = 1 / T``. ``MLP(dims)``: ``layers.{i}.weight`` / ``.bias``. ``LinearNorm``: ``linear.*``
  after L2 normalisation. ``ImageNormalize``: mean/std are constructor arguments, not weights.

Precision: the benchmark casts the whole module to the declared dtype (``model.to(device, dtype)``).
``LogitAffine`` and ``ImageNormalize`` compute in float32 whatever that dtype is, so a bf16 export
returns float32 logits and normalises exactly like the float32 one up to the bf16 rounding of its
parameters.
"""

from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F


def build_activation(name: str) -> nn.Module:
    """Activation by name; names follow transformers' ``ACT2FN`` and timm."""
    if name == "gelu":
        return nn.GELU()
    if name in ("gelu_tanh", "gelu_pytorch_tanh", "gelu_new"):
        return nn.GELU(approximate="tanh")
    if name in ("silu", "swish"):
        return nn.SiLU()
    if name == "relu":
        return nn.ReLU()
    raise ValueError(f"unsupported activation {name!r}; use gelu, gelu_tanh, silu or relu")


def parameter_dtype(module: nn.Module) -> torch.dtype:
    """The dtype a module computes in (that of its first parameter): inputs are cast to it."""
    return next(module.parameters()).dtype


class Float32Buffers(nn.Module):
    """Keeps the buffers named in ``float32_buffers`` in float32 when the module is cast.

    The benchmark runs ``model.to(device, dtype)``: in a bf16 submission, normalisation constants,
    feature statistics and the folded calibrator would otherwise be rounded to 8 mantissa bits
    before any ``.float()`` in ``forward`` could help (a z-score of 91.37 vs 91.5 moves the logits).
    """

    float32_buffers: tuple[str, ...] = ()

    def _apply(self, fn, recurse=True):
        originals = {name: self._buffers[name] for name in self.float32_buffers if self._buffers.get(name) is not None}
        super()._apply(fn, recurse)
        for name, original in originals.items():
            self._buffers[name] = original.to(device=self._buffers[name].device)  # device follows, dtype stays
        return self


class DetectorNetwork(Float32Buffers):
    """Base of every detector network: media in, uncalibrated logits ``[B, C]`` out (buffers named in
    ``float32_buffers`` stay float32 when the network is cast)."""

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


class LogitAffine(Float32Buffers):
    """Folded calibrator: ``logits * scale + bias`` computed in float32."""

    float32_buffers = ("scale", "bias")

    def __init__(self, num_classes: int):
        super().__init__()
        self.register_buffer("scale", torch.ones(1))
        self.register_buffer("bias", torch.zeros(num_classes))

    def forward(self, logits: torch.Tensor) -> torch.Tensor:
        return logits.float() * self.scale.float() + self.bias.float()


class CalibratedNetwork(nn.Module):
    """An exported detector: ``network`` followed by its folded calibrator (keys ``network.*``,
    ``calibration.scale``, ``calibration.bias``)."""

    def __init__(self, network: nn.Module, num_classes: int):
        super().__init__()
        self.network = network
        self.calibration = LogitAffine(num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.calibration(self.network(x))


class MLP(nn.Module):
    """Linear layers ``dims[0] -> dims[1] -> ... -> dims[-1]`` with an activation between them."""

    def __init__(self, dims: list[int], activation: str = "relu"):
        super().__init__()
        if len(dims) < 2:
            raise ValueError(f"MLP needs at least input and output sizes, got {list(dims)}")
        if activation not in ("relu", "gelu"):
            raise ValueError(f"unsupported MLP activation {activation!r}; use 'relu' or 'gelu'")
        self.activation = activation
        self.layers = nn.ModuleList(nn.Linear(dims[i], dims[i + 1]) for i in range(len(dims) - 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        last = len(self.layers) - 1
        for index, layer in enumerate(self.layers):
            x = layer(x)
            if index < last:
                x = F.relu(x) if self.activation == "relu" else F.gelu(x)
        return x


class LinearNorm(nn.Module):
    """GenD head (Yermakov et al., WACV 2026): L2-normalise the features, then one Linear layer."""

    def __init__(self, dim: int, num_classes: int):
        super().__init__()
        self.linear = nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(F.normalize(x, dim=-1))


class ImageNormalize(Float32Buffers):
    """uint8 or float 0..255 images ``[..., C, H, W]`` -> float32 ``(x / 255 - mean) / std``.

    Both input kinds go through the same float32 cast, so they give identical results. The mean and
    std buffers are not saved in the weights (they come from the constructor arguments).
    """

    float32_buffers = ("mean", "std")

    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        if len(mean) != len(std):
            raise ValueError("mean and std need one value per channel")
        self.register_buffer("mean", torch.tensor([float(m) for m in mean]).view(-1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor([float(s) for s in std]).view(-1, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(torch.float32) / 255.0
        return (x - self.mean.float()) / self.std.float()
