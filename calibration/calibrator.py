"""LogitCalibrator: temperature scaling plus a per-class bias, the last layer of every detector.

``forward(logits) = logits / T + bias``. It starts as the identity (T = 1, bias = 0), is frozen during
training (its parameters do not require gradients unless asked for), and is fitted afterwards on a
held-out calibration set by minimising the negative log-likelihood with LBFGS (Guo et al. 2017;
with the bias it is Platt scaling on the class margins). Because it is affine it folds into a final
``nn.Linear`` for export (:meth:`LogitCalibrator.fold_into_linear`).

Guards: the temperature's bounds are enforced inside the optimisation (``log T`` is a
``tanh`` of the free parameter), so the bias is always the one fitted at the returned temperature; a
fit that does not beat the identity on the objective it minimised is replaced by the identity, with a
warning; a calibration split with fewer than :data:`MIN_SAMPLES_PER_CLASS` samples of some class gets
a warning and a maximum a posteriori fit (a Gaussian prior centred on the identity, whose weight
vanishes as the split grows). :attr:`LogitCalibrator.last_fit` reports what happened (sample counts,
NLL of identity and fit, warnings) so a run can record it.

Its fitted values travel as a small JSON dict (``calibration.json`` of a run)::

    {"temperature": 1.37, "bias": [-0.05, 0.05], "method": "lbfgs"}

:meth:`LogitCalibrator.load_state` reads ``temperature`` and ``bias`` only, so the history a
temperature sweep adds to that file (``criterion``, ``fitted``, ``previous``; see
:mod:`calibration.sweep`) does not change what is loaded.
"""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from detectors.errors import ConfigError

__all__ = [
    "LogitCalibrator",
    "MIN_TEMPERATURE",
    "MAX_TEMPERATURE",
    "MIN_SAMPLES_PER_CLASS",
    "CalibrationWarning",
    "SmallCalibrationSetWarning",
]

#: Fitted temperatures are kept in this range; the ends are only reached by degenerate fits.
MIN_TEMPERATURE = 1e-2
MAX_TEMPERATURE = 1e2

#: Fewer samples than this of any class present in the calibration split: the fit is warned about and
#: regularised. With 30 samples a class frequency is known to about +-0.09 (the binomial standard
#: error sqrt(0.25 / 30)), so probabilities finer than that cannot be told apart by the split itself.
MIN_SAMPLES_PER_CLASS = 30

#: Prior of the regularised (small-split) fit, in units of the mean NLL: log T ~ N(0, 1) and each
#: class bias ~ N(0, 2^2), weighted 1/N so that it is worth one sample's evidence in total.
PRIOR_LOG_TEMPERATURE_STD = 1.0
PRIOR_BIAS_STD = 2.0


class CalibrationWarning(UserWarning):
    """A calibration fit was degenerate, fell back to the identity, or is otherwise worth a look."""


class SmallCalibrationSetWarning(CalibrationWarning):
    """The calibration split holds fewer than :data:`MIN_SAMPLES_PER_CLASS` samples of some class."""


def _nll(logits: Tensor, labels: Tensor) -> Tensor:
    if logits.shape[1] == 1:
        return F.binary_cross_entropy_with_logits(logits[:, 0], (labels != 0).to(logits.dtype))
    return F.cross_entropy(logits, labels)


def platt_targets(labels: Tensor, num_classes: int) -> Tensor:
    """Platt's (1999) smoothed targets: a sample of class c with N_c members gets (N_c + 1) / (N_c + 2)
    on its class and the rest spread evenly, i.e. the posterior mean of a uniform prior. It keeps the
    fit finite on a perfectly separated set; the smoothing vanishes as the calibration set grows."""
    classes = max(num_classes, 2)
    binary = (labels != 0).long() if num_classes == 1 else labels
    counts = torch.bincount(binary, minlength=classes).to(torch.float64)
    on_class = (counts[binary] + 1) / (counts[binary] + 2)
    targets = ((1 - on_class) / (classes - 1))[:, None].repeat(1, classes)
    targets.scatter_(1, binary[:, None], on_class[:, None])
    return targets[:, 1] if num_classes == 1 else targets


def _soft_nll(logits: Tensor, targets: Tensor) -> Tensor:
    if logits.shape[1] == 1:
        return F.binary_cross_entropy_with_logits(logits[:, 0], targets)
    return -(targets * F.log_softmax(logits, dim=1)).sum(dim=1).mean()


def _counts_text(counts: list[int]) -> str:
    names = ("real", "fake") if len(counts) == 2 else tuple(f"class {c}" for c in range(len(counts)))
    return ", ".join(f"{count} {name}" for name, count in zip(names, counts))


def _all_correct(logits: Tensor, labels: Tensor) -> bool:
    if logits.shape[1] == 1:
        return bool(((logits[:, 0] > 0) == (labels != 0)).all())
    target = logits.gather(1, labels[:, None])
    others = logits.scatter(1, labels[:, None], float("-inf"))
    return bool((target[:, 0] > others.max(dim=1).values).all())


class LogitCalibrator(nn.Module):
    """Learnable temperature (parametrised as ``log_temperature``, so T > 0) and bias ``[C]``.

    Args:
        num_classes: number of logits C (1 = a single fake-vs-real logit).
        trainable: let gradients flow into the parameters during training. Off by default: the
            calibrator is fitted post hoc with :meth:`fit`, and a training loss must not move it.
    """

    def __init__(self, num_classes: int = 2, trainable: bool = False) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes = int(num_classes)
        self.log_temperature = nn.Parameter(torch.zeros(()), requires_grad=trainable)
        self.logit_bias = nn.Parameter(torch.zeros(self.num_classes), requires_grad=trainable)
        #: How the current values were obtained: "identity", "lbfgs", "temperature_only", "sweep", ...
        self.method = "identity"

    # ------------------------------------------------------------------------------------- forward

    def forward(self, logits: Tensor) -> Tensor:
        if logits.shape[-1] != self.num_classes:
            raise ValueError(f"expected logits [..., {self.num_classes}], got shape {tuple(logits.shape)}")
        temperature = self.log_temperature.exp().to(logits.dtype)
        return logits / temperature + self.logit_bias.to(logits.dtype)

    # ---------------------------------------------------------------------------------- properties

    @property
    def temperature(self) -> float:
        return float(self.log_temperature.detach().exp())

    @property
    def bias(self) -> list[float]:
        return [float(b) for b in self.logit_bias.detach().cpu()]

    @property
    def is_identity(self) -> bool:
        return self.temperature == 1.0 and all(b == 0.0 for b in self.bias)

    def extra_repr(self) -> str:
        bias = ", ".join(f"{b:.4g}" for b in self.bias)
        return (
            f"num_classes={self.num_classes}, temperature={self.temperature:.4g}, bias=[{bias}], method={self.method!r}"
        )

    # ------------------------------------------------------------------------------------- setting

    @torch.no_grad()
    def set(
        self, temperature: float, bias: list[float] | Tensor | None = None, method: str = "manual"
    ) -> LogitCalibrator:
        """Set the temperature (and bias; None keeps the current one) directly."""
        if not (isinstance(temperature, (int, float)) and math.isfinite(temperature) and temperature > 0):
            raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}")
        self.log_temperature.fill_(math.log(temperature))
        if bias is not None:
            bias = torch.as_tensor(bias, dtype=torch.float64).reshape(-1)
            if bias.numel() != self.num_classes or not torch.isfinite(bias).all():
                raise ValueError(f"bias must be {self.num_classes} finite numbers, got {bias.tolist()}")
            self.logit_bias.copy_(bias.to(self.logit_bias.dtype))
        self.method = method
        return self

    @torch.no_grad()
    def reset(self) -> LogitCalibrator:
        """Back to the identity: T = 1, bias = 0."""
        self.log_temperature.zero_()
        self.logit_bias.zero_()
        self.method = "identity"
        return self

    # ----------------------------------------------------------------------------------------- fit

    def fit(
        self,
        logits: Tensor,
        labels: Tensor,
        max_iter: int = 200,
        fit_bias: bool = True,
        regularise: bool | None = None,
    ) -> LogitCalibrator:
        """Fit T (and the bias) on uncalibrated held-out ``logits [N, C]`` by minimising NLL with LBFGS.

        Works on detached float64 CPU copies, whatever the caller's grad mode (also inside
        ``torch.no_grad()`` / ``inference_mode()``, e.g. from a validation hook). A calibration set with a
        single class fits the temperature only (a bias would run off to infinity); with 3+ classes, a
        class absent from the set keeps bias 0 relative to the others for the same reason. A set the fitted
        logits classify perfectly has no NLL minimum (T -> 0): it is refitted to Platt's smoothed
        targets, with a warning. An empty set leaves the calibrator unchanged.

        T stays in [MIN_TEMPERATURE, MAX_TEMPERATURE] during the optimisation (not clamped afterwards,
        which would keep a bias fitted for another T). ``regularise`` adds the small-split prior (see
        the module doc); None (default) adds it when some class present has fewer than
        :data:`MIN_SAMPLES_PER_CLASS` samples. A result whose NLL on this set (to Platt's targets when
        those were used) is worse than the identity's is replaced by the identity, with a warning.
        :attr:`last_fit` tells what happened.
        """
        notes: list[str] = []

        def warn(message: str, category: type[Warning] = CalibrationWarning) -> None:
            notes.append(message)
            warnings.warn(f"LogitCalibrator.fit: {message}", category, stacklevel=3)

        with torch.inference_mode(False), torch.enable_grad():
            # clone(): a float64 CPU input would otherwise be used as is, and an inference-mode tensor
            # cannot take part in autograd.
            z = logits.detach().to("cpu", torch.float64).clone()
            y = labels.detach().to("cpu", torch.long).reshape(-1).clone()
            if z.ndim == 1 and self.num_classes == 1:
                z = z[:, None]
            if z.ndim != 2 or z.shape[1] != self.num_classes or z.shape[0] != y.shape[0]:
                raise ValueError(
                    f"fit expects logits [N, {self.num_classes}] and labels [N], got {tuple(logits.shape)} "
                    f"and {tuple(labels.shape)}"
                )
            if z.shape[0] == 0:
                warn("empty calibration set; calibrator left unchanged")
                self.last_fit = {"n": 0, "method": self.method, "warnings": notes}
                return self
            if not torch.isfinite(z).all():
                raise ValueError("LogitCalibrator.fit: calibration logits contain NaN or inf")

            binary = (y != 0).long() if self.num_classes <= 2 else y
            counts = torch.bincount(binary, minlength=max(self.num_classes, 2)).tolist()
            present = [count for count in counts if count > 0]
            small = min(present) < MIN_SAMPLES_PER_CLASS
            if small:
                warn(
                    f"the calibration split holds {_counts_text(counts)} sample(s), fewer than "
                    f"{MIN_SAMPLES_PER_CLASS} of some class: too few to trust a fitted calibration, so the fit "
                    "is pulled towards no calibration. Use a larger calibration split.",
                    SmallCalibrationSetWarning,
                )
            regularise = small if regularise is None else bool(regularise)
            prior_weight = 1.0 / z.shape[0] if regularise else 0.0

            # no real or no fake sample: a bias for the absent side is unidentifiable (it runs to -inf)
            single_class = (y != 0).all() or (y == 0).all()
            if single_class and fit_bias:
                warn("calibration set holds one class only; fitting the temperature only")
            fit_bias = fit_bias and not single_class
            if fit_bias and self.num_classes > 2:
                absent = sorted(set(range(self.num_classes)) - set(y.unique().tolist()))
                if absent:
                    warn(
                        f"class(es) {absent} absent from the calibration set; their bias stays at the mean of "
                        "the others (it is unidentifiable and would run off to -inf)"
                    )

            targets = None
            log_t, bias = self._minimise(z, y, fit_bias, max_iter, prior_weight=prior_weight)
            method = "lbfgs" if fit_bias else "temperature_only"
            with torch.no_grad():
                separated = _all_correct(z / log_t.exp() + bias, y)
            if separated:
                # Every calibration sample is on the right side: shrinking T lowers the NLL forever, so
                # the maximum-likelihood fit has no optimum. Platt's smoothed targets give the finite
                # answer his method was designed for: as confident as N samples justify, no more (they
                # are a prior already, so no second one is added).
                warn(
                    "the calibration set is perfectly separated, so the NLL has no minimum; fitted to "
                    "Platt's smoothed targets (N+1)/(N+2) instead. A larger or harder calibration set, or a "
                    "temperature sweep, is more reliable."
                )
                targets = platt_targets(y, self.num_classes)
                log_t, bias = self._minimise(z, y, fit_bias, max_iter, targets=targets)
                method = "platt"
                regularise = False

            with torch.no_grad():
                objective = (
                    (lambda scaled: _nll(scaled, y)) if targets is None else (lambda scaled: _soft_nll(scaled, targets))
                )
                identity_nll = float(objective(z))
                fitted_nll = float(objective(z / log_t.exp() + bias))

        report: dict[str, Any] = {
            "n": int(z.shape[0]),
            "per_class": counts,
            "min_per_class": MIN_SAMPLES_PER_CLASS,
            "small": bool(small),
            "regularised": bool(regularise),
            "method": method,
            "objective": "nll" if targets is None else "nll_to_platt_targets",
            "nll_identity": identity_nll,
            "nll_fitted": fitted_nll,
            "fallback_to_identity": False,
            "warnings": notes,
        }
        self.last_fit = report
        log_t_value = float(log_t.detach())
        if not (math.isfinite(log_t_value) and math.isfinite(fitted_nll) and torch.isfinite(bias).all()):
            warn("the fit diverged; calibrator reset to identity")
            report.update(fallback_to_identity=True, method="identity", nll_fitted=identity_nll)
            return self.reset()
        # The optimisation starts at the identity and never increases its objective, so this holds unless
        # it failed numerically; a calibrator that makes the split's NLL worse must never be kept.
        if fitted_nll > identity_nll + 1e-9 * max(1.0, abs(identity_nll)):
            warn(
                f"the fitted calibration (NLL {fitted_nll:.4g}) is worse than none (NLL {identity_nll:.4g}) on "
                "the calibration split; calibrator reset to identity"
            )
            report.update(fallback_to_identity=True, method="identity", nll_fitted=identity_nll)
            return self.reset()
        temperature = min(max(math.exp(log_t_value), MIN_TEMPERATURE), MAX_TEMPERATURE)
        fitted_bias = bias.detach()
        if self.num_classes > 1:
            fitted_bias = fitted_bias - fitted_bias.mean()  # softmax ignores a common shift; pin it at 0
        return self.set(temperature, fitted_bias, method=method)

    #: What the last :meth:`fit` did: ``n``, ``per_class`` counts, ``small``, ``regularised``, ``method``,
    #: ``nll_identity`` / ``nll_fitted`` on the split, ``fallback_to_identity`` and ``warnings``.
    last_fit: dict[str, Any] | None = None

    def _minimise(
        self,
        z: Tensor,
        y: Tensor,
        fit_bias: bool,
        max_iter: int,
        targets: Tensor | None = None,
        prior_weight: float = 0.0,
    ) -> tuple[Tensor, Tensor]:
        """LBFGS on the mean NLL of ``y`` (or cross-entropy to soft ``targets``), plus ``prior_weight``
        times the negative log prior when given; returns (log T, bias).

        ``log T = centre + half_width * tanh(u)``: the temperature cannot leave its bounds, so the bias
        found is the best one at the temperature returned (u = 0 is the identity, where LBFGS starts).
        """
        low, high = math.log(MIN_TEMPERATURE), math.log(MAX_TEMPERATURE)
        centre, half_width = (low + high) / 2, (high - low) / 2
        u = torch.full((), math.atanh(-centre / half_width), dtype=torch.float64, requires_grad=True)
        free = torch.zeros(self.num_classes, dtype=torch.float64, requires_grad=fit_bias)
        params = [u, free] if fit_bias else [u]
        optimizer = torch.optim.LBFGS(
            params,
            lr=1.0,
            max_iter=max_iter,
            line_search_fn="strong_wolfe",
            tolerance_grad=1e-10,
            tolerance_change=1e-12,
        )
        # Only classes present in the set get a bias, centred among themselves: raising all present
        # classes together against an absent one lowers the NLL without bound (with three classes, a
        # set without semisynthetic samples would otherwise learn to never predict that class).
        present = torch.bincount(y, minlength=self.num_classes)[: self.num_classes] > 0

        def log_temperature() -> Tensor:
            return centre + half_width * torch.tanh(u)

        def offset() -> Tensor:
            if self.num_classes == 1:  # a single fake-vs-real logit: its bias is the intercept
                return free
            return torch.where(present, free - free[present].mean(), torch.zeros_like(free))

        def closure() -> Tensor:
            optimizer.zero_grad()
            log_t, bias = log_temperature(), offset()
            scaled = z / log_t.exp() + bias
            loss = _nll(scaled, y) if targets is None else _soft_nll(scaled, targets)
            if prior_weight:
                loss = loss + prior_weight * (
                    log_t**2 / (2 * PRIOR_LOG_TEMPERATURE_STD**2) + (bias**2).sum() / (2 * PRIOR_BIAS_STD**2)
                )
            loss.backward()
            return loss

        optimizer.step(closure)
        with torch.no_grad():
            return log_temperature().detach(), offset().detach()

    # ------------------------------------------------------------------------------- serialisation

    def state(self) -> dict[str, Any]:
        """Plain JSON-able state: ``{"temperature": T, "bias": [...], "method": ...}``."""
        return {"temperature": self.temperature, "bias": self.bias, "method": self.method}

    def load_state(self, state: Mapping[str, Any], source: str | None = None) -> LogitCalibrator:
        """Set values from a :meth:`state` dict (e.g. a run's calibration.json); ``source`` names the file in errors."""
        if not isinstance(state, Mapping):
            raise ConfigError(source, None, f"calibration state must be a mapping, got {type(state).__name__}")
        temperature = state.get("temperature")
        if (
            isinstance(temperature, bool)
            or not isinstance(temperature, (int, float))
            or not (math.isfinite(temperature) and temperature > 0)
        ):
            raise ConfigError(source, "temperature", f"must be a finite number > 0, got {temperature!r}")
        bias = state.get("bias")
        if bias is not None and (
            not isinstance(bias, (list, tuple))
            or len(bias) != self.num_classes
            or not all(isinstance(b, (int, float)) and not isinstance(b, bool) and math.isfinite(b) for b in bias)
        ):
            raise ConfigError(source, "bias", f"must be a list of {self.num_classes} finite numbers, got {bias!r}")
        return self.set(
            float(temperature),
            [0.0] * self.num_classes if bias is None else list(bias),
            method=str(state.get("method", "manual")),
        )

    @classmethod
    def from_state(
        cls, state: Mapping[str, Any], num_classes: int | None = None, source: str | None = None
    ) -> LogitCalibrator:
        """A new calibrator from a :meth:`state` dict; C is taken from the bias unless given."""
        if num_classes is None:
            bias = state.get("bias") if isinstance(state, Mapping) else None
            num_classes = len(bias) if isinstance(bias, (list, tuple)) and bias else 2
        return cls(num_classes).load_state(state, source=source)

    # -------------------------------------------------------------------------------------- export

    @torch.no_grad()
    def fold_into_linear(self, linear: nn.Linear) -> nn.Linear:
        """A copy of ``linear`` whose output equals ``self(linear(x))`` (for export without this class)."""
        if linear.out_features != self.num_classes:
            raise ValueError(f"linear has {linear.out_features} outputs, calibrator {self.num_classes}")
        folded = copy.deepcopy(linear)
        temperature = self.log_temperature.exp().to(folded.weight.dtype)
        folded.weight.div_(temperature)
        bias = self.logit_bias.to(folded.weight.dtype)
        if folded.bias is None:
            folded.bias = nn.Parameter(bias.clone(), requires_grad=linear.weight.requires_grad)
        else:
            folded.bias.div_(temperature).add_(bias)
        return folded
