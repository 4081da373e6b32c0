"""ReStraV trajectory features against an independent loop-by-loop numpy computation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from detectors.video.restrav import FEATURE_NAMES, NUM_FEATURES, trajectory_features


def reference_features(z: np.ndarray) -> np.ndarray:
    """One trajectory ``[T, D]`` -> 21 features, with explicit loops and float64 math.

    Cosine as torch.nn.functional.cosine_similarity defines it (the official code's choice): each
    vector is divided by max(norm, 1e-8) before the dot product.
    """
    z = z.astype(np.float64)
    frames, dims = z.shape
    steps = [[z[t + 1][k] - z[t][k] for k in range(dims)] for t in range(frames - 1)]
    distances = [math.sqrt(sum(v * v for v in step)) for step in steps]
    angles = []
    for t in range(len(steps) - 1):
        a, b = steps[t], steps[t + 1]
        na, nb = max(distances[t], 1e-8), max(distances[t + 1], 1e-8)
        cosine = sum((a[k] / na) * (b[k] / nb) for k in range(dims))
        cosine = min(1.0, max(-1.0, cosine))
        angles.append(math.degrees(math.acos(cosine)))

    def stats(values: list[float]) -> list[float]:
        mean = sum(values) / len(values)
        return [mean, min(values), max(values), sum((v - mean) ** 2 for v in values) / len(values)]

    return np.array(distances[:7] + angles[:6] + stats(distances) + stats(angles))


def _check(Z: torch.Tensor, rtol: float, atol: float) -> None:
    got = trajectory_features(Z)
    assert got.shape == (Z.shape[0], NUM_FEATURES) and got.dtype == Z.dtype
    expected = np.stack([reference_features(z) for z in Z.double().numpy()])
    np.testing.assert_allclose(got.double().numpy(), expected, rtol=rtol, atol=atol)


@pytest.mark.parametrize("frames", [8, 24])
def test_random_trajectories_float64(frames: int) -> None:
    Z = torch.randn(5, frames, 37, dtype=torch.float64, generator=torch.Generator().manual_seed(frames))
    _check(Z, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("frames", [8, 24])
def test_random_trajectories_float32(frames: int) -> None:
    Z = torch.randn(5, frames, 37, generator=torch.Generator().manual_seed(frames))
    # Same inputs, float32 arithmetic vs float64 reference: agreement to float32 precision.
    _check(Z, rtol=1e-5, atol=1e-5)


def test_zero_steps_and_constant_trajectories() -> None:
    generator = torch.Generator().manual_seed(0)
    Z = torch.randn(3, 24, 16, dtype=torch.float64, generator=generator)
    Z[0, 5] = Z[0, 4]  # one repeated frame: zero step -> two 90 degree angles
    Z[1, 20:] = Z[1, 19]  # a padded short clip: the last frame repeats
    Z[2] = Z[2, 0]  # constant: no motion at all
    _check(Z, rtol=1e-10, atol=1e-10)
    features = trajectory_features(Z)
    assert features[0, 4].item() == 0.0  # d_5 = ||z_6 - z_5|| = 0
    assert features[0, 7 + 3].item() == 90.0 and features[0, 7 + 4].item() == 90.0  # theta_4, theta_5
    constant = features[2]
    assert torch.all(constant[:7] == 0) and torch.all(constant[7:13] == 90)
    assert constant[13:17].tolist() == [0, 0, 0, 0] and constant[17:].tolist() == [90, 90, 90, 0]


def test_exact_geometry_hand_worked() -> None:
    # Straight line at constant speed 2, then a right-angle turn, then a reversal.
    points = [[2.0 * t, 0.0] for t in range(8)]
    points += [[14.0, 2.0], [14.0, 0.0]]
    Z = torch.tensor([points], dtype=torch.float64)
    features = trajectory_features(Z)[0]
    d = [2.0] * 7 + [2.0, 2.0]
    theta = [0.0] * 6 + [90.0, 180.0]
    assert features[:7].tolist() == d[:7]
    assert features[7:13].tolist() == theta[:6]
    np.testing.assert_allclose(features[13:17].numpy(), [2.0, 2.0, 2.0, 0.0], atol=1e-12)
    mean = sum(theta) / 8
    np.testing.assert_allclose(
        features[17:].numpy(), [mean, 0.0, 180.0, sum((t - mean) ** 2 for t in theta) / 8], atol=1e-9
    )


def test_tiny_steps_follow_the_eps_convention() -> None:
    # Steps far below eps: cosine_similarity divides by eps, not by the norms, so two identical
    # steps of length 1e-10 give cosine (1e-10 / 1e-8)^2 = 1e-4 instead of 1, i.e. almost 90 degrees.
    Z = torch.zeros(1, 8, 2, dtype=torch.float64)
    for t in range(1, 8):
        Z[0, t] = Z[0, t - 1] + torch.tensor([1e-10, 0.0], dtype=torch.float64)
    _check(Z, rtol=1e-10, atol=1e-10)
    assert trajectory_features(Z)[0, 7].item() == pytest.approx(math.degrees(math.acos(1e-4)), abs=1e-9)


def test_batched_equals_one_by_one_and_names() -> None:
    Z = torch.randn(4, 12, 9, generator=torch.Generator().manual_seed(1))
    batched = trajectory_features(Z)
    single = torch.cat([trajectory_features(Z[i : i + 1]) for i in range(4)])
    torch.testing.assert_close(batched, single)
    assert len(FEATURE_NAMES) == NUM_FEATURES and FEATURE_NAMES[13] == "d_mean" and FEATURE_NAMES[-1] == "theta_var"


def test_too_few_frames_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="at least 8 frames"):
        trajectory_features(torch.randn(2, 7, 4))
    with pytest.raises(ValueError, match=r"\[B, T, D\]"):
        trajectory_features(torch.randn(8, 4))
