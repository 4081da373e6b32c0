"""DINOv2 / DINOv3 (vision) and wav2vec 2.0 / XLS-R (audio) backbones behind one small interface.

``build_backbone`` is the single entry point. It loads pretrained weights the way the source library
does (``from_pretrained`` on a hub id or a local directory for transformers; a model name plus an
optional local weights file for timm) and wraps the model in :class:`Backbone`, whose ``forward``
returns the final-norm token sequence ``[B, prefix + patches, D]`` (vision) or the frame features
``[B, frames, D]`` (wav2vec 2.0, from a normalised waveform). The architecture (config) is kept
apart from the weights so a trained detector can be rebuilt from its run directory without a hub.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Iterator, Literal

import torch
from torch import nn

from detectors.config import setting
from detectors.errors import CheckpointError, ConfigError, error_summary, state_dict_mismatch, unreadable_weights_reason

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# Architectures of the published checkpoints, used only to build a randomly initialised stand-in
# for the built-in demo when the pretrained weights cannot be loaded (no hub access). Layer scale
# keeps the library default (1.0): the trained models' 1e-5 init would make a random model's blocks
# inert and its CLS token constant.
KNOWN_TRANSFORMERS_ARCHITECTURES: dict[str, dict[str, Any]] = {
    "facebook/dinov3-vits16-pretrain-lvd1689m": dict(
        model_type="dinov3_vit",
        hidden_size=384,
        num_hidden_layers=12,
        num_attention_heads=6,
        intermediate_size=1536,
        patch_size=16,
        num_register_tokens=4,
    ),
    "facebook/dinov3-vitb16-pretrain-lvd1689m": dict(
        model_type="dinov3_vit",
        hidden_size=768,
        num_hidden_layers=12,
        num_attention_heads=12,
        intermediate_size=3072,
        patch_size=16,
        num_register_tokens=4,
    ),
    "facebook/dinov3-vitl16-pretrain-lvd1689m": dict(
        model_type="dinov3_vit",
        hidden_size=1024,
        num_hidden_layers=24,
        num_attention_heads=16,
        intermediate_size=4096,
        patch_size=16,
        num_register_tokens=4,
    ),
    "facebook/dinov2-small": dict(
        model_type="dinov2",
        hidden_size=384,
        num_hidden_layers=12,
        num_attention_heads=6,
        mlp_ratio=4,
        patch_size=14,
        image_size=518,
    ),
    "facebook/dinov2-base": dict(
        model_type="dinov2",
        hidden_size=768,
        num_hidden_layers=12,
        num_attention_heads=12,
        mlp_ratio=4,
        patch_size=14,
        image_size=518,
    ),
    "facebook/dinov2-large": dict(
        model_type="dinov2",
        hidden_size=1024,
        num_hidden_layers=24,
        num_attention_heads=16,
        mlp_ratio=4,
        patch_size=14,
        image_size=518,
    ),
    "facebook/wav2vec2-xls-r-300m": dict(
        model_type="wav2vec2",
        hidden_size=1024,
        num_hidden_layers=24,
        num_attention_heads=16,
        intermediate_size=4096,
        conv_dim=[512] * 7,
        conv_kernel=[10, 3, 3, 3, 3, 2, 2],
        conv_stride=[5, 2, 2, 2, 2, 2, 2],
        conv_bias=True,
        feat_extract_norm="layer",
        do_stable_layer_norm=True,
        num_conv_pos_embeddings=128,
        num_conv_pos_embedding_groups=16,
        feat_extract_activation="gelu",
        hidden_act="gelu",
        layer_norm_eps=1e-5,
    ),
    "facebook/wav2vec2-base": dict(
        model_type="wav2vec2",
        hidden_size=768,
        num_hidden_layers=12,
        num_attention_heads=12,
        intermediate_size=3072,
        conv_dim=[512] * 7,
        conv_kernel=[10, 3, 3, 3, 3, 2, 2],
        conv_stride=[5, 2, 2, 2, 2, 2, 2],
        conv_bias=False,
        feat_extract_norm="group",
        do_stable_layer_norm=False,
        num_conv_pos_embeddings=128,
        num_conv_pos_embedding_groups=16,
        feat_extract_activation="gelu",
        hidden_act="gelu",
        layer_norm_eps=1e-5,
    ),
}

SUPPORTED_TRANSFORMERS_TYPES = ("dinov2", "dinov2_with_registers", "dinov3_vit", "wav2vec2")
FAMILIES = {"dinov2": "dinov2", "dinov2_with_registers": "dinov2", "dinov3_vit": "dinov3", "wav2vec2": "wav2vec2"}


@dataclass
class BackboneConfig:
    """Where a backbone comes from.

    ``name``: a transformers hub id or local directory, or a timm model name (``timm/<name>`` or
    ``source: timm``). ``weights``: optional local weights file for timm. ``architecture``: the
    resolved architecture (transformers config dict or timm name + kwargs), filled in when the
    backbone is first built so the run can be rebuilt offline. A bare string is read as ``name``.
    """

    shorthand: ClassVar[str] = "name"

    name: str = setting(
        "facebook/dinov3-vits16-pretrain-lvd1689m", help="transformers hub id or local directory, or a timm model name"
    )
    source: Literal["auto", "transformers", "timm"] = setting("auto", help="which library loads it (auto: guess)")
    weights: str | None = setting(None, help="local weights file for a timm backbone")
    pretrained: bool = setting(True, help="load pretrained weights (false: the architecture only)")
    timm_kwargs: dict[str, Any] = setting({}, help="extra timm.create_model arguments")
    architecture: dict[str, Any] | None = setting(
        None, help="resolved architecture (written by the run; rebuilds it offline)"
    )
    # demo only: architecture fields replacing the known one in the random fallback (e.g. a 2-layer,
    # 64-wide wav2vec2 stand-in so the audio demo runs in minutes on a CPU)
    fallback_overrides: dict[str, Any] = setting({}, help="demo only: architecture of the random stand-in")


@dataclass
class BackboneInfo:
    family: str  # dinov2 | dinov3 | wav2vec2 | cnn (a timm convolutional network: pooled features)
    source: str  # transformers | timm
    embed_dim: int
    patch_size: int = 0  # vision only
    num_registers: int = 0  # vision only
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    @property
    def num_prefix_tokens(self) -> int:
        return 1 + self.num_registers


class Backbone(nn.Module):
    """A ViT whose ``forward`` maps normalised images to final-norm tokens ``[B, N, D]``."""

    def __init__(self, model: nn.Module, info: BackboneInfo, config: BackboneConfig) -> None:
        super().__init__()
        self.model = model
        self.info = info
        self.config = config
        self.weights_origin = "pretrained"

    @property
    def embed_dim(self) -> int:
        return self.info.embed_dim

    @property
    def num_prefix_tokens(self) -> int:
        """CLS + register tokens before the patch tokens (vision)."""
        return self.info.num_prefix_tokens

    @property
    def inner(self) -> nn.Module:
        """The transformers/timm module, with any peft wrapper removed (adapters stay injected)."""
        model = self.model
        get_base = getattr(model, "get_base_model", None)
        return get_base() if callable(get_base) else model

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        """Normalised images ``[B, 3, H, W]`` (or a normalised waveform ``[B, N]`` for wav2vec2)."""
        model = self.inner
        if self.info.family == "wav2vec2":
            return model(input_values=inputs).last_hidden_state
        if self.info.source == "transformers":
            return model(pixel_values=inputs).last_hidden_state
        if self.info.family == "cnn":
            return model(inputs)  # pooled pre-logits features [B, D] (built with num_classes=0)
        return model.forward_features(inputs)

    def check_input_size(self, size: int | tuple[int, int], where: str = "model.image_size") -> None:
        """Raise a :class:`ConfigError` naming ``where`` unless images of ``size`` fit this backbone.

        A ViT cuts its input into ``patch_size`` squares, so each side must be a multiple of it: timm
        asserts this only in the first forward pass (deep inside a training run), transformers
        silently drops the remainder. The position embeddings are interpolated (or RoPE), so any
        multiple works; a timm model built without ``dynamic_img_size`` takes its one size only.
        """
        if self.info.family in ("wav2vec2", "cnn"):
            return
        height, width = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
        shown = f"{height}" if height == width else f"{height}x{width}"
        name = self.config.name
        if self.info.source == "timm":
            patch_embed = self.inner.patch_embed
            if getattr(patch_embed, "dynamic_img_pad", False):  # pads any size up to whole patches
                return
            if not getattr(self.inner, "dynamic_img_size", False) and getattr(patch_embed, "strict_img_size", False):
                fixed = tuple(patch_embed.img_size)
                if (height, width) != fixed:
                    raise ConfigError(
                        None,
                        where,
                        f"{shown} does not fit the timm backbone {name!r}, which takes "
                        f"{fixed[0]}x{fixed[1]} images only (built without dynamic_img_size); use "
                        f"{fixed[0]} or set model.backbone.timm_kwargs.dynamic_img_size: true",
                    )
                return
        patch = self.info.patch_size
        for side in dict.fromkeys((height, width)):
            if side % patch:
                below, above = max(patch, side // patch * patch), (side // patch + 1) * patch
                nearest = f"{below} or {above}" if below != above else f"{above}"
                raise ConfigError(
                    None,
                    where,
                    f"{shown} is not a multiple of the patch size {patch} of backbone "
                    f"{name!r}; the nearest valid sizes are {nearest}",
                )

    def export(self, image_size: tuple[int, int] | None = None) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
        """(constructor arguments, weights) of the plain-torch equivalent the exported model.py
        builds: :class:`~detectors.networks.vit.VisionTransformer` at ``image_size`` (H, W) for
        vision backbones, :class:`~detectors.networks.wav2vec2.Wav2Vec2Encoder` for wav2vec 2.0.
        LoRA adapters are merged (on a copy)."""
        from export.convert import convert_backbone, convert_cnn, convert_wav2vec2, wav2vec2_kwargs

        if self.info.family == "wav2vec2":
            return wav2vec2_kwargs(self.inner.config), convert_wav2vec2(self.model)
        if self.info.family == "cnn":  # detectors.networks.cnn, any input size
            return convert_cnn(self.model)
        if image_size is None:
            raise ValueError("a vision backbone is exported for one input size: pass image_size")
        return convert_backbone(self.model, image_size)

    def train(self, mode: bool = True) -> Backbone:
        """A fully frozen backbone always runs as at inference (no dropout, no RoPE jitter): it is a
        fixed feature extractor. Tuned backbones follow ``mode``."""
        return super().train(mode and any(p.requires_grad for p in self.parameters()))

    def set_gradient_checkpointing(self, enabled: bool = True) -> None:
        """Recompute block activations in backward: less memory for ~30 % more compute."""
        model = self.inner
        if self.info.source == "transformers":
            # transformers >= 5.x renamed the switch (the old name warns); older releases only have it
            if hasattr(model, "activation_checkpointing_enable"):
                if enabled:
                    model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
                else:
                    model.activation_checkpointing_disable()
            elif enabled:
                model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            else:
                model.gradient_checkpointing_disable()
        else:
            model.set_grad_checkpointing(enabled)


def resolve_source(config: BackboneConfig) -> str:
    if config.source in ("transformers", "timm"):
        return config.source
    if config.source != "auto":
        raise ConfigError(
            None, "model.backbone.source", f"unknown source {config.source!r}; use auto, transformers or timm"
        )
    if config.name.startswith("timm/"):
        return "timm"
    if Path(config.name).is_dir() or "/" in config.name:
        return "transformers"
    import timm

    return "timm" if timm.is_model(config.name) else "transformers"


def build_backbone(config: BackboneConfig, *, allow_random_fallback: bool = False) -> Backbone:
    """Build the backbone described by ``config``.

    With ``config.architecture`` set and ``pretrained`` false, the architecture is built with random
    weights (the caller then loads a trained state dict). ``allow_random_fallback``
    (``model.allow_random_backbone``, set by the built-in demo): when the hub cannot provide the
    pretrained weights, warn loudly and use random weights. A local directory or weights file the
    user named is never replaced: if it is missing or unreadable, that is an error.
    """
    config = copy.deepcopy(config)
    if config.name.startswith(("/", "./", "../", "~")) and not Path(config.name).expanduser().exists():
        raise ConfigError(None, "model.backbone.name", f"backbone directory {config.name} does not exist")
    source = resolve_source(config)
    config.source = source
    local = _local_weights(config, source)
    builder = _build_transformers if source == "transformers" else _build_timm
    # The demo must not spend a minute in download retries when no hub is reachable: use the
    # local cache only, and fall back at once if the weights are not there.
    offline = allow_random_fallback and config.pretrained and local is None and not hub_reachable()
    try:
        with _hub_offline(offline):
            model, origin = builder(config, local_files_only=offline)
    except (ConfigError, CheckpointError):
        raise  # the settings or the named file are wrong: a random stand-in would only hide it
    except Exception as error:
        if local is not None:  # the fallback is for an unreachable hub, never for the user's own file
            raise CheckpointError(f"{local}: cannot load backbone weights from it ({error_summary(error)})") from error
        if not isinstance(error, (OSError, ValueError, RuntimeError)):
            raise
        if not allow_random_fallback:
            raise ConfigError(None, "model.backbone.name", f"cannot load backbone {config.name!r}: {error}") from error
        warnings.warn(
            f"\n{'!' * 78}\nCould not load pretrained backbone {config.name!r} ({error_summary(error)}).\n"
            f"Continuing with a RANDOMLY INITIALISED backbone of the same family because "
            f"model.allow_random_backbone is true: its scores say nothing about the pretrained model.\n{'!' * 78}",
            stacklevel=2,
        )
        config.pretrained = False
        if config.architecture is None:
            config.architecture = _known_architecture(config)
        with _hub_offline(True):
            model, origin = builder(config, local_files_only=True)
        origin = "random"
    info = _describe(model, source)
    backbone = Backbone(model, info, config)
    backbone.weights_origin = origin
    return backbone


def _local_weights(config: BackboneConfig, source: str) -> Path | None:
    """The local file or directory the pretrained weights come from, if the user named one.

    Raises a :class:`ConfigError` when it does not exist: a typo must not turn into a download
    attempt or a random backbone.
    """
    if not config.pretrained:
        return None
    if config.weights:
        if source != "timm":
            raise ConfigError(
                None,
                "model.backbone.weights",
                "a weights file is for timm backbones; for transformers "
                "give the local model directory as model.backbone.name",
            )
        weights = Path(config.weights).expanduser()
        if not weights.is_file():
            raise ConfigError(None, "model.backbone.weights", f"weights file {weights} does not exist")
        return weights
    directory = Path(config.name).expanduser()
    return directory if source == "transformers" and directory.exists() else None


def _known_architecture(config: BackboneConfig) -> dict[str, Any]:
    if resolve_source(config) == "timm":
        return {
            "model_name": config.name.removeprefix("timm/"),
            "kwargs": {**config.timm_kwargs, **config.fallback_overrides},
        }
    if config.name in KNOWN_TRANSFORMERS_ARCHITECTURES:
        return {**KNOWN_TRANSFORMERS_ARCHITECTURES[config.name], **config.fallback_overrides}
    raise ConfigError(None, "model.backbone.name", f"no known architecture for {config.name!r} to fall back on")


@contextlib.contextmanager
def _hub_offline(enabled: bool) -> Iterator[None]:
    """Switch huggingface_hub to offline mode (no HEAD requests, no retries) for one block."""
    if not enabled:
        yield
        return
    import huggingface_hub.constants as hub_constants

    previous = hub_constants.HF_HUB_OFFLINE
    hub_constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        hub_constants.HF_HUB_OFFLINE = previous


def hub_reachable(host: str = "huggingface.co", timeout: float = 3.0) -> bool:
    """Whether the model hub answers at all (offline environment variables count as 'no')."""
    import os
    import socket

    if os.environ.get("HF_HUB_OFFLINE") in ("1", "true", "True") or os.environ.get("TRANSFORMERS_OFFLINE") == "1":
        return False
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def _build_transformers(config: BackboneConfig, local_files_only: bool = False) -> tuple[nn.Module, str]:
    from transformers import AutoConfig, AutoModel

    if config.pretrained:
        model = AutoModel.from_pretrained(config.name, local_files_only=local_files_only)
        origin = "pretrained"
    else:
        if config.architecture is None:
            raise ConfigError(None, "model.backbone.architecture", "random initialisation needs an architecture")
        arch = dict(config.architecture)
        model_type = arch.pop("model_type")
        model = AutoModel.from_config(AutoConfig.for_model(model_type, **arch))
        origin = "random"
    model_type = model.config.model_type
    if model_type not in SUPPORTED_TRANSFORMERS_TYPES:
        raise ConfigError(
            None,
            "model.backbone.name",
            f"{config.name!r} is a {model_type!r} model; supported: {', '.join(SUPPORTED_TRANSFORMERS_TYPES)}",
        )
    if getattr(model.config, "add_adapter", False):
        raise ConfigError(None, "model.backbone.name", "wav2vec2 models with an output adapter are not supported")
    config.architecture = _transformers_architecture(model.config)
    model.train()  # from_pretrained returns eval mode; like any new module, start in training mode
    return model, origin


def _transformers_architecture(hf_config: Any) -> dict[str, Any]:
    keep = {
        k: list(v) if isinstance(v, tuple) else v
        for k, v in hf_config.to_dict().items()
        if not k.startswith("_") and k not in ("transformers_version", "architectures", "id2label", "label2id")
    }
    keep["model_type"] = hf_config.model_type
    return keep


def _build_timm(config: BackboneConfig, local_files_only: bool = False) -> tuple[nn.Module, str]:
    import timm

    name = config.name.removeprefix("timm/")
    kwargs = dict(config.timm_kwargs)
    if config.architecture is not None:
        name = config.architecture.get("model_name", name)
        kwargs = {**config.architecture.get("kwargs", {}), **kwargs}
    kwargs.setdefault("num_classes", 0)
    if "dinov3" in name:
        kwargs.setdefault("global_pool", "token")
    elif not is_timm_cnn(name):  # timm's DINOv2 defaults to a fixed 518 px input; detectors train at their own size
        kwargs.setdefault("dynamic_img_size", True)
    if config.pretrained and config.weights:
        weights = Path(config.weights).expanduser()
        try:
            with _timm_load_report() as report:
                model = timm.create_model(
                    name, pretrained=True, pretrained_cfg_overlay={"file": str(weights)}, **kwargs
                )
        except Exception as error:
            raise _timm_weights_error(weights, name, kwargs, error) from error
        if report:  # timm loads non-strictly once it drops the classifier: a key that did not fit is an error
            raise CheckpointError(f"{weights}: does not fit the timm model {name!r}: {'; '.join(report)}")
        origin = "pretrained"
    elif config.pretrained:
        if local_files_only:
            raise OSError(f"timm weights for {name!r} would need a download and the hub is unreachable")
        model = timm.create_model(name, pretrained=True, **kwargs)
        origin = "pretrained"
    else:
        model = timm.create_model(name, pretrained=False, **kwargs)
        origin = "random"
    config.architecture = {"model_name": name, "kwargs": kwargs}
    return model, origin


TIMM_CNN_MODULES = (
    "convnext",
    "resnet",
    "efficientnet",
    "mobilenetv3",
    "regnet",
    "densenet",
    "xception",
    "byobnet",
    "rexnet",
    "ghostnet",
    "resnetv2",
    "dla",
    "hrnet",
    "res2net",
    "sknet",
    "vgg",
)


def is_timm_cnn(name: str) -> bool:
    """Whether the timm model ``name`` is defined in one of timm's convolutional-network modules."""
    from timm.models import get_arch_name, is_model

    if not is_model(name):
        return False
    from timm.models._registry import _model_to_module

    return _model_to_module.get(get_arch_name(name), "") in TIMM_CNN_MODULES


@contextlib.contextmanager
def _timm_load_report() -> Iterator[list[str]]:
    """Collect timm's own report of missing and unexpected keys while it loads pretrained weights
    (it logs them instead of failing when it loads non-strictly)."""
    report: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            message = record.getMessage()
            if message.startswith(("Missing keys", "Unexpected keys")):
                report.append(message.split(" discovered")[0].split(" found")[0])

    builder_log = logging.getLogger("timm.models._builder")
    handler, level, propagate = Collect(), builder_log.level, builder_log.propagate
    builder_log.addHandler(handler)
    builder_log.setLevel(logging.INFO)
    builder_log.propagate = False  # reported once, in the error
    try:
        yield report
    finally:
        builder_log.removeHandler(handler)
        builder_log.setLevel(level)
        builder_log.propagate = propagate


def _timm_weights_error(weights: Path, name: str, kwargs: dict[str, Any], error: Exception) -> CheckpointError:
    """Why timm could not load ``weights``: an unreadable file, or the keys that do not fit ``name``."""
    import timm

    try:
        shapes = _checkpoint_shapes(weights)
    except Exception as read_error:
        return CheckpointError(
            f"{weights}: cannot be read as weights: {unreadable_weights_reason(weights, read_error)}"
        )
    mismatch = state_dict_mismatch(timm.create_model(name, pretrained=False, **kwargs).state_dict(), shapes)
    if mismatch:
        return CheckpointError(f"{weights}: does not fit the timm model {name!r}: {mismatch}")
    return CheckpointError(f"{weights}: timm cannot load it into {name!r} ({error_summary(error)})")


def _checkpoint_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Key -> shape of a weights file, without reading the tensors (timm's nesting is unwrapped)."""
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as handle:
            return {key: tuple(handle.get_slice(key).get_shape()) for key in handle.keys()}
    state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    for nested in ("state_dict", "model", "model_state_dict"):
        if isinstance(state, dict) and isinstance(state.get(nested), dict):
            state = state[nested]
    return {key: tuple(value.shape) for key, value in state.items() if isinstance(value, torch.Tensor)}


def _describe(model: nn.Module, source: str) -> BackboneInfo:
    if source == "transformers":
        cfg = model.config
        family = FAMILIES[cfg.model_type]
        if family == "wav2vec2":
            return BackboneInfo(family=family, source=source, embed_dim=cfg.hidden_size)
        return BackboneInfo(
            family=family,
            source=source,
            embed_dim=cfg.hidden_size,
            patch_size=cfg.patch_size,
            num_registers=getattr(cfg, "num_register_tokens", 0) or 0,
        )
    mean = (
        tuple(model.pretrained_cfg.get("mean", IMAGENET_MEAN))
        if getattr(model, "pretrained_cfg", None)
        else IMAGENET_MEAN
    )
    std = (
        tuple(model.pretrained_cfg.get("std", IMAGENET_STD)) if getattr(model, "pretrained_cfg", None) else IMAGENET_STD
    )
    if getattr(model, "patch_embed", None) is None:  # a convolutional network: pooled features, no tokens
        return BackboneInfo(family="cnn", source=source, embed_dim=model.num_features, mean=mean, std=std)
    patch = model.patch_embed.patch_size
    patch_size = patch[0] if isinstance(patch, (tuple, list)) else int(patch)
    family = "dinov3" if type(model).__name__ == "Eva" else "dinov2"
    return BackboneInfo(
        family=family,
        source=source,
        embed_dim=model.num_features,
        patch_size=patch_size,
        num_registers=model.num_prefix_tokens - 1,
        mean=mean,
        std=std,
    )
