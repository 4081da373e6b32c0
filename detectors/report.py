"""``report.html``: one self-contained page per evaluation (``python -m detectors.evaluate`` writes it).

Everything is inline: the plots and thumbnails as ``data:`` PNGs, the style and the small table
sorter in the page. A Content-Security-Policy allows nothing else (no network, no other file), so
the page renders the same from a laptop, a CI artifact or an e-mail attachment.

Contents: the headline score with MCC, Brier, ROC-AUC, PR-AUC, EER, ECE, TPR at 1 % and 5 % FPR and
accuracy; the passes side by side (base, augmented, frame-level when an image detector scores
videos); ROC, PR and reliability plots; per-dataset and per-generator tables; the worst false
positives (real media with the highest p(fake)) and false negatives (fakes with the lowest) as
thumbnails, with their attribution maps when ``detectors.evaluate --explain`` computed them.
"""

from __future__ import annotations

import base64
import datetime
import html
import io
import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from detectors.atomic import write_text

logger = logging.getLogger(__name__)

WORST_COUNT = 6  # thumbnails per error kind
THUMBNAIL = 176  # pixels, longer side
HEADLINE = (
    ("mcc", "MCC"),
    ("brier", "Brier"),
    ("roc_auc", "ROC-AUC"),
    ("pr_auc", "PR-AUC"),
    ("eer", "EER"),
    ("ece", "ECE"),
    ("tpr_at_1pct_fpr", "TPR @ 1% FPR"),
    ("tpr_at_5pct_fpr", "TPR @ 5% FPR"),
    ("accuracy", "accuracy"),
    ("cross_entropy", "cross-entropy"),
)
CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'"

STYLE = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 0; color: #1d2430;
       background: #f4f6f9; }
main { max-width: 1180px; margin: 0 auto; padding: 24px; }
h1 { font-size: 24px; margin: 0 0 4px; } h2 { font-size: 18px; margin: 28px 0 10px; }
.meta { color: #5b6575; font-size: 13px; word-break: break-all; }
.headline { display: flex; gap: 14px; flex-wrap: wrap; align-items: stretch; margin-top: 16px; }
.card { background: #fff; border-radius: 8px; padding: 10px 14px; box-shadow: 0 1px 3px rgba(0,0,0,.12);
        min-width: 96px; }
.card .label { color: #5b6575; font-size: 12px; } .card .value { font-size: 20px; font-weight: 600; }
.card.score { background: #1f4e9c; color: #fff; min-width: 160px; } .card.score .label { color: #cfdcf5; }
.card.score .value { font-size: 36px; }
table { border-collapse: collapse; background: #fff; box-shadow: 0 1px 3px rgba(0,0,0,.12); font-size: 13px; }
th, td { padding: 5px 10px; border-bottom: 1px solid #e3e7ee; text-align: right; }
th:first-child, td:first-child { text-align: left; }
th { background: #e9eef6; position: sticky; top: 0; } table.sortable th { cursor: pointer; }
.plots { display: flex; gap: 12px; flex-wrap: wrap; } .plots img { width: 360px; background: #fff;
  box-shadow: 0 1px 3px rgba(0,0,0,.12); }
.gallery { display: flex; gap: 12px; flex-wrap: wrap; }
figure { margin: 0; background: #fff; padding: 8px; border-radius: 6px; box-shadow: 0 1px 3px rgba(0,0,0,.12);
         width: 184px; }
figure img { max-width: 176px; display: block; margin: 0 auto 4px; }
figcaption { font-size: 11px; color: #3a4452; word-break: break-all; }
.note { color: #5b6575; font-size: 12px; } .none { color: #5b6575; font-style: italic; }
"""

SORTER = """
document.querySelectorAll('table.sortable').forEach(function (table) {
  table.querySelectorAll('th').forEach(function (th, column) {
    th.addEventListener('click', function () {
      var body = table.tBodies[0];
      var rows = Array.prototype.slice.call(body.rows);
      var ascending = th.getAttribute('data-order') !== 'asc';
      rows.sort(function (a, b) {
        var x = a.cells[column].getAttribute('data-value'), y = b.cells[column].getAttribute('data-value');
        var p = parseFloat(x), q = parseFloat(y);
        var order = (!isNaN(p) && !isNaN(q)) ? p - q : String(x).localeCompare(String(y));
        return ascending ? order : -order;
      });
      rows.forEach(function (row) { body.appendChild(row); });
      th.setAttribute('data-order', ascending ? 'asc' : 'desc');
    });
  });
});
"""


def _number(value: Any, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "–"
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return str(int(value))
    return f"{float(value):.{digits}f}"


def _cell(value: Any) -> str:
    raw = "" if value is None else value
    text = html.escape(raw) if isinstance(raw, str) and value is not None else _number(value)
    return f'<td data-value="{html.escape(str(raw), quote=True)}">{text}</td>'


def png_data_uri(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def _image_tag(data: bytes | None, alt: str, css: str = "") -> str:
    if not data:
        return f'<span class="none">({html.escape(alt)}: not available)</span>'
    return f'<img src="{png_data_uri(data)}" alt="{html.escape(alt, quote=True)}"{css}>'


def _png(pixels: np.ndarray) -> bytes:
    from PIL import Image

    image = Image.fromarray(pixels)
    image.thumbnail((THUMBNAIL, THUMBNAIL))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def thumbnail(path: str, modality: str) -> bytes | None:
    """A small PNG of a medium: the image; three frames of a video side by side; an audio clip's
    log-mel spectrogram. ``None`` (with a logged warning) when the file cannot be rendered."""
    try:
        if modality == "image":
            from detectors.image.data import load_image_rgb

            return _png(load_image_rgb(path).permute(1, 2, 0).numpy())
        if modality == "video":
            from detectors.video.io import read_video_frames
            from detectors.video.sampling import FrameSampler

            frames = read_video_frames(path, FrameSampler("uniform", 3), None)
            return _png(np.concatenate(list(frames.permute(0, 2, 3, 1).numpy()), axis=1))
        return _audio_thumbnail(path)
    except Exception as error:  # a thumbnail is a nicety: the report is written without it
        logger.warning("report: no thumbnail for %s (%s: %s)", path, type(error).__name__, error)
        return None


def _audio_thumbnail(path: str) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from detectors.audio.data import benchmark_input_loader
    from detectors.explain.audio import log_mel

    waveform = benchmark_input_loader({"sample_rate": 16000, "duration_seconds": 6.0})(path)
    figure = Figure(figsize=(1.76, 1.0), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_axes((0, 0, 1, 1))
    axes.imshow(log_mel(waveform.reshape(-1)).numpy(), origin="lower", aspect="auto", cmap="magma")
    axes.set_axis_off()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def worst_errors(
    items: Sequence[Any], prob: np.ndarray, preds: np.ndarray, count: int = WORST_COUNT
) -> tuple[list[tuple[Any, float]], list[tuple[Any, float]]]:
    """(false positives: real media called fake, highest p(fake) first; false negatives: fakes called
    real, lowest p(fake) first), ``count`` of each."""
    positives = [(item, float(p)) for item, p, yhat in zip(items, prob, preds) if item.label == 0 and yhat == 1]
    negatives = [(item, float(p)) for item, p, yhat in zip(items, prob, preds) if item.label == 1 and yhat == 0]
    positives.sort(key=lambda pair: -pair[1])
    negatives.sort(key=lambda pair: pair[1])
    return positives[:count], negatives[:count]


def _metrics_table(passes: Mapping[str, Mapping[str, Any]]) -> str:
    keys = [("n", "samples"), ("score", "score")] + list(HEADLINE)
    head = "".join(f"<th>{html.escape(name)}</th>" for name in ("pass", *[label for _, label in keys]))
    rows = "".join(
        "<tr>" + _cell(name) + "".join(_cell(metrics.get(key)) for key, _ in keys) + "</tr>"
        for name, metrics in passes.items()
    )
    return f'<table class="sortable"><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>'


def _breakdown_table(table: Mapping[str, Mapping[str, Any]], first: str) -> str:
    if not table:
        return '<p class="none">none</p>'
    columns = [
        ("n", "n"),
        ("n_real", "real"),
        ("n_fake", "fake"),
        ("accuracy", "accuracy"),
        ("mean_prob_fake", "mean p(fake)"),
        ("n_pred_fake", "called fake"),
        ("brier", "Brier"),
        ("mcc", "MCC"),
        ("score", "score"),
        ("roc_auc", "ROC-AUC"),
    ]
    head = f"<th>{html.escape(first)}</th>" + "".join(f"<th>{html.escape(label)}</th>" for _, label in columns)
    rows = "".join(
        "<tr>" + _cell(name) + "".join(_cell(row.get(key)) for key, _ in columns) + "</tr>"
        for name, row in sorted(table.items())
    )
    return f'<table class="sortable"><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>'


def _gallery(samples: Sequence[tuple[Any, float]], modality: str, explanations: Mapping[str, bytes]) -> str:
    if not samples:
        return '<p class="none">none</p>'
    figures = []
    for item, p in samples:
        parts = [_image_tag(thumbnail(item.path, modality), Path(item.path).name)]
        if item.path in explanations:
            parts.append(_image_tag(explanations[item.path], f"attribution map of {Path(item.path).name}"))
        caption = (
            f"<b>p(fake) {p:.3f}</b> · {html.escape(item.dataset)}"
            f"{' · ' + html.escape(item.generator_family) if item.generator_family else ''}<br>"
            f"{html.escape(item.path)}"
        )
        figures.append(f"<figure>{''.join(parts)}<figcaption>{caption}</figcaption></figure>")
    return f'<div class="gallery">{"".join(figures)}</div>'


def _notes(results: Mapping[str, Any]) -> str:
    notes = []
    selection = results.get("selection") or {}
    if selection.get("seed") is not None:
        notes.append(f"Samples: the benchmark's selection with seed {selection['seed']}.")
    robustness = results.get("robustness") or {}
    if robustness.get("blended"):
        notes.append(
            f"Score = {1 - robustness['aug_weight']:g} x base + {robustness['aug_weight']:g} x augmented "
            f"({robustness.get('mode')})."
        )
    base = results.get("base") or {}
    if "score_composition" in base:
        notes.append("Provenance weights: " + ", ".join(f"{k} {v:.3f}" for k, v in base["score_composition"].items()))
    if results.get("frames_per_video"):
        notes.append(
            f"An image detector scored videos: {results['frames_per_video']} frames per video, video "
            f"p(fake) = {results['aggregate']} of the frame probabilities; the headline is video-level."
        )
    if base.get("skipped_unreadable"):
        notes.append(f"{base['skipped_unreadable']} unreadable sample(s) skipped.")
    if base.get("non_finite_outputs"):
        notes.append(f"{base['non_finite_outputs']} sample(s) gave NaN/inf logits and are not scored.")
    timing = f"{_number(base.get('ms_per_sample_mean'), 2)} ms/sample (p95 {_number(base.get('ms_per_sample_p95'), 2)})"
    notes.append(f"Inference time: {timing}.")
    return "".join(f"<li>{html.escape(note)}</li>" for note in notes)


def build_report(
    results: Mapping[str, Any],
    *,
    items: Sequence[Any],
    prob: np.ndarray,
    preds: np.ndarray,
    plots: Mapping[str, Path],
    explanations: Mapping[str, bytes] | None = None,
    title: str | None = None,
) -> str:
    """The report page (a string); see the module docstring. ``items``/``prob``/``preds``: the scored
    samples of the headline pass; ``plots``: name -> PNG file; ``explanations``: path -> PNG bytes."""
    modality = str(results.get("modality", "image"))
    base = results.get("base") or {}
    headline = {**base, "score": results.get("score", base.get("score"))}
    cards = [
        f'<div class="card score"><div class="label">score</div><div class="value">'
        f"{_number(headline.get('score'))}</div></div>"
    ]
    cards += [
        f'<div class="card"><div class="label">{html.escape(label)}</div><div class="value">'
        f"{_number(headline.get(key))}</div></div>"
        for key, label in HEADLINE
    ]
    passes = {"base": base}
    if "augmented" in results:
        passes["augmented"] = results["augmented"]
    if "frame_level" in results:
        passes["frame-level"] = results["frame_level"]
    if "audio_robustness_extra" in results:
        passes["audio robustness (extra)"] = results["audio_robustness_extra"]
    plot_tags = "".join(_image_tag(path.read_bytes() if path.is_file() else None, name) for name, path in plots.items())
    positives, negatives = worst_errors(items, prob, preds)
    explanations = explanations or {}
    generated = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    title = title or f"Evaluation of {results.get('model', 'a submission')}"
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{CSP}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(title)}</title><style>{STYLE}</style></head>
<body><main>
<h1>{html.escape(title)}</h1>
<div class="meta">model {html.escape(str(results.get("model")))} · data {html.escape(str(results.get("data")))} ·
{html.escape(modality)} · {base.get("n", 0)} samples ({base.get("n_real", 0)} real, {base.get("n_fake", 0)} fake) ·
generated {generated} by python -m detectors.evaluate</div>
<section id="headline"><div class="headline">{"".join(cards)}</div></section>
<h2>Passes</h2><section id="passes">{_metrics_table(passes)}</section>
<h2>Curves</h2><section id="plots" class="plots">{plot_tags}</section>
<h2>Per dataset</h2><section id="per-dataset">{_breakdown_table(base.get("per_dataset") or {}, "dataset")}</section>
<h2>Per generator</h2><section id="per-generator">{_breakdown_table(base.get("per_generator") or {}, "generator")}</section>
<h2>Worst false positives <span class="note">(real, called fake; highest p(fake) first)</span></h2>
<section id="false-positives">{_gallery(positives, modality, explanations)}</section>
<h2>Worst false negatives <span class="note">(fake, called real; lowest p(fake) first)</span></h2>
<section id="false-negatives">{_gallery(negatives, modality, explanations)}</section>
<h2>Notes</h2><ul class="note" id="notes">{_notes(results)}</ul>
</main><script>{SORTER}</script></body></html>
"""


def explain_worst(
    model: Any, load: Callable[[str], Any], modality: str, paths: Sequence[str], directory: Path
) -> dict[str, bytes]:
    """Attribution maps of the worst errors for the report (``--explain``): path -> PNG bytes of the
    map over the image (video: over its top frame; audio: the time x band figure). The full figures
    and numbers go to ``directory`` (``detectors.explain``'s layout)."""
    from detectors.errors import MediaError
    from detectors.explain import ExplainOptions, explain_path
    from detectors.explain.figures import overlay_png

    directory.mkdir(parents=True, exist_ok=True)
    model.eval()
    out: dict[str, bytes] = {}
    for index, path in enumerate(paths):
        stem = directory / f"{index:03d}_{Path(path.split('::')[-1]).stem}"
        try:
            result, tensors = explain_path(model, load, modality, path, stem, ExplainOptions(top_frames=1))
        except MediaError as error:
            logger.warning("report: no attribution map for %s", error)
            continue
        if modality == "image":
            thumb = overlay_png(tensors["input"], tensors["map"], f"{stem}_map.png", result["method"])
        elif modality == "video" and tensors["top"]:
            top = tensors["top"][0]
            thumb = overlay_png(tensors["input"][top], tensors["maps"][0], f"{stem}_map.png", f"top frame {top}")
        else:
            thumb = Path(result["figures"][0])
        out[path] = Path(thumb).read_bytes()
    return out


def write_report(path: str | Path, results: Mapping[str, Any], **kwargs: Any) -> Path:
    """Write :func:`build_report` to ``path`` atomically."""
    path = Path(path)
    write_text(path, build_report(results, **kwargs))
    return path


__all__ = ["build_report", "explain_worst", "png_data_uri", "thumbnail", "worst_errors", "write_report"]
