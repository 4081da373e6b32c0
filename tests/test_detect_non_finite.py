"""detect with non-finite model outputs: an error row per file, valid JSON with null (never
NaN), exit status 1; the other files are still scored."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import detectors.detect as detect_module
from detectors.detect import LoadedModel, main


def strict_json(path: Path) -> dict:
    def refuse(constant: str):
        raise ValueError(f"not valid JSON: {constant}")

    return json.loads(path.read_text(), parse_constant=refuse)


def test_nan_and_inf_outputs_are_error_rows_with_null_and_exit_1(tmp_path, monkeypatch, capsys) -> None:
    files = []
    for value in range(4):
        path = tmp_path / f"{value}.png"
        Image.fromarray(np.full((8, 8, 3), value, dtype=np.uint8)).save(path)
        files.append(str(path))

    def load(path: str) -> torch.Tensor:  # the pixel value tells the fake model what to answer
        return torch.from_numpy(np.asarray(Image.open(path))[0, 0, :1].astype(np.float32))

    def predict(x: torch.Tensor) -> torch.Tensor:
        logits = torch.stack([torch.zeros(len(x)), x[:, 0] - 1.5], dim=1)
        logits[x[:, 0] == 1] = float("nan")
        logits[x[:, 0] == 2, 1] = float("inf")
        return logits

    monkeypatch.setattr(
        detect_module, "load_model", lambda args, modality=None: LoadedModel("fake", predict, load, "image")
    )
    report = tmp_path / "out.json"
    code = main([*files, "--run", str(tmp_path), "--json", str(report), "--batch-size", "3"])
    captured = capsys.readouterr()
    assert code == 1
    results = strict_json(report)  # NaN would make this raise
    assert results["failed"] == 2 and results["non_finite"] == 2
    rows = results["results"]
    for row in (rows[1], rows[2]):
        assert row["prob_fake"] is None and row["label"] is None
        assert (
            row["error"] == f"{row['path']}: the model's output is not finite (NaN or inf logits), so there is no score"
        )
    assert rows[0]["label"] == "real" and rows[3]["label"] == "fake"
    assert rows[0]["prob_fake"] == pytest.approx(1 / (1 + np.exp(1.5)), rel=1e-5)
    scored = captured.out.splitlines()
    assert [line.split()[:2] for line in scored] == [["0.1824", "real"], ["0.8176", "fake"]]  # was "nan  real"
    assert f"ERROR  {files[1]}: the model's output is not finite" in captured.err
    assert "2 of 4 image(s) got non-finite model outputs (NaN or inf): not scored" in captured.err
    assert "could not be read" not in captured.err
