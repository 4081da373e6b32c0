"""Early validation of a fit command's resolved configuration: every key known, every value typed.

Runs right after the defaults, demo overrides, ``--config``, flags and ``--set`` are merged and
before anything is built, so a typo costs a second, not a backbone download and a data scan. The
known keys of a section are the arch's shipped defaults (``configs/<modality>/<arch>.yaml`` lists
every setting the code reads); ``model`` is checked by the detector's config dataclass, ``trainer``
against ``lightning.Trainer``'s signature and ``loss`` by :func:`calibration.losses.build_loss`.
Errors name the key, where it was set (:func:`source_of`) and a close match.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Callable
from typing import Any

from detectors.config import CONFIG_ROOT, check_section, coerce_number, from_dict, load_yaml, unknown_key_problem
from detectors.errors import ConfigError


# Keys the code reads whose default is computed, so the shipped YAML cannot spell it out; the value
# fixes the accepted type (see detectors.config.value_type_problem).
OPTIONAL_KEYS: dict[str, dict[str, Any]] = {
    "optim": {"restart_period": 1},  # cosine_restarts: steps per cycle; default half the training steps
}
# Sections checked by their own code rather than against the defaults' keys.
_OWN_VALIDATION = ("model", "trainer", "loss")


def validate_config(config: dict[str, Any], defaults: dict[str, Any], arch: str, modality: str,
                    source: Callable[[str], str | None] = lambda key: None) -> None:
    """Raise a :class:`ConfigError` naming the key for an unknown key or a value of the wrong type.

    Top-level keys and the ``data``, ``optim``, ``split`` and ``calibration`` sections are checked
    against ``defaults`` (the arch's shipped YAML, which lists every key the code reads) plus
    :data:`OPTIONAL_KEYS`; ``model`` by the detector's config dataclass, ``trainer`` against the
    ``lightning.Trainer`` signature (names and annotated types) and ``loss`` by
    :func:`calibration.losses.build_loss`. Nothing is built: this runs before the backbone and data.
    Float strings such as ``1e-3`` (YAML 1.1 reads them as strings) become floats in place.
    """
    context = f" for {arch}"
    other_archs = {path.stem: load_yaml(path) for path in sorted((CONFIG_ROOT / modality).glob("*.yaml"))
                   if not path.stem.endswith("_demo") and path.stem != arch}

    def owners(dotted: str) -> list[str]:
        section, _, key = dotted.rpartition(".")
        return [name for name, other in other_archs.items()
                if isinstance(other.get(section) if section else other, dict)
                and key in (other.get(section) if section else other)]

    elsewhere = {name: [f"{name}.{key}" for key in section] for name, section in defaults.items()
                 if isinstance(section, dict)}

    def others(section: str) -> list[str]:
        return [key for name, keys in elsewhere.items() if name != section for key in keys]

    try:
        # top level: sections must be mappings (their keys are checked below), scalars typed
        check_section(config, defaults, "", extra_keys={"arch": arch, "modality": modality},
                      elsewhere=others(""), source=source, context=context, owners=owners, recursive=False)
        for name, section_defaults in defaults.items():
            if isinstance(section_defaults, dict) and name not in _OWN_VALIDATION and name in config:
                check_section(config[name], section_defaults, name, extra_keys=OPTIONAL_KEYS.get(name),
                              elsewhere=others(name), source=source, context=context, owners=owners)
    except ConfigError as error:
        flag = error.file or ""
        if flag.startswith("--") and flag != "--set" and error.problem.startswith("unknown key"):
            # the user typed a flag, not the key: a guess at a similar key would only confuse
            known = error.problem[error.problem.find("; known"):] if "; known" in error.problem else ""
            owned = owners(error.where or "")
            note = f" (a setting of {', '.join(owned)})" if owned else ""
            raise ConfigError(flag, error.where, f"{arch} does not use this setting{note}, so {flag} does not "
                              f"apply to it{known}") from error
        raise
    _validate_model(config.get("model") or {}, arch, source)
    _validate_trainer(config.get("trainer") or {}, others("trainer"), source)
    _validate_loss(config.get("loss"), others("loss"), source)


def _validate_model(model: dict[str, Any], arch: str, source: Callable[[str], str | None]) -> None:
    from detectors.registry import detector_class

    try:  # what Detector.from_config does first; the dataclass is built, the detector is not
        from_dict(detector_class(arch).config_class, model, where="model")
    except ConfigError as error:
        if error.file is not None:
            raise
        raise ConfigError(source(error.where or "model"), error.where, error.problem) from error


def _validate_trainer(trainer: dict[str, Any], elsewhere: list[str], source: Callable[[str], str | None]) -> None:
    import lightning as L

    from detectors.training.trainer import CALLBACK_KEYS, TRAINER_KEYS

    hints = typing.get_type_hints(L.Trainer.__init__)
    for key, value in trainer.items():
        dotted = f"trainer.{key}"
        if key in CALLBACK_KEYS:
            continue  # monitor / early stopping: read by build_trainer
        if key not in TRAINER_KEYS:
            problem = ("is owned by the run directory (checkpoints, loggers, callbacks); remove it" if key in hints
                       else unknown_key_problem(dotted, TRAINER_KEYS | CALLBACK_KEYS, elsewhere,
                                                ", not a lightning.Trainer argument"))
            raise ConfigError(source(dotted), dotted, problem)
        hint = hints.get(key)
        if hint is not None and not _matches_hint(value, hint):
            number = coerce_number(value, 0.0)
            if number is not value and _matches_hint(number, hint):
                trainer[key] = number  # "1e-3" as YAML 1.1 reads it
                continue
            raise ConfigError(source(dotted), dotted,
                              f"expected {_describe_hint(hint)} (lightning.Trainer), got {value!r}")


def _validate_loss(loss: Any, elsewhere: list[str], source: Callable[[str], str | None]) -> None:
    from calibration.losses import LOSS_KEYS, build_loss

    for key in loss or {}:
        if key not in LOSS_KEYS:
            raise ConfigError(source(f"loss.{key}"), f"loss.{key}", unknown_key_problem(f"loss.{key}", LOSS_KEYS, elsewhere))
    try:
        build_loss(loss)
    except ConfigError as error:
        raise ConfigError(source(error.where or "loss"), error.where, error.problem) from error


def _matches_hint(value: Any, hint: Any) -> bool:
    """Whether a YAML value fits a type annotation; what this cannot judge (classes) is accepted,
    as YAML never produces those objects and the Trainer checks them itself."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return True
    if hint is type(None):
        return value is None
    if origin is typing.Union or origin is types.UnionType:
        return any(_matches_hint(value, arg) for arg in args)
    if origin is typing.Literal:
        return any(value == arg and type(value) is type(arg) for arg in args)
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if origin in (list, tuple) or hint in (list, tuple):
        if not isinstance(value, (list, tuple)):
            return False
        return not args or all(_matches_hint(v, args[0]) for v in value)
    if origin is dict or hint is dict:
        return isinstance(value, dict)
    return value is not None  # a class (Strategy, Profiler, timedelta, ...): not a YAML value, leave it to Lightning


def _describe_hint(hint: Any) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Union or origin is types.UnionType:
        parts = [_describe_hint(arg) for arg in args]
        return " or ".join(dict.fromkeys(part for part in parts if part))
    if origin is typing.Literal:
        return " or ".join(repr(arg) for arg in args)
    if hint is type(None):
        return "null"
    if origin in (list, tuple):
        return f"a list of {_describe_hint(args[0])}" if args else "a list"
    return getattr(hint, "__name__", str(hint))


def record_sources(sources: dict[str, str], values: dict[str, Any], label: str, prefix: str = "") -> None:
    """Remember ``label`` for every dotted key of ``values``; the latest setting moves to the end."""
    for key, value in values.items():
        dotted = f"{prefix}{key}"
        sources.pop(dotted, None)
        sources[dotted] = label
        if isinstance(value, dict):
            record_sources(sources, value, label, f"{dotted}.")


def source_of(sources: dict[str, str], dotted: str, defaults_label: str, default_keys: set[str]) -> str | None:
    """Where ``dotted`` was set. An error may name a parent (``model.tuning.lora: unknown field(s)
    ['rank']``): then the one source of the keys below it that the defaults lack (the unknown ones),
    else the one non-default source below it, else its nearest recorded parent's source; ``None``
    when several sources are involved."""
    entries = [(key, label) for key, label in sources.items() if key == dotted or key.startswith(f"{dotted}.")]
    if entries and entries[-1][0] == dotted:
        return entries[-1][1]  # set last, as a whole (``--set data=5``)
    below = {key: label for key, label in entries if label != defaults_label}
    for labels in ({label for key, label in below.items() if key not in default_keys}, set(below.values())):
        if len(labels) == 1:
            return labels.pop()
    if below:
        return None
    parts = dotted.split(".")
    for end in range(len(parts), 0, -1):
        label = sources.get(".".join(parts[:end]))
        if label is not None:
            return label
    return None


def flatten_config(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, dict) and value:
            flat.update(flatten_config(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat
