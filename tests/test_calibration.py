"""Calibration losses, LogitCalibrator and the temperature sweep, against independent computations."""

from __future__ import annotations

import csv
import json
import math
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import load_file, save_file
from sklearn.linear_model import LogisticRegression

from calibration import FocalBrierLoss, LogitCalibrator, ScoreSurrogateLoss, build_loss, temperature_sweep
from calibration.calibrator import SmallCalibrationSetWarning
from calibration.losses import CompositeLoss, fake_probability
from calibration.sweep import DEFAULT_TEMPERATURES, choose_temperature, main
from detectors import metrics
from detectors.errors import ConfigError


def _synthetic(n: int, num_classes: int = 2, scale: float = 1.5, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """True logits and labels sampled from their softmax: a perfectly calibrated model."""
    generator = torch.Generator().manual_seed(seed)
    true_logits = torch.randn(n, num_classes, generator=generator, dtype=torch.float64) * scale
    labels = torch.multinomial(torch.softmax(true_logits, 1), 1, generator=generator).squeeze(1)
    return true_logits, labels


# ------------------------------------------------------------------------------------------ losses


@pytest.mark.parametrize("num_classes", [2, 3])
def test_focal_brier_with_zero_gamma_and_weight_is_cross_entropy(num_classes: int) -> None:
    logits, labels = _synthetic(1000, num_classes)
    logits = (logits * 4).float()
    assert torch.equal(FocalBrierLoss(gamma=0.0, brier_weight=0.0)(logits, labels), F.cross_entropy(logits, labels))
    assert torch.equal(build_loss({"name": "cross_entropy"})(logits, labels), F.cross_entropy(logits, labels))


@pytest.mark.parametrize("num_classes", [2, 3])
def test_focal_brier_matches_numpy_definition(num_classes: int) -> None:
    logits, labels = _synthetic(64, num_classes, scale=3.0, seed=1)
    weight = torch.rand(64, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    z, y = logits.numpy(), labels.numpy()
    probs = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    p_t = probs[np.arange(64), y]
    p_fake = probs[:, 1] if num_classes == 2 else 1 - probs[:, 0]
    per_sample = -((1 - p_t) ** 2.0) * np.log(p_t) + 0.7 * (p_fake - (y != 0)) ** 2
    loss = FocalBrierLoss(gamma=2.0, brier_weight=0.7)
    assert float(loss(logits, labels)) == pytest.approx(per_sample.mean(), rel=1e-10)
    assert float(loss(logits, labels, sample_weight=weight)) == pytest.approx(
        np.average(per_sample, weights=weight.numpy()), rel=1e-10
    )
    none = FocalBrierLoss(gamma=2.0, brier_weight=0.7, reduction="none")(logits, labels)
    np.testing.assert_allclose(none.numpy(), per_sample, rtol=1e-10)


def test_focal_brier_is_stable_for_extreme_logits() -> None:
    logits = torch.tensor([[1e4, -1e4], [-1e4, 1e4], [1e4, -1e4], [0.0, 0.0]], requires_grad=True)
    labels = torch.tensor([0, 1, 1, 0])
    for gamma in (0.0, 0.5, 2.0):
        loss = FocalBrierLoss(gamma=gamma, brier_weight=1.0)(logits, labels)
        (grad,) = torch.autograd.grad(loss, logits)
        assert torch.isfinite(loss) and torch.isfinite(grad).all()
        assert float(loss.detach()) > 1e3  # the confidently wrong sample dominates: -log p_t = 2e4
    # a single fake-vs-real logit behaves as the pair (0, z)
    single = torch.tensor([[2.0], [-1.0]])
    pair = torch.cat([torch.zeros_like(single), single], 1)
    target = torch.tensor([1, 1])
    assert torch.equal(FocalBrierLoss()(single, target), FocalBrierLoss()(pair, target))


def test_fake_probability_follows_benchmark_rule() -> None:
    for num_classes in (1, 2, 3):
        logits, _ = _synthetic(20, num_classes, seed=num_classes)
        np.testing.assert_allclose(
            fake_probability(logits).numpy(), metrics.prob_fake_from_logits(logits), rtol=1e-12, atol=1e-15
        )


@pytest.mark.parametrize(
    ("labels", "probs"),
    [
        ([0, 0, 0, 1, 1, 1, 1, 0, 1, 0], [0, 0, 0, 1, 1, 1, 1, 0, 1, 1]),  # one false positive
        ([0, 1] * 10, [0, 1] * 10),  # perfect
        ([0] * 12 + [1] * 8, [0] * 11 + [1] + [1] * 7 + [0]),  # FP and FN, imbalanced
        ([0] * 15 + [1] * 5, [0] * 13 + [1, 1] + [0, 0, 1, 1, 1]),  # Brier 0.2, just inside the exact range
    ],
)
def test_score_surrogate_equals_benchmark_on_hard_probabilities(labels: list[int], probs: list[int]) -> None:
    y = torch.tensor(labels)
    p = torch.tensor(probs, dtype=torch.float64)
    expected = 1 - metrics.benchmark_score(metrics.mcc(y, p.long()), metrics.brier(p, y))
    assert float(ScoreSurrogateLoss().from_probabilities(p, y)) == pytest.approx(expected, abs=1e-6)


def test_score_surrogate_weighted_counts() -> None:
    y = torch.tensor([0, 0, 1, 1, 1, 0])
    p = torch.tensor([0.0, 1.0, 1.0, 1.0, 0.0, 0.0], dtype=torch.float64)
    w = torch.tensor([1.0, 0.5, 2.0, 1.0, 1.0, 3.0], dtype=torch.float64)
    weighted_brier = float(np.average((p - y).numpy() ** 2, weights=w.numpy()))
    expected = 1 - metrics.benchmark_score(metrics.mcc(y, p.long(), sample_weight=w), weighted_brier)
    assert float(ScoreSurrogateLoss().from_probabilities(p, y, w)) == pytest.approx(expected, abs=1e-6)


def test_score_surrogate_gradients_are_finite() -> None:
    surrogate = ScoreSurrogateLoss()
    cases = [
        (torch.randn(32, 2), torch.randint(0, 2, (32,))),
        (torch.zeros(16, 2), torch.tensor([0, 1] * 8)),  # p = 0.5 everywhere
        (torch.zeros(8, 2), torch.ones(8, dtype=torch.long)),  # one class only
        (torch.tensor([[50.0, -50.0], [-50.0, 50.0]] * 4), torch.tensor([1, 0] * 4)),  # confidently wrong
        (torch.randn(12, 3), torch.randint(0, 3, (12,))),
    ]
    for logits, labels in cases:
        logits = logits.clone().requires_grad_(True)
        loss = surrogate(logits, labels)
        (grad,) = torch.autograd.grad(loss, logits)
        assert torch.isfinite(loss) and torch.isfinite(grad).all()
        assert 0.0 <= float(loss.detach()) <= 1.0
    # a confidently wrong batch (true score 1e-6) scores near 0 and still gets a gradient that
    # points towards the right answer, thanks to the soft floor
    logits = torch.tensor([[2.0, -2.0], [-2.0, 2.0]] * 4, requires_grad=True)
    labels = torch.tensor([1, 0] * 4)
    loss = surrogate(logits, labels)
    assert float(loss.detach()) > 1 - 0.05**0.9
    loss.backward()
    assert (logits.grad[labels == 1, 1] < 0).all() and (logits.grad[labels == 0, 1] > 0).all()


def test_score_surrogate_optimisation_increases_true_score() -> None:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(512, 2, generator=generator)
    labels = (x[:, 0] + 0.5 * x[:, 1] + 0.5 * torch.randn(512, generator=generator) > 0).long()
    # start badly: a weak, partly wrong direction with little confidence
    weight = torch.tensor([[0.0, 0.0], [-0.05, 0.1]], requires_grad=True)
    bias = torch.zeros(2, requires_grad=True)

    def true_score() -> float:
        with torch.no_grad():
            logits = x @ weight.T + bias
        return metrics.binary_metrics(
            labels, metrics.prob_fake_from_logits(logits), metrics.predictions_from_logits(logits)
        )["score"]

    before = true_score()
    optimizer = torch.optim.Adam([weight, bias], lr=0.1)
    surrogate = ScoreSurrogateLoss()
    for _ in range(40):
        optimizer.zero_grad()
        surrogate(x @ weight.T + bias, labels).backward()
        optimizer.step()
    after = true_score()
    assert before < 0.01 and after > 0.5
    # about as good as the calibrated logistic-regression fit of the same data
    reference = LogisticRegression().fit(x.numpy(), labels.numpy()).predict_proba(x.numpy())[:, 1]
    assert after > metrics.binary_metrics(labels, reference)["score"] - 0.02


def test_build_loss_variants_and_errors() -> None:
    logits, labels = _synthetic(50, 2, seed=3)
    assert isinstance(build_loss(None), FocalBrierLoss)
    focal = build_loss({"name": "focal_brier", "gamma": 1.0, "brier_weight": 0.5})
    assert (focal.gamma, focal.brier_weight) == (1.0, 0.5)
    assert isinstance(build_loss({"name": "score_surrogate"}), ScoreSurrogateLoss)
    combined = build_loss({"name": "focal_brier+score", "gamma": 1.0, "surrogate_weight": 0.3})
    assert isinstance(combined, CompositeLoss)
    expected = FocalBrierLoss(gamma=1.0)(logits, labels) + 0.3 * ScoreSurrogateLoss()(logits, labels)
    assert float(combined(logits, labels)) == pytest.approx(float(expected), rel=1e-12)
    with pytest.raises(ConfigError, match="loss.name"):
        build_loss({"name": "hinge"})
    with pytest.raises(ConfigError, match="loss.gamma"):
        build_loss({"name": "focal_brier", "gamma": -1})
    with pytest.raises(ConfigError, match="loss.gama"):
        build_loss({"name": "focal_brier", "gama": 2})


# -------------------------------------------------------------------------------------- calibrator


def test_calibrator_starts_as_identity_and_resets() -> None:
    calibrator = LogitCalibrator(3)
    logits = torch.randn(5, 3)
    assert torch.equal(calibrator(logits), logits)
    assert calibrator.state() == {"temperature": 1.0, "bias": [0.0, 0.0, 0.0], "method": "identity"}
    calibrator.set(2.0, [0.1, 0.0, -0.1])
    assert not calibrator.is_identity
    torch.testing.assert_close(calibrator(logits), logits / 2 + torch.tensor([0.1, 0.0, -0.1]))
    assert calibrator.reset().is_identity


def test_calibrator_is_frozen_unless_requested() -> None:
    logits = torch.randn(4, 2, requires_grad=True)
    calibrator = LogitCalibrator(2)
    calibrator(logits).sum().backward()
    assert logits.grad is not None  # gradients still pass through to the model
    assert calibrator.log_temperature.grad is None and calibrator.logit_bias.grad is None
    assert not any(p.requires_grad for p in calibrator.parameters())

    trainable = LogitCalibrator(2, trainable=True)
    (trainable(logits) * torch.tensor([1.0, -1.0])).sum().backward()
    assert trainable.log_temperature.grad is not None and trainable.logit_bias.grad is not None


@pytest.mark.parametrize("num_classes", [2, 3])
def test_calibrator_recovers_known_temperature_and_bias(num_classes: int) -> None:
    true_logits, labels = _synthetic(20_000, num_classes, seed=4)
    t0 = 2.5
    b0 = torch.linspace(-0.4, 0.4, num_classes, dtype=torch.float64)
    observed = ((true_logits - b0) * t0).float()  # so that observed / t0 + b0 == true logits
    calibrator = LogitCalibrator(num_classes).fit(observed, labels)
    assert calibrator.temperature == pytest.approx(t0, rel=0.05)
    np.testing.assert_allclose(np.diff(calibrator.bias), np.diff(b0.numpy()), atol=0.08)
    assert sum(calibrator.bias) == pytest.approx(0.0, abs=1e-6)  # shift pinned
    assert calibrator.method == "lbfgs"
    assert not any(p.requires_grad for p in calibrator.parameters())


def test_calibrator_fit_reduces_nll_and_ece() -> None:
    true_logits, labels = _synthetic(5000, 2, seed=5)
    overconfident = true_logits * 4 + torch.tensor([0.0, 1.0], dtype=torch.float64)
    calibrator = LogitCalibrator(2).fit(overconfident, labels)
    with torch.no_grad():
        calibrated = calibrator(overconfident.float()).double()
    for before, after in [(overconfident, calibrated)]:
        assert metrics.nll_from_logits(after, labels) < 0.8 * metrics.nll_from_logits(before, labels)
        ece_before = metrics.expected_calibration_error(labels, metrics.prob_fake_from_logits(before))
        ece_after = metrics.expected_calibration_error(labels, metrics.prob_fake_from_logits(after))
        assert ece_after < 0.03 < ece_before


def test_calibrator_fit_without_grad_context_and_returns_self() -> None:
    true_logits, labels = _synthetic(2000, 2, seed=6)
    observed = true_logits * 2
    reference = LogitCalibrator(2).fit(observed, labels).temperature
    with torch.no_grad():
        calibrator = LogitCalibrator(2)
        assert calibrator.fit(observed, labels) is calibrator
    assert calibrator.temperature == pytest.approx(reference)
    with torch.inference_mode():
        inside = LogitCalibrator(2).fit(observed.float(), labels)
    assert inside.temperature == pytest.approx(reference, rel=1e-5)
    assert torch.is_grad_enabled()


def test_calibrator_single_class_fits_temperature_only() -> None:
    true_logits, labels = _synthetic(4000, 2, seed=7)
    fake = labels == 1
    observed = true_logits[fake] * 3
    with pytest.warns(UserWarning, match="one class"):
        calibrator = LogitCalibrator(2).fit(observed, labels[fake])
    assert calibrator.bias == [0.0, 0.0]
    assert calibrator.method == "temperature_only"
    assert 1.0 < calibrator.temperature < 10.0

    # every sample right and confident: no ML optimum -> Platt's targets keep T finite
    with pytest.warns(UserWarning) as record:
        degenerate = LogitCalibrator(2).fit(torch.tensor([[-3.0, 3.0]] * 10), torch.ones(10, dtype=torch.long))
    assert degenerate.method == "platt" and 1.0 < degenerate.temperature < 100.0
    assert any("separated" in str(warning.message) for warning in record)


def test_calibrator_three_classes_with_an_absent_class_keeps_its_bias() -> None:
    # A 3-class calibration set without semisynthetic samples (class 2): its bias is unidentifiable.
    # An unconstrained fit drove it to about -16, so a confidently semisynthetic image came out at
    # p(fake) ~ 0.5 after calibration.
    true_logits, labels = _synthetic(3000, 3, seed=11)
    keep = labels != 2
    observed, labels = (true_logits[keep] * 2).float(), labels[keep]
    with pytest.warns(UserWarning, match=r"absent"):
        calibrator = LogitCalibrator(3).fit(observed, labels)
    bias = calibrator.bias
    assert bias[2] == pytest.approx((bias[0] + bias[1]) / 2, abs=1e-6)
    with torch.no_grad():
        semisynthetic = calibrator(torch.tensor([[0.0, 0.0, 8.0]]))
    assert metrics.prob_fake_from_logits(semisynthetic)[0] > 0.9
    # optimal under that constraint: the NLL gradient in log T and in the present classes' margin vanishes
    log_t = torch.tensor(math.log(calibrator.temperature), dtype=torch.float64, requires_grad=True)
    margin = torch.tensor(bias[1] - bias[0], dtype=torch.float64, requires_grad=True)
    offset = torch.stack([-margin / 2, margin / 2, torch.zeros((), dtype=torch.float64)])
    F.cross_entropy(observed.double() / log_t.exp() + offset, labels).backward()
    assert abs(float(log_t.grad)) < 1e-4 and abs(float(margin.grad)) < 1e-4
    assert calibrator.temperature == pytest.approx(2.0, rel=0.1)  # the logits were scaled by 2


def test_calibrator_perfectly_separated_set_uses_platt_targets() -> None:
    logits = torch.tensor([[2.0, -1.0], [0.5, 0.0], [-1.0, 1.5], [0.0, 3.0]]) * 0.1  # tiny margins
    labels = torch.tensor([0, 0, 1, 1])
    with pytest.warns(UserWarning, match="separated"):
        calibrator = LogitCalibrator(2).fit(logits, labels)
    assert calibrator.method == "platt"
    # Platt's targets for 2 samples per class: 3/4 on the true class (independent of the implementation);
    # at the solution the gradient of the soft cross-entropy vanishes
    targets = torch.tensor([[0.75, 0.25], [0.75, 0.25], [0.25, 0.75], [0.25, 0.75]], dtype=torch.float64)
    log_t = torch.tensor(math.log(calibrator.temperature), dtype=torch.float64, requires_grad=True)
    bias = torch.tensor(calibrator.bias, dtype=torch.float64, requires_grad=True)
    scaled = logits.double() / log_t.exp() + bias
    objective = -(targets * torch.log_softmax(scaled, dim=1)).sum(dim=1).mean()
    objective.backward()
    assert abs(float(log_t.grad)) < 1e-5
    assert calibrator.temperature < 1.0  # tiny margins get sharpened towards the 3/4 targets
    # labels no threshold on the margin separates give the NLL a finite minimum again
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warnings.simplefilter("ignore", SmallCalibrationSetWarning)  # 2 per class: warned about, and fitted
        fitted = LogitCalibrator(2).fit(logits, torch.tensor([1, 0, 0, 1]))
    assert fitted.method == "lbfgs" and not fitted.is_identity


def test_calibrator_empty_set_stays_identity() -> None:
    with pytest.warns(UserWarning, match="empty"):
        calibrator = LogitCalibrator(2).fit(torch.zeros(0, 2), torch.zeros(0, dtype=torch.long))
    assert calibrator.is_identity
    with pytest.raises(ValueError, match="NaN"):
        LogitCalibrator(2).fit(torch.tensor([[0.0, float("nan")]]), torch.tensor([1]))


def test_calibrator_state_round_trip_and_validation() -> None:
    calibrator = LogitCalibrator(2).set(1.75, [0.25, -0.25], method="lbfgs")
    state = json.loads(json.dumps(calibrator.state()))
    assert state == {"temperature": 1.75, "bias": [0.25, -0.25], "method": "lbfgs"}
    restored = LogitCalibrator.from_state(state)
    logits = torch.randn(6, 2)
    torch.testing.assert_close(restored(logits), calibrator(logits))
    assert restored.method == "lbfgs"
    with pytest.raises(ConfigError, match="calibration.json: temperature"):
        LogitCalibrator(2).load_state({"temperature": -1.0, "bias": [0, 0]}, source="calibration.json")
    with pytest.raises(ConfigError, match="bias"):
        LogitCalibrator(2).load_state({"temperature": 1.0, "bias": [0, 0, 0]})


def test_calibrator_folds_into_linear() -> None:
    linear = torch.nn.Linear(8, 3)
    calibrator = LogitCalibrator(3).set(0.7, [0.3, -0.1, -0.2])
    folded = calibrator.fold_into_linear(linear)
    x = torch.randn(10, 8)
    with torch.no_grad():
        torch.testing.assert_close(folded(x), calibrator(linear(x)))
        no_bias = torch.nn.Linear(8, 3, bias=False)
        torch.testing.assert_close(calibrator.fold_into_linear(no_bias)(x), calibrator(no_bias(x)))


# ------------------------------------------------------------------------------------------ sweep


def test_default_grid() -> None:
    assert len(DEFAULT_TEMPERATURES) == 65
    assert DEFAULT_TEMPERATURES[0] == 1 / 32 and DEFAULT_TEMPERATURES[-1] == 8.0
    assert 1.0 in DEFAULT_TEMPERATURES
    np.testing.assert_allclose(np.diff(np.log(DEFAULT_TEMPERATURES)), math.log(2) / 8)


def test_temperature_sweep_rows_match_direct_computation() -> None:
    true_logits, labels = _synthetic(3000, 2, seed=8)
    observed = true_logits * 2.0
    bias = [0.2, -0.2]
    rows = temperature_sweep(observed, labels, temperatures=[0.5, 1.0, 2.0, 4.0], bias=bias)
    assert [row["temperature"] for row in rows] == [0.5, 1.0, 2.0, 4.0]
    z = observed.numpy() / 2.0 + np.array(bias)
    p = 1 / (1 + np.exp(z[:, 0] - z[:, 1]))
    y = labels.numpy()
    row = rows[2]
    assert row["brier"] == pytest.approx(np.mean((p - y) ** 2), rel=1e-9)
    assert row["nll"] == pytest.approx(-np.mean(np.where(y == 1, np.log(p), np.log1p(-p))), rel=1e-9)
    assert row["mcc"] == pytest.approx(metrics.mcc(y, (z[:, 1] > z[:, 0]).astype(int)))
    assert row["score"] == pytest.approx(metrics.benchmark_score(row["mcc"], row["brier"]))
    assert row["ece"] == pytest.approx(metrics.expected_calibration_error(y, p))
    # the data were generated at T = 2: NLL is lowest there
    assert choose_temperature(rows, "nll") == 2.0


def test_choose_temperature_criteria_and_ties() -> None:
    rows = [
        {"temperature": 0.5, "score": 0.6, "nll": 0.4, "brier": 0.2, "ece": 0.05},
        {"temperature": 1.0, "score": 0.7, "nll": 0.5, "brier": 0.1, "ece": 0.04},
        {"temperature": 2.0, "score": 0.7, "nll": 0.3, "brier": 0.3, "ece": 0.01},
    ]
    assert choose_temperature(rows, "score") == 1.0  # tie with T=2 goes to the one closest to 1
    assert choose_temperature(rows, "nll") == 2.0
    assert choose_temperature(rows, "brier") == 1.0
    assert choose_temperature(rows, "ece") == 2.0
    with pytest.raises(ValueError, match="criterion"):
        choose_temperature(rows, "accuracy")


def _make_run_dir(tmp_path, n: int = 2000):
    true_logits, labels = _synthetic(n, 2, seed=9)
    save_file(
        {"logits": (true_logits * 3).float().contiguous(), "labels": labels.long().contiguous()},
        str(tmp_path / "calibration_logits.safetensors"),
    )
    return tmp_path


def test_sweep_cli_writes_csv_plot_and_calibration(tmp_path, capsys) -> None:
    run_dir = _make_run_dir(tmp_path)
    assert main([str(run_dir), "--criterion", "nll"]) == 0
    printed = capsys.readouterr().out
    assert "chosen T" in printed and printed.count("\n") > 41

    with open(run_dir / "temperature_sweep.csv", newline="") as handle:
        table = list(csv.DictReader(handle))
    assert len(table) == 65 and list(table[0]) == ["temperature", "score", "mcc", "brier", "ece", "nll"]
    with Image.open(run_dir / "plots" / "temperature_sweep.png") as image:
        image.verify()

    calibration = json.loads((run_dir / "calibration.json").read_text())
    assert calibration["method"] == "sweep" and calibration["criterion"] == "nll"
    assert calibration["previous"] is None and calibration["bias"] == [0.0, 0.0]
    assert calibration["temperature"] == pytest.approx(3.0, rel=0.1)  # logits were scaled by 3
    best = min(table, key=lambda row: float(row["nll"]))
    assert calibration["temperature"] == pytest.approx(float(best["temperature"]))
    # the stored state loads straight into a calibrator
    assert LogitCalibrator.from_state(calibration).temperature == pytest.approx(calibration["temperature"], rel=1e-6)


def test_sweep_grid_includes_the_fitted_temperature(tmp_path) -> None:
    run_dir = _make_run_dir(tmp_path)
    (run_dir / "calibration.json").write_text(json.dumps({"temperature": 0.0123, "bias": [0.0, 0.0]}))
    assert main([str(run_dir)]) == 0
    with open(run_dir / "temperature_sweep.csv", newline="") as handle:
        temperatures = [float(row["temperature"]) for row in csv.DictReader(handle)]
    assert 0.0123 in temperatures and len(temperatures) == 66


def test_sweep_cli_keeps_existing_bias_and_records_previous(tmp_path) -> None:
    run_dir = _make_run_dir(tmp_path)
    old = {"temperature": 2.7, "bias": [0.3, -0.3], "method": "lbfgs"}
    (run_dir / "calibration.json").write_text(json.dumps(old))
    assert main([str(run_dir), "--grid", "0.5,1,2,3,4"]) == 0
    calibration = json.loads((run_dir / "calibration.json").read_text())
    assert calibration["bias"] == [0.3, -0.3] and calibration["previous"] == old
    assert calibration["criterion"] == "score" and calibration["temperature"] in (0.5, 1.0, 2.0, 3.0, 4.0)
    with open(run_dir / "temperature_sweep.csv", newline="") as handle:
        table = list(csv.DictReader(handle))
    tensors = load_file(str(run_dir / "calibration_logits.safetensors"))
    expected = temperature_sweep(tensors["logits"], tensors["labels"], [0.5, 1, 2, 3, 4], bias=[0.3, -0.3])
    assert [float(row["score"]) for row in table] == pytest.approx([row["score"] for row in expected])

    # a second sweep keeps one level of history only
    assert main([str(run_dir), "--grid", "1,2"]) == 0
    again = json.loads((run_dir / "calibration.json").read_text())
    assert "previous" not in again["previous"] and again["previous"]["method"] == "sweep"


def test_sweep_cli_names_missing_file(tmp_path, capsys) -> None:
    assert main([str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "calibration_logits.safetensors" in err and str(tmp_path) in err
    assert not (tmp_path / "calibration.json").exists()


def test_sweep_cli_rejects_bad_contents(tmp_path, capsys) -> None:
    save_file({"logits": torch.zeros(4, 2)}, str(tmp_path / "calibration_logits.safetensors"))
    assert main([str(tmp_path)]) == 2
    assert "labels" in capsys.readouterr().err
    run_dir = _make_run_dir(tmp_path)
    (run_dir / "calibration.json").write_text("{not json")
    assert main([str(run_dir)]) == 2
    assert "calibration.json" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([str(run_dir), "--grid", "1,-2"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert choose_temperature(temperature_sweep(torch.zeros(3, 2), torch.tensor([0, 1, 1]), [1.0])) == 1.0


@pytest.mark.parametrize(
    ("previous", "field"),
    [
        ({"temperature": -1.0, "bias": [0.0, 0.0]}, "temperature"),
        ({"temperature": True}, "temperature"),
        ({"temperature": 1.5, "bias": ["a", 0.0]}, "bias"),
        ({"temperature": 1.5, "bias": [0.0, float("nan")]}, "bias"),
    ],
)
def test_sweep_cli_names_an_invalid_previous_calibration(tmp_path, capsys, previous, field) -> None:
    # these used to escape as a bare ValueError (or sweep T = 1.0 for `true`) instead of naming the file
    run_dir = _make_run_dir(tmp_path)
    text = json.dumps(previous)
    (run_dir / "calibration.json").write_text(text)
    assert main([str(run_dir)]) == 2
    err = capsys.readouterr().err
    assert str(run_dir / "calibration.json") in err and field in err
    assert (run_dir / "calibration.json").read_text() == text
    assert not (run_dir / "temperature_sweep.csv").exists()
