"""Spectral detector: upsampling fingerprints in the frequency domain, no pretrained weights.

Generators upsample (transposed convolutions, nearest or bilinear interpolation), and upsampling
leaves excess or missing energy at high spatial frequencies. Two classical readings of it:

- Durall et al., "Watch your Up-Convolution: CNN Based Generative Deep Neural Networks are Failing
  to Reproduce Spectral Distributions" (CVPR 2020; https://github.com/cc-hpc-itwm/UpConv): grey image
  -> 2-D DFT -> log power spectrum -> azimuthal average over rings of equal radius -> 1-D profile
  resampled to a fixed number of bins -> standardise -> logistic regression.
- Frank et al., "Leveraging Frequency Analysis for Deep Fake Image Recognition" (ICML 2020;
  https://github.com/RUB-SysSec/GANDCTAnalysis): 2-D DCT-II of the image, log of the absolute
  coefficients, per-coefficient standardisation, a linear model.

The network (:class:`SpectralNetwork`, bundled verbatim into a submission's ``model.py``):

``uint8 [B, 3, H, W]`` -> grey (ITU-R BT.601 luma, as ``cv2.cvtColor`` in Durall's code) in [0, 1]
-> ``torch.fft.fft2`` (orthonormal) -> ``log(|F|^2 + 1e-8)`` -> mean over each ring ``floor(r)``
around the DC (every pixel, up to the corners, as Durall's ``azimuthalAverage``) -> linear
resampling of the profile to ``bins`` points (Durall: cubic ``griddata``; linear here, so the
exported model needs torch only) [-> with ``dct``: ``log(|DCT-II| + 1e-8)`` averaged over a
``dct_grid x dct_grid`` grid of coefficient blocks (``dct_grid = image_size`` is Frank's
per-coefficient model)] -> z-score with the TRAINING features' mean and population std (stored
with the model) -> logistic regression (``head_hidden: []``) or a small MLP -> logits.

Video (``detectors/video/spectral_video.py``, arch ``spectral_video``): the same network; a clip
``[B, T, 3, H, W]`` gets the features of every frame, averaged over the T frames (the clip's mean
log spectrum: content varies from frame to frame, the generator's fingerprint does not).

Training is fast because the network has nothing to learn before the head: the data stage computes
every image's features once (and caches them), ``on_train_data`` sets the z-score statistics from
the training features, and Lightning trains the head on feature vectors.

**The benchmark's resize.** The benchmark centre-crops every image to the model's aspect and resizes
it to ``preprocessing.resize`` with OpenCV's bilinear ``INTER_LINEAR``, which does not antialias.
Downscaling by 2 averages neighbouring pixel pairs, which cancels a period-2 checkerboard (the
transposed-convolution peak at Nyquist) exactly; other factors fold the peaks to other frequencies
(aliasing) and move the whole tail of the profile. Upscaling a small image interpolates, which
removes energy above the source's Nyquist frequency: it looks like an upsampled fake. So the
features of an image depend on how far the benchmark rescales it, and a detector fitted on
native-resolution crops sees a different distribution at evaluation than one fitted on resized
inputs. ``data.crop`` chooses the training input: ``native`` (the default: a native-resolution
centre crop, the fingerprint as the generator left it, as the project's image detectors train) or
``benchmark`` (exactly what the exported model receives) or ``resize``. Validation and calibration
use the benchmark's input (``data.eval_crop: benchmark``), so the calibrator is fitted on what the
export sees. ``benchmarks/spectral_resize.py`` measured both: native training was as good or better
at every resize factor, and training on the resized input can be degenerate: nearest upsampling by
2 followed by the benchmark's bilinear downscale by 2 returns the downscaled original exactly, so
real and fake training images become identical (the README's "Spectral detector" section has the
numbers).
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from detectors.base import Detector
from detectors.config import setting
from detectors.data.dataset import SampleRecipe
from detectors.data.features import FeatureDataset, FeatureExtraction
from detectors.errors import ConfigError
from detectors.image.data import ImageDataConfig, ImageInputLoader
from detectors.networks.layers import MLP, DetectorNetwork, parameter_dtype
from detectors.registry import register_detector

FEATURE_VERSION = 1  # bump when the features change: cached features of older versions are not reused
POWER_EPS = 1e-8  # log(|F|^2 + eps): the power of an 8-bit image's quantisation noise is ~1e-6 (orthonormal FFT)
DCT_EPS = 1e-8  # log(|c| + eps) of the DCT coefficients (Frank et al. use 1e-12 in float64)
STD_FLOOR = 1e-6  # a training feature with a smaller std is constant: it is divided by 1, not amplified
LUMA = (0.299, 0.587, 0.114)  # ITU-R BT.601, what cv2.cvtColor(..., COLOR_RGB2GRAY) computes


def default_cache_dir() -> Path:
    return Path.home() / ".cache" / "forensic-adapters" / "spectral"


# --------------------------------------------------------------------------- settings
@dataclass
class SpectralConfig:
    image_size: int = setting(256, help="the benchmark resize the export declares (and the training crop)", ge=16)
    bins: int = setting(64, help="points of the azimuthally averaged log power spectrum (Durall et al.)", ge=2)
    dct: bool = setting(False, help="add log |DCT-II| statistics (Frank et al.)")
    dct_grid: int = setting(
        16,
        help="DCT statistics: means of log |c| over a grid x grid of coefficient blocks "
        "(image_size: Frank's per-coefficient features)",
        ge=1,
    )
    head_hidden: list[int] = setting([], help="hidden sizes of the head ([]: logistic regression)", ge=1)
    dropout: float = setting(0.0, help="dropout on the standardised features (MLP heads)", ge=0, lt=1)
    num_classes: Literal[2, 3] = setting(2, help="2: real/fake; 3: real/synthetic/semisynthetic")


@dataclass
class SpectralDataConfig(ImageDataConfig):
    crop: Literal["native", "benchmark", "resize"] = setting(
        "native",
        help="training input: a native-resolution centre crop (never downscaled), the benchmark's crop and "
        "resize (what the export receives), or a plain resize",
    )
    cache_dir: str | None = setting(None, help="feature cache (null: ~/.cache/forensic-adapters/spectral)")
    feature_cache: bool = setting(True, help="cache each image's features (retraining the head takes seconds)")
    refit_feature_statistics: bool = setting(
        False, help="--init-from: recompute the z-score statistics on the new data"
    )


# --------------------------------------------------------------------------- the features (export-safe)
def grey_image(images: torch.Tensor) -> torch.Tensor:
    """``[N, 3, H, W]`` uint8 (or float 0..255) RGB -> float32 luma in [0, 1], ``[N, H, W]``."""
    x = images.to(torch.float32) / 255.0
    return x[:, 0] * 0.299 + x[:, 1] * 0.587 + x[:, 2] * 0.114


def log_power_spectrum(grey: torch.Tensor) -> torch.Tensor:
    """``log(|F|^2 + eps)`` of the orthonormal 2-D DFT of ``[N, H, W]``, DC moved to ``(H // 2, W // 2)``."""
    spectrum = torch.fft.fftshift(torch.fft.fft2(grey, norm="ortho"), dim=(-2, -1))
    return torch.log(spectrum.real * spectrum.real + spectrum.imag * spectrum.imag + POWER_EPS)


def ring_index(height: int, width: int, device: torch.device) -> torch.Tensor:
    """``floor(r)`` per pixel (flattened) of the DC-centred spectrum, ``r`` in frequency steps of the
    shorter side (for a square image: the distance to the DC in pixels)."""
    side = float(min(height, width))
    dy = (torch.arange(height, device=device, dtype=torch.float64) - height // 2) * (side / height)
    dx = (torch.arange(width, device=device, dtype=torch.float64) - width // 2) * (side / width)
    radius = torch.sqrt(dy[:, None] * dy[:, None] + dx[None, :] * dx[None, :])
    return torch.floor(radius).to(torch.long).flatten()


def azimuthal_average(values: torch.Tensor) -> torch.Tensor:
    """Mean of ``[N, H, W]`` over each ring ``floor(r)`` around ``(H // 2, W // 2)``: ``[N, rings]``."""
    batch, height, width = values.shape
    rings = ring_index(height, width, values.device)
    count = int(rings.max()) + 1
    sums = torch.zeros(batch, count, dtype=values.dtype, device=values.device)
    sums = sums.index_add(1, rings, values.reshape(batch, -1))
    sizes = torch.bincount(rings, minlength=count).to(values.dtype).clamp_min(1.0)
    return sums / sizes


def resample_profile(profile: torch.Tensor, bins: int) -> torch.Tensor:
    """Linear interpolation of ``[N, R]`` profiles at ``bins`` evenly spaced radii from 0 to R - 1."""
    return F.interpolate(profile[:, None, :], size=int(bins), mode="linear", align_corners=True)[:, 0]


def dct_matrix(size: int, device: torch.device) -> torch.Tensor:
    """The orthonormal DCT-II matrix ``D [size, size]`` (``D @ x`` = ``scipy.fft.dct(x, norm="ortho")``)."""
    n = torch.arange(size, device=device, dtype=torch.float64)
    matrix = torch.cos(math.pi * (2.0 * n[None, :] + 1.0) * n[:, None] / (2.0 * size)) * math.sqrt(2.0 / size)
    matrix[0] = matrix[0] / math.sqrt(2.0)
    return matrix.to(torch.float32)


def log_dct_statistics(grey: torch.Tensor, grid: int) -> torch.Tensor:
    """``log(|DCT-II(x)| + eps)`` of ``[N, H, W]`` averaged over ``grid x grid`` blocks of
    coefficients (adaptive average pooling: exact block means when ``grid`` divides the sides):
    ``[N, grid * grid]``, low frequencies first (row-major)."""
    height, width = grey.shape[-2], grey.shape[-1]
    rows, cols = dct_matrix(height, grey.device), dct_matrix(width, grey.device)
    coefficients = torch.matmul(torch.matmul(rows, grey), cols.transpose(0, 1))
    log_abs = torch.log(coefficients.abs() + DCT_EPS)
    return F.adaptive_avg_pool2d(log_abs[:, None], (grid, grid)).flatten(1)


class SpectralFeatures(nn.Module):
    """``[N, 3, H, W]`` uint8 images -> ``[N, bins (+ dct_grid^2)]`` float32 features: the resampled
    azimuthal average of the log power spectrum, then (``dct``) the pooled log |DCT| statistics.
    No weights: every image size works, and the features are comparable across sizes (radii are
    resampled to ``bins`` points, DCT blocks pooled to a fixed grid)."""

    def __init__(self, bins: int = 64, dct: bool = False, dct_grid: int = 16):
        super().__init__()
        self.bins = int(bins)
        self.dct = bool(dct)
        self.dct_grid = int(dct_grid)
        self.num_features = self.bins + (self.dct_grid * self.dct_grid if self.dct else 0)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"expected RGB images [N, 3, H, W], got shape {tuple(images.shape)}")
        grey = grey_image(images)
        profile = resample_profile(azimuthal_average(log_power_spectrum(grey)), self.bins)
        if not self.dct:
            return profile
        return torch.cat([profile, log_dct_statistics(grey, self.dct_grid)], dim=1)


class SpectralNetwork(DetectorNetwork):
    """Images ``[B, 3, H, W]`` (or clips ``[B, T, 3, H, W]``: per-frame features averaged over T),
    uint8 or float 0..255 -> :class:`SpectralFeatures` -> z-score with the training statistics
    (``feature_mean`` / ``feature_std``, stored with the model) -> dropout -> MLP (one Linear layer:
    logistic regression) -> logits ``[B, num_classes]``."""

    float32_buffers = ("feature_mean", "feature_std")

    def __init__(
        self,
        bins: int = 64,
        dct: bool = False,
        dct_grid: int = 16,
        head_hidden: Sequence[int] = (),
        dropout: float = 0.0,
        num_classes: int = 2,
    ):
        super().__init__()
        self.features = SpectralFeatures(bins, dct, dct_grid)
        width = self.features.num_features
        self.register_buffer("feature_mean", torch.zeros(width))
        self.register_buffer("feature_std", torch.ones(width))
        self.head_dropout = nn.Dropout(dropout)
        self.head = MLP([width] + [int(h) for h in head_hidden] + [int(num_classes)], activation="relu")

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 5:
            batch, frames = x.shape[0], x.shape[1]
            return self.features(x.flatten(0, 1)).reshape(batch, frames, -1).mean(dim=1)
        if x.dim() != 4:
            raise ValueError(f"expected images [B, 3, H, W] or clips [B, T, 3, H, W], got shape {tuple(x.shape)}")
        return self.features(x)

    def normalize_features(self, features: torch.Tensor) -> torch.Tensor:
        return (features.float() - self.feature_mean.float()) / self.feature_std.float()

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        z = self.head_dropout(self.normalize_features(features))
        return self.head(z.to(parameter_dtype(self.head)))


class SpectralBranch(nn.Module):
    """The spectral features as an auxiliary branch of another network (``model.spectral_branch`` of
    the DINO image detector): :class:`SpectralFeatures` -> ``BatchNorm1d`` without affine parameters,
    i.e. standardised with running statistics gathered while training (the host network trains
    end to end on augmented media, so there is no separate pass to take exact statistics from)."""

    def __init__(self, bins: int = 64, dct: bool = False, dct_grid: int = 16):
        super().__init__()
        self.features = SpectralFeatures(bins, dct, dct_grid)
        self.num_features = self.features.num_features
        self.norm = nn.BatchNorm1d(self.num_features, affine=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        # features in float32; the norm in whatever dtype the host network was cast to
        return self.norm(self.features(images).to(self.norm.running_mean.dtype))


# --------------------------------------------------------------------------- detector
@register_detector
class SpectralDetector(Detector):
    arch = "spectral"
    modality = "image"
    config_class = SpectralConfig
    data_config_class = SpectralDataConfig

    def __init__(self, config: SpectralConfig) -> None:
        super().__init__(config)
        if config.dct and config.dct_grid > config.image_size:
            raise ConfigError(
                None, "model.dct_grid", f"must not exceed model.image_size ({config.image_size}), got {config.dct_grid}"
            )
        self.net = self.build_network(
            SpectralNetwork,
            bins=config.bins,
            dct=bool(config.dct),
            dct_grid=config.dct_grid,
            head_hidden=[int(h) for h in config.head_hidden],
            dropout=config.dropout,
        )

    # ------------------------------------------------------------------ data
    def feature_extraction(self, load: Any, data: Any) -> FeatureExtraction:
        cache_dir = Path(data.cache_dir or default_cache_dir()) / "features" if data.feature_cache else None
        return FeatureExtraction(
            self.net,
            load,
            identity=self.feature_key(),
            cache_dir=cache_dir,
            batch_size=data.feature_batch_size,
            num_workers=data.decode_workers,
            cpu_chunk=None,
            forward=self.net.forward_features,
        )

    def input_loader(self, stage: str, data: SpectralDataConfig) -> ImageInputLoader:
        """The training input (``data.crop``) or the evaluation input (``data.eval_crop``,
        ``data.eval_robustness``) whose features a stage's samples are."""
        if stage == "train":
            return ImageInputLoader(data.crop, self.config.image_size)
        return ImageInputLoader(data.eval_crop, self.config.image_size, robustness=data.eval_robustness)

    def data_recipe(self, stage: str, data: SpectralDataConfig) -> SampleRecipe:
        """Features of each image, computed once by the network's feature part and cached."""
        load = self.input_loader(stage, data)
        return SampleRecipe(load=load, features=self.feature_extraction(load, data))

    def on_train_data(self, dataset: FeatureDataset, data: Any) -> None:
        """z-score statistics from the training features, unless the detector was loaded with
        ``--init-from`` (it keeps those its head was trained with; ``data.refit_feature_statistics``)."""
        if not (self.feature_statistics_unset() or data.refit_feature_statistics):
            return
        features = dataset.valid_features()
        if len(features) == 0:
            raise ConfigError(None, "train split", "no readable training sample: cannot compute the feature statistics")
        self.set_feature_statistics(features)

    @torch.no_grad()
    def set_feature_statistics(self, features: torch.Tensor) -> None:
        """Mean and population std of the training features ``[N, F]`` (a constant feature gets std 1)."""
        features = features.double()
        width = self.net.features.num_features
        if features.dim() != 2 or features.shape[1] != width or len(features) == 0:
            raise ValueError(f"expected training features [N>0, {width}], got {tuple(features.shape)}")
        std = features.std(0, unbiased=False)
        self.net.feature_mean.copy_(features.mean(0).float())
        self.net.feature_std.copy_(torch.where(std < STD_FLOOR, torch.ones_like(std), std).float())

    def feature_statistics_unset(self) -> bool:
        return bool((self.net.feature_mean == 0).all() and (self.net.feature_std == 1).all())

    def feature_key(self) -> str:
        """Identity of what shapes the cached features (not the head: it trains on them)."""
        settings = {
            "version": FEATURE_VERSION,
            "bins": self.config.bins,
            "dct": bool(self.config.dct),
            "dct_grid": self.config.dct_grid,
            "power_eps": POWER_EPS,
            "dct_eps": DCT_EPS,
        }
        return "spectral-" + hashlib.sha1(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]

    # ------------------------------------------------------------------ export
    def preprocessing(self) -> dict[str, Any]:
        return {"resize": [self.config.image_size, self.config.image_size]}

    def export_name(self) -> str:
        return f"{self.arch}-{'dct' if self.config.dct else 'radial'}"

    def feature_names(self) -> list[str]:
        """Names of the features, in order: ``radial_<i>`` (0 = DC, last = the corner frequency),
        then ``dct_<row>_<col>`` blocks."""
        names = [f"radial_{i}" for i in range(self.config.bins)]
        if self.config.dct:
            names += [f"dct_{r}_{c}" for r in range(self.config.dct_grid) for c in range(self.config.dct_grid)]
        return names

    def summary(self) -> dict[str, Any]:
        return {
            **super().summary(),
            "num_features": self.net.features.num_features,
            "feature_mean": [round(float(v), 6) for v in self.net.feature_mean],
            "feature_std": [round(float(v), 6) for v in self.net.feature_std],
        }


__all__ = [
    "SpectralBranch",
    "SpectralConfig",
    "SpectralDataConfig",
    "SpectralDetector",
    "SpectralFeatures",
    "SpectralNetwork",
    "azimuthal_average",
    "dct_matrix",
    "grey_image",
    "log_dct_statistics",
    "log_power_spectrum",
    "resample_profile",
]
