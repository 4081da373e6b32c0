"""See why a detector calls a file fake: attribution maps for image, video and audio detectors.

``python -m detectors.explain FILE... (--run RUN | --model SUBMISSION) --output DIR`` (see
:mod:`detectors.explain.__main__`); the same from Python with :func:`explain_files`, or one model
input at a time with :func:`explain_input`.

Each file is decoded, cropped and resized exactly as the benchmark prepares it for the model (the
``detect`` command's loaders), and the explanation is of what the model computes on that input:

- image: a heat map over the input (:mod:`detectors.explain.methods`: ViT token Grad-CAM, CNN
  Grad-CAM with Captum, or Captum occlusion as the model-agnostic fallback);
- video: each frame's contribution and maps for the top frames (:mod:`detectors.explain.video`);
- audio: attribution over time x mel bands with ``detect_breaths`` segments
  (:mod:`detectors.explain.audio`).

Per file: ``<n>_<name>.png`` (video also ``<n>_<name>_frames.png``) and ``<n>_<name>.json`` with
the numbers (p(fake), the map on a coarse grid and its peak, contributions, the time x band grid);
``explanations.json`` lists every file. The number explained is the fake-vs-real log-odds of the
model's output (:func:`~detectors.explain.methods.fake_log_odds`).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from detectors.atomic import write_json
from detectors.data.dataset import load_media
from detectors.errors import MediaError

logger = logging.getLogger(__name__)
GRID = 16  # maps are also reported averaged on a GRID x GRID grid


@dataclass
class ExplainOptions:
    method: str = "auto"  # image/video maps: auto | vit_gradcam | gradcam | occlusion; audio: auto | ablation | integrated_gradients
    top_frames: int = 3  # video: maps of this many top frames
    window: int | None = None  # occlusion window (pixels); default an eighth of the shorter side
    bands: int = 8  # audio: mel bands
    window_s: float = 0.25  # audio: time window (s)
    steps: int = 16  # audio integrated gradients: steps
    progress: bool = False  # Captum's progress bars (long occlusion / ablation runs)


def _peak(heat: torch.Tensor) -> dict[str, Any]:
    height, width = heat.shape
    index = int(torch.argmax(heat))
    y, x = divmod(index, width)
    return {
        "y": y,
        "x": x,
        "y_frac": round((y + 0.5) / height, 4),
        "x_frac": round((x + 0.5) / width, 4),
        "value": float(heat.flatten()[index]),
    }


def _grid(heat: torch.Tensor, cells: int = GRID) -> list[list[float]]:
    pooled = F.adaptive_avg_pool2d(heat[None, None].float(), (min(cells, heat.shape[0]), min(cells, heat.shape[1])))
    return [[round(float(v), 6) for v in row] for row in pooled[0, 0]]


def describe_map(heat: torch.Tensor) -> dict[str, Any]:
    """The numbers of one map: its peak (pixel and fraction of the input), range and coarse grid."""
    return {"peak": _peak(heat), "min": float(heat.min()), "max": float(heat.max()), "grid": _grid(heat)}


def prediction(model: nn.Module, x: torch.Tensor) -> dict[str, float]:
    """p(fake) (the benchmark's, from float32 logits) and the log-odds explained, for one input."""
    from detectors.explain.methods import score_function
    from detectors.metrics import benchmark_outputs

    with torch.no_grad():
        from export.benchmark_loader import run_model

        logits = run_model(model, x[None])
        log_odds = float(score_function(model)(x[None].float())[0])
    _, prob, _ = benchmark_outputs(logits.float().cpu())
    return {"prob_fake": float(prob[0]), "log_odds": log_odds}


def explain_input(
    model: nn.Module, x: torch.Tensor, modality: str, options: ExplainOptions | None = None, sample_rate: int = 16000
) -> dict[str, Any]:
    """Explain one model input (``x`` as the benchmark feeds it: image ``[3, H, W]``, clip
    ``[T, 3, H, W]``, waveform ``[N]``). Returns the numbers (JSON-ready) plus the tensors the
    figures need under ``"tensors"``."""
    from detectors.explain import audio, methods, video

    options = options or ExplainOptions()
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    x = x.to(device)
    result: dict[str, Any] = {"modality": modality, **prediction(model, x)}
    if modality == "image":
        maps, info = methods.image_maps(
            model, x[None], options.method, window=options.window, progress=options.progress
        )
        heat = maps[0].cpu()
        result.update(info)
        result.update({"input_size": list(x.shape[-2:]), "map": describe_map(heat)})
        result["tensors"] = {"input": x.cpu(), "map": heat}
    elif modality == "video":
        contributions = video.frame_contributions(model, x, progress=options.progress).cpu()
        ranking = torch.argsort(contributions, descending=True).tolist()
        top = ranking[: max(0, min(options.top_frames, len(ranking)))]
        maps, info = (
            video.frame_maps(model, x, top, options.method, window=options.window, progress=options.progress)
            if top
            else (torch.zeros(0), {"method": None})
        )
        result.update(
            {
                "frame_method": "ablation: frame replaced by its predecessor",
                "map_method": info["method"],
                "map_info": info,
                "input_size": list(x.shape[-2:]),
                "num_frames": int(x.shape[0]),
                "contributions": [round(float(v), 6) for v in contributions],
                "ranking": ranking,
                "top_frames": top,
                "frame_maps": {str(t): describe_map(maps[i].cpu()) for i, t in enumerate(top)},
            }
        )
        result["tensors"] = {"input": x.cpu(), "contributions": contributions, "maps": maps.cpu(), "top": top}
    elif modality == "audio":
        from detectors.audio.breath import detect_breaths

        waveform = x.float().reshape(-1)
        attribution, info = audio.time_band_attribution(
            model,
            waveform,
            sample_rate,
            method=options.method,
            bands=options.bands,
            window_s=options.window_s,
            steps=options.steps,
            progress=options.progress,
        )
        segments = detect_breaths(waveform.cpu(), sample_rate)
        band, window = divmod(int(torch.argmax(attribution)), attribution.shape[1])
        edges = info["band_edges_hz"]
        result.update(info)
        result.update(
            {
                "duration_s": waveform.shape[0] / sample_rate,
                "attribution": [[round(float(v), 6) for v in row] for row in attribution],
                "time_attribution": [round(float(v), 6) for v in attribution.sum(0)],
                "band_attribution": [round(float(v), 6) for v in attribution.sum(1)],
                "peak": {
                    "band": band,
                    "window": window,
                    "low_hz": edges[band],
                    "high_hz": edges[band + 1],
                    "start_s": window * options.window_s,
                    "end_s": (window + 1) * options.window_s,
                    "value": float(attribution[band, window]),
                },
                "breath_segments": [list(s) for s in segments],
                "breath_share": audio.breath_share(attribution, segments, options.window_s),
            }
        )
        result["tensors"] = {"input": waveform.cpu(), "attribution": attribution, "segments": segments}
    else:
        raise ValueError(f"unknown modality {modality!r}")
    return result


def render(result: dict[str, Any], stem: Path, title: str, sample_rate: int = 16000) -> list[Path]:
    """The figures of :func:`explain_input`'s result, ``stem`` + ``.png`` (video also ``_frames.png``)."""
    from detectors.explain import figures

    tensors = result["tensors"]
    head = f"{title}\np(fake) {result['prob_fake']:.3f}"
    if result["modality"] == "image":
        return [
            figures.image_figure(
                tensors["input"], tensors["map"], f"{head}  ({result['method']})", stem.with_suffix(".png")
            )
        ]
    if result["modality"] == "video":
        return [
            figures.video_figure(
                tensors["contributions"],
                tensors["input"],
                tensors["top"],
                tensors["maps"],
                f"{head}  (frames: ablation; maps: {result['map_method']})",
                stem.with_suffix(".png"),
            )
        ]
    from detectors.explain.audio import log_mel

    return [
        figures.audio_figure(
            log_mel(tensors["input"], sample_rate),
            tensors["attribution"],
            result["band_edges_hz"],
            result["window_s"],
            result["duration_s"],
            tensors["segments"],
            f"{head}  ({result['method']})",
            stem.with_suffix(".png"),
        )
    ]


def _stem(index: int, path: str) -> str:
    name = Path(path.split("::")[-1].rstrip("/")).stem or "input"
    return f"{index:03d}_{re.sub(r'[^A-Za-z0-9._-]+', '_', name)[:80]}"


def explain_path(
    model: nn.Module, load: Callable[[str], torch.Tensor], modality: str, path: str, stem: Path, options: ExplainOptions
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Explain one file: ``(numbers, tensors)``; writes ``stem.png`` and ``stem.json``. Raises
    :class:`MediaError` for a file that cannot be used."""
    from detectors.detect import wrong_modality

    problem = wrong_modality(path, modality)
    if problem is not None:
        raise MediaError(path, problem)
    x = load_media(load, path)
    result = explain_input(model, x, modality, options)
    figures = render(result, stem, Path(path).name)
    tensors = result.pop("tensors")
    result.update({"path": path, "figures": [str(f) for f in figures]})
    write_json(stem.with_suffix(".json"), result)
    return result, tensors


def explain_files(
    model: nn.Module,
    load: Callable[[str], torch.Tensor],
    modality: str,
    paths: Sequence[str | Path],
    output: str | Path,
    options: ExplainOptions | None = None,
) -> list[dict[str, Any]]:
    """Explain every file; one result per path, in order: the numbers and the figures written, or
    ``{"path", "error"}`` for a file that cannot be read. Writes ``explanations.json``."""
    options = options or ExplainOptions()
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    model.eval()
    results = []
    for index, path in enumerate(tqdm([str(p) for p in paths], desc="explain", unit="file", disable=len(paths) < 2)):
        try:
            result, _ = explain_path(model, load, modality, path, output / _stem(index, path), options)
        except MediaError as error:
            logger.error("%s", error)
            result = {"path": path, "error": str(error)}
        results.append(result)
    write_json(output / "explanations.json", {"modality": modality, "options": asdict(options), "results": results})
    return results


__all__ = ["ExplainOptions", "describe_map", "explain_files", "explain_input", "explain_path", "prediction", "render"]
