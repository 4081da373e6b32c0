"""Shared fixtures: tiny local backbones (never a hub call) and small demo datasets."""

from __future__ import annotations

import os

# No test may reach a model hub: fail fast instead of retrying.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)


def make_tiny_dinov3(directory: Path) -> Path:
    from transformers import DINOv3ViTConfig, DINOv3ViTModel

    torch.manual_seed(0)
    config = DINOv3ViTConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        image_size=32,
        patch_size=16,
        num_register_tokens=4,
        layerscale_value=1.0,
    )
    DINOv3ViTModel(config).save_pretrained(directory)
    return directory


def make_tiny_dinov2(directory: Path) -> Path:
    from transformers import Dinov2Config, Dinov2Model

    torch.manual_seed(0)
    Dinov2Model(
        Dinov2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, image_size=28, patch_size=14)
    ).save_pretrained(directory)
    return directory


@pytest.fixture(scope="session")
def tiny_dinov3(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_dinov3(tmp_path_factory.mktemp("tiny_dinov3"))


@pytest.fixture(scope="session")
def tiny_dinov2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_dinov2(tmp_path_factory.mktemp("tiny_dinov2"))
