"""What every built-in demo generator shares.

- A dataset YAML that records the parameters it was written with, so a second call with the same
  parameters reuses the files (idempotent demos). Its ``path`` values are relative to the YAML, so a
  demo set keeps working after its folder (e.g. a run directory) is moved or renamed.
- One command-line interface, ``python -m detectors.<modality>.demo OUT_DIR [--n-per-class N]
  [--seed S] [--holdout]``: it writes the demo set (``OUT_DIR/demo_<modality>.yaml``), with
  ``--holdout`` also the hold-out set under its own YAML (``OUT_DIR/holdout_<modality>.yaml``, seed
  S + 1), and prints the path of every YAML it wrote, one per line.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import yaml

from detectors import cli
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


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}")
    return value


def demo_argument_parser(prog: str, description: str, n_per_class: int, holdout_size: str) -> argparse.ArgumentParser:
    """The arguments every demo CLI shares; ``holdout_size`` says how large its hold-out set is."""
    parser = cli.ArgumentParser(prog=prog, description=description)
    parser.add_argument("out_dir", type=Path, help="folder to write the media files and dataset YAMLs into")
    parser.add_argument(
        "--n-per-class",
        type=positive_int,
        default=n_per_class,
        help=f"files per class (real / fake) of the demo set (default {n_per_class})",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the demo set; the hold-out set uses seed + 1")
    parser.add_argument(
        "--holdout",
        action="store_true",
        help=f"also write the hold-out set (an unseen generator; {holdout_size}) under its own YAML",
    )
    return parser
