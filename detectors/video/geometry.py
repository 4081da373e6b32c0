"""ReStraV's trajectory geometry: how straight a video's path through embedding space is.

Natural videos trace straighter, more evenly paced paths in a self-supervised encoder's embedding
space than generated ones. For per-frame embeddings ``z_1..z_T``:

- steps ``D_t = z_{t+1} - z_t`` (T-1 of them) and distances ``d_t = ||D_t||_2``;
- curvature ``theta_t = degrees(arccos(clamp(cos(D_t, D_{t+1}), -1, 1)))`` (T-2 of them), with the
  cosine computed as in ``torch.nn.functional.cosine_similarity`` (eps 1e-8, as the official code
  does): each step is divided by ``max(||D_t||, 1e-8)``, so a zero step gives cosine 0 (90 degrees).

The 21 features, in order: ``d_1..d_7``, ``theta_1..theta_6``, then mean, min, max and population
variance of all ``d``, then the same four statistics of all ``theta``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

NUM_FEATURES = 21
MIN_FRAMES = 8  # 7 distances need 8 frames; 6 angles need 7 steps, i.e. 8 frames as well
COSINE_EPS = 1e-8  # torch.nn.functional.cosine_similarity's default, used by the official code

FEATURE_NAMES: tuple[str, ...] = (
    *(f"d_{i}" for i in range(1, 8)),
    *(f"theta_{i}" for i in range(1, 7)),
    "d_mean", "d_min", "d_max", "d_var",
    "theta_mean", "theta_min", "theta_max", "theta_var",
)


def step_distances_and_angles(Z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Distances ``[B, T-1]`` between consecutive embeddings and turning angles ``[B, T-2]`` (degrees)."""
    if Z.dim() != 3:
        raise ValueError(f"expected embeddings [B, T, D], got shape {tuple(Z.shape)}")
    steps = Z[:, 1:] - Z[:, :-1]
    distances = torch.linalg.vector_norm(steps, dim=-1)
    cosine = F.cosine_similarity(steps[:, :-1], steps[:, 1:], dim=-1, eps=COSINE_EPS)
    angles = torch.rad2deg(torch.acos(cosine.clamp(-1.0, 1.0)))
    return distances, angles


def _four_stats(x: torch.Tensor) -> torch.Tensor:
    return torch.stack([x.mean(-1), x.amin(-1), x.amax(-1), x.var(-1, unbiased=False)], dim=-1)


def trajectory_features(Z: torch.Tensor) -> torch.Tensor:
    """The 21 ReStraV features of trajectories ``Z [B, T, D]`` (T >= 8), as ``[B, 21]`` in Z's dtype.

    Embeddings of any shape per frame should be flattened to ``D`` first (the official embedding is
    the CLS token concatenated with all patch tokens).
    """
    if Z.dim() != 3:
        raise ValueError(f"expected embeddings [B, T, D], got shape {tuple(Z.shape)}")
    if Z.shape[1] < MIN_FRAMES:
        raise ValueError(
            f"trajectory_features needs at least {MIN_FRAMES} frames per video, got T={Z.shape[1]}: "
            "the features include the first 7 step distances (8 frames) and the first 6 turning "
            "angles (7 steps, also 8 frames)"
        )
    if not Z.is_floating_point():
        Z = Z.float()
    distances, angles = step_distances_and_angles(Z)
    return torch.cat(
        [distances[:, :7], angles[:, :6], _four_stats(distances), _four_stats(angles)], dim=-1
    )
