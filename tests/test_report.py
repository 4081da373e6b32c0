"""report.html: content, escaping, and a real browser (Debian's headless Chromium) rendering it
without console errors, network requests or broken images, with a non-blank screenshot."""

from __future__ import annotations

import io
import re
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import yaml
from browser import find_chromium, open_page
from PIL import Image

from detectors.evaluate import evaluate_submission
from detectors.report import build_report, worst_errors

FIXTURES = Path(__file__).parent / "data" / "gasbench"
IMAGE_SUBMISSION = FIXTURES / "image" / "submission"
CHROMIUM = find_chromium()
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None,
    reason="no Chromium on PATH: bash scripts/setup.sh installs Debian's chromium "
    "(scripts/ensure_chromium.sh; root or passwordless sudo needed)",
)


def _image_data(root: Path) -> Path:
    entries = []
    for name, media_type, generator in (("coco-real", "real", None), ("sdxl", "synthetic", "diffusion")):
        shutil.copytree(FIXTURES / "image" / "datasets" / name / "samples", root / name)
        entries.append(
            {"name": name, "path": name, "modality": "image", "media_type": media_type, "generator_family": generator}
        )
    path = root / "data.yaml"
    path.write_text(yaml.safe_dump({"datasets": entries}))
    return path


@pytest.fixture(scope="module")
def evaluation(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("report")
    results = evaluate_submission(IMAGE_SUBMISSION, _image_data(root), root / "eval", num_workers=0, explain=True)
    return root / "eval", results


def test_the_report_holds_the_numbers_plots_tables_and_worst_errors(evaluation):
    output, results = evaluation
    page = (output / "report.html").read_text()
    assert page.startswith("<!doctype html>") and "Content-Security-Policy" in page
    for label, key in (("ROC-AUC", "roc_auc"), ("TPR @ 1% FPR", "tpr_at_1pct_fpr"), ("ECE", "ece"), ("MCC", "mcc")):
        value = results[key]
        assert label in page and (value is None or f"{value:.4f}" in page), label
    assert f"{results['score']:.4f}" in page
    assert page.count('src="data:image/png;base64,') >= 3  # ROC, PR, reliability at least
    assert "coco-real" in page and "sdxl" in page and "diffusion" in page  # per-dataset and per-generator rows
    # no link to anything outside the page
    assert not re.search(r'(src|href)="(?!data:)', page)
    # the worst errors, with their attribution maps (--explain)
    rows = results["base"]["per_dataset"]
    false_positives, false_negatives = rows["coco-real"]["n_pred_fake"], rows["sdxl"]["n_pred_real"]
    errors = len(re.findall(r"<figure>", page))
    assert errors == min(false_positives, 6) + min(false_negatives, 6) and errors > 0  # the fixture model errs
    assert len(list((output / "explain").glob("*_map.png"))) == errors
    assert page.count("attribution map of") == errors


def test_worst_errors_are_the_most_confident_mistakes():
    items = [SimpleNamespace(label=label, path=f"f{i}") for i, label in enumerate([0, 0, 0, 1, 1, 1])]
    prob = np.array([0.9, 0.6, 0.2, 0.1, 0.45, 0.8])
    preds = (prob > 0.5).astype(int)
    positives, negatives = worst_errors(items, prob, preds, count=5)
    assert [item.path for item, _ in positives] == ["f0", "f1"]
    assert [item.path for item, _ in negatives] == ["f3", "f4"]


def test_names_are_escaped():
    item = SimpleNamespace(label=0, path="/x/<script>alert(1)</script>.png", dataset="d<b>", generator_family=None)
    results = {
        "model": "m<i>",
        "data": "d",
        "modality": "image",
        "base": {"n": 1, "per_dataset": {"<img src=x>": {"n": 1, "accuracy": 1.0}}},
    }
    page = build_report(results, items=[item], prob=np.array([0.9]), preds=np.array([1]), plots={})
    assert "<script>alert" not in page and "<img src=x>" not in page and "m<i>" not in page
    assert "&lt;img src=x&gt;" in page


@needs_chromium
def test_report_renders_in_headless_chromium(evaluation):
    output, _ = evaluation
    sort = (
        "(function () { var th = document.querySelector('#per-dataset th'); var first = function () {"
        " return document.querySelector('#per-dataset tbody tr td').textContent; };"
        " th.click(); var a = first(); th.click(); return [a, first()]; })()"
    )
    report = open_page(output / "report.html", CHROMIUM, script=sort)
    assert report.errors == []
    assert [url for url in report.requests if not url.startswith(("file:", "data:"))] == []
    assert report.images >= 3 and report.broken_images == 0
    assert report.evaluated["script"] == ["coco-real", "sdxl"]  # the table sorter works both ways
    pixels = np.asarray(Image.open(io.BytesIO(report.screenshot)).convert("RGB")).astype(np.float64)
    background = np.array([0xF4, 0xF6, 0xF9])
    drawn = np.abs(pixels - background).sum(axis=-1) > 30
    assert pixels.shape[0] >= 1000 and drawn.mean() > 0.03 and pixels.std() > 20  # a blank page: 0 and 0


@needs_chromium
def test_the_browser_check_catches_errors_and_network_requests(tmp_path):
    page = tmp_path / "bad.html"
    page.write_text(
        '<html><body><p>x</p><img src="http://example.invalid/a.png">'
        '<script>console.error("boom"); undefined_function();</script></body></html>'
    )
    report = open_page(page, CHROMIUM)
    assert "boom" in report.console_errors
    assert any("undefined_function" in text for text in report.exceptions)
    assert "http://example.invalid/a.png" in report.requests and report.broken_images == 1
