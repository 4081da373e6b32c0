"""The Trainer a run builds: which ``trainer:`` keys it takes, and early stopping on the monitored metric."""

from __future__ import annotations

import lightning as L
import pytest
import torch

from detectors.errors import ConfigError
from detectors.training.run import RunDir
from detectors.training.trainer import build_trainer


class _PlateauModule(L.LightningModule):
    """Logs a validation score that improves for two epochs, then stays flat."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.scores = [0.5, 0.7, 0.7, 0.7, 0.7, 0.7, 0.7, 0.7]

    def training_step(self, batch, batch_idx):
        return (self.weight - batch[0]).pow(2).mean()

    def validation_step(self, batch, batch_idx):
        pass

    def on_validation_epoch_end(self):
        self.log("val/score", self.scores[self.current_epoch])

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)

    def train_dataloader(self):
        return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.ones(4, 1)), batch_size=2)

    val_dataloader = train_dataloader


def _run(tmp_path):
    return RunDir(tmp_path / "run")


def test_any_trainer_argument_is_accepted(tmp_path):
    trainer, _ = build_trainer(
        {
            "accelerator": "cpu",
            "gradient_clip_val": 1.0,
            "gradient_clip_algorithm": "value",
            "num_sanity_val_steps": 0,
            "max_epochs": 3,
        },
        _run(tmp_path),
    )
    assert trainer.gradient_clip_algorithm == "value" and trainer.num_sanity_val_steps == 0


@pytest.mark.parametrize(
    "config, message",
    [
        ({"max_epoch": 3}, r"trainer\.max_epoch: unknown key \(did you mean 'trainer\.max_epochs'\?\)"),
        ({"logger": False}, r"trainer\.logger: is owned by the run directory"),
        ({"fast_dev_run": True}, r"trainer\.fast_dev_run: is owned by the run directory"),
    ],
)
def test_keys_a_run_cannot_take_are_config_errors(tmp_path, config, message):
    with pytest.raises(ConfigError, match=message):
        build_trainer(config, _run(tmp_path))


def test_early_stopping_on_the_monitored_metric(tmp_path):
    config = {
        "accelerator": "cpu",
        "max_epochs": 8,
        "early_stopping_patience": 2,
        "num_sanity_val_steps": 0,
        "enable_progress_bar": False,
    }
    trainer, checkpoint = build_trainer(config, _run(tmp_path))
    trainer.fit(_PlateauModule())
    # best at epoch 1 (0.7); epochs 2 and 3 do not improve -> stops after epoch 3 of 8
    assert trainer.current_epoch == 4 and trainer.should_stop
    assert float(checkpoint.best_model_score) == pytest.approx(0.7)

    trainer, _ = build_trainer({**config, "early_stopping_patience": None}, _run(tmp_path / "plain"))
    trainer.fit(_PlateauModule())
    assert trainer.current_epoch == 8  # without the key, no early stopping
