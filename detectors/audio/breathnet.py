"""BreathNet (audio): XLS-R / wav2vec 2.0 temporal features modulated by a breath-supervised FiLM,
fused with a log-mel CNN, trained with classification + breath BCE + PSCL + centre losses.

- temporal branch: ``Wav2Vec2Model`` from transformers (hub id or local directory; default
  ``facebook/wav2vec2-xls-r-300m``), tuned ``frozen`` / ``layernorm`` / ``lora`` (q/k/v projections of
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
  anchors without a positive in the batch are skipped;
- ``centre``: ``0.5 ||f_i - c_{y_i}||^2`` averaged, with learnable class centres; with
  ``centre_classes: real`` only real samples are pulled to the real centre (one-class compactness,
  fakes are left free), with ``all`` every class has a centre (Wen et al. 2016).
The classification loss and the calibrator come from the shared training spine.
"""

from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from detectors.audio.io import BENCHMARK_NUM_SAMPLES, BENCHMARK_SAMPLE_RATE
from detectors.base import Detector
from detectors.errors import ConfigError
from detectors.registry import register_detector
from detectors.tuning import TUNING_MODES, TuningConfig
from export.standalone.breathnet import (
    BreathFiLM,
    SpectralCNN,
    conv_frame_geometry,
    normalize_waveform,
    statistics_pooling,
)
from export.standalone.heads import MLP

DEFAULT_BACKBONE = "facebook/wav2vec2-xls-r-300m"

# Architecture of the published checkpoint: the demo's random stand-in when it cannot be loaded.
KNOWN_WAV2VEC2_ARCHITECTURES: dict[str, dict[str, Any]] = {
    "facebook/wav2vec2-xls-r-300m": dict(
        hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096,
        conv_dim=[512] * 7, conv_kernel=[10, 3, 3, 3, 3, 2, 2], conv_stride=[5, 2, 2, 2, 2, 2, 2],
        conv_bias=True, feat_extract_norm="layer", do_stable_layer_norm=True,
        num_conv_pos_embeddings=128, num_conv_pos_embedding_groups=16, feat_extract_activation="gelu",
        hidden_act="gelu", layer_norm_eps=1e-5),
    "facebook/wav2vec2-base": dict(
        hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
        conv_dim=[512] * 7, conv_kernel=[10, 3, 3, 3, 3, 2, 2], conv_stride=[5, 2, 2, 2, 2, 2, 2],
        conv_bias=False, feat_extract_norm="group", do_stable_layer_norm=False,
        num_conv_pos_embeddings=128, num_conv_pos_embedding_groups=16, feat_extract_activation="gelu",
        hidden_act="gelu", layer_norm_eps=1e-5),
}

# Fields of Wav2Vec2Config the standalone export reproduces.
STANDALONE_FIELDS = ("conv_dim", "conv_kernel", "conv_stride", "conv_bias", "feat_extract_norm",
                     "feat_extract_activation", "hidden_size", "num_hidden_layers", "num_attention_heads",
                     "intermediate_size", "hidden_act", "layer_norm_eps", "num_conv_pos_embeddings",
                     "num_conv_pos_embedding_groups", "do_stable_layer_norm")

LORA_SUFFIXES = {
    "qv": ("attention.q_proj", "attention.v_proj"),
    "qkv": ("attention.q_proj", "attention.k_proj", "attention.v_proj"),
    "attention": ("attention.q_proj", "attention.k_proj", "attention.v_proj", "attention.out_proj"),
    "all": ("attention.q_proj", "attention.k_proj", "attention.v_proj", "attention.out_proj",
            "feed_forward.intermediate_dense", "feed_forward.output_dense"),
}


# --------------------------------------------------------------------------------------------
# wav2vec 2.0 front-end (kept here until detectors/backbones.py supports audio backbones)
# --------------------------------------------------------------------------------------------


@dataclass
class Wav2Vec2BackboneConfig:
    """Where the wav2vec 2.0 model comes from.

    ``name``: hub id or local directory (``save_pretrained`` output). ``architecture``: the resolved
    ``Wav2Vec2Config`` fields, filled in at build time so a run rebuilds offline.
    ``fallback_overrides``: demo only; fields replacing the known architecture when pretrained weights
    cannot be loaded (e.g. a 2-layer, 64-wide stand-in so the demo runs in minutes on a CPU).
    """

    name: str = DEFAULT_BACKBONE
    pretrained: bool = True
    architecture: dict[str, Any] | None = None
    fallback_overrides: dict[str, Any] = field(default_factory=dict)


class Wav2Vec2Backbone(nn.Module):
    """``Wav2Vec2Model`` wrapper: normalised waveform ``[B, N]`` -> frames ``[B, T, hidden]``."""

    def __init__(self, model: nn.Module, config: Wav2Vec2BackboneConfig, weights_origin: str) -> None:
        super().__init__()
        self.model = model
        self.config = config
        self.weights_origin = weights_origin

    @property
    def embed_dim(self) -> int:
        return int(self.model.config.hidden_size)

    def frame_geometry(self, num_samples: int = BENCHMARK_NUM_SAMPLES) -> tuple[int, float, float]:
        """(frames, stride seconds, receptive field seconds) for ``num_samples`` at 16 kHz."""
        cfg = self.model.config
        frames, stride, receptive = conv_frame_geometry(cfg.conv_kernel, cfg.conv_stride, num_samples)
        return frames, stride / BENCHMARK_SAMPLE_RATE, receptive / BENCHMARK_SAMPLE_RATE

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        return self.model(input_values=waveform).last_hidden_state


def _wav2vec2_architecture(hf_config: Any) -> dict[str, Any]:
    skip = ("transformers_version", "architectures", "id2label", "label2id", "model_type")
    out = {k: v for k, v in hf_config.to_dict().items() if not k.startswith("_") and k not in skip}
    return {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}


def build_wav2vec2(config: Wav2Vec2BackboneConfig, *, allow_random_fallback: bool = False) -> Wav2Vec2Backbone:
    """``Wav2Vec2Model.from_pretrained(name)``, or the stored architecture with random weights.

    Mirrors ``detectors.backbones.build_backbone``: ``allow_random_fallback`` (built-in demo only)
    warns loudly and continues with a random model when the weights cannot be loaded.
    """
    from transformers import Wav2Vec2Config, Wav2Vec2Model

    config = copy.deepcopy(config)
    origin = "pretrained"
    if config.pretrained:
        try:
            model = Wav2Vec2Model.from_pretrained(config.name)
        except (OSError, ValueError, RuntimeError) as error:
            if not allow_random_fallback:
                raise ConfigError(None, "model.backbone.name", f"cannot load wav2vec2 backbone {config.name!r}: {error}") from error
            warnings.warn(
                f"\n{'!' * 78}\nCould not load pretrained backbone {config.name!r} ({type(error).__name__}: "
                f"{str(error).splitlines()[0][:200]}).\nThe DEMO continues with a RANDOMLY INITIALISED wav2vec2 "
                f"stand-in; results are not representative.\n{'!' * 78}", stacklevel=2)
            if config.architecture is None:
                if config.name not in KNOWN_WAV2VEC2_ARCHITECTURES:
                    raise ConfigError(None, "model.backbone.name",
                                      f"no known architecture for {config.name!r} to fall back on") from error
                config.architecture = {**KNOWN_WAV2VEC2_ARCHITECTURES[config.name], **config.fallback_overrides}
            config.pretrained = False
            model = Wav2Vec2Model(Wav2Vec2Config(**config.architecture))
            origin = "random"
    else:
        if config.architecture is None:
            raise ConfigError(None, "model.backbone.architecture", "random initialisation needs an architecture")
        model = Wav2Vec2Model(Wav2Vec2Config(**config.architecture))
        origin = "random"
    if getattr(model.config, "add_adapter", False):
        raise ConfigError(None, "model.backbone.name", "wav2vec2 models with an output adapter are not supported")
    config.architecture = _wav2vec2_architecture(model.config)
    model.train()  # from_pretrained returns eval mode; like any new module, start in training mode
    return Wav2Vec2Backbone(model, config, origin)


def apply_wav2vec2_tuning(backbone: Wav2Vec2Backbone, tuning: TuningConfig) -> Wav2Vec2Backbone:
    """frozen / layernorm (nn.LayerNorm affine only) / lora (encoder projections, peft) / full."""
    if tuning.mode not in TUNING_MODES:
        raise ConfigError(None, "model.tuning.mode", f"unknown tuning mode {tuning.mode!r}")
    for parameter in backbone.parameters():
        parameter.requires_grad_(tuning.mode == "full")
    if tuning.mode == "layernorm":
        for module in backbone.modules():
            if isinstance(module, nn.LayerNorm):
                for parameter in module.parameters(recurse=False):
                    parameter.requires_grad_(True)
    elif tuning.mode == "lora":
        from peft import LoraConfig, inject_adapter_in_model

        targets = lora_target_paths(backbone.model, tuning.lora.targets)
        lora = tuning.lora
        inject_adapter_in_model(LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                                           target_modules=targets, bias="none"), backbone.model)
        for name, parameter in backbone.named_parameters():
            parameter.requires_grad_("lora_" in name)
    if tuning.gradient_checkpointing:
        backbone.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return backbone


def lora_target_paths(model: nn.Module, targets: str | list[str]) -> list[str]:
    """Explicit module paths ``encoder.layers.{i}.<suffix>`` of the Linear layers LoRA adapts."""
    suffixes = LORA_SUFFIXES.get(targets) if isinstance(targets, str) else tuple(targets)
    if suffixes is None:
        raise ConfigError(None, "model.tuning.lora.targets",
                          f"unknown preset {targets!r}; use one of {sorted(LORA_SUFFIXES)} or module-name suffixes")
    found = [name for name, module in model.named_modules()
             if isinstance(module, nn.Linear) and name.startswith("encoder.layers.")
             and any(name.endswith("." + s) for s in suffixes)]
    if not found:
        raise ConfigError(None, "model.tuning.lora.targets", f"no encoder Linear layer matches {list(suffixes)}")
    return found


def plain_wav2vec2_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """State dict for ``Wav2Vec2Standalone``: LoRA merged, weight norm folded, SpecAugment vector dropped."""
    from peft.tuners.lora import LoraLayer

    model = copy.deepcopy(model).cpu().eval()
    for module in model.modules():
        if isinstance(module, LoraLayer):
            module.merge()
    pos_conv = model.encoder.pos_conv_embed.conv
    folded_weight = pos_conv.weight.detach().clone()  # the parametrisation computes g * v / ||v||
    state = {}
    for key, value in model.state_dict().items():
        if "lora_" in key or "parametrizations" in key or key.startswith("masked_spec_embed") \
                or key.endswith("weight_g") or key.endswith("weight_v"):
            continue
        state[key.replace(".base_layer.", ".")] = value.detach().clone()
    state["encoder.pos_conv_embed.conv.weight"] = folded_weight
    return state


# --------------------------------------------------------------------------------------------
# The detector
# --------------------------------------------------------------------------------------------


@dataclass
class BreathLossConfig:
    breath_weight: float = 0.5  # BCE of the FiLM breath predictor vs the breath mask
    pscl_weight: float = 0.1  # positive-sample supervised contrastive loss on the fused embedding
    pscl_temperature: float = 0.1
    centre_weight: float = 0.01
    centre_classes: str = "all"  # all | real


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
    backbone: Wav2Vec2BackboneConfig = field(default_factory=Wav2Vec2BackboneConfig)
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

    def __init__(self, config: BreathNetConfig) -> None:
        super().__init__(config)
        if config.num_classes != 2:
            raise ConfigError(None, "model.num_classes", f"BreathNet is a binary detector, got {config.num_classes}")
        if config.losses.centre_classes not in ("all", "real"):
            raise ConfigError(None, "model.losses.centre_classes", "use 'all' or 'real'")
        import torchaudio

        self.backbone = build_wav2vec2(config.backbone, allow_random_fallback=config.allow_random_backbone)
        config.backbone = self.backbone.config  # resolved architecture, for offline rebuilds
        apply_wav2vec2_tuning(self.backbone, config.tuning)
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
        return self.backbone.frame_geometry(BENCHMARK_NUM_SAMPLES)

    # ------------------------------------------------------------------ losses
    def training_losses(self, features: BreathNetFeatures, logits: torch.Tensor, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        cfg = self.config.losses
        labels = batch["label"]
        losses: dict[str, torch.Tensor] = {}
        if cfg.breath_weight > 0 and "breath_mask" in batch:
            target = batch["breath_mask"].to(features.breath_logits)
            losses["breath_bce"] = cfg.breath_weight * F.binary_cross_entropy_with_logits(features.breath_logits, target)
        if cfg.pscl_weight > 0:
            losses["pscl"] = cfg.pscl_weight * pscl_loss(features.embedding, labels, cfg.pscl_temperature)
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
        return {"backbone": self.backbone.config.name, "backbone_weights": self.backbone.weights_origin,
                "backbone_family": "wav2vec2", "backbone_source": "transformers",
                "frames_per_clip": frames, "frame_stride_s": stride, "frame_length_s": length}

    # ------------------------------------------------------------------ export
    def export_spec(self):
        from export.spec import ExportSpec

        arch = self.backbone.model.config.to_dict()
        wav2vec2 = {k: (list(arch[k]) if isinstance(arch[k], (tuple, list)) else arch[k]) for k in STANDALONE_FIELDS}
        mel = self.config.mel
        state = {
            **{f"wav2vec2.{k}": v for k, v in plain_wav2vec2_state(self.backbone.model).items()},
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
            preprocessing={"sample_rate": BENCHMARK_SAMPLE_RATE, "duration_seconds": BENCHMARK_NUM_SAMPLES / BENCHMARK_SAMPLE_RATE},
            num_classes=self.num_classes,
            name=f"{self.arch}-{self.config.tuning.mode}",
        )


# --------------------------------------------------------------------------------------------
# Losses
# --------------------------------------------------------------------------------------------


def pscl_loss(embedding: torch.Tensor, labels: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """Positive-sample supervised contrastive loss on L2-normalised embeddings.

    ``L = mean_i [ -1/|P(i)| sum_{p in P(i)} log( exp(s_ip / t) / sum_{a != i} exp(s_ia / t) ) ]`` with
    ``P(i)`` the other samples of i's label; anchors without positives are left out (0 if none has one).
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


__all__ = ["BreathNet", "BreathNetConfig", "BreathNetFeatures", "Wav2Vec2Backbone", "Wav2Vec2BackboneConfig",
           "apply_wav2vec2_tuning", "build_wav2vec2", "centre_loss", "lora_target_paths", "plain_wav2vec2_state",
           "pscl_loss"]
