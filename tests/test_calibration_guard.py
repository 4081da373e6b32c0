"""Calibration guard: a fitted calibrator is consistent (bias fitted at the temperature it
returns), never worse than no calibration on its split, and a split too small to trust is warned
about, fitted with a prior towards the identity, and recorded in the run's metrics.json/summary.json."""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from calibration.calibrator import (
    MAX_TEMPERATURE,
    MIN_SAMPLES_PER_CLASS,
    MIN_TEMPERATURE,
    CalibrationWarning,
    LogitCalibrator,
    SmallCalibrationSetWarning,
)

# The issue's case: 5 calibration samples whose logits are nearly constant (a detector that has not
# learnt much). The old fit clamped T at 0.01 but kept the bias fitted for a smaller T: T = 0.01,
# bias -+30, NLL 23.5 against 0.68 uncalibrated, p(fake) ~ 1e-20 for every sample.
NEAR_CONSTANT = torch.tensor(
    [[0.0979, -0.1138], [0.0995, -0.0955], [0.1079, -0.1109], [0.0944, -0.1093], [0.1005, -0.1008]]
)
NEAR_CONSTANT_LABELS = torch.tensor([0, 1, 0, 1, 0])


def nll(calibrator: LogitCalibrator, logits: torch.Tensor, labels: torch.Tensor) -> float:
    with torch.no_grad():
        return float(F.cross_entropy(calibrator(logits.float()).double(), labels))


def fit_quietly(calibrator: LogitCalibrator, *args, **kwargs) -> LogitCalibrator:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CalibrationWarning)
        return calibrator.fit(*args, **kwargs)


def test_issue_case_five_near_constant_samples_never_wrecks_the_model() -> None:
    identity = nll(LogitCalibrator(2), NEAR_CONSTANT, NEAR_CONSTANT_LABELS)
    with pytest.warns(SmallCalibrationSetWarning, match=r"3 real, 2 fake.*fewer than 30"):
        calibrator = LogitCalibrator(2).fit(NEAR_CONSTANT, NEAR_CONSTANT_LABELS)
    fitted = nll(calibrator, NEAR_CONSTANT, NEAR_CONSTANT_LABELS)
    assert fitted <= identity + 1e-9  # was 23.5 against 0.68
    with torch.no_grad():
        prob_fake = calibrator(NEAR_CONSTANT).softmax(-1)[:, 1]
    assert ((prob_fake > 0.05) & (prob_fake < 0.95)).all()  # was ~1e-20 everywhere: every file "real"
    assert 0.1 < calibrator.temperature < 10  # the prior keeps 5 samples from setting T to a bound
    report = calibrator.last_fit
    assert report["small"] and report["regularised"] and report["per_class"] == [3, 2]
    assert report["min_per_class"] == MIN_SAMPLES_PER_CLASS
    assert any("fewer than 30" in text for text in report["warnings"])
    assert report["nll_fitted"] <= report["nll_identity"]


def test_bound_is_enforced_inside_the_fit_so_the_bias_belongs_to_the_temperature() -> None:
    # without the prior the maximum-likelihood T of this set lies below the bound: the fit must stop at
    # the bound with the bias that is best *there* (zero gradient in the bias), not the unclamped one's
    calibrator = fit_quietly(LogitCalibrator(2), NEAR_CONSTANT, NEAR_CONSTANT_LABELS, regularise=False)
    assert calibrator.temperature == pytest.approx(MIN_TEMPERATURE, rel=1e-3)
    assert not calibrator.last_fit["regularised"]
    bias = torch.tensor(calibrator.bias, dtype=torch.float64, requires_grad=True)
    loss = F.cross_entropy(NEAR_CONSTANT.double() / calibrator.temperature + bias, NEAR_CONSTANT_LABELS)
    loss.backward()
    assert float(bias.grad.abs().max()) < 1e-4
    assert float(loss.detach()) < nll(LogitCalibrator(2), NEAR_CONSTANT, NEAR_CONSTANT_LABELS)
    # and at the upper bound (logits far too sharp for a coin-flip set)
    sharp = torch.tensor([[20.0, -20.0], [20.0, -20.0], [-20.0, 20.0], [-20.0, 20.0]]) * 1e3
    upper = fit_quietly(LogitCalibrator(2), sharp, torch.tensor([0, 1, 1, 0]), regularise=False)
    assert upper.temperature == pytest.approx(MAX_TEMPERATURE, rel=1e-6)  # float32 parameter rounding
    assert nll(upper, sharp, torch.tensor([0, 1, 1, 0])) <= nll(LogitCalibrator(2), sharp, torch.tensor([0, 1, 1, 0]))


def test_a_fit_worse_than_identity_falls_back_to_identity_with_a_warning(monkeypatch) -> None:
    # fault injection: an optimiser returning the old inconsistent pair (T clamped at 0.01, bias fitted
    # for a far smaller T) must not reach the exported model
    def broken(self, z, y, fit_bias, max_iter, targets=None, prior_weight=0.0):
        return torch.tensor(float(torch.log(torch.tensor(MIN_TEMPERATURE)))), torch.tensor(
            [30.11, -30.11], dtype=torch.float64
        )

    monkeypatch.setattr(LogitCalibrator, "_minimise", broken)
    with pytest.warns(CalibrationWarning, match="worse than none"):
        calibrator = LogitCalibrator(2).fit(NEAR_CONSTANT, NEAR_CONSTANT_LABELS)
    assert calibrator.is_identity and calibrator.method == "identity"
    assert calibrator.last_fit["fallback_to_identity"]
    assert any("worse than none" in text for text in calibrator.last_fit["warnings"])


def test_a_large_split_is_plain_maximum_likelihood_without_a_small_split_warning() -> None:
    generator = torch.Generator().manual_seed(3)
    n = 2 * MIN_SAMPLES_PER_CLASS * 10
    margin = 2 * torch.randn(n, generator=generator, dtype=torch.float64)  # true log-odds of "fake"
    labels = (torch.rand(n, generator=generator, dtype=torch.float64) < torch.sigmoid(margin)).long()
    logits = torch.stack([torch.zeros(n, dtype=torch.float64), margin], 1) * 3  # overconfident by 3x
    with warnings.catch_warnings():
        warnings.simplefilter("error", CalibrationWarning)
        calibrator = LogitCalibrator(2).fit(logits, labels)
    assert not calibrator.last_fit["small"] and not calibrator.last_fit["regularised"]
    assert calibrator.last_fit["warnings"] == []
    assert calibrator.temperature == pytest.approx(3.0, rel=0.15)


def test_small_split_warning_uses_the_smallest_class() -> None:
    # 100 real but only 5 fake samples: the fake side decides
    generator = torch.Generator().manual_seed(1)
    labels = torch.tensor([0] * 100 + [1] * 5)
    logits = torch.stack([torch.zeros(105), (labels * 2 - 1) + torch.randn(105, generator=generator)], 1)
    with pytest.warns(SmallCalibrationSetWarning, match="100 real, 5 fake"):
        LogitCalibrator(2).fit(logits, labels)


def test_fit_run_records_calibration_warnings(tmp_path, tiny_dinov3) -> None:
    """A real (tiny) fit: the small calibration split's warning lands in metrics.json and summary.json."""
    sys.path.insert(0, str(Path(__file__).parent))
    from image_fixtures import write_image_set

    from detectors.image.fit import IMAGE
    from detectors.training.fit import run_fit

    data = write_image_set(tmp_path / "data", n_per_class=12)
    run = run_fit(
        "image",
        IMAGE,
        ["dinov3_image"],
        "dinov3_image",
        [
            "--data",
            str(data),
            "--backbone",
            str(tiny_dinov3),
            "--tuning",
            "frozen",
            "--output",
            str(tmp_path / "run"),
            "--max-epochs",
            "1",
            "--num-workers",
            "0",
            "--batch-size",
            "8",
            "--set",
            "data.crop=resize",
            "--set",
            "model.image_size=32",
            "--set",
            "model.head_hidden=[8]",
        ],
    )
    metrics = json.loads((run / "metrics.json").read_text())
    fit = metrics["calibration_fit"]
    assert fit["small"] and fit["n"] == sum(fit["per_class"]) and fit["nll_fitted"] <= fit["nll_identity"]
    summary = json.loads((run / "summary.json").read_text())
    assert any("too few to trust" in text for text in summary["calibration_warnings"])
