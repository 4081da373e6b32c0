"""BreathNet (audio): XLS-R / wav2vec 2.0 temporal features modulated by a breath-supervised FiLM,
fused with a log-mel CNN, trained with classification + breath BCE + PSCL + centre losses.

- temporal branch: ``Wav2Vec2Model`` from transformers via the shared ``detectors.backbones`` (hub id
  or local directory; default ``facebook/wav2vec2-xls-r-300m``), tuned ``frozen`` / ``layernorm`` / ``lora`` (q/k/v projections of
  the encoder layers, never the feature-extractor convolutions) / ``full``;
- BreathFiLM (``export/standalone/breathnet.py``): per-frame breath probability ``p`` from a small MLP,
  trained against the breath masks of ``detectors.audio.breath`` (training batches carry
  ``breath_mask`` aligned to the wav2vec2 frames); ``gamma = 1 + softplus(a) p``, ``beta = b p``;
- spectral branch: torchaudio ``MelSpectrogram`` -> log -> ``SpectralCNN``;
- fusion: concat(mean+std pooled temporal, spectral) -> Linear -> GELU = the embedding the
  contrastive and centre losses see -> MLP head -> logits (0 real, 1 fake).

Auxiliary losses (``training_losses``, each with a weight in ``model.losses``):
- ``breath``: BCE between the FiLM's breath logits and the (soft) frame mask;
- ``pscl``: positive-sample supervised contrastive loss (Khosla et al. 2020 form): for anchor i the
  positives are all other samples with the same label, the denominator all other samples;
  anchors without a positive in the batch are skipped; ``pscl_anchors: real`` keeps only real
  anchors (the "positive-only" reading: bona fide speech is pulled together, fakes only pushed away);
- ``contrast`` (off by default): margin contrastive loss over pairs (same label pulled together,
  different labels pushed beyond ``contrast_margin``);
- ``centre``: ``0.5 ||f_i - c_{y_i}||^2`` averaged, with learnable class centres; with
  ``centre_classes: real`` only real samples are pulled to the real centre (one-class compactness,
  fakes are left free), with ``all`` every class has a centre (Wen et al. 2016).
The classification loss and the calibrator come from the shared training spine.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from detectors.audio.io import BENCHMARK_NUM_SAMPLES, BENCHMARK_SAMPLE_RATE
from detectors.base import Detector
from detectors.errors import ConfigError
from detectors.registry import register_detector
from detectors.backbones import BackboneConfig
from detectors.tuning import TuningConfig
from export.standalone.breathnet import (
    BreathFiLM,
    SpectralCNN,
    conv_frame_geometry,
    normalize_waveform,
    statistics_pooling,
)
from export.standalone.heads import MLP

DEFAULT_BACKBONE = "facebook/wav2vec2-xls-r-300m"

# Fields of Wav2Vec2Config the standalone export reproduces.
STANDALONE_FIELDS = ("conv_dim", "conv_kernel", "conv_stride", "conv_bias", "feat_extract_norm",
                     "feat_extract_activation", "hidden_size", "num_hidden_layers", "num_attention_heads",
                     "intermediate_size", "hidden_act", "layer_norm_eps", "num_conv_pos_embeddings",
                     "num_conv_pos_embedding_groups", "do_stable_layer_norm")


# --------------------------------------------------------------------------------------------
# The detector
# --------------------------------------------------------------------------------------------


@dataclass
class BreathLossConfig:
    breath_weight: float = 0.5  # BCE of the FiLM breath predictor vs the breath mask
    pscl_weight: float = 0.1  # positive-sample supervised contrastive loss on the fused embedding
    pscl_temperature: float = 0.1
    pscl_anchors: str = "all"  # all | real (only real samples act as anchors)
    centre_weight: float = 0.01
    centre_classes: str = "all"  # all | real
    # methods.md lists "a contrast loss" beside PSCL without defining it; this is the classic margin
    # form (Hadsell et al. 2006) on L2-normalised embeddings, off unless a weight is given
    contrast_weight: float = 0.0
    contrast_margin: float = 0.5


@dataclass
class MelConfig:
    n_fft: int = 512
    win_length: int = 400  # 25 ms
    hop_length: int = 160  # 10 ms
    n_mels: int = 64


@dataclass
class SpectralConfig:
    channels: list[int] = field(default_factory=lambda: [16, 32, 64])
    embed_dim: int = 128


@dataclass
class BreathNetConfig:
    backbone: BackboneConfig = field(default_factory=lambda: BackboneConfig(name=DEFAULT_BACKBONE, source="transformers"))
    tuning: TuningConfig = field(default_factory=TuningConfig)
    film_hidden: int = 64
    film_init_scale: float = 1.0
    mel: MelConfig = field(default_factory=MelConfig)
    spectral: SpectralConfig = field(default_factory=SpectralConfig)
    fusion_dim: int = 256
    head_hidden: list[int] = field(default_factory=lambda: [128])
    dropout: float = 0.1
    num_classes: int = 2
    losses: BreathLossConfig = field(default_factory=BreathLossConfig)
    allow_random_backbone: bool = False  # built-in demo only


class BreathNetFeatures(NamedTuple):
    embedding: torch.Tensor  # fused embedding [B, fusion_dim]
    breath_logits: torch.Tensor  # per-frame breath logits [B, T]


@register_detector
class BreathNet(Detector):
    arch = "breathnet"
    modality = "audio"
    config_class = BreathNetConfig
    supported_num_classes = (2,)  # real vs fake speech

    def __init__(self, config: BreathNetConfig) -> None:
        super().__init__(config)
        for key in ("centre_classes", "pscl_anchors"):
            if getattr(config.losses, key) not in ("all", "real"):
                raise ConfigError(None, f"model.losses.{key}", f"use 'all' or 'real', got {getattr(config.losses, key)!r}")
        import torchaudio

        self.attach_backbone(config.backbone, config.tuning)
        if self.backbone.info.family != "wav2vec2":
            raise ConfigError(None, "model.backbone.name", f"BreathNet needs a wav2vec 2.0 / XLS-R backbone, got "
                                                           f"a {self.backbone.info.family} model")
        hidden = self.backbone.embed_dim
        self.film = BreathFiLM(hidden, config.film_hidden, config.film_init_scale)
        mel = config.mel
        self.mel_spectrogram = torchaudio.transforms.MelSpectrogram(
            sample_rate=BENCHMARK_SAMPLE_RATE, n_fft=mel.n_fft, win_length=mel.win_length,
            hop_length=mel.hop_length, n_mels=mel.n_mels, power=2.0, center=True, pad_mode="reflect")
        self.spectral = SpectralCNN(config.spectral.channels, config.spectral.embed_dim)
        self.fusion = nn.Linear(2 * hidden + config.spectral.embed_dim, config.fusion_dim)
        self.head_dropout = nn.Dropout(config.dropout)
        self.head = MLP([config.fusion_dim, *config.head_hidden, config.num_classes], activation="gelu")
        centres = config.num_classes if config.losses.centre_classes == "all" else 1
        self.centres = nn.Parameter(torch.randn(centres, config.fusion_dim) * 0.1)

    # ------------------------------------------------------------------ forward
    def log_mel(self, waveform: torch.Tensor) -> torch.Tensor:
        return torch.log(self.mel_spectrogram(waveform.float()) + 1e-6)

    def forward_features(self, x: torch.Tensor) -> BreathNetFeatures:
        x = x.float()
        frames = self.backbone(normalize_waveform(x))
        frames, breath_logits = self.film(frames)
        spectral = self.spectral(self.log_mel(x))
        fused = F.gelu(self.fusion(torch.cat([statistics_pooling(frames), spectral], dim=-1)))
        return BreathNetFeatures(fused, breath_logits)

    def forward_head(self, features: BreathNetFeatures | torch.Tensor) -> torch.Tensor:
        embedding = features.embedding if isinstance(features, BreathNetFeatures) else features
        return self.head(self.head_dropout(embedding))

    def frame_geometry(self) -> tuple[int, float, float]:
        """(frames per 6 s clip, frame stride s, frame length s): what the breath masks align to."""
        cfg = self.backbone.inner.config
        frames, stride, receptive = conv_frame_geometry(cfg.conv_kernel, cfg.conv_stride, BENCHMARK_NUM_SAMPLES)
        return frames, stride / BENCHMARK_SAMPLE_RATE, receptive / BENCHMARK_SAMPLE_RATE

    # ------------------------------------------------------------------ losses
    def training_losses(self, features: BreathNetFeatures, logits: torch.Tensor, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        cfg = self.config.losses
        labels = batch["label"]
        losses: dict[str, torch.Tensor] = {}
        if cfg.breath_weight > 0 and "breath_mask" in batch:
            target = batch["breath_mask"].to(features.breath_logits)
            losses["breath_bce"] = cfg.breath_weight * F.binary_cross_entropy_with_logits(features.breath_logits, target)
        if cfg.pscl_weight > 0:
            losses["pscl"] = cfg.pscl_weight * pscl_loss(features.embedding, labels, cfg.pscl_temperature,
                                                         real_anchors_only=cfg.pscl_anchors == "real")
        if cfg.contrast_weight > 0:
            losses["contrast"] = cfg.contrast_weight * contrast_loss(features.embedding, labels, cfg.contrast_margin)
        if cfg.centre_weight > 0:
            losses["centre"] = cfg.centre_weight * centre_loss(features.embedding, labels, self.centres,
                                                               real_only=cfg.centre_classes == "real")
        return losses

    def parameter_groups(self, lr: float, backbone_lr: float | None, weight_decay: float) -> list[dict[str, Any]]:
        """The shared groups, with the centre-loss centres moved to a group without weight decay
        (decay would pull every centre towards the origin, against the centre loss)."""
        groups = []
        for group in super().parameter_groups(lr, backbone_lr, weight_decay):
            params = [p for p in group["params"] if p is not self.centres]
            if params:
                groups.append({**group, "params": params})
        if self.centres.requires_grad:
            groups.append({"params": [self.centres], "lr": lr, "weight_decay": 0.0})
        return groups

    # ------------------------------------------------------------------ data
    def make_dataset(self, items: list, stage: str, data: dict) -> Any:
        from detectors.audio.data import build_audio_dataset

        frames, stride_s, length_s = self.frame_geometry()
        return build_audio_dataset(items, stage, data, breath_frames=(frames, stride_s, length_s))

    def example_input(self, batch_size: int = 2) -> torch.Tensor:
        generator = torch.Generator().manual_seed(0)
        return torch.rand(batch_size, BENCHMARK_NUM_SAMPLES, generator=generator) * 2 - 1

    def summary(self) -> dict[str, Any]:
        frames, stride, length = self.frame_geometry()
        return {**super().summary(), "frames_per_clip": frames, "frame_stride_s": stride, "frame_length_s": length}

    # ------------------------------------------------------------------ export
    def preprocessing(self) -> dict[str, Any]:
        return {"sample_rate": BENCHMARK_SAMPLE_RATE, "duration_seconds": BENCHMARK_NUM_SAMPLES / BENCHMARK_SAMPLE_RATE}

    def export_spec(self):
        from export.convert import convert_wav2vec2
        from export.spec import ExportSpec

        arch = self.backbone.inner.config.to_dict()
        wav2vec2 = {k: (list(arch[k]) if isinstance(arch[k], (tuple, list)) else arch[k]) for k in STANDALONE_FIELDS}
        mel = self.config.mel
        state = {
            **{f"wav2vec2.{k}": v for k, v in convert_wav2vec2(self.backbone.model).items()},
            **{f"film.{k}": v for k, v in self.film.state_dict().items()},
            "log_mel.mel_fb": self.mel_spectrogram.mel_scale.fb.detach().clone(),
            **{f"spectral.{k}": v for k, v in self.spectral.state_dict().items()},
            **{f"fusion.{k}": v for k, v in self.fusion.state_dict().items()},
            **{f"head.{k}": v for k, v in self.head.state_dict().items()},
            **self.calibration_export_state(),
        }
        return ExportSpec(
            modality="audio",
            model_class="BreathNetStandalone",
            sources=["heads", "breathnet"],
            init_kwargs={"wav2vec2": wav2vec2, "film_hidden": self.config.film_hidden,
                         "mel": {"n_fft": mel.n_fft, "win_length": mel.win_length, "hop_length": mel.hop_length,
                                 "n_mels": mel.n_mels},
                         "spectral": {"channels": list(self.config.spectral.channels),
                                      "embed_dim": self.config.spectral.embed_dim},
                         "fusion_dim": self.config.fusion_dim, "head_dims": list(self.config.head_hidden),
                         "num_classes": self.num_classes},
            state_dict=state,
            preprocessing=self.preprocessing(),
            num_classes=self.num_classes,
            name=f"{self.arch}-{self.config.tuning.mode}",
        )


# --------------------------------------------------------------------------------------------
# Losses
# --------------------------------------------------------------------------------------------


def pscl_loss(embedding: torch.Tensor, labels: torch.Tensor, temperature: float = 0.1,
              real_anchors_only: bool = False) -> torch.Tensor:
    """Positive-sample supervised contrastive loss on L2-normalised embeddings.

    ``L = mean_i [ -1/|P(i)| sum_{p in P(i)} log( exp(s_ip / t) / sum_{a != i} exp(s_ia / t) ) ]`` with
    ``P(i)`` the other samples of i's label; anchors without positives are left out (0 if none has one).
    ``real_anchors_only``: i runs over real (label 0) samples only; every sample stays in the denominators.
    """
    z = F.normalize(embedding.float(), dim=-1)
    n = z.shape[0]
    similarity = z @ z.T / temperature
    self_mask = torch.eye(n, dtype=torch.bool, device=z.device)
    similarity = similarity.masked_fill(self_mask, float("-inf"))
    log_prob = similarity - torch.logsumexp(similarity, dim=1, keepdim=True)
    positives = (labels[:, None] == labels[None, :]) & ~self_mask
    counts = positives.sum(dim=1)
    valid = counts > 0
    if real_anchors_only:
        valid = valid & (labels == 0)
    if not bool(valid.any()):
        return embedding.sum() * 0.0
    per_anchor = -(log_prob.masked_fill(~positives, 0.0)).sum(dim=1)[valid] / counts[valid]
    return per_anchor.mean()


def centre_loss(embedding: torch.Tensor, labels: torch.Tensor, centres: torch.Tensor, real_only: bool = False) -> torch.Tensor:
    """``0.5 * mean ||f_i - c_{y_i}||^2`` (``real_only``: over real samples, single centre row 0)."""
    embedding = embedding.float()
    if real_only:
        real = labels == 0
        if not bool(real.any()):
            return embedding.sum() * 0.0
        return 0.5 * (embedding[real] - centres[0]).pow(2).sum(dim=1).mean()
    return 0.5 * (embedding - centres[labels]).pow(2).sum(dim=1).mean()


def contrast_loss(embedding: torch.Tensor, labels: torch.Tensor, margin: float = 0.5) -> torch.Tensor:
    """Pairwise margin contrastive loss on L2-normalised embeddings, over all pairs i != j:
    same label -> ``d^2``, different label -> ``max(0, margin - d)^2``, averaged over pairs."""
    z = F.normalize(embedding.float(), dim=-1)
    n = z.shape[0]
    if n < 2:
        return z.sum() * 0.0
    distance = torch.cdist(z, z).clamp_min(1e-12)  # clamp keeps the gradient finite at d = 0
    same = labels[:, None] == labels[None, :]
    off_diagonal = ~torch.eye(n, dtype=torch.bool, device=z.device)
    per_pair = torch.where(same, distance.pow(2), (margin - distance).clamp_min(0).pow(2))
    return per_pair[off_diagonal].mean()


__all__ = ["BreathNet", "BreathNetConfig", "BreathNetFeatures", "centre_loss", "contrast_loss",
           "pscl_loss"]
