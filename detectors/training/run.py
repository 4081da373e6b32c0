"""The run directory: everything a training run leaves behind, in one documented place.

```
RUN_DIR/
  config.yaml                  resolved configuration (defaults <- --config <- flags)
  split.csv                    the train/val/calibration split actually used
  invocation.json              the --data file (path, sha256) and --init-from run it was started on
  checkpoints/last.ckpt        Lightning checkpoints (resume after a crash), best.ckpt
  detector.yaml                architecture + config of the trained detector (rebuild offline)
  detector.safetensors         its weights (LoRA adapters unmerged, calibrator included)
  calibration.json             calibrator state (fitted, or chosen by calibration.sweep)
  calibration_logits.safetensors  uncalibrated calibration-split logits + labels (for sweeps)
  summary.json                 parameter counts, trainable tensors, data counts, timings, skips
  metrics.json                 validation metrics (score, MCC, Brier, accuracy, AUCs, ECE, loss)
  predictions.csv              validation predictions (path, dataset, label, prob_fake) for detectors.compare
  plots/                       reliability diagram, ROC, PR, temperature sweep, training label histogram
  logs/                        TensorBoard and CSV logs
  demo_data/, submission/, evaluation/   the demo only: its data, its export, its benchmark-style pass
```
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from detectors.atomic import write_json, write_text


@dataclass(frozen=True)
class RunDir:
    root: Path

    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def split(self) -> Path:
        return self.root / "split.csv"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def last_checkpoint(self) -> Path:
        return self.checkpoints / "last.ckpt"

    @property
    def summary(self) -> Path:
        return self.root / "summary.json"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.json"

    @property
    def calibration_logits(self) -> Path:
        return self.root / "calibration_logits.safetensors"

    @property
    def predictions(self) -> Path:
        """Validation predictions (path, dataset, label, prob_fake), as ``detectors.evaluate`` writes them."""
        return self.root / "predictions.csv"

    @property
    def plots(self) -> Path:
        return self.root / "plots"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def demo_submission(self) -> Path:
        """Where the demo exports its submission (calibration.sweep points there after a sweep)."""
        return self.root / "submission"

    def clear(self) -> None:
        """Delete the run's contents (``--overwrite``), keeping the directory and its lock file: the
        process that holds the lock must still hold it afterwards (see detectors.locking)."""
        from detectors.locking import LOCK_NAME

        if not self.root.is_dir():
            return
        for path in self.root.iterdir():
            if path.name == LOCK_NAME:
                continue
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()

    def is_finished(self) -> bool:
        return self.summary.is_file() and (self.root / "detector.safetensors").is_file()

    def write_config(self, config: dict[str, Any]) -> None:
        write_text(self.config, yaml.safe_dump(config, sort_keys=False))

    def read_config(self) -> dict[str, Any]:
        from detectors.config import load_yaml

        return load_yaml(self.config)

    @property
    def invocation(self) -> Path:
        """The data and the run it fine-tunes, besides config.yaml (compared when resuming)."""
        return self.root / "invocation.json"

    def write_invocation(self, values: dict[str, Any]) -> None:
        write_json(self.invocation, values)

    def read_invocation(self) -> dict[str, Any]:
        return self.read_json(self.invocation)

    def write_summary(self, summary: dict[str, Any]) -> None:
        write_json(self.summary, summary)

    def read_json(self, path: Path) -> dict[str, Any]:
        return json.loads(path.read_text()) if path.is_file() else {}
