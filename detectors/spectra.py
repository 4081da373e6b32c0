"""``python -m detectors.spectra --data YAML --output DIR``: the frequency fingerprint of each dataset.

For every dataset of the YAML (images, or the frames of videos) and for each label pooled: the mean
log power spectrum (2-D, DC in the centre) and its azimuthal average (the radial profile Durall et
al., CVPR 2020, classify), with the same functions as the spectral detector
(:mod:`detectors.image.spectral`); then real minus fake, per fake dataset and pooled: the picture
that shows a generator's upsampling fingerprint (peaks at fractions of the sampling rate, a raised
or lowered high-frequency tail).

Input (``--input``): ``native`` (default; a native-resolution centre crop of ``--size``, images
smaller than it upscaled) shows the fingerprint as the generator left it; ``benchmark`` (the
benchmark's centre crop to aspect and resize to ``--size``) shows what survives the resize the
benchmark applies. Videos give ``--frames`` frames spread over each video.

Outputs: ``spectra.json`` (counts, radial profiles with their frequency axis in cycles per pixel,
real-minus-fake differences and where they are largest), ``spectra.npz`` (the 2-D means),
``spectra_2d.png``, ``radial.png``, ``difference_2d.png`` and ``difference_radial.png``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from detectors.atomic import atomic_path, write_json
from detectors.data.catalog import DatasetEntry, MediaItem, collect_items, load_dataset_config
from detectors.data.dataset import MediaDataset, collate_skip, is_empty_batch
from detectors.errors import ConfigError
from detectors.image.spectral import azimuthal_average, grey_image, log_power_spectrum
from detectors.plots import new_figure, save_figure

logger = logging.getLogger(__name__)
INPUTS = ("native", "benchmark")


@dataclass(frozen=True)
class FramesLoader:
    """Picklable ``path -> uint8 [T, 3, size, size]``: ``frames`` frames spread over a video, each
    cropped natively or resized the benchmark's way."""

    frames: int
    size: int
    mode: str

    def __call__(self, path: str) -> torch.Tensor:
        from detectors.image.transforms import NativeCrop, benchmark_resize
        from detectors.video.io import read_video_frames
        from detectors.video.sampling import FrameSampler

        clip = read_video_frames(path, FrameSampler("uniform", self.frames), None)
        if self.mode == "benchmark":
            return benchmark_resize(clip, (self.size, self.size))
        return NativeCrop(self.size, train=False)(clip)


def _loader(modality: str, size: int, mode: str, frames: int) -> Any:
    if modality == "video":
        return FramesLoader(frames, size, mode)
    from detectors.image.data import ImageInputLoader

    return ImageInputLoader(mode, size)


@dataclass
class Accumulator:
    """Running sums of per-item mean log spectra (2-D) and radial profiles."""

    count: int = 0
    spectrum: np.ndarray | None = None
    radial: np.ndarray | None = None
    radial_squares: np.ndarray | None = None

    def add(self, spectra: torch.Tensor, radial: torch.Tensor) -> None:
        s, r = spectra.double().sum(0).numpy(), radial.double().numpy()
        if self.spectrum is None:
            self.spectrum, self.radial, self.radial_squares = (
                np.zeros_like(s),
                np.zeros(r.shape[1]),
                np.zeros(r.shape[1]),
            )
        self.spectrum += s
        self.radial += r.sum(0)
        self.radial_squares += (r**2).sum(0)
        self.count += len(r)

    def merge(self, other: Accumulator) -> None:
        if other.count == 0:
            return
        if self.spectrum is None:
            self.spectrum, self.radial = np.zeros_like(other.spectrum), np.zeros_like(other.radial)
            self.radial_squares = np.zeros_like(other.radial)
        self.spectrum += other.spectrum
        self.radial += other.radial
        self.radial_squares += other.radial_squares
        self.count += other.count

    def mean_spectrum(self) -> np.ndarray:
        return self.spectrum / self.count

    def mean_radial(self) -> np.ndarray:
        return self.radial / self.count

    def std_radial(self) -> np.ndarray:
        return np.sqrt(np.maximum(self.radial_squares / self.count - self.mean_radial() ** 2, 0.0))


def item_spectra(media: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch of images ``[B, 3, S, S]`` or clips ``[B, T, 3, S, S]`` -> per item the mean log power
    spectrum ``[B, S, S]`` (over the frames of a clip) and its radial profile ``[B, rings]``."""
    frames = media.flatten(0, 1) if media.dim() == 5 else media
    spectra = log_power_spectrum(grey_image(frames))
    if media.dim() == 5:
        spectra = spectra.reshape(media.shape[0], media.shape[1], *spectra.shape[-2:]).mean(dim=1)
    return spectra, azimuthal_average(spectra)


def dataset_spectra(
    items: list[MediaItem], load: Any, *, batch_size: int, num_workers: int, description: str
) -> tuple[Accumulator, int]:
    """(accumulated spectra of the readable items, unreadable count)."""
    loader = DataLoader(
        MediaDataset(items, load=load), batch_size=batch_size, num_workers=num_workers, collate_fn=collate_skip
    )
    total, skipped = Accumulator(), 0
    with torch.inference_mode():
        for batch in tqdm(loader, desc=description, unit="batch", disable=len(loader) < 2):
            skipped += int(batch["skipped"])
            if is_empty_batch(batch):
                continue
            total.add(*item_spectra(batch["x"]))
    return total, skipped


def largest_differences(difference: np.ndarray, frequencies: np.ndarray, count: int = 3) -> list[dict[str, float]]:
    """The ``count`` radii where real minus fake is largest in size: frequency, value and whether the
    fake has energy there in excess (negative difference) or missing (positive)."""
    order = np.argsort(-np.abs(difference))[:count]
    return [
        {
            "cycles_per_pixel": round(float(frequencies[i]), 4),
            "real_minus_fake": round(float(difference[i]), 4),
            "fake_has": "excess energy" if difference[i] < 0 else "missing energy",
        }
        for i in order
    ]


def compute_spectra(
    entries: list[DatasetEntry],
    size: int,
    mode: str,
    frames: int,
    max_per_dataset: int | None,
    batch_size: int,
    num_workers: int,
) -> tuple[dict[str, Any], dict[str, Accumulator]]:
    """(report, accumulators per dataset and per pooled label ``real`` / ``fake``)."""
    usable = [entry for entry in entries if entry.modality in ("image", "video")]
    for entry in entries:
        if entry.modality not in ("image", "video"):
            logger.warning(
                "%s: %s is an %s dataset; spectra are for images and video frames, it is skipped",
                entry.config_file,
                entry.name,
                entry.modality,
            )
    if not usable:
        raise ConfigError(
            entries[0].config_file if entries else None,
            "datasets",
            "no image or video dataset: spectra are computed for images and video frames",
        )
    sums: dict[str, Accumulator] = {}
    report: dict[str, Any] = {"input": mode, "size": size, "datasets": {}}
    pooled = {"real": Accumulator(), "fake": Accumulator()}
    for entry in usable:
        items = sorted(collect_items([entry], entry.modality), key=lambda item: item.path)[:max_per_dataset]
        if not items:
            logger.warning("%s: dataset %s has no media files", entry.config_file, entry.name)
            continue
        total, skipped = dataset_spectra(
            items,
            _loader(entry.modality, size, mode, frames),
            batch_size=batch_size,
            num_workers=num_workers,
            description=entry.name,
        )
        label = "real" if entry.media_type == "real" else "fake"
        report["datasets"][entry.name] = {
            "label": label,
            "media_type": entry.media_type,
            "modality": entry.modality,
            "generator_family": entry.generator_family,
            "n": total.count,
            "skipped_unreadable": skipped,
        }
        if total.count:
            sums[entry.name] = total
            pooled[label].merge(total)
    for label, total in pooled.items():
        if total.count:
            sums[f"all {label}"] = total
    return report, sums


def frequency_axis(rings: int, size: int) -> np.ndarray:
    """Ring index -> spatial frequency in cycles per pixel (ring r: r / size)."""
    return np.arange(rings) / float(size)


def write_outputs(output: Path, report: dict[str, Any], sums: dict[str, Accumulator]) -> dict[str, Any]:
    """spectra.json, spectra.npz and the figures; returns the report with profiles and differences."""
    size = report["size"]
    names = [name for name in sums if not name.startswith("all ")]
    real = sums.get("all real")
    rings = len(next(iter(sums.values())).mean_radial())
    frequencies = frequency_axis(rings, size)
    report["frequency_cycles_per_pixel"] = [round(float(f), 5) for f in frequencies]
    for name, total in sums.items():
        if name not in report["datasets"]:  # the pooled "all real" / "all fake"
            report["datasets"][name] = {"label": name.split()[-1], "n": total.count}
        row = report["datasets"][name]
        row["radial_mean"] = [round(float(v), 5) for v in total.mean_radial()]
        row["radial_std"] = [round(float(v), 5) for v in total.std_radial()]
    differences: dict[str, np.ndarray] = {}
    if real is not None:
        fakes = [name for name in names if report["datasets"][name]["label"] == "fake"]
        if "all fake" in sums:
            fakes.append("all fake")
        for name in fakes:
            radial = real.mean_radial() - sums[name].mean_radial()
            differences[name] = real.mean_spectrum() - sums[name].mean_spectrum()
            report["datasets"][name]["real_minus_fake_radial"] = [round(float(v), 5) for v in radial]
            report["datasets"][name]["largest_differences"] = largest_differences(radial[1:], frequencies[1:])
    arrays = {f"mean_log_spectrum/{name}": total.mean_spectrum() for name, total in sums.items()}
    arrays.update({f"real_minus_fake/{name}": value for name, value in differences.items()})
    with atomic_path(output / "spectra.npz") as tmp:
        with open(tmp, "wb") as handle:
            np.savez_compressed(handle, **arrays)
    profile_figures(output, sums, frequencies)
    if differences:
        difference_figures(output, real, sums, differences, frequencies)
    else:
        logger.warning("no real and fake datasets to compare: no difference figures")
    write_json(output / "spectra.json", report)
    return report


# --------------------------------------------------------------------------- figures
def _extent(size: int) -> tuple[float, float, float, float]:
    half = size // 2
    return (-half / size, (size - half) / size, (size - half) / size, -half / size)  # cycles/pixel, DC at 0


def profile_figures(output: Path, sums: dict[str, Accumulator], frequencies: np.ndarray) -> None:
    """``spectra_2d.png`` (mean log spectrum per dataset) and ``radial.png`` (profiles, mean +- std)."""
    names = list(sums)
    columns = min(4, len(names))
    rows = -(-len(names) // columns)
    figure = new_figure((3.2 * columns, 3.0 * rows))
    for index, name in enumerate(names):
        axes = figure.add_subplot(rows, columns, index + 1)
        spectrum = sums[name].mean_spectrum()
        shown = axes.imshow(spectrum, cmap="magma", extent=_extent(spectrum.shape[0]))
        figure.colorbar(shown, ax=axes, shrink=0.75)
        axes.set_title(f"{name} (n={sums[name].count})", fontsize="small")
        axes.set_xlabel("cycles/pixel", fontsize="x-small")
    figure.suptitle("mean log power spectrum (DC in the centre)")
    save_figure(figure, output / "spectra_2d.png")

    figure = new_figure((8.0, 5.0))
    axes = figure.add_subplot()
    for name in names:
        mean, std = sums[name].mean_radial(), sums[name].std_radial()
        style = "--" if name.startswith("all ") else "-"
        line = axes.plot(frequencies, mean, style, label=f"{name} (n={sums[name].count})")[0]
        axes.fill_between(frequencies, mean - std, mean + std, color=line.get_color(), alpha=0.12)
    axes.axvline(0.5, color="grey", linewidth=0.8, linestyle=":")
    axes.set_xlabel("spatial frequency (cycles/pixel; 0.5 = Nyquist, beyond it: the corners)")
    axes.set_ylabel("mean log power")
    axes.set_title("azimuthally averaged log power spectrum (mean +- std)")
    axes.legend(fontsize="x-small")
    save_figure(figure, output / "radial.png")


def difference_figures(
    output: Path,
    real: Accumulator,
    sums: dict[str, Accumulator],
    differences: dict[str, np.ndarray],
    frequencies: np.ndarray,
) -> None:
    """``difference_2d.png`` (real minus each fake, 2-D) and ``difference_radial.png``."""
    from matplotlib.colors import TwoSlopeNorm

    names = list(differences)
    columns = min(4, len(names))
    rows = -(-len(names) // columns)
    figure = new_figure((3.2 * columns, 3.0 * rows))
    for index, name in enumerate(names):
        axes = figure.add_subplot(rows, columns, index + 1)
        values = differences[name]
        bound = float(np.percentile(np.abs(values), 99.5)) or 1.0  # a few extreme corner bins would wash it out
        shown = axes.imshow(
            values, cmap="RdBu_r", norm=TwoSlopeNorm(0.0, -bound, bound), extent=_extent(values.shape[0])
        )
        figure.colorbar(shown, ax=axes, shrink=0.75)
        axes.set_title(f"real - {name}", fontsize="small")
    figure.suptitle("real minus fake mean log spectrum (blue: the fake has excess energy there)")
    save_figure(figure, output / "difference_2d.png")

    figure = new_figure((8.0, 4.5))
    axes = figure.add_subplot()
    for name in names:
        style = "--" if name.startswith("all ") else "-"
        axes.plot(frequencies, real.mean_radial() - sums[name].mean_radial(), style, label=f"real - {name}")
    axes.axhline(0, color="black", linewidth=0.8)
    axes.axvline(0.5, color="grey", linewidth=0.8, linestyle=":")
    axes.set_xlabel("spatial frequency (cycles/pixel)")
    axes.set_ylabel("difference of mean log power")
    axes.set_title("real minus fake radial profile (below 0: the fake has excess energy)")
    axes.legend(fontsize="x-small")
    save_figure(figure, output / "difference_radial.png")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m detectors.spectra", description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="dataset YAML (image and/or video datasets)")
    parser.add_argument("--output", type=Path, required=True, help="folder for spectra.json, spectra.npz and PNGs")
    parser.add_argument("--size", type=int, default=256, help="crop / resize side in pixels (default 256)")
    parser.add_argument(
        "--input",
        choices=INPUTS,
        default="native",
        help="native-resolution centre crops (default) or the benchmark's crop and resize",
    )
    parser.add_argument("--frames", type=int, default=8, help="frames per video (default 8)")
    parser.add_argument("--max-per-dataset", type=int, metavar="N", help="at most N files per dataset (by path)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--num-workers", type=int, default=2)
    args = parser.parse_args(argv)
    for flag, value in (
        ("--size", args.size),
        ("--frames", args.frames),
        ("--batch-size", args.batch_size),
        ("--max-per-dataset", args.max_per_dataset),
    ):
        if value is not None and value < (8 if flag == "--size" else 1):
            parser.error(f"{flag} must be >= {8 if flag == '--size' else 1}, got {value}")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        entries = load_dataset_config(args.data)
        report, sums = compute_spectra(
            entries, args.size, args.input, args.frames, args.max_per_dataset, args.batch_size, max(0, args.num_workers)
        )
        if not sums:
            raise ConfigError(args.data, "datasets", "no readable media in any dataset")
        args.output.mkdir(parents=True, exist_ok=True)
        report = write_outputs(args.output, report, sums)
    except (ConfigError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for name, row in report["datasets"].items():
        line = f"{name:<28} {row['label']:<5} n={row['n']}"
        if row.get("largest_differences"):
            top = row["largest_differences"][0]
            line += (
                f"  largest real-minus-fake difference {top['real_minus_fake']:+.3f} at "
                f"{top['cycles_per_pixel']:.3f} cycles/px ({top['fake_has']})"
            )
        print(line)
    print(f"written to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
