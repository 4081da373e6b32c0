"""Attribution maps over image pixels, for any detector network (in-library or exported).

Every method explains the same number: the detector's fake-vs-real log-odds (:func:`fake_log_odds`;
the calibrator only rescales it, so it does not move a map). Inputs are what the benchmark feeds the
model (uint8 media as float 0..255; the networks normalise inside).

- ``gradcam`` (CNNs): Grad-CAM (Selvaraju et al., ICCV 2017) on the last ``nn.Conv2d`` with
  Captum's ``LayerGradCam``, upsampled with ``LayerAttribution.interpolate``.
- ``vit_gradcam`` (ViT backbones: DINOv2/DINOv3 in transformers, timm or the exported plain-torch
  ViT): Grad-CAM with a token reshape, on the patch tokens entering the last transformer block, in
  its HiResCAM form (Draelos & Carin, 2020, https://arxiv.org/abs/2011.08891): the relevance of a
  token is ``ReLU(sum_c grad_c * token_c)``, gradient and activation multiplied per token before
  summing over channels, instead of Grad-CAM's gradients averaged over all tokens. On a tiny DINOv2
  detector trained to find a pasted patch (``tests/test_explain.py``) the averaged weights put the
  peak on the patch for 0 of 10 fakes and the per-token product for 10 of 10: every token carries a
  large shared component (position, mean embedding) that the averaged weights read everywhere.
  Hooks, not Captum's layer methods, because transformers calls some blocks with keyword inputs;
  the grid comes from the patch embedding's own output, so networks that resize their input inside
  (ReStraV) get the right grid too.
- ``occlusion`` (the model-agnostic fallback: spectral detectors, anything else): Captum's
  ``Occlusion``; a window is replaced by the same window of the image blurred (Gaussian, sigma 2
  px), so occluding removes the fine detail where generator traces live without drawing new edges
  that a forensic detector would react to. The map is the drop in log-odds when a window loses its
  detail, averaged over the windows covering each pixel.

Maps are ``[rows, H, W]``: one per image, or per frame when a video network runs its layers frame
by frame (``rows = B * T``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.transforms.v2 import functional as TF

ScoreFunction = Callable[[torch.Tensor], torch.Tensor]  # model input batch -> fake log-odds [B]
IMAGE_METHODS = ("auto", "gradcam", "vit_gradcam", "occlusion")
BLUR_SIGMA = 2.0


def fake_log_odds(logits: torch.Tensor) -> torch.Tensor:
    """``log p(fake) - log p(real)`` per row, as the benchmark reads the classes: one logit is the
    log-odds itself, two classes ``z1 - z0``, three ``logsumexp(z1, z2) - z0`` (synthetic or
    semisynthetic against real)."""
    logits = logits.float()
    if logits.dim() == 1:
        return logits
    if logits.shape[-1] == 1:
        return logits[:, 0]
    return torch.logsumexp(logits[:, 1:], dim=-1) - logits[:, 0]


def score_function(model: nn.Module) -> ScoreFunction:
    """The model's fake log-odds as a function of its input (gradients flow to the input)."""

    def score(x: torch.Tensor) -> torch.Tensor:
        output = model(x)
        if not torch.is_tensor(output):  # the benchmark also accepts .logits / dict outputs
            from export.benchmark_loader import extract_logits

            output = extract_logits(output)
        return fake_log_odds(output)

    return score


# --------------------------------------------------------------------------- finding layers
@dataclass
class VitLayers:
    """The layers ViT Grad-CAM hooks: the patch embedding and the last transformer block."""

    patch_embed: nn.Conv2d
    block: nn.Module
    block_name: str


def find_vit(model: nn.Module) -> VitLayers | None:
    """A ViT inside ``model``: a patch embedding (``nn.Conv2d`` with kernel == stride > 1) and the
    ``ModuleList`` of blocks (named ``blocks``, ``layer`` or ``layers``) sharing the longest name
    prefix with it; ``None`` when there is none."""
    modules = dict(model.named_modules())
    embeds = [
        (name, m)
        for name, m in modules.items()
        if isinstance(m, nn.Conv2d) and m.kernel_size == m.stride and m.kernel_size[0] > 1
    ]
    lists = [
        (name, m)
        for name, m in modules.items()
        if isinstance(m, nn.ModuleList) and len(m) > 0 and name.rsplit(".", 1)[-1] in ("blocks", "layer", "layers")
    ]
    if not embeds or not lists:
        return None
    embed_name, embed = embeds[-1]

    def shared(name: str) -> int:
        return len(_common_prefix(name.split("."), embed_name.split(".")))

    list_name, blocks = max(lists, key=lambda item: (shared(item[0]), len(item[1])))
    return VitLayers(embed, blocks[-1], f"{list_name}.{len(blocks) - 1}")


def _common_prefix(a: list[str], b: list[str]) -> list[str]:
    out = []
    for x, y in zip(a, b):
        if x != y:
            break
        out.append(x)
    return out


def find_last_conv(model: nn.Module) -> tuple[str, nn.Conv2d] | None:
    """The last ``nn.Conv2d`` of ``model`` that is not a ViT patch embedding."""
    found = None
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d) and not (module.kernel_size == module.stride and module.kernel_size[0] > 1):
            found = (name, module)
    return found


def resolve_method(model: nn.Module, method: str = "auto") -> tuple[str, object]:
    """``(method, layer)``: ``auto`` picks ``vit_gradcam`` for ViTs, ``gradcam`` for CNNs, else
    ``occlusion``. Asking for a method the network cannot use is a ``ValueError`` saying why."""
    if method not in IMAGE_METHODS:
        raise ValueError(f"unknown image method {method!r}; use one of {', '.join(IMAGE_METHODS)}")
    vit = find_vit(model) if method in ("auto", "vit_gradcam") else None
    if vit is not None:
        return "vit_gradcam", vit
    if method == "vit_gradcam":
        raise ValueError(
            "vit_gradcam needs a ViT (a patch embedding and a list of transformer blocks); this "
            "network has none: use gradcam or occlusion"
        )
    conv = find_last_conv(model) if method in ("auto", "gradcam") else None
    if conv is not None:
        return "gradcam", conv
    if method == "gradcam":
        raise ValueError("gradcam needs a convolutional layer; this network has none: use occlusion")
    return "occlusion", None


# --------------------------------------------------------------------------- methods
def vit_gradcam(score: ScoreFunction, layers: VitLayers, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Token Grad-CAM (HiResCAM form) maps ``[rows, *size]`` (non-negative) of the model input ``x``."""
    captured: dict[str, torch.Tensor] = {}

    def on_block(module: nn.Module, args: tuple, kwargs: dict) -> None:
        tokens = args[0] if args else kwargs.get("hidden_states", kwargs.get("x"))
        captured["tokens"] = tokens

    def on_embed(module: nn.Module, args: tuple, output: torch.Tensor) -> None:
        captured["grid"] = torch.tensor(output.shape[-2:])

    handles = [
        layers.block.register_forward_pre_hook(on_block, with_kwargs=True),
        layers.patch_embed.register_forward_hook(on_embed),
    ]
    try:
        x = x.detach().float().requires_grad_(True)
        value = score(x)
        tokens = captured["tokens"]
        (gradient,) = torch.autograd.grad(value.sum(), tokens)
    finally:
        for handle in handles:
            handle.remove()
    gh, gw = (int(v) for v in captured["grid"])
    prefix = tokens.shape[1] - gh * gw
    if prefix < 0:
        raise ValueError(f"the hooked block sees {tokens.shape[1]} tokens, fewer than the {gh}x{gw} patch grid")
    patches, grads = tokens[:, prefix:].detach().float(), gradient[:, prefix:].float()
    cam = F.relu((patches * grads).sum(dim=-1)).reshape(-1, 1, gh, gw)
    return F.interpolate(cam, size=size, mode="bilinear", align_corners=False)[:, 0]


def conv_gradcam(score: ScoreFunction, layer: nn.Module, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Grad-CAM maps ``[rows, *size]`` (non-negative) on ``layer`` with Captum's ``LayerGradCam``."""
    from captum.attr import LayerAttribution, LayerGradCam

    x = x.detach().float().requires_grad_(True)
    attribution = LayerGradCam(score, layer).attribute(x, relu_attributions=True)
    if attribution.dim() != 4:
        raise ValueError(f"gradcam needs 2-D feature maps, got a layer output of {attribution.dim() - 1} dims")
    return LayerAttribution.interpolate(attribution.detach().float(), size, interpolate_mode="bilinear")[:, 0]


def blurred(images: torch.Tensor) -> torch.Tensor:
    """The occlusion baseline: each image blurred (Gaussian, sigma :data:`BLUR_SIGMA` px)."""
    kernel = 2 * math.ceil(3 * BLUR_SIGMA) + 1
    flat = images.reshape(-1, *images.shape[-3:]).float()
    return TF.gaussian_blur(flat, [kernel, kernel], [BLUR_SIGMA, BLUR_SIGMA]).reshape(images.shape)


def occlusion_window(size: tuple[int, int]) -> tuple[int, int]:
    """Default (window, stride): an eighth of the shorter side (at least 4 px), half-window steps."""
    window = max(4, min(size) // 8)
    return window, max(1, window // 2)


def occlusion(
    score: ScoreFunction, image: torch.Tensor, window: int, stride: int, progress: bool = False
) -> torch.Tensor:
    """Occlusion map ``[H, W]`` of one image ``[3, H, W]`` for ``score`` of a batch of such images:
    the drop in log-odds when a window is replaced by the blurred image (Captum ``Occlusion``)."""
    from captum.attr import Occlusion

    x = image[None].detach().float()
    attribution = Occlusion(score).attribute(
        x,
        sliding_window_shapes=(x.shape[1], window, window),
        strides=(x.shape[1], stride, stride),
        baselines=blurred(x),
        perturbations_per_eval=16,
        show_progress=progress,
    )
    return attribution[0].float().mean(dim=0)


def image_maps(
    model: nn.Module, x: torch.Tensor, method: str = "auto", *, window: int | None = None, progress: bool = False
) -> tuple[torch.Tensor, dict[str, object]]:
    """Maps ``[N, H, W]`` of a batch of images ``x [N, 3, H, W]`` and what made them."""
    score = score_function(model)
    size = (int(x.shape[-2]), int(x.shape[-1]))
    chosen, layer = resolve_method(model, method)
    if chosen == "vit_gradcam":
        return vit_gradcam(score, layer, x, size), {"method": chosen, "layer": layer.block_name}
    if chosen == "gradcam":
        return conv_gradcam(score, layer[1], x, size), {"method": chosen, "layer": layer[0]}
    default_window, default_stride = occlusion_window(size)
    window = window or default_window
    stride = max(1, window // 2) if window != default_window else default_stride
    maps = torch.stack([occlusion(score, image, window, stride, progress) for image in x])
    return maps, {
        "method": "occlusion",
        "window": window,
        "stride": stride,
        "baseline": f"gaussian blur sigma {BLUR_SIGMA}",
    }
