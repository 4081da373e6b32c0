"""CakeLens v5: the detect path against the original package's own Detector, float64
gradchecks of the memory-lean autograd functions, and bad batch sizes."""

from __future__ import annotations

import itertools
import json
import sys
import types

import pytest
import torch
from torch.autograd import gradcheck

from detectors.errors import ConfigError
from detectors.video.cakelens import (
    LABELS,
    CakeLensConfig,
    CakeLensV5,
    _AddIntoChannels,
    _LeakyReLUInstanceNorm,
    predict_video,
    predict_video_file,
)
from detectors.video.cakelens_detector import detect_cakelens

TINY = CakeLensConfig(width=4, channel_step=2, num_blocks=1, crop=32, hidden=(8,))


# ------------------------------------------------------------------ memory-lean autograd functions


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("inplace", [False, True])
def test_fused_activation_norm_passes_gradcheck(channels_last, inplace):
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 2, 3, 4, dtype=torch.float64, generator=generator)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last_3d)
    weight = torch.rand(3, dtype=torch.float64, generator=generator) + 0.5
    bias = torch.randn(3, dtype=torch.float64, generator=generator)
    for needs in itertools.product([True, False], repeat=3):  # every subset of inputs needing gradients
        if not any(needs):
            continue
        inputs = [t.clone().requires_grad_(need) for t, need in zip((x, weight, bias), needs)]
        # clone: the in-place activation must overwrite a fresh non-leaf, as a convolution's output
        function = lambda h, w, b: _LeakyReLUInstanceNorm.apply(h.clone(), w, b, 0.2, 1e-5, inplace)
        assert gradcheck(function, inputs), needs


@pytest.mark.parametrize("channels_last", [False, True])
def test_add_into_channels_passes_gradcheck(channels_last):
    generator = torch.Generator().manual_seed(1)
    out = torch.randn(2, 7, 2, 3, 4, dtype=torch.float64, generator=generator)
    x = torch.randn(2, 3, 2, 3, 4, dtype=torch.float64, generator=generator)
    if channels_last:
        out, x = (t.contiguous(memory_format=torch.channels_last_3d) for t in (out, x))
    function = lambda o, h: _AddIntoChannels.apply(o.clone(), h, 2)
    assert gradcheck(function, (out.requires_grad_(), x.requires_grad_()))
    with torch.no_grad():  # forward = out + x zero-padded by 2 channels before and after
        expected = out + torch.nn.functional.pad(x, (0, 0, 0, 0, 0, 0, 2, 2))
        torch.testing.assert_close(function(out, x), expected, rtol=0, atol=0)


# ------------------------------------------------------------------------------- bad batch sizes


@pytest.mark.parametrize("batch_size", [0, -1])
def test_a_batch_size_below_one_is_named(batch_size, tmp_path, capsys):
    model = CakeLensV5(TINY)
    frames = torch.zeros(10, 3, 8, 8, dtype=torch.uint8)
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        predict_video(model, frames, batch_size=batch_size, progress=False)
    with pytest.raises(ValueError, match="batch_size must be >= 1"):  # before any decoding
        predict_video_file(model, tmp_path / "absent.mp4", batch_size=batch_size, progress=False)
    with pytest.raises(ConfigError, match="batch_size"):  # before the weights are read
        detect_cakelens([tmp_path / "absent.mp4"], tmp_path / "absent.pth", batch_size=batch_size)

    from detectors.video.detect import main

    argv = [
        "clip.mp4",
        "--arch",
        "cakelens",
        "--weights",
        str(tmp_path / "absent.pth"),
        "--batch-size",
        str(batch_size),
    ]
    assert main(argv) == 2
    assert "batch_size" in capsys.readouterr().err


# ------------------------------------------------------------------- against the original package


def test_detect_equals_the_original_packages_detector(tmp_path, monkeypatch):
    """The original ``cakelens.detect.Detector`` end to end (frameset indexing, 512 top-left crop and
    padding, normalisation, stacking, mean of sigmoids) on the same frames: only its torchcodec decoder
    is replaced, by this library's decoder, so what is compared is everything after decoding."""
    pytest.importorskip("cakelens.model", reason="cakelens-v5 package not installed")
    from detectors.video.demo import write_mp4
    from detectors.video.io import probe_video, read_frames

    class VideoDecoder:  # the part of torchcodec's VideoDecoder that cakelens uses
        def __init__(self, path):
            self.path = path
            self.metadata = types.SimpleNamespace(num_frames=probe_video(path).num_frames)

        def __getitem__(self, span: slice) -> torch.Tensor:
            return read_frames(self.path, list(range(span.start, span.stop)))

    decoders = types.ModuleType("torchcodec.decoders")
    decoders.VideoDecoder = VideoDecoder
    monkeypatch.setitem(sys.modules, "torchcodec", types.ModuleType("torchcodec"))
    monkeypatch.setitem(sys.modules, "torchcodec.decoders", decoders)
    for name in ("cakelens.datasets", "cakelens.detect"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    from cakelens.detect import Detector
    from cakelens.model import Model

    torch.manual_seed(0)
    reference = Model(initial_channels=4, spacetime_block_count=1, channels_step=2)
    reference(torch.zeros(1, 1, 27, 512, 512))  # materialise its LazyLinear layers
    with torch.no_grad():  # larger weights: probabilities spread over (0, 1) instead of all ~0.5
        for parameter in reference.parameters():
            parameter.mul_(3.0)
    weights = tmp_path / "tiny.pth"
    torch.save({"model_state_dict": reference.state_dict()}, weights)

    video = tmp_path / "clip.mp4"  # wider than 512 (cropped), lower than 512 (padded), 2 framesets
    write_mp4(
        video,
        torch.randint(0, 256, (11, 3, 200, 520), generator=torch.Generator().manual_seed(0), dtype=torch.uint8),
        fps=10,
    )
    verdict = Detector(reference, batch_size=1, device="cpu").detect(video)

    config = CakeLensConfig(width=4, channel_step=2, num_blocks=1)  # published crop, framing and head
    results = detect_cakelens(
        [video], weights, batch_size=2, json_out=tmp_path / "out.json", progress=False, config=config
    )
    saved = json.loads((tmp_path / "out.json").read_text())
    assert saved == results[0] and saved["frame_count"] == verdict.frame_count == 11
    assert list(saved["predictions"]) == list(LABELS)
    probabilities = torch.tensor(list(saved["predictions"].values()), dtype=torch.float64)
    expected = torch.tensor(verdict.predictions, dtype=torch.float64)
    assert 0.05 < expected.std()  # a meaningful comparison, not 17 identical values
    torch.testing.assert_close(probabilities, expected, rtol=0, atol=1e-4)
