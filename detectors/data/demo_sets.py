"""What every built-in demo generator shares: a dataset YAML that records the parameters it was
written with, so a second call with the same parameters reuses the files (idempotent demos)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from detectors.atomic import write_text


def recorded_params_match(yaml_path: Path, params: dict[str, Any]) -> bool:
    """True when ``yaml_path`` exists, parses and records exactly ``params`` under ``demo:``."""
    if not yaml_path.is_file():
        return False
    try:
        doc = yaml.safe_load(yaml_path.read_text())
    except yaml.YAMLError:
        return False
    return isinstance(doc, dict) and doc.get("demo") == params


def write_demo_yaml(yaml_path: Path, params: dict[str, Any], datasets: list[dict[str, Any]]) -> Path:
    """Write the dataset YAML last: its presence means the set is complete."""
    write_text(yaml_path, yaml.safe_dump({"demo": params, "datasets": datasets}, sort_keys=False))
    return yaml_path
