"""Evaluation metrics, computed the way the benchmark scores a submission.

The benchmark ("sn34") score combines discrimination (MCC) and calibration (Brier), with calibration
weighted more strongly (see ``docs/submission-format.md``, "Scoring"). Everything here works on binary
labels (0 = real, 1 = fake); 3-class labels (0 real, 1 synthetic, 2 semisynthetic) are binarised as
``label != 0``. Metrics that sklearn/torchmetrics compute are taken from them; the benchmark's own
formulas (score, Brier clipping, MCC-is-0-when-undefined) are written out here.

The benchmark's rules are those of GASBench (https://github.com/BitMind-AI/gasbench, v0.8.0):
``benchmarks/utils/inference.py`` (``process_model_output``: float32 softmax, binary decision),
``benchmarks/utils/metrics.py`` (``Metrics``: weighted confusion matrix, Brier, cross-entropy, sn34)
and ``benchmarks/recording.py`` (``compute_metrics_from_df``: provenance weights, the augmented
pass). :func:`benchmark_outputs`, :func:`provenance_weights` and :func:`augmentation_metrics` follow
them; :func:`multiclass_metrics` is this project's own extra (the benchmark scores every head as
binary).

All public functions return plain Python floats (or ``None`` where a metric is undefined) so their
results go straight into ``metrics.json``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import average_precision_score, confusion_matrix, matthews_corrcoef, roc_auc_score, roc_curve
from torchmetrics.functional.classification import binary_calibration_error

ArrayLike = np.ndarray | torch.Tensor | Sequence[float]

#: Probabilities are clipped to this range before Brier and cross-entropy, as the benchmark does.
PROB_CLIP = 1e-7
#: Number of equal-width bins for the expected calibration error and reliability diagrams.
ECE_BINS = 15
#: Robustness blend of the benchmark: ``0.8 * base + 0.2 * augmented`` (``gasbench run --aug-weight``).
ROBUSTNESS_WEIGHT = 0.2
#: The benchmark's provenance classes, from a dataset's name (``recording.classify_sample_provenance``).
PROVENANCE_CLASSES = ("public", "holdout", "gasstation")


# --------------------------------------------------------------------------------------------------
# Logits -> probability of "fake" and hard predictions (the benchmark's rules)
# --------------------------------------------------------------------------------------------------


def _logits_float64(logits: ArrayLike) -> torch.Tensor:
    # dtype at conversion: a Python list would otherwise become float32 before the float64 cast.
    tensor = torch.as_tensor(logits, dtype=torch.float64).detach().cpu()
    if tensor.ndim not in (1, 2):
        raise ValueError(f"logits must be [N] or [N, C], got shape {tuple(tensor.shape)}")
    return tensor


def prob_fake_from_logits(logits: ArrayLike) -> np.ndarray:
    """p(fake) per sample: sigmoid for 1 logit, softmax[:, 1] for 2 classes, 1 - softmax[:, 0] for 3+."""
    z = _logits_float64(logits)
    if z.ndim == 1 or z.shape[1] == 1:
        return torch.sigmoid(z.reshape(-1)).numpy()
    probs = torch.softmax(z, dim=1)
    if z.shape[1] == 2:
        return probs[:, 1].numpy()
    # Multi-class: every class but "real" (index 0) counts as fake.
    return (1.0 - probs[:, 0]).numpy()


def predictions_from_logits(logits: ArrayLike) -> np.ndarray:
    """Hard binary predictions: argmax for 2 classes, ``argmax != 0`` for 3+, ``logit > 0`` for 1."""
    z = _logits_float64(logits)
    if z.ndim == 1 or z.shape[1] == 1:
        return (z.reshape(-1) > 0).long().numpy()
    # torch.argmax returns the first maximal index, so a tie goes to "real", as numpy's argmax does.
    return (z.argmax(dim=1) != 0).long().numpy()


# --------------------------------------------------------------------------------------------------
# Scalar metrics
# --------------------------------------------------------------------------------------------------


def to_binary_labels(labels: ArrayLike) -> np.ndarray:
    """Flatten labels (array, tensor or list) to int64 0/1, with every non-real class counted as fake."""
    return (torch.as_tensor(labels).detach().cpu().reshape(-1) != 0).to(torch.int64).numpy()


def to_probabilities(prob: ArrayLike) -> np.ndarray:
    """Flatten probabilities or scores (array, tensor or list) to float64."""
    # Convert in torch: numpy has no bfloat16, which mixed-precision evaluation may hand us. The dtype
    # goes into as_tensor so that a Python list is not rounded through float32 on the way.
    return torch.as_tensor(prob, dtype=torch.float64).detach().cpu().reshape(-1).numpy()


def benchmark_score(mcc: float, brier: float, brier_baseline: float = 0.25) -> float:
    """The benchmark's combined score ("sn34") from MCC and Brier.

    ``mcc_norm = clamp((mcc + 1) / 2, 0, 1) ** 1.2``, ``brier_norm = max(0, (0.25 - brier) / 0.25) ** 1.8``,
    ``score = clamp(sqrt(max(1e-12, mcc_norm * brier_norm)), 0, 1)``. This project's multiclass
    extra (:func:`multiclass_metrics`, not a benchmark score) passes the K-class Brier and its
    uninformed baseline ``(K - 1) / K`` in place of 0.25.
    """
    mcc_norm = min(max((mcc + 1.0) / 2.0, 0.0), 1.0) ** 1.2
    brier_norm = max(0.0, (brier_baseline - brier) / brier_baseline) ** 1.8
    return min(max(math.sqrt(max(1e-12, mcc_norm * brier_norm)), 0.0), 1.0)


def brier(prob: ArrayLike, labels: ArrayLike, sample_weight: ArrayLike | None = None) -> float:
    """(Weighted) mean squared error between clipped p(fake) and the binary label; 0.25 for an empty set."""
    p = to_probabilities(prob)
    y = to_binary_labels(labels)
    if p.size == 0:
        return 0.25
    p = np.clip(p, PROB_CLIP, 1.0 - PROB_CLIP)
    if sample_weight is None:
        return float(np.mean((p - y) ** 2))
    return float(np.average((p - y) ** 2, weights=to_probabilities(sample_weight)))


def mcc(labels: ArrayLike, preds: ArrayLike, sample_weight: ArrayLike | None = None) -> float:
    """Matthews correlation from the (optionally weighted) 2x2 confusion matrix; 0 when undefined."""
    y = to_binary_labels(labels)
    yhat = to_binary_labels(preds)
    if y.size == 0:
        return 0.0
    weight = None if sample_weight is None else to_probabilities(sample_weight)
    # labels=[0, 1] keeps the matrix 2x2 when only one class occurs (sklearn's MCC would warn there).
    (tn, fp), (fn, tp) = confusion_matrix(y, yhat, labels=[0, 1], sample_weight=weight).astype(np.float64)
    denominator = (tp + fp) * (tp + fn) * (tn + fp) * (tn + fn)
    if denominator == 0:
        return 0.0
    return float((tp * tn - fp * fn) / math.sqrt(denominator))


def multiclass_metrics(class_index: ArrayLike, probabilities: ArrayLike) -> dict[str, Any]:
    """This project's multiclass extra for K-class heads (image: real / synthetic / semisynthetic), not a
    benchmark score (GASBench scores a 3-class head as binary, p(fake) = 1 - p[0], and has had no
    multiclass score since v0.3.1): Gorodkin's R_K MCC on argmax predictions (sklearn's multiclass
    ``matthews_corrcoef``), the K-class Brier ``mean(sum_k (p_k - y_k)^2)`` and the sn34 formula
    with Brier baseline ``(K - 1) / K``."""
    y = np.asarray(torch.as_tensor(class_index).cpu().reshape(-1).numpy(), dtype=np.int64)
    p = torch.as_tensor(probabilities).detach().cpu().to(torch.float64).numpy()
    if p.ndim != 2 or p.shape[0] != y.size:
        raise ValueError(f"probabilities must be [N, K] for N = {y.size} labels, got {p.shape}")
    classes = p.shape[1]
    if y.size == 0:
        return {"n": 0}
    if y.min() < 0 or y.max() >= classes:
        # np.eye(K)[y] would wrap a negative label around and fail on one >= K with a bare IndexError.
        raise ValueError(
            f"class indices must lie in 0..{classes - 1} for {classes} probabilities, "
            f"got {sorted(set(y.tolist()) - set(range(classes)))}"
        )
    one_hot = np.eye(classes)[y]
    brier_k = float(np.mean(np.sum((np.clip(p, PROB_CLIP, 1.0 - PROB_CLIP) - one_hot) ** 2, axis=1)))
    preds = p.argmax(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mcc_k = float(matthews_corrcoef(y, preds)) if len(np.unique(np.concatenate([y, preds]))) > 1 else 0.0
    baseline = (classes - 1) / classes
    return {
        "score": benchmark_score(mcc_k, brier_k, baseline),
        "mcc": mcc_k,
        "brier": brier_k,
        "brier_baseline": baseline,
        "accuracy": float(np.mean(preds == y)),
        "n": int(y.size),
        "per_class_n": [int(np.sum(y == k)) for k in range(classes)],
    }


def binary_cross_entropy(prob: ArrayLike, labels: ArrayLike, sample_weight: ArrayLike | None = None) -> float | None:
    """(Weighted) mean binary cross-entropy (natural log) of clipped p(fake); ``None`` for an empty set."""
    p = to_probabilities(prob)
    y = to_binary_labels(labels)
    if p.size == 0:
        return None
    p = np.clip(p, PROB_CLIP, 1.0 - PROB_CLIP)
    losses = -(y * np.log(p) + (1 - y) * np.log1p(-p))
    if sample_weight is None:
        return float(np.mean(losses))
    return float(np.average(losses, weights=to_probabilities(sample_weight)))


def expected_calibration_error(labels: ArrayLike, prob: ArrayLike, n_bins: int = ECE_BINS) -> float | None:
    """ECE with ``n_bins`` equal-width bins of p(fake) against the observed fake frequency.

    torchmetrics' ``binary_calibration_error`` is exactly this definition for a binary detector (its
    "confidence" is the positive-class probability and its "accuracy" the positive label). Its bins
    are right-open, ``[k/n, (k+1)/n)``, so a probability of exactly 1 would form an extra bin of its
    own; it is moved to the largest double below 1 so that it joins the last bin, as in
    :func:`calibration_bins` and the reliability diagram (a shift of 1e-16 in that bin's mean).
    """
    p = to_probabilities(prob)
    y = to_binary_labels(labels)
    if p.size == 0:
        return None
    p = np.clip(p, 0.0, np.nextafter(1.0, 0.0))
    value = binary_calibration_error(torch.from_numpy(p), torch.from_numpy(y), n_bins=n_bins, norm="l1")
    return float(value)


def calibration_bins(labels: ArrayLike, prob: ArrayLike, n_bins: int = ECE_BINS) -> dict[str, np.ndarray]:
    """Per-bin statistics for a reliability diagram: edges, counts, mean p(fake), observed fake rate.

    The bins of :func:`expected_calibration_error`: right-open, with p = 1 in the last one. Empty bins
    have NaN means.
    """
    p = np.clip(to_probabilities(prob), 0.0, 1.0)
    y = to_binary_labels(labels)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    index = np.clip(np.searchsorted(edges, p, side="right") - 1, 0, n_bins - 1)
    counts = np.bincount(index, minlength=n_bins).astype(np.int64)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_prob = np.bincount(index, weights=p, minlength=n_bins) / counts
        fake_rate = np.bincount(index, weights=y, minlength=n_bins) / counts
    return {"edges": edges, "counts": counts, "mean_prob": mean_prob, "fake_rate": fake_rate}


def equal_error_rate(labels: ArrayLike, scores: ArrayLike) -> tuple[float | None, float | None]:
    """Equal error rate and its threshold, interpolated linearly where FPR crosses FNR.

    Returns ``(None, None)`` when only one class is present (the rate is undefined).
    """
    y = to_binary_labels(labels)
    s = to_probabilities(scores)
    if y.size == 0 or y.min() == y.max():
        return None, None
    # Keep every threshold: dropping collinear ROC points would not move the EER but would move the
    # interpolated threshold.
    fpr, tpr, thresholds = roc_curve(y, s, drop_intermediate=False)
    fnr = 1.0 - tpr
    gap = fnr - fpr  # starts at 1 (threshold +inf) and decreases to -1
    i = int(np.argmax(gap <= 0))  # first operating point where FPR has caught up with FNR
    if i == 0:
        return float(fpr[0]), float(thresholds[0])
    t = gap[i - 1] / (gap[i - 1] - gap[i])
    eer = fpr[i - 1] + t * (fpr[i] - fpr[i - 1])
    lower, upper = thresholds[i], thresholds[i - 1]
    # The first threshold of roc_curve is +inf; interpolating towards it is meaningless.
    threshold = lower if not np.isfinite(upper) else upper + t * (lower - upper)
    return float(eer), float(threshold)


def tpr_at_fpr(labels: ArrayLike, scores: ArrayLike, max_fpr: float) -> float | None:
    """The highest true positive rate (fakes caught) at a threshold whose false positive rate (reals
    called fake) is at most ``max_fpr``: an operating point that exists, not one interpolated between
    two (with 50 reals, "1 %" can only be 0 false positives). ``None`` when only one class is present.
    """
    y = to_binary_labels(labels)
    s = to_probabilities(scores)
    if y.size == 0 or y.min() == y.max():
        return None
    fpr, tpr, _ = roc_curve(y, s, drop_intermediate=False)  # starts at (0, 0): always defined
    return float(tpr[fpr <= max_fpr + 1e-12].max())


def robustness_blend(base: float, augmented: float, weight: float = ROBUSTNESS_WEIGHT) -> float:
    """The benchmark's robustness blend: ``(1 - weight) * base + weight * augmented`` (0.8 / 0.2 by
    default; ``common.finalize_run``)."""
    return (1.0 - weight) * base + weight * augmented


# --------------------------------------------------------------------------------------------------
# The benchmark's own bookkeeping: float32 probabilities, provenance weights, the augmented pass
# --------------------------------------------------------------------------------------------------


def benchmark_outputs(logits: ArrayLike) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(probabilities [N, C], prob_fake [N], predictions [N])`` as GASBench derives them from the
    float32 logits its session returns (``process_model_output`` then ``Metrics.update``).

    Probabilities are computed in float32 (``exp(z - max(z)) / sum``; a single logit:
    ``1 / (1 + exp(-z))``) and kept as float64 numbers. p(fake): p[1] for 2 classes, ``1 - p[0]``
    for 3, the sigmoid for 1 logit and, for more than 3 outputs, p[0] itself (the benchmark's
    ``Metrics.update`` appends ``pred_probs[0]`` there). Decision: argmax for 2 classes (a tie goes to
    class 0), ``argmax != 0`` for 3, ``p > 0.5`` for 1 logit and ``p[0] > 0.5`` for more than 3.
    Rows holding NaN or infinite logits give NaN probabilities, as they do there.
    """
    z = torch.as_tensor(logits).detach().cpu().to(torch.float32).numpy()
    if z.ndim == 1:
        z = z[:, None]
    if z.ndim != 2:
        raise ValueError(f"logits must be [N] or [N, C], got shape {z.shape}")
    count, classes = z.shape
    if count == 0:
        return np.zeros((0, classes)), np.zeros(0), np.zeros(0, dtype=np.int64)
    with np.errstate(over="ignore", invalid="ignore"):
        if classes == 1:
            p = (np.float32(1.0) / (np.float32(1.0) + np.exp(-z[:, 0])))[:, None]
            preds = (p[:, 0] > 0.5).astype(np.int64)
            probs = p.astype(np.float64)
            return probs, probs[:, 0].copy(), preds
        e = np.exp(z - z.max(axis=1, keepdims=True))
        p32 = e / e.sum(axis=1, keepdims=True)  # float32, as numpy computes it on float32 logits
    probs = p32.astype(np.float64)
    if classes == 2:
        return probs, probs[:, 1].copy(), p32.argmax(axis=1).astype(np.int64)
    if classes == 3:
        return probs, 1.0 - probs[:, 0], (p32.argmax(axis=1) != 0).astype(np.int64)
    return probs, probs[:, 0].copy(), (p32[:, 0] > 0.5).astype(np.int64)


def provenance(dataset_name: str) -> str:
    """The benchmark's provenance class of a dataset, from its name: ``holdout`` when it contains
    ``-holdout-`` (the benchmark renames its holdout datasets ``<media_type>-<modality>-holdout-<hash>``),
    ``gasstation`` when it contains ``gasstation``, else ``public``."""
    name = str(dataset_name).lower()
    if "-holdout-" in name:
        return "holdout"
    if "gasstation" in name:
        return "gasstation"
    return "public"


def score_composition(holdout_share: float | None, gasstation_share: float | None) -> dict[str, float] | None:
    """``gasbench run --holdout-share / --gasstation-share`` as the target composition (``None`` when
    neither is given): the public corpus gets what is left. Shares must be >= 0 and sum to <= 1."""
    if holdout_share is None and gasstation_share is None:
        return None
    holdout, gasstation = float(holdout_share or 0.0), float(gasstation_share or 0.0)
    if (
        not (math.isfinite(holdout) and math.isfinite(gasstation))
        or holdout < 0
        or gasstation < 0
        or holdout + gasstation > 1
    ):
        raise ValueError(
            f"--holdout-share and --gasstation-share must be >= 0 and sum to <= 1, got {holdout} and {gasstation}"
        )
    return {"public": 1.0 - holdout - gasstation, "holdout": holdout, "gasstation": gasstation}


def provenance_weights(datasets: Sequence[str], composition: Mapping[str, float]) -> tuple[np.ndarray, dict[str, Any]]:
    """Per-sample weights giving each provenance class its target share of the total weight, and the
    report the benchmark adds (``score_composition``, ``realized_composition``, ``provenance_weights``).

    As ``recording.derive_provenance_weights``: only classes present are weighted, their target
    shares renormalised over the present ones; a class's weight is ``share * N / n_class`` (mean
    weight 1). When no present class has a positive share every weight is 1.
    """
    classes = [provenance(name) for name in datasets]
    counts = {c: classes.count(c) for c in PROVENANCE_CLASSES if classes.count(c)}
    targets = {c: max(0.0, float(composition.get(c, 0.0))) for c in counts}
    total_target, total = sum(targets.values()), sum(counts.values())
    if total_target <= 0:
        weights = {c: 1.0 for c in counts}
    else:
        weights = {c: (targets[c] / total_target) * total / n for c, n in counts.items()}
    report = {
        "score_composition": {c: float(composition.get(c, 0.0)) for c in PROVENANCE_CLASSES},
        "realized_composition": {c: (counts.get(c, 0) / total if total else 0.0) for c in PROVENANCE_CLASSES},
        "provenance_weights": {c: float(w) for c, w in weights.items()},
    }
    return np.array([weights[c] for c in classes], dtype=np.float64), report


def augmentation_metrics(
    base_score: float, augmented_score: float, pairs: Sequence[tuple[float, float]]
) -> dict[str, Any]:
    """The benchmark's robustness figures beside the blend: ``augmentation_robustness`` (augmented /
    base score; 0 when the base score is 0) and, over samples scored in both passes, the degradation
    of the probability given to the true class (``prob_correct_base - prob_correct_aug``: mean and
    95th percentile), as ``recording._compute_aug_metrics``. ``pairs``: (base, augmented)
    probabilities of the true class per paired sample."""
    out: dict[str, Any] = {"augmentation_robustness": augmented_score / base_score if base_score > 0 else 0.0}
    if pairs:
        degradation = np.array([b - a for b, a in pairs], dtype=np.float64)
        out.update(
            {
                "paired_samples": len(pairs),
                "mean_prob_degradation": float(degradation.mean()),
                "p95_prob_degradation": float(np.percentile(degradation, 95)),
            }
        )
    return out


# --------------------------------------------------------------------------------------------------
# The full report
# --------------------------------------------------------------------------------------------------


def _both_classes(y: np.ndarray) -> bool:
    return y.size > 0 and y.min() != y.max()


def binary_metrics(
    labels: ArrayLike,
    prob_fake: ArrayLike,
    preds: ArrayLike | None = None,
    datasets: Sequence[str] | None = None,
    sample_weight: ArrayLike | None = None,
) -> dict[str, Any]:
    """Everything ``metrics.json`` reports for a binary real/fake evaluation.

    Args:
        labels: binary (or 3-class, binarised as ``!= 0``) ground truth, shape [N].
        prob_fake: p(fake) per sample, shape [N].
        preds: hard predictions; defaults to ``prob_fake > 0.5`` (argmax of 2 logits, ties -> real).
            Pass :func:`predictions_from_logits` for 3-class models, where argmax differs.
        datasets: dataset name per sample; adds a ``per_dataset`` breakdown.
        sample_weight: per-sample weights (the benchmark's provenance weights): score, MCC, Brier,
            accuracy and cross-entropy are weighted as the benchmark weights them; ROC-AUC, PR-AUC,
            EER, ECE and the per-dataset table stay unweighted.

    Returns:
        ``score, mcc, brier, accuracy, cross_entropy, roc_auc, pr_auc, eer, eer_threshold, tpr_at_1pct_fpr,
        tpr_at_5pct_fpr, ece, n, n_real, n_fake`` (+ ``per_dataset``). AUCs, EER and the TPRs at a false
        positive rate (:func:`tpr_at_fpr`, unweighted like the AUCs) are ``None`` when only one class is
        present.
    """
    y = to_binary_labels(labels)
    p = to_probabilities(prob_fake)
    yhat = (p > 0.5).astype(np.int64) if preds is None else to_binary_labels(preds)
    if not (y.shape == p.shape == yhat.shape):
        raise ValueError(f"labels {y.shape}, prob_fake {p.shape} and preds {yhat.shape} differ in length")
    bad = ~np.isfinite(p)
    if bad.any():
        # sklearn would stop at the ROC curve with a bare "Input contains NaN"; say what and where.
        raise ValueError(
            f"prob_fake holds {int(bad.sum())} non-finite value(s) of {p.size} (first at index "
            f"{int(np.argmax(bad))}): NaN logits, or an infinite one under softmax, give NaN"
        )

    w = None if sample_weight is None else to_probabilities(sample_weight)
    if w is not None and w.shape != y.shape:
        raise ValueError(f"sample_weight has {w.size} values for {y.size} samples")
    mcc_value = mcc(y, yhat, sample_weight=w)
    brier_value = brier(p, y, sample_weight=w)
    eer, eer_threshold = equal_error_rate(y, p)
    both = _both_classes(y)
    if not y.size:
        accuracy = None
    else:
        accuracy = float(np.mean(y == yhat)) if w is None else float(np.average(y == yhat, weights=w))
    result: dict[str, Any] = {
        "score": benchmark_score(mcc_value, brier_value),
        "mcc": mcc_value,
        "brier": brier_value,
        "accuracy": accuracy,
        "cross_entropy": binary_cross_entropy(p, y, sample_weight=w),
        "roc_auc": float(roc_auc_score(y, p)) if both else None,
        "pr_auc": float(average_precision_score(y, p)) if both else None,
        "eer": eer,
        "eer_threshold": eer_threshold,
        "tpr_at_1pct_fpr": tpr_at_fpr(y, p, 0.01),
        "tpr_at_5pct_fpr": tpr_at_fpr(y, p, 0.05),
        "ece": expected_calibration_error(y, p),
        "n": int(y.size),
        "n_real": int(np.sum(y == 0)),
        "n_fake": int(np.sum(y == 1)),
    }
    if datasets is not None:
        result["per_dataset"] = per_dataset_metrics(y, p, yhat, datasets)
    return result


def per_dataset_metrics(
    labels: ArrayLike, prob_fake: ArrayLike, preds: ArrayLike, datasets: Sequence[str]
) -> dict[str, dict[str, Any]]:
    """Accuracy and prediction counts per dataset name (the benchmark's per-dataset table).

    MCC, score and ROC-AUC are added only for datasets holding both classes: a benchmark dataset is
    usually all-real or all-fake, where MCC is 0 by definition and the score would mislead.
    """
    y = to_binary_labels(labels)
    p = to_probabilities(prob_fake)
    yhat = to_binary_labels(preds)
    names = np.asarray([str(name) for name in datasets], dtype=object)
    if names.shape != y.shape:
        raise ValueError(f"datasets has {names.size} names for {y.size} samples")
    table: dict[str, dict[str, Any]] = {}
    for name in sorted(set(names.tolist())):
        mask = names == name
        ys, ps, hs = y[mask], p[mask], yhat[mask]
        row: dict[str, Any] = {
            "n": int(mask.sum()),
            "n_real": int(np.sum(ys == 0)),
            "n_fake": int(np.sum(ys == 1)),
            "accuracy": float(np.mean(ys == hs)),
            "n_pred_fake": int(np.sum(hs == 1)),
            "n_pred_real": int(np.sum(hs == 0)),
            "mean_prob_fake": float(np.mean(ps)),
            "brier": brier(ps, ys),
        }
        if _both_classes(ys):
            row["mcc"] = mcc(ys, hs)
            row["score"] = benchmark_score(row["mcc"], row["brier"])
            row["roc_auc"] = float(roc_auc_score(ys, ps))
        table[name] = row
    return table


def nll_from_logits(logits: ArrayLike, labels: ArrayLike) -> float:
    """Mean negative log-likelihood of the model's own classes (multi-class CE; sigmoid for 1 logit)."""
    z = _logits_float64(logits)
    y = torch.as_tensor(labels).detach().to("cpu", torch.long).reshape(-1)
    if y.numel() == 0:
        return float("nan")
    if z.ndim == 1 or z.shape[1] == 1:
        return float(F.binary_cross_entropy_with_logits(z.reshape(-1), (y != 0).double()))
    return float(F.cross_entropy(z, y))
