"""Compute ``reference.json`` from the benchmark's own code (GASBench), for ``tests/test_gasbench_fixtures.py``.

Not run by the test suite, and it commits none of the benchmark's code: it needs a checkout of
https://github.com/BitMind-AI/gasbench (``src/`` on ``PYTHONPATH``) and the benchmark's Python
dependencies importable (``onnxruntime`` and ``requests`` are imported by modules it loads; its
``modelscope`` import is only used to list remote datasets and may be a stub), plus an ``ffmpeg``
executable. Usage::

    PYTHONPATH=<gasbench main>/src:. python tests/data/gasbench/compute_reference.py --dev-src <gasbench dev>/src [--media]

``--media`` first (re)writes the small media files under ``image/``, ``video/`` and ``audio/`` (they are
committed; the numbers refer to those exact files). For each modality the script

1. runs ``gasbench run`` (the CLI, in a subprocess) on a copy of ``<modality>/datasets`` laid out as
   the benchmark's cache (``datasets/<name>/samples`` + ``sample_metadata.json`` + ``dataset_info.json``
   + ``.download_complete``), with ``--skip-missing --seed SEED --n-aug-per-dataset N`` and, in a
   second run, ``--holdout-share``; it records the folder listing the benchmark saw, its scores and
   its per-sample records (``records.parquet``);
2. calls the benchmark's functions on every media file: the decoded, resized input of the base and
   augmented passes (``process_image_sample`` / ``process_video_bytes_sample`` /
   ``process_video_frames_sample`` / ``process_audio_sample``, ``apply_random_augmentations(level=0,
   crop_prob=0)``, ``apply_robustness_augmentations``, ``apply_video_robustness_augmentations``) as
   SHA-256 of the arrays, and the logits of ``PyTorchInferenceSession`` on them;
3. records ``calculate_weighted_dataset_sampling`` caps, the gasstation ordering of
   ``DatasetIterator._load_from_cache_dir`` and ``compute_metrics_from_df`` on synthetic rows
   (provenance weights, augmented rows).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import wave
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image
from safetensors.torch import save_file

HERE = Path(__file__).resolve().parent
SEED, N_AUG, HOLDOUT_SHARE = 7, 2, 0.4
DATASETS = {
    "image": [("coco-real", "real"), ("sdxl", "synthetic"), ("synthetic-image-holdout-1a2b3c4d", "synthetic"),
              ("real-image-holdout-5e6f7a8b", "real")],
    "video": [("real-clips", "real"), ("gen-clips", "synthetic"), ("synthetic-video-holdout-0c1d2e3f", "semisynthetic")],
    "audio": [("speech-real", "real"), ("speech-tts", "synthetic")],
}
PREPROCESSING = {
    "image": {"resize": [40, 48]},
    "video": {"resize": [32, 40], "num_frames": 8, "frame_rate": 12.0},
    "audio": {"sample_rate": 16000, "duration_seconds": 6.0},
}

# ------------------------------------------------------------------------------------- submissions
MODEL_PY = {
    "image": '''
import torch
import torch.nn as nn
from safetensors.torch import load_file


class TinyImageDetector(nn.Module):
    """uint8 [B, 3, H, W] -> logits [B, 2]: one strided conv, ReLU, mean pool, linear head."""

    def __init__(self, num_classes=2):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, stride=2)
        self.head = nn.Linear(8, num_classes)

    def features(self, x):
        x = x.to(self.conv.weight.dtype) / 255.0
        return torch.relu(self.conv(x)).mean(dim=(2, 3))

    def forward(self, x):
        return self.head(self.features(x))


def load_model(weights_path, num_classes=2, **kwargs):
    model = TinyImageDetector(num_classes)
    model.load_state_dict(load_file(weights_path))
    model.train(False)
    return model
''',
    "video": '''
import torch
import torch.nn as nn
from safetensors.torch import load_file


class TinyVideoDetector(nn.Module):
    """uint8 [B, T, 3, H, W] -> logits [B, 3] (real / synthetic / semisynthetic): per-frame conv
    features, their mean and their mean absolute change over time, linear head."""

    def __init__(self, num_classes=3):
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3, stride=2)
        self.head = nn.Linear(12, num_classes)

    def features(self, x):
        b, t = x.shape[:2]
        frames = x.reshape(b * t, *x.shape[2:]).to(self.conv.weight.dtype) / 255.0
        h = torch.relu(self.conv(frames)).mean(dim=(2, 3)).reshape(b, t, -1)
        motion = (h[:, 1:] - h[:, :-1]).abs().mean(dim=1)
        return torch.cat([h.mean(dim=1), motion], dim=1)

    def forward(self, x):
        return self.head(self.features(x))


def load_model(weights_path, num_classes=3, **kwargs):
    model = TinyVideoDetector(num_classes)
    model.load_state_dict(load_file(weights_path))
    model.train(False)
    return model
''',
    "audio": '''
import torch
import torch.nn as nn
from safetensors.torch import load_file


class TinyAudioDetector(nn.Module):
    """float32 [B, 96000] -> logits [B, 2]: log energy of 400-sample frames, its mean / std / mean
    change, linear head."""

    def __init__(self, num_classes=2):
        super().__init__()
        self.head = nn.Linear(3, num_classes)

    def features(self, x):
        frames = x.to(self.head.weight.dtype).reshape(x.shape[0], -1, 400)
        energy = torch.log(frames.pow(2).mean(dim=2) + 1e-6)
        change = (energy[:, 1:] - energy[:, :-1]).abs().mean(dim=1)
        return torch.stack([energy.mean(dim=1), energy.std(dim=1), change], dim=1)

    def forward(self, x):
        return self.head(self.features(x))


def load_model(weights_path, num_classes=2, **kwargs):
    model = TinyAudioDetector(num_classes)
    model.load_state_dict(load_file(weights_path))
    model.train(False)
    return model
''',
}


def write_submission(modality: str) -> Path:
    """model.py + model_config.yaml + model.safetensors: seeded random features, then a head fitted
    (regularised logistic regression) on the media, so probabilities spread and the scores are not
    degenerate; the weights are only ever read back from model.safetensors."""
    import importlib.util

    import yaml
    from sklearn.linear_model import LogisticRegression

    from detectors.evaluate import benchmark_input_loader

    folder = HERE / modality / "submission"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.py").write_text(MODEL_PY[modality].lstrip())
    num_classes = 3 if modality == "video" else 2
    config = {"name": f"tiny-{modality}", "version": "1.0.0", "modality": modality, "dtype": "float32",
              "preprocessing": PREPROCESSING[modality],
              "model": {"num_classes": num_classes, "weights_file": "model.safetensors"}}
    (folder / "model_config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    spec = importlib.util.spec_from_file_location("tiny_model", folder / "model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    torch.manual_seed({"image": 1, "video": 2, "audio": 3}[modality])
    model = getattr(module, {"image": "TinyImageDetector", "video": "TinyVideoDetector",
                             "audio": "TinyAudioDetector"}[modality])(num_classes)
    load = benchmark_input_loader(modality, PREPROCESSING[modality], False)
    features, labels = [], []
    for name, media_type in DATASETS[modality]:
        for path in sorted((HERE / modality / "datasets" / name / "samples").iterdir()):
            try:
                x = load(str(path))
            except Exception:  # the corrupt samples
                continue
            with torch.no_grad():
                features.append(model.features(x[None]).double().numpy()[0])
            labels.append(int(media_type != "real"))
    features = np.array(features)
    mean, scale = features.mean(0), features.std(0) + 1e-12
    fitted = LogisticRegression(C=5.0 if modality == "audio" else 0.2, max_iter=1000).fit((features - mean) / scale, np.array(labels))
    coef = fitted.coef_[0] / scale  # the standardisation folded into the head, halved: not overconfident
    w = torch.from_numpy(coef / 2).float()
    b = float(fitted.intercept_[0] - (coef * mean).sum()) / 2
    head_w = torch.stack([-w, w]) if num_classes == 2 else torch.stack([-w, w, w])
    head_b = torch.tensor([-b, b]) if num_classes == 2 else torch.tensor([-b, b, b - 1.0])
    with torch.no_grad():
        model.head.weight.copy_(head_w)
        model.head.bias.copy_(head_b)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "model.safetensors"))
    return folder


# ------------------------------------------------------------------------------------------- media
def smooth(height: int, width: int, rng: np.random.Generator, checker: bool = False) -> np.ndarray:
    coarse = rng.integers(0, 256, (max(2, height // 12), max(2, width // 12), 3)).astype(np.uint8)
    image = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC).astype(np.int16)
    if checker:  # an upsampling-like trace on "generated" media
        image += (((np.indices((height, width)).sum(0) % 2) * 24) - 12)[..., None]
    return np.clip(image, 0, 255).astype(np.uint8)


def write_images(root: Path) -> None:
    rng = np.random.default_rng(11)
    plans = {
        "coco-real": [("png", (80, 96)), ("jpg", (300, 340)), ("rgba", (64, 64)), ("gray16", (50, 70)),
                      ("webp", (120, 90)), ("png", (33, 47))],
        "sdxl": [("png", (96, 80)), ("jpg", (320, 300)), ("png", (48, 64)), ("jpg", (60, 60)), ("corrupt", None),
                 ("png", (40, 48))],
        "synthetic-image-holdout-1a2b3c4d": [("png", (70, 70)), ("jpg", (90, 120)), ("png", (41, 43))],
        "real-image-holdout-5e6f7a8b": [("jpg", (72, 64)), ("png", (64, 72)), ("webp", (80, 80))],
    }
    for name, files in plans.items():
        fake = name != "coco-real" and "real-" not in name
        samples = root / name / "samples"
        samples.mkdir(parents=True, exist_ok=True)
        for index, (kind, size) in enumerate(files):
            stem = samples / f"img_{index:06d}"
            if kind == "corrupt":
                stem.with_suffix(".png").write_bytes(b"\x89PNG\r\n\x1a\n truncated, not an image")
                continue
            pixels = smooth(*size, rng, checker=fake)
            if kind == "png":
                Image.fromarray(pixels).save(stem.with_suffix(".png"))
            elif kind == "jpg":
                Image.fromarray(pixels).save(stem.with_suffix(".jpg"), quality=90)
            elif kind == "webp":
                Image.fromarray(pixels).save(stem.with_suffix(".webp"), quality=90)
            elif kind == "rgba":
                alpha = rng.integers(0, 256, (*size, 1), dtype=np.uint8)
                Image.fromarray(np.concatenate([pixels, alpha], -1), "RGBA").save(stem.with_suffix(".png"))
            elif kind == "gray16":
                gray = (pixels[..., 0].astype(np.uint16) * 257).astype(np.uint16)
                Image.fromarray(gray).save(stem.with_suffix(".png"))


def write_mp4(path: Path, frames: np.ndarray, fps: int) -> None:
    t, h, w, _ = frames.shape
    subprocess.run(["ffmpeg", "-y", "-loglevel", "error", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{w}x{h}",
                    "-r", str(fps), "-i", "-", "-c:v", "libx264", "-crf", "18", "-pix_fmt", "yuv420p", str(path)],
                   input=np.ascontiguousarray(frames).tobytes(), check=True)


def moving(t: int, h: int, w: int, rng: np.random.Generator, flicker: bool) -> np.ndarray:
    base = smooth(h + t * 2, w + t * 2, rng)
    frames = np.stack([base[i * 2:i * 2 + h, i:i + w] for i in range(t)]).astype(np.int16)
    if flicker:
        frames += (np.arange(t) % 2 * 20 - 10)[:, None, None, None]
    return np.clip(frames, 0, 255).astype(np.uint8)


def write_videos(root: Path) -> None:
    rng = np.random.default_rng(12)
    for name, media_type in DATASETS["video"]:
        flicker = media_type != "real"
        samples = root / name / "samples"
        samples.mkdir(parents=True, exist_ok=True)
        write_mp4(samples / "vid_000000.mp4", moving(24, 48, 64, rng, flicker), 24)
        write_mp4(samples / "vid_000001.mp4", moving(10, 272, 288, rng, flicker), 25)  # robustness downscales it
        write_mp4(samples / "vid_000002.mp4", moving(5, 40, 40, rng, flicker), 30)  # short: last frame repeated
        frames_dir = samples / "vid_000003_frames"  # a video stored as frames, as the benchmark caches them
        frames_dir.mkdir(exist_ok=True)
        clip = moving(11, 36, 52, rng, flicker)
        for i, frame in enumerate(clip):
            if name == "gen-clips" and i == 2:
                (frames_dir / f"{i:06d}.png").write_bytes(b"not a png")  # skipped by the benchmark
            elif i % 3 == 1:
                Image.fromarray(frame).save(frames_dir / f"{i:06d}.jpg", quality=92)
            else:
                Image.fromarray(frame).save(frames_dir / f"{i:06d}.png")
        if name == "real-clips":
            write_mp4(samples / "vid_000004.mp4", moving(16, 50, 30, rng, flicker), 25)


def write_frames_parquet(path: Path) -> None:
    """A frames parquet shard as the benchmark's dev branch reads them: one row per frame, columns
    video_id, frame_idx and image (a Hugging Face image struct {bytes, path}); rows out of order,
    one frame undecodable."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(14)
    rows = []
    for video, (count, h, w) in {"clip-a": (7, 36, 44), "clip-b": (12, 30, 30)}.items():
        clip = moving(count, h, w, rng, flicker=video == "clip-b")
        for index, frame in enumerate(clip):
            buffer = io.BytesIO()
            Image.fromarray(frame).save(buffer, format="PNG" if index % 2 else "JPEG", quality=90)
            data = b"broken frame" if (video, index) == ("clip-b", 3) else buffer.getvalue()
            rows.append({"video_id": video, "frame_idx": index, "image": {"bytes": data, "path": f"{video}_{index}"}})
    order = rng.permutation(len(rows))
    table = pa.Table.from_pylist([rows[i] for i in order])
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)


def write_wav(path: Path, samples: np.ndarray, rate: int) -> None:
    pcm = (np.clip(samples, -1, 1) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as handle:
        handle.setnchannels(pcm.shape[1] if pcm.ndim == 2 else 1)
        handle.setsampwidth(2)
        handle.setframerate(rate)
        handle.writeframes(pcm.tobytes())


def write_audio(root: Path) -> None:
    rng = np.random.default_rng(13)
    for name, media_type in DATASETS["audio"]:
        samples = root / name / "samples"
        samples.mkdir(parents=True, exist_ok=True)
        plans = [(3.0, 8000, 1, "wav"), (7.0, 44100, 2, "mp3"), (6.5, 11025, 1, "flac")]
        for index, (seconds, rate, channels, ext) in enumerate(plans):
            t = np.arange(int(seconds * rate)) / rate
            tone = 0.3 * np.sin(2 * np.pi * (180 + 40 * index) * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t))
            noise = rng.standard_normal(t.size) * (0.02 if media_type == "real" else 0.002)
            signal = tone + noise
            data = np.stack([signal, 0.7 * signal], 1) if channels == 2 else signal
            path = samples / f"aud_{index:06d}.{ext}"
            if ext == "wav":
                write_wav(path, data, rate)
            else:
                with tempfile.TemporaryDirectory() as tmp:
                    write_wav(Path(tmp) / "x.wav", data, rate)
                    options = ["-b:a", "48k"] if ext == "mp3" else []
                    subprocess.run(["ffmpeg", "-y", "-loglevel", "error", "-i", str(Path(tmp) / "x.wav"), *options,
                                    str(path)], check=True)


def write_cache_files(root: Path, modality: str) -> None:
    """The benchmark cache's per-dataset files beside ``samples/`` (what ``DatasetIterator`` checks)."""
    for name, media_type in DATASETS[modality]:
        folder = root / name
        names = sorted(os.listdir(folder / "samples"))
        (folder / "sample_metadata.json").write_text(json.dumps({n: {"source_file": n, "media_type": media_type}
                                                                 for n in names}, indent=1, sort_keys=True))
        (folder / "dataset_info.json").write_text(json.dumps({"name": name, "path": f"local/{name}", "modality": modality,
                                                              "media_type": media_type, "sample_count": len(names)}))
        (folder / ".download_complete").write_text(json.dumps({"sample_count": len(names)}))


# ------------------------------------------------------------------------------- benchmark runs
def dataset_yaml(modality: str, path: Path) -> None:
    import yaml

    entries = [{"name": n, "path": f"local/{n}", "modality": modality, "media_type": m} for n, m in DATASETS[modality]]
    path.write_text(yaml.safe_dump({"datasets": entries}, sort_keys=False))


def run_gasbench(modality: str, cache: Path, out: Path, extra: list[str]) -> dict:
    config = out / "datasets.yaml"
    out.mkdir(parents=True, exist_ok=True)
    dataset_yaml(modality, config)
    command = [sys.executable, "-c", "import sys; from gasbench.cli import main; sys.exit(main())", "run",
               f"--{modality}-model", str(HERE / modality / "submission"), "--dataset-config", str(config),
               "--cache-dir", str(cache), "--skip-missing", "--seed", str(SEED), "--results-dir", str(out),
               "--run-name", "run", "--batch-size", "3", *extra]
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    if done.returncode != 0:
        raise SystemExit(f"gasbench run failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    results = json.loads((out / "run" / "results.json").read_text())
    import pandas as pd

    frame = pd.read_parquet(out / "run" / "records.parquet")
    # audio samples carry no cache_relpath; their source_file is the cached name (sample_metadata.json)
    records = [{"dataset": r.dataset_name, "name": r.cache_relpath or r.source_file, "aug_pass": bool(r.aug_pass),
                "label": int(r.label), "predicted": int(r.predicted), "probs": [float(v) for v in r.probs]}
               for r in frame.itertuples() if r.status == "ok"]
    keep = ("accuracy", "binary_mcc", "binary_brier", "binary_cross_entropy", "sn34_score", "base_sn34_score",
            "aug_sn34_score", "augmentation_robustness", "aug_total_samples", "aug_binary_mcc", "aug_binary_brier",
            "aug_binary_ce", "total_samples")
    summary = {k: results["results"].get(k) for k in keep}
    return {"results": summary, "records": records, "per_dataset": {k: v["total"] for k, v in results["per_dataset"].items()}}


def gasbench_metrics_internals(modality: str, out: Path) -> dict:
    """Score composition fields of the run (not in results.json): recomputed from its records with
    the benchmark's compute_metrics_from_df."""
    import pandas as pd
    from gasbench.benchmarks.recording import compute_metrics_from_df

    frame = pd.read_parquet(out / "run" / "records.parquet")
    pack = compute_metrics_from_df(frame, score_composition={"public": 1 - HOLDOUT_SHARE, "holdout": HOLDOUT_SHARE,
                                                             "gasstation": 0.0})
    return {k: pack[k] for k in ("score_composition", "realized_composition", "provenance_weights")}


# ----------------------------------------------------------------------------- benchmark inputs
def sha(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


def benchmark_inputs(modality: str, cache: Path) -> dict:
    from gasbench.benchmarks.utils.pytorch_session import PyTorchInferenceSession
    from gasbench.processing.media import (process_audio_sample, process_image_sample, process_video_bytes_sample,
                                           process_video_frames_sample)
    from gasbench.processing.transforms import (apply_random_augmentations, apply_robustness_augmentations,
                                                apply_video_robustness_augmentations)

    session = PyTorchInferenceSession(str(HERE / modality / "submission"), modality)
    prep = PREPROCESSING[modality]
    out = {}
    for name, media_type in DATASETS[modality]:
        samples = cache / "datasets" / name / "samples"
        for entry in sorted(os.listdir(samples)):
            path = samples / entry
            key = f"{name}/{entry}"
            passes = {}
            if modality == "image":
                array, label = process_image_sample({"image": path.read_bytes(), "media_type": media_type})
                if array is None:
                    out[key] = None
                    continue
                target = tuple(prep["resize"])
                base = apply_random_augmentations(array, target, seed=SEED + 1, level=0, crop_prob=0.0)[0]
                aug = apply_robustness_augmentations(array, target, seed=SEED + 1)[0]
                passes = {"base": np.transpose(base, (2, 0, 1)), "augmented": np.transpose(aug, (2, 0, 1))}
            elif modality == "video":
                if path.is_dir():
                    frames = sorted({p for ext in (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tiff", ".webp")
                                     for p in [*path.glob(f"*{ext}"), *path.glob(f"*{ext.upper()}")]}, key=lambda p: p.name)
                    array, label = process_video_frames_sample({"video_frames": frames, "media_type": media_type},
                                                               num_frames=prep["num_frames"])
                else:
                    array, label = process_video_bytes_sample(
                        {"video_bytes": path.read_bytes(), "media_type": media_type, "source_file": entry},
                        num_frames=prep["num_frames"], frame_rate=prep["frame_rate"])
                if array is None:
                    out[key] = None
                    continue
                target = tuple(prep["resize"])
                base = apply_random_augmentations(array, target, seed=SEED + 1, level=0, crop_prob=0.0)[0]
                aug, _, _, params = apply_video_robustness_augmentations(array, target, seed=SEED + 1)
                assert params["method"] == "ffmpeg_crf", params
                passes = {"base": np.transpose(base, (0, 3, 1, 2)), "augmented": np.transpose(aug, (0, 3, 1, 2))}
            else:
                waveform, label = process_audio_sample({"audio_bytes": path.read_bytes(), "media_type": media_type},
                                                       target_sr=16000, seed=SEED + 1)
                if waveform is None:
                    out[key] = None
                    continue
                passes = {"base": waveform.numpy().astype(np.float32)}
            row = {"label": int(label)}
            for pass_name, array in passes.items():
                logits = session.run(None, {"input": np.ascontiguousarray(array)[None]})[0][0]
                row[pass_name] = {"sha256": sha(array), "shape": list(array.shape), "dtype": str(array.dtype),
                                  "logits": [float(v) for v in logits]}
            out[key] = row
    return out


FRAMES_PARQUET = HERE / "video" / "frames_parquet" / "shard.parquet"
FRAMES_PARQUET_CODE = """
import hashlib, json, sys, tempfile
from pathlib import Path
import numpy as np
from gasbench.dataset.config import BenchmarkDatasetConfig
from gasbench.dataset.download.extract import _process_parquet
from gasbench.dataset.cache import save_sample_to_cache
from gasbench.processing.media import process_video_frames_sample
from gasbench.processing.transforms import apply_random_augmentations, apply_video_robustness_augmentations
shard, prep = Path(sys.argv[1]), json.loads(sys.argv[2])
config = BenchmarkDatasetConfig(name='parquet-frames', path='local/x', modality='video', media_type='synthetic')
out = {}
with tempfile.TemporaryDirectory() as tmp:
    for index, sample in enumerate(_process_parquet(shard, config, -1)):
        folder = Path(tmp) / save_sample_to_cache(sample, config, tmp, index)  # the cache's frame folder
        frames = sorted({p for ext in ('.jpg', '.jpeg', '.png', '.bmp', '.gif', '.tiff', '.webp')
                         for p in [*folder.glob('*' + ext), *folder.glob('*' + ext.upper())]}, key=lambda p: p.name)
        array, label = process_video_frames_sample({'video_frames': frames, 'media_type': 'synthetic'},
                                                   num_frames=prep['num_frames'])
        target = tuple(prep['resize'])
        base = np.transpose(apply_random_augmentations(array, target, level=0, crop_prob=0.0)[0], (0, 3, 1, 2))
        aug = np.transpose(apply_video_robustness_augmentations(array, target)[0], (0, 3, 1, 2))
        out[sample['source_file']] = {name: {'sha256': hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest(),
                                             'shape': list(a.shape)} for name, a in (('base', base), ('augmented', aug))}
print(json.dumps(out))
"""


def frames_parquet_reference(dev_src: str) -> dict:
    """The benchmark's frames of each video of the frames parquet shard, from its ``dev`` branch (the
    only one reading such shards): ``_process_parquet`` -> ``save_sample_to_cache`` (a frame folder)
    -> the iterator's frame listing -> ``process_video_frames_sample`` -> resize / robustness pass."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([dev_src, *os.environ.get("PYTHONPATH", "").split(os.pathsep)[1:]])}
    done = subprocess.run([sys.executable, "-c", FRAMES_PARQUET_CODE, str(FRAMES_PARQUET),
                           json.dumps(PREPROCESSING["video"])], capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise SystemExit(f"frames parquet reference failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------- benchmark helpers
def benchmark_helpers() -> dict:
    import pandas as pd
    from gasbench.benchmarks.recording import compute_metrics_from_df
    from gasbench.benchmarks.utils.inference import process_model_output
    from gasbench.dataset.config import BenchmarkDatasetConfig, calculate_weighted_dataset_sampling, get_benchmark_size
    from gasbench.dataset.iterator import DatasetIterator

    caps = []
    for modality, names in [("image", ["a", "b", "c"]), ("video", [f"d{i}" for i in range(40)]),
                            ("image", ["a", "gasstation-x", "b"]), ("audio", [f"s{i}" for i in range(300)] + ["gasstation-y"]),
                            ("video", ["only"])]:
        configs = [BenchmarkDatasetConfig(name=n, path="p", modality=modality, media_type="real") for n in names]
        caps.append({"modality": modality, "names": names,
                     "caps": calculate_weighted_dataset_sampling(configs, get_benchmark_size(modality, "full"))})

    # the gasstation order (newest index first) and the seeded shuffle, on explicit listings
    orders = []
    with tempfile.TemporaryDirectory() as tmp:
        for dataset, names, max_samples in [
            ("gasstation-images", ["img_000003.png", "img_000010.png", "x.png", "img_000007_b.png", "img_000007.png"], 4),
            ("plain", [f"img_{i:06d}.png" for i in range(12)], 5),
        ]:
            folder = Path(tmp) / dataset
            (folder / "samples").mkdir(parents=True)
            for n in names:
                (folder / "samples" / n).write_bytes(b"x")
            (folder / "sample_metadata.json").write_text("{}")
            iterator = DatasetIterator.__new__(DatasetIterator)
            iterator.config = BenchmarkDatasetConfig(name=dataset, path="p", modality="image", media_type="real")
            iterator.is_gasstation = "gasstation" in dataset
            iterator.seed, iterator.max_samples, iterator.lazy_read = SEED, max_samples, True
            iterator.source_kind, iterator.hf_resolved_revision = "huggingface", None
            listing = [n for n in os.listdir(folder / "samples") if not n.startswith(".")]
            chosen = [Path(s["image_path"]).name for s in iterator._load_from_cache_dir(str(folder))][:max_samples]
            orders.append({"dataset": dataset, "listing": listing, "seed": SEED, "max_samples": max_samples,
                           "selected": chosen})

    # softmax and decision from float32 logits
    rng = np.random.default_rng(5)
    logits = {k: (rng.standard_normal((6, k)) * 4).astype(np.float32) for k in (1, 2, 3, 5)}
    logits[2][0] = [1.0, 1.0]  # a tie
    outputs = {str(k): [{"logits": [float(v) for v in row],
                         "pred": int(process_model_output(row)[0]),
                         "probs": [float(v) for v in process_model_output(row)[1]]} for row in z]
               for k, z in logits.items()}

    # compute_metrics_from_df with provenance weights and an augmented pass
    names = ["pub-a", "pub-b", "real-image-holdout-11", "gasstation-w", "synthetic-image-holdout-22"]
    rows = []
    for i in range(60):
        dataset = names[i % len(names)]
        label = int(rng.integers(0, 2))
        p = float(np.clip(rng.beta(2, 5) if label == 0 else rng.beta(5, 2), 0, 1))
        probs = [1 - p, p]
        rows.append({"status": "ok", "dataset_name": dataset, "label": label, "predicted": int(np.argmax(probs)),
                     "probs": probs, "correct": int(np.argmax(probs)) == label, "aug_pass": i >= 45,
                     "inference_time_ms": 1.0, "sample_id": f"s{i % 45}"})
    frame = pd.DataFrame(rows)
    composition = {"public": 0.5, "holdout": 0.3, "gasstation": 0.2}
    weighted = compute_metrics_from_df(frame, score_composition=composition)
    plain = compute_metrics_from_df(frame)
    return {"caps": caps, "orders": orders, "outputs": outputs,
            "metrics": {"rows": rows, "composition": composition, "weighted": _jsonable(weighted), "plain": _jsonable(plain)}}


def _jsonable(value):
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    return value


# ------------------------------------------------------------------------------------------ main
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--media", action="store_true", help="rewrite the media files first")
    parser.add_argument("--dev-src", required=True,
                        help="src/ of the benchmark's dev branch (frames parquet shards); it replaces the first "
                             "PYTHONPATH entry for that part")
    args = parser.parse_args()
    if args.media:
        for modality, writer in (("image", write_images), ("video", write_videos), ("audio", write_audio)):
            shutil.rmtree(HERE / modality / "datasets", ignore_errors=True)
            writer(HERE / modality / "datasets")
            write_cache_files(HERE / modality / "datasets", modality)
            write_submission(modality)  # after the media: its head is fitted on them
        write_frames_parquet(FRAMES_PARQUET)

    import gasbench

    reference = {"gasbench": {"version": getattr(gasbench, "__version__", None),
                              "source": "https://github.com/BitMind-AI/gasbench (src/ of the commit named in README.md)"},
                 "seed": SEED, "aug_per_dataset": N_AUG, "holdout_share": HOLDOUT_SHARE, "preprocessing": PREPROCESSING,
                 "versions": {"numpy": np.__version__, "opencv": cv2.__version__, "pillow": Image.__version__,
                              "torch": torch.__version__,
                              "ffmpeg": subprocess.run(["ffmpeg", "-version"], capture_output=True, text=True).stdout.split("\n")[0]},
                 "modalities": {}}
    with tempfile.TemporaryDirectory(prefix="gasbench_reference_") as tmp:
        for modality in ("image", "video", "audio"):
            cache = Path(tmp) / modality
            shutil.copytree(HERE / modality / "datasets", cache / "datasets")
            listing = {name: [n for n in os.listdir(cache / "datasets" / name / "samples") if not n.startswith(".")]
                       for name, _ in DATASETS[modality]}
            aug = ["--n-aug-per-dataset", str(N_AUG)] if modality != "audio" else []
            plain = run_gasbench(modality, cache, Path(tmp) / f"{modality}-out", aug)
            shares = run_gasbench(modality, cache, Path(tmp) / f"{modality}-shares", [*aug, "--holdout-share", str(HOLDOUT_SHARE)])
            shares["composition"] = gasbench_metrics_internals(modality, Path(tmp) / f"{modality}-shares")
            reference["modalities"][modality] = {"listing": listing, "run": plain, "run_holdout_share": shares,
                                                 "inputs": benchmark_inputs(modality, cache)}
    reference["frames_parquet"] = frames_parquet_reference(args.dev_src)
    reference["helpers"] = benchmark_helpers()
    (HERE / "reference.json").write_text(json.dumps(reference, indent=1) + "\n")
    print(f"wrote {HERE / 'reference.json'}")


if __name__ == "__main__":
    main()
