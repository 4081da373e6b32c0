"""Why a media file cannot be read is said in the user's words by every decoder: permission denied,
a broken or looping symbolic link, not a regular file, empty; a truncated WAV is read with a warning
naming the file instead of silently padded."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from detectors.audio.io import TruncatedAudioWarning, load_audio_benchmark
from detectors.errors import MediaError, media_access_problem
from detectors.image.io import load_image
from detectors.video.io import read_frames


@pytest.fixture()
def files(tmp_path: Path) -> dict[str, Path]:
    from PIL import Image

    image = tmp_path / "ok.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(image)
    broken = tmp_path / "broken.png"
    broken.symlink_to(tmp_path / "gone.png")
    loop_a, loop_b = tmp_path / "loop_a.png", tmp_path / "loop_b.png"
    loop_a.symlink_to(loop_b)
    loop_b.symlink_to(loop_a)
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    return {"image": image, "broken": broken, "loop": loop_a, "empty": empty, "dir": tmp_path}


@pytest.mark.parametrize(
    "name, problem",
    [
        ("broken", "broken symbolic link"),
        ("loop", "symbolic link loop"),
        ("empty", "empty file"),
        ("dir", "not a regular file"),
    ],
)
def test_access_problems_are_named(files, name, problem):
    assert problem in media_access_problem(files[name])
    assert media_access_problem(files["image"]) is None


@pytest.mark.parametrize(
    "load", [load_image, lambda p: read_frames(p, [0]), load_audio_benchmark], ids=["image", "video", "audio"]
)
def test_every_decoder_says_permission_denied(files, load, monkeypatch):
    target = files["image"]
    if load is not load_image:
        target = files["image"].with_suffix(".bin")
        target.write_bytes(b"x" * 64)
    real_access = os.access
    monkeypatch.setattr(
        os, "access", lambda path, mode, **kw: False if Path(path) == target else real_access(path, mode)
    )
    with pytest.raises(MediaError, match="permission denied"):
        load(target)


def test_a_truncated_wav_warns_naming_the_file(tmp_path):
    full = tmp_path / "full.wav"
    sf.write(full, (np.random.default_rng(0).random(16000) * 0.1).astype(np.float32), 16000, subtype="PCM_16")
    truncated = tmp_path / "cut.wav"
    truncated.write_bytes(full.read_bytes()[:60])  # 8 of the 16000 frames its header declares
    with pytest.warns(
        TruncatedAudioWarning,
        match=r"cut\.wav: truncated: its header declares 16000 sample frames, "
        r"the file holds 8",
    ):
        waveform = load_audio_benchmark(truncated)
    assert waveform.shape == (96000,)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_audio_benchmark(full)  # a complete file: no warning
