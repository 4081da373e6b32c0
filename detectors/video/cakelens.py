"""CakeLens v5 (https://github.com/LaunchPlatform/cakelens-v5, package ``cakelens-v5`` 0.1.2): the
original space-time CNN video detector, checkpoint-compatible, as one network for training and export.

* A video is cut into non-overlapping framesets of 9 consecutive frames over all its frames. Each
  frame is cropped to its top-left 512x512 window (no resize); smaller frames are zero-padded,
  centred, and so is the last frameset when it has fewer than 9 frames. Padding happens before
  normalisation (padded pixels are black, i.e. ``-mean/std`` after normalising). Frames x RGB are
  stacked frame-major into a depth of 27: one frameset is a ``(1, 27, 512, 512)`` volume
  (:func:`cakelens_framesets`).
* CNN (:class:`CakeLensCNN`): ``Conv3d(1, 64, 3, stride 3) -> LeakyReLU -> InstanceNorm3d`` then 6
  space-time blocks ``Conv3d(c, c+32, (1,3,3)) -> LeakyReLU -> InstanceNorm3d -> Conv3d(c+32, c+64,
  (3,1,1)) -> LeakyReLU -> InstanceNorm3d`` whose residual zero-pads the input with 32 channels on
  each side, then ``MaxPool3d(5) -> flatten -> 512 -> 256 -> 128 -> 17`` with LeakyReLU between.
* 17 independent (sigmoid) labels; the whole-video verdict is the mean of per-frameset
  probabilities. :class:`CakeLensNetwork` (what a detector trains and exports) turns the AI_GEN
  label into two-class logits ``[log(1 - p), log(p)]`` with ``p`` that mean.

Module names reproduce the original state-dict keys exactly (``seq.input_conv0.weight``,
``seq.spacetime_conv_group.seq.main.block0.seq.main.space_conv0.weight``, ...,
``seq.fully_connected.seq.relu3.weight`` for the last Linear), so the published
``cakelens-model-5.0.pth`` loads strictly with :func:`load_cakelens_checkpoint`.

:class:`CakeLensV5` is the same CNN with a memory-lean training ``forward`` (the only thing it
overrides): a fused LeakyReLU + InstanceNorm backward, residual adds into channel slices, optional
activation checkpointing and ``channels_last_3d``.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor
from torch.utils.checkpoint import checkpoint
from tqdm import tqdm  # not tqdm.auto: its asyncio variant calls iter() on a DataLoader twice (double workers)

from detectors.atomic import atomic_path
from detectors.errors import CheckpointError, ConfigError, MediaError, state_dict_mismatch, unreadable_weights_reason
from detectors.networks.layers import DetectorNetwork

__all__ = [
    "LABELS",
    "CakeLensCNN",
    "CakeLensConfig",
    "CakeLensNetwork",
    "CakeLensV5",
    "cakelens_framesets",
    "load_cakelens_checkpoint",
    "convert_checkpoint_to_safetensors",
    "frameset_from_clip",
    "framesets_from_frames",
    "iter_frameset_batches",
    "mean_sigmoid_logits",
    "predict_video",
    "predict_video_file",
    "video_volume_from_benchmark_input",
]

# Label order of the original ``cakelens.data_types.Label`` enum (= output index order).
LABELS: tuple[str, ...] = (
    "AI_GEN",
    "ANIME_2D",
    "ANIME_3D",
    "VIDEO_GAME",
    "KLING",
    "HIGGSFIELD",
    "WAN",
    "MIDJOURNEY",
    "HAILUO",
    "RAY",
    "VEO",
    "RUNWAY",
    "SORA",
    "CHATGPT",
    "PIKA",
    "HUNYUAN",
    "VIDU",
)

# Per-RGB-channel statistics of the original training set, applied to pixels scaled to [0, 1].
CAKELENS_MEAN = (0.4016435146331787, 0.380405455827713, 0.3688599765300751)
CAKELENS_STD = (0.28864356875419617, 0.2775335907936096, 0.27996501326560974)


@dataclass(frozen=True)
class CakeLensConfig:
    """Hyper-parameters of the network and its framing; the defaults are the published v5 model.

    Small configurations (e.g. ``crop=64, width=8, channel_step=4, num_blocks=2``) build the same
    code at a size that tests can run.
    """

    width: int = 64  # channels after the input convolution
    channel_step: int = 32  # channels added by each convolution of a space-time block
    num_blocks: int = 6
    frameset_size: int = 9  # frames per frameset
    crop: int = 512  # top-left square window, in pixels
    hidden: tuple[int, ...] = (512, 256, 128)
    num_labels: int = len(LABELS)
    negative_slope: float = 0.01  # nn.LeakyReLU() default, as in the original
    pool: int = 5  # MaxPool3d kernel (and stride) before the classifier
    norm_eps: float = 1e-5  # nn.InstanceNorm3d default
    mean: tuple[float, float, float] = CAKELENS_MEAN
    std: tuple[float, float, float] = CAKELENS_STD

    def __post_init__(self) -> None:
        for name in ("width", "channel_step", "num_blocks", "frameset_size", "crop", "pool"):
            if getattr(self, name) < 1:
                raise ConfigError(None, name, f"must be >= 1, got {getattr(self, name)}")
        if self.pooled_depth < 1 or self.pooled_side < 1:
            raise ConfigError(
                None,
                "crop/frameset_size",
                f"input (depth {self.depth}, side {self.crop}) is too small for the stride-3 input "
                f"convolution followed by MaxPool3d({self.pool})",
            )

    @property
    def depth(self) -> int:
        """Depth of the input volume: frames x RGB."""
        return 3 * self.frameset_size

    @property
    def out_channels(self) -> int:
        """Channels after the space-time blocks (each adds two ``channel_step``)."""
        return self.width + 2 * self.channel_step * self.num_blocks

    @property
    def pooled_depth(self) -> int:
        # Conv3d(kernel 3, stride 3, no padding) then MaxPool3d(pool) (floor, no padding).
        return ((self.depth - 3) // 3 + 1) // self.pool

    @property
    def pooled_side(self) -> int:
        return ((self.crop - 3) // 3 + 1) // self.pool

    @property
    def flatten_size(self) -> int:
        """Input features of the first Linear: 448 * 1 * 34 * 34 = 517,888 at full size."""
        return self.out_channels * self.pooled_depth * self.pooled_side**2

    def network_kwargs(self) -> dict[str, Any]:
        """Constructor arguments of :class:`CakeLensCNN` / :class:`CakeLensNetwork` (plain data)."""
        values = asdict(self)
        values["hidden"] = list(self.hidden)
        values["mean"], values["std"] = list(self.mean), list(self.std)
        return values

    @property
    def labels(self) -> tuple[str, ...]:
        if self.num_labels == len(LABELS):
            return LABELS
        return tuple(f"label{i}" for i in range(self.num_labels))


# --------------------------------------------------------------------------------------------
# The network (export-safe: plain torch; bundled verbatim into a submission's model.py)
# --------------------------------------------------------------------------------------------


class InstanceNorm3d(nn.Module):
    """``nn.InstanceNorm3d(affine=True)`` without running statistics (same parameters and keys),
    computed as group norm with one channel per group: identical statistics (per sample and
    channel, biased variance), but PyTorch's group-norm kernel is ~3x faster on CPU, ~10x in
    channels_last_3d, than ``instance_norm`` (which reshapes into a batch norm)."""

    def __init__(self, num_features: int, eps: float = 1e-5):
        super().__init__()
        self.num_features = num_features
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.group_norm(x, self.num_features, self.weight, self.bias, self.eps)


class ZeroPadResidual(nn.Module):
    """``main(x) + x`` with ``x`` zero-padded by ``pad`` channels on each side (no projection)."""

    def __init__(self, main: nn.Module, pad: int):
        super().__init__()
        self.main = main
        self.pad = pad

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.main(x) + F.pad(x, (0, 0, 0, 0, 0, 0, self.pad, self.pad))

    def extra_repr(self) -> str:
        return f"pad={self.pad}"


class SpaceTimeBlock(nn.Module):
    """Spatial (1,3,3) then temporal (3,1,1) convolution, each adding ``step`` channels; the
    module tree ``seq.main.{space,time}_{conv,relu,norm}0`` mirrors the original's keys."""

    def __init__(self, in_channels: int, step: int, negative_slope: float, eps: float):
        super().__init__()
        space, time = in_channels + step, in_channels + 2 * step
        # in-place activations overwrite convolution outputs, which nothing else keeps
        self.seq = ZeroPadResidual(
            nn.Sequential(
                OrderedDict(
                    [
                        ("space_conv0", nn.Conv3d(in_channels, space, kernel_size=(1, 3, 3), padding=(0, 1, 1))),
                        ("space_relu0", nn.LeakyReLU(negative_slope, inplace=True)),
                        ("space_norm0", InstanceNorm3d(space, eps)),
                        ("time_conv0", nn.Conv3d(space, time, kernel_size=(3, 1, 1), padding=(1, 0, 0))),
                        ("time_relu0", nn.LeakyReLU(negative_slope, inplace=True)),
                        ("time_norm0", InstanceNorm3d(time, eps)),
                    ]
                )
            ),
            step,
        )
        self.out_channels = time

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.seq(x)


class BlockSequence(nn.Module):
    """Runs the blocks of ``main`` in order (a module of its own for the original state-dict keys)."""

    def __init__(self, main: nn.Sequential):
        super().__init__()
        self.main = main

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.main(x)


class SpaceTimeGroup(nn.Module):
    def __init__(self, width: int, step: int, num_blocks: int, negative_slope: float, eps: float):
        super().__init__()
        blocks = []
        for index in range(num_blocks):
            blocks.append((f"block{index}", SpaceTimeBlock(width + 2 * step * index, step, negative_slope, eps)))
        self.seq = BlockSequence(nn.Sequential(OrderedDict(blocks)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.seq(x)


class ClassifierHead(nn.Module):
    """MaxPool3d -> flatten -> MLP with LeakyReLU between. The last Linear is called ``relu3`` in the
    original."""

    def __init__(self, in_features: int, hidden: Sequence[int], num_labels: int, pool: int, negative_slope: float):
        super().__init__()
        layers = [("maxpool", nn.MaxPool3d(kernel_size=pool)), ("flatten", nn.Flatten(start_dim=1))]
        features = in_features
        for index, size in enumerate(hidden):
            layers.append((f"linear{index}", nn.Linear(features, int(size))))
            layers.append((f"relu{index}", nn.LeakyReLU(negative_slope, inplace=True)))
            features = int(size)
        layers.append((f"relu{len(hidden)}", nn.Linear(features, num_labels)))
        self.seq = nn.Sequential(OrderedDict(layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.seq(x)


class CakeLensCNN(nn.Module):
    """The CakeLens v5 space-time CNN: normalised volumes ``[N, 1, 3 * frameset_size, crop, crop]`` ->
    label logits ``[N, num_labels]``; the defaults are the published model (270,621,137 parameters)."""

    def __init__(
        self,
        width: int = 64,
        channel_step: int = 32,
        num_blocks: int = 6,
        frameset_size: int = 9,
        crop: int = 512,
        hidden: Sequence[int] = (512, 256, 128),
        num_labels: int = 17,
        pool: int = 5,
        negative_slope: float = 0.01,
        norm_eps: float = 1e-5,
    ):
        super().__init__()
        out_channels = width + 2 * channel_step * num_blocks
        # Conv3d(kernel 3, stride 3, no padding), then MaxPool3d(pool) (floor, no padding)
        depth = ((3 * frameset_size - 3) // 3 + 1) // pool
        side = ((crop - 3) // 3 + 1) // pool
        if depth < 1 or side < 1:
            raise ValueError(
                f"input (depth {3 * frameset_size}, side {crop}) is too small for the stride-3 input "
                f"convolution followed by MaxPool3d({pool})"
            )
        self.seq = nn.Sequential(
            OrderedDict(
                [
                    ("input_conv0", nn.Conv3d(1, width, kernel_size=3, stride=3)),
                    ("input_relu0", nn.LeakyReLU(negative_slope, inplace=True)),
                    ("input_norm0", InstanceNorm3d(width, norm_eps)),
                    ("spacetime_conv_group", SpaceTimeGroup(width, channel_step, num_blocks, negative_slope, norm_eps)),
                    (
                        "fully_connected",
                        ClassifierHead(out_channels * depth * side * side, hidden, num_labels, pool, negative_slope),
                    ),
                ]
            )
        )

    def forward(self, volume: torch.Tensor) -> torch.Tensor:
        return self.seq(volume)


def cakelens_framesets(
    video: torch.Tensor, frameset_size: int, crop: int, mean: torch.Tensor, std: torch.Tensor
) -> torch.Tensor:
    """``[B, T, 3, H, W]`` uint8 (or float 0..255) -> ``[B * ceil(T / frameset_size), 1, 3 * size, crop,
    crop]`` normalised volumes (sample-major), framed as the original: top-left crop, centred zero
    padding of small frames and of a short last frameset, before normalising (``mean``/``std``
    ``[1, 1, 3, 1, 1]``); frames x RGB stacked frame-major."""
    batch, frames = video.shape[0], video.shape[1]
    count = int(math.ceil(frames / frameset_size))
    x = video[:, :, :, :crop, :crop].to(torch.float32) / 255.0
    pad_h, pad_w = crop - x.shape[-2], crop - x.shape[-1]
    x = F.pad(x, (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2))
    x = (x - mean.float()) / std.float()
    # Padding frames (and the pixels above) are black: -mean / std once normalised.
    black = ((0.0 - mean.float()) / std.float()).expand(batch, 1, 3, crop, crop)
    sets = []
    for index in range(count):
        clip = x[:, index * frameset_size : (index + 1) * frameset_size]
        missing = frameset_size - clip.shape[1]
        before, after = missing // 2, missing - missing // 2
        clip = torch.cat(
            [black.expand(batch, before, 3, crop, crop), clip, black.expand(batch, after, 3, crop, crop)], dim=1
        )
        sets.append(clip.reshape(batch, 1, 3 * frameset_size, crop, crop))
    return torch.stack(sets, dim=1).flatten(0, 1)


def mean_sigmoid_logits(label_logits: torch.Tensor) -> torch.Tensor:
    """Per-frameset logits of one label ``[B, F]`` -> ``[B, 2]`` logits ``[log(1 - p), log(p)]`` with
    ``p`` the mean of the framesets' sigmoids (the original verdict); softmax gives back ``p``."""
    logits = label_logits.float()
    count = math.log(logits.shape[1])
    log_p = torch.logsumexp(F.logsigmoid(logits), dim=1) - count
    log_not_p = torch.logsumexp(F.logsigmoid(-logits), dim=1) - count
    return torch.stack([log_not_p, log_p], dim=1)


class CakeLensNetwork(DetectorNetwork):
    """Video ``[B, T, 3, H, W]`` (uint8 or float 0..255) -> per-frameset label logits ``[B, F, 17]``
    (features) -> AI_GEN as two-class logits ``[B, 2]`` (head).

    The benchmark delivers ``T = num_frames = 9`` frames resized to ``crop x crop``, i.e. one frameset.
    ``cnn``: a training stand-in with the same weights (:class:`CakeLensV5`); built from the
    arguments otherwise.
    """

    float32_buffers = ("mean", "std")

    def __init__(
        self,
        width: int = 64,
        channel_step: int = 32,
        num_blocks: int = 6,
        frameset_size: int = 9,
        crop: int = 512,
        hidden: list[int] = (512, 256, 128),
        num_labels: int = 17,
        pool: int = 5,
        negative_slope: float = 0.01,
        norm_eps: float = 1e-5,
        mean: Sequence[float] = (0.4016435146331787, 0.380405455827713, 0.3688599765300751),
        std: Sequence[float] = (0.28864356875419617, 0.2775335907936096, 0.27996501326560974),
        ai_gen_index: int = 0,
        num_classes: int = 2,
        cnn: nn.Module = None,
    ):
        super().__init__()
        if num_classes != 2:
            raise ValueError(f"CakeLens is a binary detector (AI_GEN vs real), got num_classes {num_classes}")
        self.frameset_size = frameset_size
        self.crop = crop
        self.num_labels = num_labels
        self.ai_gen_index = ai_gen_index
        if cnn is None:
            cnn = CakeLensCNN(
                width,
                channel_step,
                num_blocks,
                frameset_size,
                crop,
                list(hidden),
                num_labels,
                pool,
                negative_slope,
                norm_eps,
            )
        self.cnn = cnn
        self.register_buffer("mean", torch.tensor([float(m) for m in mean]).view(1, 1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor([float(s) for s in std]).view(1, 1, 3, 1, 1), persistent=False)

    def framesets(self, video: torch.Tensor) -> torch.Tensor:
        return cakelens_framesets(video, self.frameset_size, self.crop, self.mean, self.std)

    def forward_features(self, video: torch.Tensor) -> torch.Tensor:
        volume = self.framesets(video).to(self.cnn.seq.input_conv0.weight.dtype)
        return self.cnn(volume).view(video.shape[0], -1, self.num_labels)

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return mean_sigmoid_logits(features[..., self.ai_gen_index])


# --------------------------------------------------------------------------------------------
# The memory-lean training forward
# --------------------------------------------------------------------------------------------


def _memory_format(x: Tensor) -> torch.memory_format:
    """channels_last_3d for tensors laid out that way (as ATen's group norm keeps them), else NCDHW."""
    if x.dim() == 5 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last_3d):
        return torch.channels_last_3d
    return torch.contiguous_format


class _LeakyReLUInstanceNorm(torch.autograd.Function):
    """``group_norm(leaky_relu(x), groups=C)`` storing one activation tensor and one gradient.

    Autograd on the two ops already shares the activation (the in-place LeakyReLU's result is the
    norm's saved input), but its backward allocates the norm's input gradient and then a second
    tensor for the LeakyReLU gradient. Here the LeakyReLU gradient is written into the norm's
    gradient in place. Same ATen kernels as autograd's formulas, so results are bit-identical.

    With ``inplace`` (the network's ``LeakyReLU(inplace=True)``) the activation overwrites ``x``, a
    convolution's output that nothing saves (a convolution's backward needs its input and weight
    only), so the pre-activation and the activation never coexist. Autograd's version counter
    still guards it: had anything saved ``x``, its backward would raise instead of reading garbage.

    Under mixed precision (a bfloat16/float16 ``x``, float32 parameters) the norm runs in the
    parameters' dtype, as autocast runs ``group_norm`` on CUDA, whose kernel cannot mix dtypes; the
    output is float32 and the low-precision activation is what is saved (re-cast in backward).
    """

    @staticmethod
    def forward(ctx: Any, x: Tensor, weight: Tensor, bias: Tensor, slope: float, eps: float, inplace: bool) -> Tensor:
        activation = F.leaky_relu(x, slope, inplace=inplace)
        activation = activation.contiguous(memory_format=_memory_format(activation))
        n, c = activation.shape[:2]
        hxw = activation.numel() // (n * c) if n * c else 0
        out, mean, rstd = torch.native_group_norm(activation.to(weight.dtype), weight, bias, n, c, hxw, c, eps)
        ctx.save_for_backward(activation, weight, mean, rstd)
        ctx.slope, ctx.sizes = slope, (n, c, hxw)
        return out

    @staticmethod
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor | None, ...]:
        activation, weight, mean, rstd = ctx.saved_tensors
        n, c, hxw = ctx.sizes
        activation = activation.to(weight.dtype)  # a no-op unless mixed precision
        grad_out = grad_out.to(weight.dtype).contiguous(memory_format=_memory_format(activation))
        mask = [ctx.needs_input_grad[0], ctx.needs_input_grad[1], ctx.needs_input_grad[2]]
        grad_x, grad_weight, grad_bias = torch.ops.aten.native_group_norm_backward(
            grad_out, activation, mean, rstd, weight, n, c, hxw, c, mask
        )
        if grad_x is not None:  # LeakyReLU backward in place (slope > 0: sign(result) = sign(input))
            torch.ops.aten.leaky_relu_backward.grad_input(grad_x, activation, ctx.slope, True, grad_input=grad_x)
        # autograd casts grad_x back to the input's dtype under mixed precision
        return grad_x, grad_weight, grad_bias, None, None, None


def leaky_relu_instance_norm(x: Tensor, relu: nn.LeakyReLU, norm: InstanceNorm3d) -> Tensor:
    """``norm(relu(x))`` with the memory-lean fused backward when gradients are recorded."""
    if torch.is_grad_enabled() and relu.negative_slope > 0:
        return _LeakyReLUInstanceNorm.apply(x, norm.weight, norm.bias, relu.negative_slope, norm.eps, relu.inplace)
    return norm(relu(x))


class _AddIntoChannels(torch.autograd.Function):
    """``out[:, offset:offset + C] += x`` in place, whose backward hands ``x`` a view of the gradient.

    Autograd's own in-place slice add (``CopySlices``) clones the incoming gradient and then the
    slice for ``x``: two block-sized copies held while the block is differentiated.
    """

    @staticmethod
    def forward(ctx: Any, out: Tensor, x: Tensor, offset: int) -> Tensor:
        ctx.mark_dirty(out)
        ctx.span = (offset, x.shape[1])
        out.narrow(1, offset, x.shape[1]).add_(x)
        return out

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        offset, channels = ctx.span
        return grad, grad.narrow(1, offset, channels), None


def _convolution_input(x: Tensor) -> Tensor:
    """``x`` as the next convolution reads it: in autocast's dtype when autocast is on (exact, since
    autocast casts it on the way in anyway; under bf16 a checkpoint stores half the bytes)."""
    device = x.device.type
    if torch.is_autocast_enabled(device) and x.is_floating_point():
        return x.to(torch.get_autocast_dtype(device))
    return x


class CakeLensV5(CakeLensCNN):
    """:class:`CakeLensCNN` of a :class:`CakeLensConfig` with a memory-lean ``forward`` (the only
    override, so weights, keys and outputs are the exported network's).

    Args:
        config: network size and framing; the default is the published model.
        gradient_checkpointing: recompute activations in backward: one checkpoint for the input
            stem and one per space-time block's convolutions, their two halves checkpointed again
            inside (the residual adds stay outside: they need nothing stored).
        channels_last_3d: keep weights and activations in ``torch.channels_last_3d`` (faster on
            CPU with oneDNN and on tensor-core GPUs); results are the same up to rounding.
    """

    def __init__(
        self,
        config: CakeLensConfig | None = None,
        *,
        gradient_checkpointing: bool = False,
        channels_last_3d: bool = False,
    ) -> None:
        config = config or CakeLensConfig()
        kwargs = config.network_kwargs()
        kwargs.pop("mean"), kwargs.pop("std")
        super().__init__(**kwargs)
        self.config = config
        self.labels = config.labels
        self.gradient_checkpointing = gradient_checkpointing
        self.channels_last_3d = False
        if channels_last_3d:
            self.set_channels_last_3d(True)

    def set_channels_last_3d(self, enabled: bool = True) -> CakeLensV5:
        """Switch the memory format of the convolution weights and of the input in ``forward``."""
        self.channels_last_3d = enabled
        # Module.to(memory_format=...) converts the 5-D (convolution) weights only.
        return self.to(memory_format=torch.channels_last_3d if enabled else torch.contiguous_format)

    def forward(self, volume: Tensor) -> Tensor:
        if volume.ndim != 5 or volume.shape[1] != 1:
            raise ValueError(f"expected a volume [N, 1, depth, H, W], got {tuple(volume.shape)}")
        if self.channels_last_3d:
            volume = volume.contiguous(memory_format=torch.channels_last_3d)
        recompute = self.gradient_checkpointing and torch.is_grad_enabled()
        seq = self.seq
        if recompute:  # the stem's activation (64 channels on the largest map) is not kept either
            x = checkpoint(self._stem, volume, use_reentrant=False, preserve_rng_state=False)
        else:
            x = self._stem(volume)
        for block in seq.spacetime_conv_group.seq.main:
            x = self._block(block.seq, x, recompute)
        return seq.fully_connected(x)

    def _stem(self, volume: Tensor) -> Tensor:
        seq = self.seq
        return leaky_relu_instance_norm(seq.input_conv0(volume), seq.input_relu0, seq.input_norm0)

    @staticmethod
    def _space(main: nn.Module, x: Tensor) -> Tensor:
        return leaky_relu_instance_norm(main.space_conv0(x), main.space_relu0, main.space_norm0)

    @staticmethod
    def _time(main: nn.Module, x: Tensor) -> Tensor:
        return leaky_relu_instance_norm(main.time_conv0(x), main.time_relu0, main.time_norm0)

    def _convolutions(self, main: nn.Module, x: Tensor) -> Tensor:
        """The block's two halves; when recomputed in backward, only the spatial half's output is
        kept while the temporal half is differentiated, not every activation of the block at once."""
        if self.gradient_checkpointing and torch.is_grad_enabled():
            x = checkpoint(self._space, main, x, use_reentrant=False, preserve_rng_state=False)
            return checkpoint(self._time, main, _convolution_input(x), use_reentrant=False, preserve_rng_state=False)
        return self._time(main, self._space(main, x))

    def _block(self, residual: ZeroPadResidual, x: Tensor, recompute: bool) -> Tensor:
        if recompute:
            # No dropout or other randomness in the network: nothing to replay. Recomputing the
            # block needs x only as its convolution reads it (see _convolution_input).
            out = checkpoint(
                self._convolutions, residual.main, _convolution_input(x), use_reentrant=False, preserve_rng_state=False
            )
        else:
            out = self._convolutions(residual.main, x)
        # Adding into the channel slice equals adding the zero-padded input, without building it.
        # In place is safe for autograd: the norm that produced ``out`` does not save its output.
        if torch.is_grad_enabled():
            return _AddIntoChannels.apply(out, x, residual.pad)
        out[:, residual.pad : residual.pad + x.shape[1]] += x
        return out


# --------------------------------------------------------------------------------------------
# Checkpoints
# --------------------------------------------------------------------------------------------


def describe_size(config: CakeLensConfig) -> str:
    """``CakeLensV5 (published size)`` or the fields that differ from it, for messages."""
    default = CakeLensConfig()
    changed = [
        f"{f.name}={getattr(config, f.name)}"
        for f in fields(config)
        if f.name not in ("mean", "std") and getattr(config, f.name) != getattr(default, f.name)
    ]
    return f"CakeLensV5 ({', '.join(changed) if changed else 'published size'})"


def _read_state_dict(source: str | Path | Mapping[str, Any]) -> Mapping[str, Tensor]:
    if isinstance(source, Mapping):
        state = source
        origin = "state dict"
    else:
        path = Path(source)
        origin = str(path)
        if not path.is_file():
            raise CheckpointError(f"{path}: no such checkpoint file")
        try:
            if path.suffix == ".safetensors":
                from safetensors.torch import load_file

                state = load_file(str(path), device="cpu")
            else:
                state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:  # corrupt, truncated or not a checkpoint at all
            raise CheckpointError(
                f"{path}: cannot be read as a checkpoint: {unreadable_weights_reason(path, error)}"
            ) from error
    if isinstance(state, Mapping) and "model_state_dict" in state:
        state = state["model_state_dict"]
    if not isinstance(state, Mapping) or not all(isinstance(v, Tensor) for v in state.values()):
        raise CheckpointError(f"{origin}: expected a state dict of tensors or {{'model_state_dict': ...}}")
    return state


def load_cakelens_checkpoint(
    source: str | Path | Mapping[str, Any], model: CakeLensV5 | None = None, config: CakeLensConfig | None = None
) -> CakeLensV5:
    """Load original CakeLens weights strictly into ``model`` (else a new model of ``config``, by
    default the published size, built after the file is read: a bad file fails at once).

    ``source`` is a ``.pth``/``.pt`` file (``{"model_state_dict": ...}`` or a bare state dict, read
    with ``weights_only=True``), a ``.safetensors`` file, or an in-memory state dict. Raises
    :class:`CheckpointError` with the counts and the first few missing, unexpected and wrong-shape keys.
    """
    state = _read_state_dict(source)
    model = model if model is not None else CakeLensV5(config)
    expected = model.state_dict()
    mismatch = state_dict_mismatch(expected, state)
    if mismatch:
        origin = "state dict" if isinstance(source, Mapping) else str(source)
        raise CheckpointError(f"{origin} does not match {describe_size(model.config)}: {mismatch}")
    model.load_state_dict(state, strict=True)  # copies into the weights: memory format is kept
    return model


def convert_checkpoint_to_safetensors(checkpoint: str | Path, out: str | Path) -> Path:
    """Write the state dict of an original ``.pth`` checkpoint as ``.safetensors`` (atomically)."""
    from safetensors.torch import save_file

    state = {key: value.contiguous() for key, value in _read_state_dict(checkpoint).items()}
    out = Path(out)
    with atomic_path(out) as tmp:
        save_file(state, str(tmp), metadata={"format": "pt", "model": "cakelens-v5"})
    return out


# --------------------------------------------------------------------------------------------
# Framing
# --------------------------------------------------------------------------------------------


def _check_frames(frames: Tensor, what: str) -> None:
    if frames.ndim != 4 or frames.shape[1] != 3:
        raise ValueError(f"{what} must be [T, 3, H, W], got {tuple(frames.shape)}")
    if frames.dtype != torch.uint8:
        raise ValueError(f"{what} must be uint8 (0..255), got {frames.dtype}")
    if frames.shape[0] == 0:
        raise ValueError(f"{what} has no frames")


def _framesets(video: Tensor, config: CakeLensConfig) -> Tensor:
    mean = torch.tensor(config.mean).view(1, 1, 3, 1, 1)
    std = torch.tensor(config.std).view(1, 1, 3, 1, 1)
    return cakelens_framesets(video, config.frameset_size, config.crop, mean, std)


def frameset_from_clip(clip: Tensor, config: CakeLensConfig | None = None) -> Tensor:
    """One frameset ``uint8 [t<=9, 3, H, W] -> float [1, 27, crop, crop]`` as in the original.

    Top-left crop; frames smaller than ``crop`` and clips shorter than ``frameset_size`` are
    zero-padded, centred (the odd pixel/frame goes to the right/bottom/end), before normalising.
    The depth axis is frame-major: index ``3 * frame + rgb_channel``.
    """
    config = config or CakeLensConfig()
    _check_frames(clip, "clip")
    if clip.shape[0] > config.frameset_size:
        raise ValueError(f"clip has {clip.shape[0]} frames, a frameset holds {config.frameset_size}")
    return _framesets(clip[None], config)[0]


def _num_framesets(num_frames: int, config: CakeLensConfig) -> int:
    return math.ceil(num_frames / config.frameset_size)


def _check_batch_size(batch_size: int) -> None:
    # A zero step would make range() raise an unrelated error, a negative one yield no batch at all.
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1 framesets, got {batch_size}")


def framesets_from_frames(frames: Tensor, config: CakeLensConfig | None = None) -> Tensor:
    """All non-overlapping framesets of a video: ``uint8 [T, 3, H, W] -> [ceil(T/9), 1, 27, S, S]``."""
    config = config or CakeLensConfig()
    _check_frames(frames, "frames")
    return _framesets(frames[None], config)


def iter_frameset_batches(frames: Tensor, batch_size: int, config: CakeLensConfig | None = None) -> Iterator[Tensor]:
    """Yield ``[<=batch_size, 1, 27, S, S]`` batches of framesets, building only one batch at a time
    (a full-size frameset is 28 MB of float32, so a long video's volumes do not fit in memory)."""
    config = config or CakeLensConfig()
    _check_frames(frames, "frames")
    _check_batch_size(batch_size)
    span = batch_size * config.frameset_size
    for start in range(0, frames.shape[0], span):
        yield framesets_from_frames(frames[start : start + span], config)


def video_volume_from_benchmark_input(x: Tensor, config: CakeLensConfig | None = None) -> Tensor:
    """Benchmark video batch ``uint8 [B, T, 3, H, W] -> [B * ceil(T/9), 1, 27, S, S]`` (sample-major).

    How a submission feeds the original network: ``model_config`` declares ``num_frames: 9`` and no
    ``frame_rate``, so each sample is the first 9 consecutive frames, i.e. exactly one original
    frameset; its ``resize`` is ``[crop, crop]`` (512), so the top-left crop covers the whole
    delivered frame at the scale the original model was trained on (it never resized; the
    benchmark always does). Each sample's verdict is the mean over its framesets of
    ``sigmoid(logits).view(B, -1, num_labels)``, as in :func:`predict_video`.
    """
    config = config or CakeLensConfig()
    if x.ndim != 5:
        raise ValueError(f"expected a video batch [B, T, 3, H, W], got {tuple(x.shape)}")
    return _framesets(x, config)


# --------------------------------------------------------------------------------------------
# Whole-video verdict
# --------------------------------------------------------------------------------------------


def _frameset_probabilities(
    model: CakeLensV5, batches: Iterator[Tensor], total: int, device: torch.device | str, progress: bool
) -> Tensor:
    """Per-frameset sigmoid probabilities ``[N, num_labels]`` (float32, on the CPU)."""
    probabilities = []
    model = model.to(device).eval()
    with torch.inference_mode(), tqdm(total=total, unit="frameset", disable=not progress) as bar:
        for volume in batches:
            logits = model(volume.to(device, non_blocking=True))
            probabilities.append(logits.float().sigmoid().cpu())
            bar.update(volume.shape[0])
    return torch.cat(probabilities) if probabilities else torch.zeros(0, model.config.num_labels)


def _result(model: CakeLensV5, frame_count: int, per_frameset: Tensor) -> dict[str, Any]:
    mean = per_frameset.mean(dim=0)  # the original's verdict: mean of per-frameset probabilities
    return {
        "frame_count": frame_count,
        "num_framesets": per_frameset.shape[0],
        "probabilities": {label: float(p) for label, p in zip(model.labels, mean)},
        "frameset_probabilities": per_frameset,
    }


def predict_video(
    model: CakeLensV5,
    frames: Tensor,
    batch_size: int = 4,
    device: torch.device | str = "cpu",
    progress: bool = True,
) -> dict[str, Any]:
    """Whole-video verdict from decoded frames ``uint8 [T, 3, H, W]``.

    Returns ``frame_count``, ``num_framesets``, ``probabilities`` (``{label: p}``, the mean over
    framesets of the per-label sigmoid) and ``frameset_probabilities`` (``[N, num_labels]``).
    """
    config = model.config
    _check_frames(frames, "frames")
    _check_batch_size(batch_size)
    total = _num_framesets(frames.shape[0], config)
    batches = iter_frameset_batches(frames, batch_size, config)
    per_frameset = _frameset_probabilities(model, batches, total, device, progress)
    return _result(model, frames.shape[0], per_frameset)


def predict_video_file(
    model: CakeLensV5,
    path: str | Path,
    batch_size: int = 4,
    device: torch.device | str = "cpu",
    progress: bool = True,
) -> dict[str, Any]:
    """:func:`predict_video` on a video file, decoding it once, one batch of framesets at a time.

    Raises :class:`~detectors.errors.MediaError` for unreadable or empty videos.
    """
    from detectors.video.io import iter_frame_chunks, probe_video

    config = model.config
    _check_batch_size(batch_size)
    num_frames = probe_video(path).num_frames  # the header's count, for the progress bar
    if num_frames < 1:
        raise MediaError(path, "video has no frames")
    decoded = 0

    def batches() -> Iterator[Tensor]:
        nonlocal decoded
        # chunks are whole framesets, so only the last one can be short (and is centred-padded)
        for frames in iter_frame_chunks(path, batch_size * config.frameset_size):
            decoded += frames.shape[0]
            yield framesets_from_frames(frames, config)

    total = _num_framesets(num_frames, config)
    per_frameset = _frameset_probabilities(model, batches(), total, device, progress)
    if decoded < 1:
        raise MediaError(path, "video has no frames")
    return _result(model, decoded, per_frameset)
