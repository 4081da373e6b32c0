"""BreathNet (arXiv 2602.13596, 2026; no public code) for audio: XLS-R / wav2vec 2.0 temporal features modulated by a breath-supervised FiLM,
fused with a log-mel CNN, trained with classification + breath BCE + PSCL + centre losses.

- temporal branch: ``Wav2Vec2Model`` from transformers via the shared ``detectors.backbones`` (hub id
  or local directory; default ``facebook/wav2vec2-xls-r-300m``), tuned ``frozen`` / ``layernorm`` / ``lora`` (q/k/v projections of
  the encoder layers, never the feature-extractor convolutions) / ``full``;
- :class:`BreathFiLM`: per-frame breath probability ``p`` from a small MLP,
  trained against the breath masks of ``detectors.audio.breath`` (training batches carry
  ``breath_mask`` aligned to the wav2vec2 frames); ``gamma = 1 + softplus(a) p``, ``beta = b p``;
- spectral branch: :class:`LogMel` (``torch.stft`` and torchaudio's mel filterbank, stored as a
  weight) -> :class:`SpectralCNN`;
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

import math
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from detectors.audio.data import AudioDataConfig, audio_recipe
from detectors.audio.io import BENCHMARK_NUM_SAMPLES, BENCHMARK_SAMPLE_RATE
from detectors.backbones import BackboneConfig
from detectors.base import Detector
from detectors.config import setting
from detectors.data.dataset import SampleRecipe
from detectors.errors import ConfigError
from detectors.networks.layers import MLP, DetectorNetwork, Float32Buffers, parameter_dtype
from detectors.networks.wav2vec2 import Wav2Vec2Encoder, conv_frame_geometry, normalize_waveform
from detectors.registry import register_detector
from detectors.tuning import TuningConfig

DEFAULT_BACKBONE = "facebook/wav2vec2-xls-r-300m"


# --------------------------------------------------------------------------------------------
# Settings
# --------------------------------------------------------------------------------------------


@dataclass
class BreathLossConfig:
    breath_weight: float = setting(0.5, help="BCE of the FiLM breath predictor vs the breath masks", ge=0)
    pscl_weight: float = setting(0.1, help="positive-sample supervised contrastive loss (fused embedding)", ge=0)
    pscl_temperature: float = setting(0.1, help="PSCL temperature", gt=0)
    pscl_anchors: Literal["all", "real"] = setting("all", help="all | real (only real samples act as anchors)")
    centre_weight: float = setting(0.01, help="centre loss", ge=0)
    centre_classes: Literal["all", "real"] = setting("all", help="all: a centre per class | real: one real centre")
    # "a contrast loss" beside PSCL is not defined by the paper; this is the classic margin form
    # (Hadsell et al., CVPR 2006) on L2-normalised embeddings, off unless a weight is given
    contrast_weight: float = setting(0.0, help="margin contrastive loss (off by default)", ge=0)
    contrast_margin: float = setting(0.5, help="margin of the contrastive loss", ge=0)


@dataclass
class MelConfig:
    n_fft: int = setting(512, help="FFT size", ge=1)
    win_length: int = setting(400, help="window, samples (25 ms)", ge=1)
    hop_length: int = setting(160, help="hop, samples (10 ms)", ge=1)
    n_mels: int = setting(64, help="mel bands", ge=1)


@dataclass
class SpectralConfig:
    channels: list[int] = setting([16, 32, 64], help="channels of the log-mel CNN blocks", ge=1)
    embed_dim: int = setting(128, help="spectral embedding size", ge=1)


@dataclass
class BreathNetConfig:
    backbone: BackboneConfig = setting(
        BackboneConfig(name=DEFAULT_BACKBONE, source="transformers"),
        help="wav2vec 2.0 / XLS-R (hub id or local directory)",
    )
    tuning: TuningConfig = setting(TuningConfig(), help="how the backbone is tuned (LoRA: encoder q/k/v only)")
    film_hidden: int = setting(64, help="BreathFiLM breath-presence MLP width", ge=1)
    film_init_scale: float = setting(1.0, help="gamma = 1 + softplus(a) * p; softplus(a) starts here", ge=0)
    mel: MelConfig = setting(MelConfig(), help="log-mel front-end")
    spectral: SpectralConfig = setting(SpectralConfig(), help="spectral branch")
    fusion_dim: int = setting(256, help="fused embedding size", ge=1)
    head_hidden: list[int] = setting([128], help="hidden sizes of the MLP head", ge=1)
    dropout: float = setting(0.1, help="dropout before the head", ge=0, lt=1)
    num_classes: Literal[2] = setting(2, help="real vs fake speech")
    losses: BreathLossConfig = setting(BreathLossConfig(), help="auxiliary losses")
    allow_random_backbone: bool = setting(False, help="built-in demo only: random backbone when the hub is unreachable")


# --------------------------------------------------------------------------------------------
# The network
# --------------------------------------------------------------------------------------------


def statistics_pooling(frames: torch.Tensor) -> torch.Tensor:
    """``[B, T, D]`` -> ``[B, 2D]``: mean and (population) standard deviation over time."""
    mean = frames.mean(dim=1)
    std = (frames - mean.unsqueeze(1)).pow(2).mean(dim=1).clamp_min(1e-6).sqrt()
    return torch.cat([mean, std], dim=-1)


class BreathFiLM(nn.Module):
    """Breath-presence predictor over frame features and the FiLM it drives.

    ``p = sigmoid(MLP(h))`` per frame; ``gamma = 1 + softplus(a) * p`` and ``beta = b * p`` (``a``,
    ``b`` learned per channel), so ``h' = gamma * h + beta``. ``softplus(a) >= 0`` makes gamma >= 1
    and increasing in ``p``: breath-bearing frames are amplified, never suppressed.
    Returns ``(modulated frames [B, T, D], breath logits [B, T])``.
    """

    def __init__(self, dim: int, hidden: int = 64, init_scale: float = 1.0):
        super().__init__()
        self.predictor = MLP([dim, hidden, 1], activation="gelu")
        # softplus(raw) = init_scale at initialisation
        raw = math.log(math.expm1(init_scale)) if init_scale > 0 else -10.0
        self.scale_raw = nn.Parameter(torch.full((dim,), float(raw)))
        self.shift = nn.Parameter(torch.zeros(dim))

    def gamma_beta(self, prob: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        p = prob.unsqueeze(-1)
        return 1.0 + F.softplus(self.scale_raw) * p, self.shift * p

    def forward(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.predictor(frames).squeeze(-1)
        gamma, beta = self.gamma_beta(torch.sigmoid(logits))
        return frames * gamma + beta, logits


class SpectralCNN(nn.Module):
    """Log-mel ``[B, n_mels, T]`` -> embedding ``[B, embed_dim]``.

    Per-clip standardisation of the log-mel (gain invariance), then ``len(channels)`` blocks of
    Conv2d(3x3) -> GroupNorm -> GELU -> MaxPool(2), global average pooling and a Linear layer.
    """

    def __init__(self, channels: Sequence[int] = (16, 32, 64), embed_dim: int = 128, groups: int = 4):
        super().__init__()
        blocks: list[nn.Module] = []
        previous = 1
        for width in channels:
            blocks.append(nn.Conv2d(previous, int(width), kernel_size=3, padding=1))
            blocks.append(nn.GroupNorm(min(int(groups), int(width)), int(width)))
            blocks.append(nn.GELU())
            blocks.append(nn.MaxPool2d(2))
            previous = int(width)
        self.blocks = nn.Sequential(*blocks)
        self.proj = nn.Linear(previous, int(embed_dim))

    def forward(self, log_mel: torch.Tensor) -> torch.Tensor:
        mean = log_mel.mean(dim=(1, 2), keepdim=True)
        std = log_mel.std(dim=(1, 2), keepdim=True).clamp_min(1e-5)
        x = ((log_mel - mean) / std).unsqueeze(1)
        x = self.blocks(x).mean(dim=(2, 3))
        return self.proj(x)


class LogMel(Float32Buffers):
    """``log(mel power spectrogram + eps)`` with ``torch.stft`` and a stored filterbank ``mel_fb``
    ``[n_fft // 2 + 1, n_mels]`` (what torchaudio's ``MelSpectrogram`` computes with its defaults:
    Hann window, centred, reflect padding, power 2; the filterbank is a weight, so the exported model
    does not depend on torchaudio's version)."""

    float32_buffers = ("mel_fb", "window")

    def __init__(
        self, n_fft: int = 512, win_length: int = 400, hop_length: int = 160, n_mels: int = 64, log_eps: float = 1e-6
    ):
        super().__init__()
        self.n_fft = n_fft
        self.win_length = win_length
        self.hop_length = hop_length
        self.log_eps = log_eps
        self.register_buffer("mel_fb", torch.zeros(n_fft // 2 + 1, n_mels))
        self.register_buffer("window", torch.hann_window(win_length), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        spec = torch.stft(
            x.float(),
            n_fft=self.n_fft,
            hop_length=self.hop_length,
            win_length=self.win_length,
            window=self.window.float(),
            center=True,
            pad_mode="reflect",
            normalized=False,
            onesided=True,
            return_complex=True,
        )
        power = spec.abs().pow(2.0)  # [B, F, T]
        mel = torch.matmul(power.transpose(-1, -2), self.mel_fb.float()).transpose(-1, -2)
        return torch.log(mel + self.log_eps)


class BreathNetFeatures(NamedTuple):
    embedding: torch.Tensor  # fused embedding [B, fusion_dim]
    breath_logits: torch.Tensor  # per-frame breath logits [B, T]


class BreathNetNetwork(DetectorNetwork):
    """``[B, 96000]`` float32 16 kHz waveform -> logits ``[B, num_classes]``.

    temporal: normalise -> wav2vec 2.0 -> BreathFiLM -> mean+std pooling; spectral: log-mel ->
    SpectralCNN; fusion: concat -> Linear -> GELU (the embedding the auxiliary losses see);
    head: dropout -> MLP. ``backbone``: the wav2vec 2.0 module or the arguments of
    :class:`Wav2Vec2Encoder`.
    """

    def __init__(
        self,
        backbone: nn.Module | dict,
        film_hidden: int = 64,
        film_init_scale: float = 1.0,
        mel: dict | None = None,
        spectral: dict | None = None,
        fusion_dim: int = 256,
        head_hidden: Sequence[int] = (128,),
        dropout: float = 0.0,
        num_classes: int = 2,
    ):
        super().__init__()
        self.backbone = backbone if isinstance(backbone, nn.Module) else Wav2Vec2Encoder(**backbone)
        hidden = self.backbone.embed_dim
        self.film = BreathFiLM(hidden, film_hidden, film_init_scale)
        self.log_mel = LogMel(**(mel or {}))
        spectral = spectral or {}
        self.spectral = SpectralCNN(**spectral)
        self.fusion = nn.Linear(2 * hidden + int(spectral.get("embed_dim", 128)), int(fusion_dim))
        self.head_dropout = nn.Dropout(dropout)
        self.head = MLP([int(fusion_dim)] + [int(h) for h in head_hidden] + [int(num_classes)], activation="gelu")

    def forward_features(self, waveform: torch.Tensor) -> BreathNetFeatures:
        dtype = parameter_dtype(self.fusion)
        x = waveform.float()
        frames = self.backbone(normalize_waveform(x).to(dtype))
        frames, breath_logits = self.film(frames)
        spectral = self.spectral(self.log_mel(x).to(dtype))
        fused = F.gelu(self.fusion(torch.cat([statistics_pooling(frames), spectral], dim=-1)))
        return BreathNetFeatures(fused, breath_logits)

    def forward_head(self, features: BreathNetFeatures | torch.Tensor) -> torch.Tensor:
        embedding = features.embedding if isinstance(features, BreathNetFeatures) else features
        return self.head(self.head_dropout(embedding))


# --------------------------------------------------------------------------------------------
# The detector
# --------------------------------------------------------------------------------------------


@register_detector
class BreathNet(Detector):
    arch = "breathnet"
    modality = "audio"
    modality_default = True
    config_class = BreathNetConfig
    data_config_class = AudioDataConfig
    supported_num_classes = (2,)  # real vs fake speech

    def __init__(self, config: BreathNetConfig) -> None:
        super().__init__(config)
        import torchaudio

        backbone = self.build_backbone(config.backbone, config.tuning)
        if backbone.info.family != "wav2vec2":
            raise ConfigError(
                None,
                "model.backbone.name",
                f"BreathNet needs a wav2vec 2.0 / XLS-R backbone, got a {backbone.info.family} model",
            )
        mel = config.mel
        self.net = self.build_network(
            BreathNetNetwork,
            backbone=backbone,
            film_hidden=config.film_hidden,
            film_init_scale=config.film_init_scale,
            mel={"n_fft": mel.n_fft, "win_length": mel.win_length, "hop_length": mel.hop_length, "n_mels": mel.n_mels},
            spectral={"channels": list(config.spectral.channels), "embed_dim": config.spectral.embed_dim},
            fusion_dim=config.fusion_dim,
            head_hidden=list(config.head_hidden),
            dropout=config.dropout,
        )
        with torch.no_grad():  # torchaudio MelSpectrogram's filterbank (HTK mel scale, no norm)
            self.net.log_mel.mel_fb.copy_(
                torchaudio.functional.melscale_fbanks(
                    mel.n_fft // 2 + 1, 0.0, float(BENCHMARK_SAMPLE_RATE // 2), mel.n_mels, BENCHMARK_SAMPLE_RATE
                )
            )
        centres = config.num_classes if config.losses.centre_classes == "all" else 1
        self.centres = nn.Parameter(torch.randn(centres, config.fusion_dim) * 0.1)

    def frame_geometry(self) -> tuple[int, float, float]:
        """(frames per 6 s clip, frame stride s, frame length s): what the breath masks align to."""
        cfg = self.backbone.inner.config
        frames, stride, receptive = conv_frame_geometry(cfg.conv_kernel, cfg.conv_stride, BENCHMARK_NUM_SAMPLES)
        return frames, stride / BENCHMARK_SAMPLE_RATE, receptive / BENCHMARK_SAMPLE_RATE

    # ------------------------------------------------------------------ losses
    def training_losses(
        self, features: BreathNetFeatures, logits: torch.Tensor, batch: dict[str, Any]
    ) -> dict[str, torch.Tensor]:
        cfg = self.config.losses
        labels = batch["label"]
        losses: dict[str, torch.Tensor] = {}
        if cfg.breath_weight > 0 and "breath_mask" in batch:
            target = batch["breath_mask"].to(features.breath_logits)
            losses["breath_bce"] = cfg.breath_weight * F.binary_cross_entropy_with_logits(
                features.breath_logits, target
            )
        if cfg.pscl_weight > 0:
            losses["pscl"] = cfg.pscl_weight * pscl_loss(
                features.embedding, labels, cfg.pscl_temperature, real_anchors_only=cfg.pscl_anchors == "real"
            )
        if cfg.contrast_weight > 0:
            losses["contrast"] = cfg.contrast_weight * contrast_loss(features.embedding, labels, cfg.contrast_margin)
        if cfg.centre_weight > 0:
            losses["centre"] = cfg.centre_weight * centre_loss(
                features.embedding, labels, self.centres, real_only=cfg.centre_classes == "real"
            )
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

    # ------------------------------------------------------------------ data / export
    def data_recipe(self, stage: str, data: AudioDataConfig) -> SampleRecipe:
        return audio_recipe(stage, data, breath_frames=self.frame_geometry())

    def summary(self) -> dict[str, Any]:
        frames, stride, length = self.frame_geometry()
        return {**super().summary(), "frames_per_clip": frames, "frame_stride_s": stride, "frame_length_s": length}

    def preprocessing(self) -> dict[str, Any]:
        return {"sample_rate": BENCHMARK_SAMPLE_RATE, "duration_seconds": BENCHMARK_NUM_SAMPLES / BENCHMARK_SAMPLE_RATE}


# --------------------------------------------------------------------------------------------
# Losses
# --------------------------------------------------------------------------------------------


def pscl_loss(
    embedding: torch.Tensor, labels: torch.Tensor, temperature: float = 0.1, real_anchors_only: bool = False
) -> torch.Tensor:
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


def centre_loss(
    embedding: torch.Tensor, labels: torch.Tensor, centres: torch.Tensor, real_only: bool = False
) -> torch.Tensor:
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


__all__ = ["BreathNet", "BreathNetConfig", "BreathNetFeatures", "centre_loss", "contrast_loss", "pscl_loss"]
