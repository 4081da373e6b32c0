"""Why a video detector called a clip fake: each frame's contribution, and maps of the top frames.

- **Contribution of frame t**: the drop in the clip's fake log-odds when frame t is replaced by its
  predecessor (frame 1 for frame 0), with Captum's ``FeatureAblation`` (one forward pass per frame,
  the frame as one feature). A repeated frame is an input the model knows: the benchmark pads short
  clips exactly so. Positive: the frame pushes the clip towards "fake".
- **Maps of the top frames** (highest contributions): the image methods of
  :mod:`detectors.explain.methods`. When the network runs its ViT or CNN frame by frame, one
  backward pass gives every frame's Grad-CAM map; otherwise (spectral features, 3-D convolutions)
  each top frame is occluded inside the clip.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from detectors.explain.methods import (
    blurred,
    conv_gradcam,
    occlusion_window,
    resolve_method,
    score_function,
    vit_gradcam,
)


def neighbour_baseline(clip: torch.Tensor) -> torch.Tensor:
    """``[1, T, ...]`` -> the clip with every frame replaced by its predecessor (frame 0 by frame 1)."""
    if clip.shape[1] < 2:
        return clip.clone()
    index = torch.arange(clip.shape[1]) - 1
    index[0] = 1
    return clip[:, index]


def frame_contributions(model: nn.Module, clip: torch.Tensor, progress: bool = False) -> torch.Tensor:
    """``[T]`` contributions of the frames of ``clip [T, 3, H, W]`` (see the module docstring)."""
    from captum.attr import FeatureAblation

    x = clip[None].detach().float()
    frames = x.shape[1]
    mask = torch.arange(frames).view(1, frames, 1, 1, 1).expand_as(x)
    attribution = FeatureAblation(score_function(model)).attribute(
        x,
        baselines=neighbour_baseline(x),
        feature_mask=mask,
        perturbations_per_eval=min(frames, 4),
        show_progress=progress,
    )
    return attribution[0, :, 0, 0, 0].float()


def frame_maps(
    model: nn.Module,
    clip: torch.Tensor,
    frames: list[int],
    method: str = "auto",
    *,
    window: int | None = None,
    progress: bool = False,
) -> tuple[torch.Tensor, dict[str, Any]]:
    """Maps ``[len(frames), H, W]`` of the chosen frames of ``clip [T, 3, H, W]``."""
    from captum.attr import Occlusion

    score = score_function(model)
    size = (int(clip.shape[-2]), int(clip.shape[-1]))
    count = clip.shape[0]
    chosen, layer = resolve_method(model, method)
    if chosen in ("vit_gradcam", "gradcam"):
        if chosen == "vit_gradcam":
            maps, info = vit_gradcam(score, layer, clip[None], size), {"method": chosen, "layer": layer.block_name}
        else:
            maps, info = conv_gradcam(score, layer[1], clip[None], size), {"method": chosen, "layer": layer[0]}
        if maps.shape[0] == count:  # the layer ran frame by frame
            return maps[frames], info
        if method != "auto":
            raise ValueError(
                f"{chosen} needs a network that runs its layers frame by frame; this one's "
                f"{info['layer']} sees {maps.shape[0]} row(s) for {count} frames: use occlusion"
            )
    default_window, default_stride = occlusion_window(size)
    window = window or default_window
    stride = max(1, window // 2) if window != default_window else default_stride
    base = clip[None].detach().float()
    out = []
    for t in frames:

        def frame_score(images: torch.Tensor, t: int = t) -> torch.Tensor:
            clips = base.expand(images.shape[0], *base.shape[1:]).clone()
            clips[:, t] = images
            return score(clips)

        x = base[:, t]
        attribution = Occlusion(frame_score).attribute(
            x,
            sliding_window_shapes=(3, window, window),
            strides=(3, stride, stride),
            baselines=blurred(x),
            perturbations_per_eval=8,
            show_progress=progress,
        )
        out.append(attribution[0].float().mean(dim=0))
    info = {"method": "occlusion", "window": window, "stride": stride, "baseline": "gaussian blur sigma 2"}
    return torch.stack(out), info
