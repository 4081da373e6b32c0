"""Metrics against hand computations of the benchmark's definitions, and plots as valid PNGs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from detectors import metrics
from detectors.plots import pr_curve_plot, reliability_diagram, roc_curve_plot, temperature_sweep_plot

# ---------------------------------------------------------------------------------------------- score


@pytest.mark.parametrize(
    ("mcc", "brier", "expected"),
    [
        # sqrt(0.8 ** 1.2 * 0.6 ** 1.8), worked out by hand from the formula in submission-format.md
        (0.6, 0.10, math.sqrt(math.exp(1.2 * math.log(0.8)) * math.exp(1.8 * math.log(0.6)))),
        (0.0, 0.20, math.sqrt(0.5**1.2 * 0.2**1.8)),
        (1.0, 0.0, 1.0),
        (-1.0, 0.0, 1e-6),  # mcc_norm = 0 -> sqrt(1e-12)
        (0.9, 0.30, 1e-6),  # worse than chance Brier -> brier_norm clamps to 0
        (1.5, 0.0, 1.0),  # mcc_norm clamps to 1
    ],
)
def test_benchmark_score_matches_formula(mcc: float, brier: float, expected: float) -> None:
    assert metrics.benchmark_score(mcc, brier) == pytest.approx(expected, rel=1e-12, abs=1e-15)


def test_constant_half_probability_scores_zero() -> None:
    labels = np.array([0, 1] * 50)
    result = metrics.binary_metrics(labels, np.full(100, 0.5))
    assert result["brier"] == pytest.approx(0.25)
    assert result["mcc"] == 0.0
    assert result["score"] == pytest.approx(1e-6, rel=1e-6)


def test_perfect_confident_predictions_score_one() -> None:
    labels = np.array([0, 0, 1, 1, 1])
    result = metrics.binary_metrics(labels, labels.astype(float))
    assert result["mcc"] == 1.0
    assert result["brier"] == pytest.approx(1e-14, abs=1e-15)  # clipped to 1e-7 away from 0/1
    assert result["score"] == pytest.approx(1.0, abs=1e-9)
    assert result["accuracy"] == 1.0
    assert result["roc_auc"] == 1.0 and result["pr_auc"] == 1.0
    assert result["eer"] == 0.0


def test_robustness_blend() -> None:
    assert metrics.robustness_blend(0.9, 0.4) == pytest.approx(0.8 * 0.9 + 0.2 * 0.4)


# ------------------------------------------------------------------------------------ MCC and Brier


def _hand_mcc(tp: float, tn: float, fp: float, fn: float) -> float:
    den = (tp + fp) * (tp + fn) * (tn + fp) * (tn + fn)
    return 0.0 if den == 0 else (tp * tn - fp * fn) / math.sqrt(den)


def test_mcc_matches_confusion_matrix_formula_with_weights() -> None:
    labels = np.array([1, 1, 1, 0, 0, 0, 0, 1])
    preds = np.array([1, 0, 1, 0, 1, 0, 0, 1])
    weight = np.array([1.0, 2.0, 0.5, 1.0, 3.0, 1.0, 1.0, 1.0])
    # weighted counts by hand: tp = 1 + 0.5 + 1, fn = 2, fp = 3, tn = 1 + 1 + 1
    assert metrics.mcc(labels, preds, sample_weight=weight) == pytest.approx(_hand_mcc(2.5, 3.0, 3.0, 2.0))
    assert metrics.mcc(labels, preds) == pytest.approx(_hand_mcc(3, 3, 1, 1))


def test_mcc_is_zero_when_undefined() -> None:
    assert metrics.mcc([0, 0, 1, 1], [1, 1, 1, 1]) == 0.0  # one predicted class
    assert metrics.mcc([1, 1, 1], [1, 1, 1]) == 0.0  # one class at all
    assert metrics.mcc([], []) == 0.0


def test_brier_clips_and_handles_empty() -> None:
    assert metrics.brier([], []) == 0.25
    assert metrics.brier([1.0, 0.0], [0, 1]) == pytest.approx((1 - 1e-7) ** 2)
    assert metrics.brier([0.2, 0.7, 0.9], [0, 1, 2]) == pytest.approx((0.04 + 0.09 + 0.01) / 3)


def test_cross_entropy_matches_torch() -> None:
    rng = np.random.default_rng(0)
    p = rng.uniform(0.01, 0.99, 200)
    y = rng.integers(0, 2, 200)
    expected = torch.nn.functional.binary_cross_entropy(torch.tensor(p), torch.tensor(y, dtype=torch.float64))
    assert metrics.binary_cross_entropy(p, y) == pytest.approx(float(expected), rel=1e-10)


# -------------------------------------------------------------------------------------------- ECE


def _numpy_ece(labels: np.ndarray, prob: np.ndarray, n_bins: int = 15) -> float:
    total = 0.0
    for k in range(n_bins):
        lo, hi = k / n_bins, (k + 1) / n_bins
        inside = (prob >= lo) & (prob < hi) if k < n_bins - 1 else (prob >= lo) & (prob <= hi)
        if inside.any():
            total += inside.sum() / prob.size * abs(labels[inside].mean() - prob[inside].mean())
    return total


def test_ece_matches_independent_numpy_loop() -> None:
    rng = np.random.default_rng(1)
    prob = rng.uniform(0, 1, 5000)
    labels = (rng.uniform(0, 1, 5000) < prob**2).astype(int)  # miscalibrated on purpose
    ece = metrics.expected_calibration_error(labels, prob)
    assert ece == pytest.approx(_numpy_ece(labels, prob), abs=1e-10)
    assert ece > 0.05
    assert metrics.binary_metrics(labels, prob)["ece"] == pytest.approx(ece)


def test_ece_puts_probability_one_in_the_last_of_15_bins() -> None:
    # saturated p(fake) = 1.0 (common for overconfident heads) used to form a 16th bin of its own
    labels, prob = np.array([0, 1]), np.array([1.0, 0.94])
    assert metrics.expected_calibration_error(labels, prob) == pytest.approx(0.47, abs=1e-12)  # not 0.53
    rng = np.random.default_rng(3)
    prob = np.concatenate([rng.uniform(0, 1, 300), np.ones(50)])
    labels = (rng.uniform(0, 1, 350) < 0.6).astype(int)
    assert metrics.expected_calibration_error(labels, prob) == pytest.approx(_numpy_ece(labels, prob), abs=1e-10)
    stats = metrics.calibration_bins(labels, prob)
    weights = stats["counts"] / prob.size
    from_bins = np.nansum(weights * np.abs(stats["mean_prob"] - stats["fake_rate"]))
    assert metrics.expected_calibration_error(labels, prob) == pytest.approx(from_bins, abs=1e-10)


def test_ece_of_calibrated_probabilities_is_small() -> None:
    rng = np.random.default_rng(2)
    prob = rng.uniform(0, 1, 50_000)
    labels = (rng.uniform(0, 1, 50_000) < prob).astype(int)
    assert metrics.expected_calibration_error(labels, prob) < 0.02


def test_calibration_bins_counts_and_means() -> None:
    prob = np.array([0.01, 0.02, 0.5, 0.99, 1.0])
    labels = np.array([0, 1, 1, 1, 1])
    stats = metrics.calibration_bins(labels, prob, n_bins=10)
    assert stats["counts"].tolist() == [2, 0, 0, 0, 0, 1, 0, 0, 0, 2]
    assert stats["mean_prob"][0] == pytest.approx(0.015)
    assert stats["fake_rate"][0] == pytest.approx(0.5)
    assert np.isnan(stats["fake_rate"][1])


# -------------------------------------------------------------------------------------------- EER


def test_eer_exact_crossing() -> None:
    labels = [0, 0, 0, 0, 1, 1, 1, 1]
    scores = [0.1, 0.2, 0.3, 0.6, 0.4, 0.7, 0.8, 0.9]
    # at threshold 0.6: one real of four above (FPR 1/4), one fake of four below (FNR 1/4)
    eer, threshold = metrics.equal_error_rate(labels, scores)
    assert eer == pytest.approx(0.25)
    assert threshold == pytest.approx(0.6)


def test_eer_interpolated_crossing() -> None:
    labels = [0, 0, 0, 1, 1]
    scores = [0.1, 0.2, 0.3, 0.25, 0.8]
    # threshold 0.3: FPR 1/3, FNR 1/2; threshold 0.25: FPR 1/3, FNR 0 -> FNR falls through 1/3
    # a third of the way along that segment.
    eer, threshold = metrics.equal_error_rate(labels, scores)
    assert eer == pytest.approx(1 / 3)
    assert threshold == pytest.approx(0.3 + (0.25 - 0.3) / 3)


def test_eer_undefined_for_one_class() -> None:
    assert metrics.equal_error_rate([1, 1, 1], [0.2, 0.4, 0.9]) == (None, None)


# --------------------------------------------------------------------------- logits -> prob / pred


def test_prob_and_predictions_two_classes() -> None:
    logits = torch.tensor([[0.0, 2.0], [1.0, -1.0], [0.5, 0.5]])
    expected = torch.softmax(logits.double(), 1)[:, 1].numpy()
    np.testing.assert_allclose(metrics.prob_fake_from_logits(logits), expected, rtol=1e-12)
    assert metrics.predictions_from_logits(logits).tolist() == [1, 0, 0]  # tie -> argmax 0 -> real


def test_prob_and_predictions_three_classes() -> None:
    logits = np.array([[2.0, 1.0, 0.0], [0.0, 1.0, 3.0], [1.0, 0.8, 0.8], [0.0, 1.0, -1.0]])
    softmax = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    np.testing.assert_allclose(metrics.prob_fake_from_logits(logits), 1 - softmax[:, 0], rtol=1e-12)
    # third row: p(fake) = 1 - p(real) > 0.5 although argmax is "real" -> prediction stays real
    assert metrics.prob_fake_from_logits(logits)[2] > 0.5
    assert metrics.predictions_from_logits(logits).tolist() == [0, 1, 0, 1]


def test_prob_and_predictions_single_logit() -> None:
    logits = torch.tensor([[-2.0], [0.0], [3.0]])
    np.testing.assert_allclose(metrics.prob_fake_from_logits(logits), 1 / (1 + np.exp([2.0, 0.0, -3.0])))
    assert metrics.predictions_from_logits(logits).tolist() == [0, 0, 1]


# ------------------------------------------------------------------------------------ full report


def test_binary_metrics_single_class_does_not_crash() -> None:
    result = metrics.binary_metrics([1, 1, 1, 1], [0.9, 0.8, 0.4, 0.7])
    assert result["roc_auc"] is None and result["pr_auc"] is None and result["eer"] is None
    assert result["accuracy"] == 0.75
    assert result["n"] == 4 and result["n_fake"] == 4 and result["n_real"] == 0


def test_binary_metrics_per_dataset_breakdown() -> None:
    labels = np.array([0, 0, 0, 1, 1, 1, 0, 1])
    prob = np.array([0.1, 0.7, 0.2, 0.9, 0.4, 0.8, 0.3, 0.6])
    names = ["real_a"] * 3 + ["fake_b"] * 3 + ["mixed"] * 2
    result = metrics.binary_metrics(labels, prob, datasets=names)
    table = result["per_dataset"]
    assert set(table) == {"real_a", "fake_b", "mixed"}
    assert table["real_a"] == {
        "n": 3,
        "n_real": 3,
        "n_fake": 0,
        "accuracy": pytest.approx(2 / 3),
        "n_pred_fake": 1,
        "n_pred_real": 2,
        "mean_prob_fake": pytest.approx(1 / 3),
        "brier": pytest.approx((0.01 + 0.49 + 0.04) / 3),
    }
    assert table["fake_b"]["n_pred_fake"] == 2 and "mcc" not in table["fake_b"]
    assert table["mixed"]["mcc"] == 1.0 and table["mixed"]["roc_auc"] == 1.0
    assert result["n"] == 8 and result["accuracy"] == pytest.approx(6 / 8)


def test_binary_metrics_three_class_labels_and_predictions() -> None:
    logits = np.array([[2.0, 0.0, 0.0], [1.0, 0.8, 0.8], [0.0, 3.0, 0.0], [0.0, 0.0, 3.0]])
    labels = np.array([0, 0, 1, 2])
    prob = metrics.prob_fake_from_logits(logits)
    result = metrics.binary_metrics(labels, prob, preds=metrics.predictions_from_logits(logits))
    assert result["accuracy"] == 1.0 and result["mcc"] == 1.0
    assert result["brier"] == pytest.approx(np.mean((prob - np.array([0, 0, 1, 1])) ** 2))
    # with the default threshold rule the second sample (p(fake) > 0.5) would count as wrong
    assert metrics.binary_metrics(labels, prob)["accuracy"] == 0.75


def test_binary_metrics_accepts_tensors_of_any_dtype() -> None:
    labels = torch.tensor([0, 1, 1, 0, 1])
    prob = torch.tensor([0.25, 0.75, 0.5, 0.125, 1.0])
    reference = metrics.binary_metrics(labels.numpy(), prob.numpy())
    assert metrics.binary_metrics(labels, prob.to(torch.bfloat16)) == reference
    assert metrics.binary_metrics(labels.tolist(), prob.tolist()) == reference


def test_binary_metrics_rejects_mismatched_lengths() -> None:
    with pytest.raises(ValueError, match="differ"):
        metrics.binary_metrics([0, 1, 1], [0.2, 0.8])


def test_nll_from_logits_matches_cross_entropy() -> None:
    logits = torch.randn(50, 3, generator=torch.Generator().manual_seed(0))
    labels = torch.randint(0, 3, (50,), generator=torch.Generator().manual_seed(1))
    assert metrics.nll_from_logits(logits, labels) == pytest.approx(
        float(torch.nn.functional.cross_entropy(logits.double(), labels)), rel=1e-12
    )


# ------------------------------------------------------------------------------------------ plots


def _assert_png(path) -> None:
    assert path.exists() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(path) as image:
        image.verify()
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp") or p.name.startswith(".")]


def test_plots_write_valid_pngs(tmp_path) -> None:
    rng = np.random.default_rng(3)
    prob = rng.uniform(0, 1, 300)
    labels = (rng.uniform(0, 1, 300) < prob).astype(int)
    for path in (
        reliability_diagram(labels, prob, tmp_path / "reliability.png", title="val"),
        roc_curve_plot(labels, prob, tmp_path / "roc.png"),
        pr_curve_plot(labels, prob, tmp_path / "pr.png"),
        roc_curve_plot(np.ones(5), prob[:5], tmp_path / "roc_one_class.png"),
        pr_curve_plot(np.zeros(5), prob[:5], tmp_path / "pr_one_class.png"),
    ):
        _assert_png(path)
    rows = [
        {"temperature": t, "score": 0.5 + 0.01 * i, "brier": 0.2, "ece": 0.05, "nll": 0.6}
        for i, t in enumerate([0.5, 1.0, 2.0])
    ]
    _assert_png(temperature_sweep_plot(rows, tmp_path / "plots" / "sweep.png", chosen=1.0))


def test_multiclass_score_matches_gorodkin_rk_and_k_class_brier() -> None:
    from detectors.metrics import benchmark_score, multiclass_metrics

    y = np.array([0, 0, 1, 1, 2, 2, 2, 0])
    p = np.array(
        [
            [0.7, 0.2, 0.1],
            [0.4, 0.5, 0.1],
            [0.1, 0.8, 0.1],
            [0.2, 0.3, 0.5],
            [0.1, 0.1, 0.8],
            [0.2, 0.2, 0.6],
            [0.3, 0.6, 0.1],
            [0.9, 0.05, 0.05],
        ]
    )
    result = multiclass_metrics(y, p)
    # Gorodkin's R_K from counts: (c*s - sum p_k t_k) / sqrt((s^2 - sum p_k^2)(s^2 - sum t_k^2))
    pred = p.argmax(1)
    s, c = len(y), int((pred == y).sum())
    pk = np.bincount(pred, minlength=3)
    tk = np.bincount(y, minlength=3)
    rk = (c * s - (pk * tk).sum()) / math.sqrt((s**2 - (pk**2).sum()) * (s**2 - (tk**2).sum()))
    brier_k = np.mean([sum((p[i, k] - (y[i] == k)) ** 2 for k in range(3)) for i in range(s)])
    assert result["mcc"] == pytest.approx(rk, abs=1e-12)
    assert result["brier"] == pytest.approx(brier_k, abs=1e-9)
    assert result["brier_baseline"] == pytest.approx(2 / 3)
    mcc_norm = ((rk + 1) / 2) ** 1.2
    brier_norm = max(0.0, (2 / 3 - brier_k) / (2 / 3)) ** 1.8
    assert result["score"] == pytest.approx(math.sqrt(mcc_norm * brier_norm), abs=1e-9)
    assert benchmark_score(rk, brier_k, 2 / 3) == pytest.approx(result["score"])
    # uniform probabilities score ~0 (the multiclass analogue of p = 0.5 everywhere)
    assert multiclass_metrics(y, np.full((8, 3), 1 / 3))["score"] < 1e-5
