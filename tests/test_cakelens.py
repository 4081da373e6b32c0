"""CakeLens v5: architecture, checkpoints, framing and verdict against independent computations."""

from __future__ import annotations

import sys
import types

import numpy as np
import pytest
import torch

from detectors.errors import CheckpointError, ConfigError
from detectors.video.cakelens import (
    CAKELENS_MEAN,
    CAKELENS_STD,
    LABELS,
    CakeLensConfig,
    CakeLensV5,
    convert_checkpoint_to_safetensors,
    frameset_from_clip,
    framesets_from_frames,
    load_cakelens_checkpoint,
    predict_video,
    predict_video_file,
    video_volume_from_benchmark_input,
)

SMALL = CakeLensConfig(width=8, channel_step=4, num_blocks=2, crop=64)


def small_model(seed: int = 0, **kwargs) -> CakeLensV5:
    torch.manual_seed(seed)
    return CakeLensV5(SMALL, **kwargs)


def random_volume(n: int, config: CakeLensConfig = SMALL, seed: int = 1) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(n, 1, config.depth, config.crop, config.crop, generator=generator)


def expected_keys(num_blocks: int = 6) -> list[str]:
    """The original checkpoint's key names, written out from the original package's model (cakelens-v5 0.1.2)."""
    keys = [f"seq.input_{name}0.{p}" for name in ("conv", "norm") for p in ("weight", "bias")]
    for block in range(num_blocks):
        prefix = f"seq.spacetime_conv_group.seq.main.block{block}.seq.main"
        for axis in ("space", "time"):
            keys += [f"{prefix}.{axis}_{kind}0.{p}" for kind in ("conv", "norm") for p in ("weight", "bias")]
    for layer in ("linear0", "linear1", "linear2", "relu3"):
        keys += [f"seq.fully_connected.seq.{layer}.{p}" for p in ("weight", "bias")]
    return keys


# ------------------------------------------------------------------------------------ network


def test_full_size_parameter_count_and_keys_on_meta():
    with torch.device("meta"):
        model = CakeLensV5()
    state = model.state_dict()
    assert sorted(state) == sorted(expected_keys()) and len(state) == 60
    assert sum(p.numel() for p in model.parameters()) == 270_621_137
    assert model.config.flatten_size == 517_888
    assert state["seq.fully_connected.seq.linear0.weight"].shape == (512, 517_888)
    assert state["seq.fully_connected.seq.relu3.weight"].shape == (17, 128)
    assert state["seq.spacetime_conv_group.seq.main.block5.seq.main.time_conv0.weight"].shape == (448, 416, 3, 1, 1)
    assert state["seq.spacetime_conv_group.seq.main.block0.seq.main.space_conv0.weight"].shape == (96, 64, 1, 3, 3)
    # Instance norms are affine without running statistics: no buffers in the checkpoint.
    assert not list(model.buffers())


def test_full_size_state_dict_matches_the_original_package_on_meta():
    original = pytest.importorskip("cakelens.model", reason="cakelens-v5 package not installed")
    with torch.device("meta"):
        reference = original.Model()
        reference(torch.empty(1, 1, 27, 512, 512))  # shapes its LazyLinear layers (no compute on meta)
        model = CakeLensV5()
    assert [(k, v.shape) for k, v in model.state_dict().items()] == [
        (k, v.shape) for k, v in reference.state_dict().items()
    ]


def test_small_forward_shapes_and_channels_last():
    model = small_model().eval()
    volume = random_volume(3)
    with torch.no_grad():
        logits = model(volume)
        model.set_channels_last_3d(True)
        logits_cl = model(volume)
    assert logits.shape == (3, 17) and torch.isfinite(logits).all()
    torch.testing.assert_close(logits_cl, logits, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="volume"):
        model(volume[:, 0])


def functional_reference(params: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """The network written out with torch.nn.functional from the original network's definition."""
    F = torch.nn.functional

    def norm(h, name):
        return F.instance_norm(h, weight=params[f"{name}.weight"], bias=params[f"{name}.bias"], eps=1e-5)

    def conv(h, name, **kwargs):
        return F.conv3d(h, params[f"{name}.weight"], params[f"{name}.bias"], **kwargs)

    act = lambda h: F.leaky_relu(h, 0.01)  # noqa: E731
    h = norm(act(conv(x, "seq.input_conv0", stride=3)), "seq.input_norm0")
    for block in range(SMALL.num_blocks):
        p = f"seq.spacetime_conv_group.seq.main.block{block}.seq.main"
        s = norm(act(conv(h, f"{p}.space_conv0", padding=(0, 1, 1))), f"{p}.space_norm0")
        t = norm(act(conv(s, f"{p}.time_conv0", padding=(1, 0, 0))), f"{p}.time_norm0")
        step = SMALL.channel_step
        h = t + F.pad(h, (0, 0, 0, 0, 0, 0, step, step))
    h = F.max_pool3d(h, 5).flatten(1)
    assert h.shape[1] == SMALL.flatten_size
    for i, name in enumerate(("linear0", "linear1", "linear2", "relu3")):
        h = F.linear(
            h, params[f"seq.fully_connected.seq.{name}.weight"], params[f"seq.fully_connected.seq.{name}.bias"]
        )
        h = act(h) if i < 3 else h
    return h


def test_forward_matches_an_independent_functional_computation():
    model = small_model().double()
    params = {key: value.double() for key, value in model.state_dict().items()}
    x = random_volume(2).double()
    torch.testing.assert_close(model(x), functional_reference(params, x), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("checkpointing", [False, True])
@pytest.mark.parametrize("channels_last", [False, True])
def test_gradients_match_the_functional_computation(checkpointing, channels_last):
    """The memory-lean backward (fused activation+norm, in-place residual, checkpoints) is exact."""
    model = small_model(gradient_checkpointing=checkpointing, channels_last_3d=channels_last).double()
    params = {name: p.detach().clone().requires_grad_() for name, p in model.named_parameters()}
    x = random_volume(2).double()
    target = torch.randn(2, SMALL.num_labels, dtype=torch.float64)
    x_model, x_reference = x.clone().requires_grad_(), x.clone().requires_grad_()
    (model(x_model) * target).sum().backward()
    (functional_reference(params, x_reference) * target).sum().backward()
    torch.testing.assert_close(x_model.grad, x_reference.grad, rtol=1e-9, atol=1e-12)
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.grad, params[name].grad, rtol=1e-9, atol=1e-12, msg=name)


def test_too_small_config_is_a_config_error():
    with pytest.raises(ConfigError, match="too small"):
        CakeLensConfig(crop=12)


def test_gradient_checkpointing_gives_the_same_gradients_and_recomputes():
    volume = random_volume(2)
    grads, block_calls = {}, {}
    for enabled in (False, True):
        model = small_model(gradient_checkpointing=enabled)
        calls = []
        block = model.seq.spacetime_conv_group.seq.main.block0.seq.main
        block.time_conv0.register_forward_pre_hook(lambda *_, calls=calls: calls.append(1))
        model(volume).square().sum().backward()
        grads[enabled] = {name: p.grad.clone() for name, p in model.named_parameters()}
        block_calls[enabled] = len(calls)
    assert block_calls == {False: 1, True: 2}  # recomputed in backward, so activations were dropped
    for name, grad in grads[False].items():
        torch.testing.assert_close(grads[True][name], grad, rtol=1e-5, atol=1e-6, msg=name)


def test_same_outputs_and_gradients_as_the_original_package():
    original = pytest.importorskip("cakelens.model", reason="cakelens-v5 package not installed")
    torch.manual_seed(0)
    reference = original.Model(
        initial_channels=SMALL.width, spacetime_block_count=SMALL.num_blocks, channels_step=SMALL.channel_step
    ).double()
    x = random_volume(2).double()
    reference(x)  # materialise its LazyLinear layers
    model = load_cakelens_checkpoint(reference.state_dict(), CakeLensV5(SMALL).double())
    xr, xm = x.clone().requires_grad_(), x.clone().requires_grad_()
    out_reference, out_model = reference(xr), model(xm)
    torch.testing.assert_close(out_model, out_reference, rtol=1e-10, atol=1e-10)
    out_reference.square().sum().backward()
    out_model.square().sum().backward()
    torch.testing.assert_close(xm.grad, xr.grad, rtol=1e-8, atol=1e-10)
    reference_params = dict(reference.named_parameters())
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.grad, reference_params[name].grad, rtol=1e-8, atol=1e-10, msg=name)
    assert tuple(label.value for label in original.Label) == LABELS


# -------------------------------------------------------------------------------- checkpoints


def test_checkpoint_round_trip_pth_bare_and_safetensors(tmp_path):
    source = small_model(seed=3)
    volume = random_volume(2)
    with torch.no_grad():
        expected = source(volume)
    wrapped, bare = tmp_path / "wrapped.pth", tmp_path / "bare.pt"
    torch.save({"model_state_dict": source.state_dict(), "epoch": 7}, wrapped)
    torch.save(source.state_dict(), bare)
    safe = convert_checkpoint_to_safetensors(wrapped, tmp_path / "out" / "model.safetensors")
    assert safe.is_file() and not [p for p in safe.parent.iterdir() if p.name.endswith(".tmp")]
    for path in (wrapped, bare, safe):
        model = load_cakelens_checkpoint(path, small_model(seed=99))
        with torch.no_grad():
            torch.testing.assert_close(model(volume), expected, rtol=0, atol=0)
    channels_last = load_cakelens_checkpoint(safe, small_model(seed=99, channels_last_3d=True))
    assert channels_last.seq.input_conv0.weight.is_contiguous(memory_format=torch.channels_last_3d)


def test_checkpoint_errors_name_the_keys(tmp_path):
    state = small_model().state_dict()
    missing = {k: v for k, v in state.items() if k != "seq.input_norm0.bias"}
    with pytest.raises(CheckpointError, match=r"missing keys: seq\.input_norm0\.bias"):
        load_cakelens_checkpoint(missing, small_model())

    unexpected = dict(state, **{"seq.input_norm0.running_mean": torch.zeros(8)})
    with pytest.raises(CheckpointError, match=r"unexpected keys: seq\.input_norm0\.running_mean"):
        load_cakelens_checkpoint({"model_state_dict": unexpected}, small_model())

    # A full-size checkpoint offered to a small model: the classifier's shapes differ.
    wrong = dict(state, **{"seq.fully_connected.seq.linear0.weight": torch.zeros(512, 517_888 // 1000)})
    path = tmp_path / "wrong.pth"
    torch.save(wrong, path)
    with pytest.raises(
        CheckpointError, match=r"wrong\.pth.*linear0\.weight: checkpoint \(512, 517\) vs model \(512, 384\)"
    ):
        load_cakelens_checkpoint(path, small_model())

    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="corrupt.pth"):
        load_cakelens_checkpoint(corrupt, small_model())
    with pytest.raises(CheckpointError, match="no such"):
        load_cakelens_checkpoint(tmp_path / "absent.pth", small_model())


# ------------------------------------------------------------------------------------ framing

FRAMING = CakeLensConfig(crop=6, pool=1)  # real frameset size (9 frames, depth 27), tiny crop


def pattern_frames(num_frames: int, height: int, width: int) -> torch.Tensor:
    t, c, y, x = np.meshgrid(np.arange(num_frames), np.arange(3), np.arange(height), np.arange(width), indexing="ij")
    return torch.from_numpy(((t * 37 + c * 11 + y * 5 + x * 3) % 256).astype(np.uint8))


def expected_framesets(frames: np.ndarray, crop: int, size: int = 9) -> np.ndarray:
    """Element-by-element statement of the framing rules (float64)."""
    num_frames, _, height, width = frames.shape
    h, w = min(height, crop), min(width, crop)
    top, left = (crop - h) // 2, (crop - w) // 2
    count = -(-num_frames // size)
    out = np.empty((count, 1, 3 * size, crop, crop))
    for n in range(count):
        present = min(size, num_frames - n * size)
        before = (size - present) // 2
        for slot in range(size):
            source = n * size + slot - before
            for c in range(3):
                for y in range(crop):
                    for x in range(crop):
                        inside = 0 <= slot - before < present and top <= y < top + h and left <= x < left + w
                        value = frames[source, c, y - top, x - left] / 255.0 if inside else 0.0
                        out[n, 0, 3 * slot + c, y, x] = (value - CAKELENS_MEAN[c]) / CAKELENS_STD[c]
    return out


@pytest.mark.parametrize(
    "num_frames, height, width",
    [
        (11, 8, 9),  # larger than the crop: top-left window; last frameset has 2 frames (3 before, 4 after)
        (9, 3, 5),  # smaller: padded rows 1 top / 2 bottom, columns 0 left / 1 right
        (4, 6, 2),  # one short frameset: 2 padded frames before, 3 after
    ],
)
def test_framing_matches_the_written_rules(num_frames, height, width):
    frames = pattern_frames(num_frames, height, width)
    volumes = framesets_from_frames(frames, FRAMING)
    expected = expected_framesets(frames.numpy(), FRAMING.crop)
    assert volumes.dtype == torch.float32 and volumes.shape == expected.shape
    np.testing.assert_allclose(volumes.numpy(), expected, rtol=0, atol=1e-6)
    torch.testing.assert_close(frameset_from_clip(frames[:9], FRAMING), volumes[0])


def test_framing_matches_the_original_package(monkeypatch):
    pytest.importorskip("cakelens.model", reason="cakelens-v5 package not installed")
    try:
        import torchcodec.decoders  # noqa: F401
    except ImportError:  # cakelens.datasets imports it at module level but crop_video does not use it
        decoders = types.ModuleType("torchcodec.decoders")
        decoders.VideoDecoder = object
        monkeypatch.setitem(sys.modules, "torchcodec", types.ModuleType("torchcodec"))
        monkeypatch.setitem(sys.modules, "torchcodec.decoders", decoders)
        monkeypatch.delitem(sys.modules, "cakelens.datasets", raising=False)
    from cakelens.datasets import crop_video
    from cakelens.model import make_transformer

    transform = make_transformer()
    for num_frames, height, width in ((11, 8, 9), (9, 3, 5), (13, 7, 4)):
        frames = pattern_frames(num_frames, height, width)
        for n, start in enumerate(range(0, num_frames, 9)):
            clip = frames[start : start + 9]
            reference = transform(crop_video(clip.float() / 255.0, target_width=6, target_height=6))
            torch.testing.assert_close(framesets_from_frames(frames, FRAMING)[n], reference, rtol=0, atol=0)


def test_framing_rejects_bad_input():
    with pytest.raises(ValueError, match="uint8"):
        framesets_from_frames(torch.zeros(9, 3, 4, 4), FRAMING)
    with pytest.raises(ValueError, match=r"\[T, 3, H, W\]"):
        framesets_from_frames(torch.zeros(9, 4, 4, 3, dtype=torch.uint8), FRAMING)
    with pytest.raises(ValueError, match="10 frames"):
        frameset_from_clip(torch.zeros(10, 3, 4, 4, dtype=torch.uint8), FRAMING)


def test_benchmark_input_helper_is_sample_major():
    batch = torch.stack([pattern_frames(18, 70, 66), 255 - pattern_frames(18, 70, 66)])
    volumes = video_volume_from_benchmark_input(batch, SMALL)
    assert volumes.shape == (4, 1, 27, 64, 64)
    torch.testing.assert_close(volumes[2:], framesets_from_frames(batch[1], SMALL))
    assert video_volume_from_benchmark_input(batch[:, :9], SMALL).shape == (2, 1, 27, 64, 64)


# ------------------------------------------------------------------------------------ verdict


def test_video_verdict_is_the_mean_of_frameset_probabilities():
    model = small_model(seed=5)
    frames = torch.randint(0, 256, (23, 3, 70, 60), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    result = predict_video(model, frames, batch_size=2, progress=False)
    with torch.no_grad():
        per_frameset = torch.sigmoid(model(framesets_from_frames(frames, SMALL)))
    assert result["frame_count"] == 23 and result["num_framesets"] == 3
    assert list(result["probabilities"]) == list(LABELS)
    torch.testing.assert_close(result["frameset_probabilities"], per_frameset)
    torch.testing.assert_close(torch.tensor(list(result["probabilities"].values())), per_frameset.mean(0))


def test_video_file_verdict_decodes_batch_by_batch(monkeypatch):
    frames = torch.randint(0, 256, (20, 3, 64, 64), generator=torch.Generator().manual_seed(1), dtype=torch.uint8)
    requests = []
    io = types.ModuleType("detectors.video.io")
    io.probe_video = lambda path: types.SimpleNamespace(num_frames=20, fps=30.0, width=64, height=64)

    def iter_frame_chunks(path, size):
        for start in range(0, 20, size):
            requests.append(list(range(start, min(start + size, 20))))
            yield frames[start : start + size]

    io.iter_frame_chunks = iter_frame_chunks
    monkeypatch.setitem(sys.modules, "detectors.video.io", io)
    model = small_model(seed=6)
    result = predict_video_file(model, "clip.mp4", batch_size=2, progress=False)
    assert requests == [list(range(0, 18)), list(range(18, 20))]
    expected = predict_video(model, frames, batch_size=3, progress=False)
    assert result["frame_count"] == 20 and result["num_framesets"] == 3
    torch.testing.assert_close(result["frameset_probabilities"], expected["frameset_probabilities"])


def test_video_file_verdict_on_a_real_file(tmp_path):
    av = pytest.importorskip("av")
    io = pytest.importorskip("detectors.video.io")
    path = tmp_path / "clip.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=25)
        stream.width, stream.height, stream.pix_fmt = 72, 64, "yuv420p"
        for index in range(11):
            image = np.full((64, 72, 3), 20 * index, dtype=np.uint8)
            image[:, : 6 * index] = 250
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode())
    model = small_model(seed=7)
    result = predict_video_file(model, path, batch_size=1, progress=False)
    decoded = io.read_frames(path, range(11))
    expected = predict_video(model, decoded, progress=False)
    assert result["frame_count"] == 11 and result["num_framesets"] == 2
    assert result["probabilities"] == pytest.approx(expected["probabilities"], abs=1e-6)


def test_fused_activation_norm_backward_is_bit_identical_to_autograd():
    from detectors.video.cakelens import InstanceNorm3d, leaky_relu_instance_norm

    torch.manual_seed(0)
    norm, relu = InstanceNorm3d(6).double(), torch.nn.LeakyReLU(0.01, inplace=True)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5), norm.bias.uniform_(-0.5, 0.5)
    x = torch.randn(2, 6, 3, 5, 5, dtype=torch.float64)
    target = torch.randn(2, 6, 3, 5, 5, dtype=torch.float64)
    results = []
    for fused in (True, False):
        leaf = x.clone().requires_grad_()
        h = leaf * 1.0  # a non-leaf, like a convolution's output, so the in-place ReLU is allowed
        out = leaky_relu_instance_norm(h, relu, norm) if fused else norm(relu(h))
        grads = torch.autograd.grad((out * target).sum(), [leaf, norm.weight, norm.bias])
        results.append((out, *grads))
    for fused_value, autograd_value in zip(*results):
        assert torch.equal(fused_value, autograd_value)


def test_checkpointing_keeps_only_checkpoint_inputs_for_backward():
    """Exact bytes saved for backward (autograd's hooks): the stem's and blocks' internals are gone."""
    volume = random_volume(1)

    def saved_bytes(model):
        storages = {}

        def pack(t):
            storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            model(volume)
        params = {p.untyped_storage().data_ptr() for p in model.parameters()} | {volume.untyped_storage().data_ptr()}
        return sum(n for ptr, n in storages.items() if ptr not in params)

    plain, checkpointed = saved_bytes(small_model()), saved_bytes(small_model(gradient_checkpointing=True))
    voxels = (SMALL.depth // 3) * (SMALL.crop // 3) ** 2 * 4  # bytes of one channel after the stem
    # Checkpointed: each block's input, the last block's output (max-pool input) and the small head.
    channels = [SMALL.width + 2 * SMALL.channel_step * i for i in range(SMALL.num_blocks + 1)]
    assert sum(channels) * voxels <= checkpointed < sum(channels) * voxels * 1.1
    assert checkpointed < 0.4 * plain


def test_fused_activation_norm_under_mixed_precision_runs_the_norm_in_float32():
    """bf16 input, float32 parameters (autocast): CUDA's group-norm kernel cannot mix the two, so the
    norm must run in float32 like autocast's group_norm; gradients match that float32 computation."""
    from detectors.video.cakelens import InstanceNorm3d, leaky_relu_instance_norm

    torch.manual_seed(0)
    norm, relu = InstanceNorm3d(6), torch.nn.LeakyReLU(0.01, inplace=True)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5), norm.bias.uniform_(-0.5, 0.5)
    x = torch.randn(2, 6, 3, 5, 5).bfloat16()
    target = torch.randn(2, 6, 3, 5, 5)

    leaf = x.clone().requires_grad_()
    out = leaky_relu_instance_norm(leaf * 1, relu, norm)  # a non-leaf, like a convolution's output
    assert out.dtype == torch.float32
    grads = torch.autograd.grad((out * target).sum(), [leaf, norm.weight, norm.bias])
    assert grads[0].dtype == torch.bfloat16

    reference_leaf = x.clone().requires_grad_()
    activation = torch.nn.functional.leaky_relu(reference_leaf * 1, 0.01).float()
    expected_out = torch.nn.functional.group_norm(activation, 6, norm.weight, norm.bias, norm.eps)
    expected = torch.autograd.grad((expected_out * target).sum(), [reference_leaf, norm.weight, norm.bias])
    torch.testing.assert_close(out, expected_out, rtol=1e-6, atol=1e-6)
    for value, reference in zip(grads, expected):
        torch.testing.assert_close(value, reference, rtol=1e-2, atol=1e-2)


@pytest.mark.parametrize(
    "device",
    [
        "cpu",
        pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")),
    ],
)
@pytest.mark.parametrize("channels_last", [False, True])
def test_bf16_autocast_training_step_follows_the_float32_gradients(device, channels_last):
    """bf16-mixed training with checkpointing (on CUDA: the dtypes its group-norm kernel accepts)."""
    model = small_model(gradient_checkpointing=True)
    volume = random_volume(2)
    model(volume).square().sum().backward()
    reference = {name: p.grad.clone() for name, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)
    model.to(device).set_channels_last_3d(channels_last)
    with torch.autocast(device, dtype=torch.bfloat16):
        logits = model(volume.to(device))
    logits.float().square().sum().backward()
    gradients = {name: p.grad.flatten().cpu() for name, p in model.named_parameters()}
    whole = torch.nn.functional.cosine_similarity(
        torch.cat(list(gradients.values())), torch.cat([reference[name].flatten() for name in gradients]), dim=0
    )
    assert whole > 0.99  # bf16 rounding; a wrong backward is far off
    for name, gradient in gradients.items():
        # Per tensor, bf16 kernels differ by CPU (AVX512-BF16 channels-last convolutions: 0.945 seen).
        cosine = torch.nn.functional.cosine_similarity(gradient, reference[name].flatten(), dim=0)
        assert cosine > 0.9, name


@pytest.mark.parametrize("checkpointing, channels_last", [(False, False), (True, False), (True, True)])
def test_memory_lean_training_forward_equals_the_exported_network(checkpointing, channels_last):
    """CakeLensV5 overrides CakeLensCNN.forward only: with the same weights its outputs and gradients
    are those of the plain network that the submission's model.py holds."""
    from detectors.video.cakelens import CakeLensCNN

    lean = small_model(seed=3, gradient_checkpointing=checkpointing, channels_last_3d=channels_last).double()
    arguments = {k: v for k, v in SMALL.network_kwargs().items() if k not in ("mean", "std")}
    plain = CakeLensCNN(**arguments).double()
    plain.load_state_dict(lean.state_dict())
    volume = random_volume(2).double()
    with torch.no_grad():
        torch.testing.assert_close(lean(volume), plain(volume), rtol=1e-10, atol=1e-10)
    lean(volume).square().sum().backward()
    plain(volume).square().sum().backward()
    plain_grads = dict(plain.named_parameters())
    for name, parameter in lean.named_parameters():
        torch.testing.assert_close(parameter.grad, plain_grads[name].grad, rtol=1e-8, atol=1e-10, msg=name)
