"""Calibration-aware training losses.

The benchmark score weighs calibration (Brier) more than discrimination (MCC), so an overconfident
wrong answer is expensive. Two losses address that:

- :class:`FocalBrierLoss`: focal cross-entropy ``-(1 - p_t)^gamma log p_t`` plus ``brier_weight`` times
  the squared error of p(fake). ``gamma=0, brier_weight=0`` is plain cross-entropy.
- :class:`ScoreSurrogateLoss`: ``1 - score`` where the score is the benchmark formula evaluated on a
  soft confusion matrix, so it can be optimised directly. It is a batch-level loss: use batches that
  hold both classes.

Every loss takes ``(logits [N, C], target [N], sample_weight [N] | None)``. Logits with ``C = 1`` are
a single fake-vs-real logit; for ``C >= 3`` class 0 is real and every other class counts as fake.
A floating-point ``target`` holds soft labels: a teacher's p(fake) in [0, 1] (distillation; binary
heads only). Class weights (``loss.pos_weight`` / ``loss.class_weights``) multiply each sample's
loss by its class's weight, as ``BCEWithLogitsLoss(pos_weight=...)`` does; soft targets split the
cross-entropy term between the classes in proportion to the target.
"""

from __future__ import annotations

import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from detectors.config import parse, setting

__all__ = [
    "FocalBrierLoss",
    "LossConfig",
    "ScoreSurrogateLoss",
    "CompositeLoss",
    "build_loss",
    "class_logits",
    "class_weight_vector",
    "fake_probability",
]

_REDUCTIONS = ("mean", "sum", "none")


def class_logits(logits: Tensor) -> Tensor:
    """Return logits as ``[N, C>=2]``: a single logit z becomes the two-class pair ``(0, z)``.

    ``softmax((0, z))[1] == sigmoid(z)``, so every loss can treat all shapes as softmax classes.
    """
    if logits.ndim == 1:
        logits = logits[:, None]
    if logits.ndim != 2:
        raise ValueError(f"logits must be [N, C], got shape {tuple(logits.shape)}")
    if logits.shape[1] == 1:
        logits = torch.cat([torch.zeros_like(logits), logits], dim=1)
    return logits


def fake_probability(logits: Tensor) -> Tensor:
    """Differentiable p(fake): softmax[:, 1] for 2 classes, 1 - softmax[:, 0] for 3+ (benchmark rule)."""
    logits = class_logits(logits)
    if logits.shape[1] == 2:
        # sigmoid of the margin is the same number as softmax[:, 1], with better gradients far out.
        return torch.sigmoid(logits[:, 1] - logits[:, 0])
    return -torch.expm1(F.log_softmax(logits, dim=1)[:, 0])


def _soft_floor(x: Tensor, floor: float) -> Tensor:
    """``x`` for ``x >= floor``; ``floor^2 / (2 floor - x)`` below: a C1, positive stand-in for max(0, x)."""
    # clamp_max keeps the unused branch finite, so torch.where does not leak NaN gradients.
    below = floor**2 / (2 * floor - x.clamp_max(floor))
    return torch.where(x >= floor, x, below)


def _reduce(loss: Tensor, sample_weight: Tensor | None, reduction: str) -> Tensor:
    if sample_weight is not None:
        weight = sample_weight.to(loss.dtype).reshape(-1)
        if reduction == "mean":
            return (loss * weight).sum() / weight.sum().clamp_min(torch.finfo(loss.dtype).tiny)
        loss = loss * weight
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    return loss


class FocalBrierLoss(nn.Module):
    """Focal cross-entropy plus a Brier term on p(fake).

    Per sample: ``w_y * (-(1 - p_t)^gamma * log p_t + brier_weight * (p_fake - y)^2)`` with ``p_t`` the
    softmax probability of the target class (all C classes), ``y = target != 0`` and ``w_y`` the
    class weight (``class_weight``, default 1); then averaged over the batch (weighted by
    ``sample_weight`` if given, as a weighted mean).

    Soft targets ``q`` = p(fake) in [0, 1] (a float ``target``, binary heads), with ``p = p_fake``:
    ``-(w_1 q (1 - p)^gamma log p + w_0 (1 - q) p^gamma log(1 - p)) + brier_weight (w_1 q + w_0 (1 - q))
    (p - q)^2``, which is the hard-label loss at q = 0 or 1 and, for gamma = 0, binary cross-entropy
    with soft targets (``BCEWithLogitsLoss(pos_weight=w_1 / w_0)`` up to the factor ``w_0``).
    """

    def __init__(
        self,
        gamma: float = 2.0,
        brier_weight: float = 1.0,
        reduction: str = "mean",
        class_weight: Sequence[float] | Tensor | None = None,
    ) -> None:
        super().__init__()
        if gamma < 0 or brier_weight < 0:
            raise ValueError(f"gamma and brier_weight must be >= 0, got {gamma} and {brier_weight}")
        if reduction not in _REDUCTIONS:
            raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")
        self.gamma = float(gamma)
        self.brier_weight = float(brier_weight)
        self.reduction = reduction
        weight = None if class_weight is None else torch.as_tensor(class_weight, dtype=torch.float32).reshape(-1)
        if weight is not None and (weight.numel() < 2 or not bool((weight > 0).all())):
            raise ValueError(f"class_weight needs one positive weight per class, got {weight.tolist()}")
        self.register_buffer("class_weight", weight, persistent=False)

    def forward(self, logits: Tensor, target: Tensor, sample_weight: Tensor | None = None) -> Tensor:
        logits = class_logits(logits)
        if target.is_floating_point():
            return _reduce(self.soft_loss(logits, target.reshape(-1).to(logits.dtype)), sample_weight, self.reduction)
        target = target.long().reshape(-1)
        weight = self.class_weight
        if weight is not None and weight.numel() != logits.shape[1]:
            raise ValueError(f"class_weight has {weight.numel()} weights for {logits.shape[1]} classes")
        if self.gamma == 0 and self.brier_weight == 0 and sample_weight is None and weight is None:
            # Plain cross-entropy: let PyTorch reduce, so the result is bit-identical to F.cross_entropy.
            return F.cross_entropy(logits, target, reduction=self.reduction)
        # cross_entropy works on log_softmax internally: -log p_t without overflow.
        loss = F.cross_entropy(logits, target, reduction="none")
        if self.gamma != 0:
            # 1 - p_t = -expm1(log p_t) keeps precision for confident samples; the floor keeps the
            # gradient of x^gamma finite at x = 0 when gamma < 1.
            one_minus_pt = (-torch.expm1(-loss)).clamp_min(torch.finfo(loss.dtype).tiny)
            loss = one_minus_pt.pow(self.gamma) * loss
        if self.brier_weight != 0:
            y = (target != 0).to(logits.dtype)
            loss = loss + self.brier_weight * (fake_probability(logits) - y).square()
        if weight is not None:
            loss = loss * weight.to(loss.dtype)[target]
        return _reduce(loss, sample_weight, self.reduction)

    def soft_loss(self, logits: Tensor, q: Tensor) -> Tensor:
        """Per-sample loss against soft targets ``q`` = p(fake) (see the class docstring)."""
        if logits.shape[1] != 2:
            raise ValueError(f"soft targets need a binary head (1 or 2 logits), got {logits.shape[1]} classes")
        margin = logits[:, 1] - logits[:, 0]
        log_p, log_not_p = F.logsigmoid(margin), F.logsigmoid(-margin)
        weight = self.class_weight
        w_real, w_fake = (1.0, 1.0) if weight is None else (weight[0].to(logits.dtype), weight[1].to(logits.dtype))
        fake_term, real_term = -log_p, -log_not_p
        if self.gamma != 0:
            fake_term = (-torch.expm1(log_p)).clamp_min(torch.finfo(logits.dtype).tiny).pow(self.gamma) * fake_term
            real_term = (-torch.expm1(log_not_p)).clamp_min(torch.finfo(logits.dtype).tiny).pow(self.gamma) * real_term
        loss = w_fake * q * fake_term + w_real * (1 - q) * real_term
        if self.brier_weight != 0:
            loss = loss + self.brier_weight * (w_fake * q + w_real * (1 - q)) * (torch.sigmoid(margin) - q).square()
        return loss

    def extra_repr(self) -> str:
        weights = "" if self.class_weight is None else f", class_weight={self.class_weight.tolist()}"
        return f"gamma={self.gamma}, brier_weight={self.brier_weight}, reduction={self.reduction!r}{weights}"


class ScoreSurrogateLoss(nn.Module):
    """``1 - score`` with the benchmark score computed from soft counts, so gradients flow.

    With ``p = p(fake)`` and ``y`` the binary label (weights normalised to sum to 1):
    ``TP = sum p*y, FP = sum p*(1-y), FN = sum (1-p)*y, TN = sum (1-p)*(1-y)``, soft MCC from these,
    soft Brier ``sum (p - y)^2``, then the benchmark normalisation. The hard ``max(0, x)`` on the Brier
    side, ``x = (0.25 - brier) / 0.25``, becomes a soft floor: ``x`` itself for ``x >= floor`` and
    ``floor^2 / (2 floor - x)`` below (continuous with slope 1, positive, decaying like ``1/|x|``), so a
    batch at or worse than chance still gets a gradient instead of an exactly flat zero (a softplus
    tail would underflow). For 0/1 probabilities the loss equals ``1 - benchmark_score`` whenever
    ``brier <= 0.25 * (1 - floor)``; below that the true score is at most ``floor^0.9`` anyway.
    """

    def __init__(
        self,
        mcc_exponent: float = 1.2,
        brier_exponent: float = 1.8,
        eps: float = 1e-6,
        floor: float = 0.05,
    ) -> None:
        super().__init__()
        self.mcc_exponent = float(mcc_exponent)
        self.brier_exponent = float(brier_exponent)
        self.eps = float(eps)
        if not 0 < floor < 1:
            raise ValueError(f"floor must be in (0, 1), got {floor}")
        self.floor = float(floor)

    def forward(self, logits: Tensor, target: Tensor, sample_weight: Tensor | None = None) -> Tensor:
        return self.from_probabilities(fake_probability(logits), target, sample_weight)

    def soft_counts(self, p_fake: Tensor, target: Tensor, sample_weight: Tensor | None = None) -> dict[str, Tensor]:
        """Soft confusion matrix (fractions of the total weight), soft MCC and Brier."""
        p = p_fake.reshape(-1)
        # soft targets (a teacher's p(fake)) enter the soft confusion matrix as they are
        y = target.reshape(-1).to(p.dtype) if target.is_floating_point() else (target.reshape(-1) != 0).to(p.dtype)
        weight = torch.ones_like(p) if sample_weight is None else sample_weight.reshape(-1).to(p.dtype)
        weight = weight / weight.sum().clamp_min(torch.finfo(p.dtype).tiny)
        tp = (weight * p * y).sum()
        fp = (weight * p * (1 - y)).sum()
        fn = (weight * (1 - p) * y).sum()
        tn = (weight * (1 - p) * (1 - y)).sum()
        denominator = (tp + fp) * (tp + fn) * (tn + fp) * (tn + fn)
        # An undefined MCC (one class predicted or present) has numerator 0 too, so it comes out 0 as
        # the benchmark defines it; the floor only avoids dividing by zero.
        mcc = (tp * tn - fp * fn) / denominator.clamp_min(self.eps).sqrt()
        brier = (weight * (p - y).square()).sum()
        return {"tp": tp, "fp": fp, "fn": fn, "tn": tn, "mcc": mcc, "brier": brier}

    def score(self, p_fake: Tensor, target: Tensor, sample_weight: Tensor | None = None) -> Tensor:
        """Differentiable benchmark score of a batch."""
        counts = self.soft_counts(p_fake, target, sample_weight)
        # (mcc + 1) / 2 lies in [0, 1] mathematically (soft MCC is bounded by a correlation); the
        # clamp only guards rounding and keeps pow's gradient finite.
        mcc_norm = ((counts["mcc"] + 1) / 2).clamp(self.eps, 1.0).pow(self.mcc_exponent)
        brier_gain = (0.25 - counts["brier"]) / 0.25
        brier_norm = _soft_floor(brier_gain, self.floor).pow(self.brier_exponent)
        return (mcc_norm * brier_norm + 1e-12).sqrt()

    def from_probabilities(self, p_fake: Tensor, target: Tensor, sample_weight: Tensor | None = None) -> Tensor:
        """The loss from p(fake) directly (e.g. for models that output probabilities)."""
        return 1.0 - self.score(p_fake, target, sample_weight)

    def extra_repr(self) -> str:
        return (
            f"mcc_exponent={self.mcc_exponent}, brier_exponent={self.brier_exponent}, "
            f"eps={self.eps}, floor={self.floor}"
        )


class CompositeLoss(nn.Module):
    """Weighted sum of losses that share the ``(logits, target, sample_weight)`` signature."""

    def __init__(self, losses: Sequence[nn.Module], weights: Sequence[float]) -> None:
        super().__init__()
        if len(losses) != len(weights) or not losses:
            raise ValueError("CompositeLoss needs one weight per loss and at least one loss")
        self.losses = nn.ModuleList(losses)
        self.weights = [float(w) for w in weights]

    def forward(self, logits: Tensor, target: Tensor, sample_weight: Tensor | None = None) -> Tensor:
        return sum(w * loss(logits, target, sample_weight) for loss, w in zip(self.losses, self.weights))

    def extra_repr(self) -> str:
        return f"weights={self.weights}"


LossName = Literal["focal_brier", "cross_entropy", "score_surrogate", "focal_brier+score"]
LOSS_NAMES: tuple[str, ...] = typing.get_args(LossName)


@dataclass
class LossConfig:
    """The classification loss of a run (the ``loss:`` section)."""

    name: LossName = setting("focal_brier", help="focal_brier, cross_entropy, score_surrogate or focal_brier+score")
    gamma: float = setting(2.0, help="focal exponent (0: cross-entropy)", ge=0)
    brier_weight: float = setting(1.0, help="weight of the Brier term of focal_brier", ge=0)
    surrogate_weight: float = setting(1.0, help="weight of the score surrogate in focal_brier+score", ge=0)
    floor: float = setting(0.05, help="soft floor of the score surrogate's Brier term", gt=0, lt=1)
    pos_weight: float | Literal["auto"] | None = setting(
        None,
        help="weight of fake samples in the cross-entropy/focal and Brier terms (auto: negatives / "
        "positives of the training split; null: 1)",
        gt=0,
    )
    class_weights: list[float] | None = setting(
        None, help="one weight per class (real, fake[, semisynthetic]) instead of pos_weight", gt=0
    )


def class_weight_vector(
    config: LossConfig, num_classes: int, counts: Sequence[int] | None = None
) -> list[float] | None:
    """The per-class weights of a ``loss:`` section for a head of ``num_classes``: ``class_weights``,
    or ``[1, pos_weight, ...]`` (every fake class weighted alike); ``pos_weight: auto`` needs the
    training split's ``counts`` (negatives, positives) and is negatives / positives."""
    from detectors.errors import ConfigError

    if config.class_weights is not None and config.pos_weight is not None:
        raise ConfigError(None, "loss.class_weights", "set loss.pos_weight or loss.class_weights, not both")
    if config.class_weights is not None:
        if len(config.class_weights) != num_classes:
            raise ConfigError(
                None,
                "loss.class_weights",
                f"needs {num_classes} weights (one per class), got {len(config.class_weights)}",
            )
        return [float(w) for w in config.class_weights]
    if config.pos_weight is None:
        return None
    weight = config.pos_weight
    if weight == "auto":
        if counts is None:
            raise ValueError("pos_weight: auto needs the training split's (negatives, positives)")
        negatives, positives = int(counts[0]), int(counts[1])
        if negatives == 0 or positives == 0:
            raise ConfigError(
                None,
                "loss.pos_weight",
                f"auto needs real and fake training samples, got {negatives} real and {positives} fake",
            )
        weight = negatives / positives
    return [1.0] + [float(weight)] * (num_classes - 1)


def build_loss(
    config: LossConfig | Mapping[str, Any] | None = None, class_weight: Sequence[float] | None = None
) -> nn.Module:
    """The training loss of a ``loss:`` section (a :class:`LossConfig` or its mapping), with the
    per-class weights ``class_weight`` (resolved by :func:`class_weight_vector`) if any."""
    config = parse(LossConfig, config, "loss")
    if class_weight is not None and config.name == "score_surrogate":
        from detectors.errors import ConfigError

        raise ConfigError(
            None,
            "loss.pos_weight",
            "class weights apply to focal_brier and cross_entropy; the score surrogate (an MCC-based loss) takes none",
        )
    if config.name == "cross_entropy":
        return FocalBrierLoss(gamma=0.0, brier_weight=0.0, class_weight=class_weight)
    surrogate = ScoreSurrogateLoss(floor=config.floor)
    if config.name == "score_surrogate":
        return surrogate
    focal_brier = FocalBrierLoss(gamma=config.gamma, brier_weight=config.brier_weight, class_weight=class_weight)
    if config.name == "focal_brier":
        return focal_brier
    return CompositeLoss([focal_brier, surrogate], [1.0, config.surrogate_weight])
