"""A search-space YAML, validated against the architecture's typed configuration before any trial.

```yaml
fit: {modality: image, arch: flexcnn}
fixed:                       # settings every trial shares (dotted keys or nested mappings)
  trainer.max_epochs: 4
params:                      # the same dotted keys as ``--set``
  model.n_layers: {low: 1, high: 3}
  model.filters: {low: 8, high: 64, step: 8, length: model.n_layers}   # one value per layer
  model.kernel_sizes: {choices: [3, 5], length: model.n_layers}
  optim.lr: {low: 1.0e-4, high: 1.0e-2, log: true}
  model.image_size: {choices: [16, 32, 64]}
objectives:                  # default: [{metric: score, direction: maximize}]
  - score
  - {metric: trainable_parameters, direction: minimize}
pruner: median               # median | hyperband | none (single-objective studies)
```

A range's kind (int or float) is the setting's type (``type:`` may say it; it must agree); a
``choices`` list holds values of the setting's type. Every bound, choice and step is checked against
the setting's own type and bounds (``optim.lr: must be > 0``), and the space's two corners (every
parameter at its low end / first choice, then at its high end / last choice) must each form a valid
configuration with ``fixed``, at least one of them: an error names the space file and the key.
"""

from __future__ import annotations

import math
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from detectors.config import (
    check_bounds,
    close_match,
    convert,
    describe,
    find_setting,
    flatten,
    load_yaml,
    set_dotted,
    type_name,
)
from detectors.errors import ConfigError

#: efficiency objectives, measured on the trained run (not read from metrics.json)
EFFICIENCY_METRICS = {
    "trainable_parameters": "trainable parameters of the detector (summary.json)",
    "exported_size_mb": "size of the exported submission (model.py + model.safetensors + model_config.yaml), MiB",
    "ms_per_sample": "milliseconds per sample of the exported model loaded as the benchmark loads it (CPU, batch 8)",
}
#: validation metrics where lower is better (the others: higher)
LOWER_IS_BETTER = {"brier", "ece", "eer", "loss", "cross_entropy", *EFFICIENCY_METRICS}
PRUNERS = ("median", "hyperband", "none")
_TOP_LEVEL = ("fit", "fixed", "params", "objectives", "pruner", "description")
_PARAM_KEYS = ("type", "low", "high", "log", "step", "choices", "length")


@dataclass(frozen=True)
class Objective:
    metric: str
    direction: Literal["maximize", "minimize"]

    @property
    def efficiency(self) -> bool:
        return self.metric in EFFICIENCY_METRICS


@dataclass(frozen=True)
class Param:
    """One searched setting: a range (int or float; ``log``, ``step``) or ``choices``; with
    ``length``, a list setting sampled per element, as many elements as that parameter's value."""

    key: str
    kind: Literal["int", "float", "categorical"]
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: tuple[Any, ...] = ()
    length: str | None = None

    def element_names(self, length: int | None) -> list[str]:
        """Names of the Optuna parameters this setting is drawn as (``model.filters.0``, ...)."""
        return [self.key] if self.length is None else [f"{self.key}.{i}" for i in range(int(length or 0))]

    def suggest_one(self, trial: Any, name: str) -> Any:
        if self.kind == "categorical":
            encoded = [_encode_choice(c) for c in self.choices]
            return _decode_choice(trial.suggest_categorical(name, encoded), self.choices)
        if self.kind == "int":
            return trial.suggest_int(name, int(self.low), int(self.high), step=int(self.step or 1), log=self.log)
        return trial.suggest_float(name, float(self.low), float(self.high), step=self.step, log=self.log)

    def suggest(self, trial: Any, values: dict[str, Any]) -> Any:
        """This setting's value for ``trial`` (``values``: the settings drawn before it)."""
        if self.length is None:
            return self.suggest_one(trial, self.key)
        return [self.suggest_one(trial, name) for name in self.element_names(values[self.length])]

    def grid(self, points: int) -> list[Any]:
        """Candidate values of one element for a one-knob sweep: every choice, every step of a small
        integer range, else ``points`` values spaced evenly (geometrically with ``log``)."""
        if self.kind == "categorical":
            return list(self.choices)
        low, high = float(self.low), float(self.high)
        if self.kind == "int":
            step = int(self.step or 1)
            every = list(range(int(low), int(high) + 1, step))
            if len(every) <= points:
                return every
        if points == 1 or low == high:
            return [self.low]
        if self.log:
            values = [
                math.exp(math.log(low) + (math.log(high) - math.log(low)) * i / (points - 1)) for i in range(points)
            ]
        else:
            values = [low + (high - low) * i / (points - 1) for i in range(points)]
        if self.kind == "int":
            step = int(self.step or 1)
            return list(dict.fromkeys(int(low) + step * round((v - low) / step) for v in values))
        if self.step:
            values = [low + self.step * round((v - low) / self.step) for v in values]
        return list(dict.fromkeys(float(f"{v:.6g}") for v in values))

    def corner(self, end: int) -> Any:
        """The low (``end = 0``) or high (``end = -1``) end of one element."""
        if self.kind == "categorical":
            return self.choices[end]
        value = self.low if end == 0 else self.high
        return int(value) if self.kind == "int" else float(value)


@dataclass
class SearchSpace:
    path: Path
    modality: str
    arch: str
    fixed: dict[str, Any]
    params: list[Param]
    objectives: list[Objective]
    pruner: str = "median"
    description: str = ""
    detector_cls: Any = field(default=None, repr=False)

    @property
    def name(self) -> str:
        return self.path.stem

    @property
    def directions(self) -> list[str]:
        return [objective.direction for objective in self.objectives]

    def param(self, key: str) -> Param:
        return next(p for p in self.params if p.key == key)

    def suggest(self, trial: Any) -> dict[str, Any]:
        """Every parameter's value for ``trial`` (length parameters drawn before the lists they size)."""
        values: dict[str, Any] = {}
        for param in self.params:
            values[param.key] = param.suggest(trial, values)
        return values

    def canonical(self) -> str:
        """What a study must share to be joined: the space's parameters and objectives."""
        return yaml.safe_dump(
            {
                "fit": {"modality": self.modality, "arch": self.arch},
                "params": {p.key: _param_dict(p) for p in self.params},
                "objectives": [[o.metric, o.direction] for o in self.objectives],
            },
            sort_keys=True,
        )


def _param_dict(param: Param) -> dict[str, Any]:
    return {
        k: v
        for k, v in (
            ("kind", param.kind),
            ("low", param.low),
            ("high", param.high),
            ("log", param.log),
            ("step", param.step),
            ("choices", list(param.choices)),
            ("length", param.length),
        )
        if v not in (None, False, [])
    }


def _encode_choice(value: Any) -> Any:
    """Optuna stores None, bool, int, float and str choices; a list choice is stored as its YAML text."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return yaml.safe_dump(value, default_flow_style=True).strip()


def _decode_choice(encoded: Any, choices: tuple[Any, ...]) -> Any:
    return next(choice for choice in choices if _encode_choice(choice) == encoded)


# --------------------------------------------------------------------------- loading and validation
def load_space(path: str | Path, overrides: dict[str, Any] | None = None) -> SearchSpace:
    """Read and validate a search-space YAML (``overrides``: dotted settings added to ``fixed``)."""
    from detectors.registry import detector_class, list_detectors

    path = Path(path)
    raw = load_yaml(path)
    for key in raw:
        if key not in _TOP_LEVEL:
            match = close_match(str(key), _TOP_LEVEL)
            hint = f" (did you mean {match!r}?)" if match else ""
            raise ConfigError(path, str(key), f"unknown key{hint}; known top-level keys: {', '.join(_TOP_LEVEL)}")
    fit = raw.get("fit")
    if not isinstance(fit, dict) or "arch" not in fit:
        raise ConfigError(
            path,
            "fit",
            f"expected a mapping with the detector's arch (fit: {{modality: image, arch: flexcnn}}), got {fit!r}",
        )
    arch = fit["arch"]
    if arch not in list_detectors():
        match = close_match(str(arch), list_detectors())
        hint = f" (did you mean {match!r}?)" if match else ""
        raise ConfigError(
            path, "fit.arch", f"unknown architecture {arch!r}{hint}; known: {', '.join(list_detectors())}"
        )
    cls = detector_class(arch)
    modality = fit.get("modality", cls.modality)
    if modality != cls.modality:
        raise ConfigError(path, "fit.modality", f"{arch} is a {cls.modality} detector, not {modality!r}")
    unknown = set(fit) - {"arch", "modality"}
    if unknown:
        raise ConfigError(path, f"fit.{sorted(unknown)[0]}", "unknown key; fit: takes modality and arch")

    fixed = _nested(raw.get("fixed") or {}, path, "fixed")
    for key, value in (overrides or {}).items():
        set_dotted(fixed, key, value)
    params_raw = raw.get("params")
    if not isinstance(params_raw, dict) or not params_raw:
        raise ConfigError(path, "params", f"expected a mapping of searched settings (dotted keys), got {params_raw!r}")
    run_config = _run_config_class(cls)
    params = [_parse_param(path, cls, run_config, str(key), spec) for key, spec in params_raw.items()]
    params = _order_by_length(path, params)
    fixed_keys = set(flatten(fixed))
    for param in params:
        if param.key in fixed_keys:
            raise ConfigError(path, f"params.{param.key}", "is also set in fixed: search it or fix it, not both")
    objectives = _parse_objectives(path, raw.get("objectives"))
    pruner = raw.get("pruner", "median")
    if pruner not in PRUNERS:
        raise ConfigError(path, "pruner", f"expected one of {', '.join(PRUNERS)}, got {pruner!r}")
    space = SearchSpace(
        path=path,
        modality=cls.modality,
        arch=arch,
        fixed=fixed,
        params=params,
        objectives=objectives,
        pruner=pruner,
        description=str(raw.get("description") or ""),
        detector_cls=cls,
    )
    check_corners(space)
    return space


def _run_config_class(cls: Any) -> type:
    from detectors.settings import run_config_class

    return run_config_class(cls)


def _nested(values: Any, path: Path, where: str) -> dict[str, Any]:
    """``fixed:`` as nested mappings (dotted keys expanded)."""
    if not isinstance(values, dict):
        raise ConfigError(path, where, f"expected a mapping of settings, got {values!r}")
    nested: dict[str, Any] = {}
    for key, value in flatten(values).items():
        set_dotted(nested, str(key), value)
    return nested


def _parse_param(path: Path, cls: Any, run_config: type, key: str, spec: Any) -> Param:
    where = f"params.{key}"
    if not isinstance(spec, dict):
        raise ConfigError(path, where, f"expected {{low: .., high: ..}} or {{choices: [..]}}, got {spec!r}")
    unknown = [k for k in spec if k not in _PARAM_KEYS]
    if unknown:
        match = close_match(str(unknown[0]), _PARAM_KEYS)
        hint = f" (did you mean {match!r}?)" if match else ""
        raise ConfigError(
            path, f"{where}.{unknown[0]}", f"unknown key{hint}; a parameter takes {', '.join(_PARAM_KEYS)}"
        )
    found = find_setting(run_config, key)
    if found is None:
        raise _unknown_setting(path, cls, run_config, key)
    setting_field, hint = found
    hint = _without_none(hint)
    length = spec.get("length")
    element_hint = hint
    if length is not None:
        if typing.get_origin(hint) not in (list, tuple) or not typing.get_args(hint):
            raise ConfigError(
                path, f"{where}.length", f"{key} is a single {type_name(hint)} setting, not a list: drop length"
            )
        element_hint = _without_none(typing.get_args(hint)[0])
    elif typing.get_origin(hint) in (list, tuple) and "choices" not in spec:
        raise ConfigError(
            path,
            where,
            f"{key} is a list setting ({type_name(hint)}): give choices of whole lists, "
            "or draw one value per element with length: <the parameter giving the count>",
        )

    def check(value: Any, label: str, value_hint: Any) -> Any:
        try:
            converted = convert(value, value_hint, key)
            check_bounds(converted, setting_field, key, None)
        except ConfigError as error:
            raise ConfigError(
                path, f"{where}.{label}", f"{error.problem} ({key} is {describe(hint)}{_bounds_text(setting_field)})"
            ) from None
        return converted

    if "choices" in spec:
        extra = [k for k in ("low", "high", "log", "step") if k in spec]
        if extra:
            raise ConfigError(path, f"{where}.{extra[0]}", "choices and a range exclude each other")
        choices = spec["choices"]
        if not isinstance(choices, list) or not choices:
            raise ConfigError(path, f"{where}.choices", f"expected a non-empty list, got {choices!r}")
        checked = tuple(check(value, f"choices[{i}]", element_hint) for i, value in enumerate(choices))
        encoded = [_encode_choice(c) for c in checked]
        if len(set(map(repr, encoded))) != len(encoded):
            raise ConfigError(path, f"{where}.choices", f"lists a value twice: {choices!r}")
        if spec.get("type", "categorical") != "categorical":
            raise ConfigError(path, f"{where}.type", f"choices make a categorical parameter, not {spec['type']!r}")
        return Param(key, "categorical", choices=checked, length=length)

    base = _numeric_kind(element_hint)
    if base is None:
        raise ConfigError(
            path,
            where,
            f"{key} is {describe(element_hint)}: a range needs a number setting; list its values under choices",
        )
    kind = spec.get("type", base)
    if kind not in ("int", "float") or (kind == "float" and base == "int"):
        raise ConfigError(
            path, f"{where}.type", f"{key} is {describe(element_hint)}: type must be {base!r}, got {kind!r}"
        )
    missing = [k for k in ("low", "high") if k not in spec]
    if missing:
        raise ConfigError(path, where, f"a range needs low and high ({' and '.join(missing)} missing), or give choices")
    low = check(spec["low"], "low", element_hint if kind == base else float)
    high = check(spec["high"], "high", element_hint if kind == base else float)
    if kind == "int" and not all(isinstance(v, int) for v in (low, high)):
        raise ConfigError(path, where, f"an integer range needs integer low and high, got {low!r}, {high!r}")
    if low > high:
        raise ConfigError(path, where, f"low ({low!r}) is above high ({high!r})")
    log = spec.get("log", False)
    if not isinstance(log, bool):
        raise ConfigError(path, f"{where}.log", f"expected true or false, got {log!r}")
    if log and low <= 0:
        raise ConfigError(path, f"{where}.low", f"a log range needs low > 0, got {low!r}")
    step = spec.get("step")
    if step is not None:
        if (
            isinstance(step, bool)
            or not isinstance(step, (int, float))
            or step <= 0
            or (kind == "int" and not isinstance(step, int))
        ):
            raise ConfigError(
                path, f"{where}.step", f"expected a positive {'integer' if kind == 'int' else 'number'}, got {step!r}"
            )
        if log:
            raise ConfigError(path, f"{where}.step", "a log range takes no step (Optuna samples it continuously)")
        if step > high - low and high != low:
            raise ConfigError(path, f"{where}.step", f"larger than the range {low!r}..{high!r}")
    return Param(key, kind, low=low, high=high, log=log, step=step, length=length)


def _bounds_text(setting_field: Any) -> str:
    from detectors.config import describe_bounds

    bounds = setting_field.metadata.get("bounds") or {}
    return f", {describe_bounds(bounds)}" if bounds else ""


def _without_none(hint: Any) -> Any:
    args = typing.get_args(hint)
    if type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return rest[0] if len(rest) == 1 else typing.Union[tuple(rest)]  # noqa: UP007
    return hint


def _numeric_kind(hint: Any) -> str | None:
    if hint is int:
        return "int"
    if hint is float:
        return "float"
    args = set(typing.get_args(hint))
    if args and args <= {int, float}:
        return "float"
    return None


def _unknown_setting(path: Path, cls: Any, run_config: type, key: str) -> ConfigError:
    from detectors.config import schema_rows
    from detectors.settings import explain_unknown_key

    leaves = {row[0] for row in schema_rows(run_config)}
    if any(leaf.startswith(f"{key}.") for leaf in leaves):
        children = sorted(leaf for leaf in leaves if leaf.startswith(f"{key}."))
        return ConfigError(
            path,
            f"params.{key}",
            f"is a section, not a setting; search one of its keys, e.g. {', '.join(children[:4])}",
        )
    explained = explain_unknown_key(cls, ConfigError(None, key, "unknown key"))
    problem = (
        explained.problem
        if explained.problem != "unknown key"
        else (f"unknown key for {cls.arch}" + (f" (did you mean {m!r}?)" if (m := close_match(key, leaves)) else ""))
    )
    return ConfigError(path, f"params.{key}", problem)


def _order_by_length(path: Path, params: list[Param]) -> list[Param]:
    """Parameters that size lists first; a ``length`` must name an integer parameter of the space."""
    keys = {p.key: p for p in params}
    for param in params:
        if param.length is None:
            continue
        provider = keys.get(param.length)
        if provider is None:
            raise ConfigError(
                path,
                f"params.{param.key}.length",
                f"{param.length!r} is not a parameter of this space; known: {', '.join(keys)}",
            )
        values = provider.choices if provider.kind == "categorical" else (provider.low, provider.high)
        if provider.length is not None or not all(
            isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in values
        ):
            raise ConfigError(
                path, f"params.{param.key}.length", f"{param.length} must be an integer parameter with values >= 1"
            )
    return sorted(params, key=lambda p: p.length is not None)


def _parse_objectives(path: Path, raw: Any) -> list[Objective]:
    from detectors.metrics import binary_metrics

    if raw is None:
        return [Objective("score", "maximize")]
    if not isinstance(raw, list) or not raw:
        raise ConfigError(path, "objectives", f"expected a list of metrics, got {raw!r}")
    validation = {*binary_metrics([0, 1, 0, 1], [0.2, 0.7, 0.4, 0.9]), "loss"}
    known = sorted(k for k in validation if k not in ("n", "per_dataset", "confusion"))
    objectives = []
    for index, item in enumerate(raw):
        where = f"objectives[{index}]"
        spec = {"metric": item} if isinstance(item, str) else item
        if not isinstance(spec, dict) or "metric" not in spec or set(spec) - {"metric", "direction"}:
            raise ConfigError(
                path, where, f"expected a metric name or {{metric: NAME, direction: maximize|minimize}}, got {item!r}"
            )
        metric = spec["metric"]
        if metric not in EFFICIENCY_METRICS and metric not in known:
            match = close_match(str(metric), [*known, *EFFICIENCY_METRICS])
            hint = f" (did you mean {match!r}?)" if match else ""
            raise ConfigError(
                path,
                f"{where}.metric",
                f"unknown metric {metric!r}{hint}; validation metrics "
                f"(metrics.json): {', '.join(known)}; efficiency: "
                f"{', '.join(EFFICIENCY_METRICS)}",
            )
        direction = spec.get("direction", "minimize" if metric in LOWER_IS_BETTER else "maximize")
        if direction not in ("maximize", "minimize"):
            raise ConfigError(path, f"{where}.direction", f"expected maximize or minimize, got {direction!r}")
        if any(o.metric == metric for o in objectives):
            raise ConfigError(path, where, f"{metric} is listed twice")
        objectives.append(Objective(metric, direction))
    return objectives


def corner_values(space: SearchSpace, end: int) -> dict[str, Any]:
    """Every parameter at its low end / first choice (``end = 0``) or high end / last choice (``-1``)."""
    values: dict[str, Any] = {}
    for param in space.params:
        value = param.corner(end)
        values[param.key] = value if param.length is None else [value] * int(values[param.length])
    return values


def trial_layers(space: SearchSpace, values: dict[str, Any]) -> Any:
    """The config layers of one trial: the arch's defaults <- ``fixed`` <- the drawn values."""
    from detectors.settings import base_layers

    layers = base_layers(space.detector_cls, demo=False)
    layers.add(space.fixed, f"{space.path} (fixed)")
    for key, value in values.items():
        layers.set(key, value, f"{space.path} (params.{key})")
    return layers


def check_corners(space: SearchSpace) -> None:
    """The space's low and high corners with ``fixed`` must parse (at least one of them: a space may
    hold combinations the configuration refuses, which then fail as trials)."""
    from detectors.settings import resolve_run_config

    errors = []
    for end in (0, -1):
        try:
            resolve_run_config(trial_layers(space, corner_values(space, end)))
            return
        except ConfigError as error:
            errors.append(error)
    raise errors[0]


__all__ = [
    "EFFICIENCY_METRICS",
    "Objective",
    "Param",
    "SearchSpace",
    "check_corners",
    "corner_values",
    "load_space",
    "trial_layers",
]
