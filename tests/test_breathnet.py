"""BreathNet: tuning modes, standalone wav2vec2, losses, FiLM, breath-mask dataset, export, end to end.

Everything runs on a tiny local wav2vec2 checkpoint written with ``save_pretrained`` (no hub).
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import yaml
from helpers import stage_dataset

from detectors.audio.breathnet import BreathFiLM, BreathNet, centre_loss, pscl_loss
from detectors.networks.wav2vec2 import Wav2Vec2Encoder, normalize_waveform
from detectors.registry import create_detector
from detectors.tuning import trainable_summary
from export.convert import convert_wav2vec2

TINY = dict(
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=2,
    intermediate_size=64,
    conv_dim=(32, 32, 32),
    conv_kernel=(10, 8, 4),
    conv_stride=(10, 8, 4),
    num_conv_pos_embeddings=16,
    num_conv_pos_embedding_groups=2,
)
SMALL_HEAD = {
    "spectral": {"channels": [8, 16], "embed_dim": 16},
    "fusion_dim": 32,
    "head_hidden": [16],
    "film_hidden": 16,
}


def _tiny_checkpoint(directory, **overrides):
    from transformers import Wav2Vec2Config, Wav2Vec2Model

    torch.manual_seed(0)
    Wav2Vec2Model(Wav2Vec2Config(**{**TINY, **overrides})).save_pretrained(directory)
    return str(directory)


@pytest.fixture(scope="module")
def tiny_backbone(tmp_path_factory):
    """XLS-R layout (LayerNorm convs, pre-norm encoder) at toy size."""
    return _tiny_checkpoint(
        tmp_path_factory.mktemp("w2v_stable"), feat_extract_norm="layer", do_stable_layer_norm=True, conv_bias=True
    )


def _detector(backbone: str, mode: str, **extra) -> BreathNet:
    return create_detector(
        "breathnet", {"backbone": {"name": backbone}, "tuning": {"mode": mode}, **SMALL_HEAD, **extra}
    )


# --------------------------------------------------------------------------------------------- tuning
def test_tuning_modes_trainable_sets(tiny_backbone):
    frozen = trainable_summary(_detector(tiny_backbone, "frozen"))["trainable_tensors"]
    assert frozen and not any(n.startswith("net.backbone.") for n in frozen)

    layernorm = [
        n
        for n in trainable_summary(_detector(tiny_backbone, "layernorm"))["trainable_tensors"]
        if n.startswith("net.backbone.")
    ]
    detector = _detector(tiny_backbone, "layernorm")
    expected = {
        f"net.backbone.{m}.{p}"
        for m, mod in detector.backbone.named_modules()
        if isinstance(mod, torch.nn.LayerNorm)
        for p in ("weight", "bias")
    }
    assert set(layernorm) == expected
    assert any("feature_extractor" in n for n in layernorm)  # the conv LayerNorms (XLS-R layout)
    assert not any(n.endswith("conv.weight") or "_proj." in n or "dense" in n for n in layernorm)

    lora = [
        n
        for n in trainable_summary(_detector(tiny_backbone, "lora"))["trainable_tensors"]
        if n.startswith("net.backbone.")
    ]
    assert lora and all("lora_" in n for n in lora)
    adapted = {n.split(".lora_")[0] for n in lora}
    assert adapted == {
        f"net.backbone.model.encoder.layers.{i}.attention.{p}" for i in range(2) for p in ("q_proj", "k_proj", "v_proj")
    }
    assert not any("feature_extractor" in n or "feature_projection" in n for n in lora)


# --------------------------------------------------------------------------------------------- standalone wav2vec2
@pytest.mark.parametrize(
    "variant",
    [
        dict(feat_extract_norm="group", do_stable_layer_norm=False, conv_bias=False),
        dict(feat_extract_norm="layer", do_stable_layer_norm=True, conv_bias=True),
    ],
)
def test_standalone_wav2vec2_matches_transformers(variant):
    from transformers import Wav2Vec2Config, Wav2Vec2Model

    torch.manual_seed(1)
    config = Wav2Vec2Config(**{**TINY, **variant})
    model = Wav2Vec2Model(config).eval()
    with torch.no_grad():  # non-trivial norms and weight-norm gains so every folding matters
        for name, parameter in model.named_parameters():
            if "norm" in name or "original0" in name:
                parameter.add_(torch.randn_like(parameter) * 0.3)
    standalone = Wav2Vec2Encoder(
        **{
            k: getattr(config, k)
            for k in (
                "conv_dim",
                "conv_kernel",
                "conv_stride",
                "conv_bias",
                "feat_extract_norm",
                "feat_extract_activation",
                "hidden_size",
                "num_hidden_layers",
                "num_attention_heads",
                "intermediate_size",
                "hidden_act",
                "layer_norm_eps",
                "num_conv_pos_embeddings",
                "num_conv_pos_embedding_groups",
                "do_stable_layer_norm",
            )
        }
    )
    standalone.load_state_dict(convert_wav2vec2(model), strict=True)
    x = normalize_waveform(torch.randn(2, 16000))
    with torch.no_grad():
        expected = model(input_values=x).last_hidden_state
        actual = standalone(x)
    assert actual.shape == expected.shape
    assert torch.allclose(actual, expected, atol=1e-4), (actual - expected).abs().max()


# --------------------------------------------------------------------------------------------- losses
def _pscl_reference(z: np.ndarray, y: np.ndarray, t: float, anchor_labels=None) -> float:
    z = z / np.linalg.norm(z, axis=1, keepdims=True)
    total, anchors = 0.0, 0
    for i in range(len(z)):
        if anchor_labels is not None and y[i] not in anchor_labels:
            continue
        others = [a for a in range(len(z)) if a != i]
        positives = [p for p in others if y[p] == y[i]]
        if not positives:
            continue
        denominator = sum(math.exp(z[i] @ z[a] / t) for a in others)
        total += -sum(math.log(math.exp(z[i] @ z[p] / t) / denominator) for p in positives) / len(positives)
        anchors += 1
    return total / anchors


def test_pscl_and_centre_loss_against_independent_computation():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(7, 5))
    y = np.array([0, 1, 0, 1, 1, 0, 2])  # label 2 has no positive: that anchor is skipped
    got = pscl_loss(torch.tensor(z), torch.tensor(y), temperature=0.2)
    assert float(got) == pytest.approx(_pscl_reference(z, y, 0.2), rel=1e-5)
    real_only = pscl_loss(torch.tensor(z), torch.tensor(y), temperature=0.2, real_anchors_only=True)
    assert float(real_only) == pytest.approx(_pscl_reference(z, y, 0.2, anchor_labels={0}), rel=1e-5)
    assert float(real_only) != pytest.approx(float(got), rel=1e-3)

    centres = rng.normal(size=(3, 5))
    expected = 0.5 * np.mean([np.sum((z[i] - centres[y[i]]) ** 2) for i in range(len(z))])
    assert float(centre_loss(torch.tensor(z), torch.tensor(y), torch.tensor(centres))) == pytest.approx(
        expected, rel=1e-6
    )
    real = y == 0
    expected_real = 0.5 * np.mean(np.sum((z[real] - centres[0]) ** 2, axis=1))
    assert float(centre_loss(torch.tensor(z), torch.tensor(y), torch.tensor(centres), real_only=True)) == pytest.approx(
        expected_real, rel=1e-6
    )


def test_film_amplifies_breath_frames():
    film = BreathFiLM(dim=8, hidden=4, init_scale=1.0)
    with torch.no_grad():
        film.shift.zero_()
    gamma_hi, _ = film.gamma_beta(torch.full((1, 3), 0.95))
    gamma_lo, _ = film.gamma_beta(torch.full((1, 3), 0.05))
    assert bool((gamma_hi > 1.5).all()) and bool((gamma_lo < gamma_hi).all())
    frames = torch.randn(1, 3, 8)
    last = film.predictor.layers[-1]
    with torch.no_grad():  # force the predictor's answer: breath everywhere, then nowhere
        last.weight.zero_()
        last.bias.fill_(8.0)
        breathy, logits = film(frames)
        last.bias.fill_(-8.0)
        quiet, _ = film(frames)
    assert logits.shape == (1, 3)
    assert bool((breathy.norm(dim=-1) > 1.9 * frames.norm(dim=-1)).all())  # gamma ~ 1 + softplus(a) = 2
    assert torch.allclose(quiet, frames, atol=1e-2)


# --------------------------------------------------------------------------------------------- data + losses
def test_training_dataset_breath_masks_and_losses(tiny_backbone, tmp_path):
    from detectors.audio.demo import write_demo_audio
    from detectors.data.catalog import load_items
    from detectors.data.dataset import collate_skip

    items = load_items(write_demo_audio(tmp_path, n_per_class=2, seconds=(3, 4)), modality="audio")
    (tmp_path / "broken.wav").write_bytes(b"RIFF not audio")
    broken = type(items[0])(**{**items[0].__dict__, "path": str(tmp_path / "broken.wav")})
    detector = _detector(tiny_backbone, "lora", losses={"contrast_weight": 0.1})
    frames, _, _ = detector.frame_geometry()
    dataset = stage_dataset(detector, items + [broken], "train", {"augment_level": 1})
    batch = collate_skip([dataset[i] for i in range(len(dataset))])
    assert batch["skipped"] == 1
    assert batch["x"].shape == (4, 96000) and batch["x"].dtype == torch.float32
    assert batch["breath_mask"].shape == (4, frames)
    real = batch["label"] == 0
    assert float(batch["breath_mask"][real].sum()) > 0 and float(batch["breath_mask"][~real].sum()) == 0

    detector.train()
    features, logits = detector.forward_batch(batch)
    losses = detector.training_losses(features, logits, batch)
    assert set(losses) == {"breath_bce", "pscl", "centre", "contrast"}
    sum(losses.values()).backward()
    assert detector.net.film.predictor.layers[0].weight.grad.abs().sum() > 0
    assert detector.centres.grad.abs().sum() > 0

    eval_dataset = stage_dataset(detector, items, "eval", {})
    assert "breath_mask" not in eval_dataset[0] and eval_dataset[0]["x"].shape == (96000,)


# --------------------------------------------------------------------------------------------- export
def test_export_matches_in_library_model(tiny_backbone, tmp_path):
    from export.__main__ import export_detector
    from export.benchmark_loader import load_submission
    from export.check import check_submission

    detector = _detector(tiny_backbone, "lora")
    with torch.no_grad():  # trained-looking adapters and calibrator, so merging and folding matter
        for name, parameter in detector.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0, 0.2)
    detector.calibrator.fit(torch.randn(32, 2) * 3, torch.randint(0, 2, (32,)))
    report = export_detector(detector, tmp_path / "sub")
    assert report["max_abs_logit_difference"] <= 1e-4
    assert check_submission(tmp_path / "sub") == []
    config = yaml.safe_load((tmp_path / "sub" / "model_config.yaml").read_text())
    assert config["preprocessing"] == {"sample_rate": 16000, "duration_seconds": 6.0}
    imports = [
        line
        for line in (tmp_path / "sub" / "model.py").read_text().splitlines()
        if line.startswith(("import ", "from "))
    ]
    assert imports and not any("transformers" in line or "torchaudio" in line for line in imports)
    model, _ = load_submission(tmp_path / "sub", device="cpu")
    x = torch.randn(3, 96000) * 0.3
    with torch.no_grad():
        assert torch.allclose(model(x).float(), detector.eval()(x), atol=1e-4)


# --------------------------------------------------------------------------------------------- end to end
def test_fit_export_evaluate_on_holdout(tiny_backbone, tmp_path):
    from detectors.audio.demo import write_demo_audio, write_holdout_audio
    from detectors.audio.fit import AUDIO
    from detectors.evaluate import evaluate_submission
    from detectors.training.fit import run_fit
    from export.__main__ import export_run
    from export.check import check_submission

    data = write_demo_audio(tmp_path / "data", n_per_class=30, seconds=(3, 5))
    holdout = write_holdout_audio(tmp_path / "holdout", n_per_class=8, seconds=(3, 5))
    run = run_fit(
        "audio",
        AUDIO,
        ["breathnet"],
        "breathnet",
        [
            "--data",
            str(data),
            "--backbone",
            tiny_backbone,
            "--tuning",
            "full",
            "--output",
            str(tmp_path / "run"),
            "--max-epochs",
            "10",
            "--batch-size",
            "8",
            "--num-workers",
            "0",
            "--lr",
            "3e-3",
            "--set",
            "optim.backbone_lr=1e-3",
            "--set",
            "model.spectral={channels: [8, 16, 32], embed_dim: 32}",
            "--set",
            "model.fusion_dim=32",
            "--set",
            "model.head_hidden=[16]",
            "--set",
            "data.augment_level=0",
            "--set",
            "split.val=0.2",
            "--set",
            "split.calibration=0.2",
        ],
    )
    metrics = json.loads((run / "metrics.json").read_text())
    assert {"eer", "eer_threshold"} <= set(metrics["validation"])
    summary = json.loads((run / "summary.json").read_text())
    assert summary["backbone_weights"] == "pretrained" and summary["frames_per_clip"] == 300

    report = export_run(run, tmp_path / "submission")
    assert report["max_abs_logit_difference"] <= 1e-4
    assert check_submission(tmp_path / "submission") == []
    results = evaluate_submission(tmp_path / "submission", holdout, tmp_path / "eval", num_workers=0, batch_size=8)
    assert results["base"]["n"] == 16
    assert {"eer", "eer_threshold"} <= set(json.loads((tmp_path / "eval" / "results.json").read_text())["base"])
    assert results["roc_auc"] > 0.6, results["base"]


def test_contrast_loss_matches_an_explicit_pair_loop():
    from detectors.audio.breathnet import contrast_loss

    torch.manual_seed(3)
    embedding = torch.randn(6, 5, dtype=torch.float64)
    labels = torch.tensor([0, 1, 0, 1, 1, 0])
    z = (embedding / embedding.norm(dim=1, keepdim=True)).numpy()
    total, pairs = 0.0, 0
    for i in range(6):
        for j in range(6):
            if i == j:
                continue
            d = float(np.linalg.norm(z[i] - z[j]))
            total += d**2 if labels[i] == labels[j] else max(0.0, 0.5 - d) ** 2
            pairs += 1
    assert float(contrast_loss(embedding, labels, 0.5)) == pytest.approx(total / pairs, rel=1e-6)
    embedding.requires_grad_(True)
    contrast_loss(embedding, labels).backward()
    assert torch.isfinite(embedding.grad).all()
