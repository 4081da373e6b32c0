"""The shared LightningModule: targets, optimiser groups, scheduler, device transfer."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from lightning_utilities.core.apply_func import apply_to_collection

from detectors.registry import create_detector
from detectors.training.module import DetectorModule, _warmup_cosine


@pytest.fixture()
def module(tiny_dinov3):
    detector = create_detector(
        "dinov3_image",
        {
            "backbone": {"name": str(tiny_dinov3)},
            "image_size": 32,
            "tuning": {"mode": "layernorm"},
            "head_hidden": [8],
            "dropout": 0.0,
        },
    )
    return DetectorModule(detector, loss={"name": "cross_entropy"}, optim={"lr": 1e-2, "backbone_lr": 1e-3})


def test_parameter_groups_split_backbone_head_and_decay(module):
    groups = module.detector.parameter_groups(1e-2, 1e-3, 0.05)
    trainable = {id(p) for p in module.detector.parameters() if p.requires_grad}
    assert {id(p) for g in groups for p in g["params"]} == trainable
    for group in groups:
        for parameter in group["params"]:
            name = next(n for n, p in module.detector.named_parameters() if p is parameter)
            assert group["lr"] == (1e-3 if name.startswith("net.backbone.") else 1e-2)
            assert group["weight_decay"] == (0.0 if parameter.ndim <= 1 else 0.05)


def test_training_step_uses_the_detectors_targets(module):
    batch = {
        "x": torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8),
        "label": torch.tensor([0, 1, 0, 1]),
        "class_index": torch.tensor([0, 1, 0, 2]),
        "skipped": 1,
    }
    module.detector.eval()  # DINOv3 jitters RoPE coordinates in training mode: compare deterministic passes
    loss = module.training_step(batch, 0)
    _, logits = module.detector.forward_batch(batch)
    expected = torch.nn.functional.cross_entropy(logits, batch["label"])
    assert torch.allclose(loss, expected, atol=1e-6), (loss, expected)
    assert module.skipped_samples["train"] == 1
    assert module.training_step({"skipped": 3, "skipped_paths": ["a.png", "b.png", "a.png"]}, 1) is None
    assert module.skipped_samples["train"] == 4  # an all-unreadable batch is skipped and counted...
    assert module.unreadable_train_files == {"a.png", "b.png"}  # ...as draws and as distinct files


def test_cpu_transfer_is_the_plain_lightning_move(module):
    batch = {"x": torch.ones(2, 3), "label": torch.tensor([0, 1]), "index": [3, 4]}
    moved = module.transfer_batch_to_device(batch, torch.device("cpu"), 0)
    assert torch.equal(moved["x"], batch["x"]) and moved["index"] == [3, 4]
    assert module._copy_stream is None  # no CUDA stream on a CPU run


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_transfer_on_a_side_stream(module):
    batch = {"x": torch.ones(2, 3).pin_memory(), "label": torch.tensor([0, 1]).pin_memory()}
    moved = module.transfer_batch_to_device(batch, torch.device("cuda"), 0)
    assert moved["x"].is_cuda and module._copy_stream is not None
    assert torch.equal(moved["x"].cpu(), batch["x"])


class _FakeCudaTensor(torch.Tensor):
    """A CPU tensor that says it lives on CUDA and logs record_stream calls (ordering test only)."""

    @property
    def is_cuda(self) -> bool:
        return True

    def record_stream(self, stream) -> None:
        _FakeCudaTensor.events.append(("record", stream))


def test_side_stream_ordering_without_a_gpu(module, monkeypatch):
    """The copy runs inside the side stream's context, the compute stream waits for it after the copy,
    and every moved tensor, nested ones included, is recorded on the compute stream."""
    events: list = []
    _FakeCudaTensor.events = events
    side = object()
    state = {"active": None}

    class FakeStreamContext:
        def __init__(self, stream):
            self.stream = stream

        def __enter__(self):
            state["active"] = self.stream

        def __exit__(self, *exc):
            state["active"] = None

    class FakeCompute:
        def wait_stream(self, stream):
            events.append(("wait", stream))

    fake_compute = FakeCompute()
    monkeypatch.setattr(torch.cuda, "Stream", lambda device: events.append(("new", device)) or side)
    monkeypatch.setattr(torch.cuda, "current_stream", lambda device: fake_compute)
    monkeypatch.setattr(torch.cuda, "stream", FakeStreamContext)

    def fake_move(self, batch, device, dataloader_idx):
        events.append(("copy", state["active"]))
        return apply_to_collection(batch, torch.Tensor, lambda tensor: tensor.as_subclass(_FakeCudaTensor))

    monkeypatch.setattr(L.LightningModule, "transfer_batch_to_device", fake_move)
    batch = {"x": torch.ones(2, 3), "clips": [torch.zeros(1), torch.zeros(2)], "path": ["a", "b"]}
    device = torch.device("cuda", 0)
    module.transfer_batch_to_device(batch, device, 0)
    assert events == [("new", device), ("copy", side), ("wait", side)] + [("record", fake_compute)] * 3
    events.clear()
    module.transfer_batch_to_device(batch, device, 0)  # the side stream is created once and reused
    assert events == [("copy", side), ("wait", side)] + [("record", fake_compute)] * 3
    events.clear()
    module.transfer_batch_to_device({"skipped": 2}, device, 0)  # an all-unreadable batch: plain move
    assert events == [("copy", None)]


def test_warmup_cosine_schedule():
    assert _warmup_cosine(0, 10, 100) == pytest.approx(1 / 11)
    assert _warmup_cosine(10, 10, 100) == pytest.approx(1.0)
    assert _warmup_cosine(55, 10, 100) == pytest.approx(0.5)
    assert _warmup_cosine(100, 10, 100) == pytest.approx(0.0, abs=1e-12)


def test_unsupported_class_count_is_a_config_error(tiny_dinov3):
    from detectors.errors import ConfigError

    with pytest.raises(ConfigError, match="num_classes"):
        create_detector("cakelens", {"num_classes": 3, "crop": 32, "width": 4, "num_blocks": 1})
    with pytest.raises(ConfigError, match="num_classes"):
        create_detector("dinov3_image", {"backbone": {"name": str(tiny_dinov3)}, "num_classes": 5})


def test_unreadable_batch_under_ddp_still_joins_the_all_reduce(module):
    class FakeTrainer:
        world_size = 2

    module._trainer = FakeTrainer()
    loss = module.training_step({"skipped": 2}, 0)
    loss.backward()  # reaches every trainable weight with a zero gradient
    trainable = [p for p in module.detector.parameters() if p.requires_grad]
    assert float(loss) == 0.0 and all(p.grad is not None and not p.grad.any() for p in trainable)
    module._trainer = None


def test_package_level_api(tiny_dinov3, tmp_path):
    import detectors
    from detectors.base import save_detector

    assert set(detectors.list_detectors()) >= {"dinov3_image", "restrav", "gend", "cakelens", "breathnet"}
    detector = detectors.create_detector(
        "dinov3_image", {"backbone": {"name": str(tiny_dinov3)}, "image_size": 32, "tuning": {"mode": "lora"}}
    )
    with torch.no_grad():
        for parameter in detector.parameters():  # non-trivial LoRA weights must survive the round trip
            parameter.add_(torch.randn_like(parameter) * 0.01)
    detector.calibrator.set(2.0, [0.1, -0.1])
    save_detector(detector, tmp_path / "run")
    loaded = detectors.load_detector(tmp_path / "run")
    x = detector.eval().example_input(2)
    with torch.no_grad():
        assert torch.allclose(loaded(x), detector(x), atol=1e-6)
    assert loaded.calibrator.temperature == pytest.approx(2.0)


def test_predict_counts_unreadable_samples_exactly(module, tmp_path):
    from torch.utils.data import DataLoader

    from detectors.data.catalog import MediaItem
    from detectors.data.dataset import MediaDataset, collate_skip
    from detectors.image.io import load_image
    from detectors.training.predict import predict

    for name in ("a.png", "b.png", "c.png"):
        (tmp_path / name).write_bytes(b"")  # zero-byte files
    items = [MediaItem(str(tmp_path / n), 0, "real", "set", "image") for n in ("a.png", "b.png", "c.png")]
    loader = DataLoader(MediaDataset(items, load_image), batch_size=16, collate_fn=collate_skip)
    result = predict(module.detector, loader)
    assert len(result) == 0 and result.skipped == 3  # not the batch size


def test_workers_draw_different_augmentations():
    """Transforms with a private torch.Generator must not repeat across DataLoader workers."""
    from torch.utils.data import DataLoader, Dataset

    from detectors.audio.transforms import build_audio_train_transform
    from detectors.data.datamodule import seed_worker

    class Constant(Dataset):
        def __init__(self):
            self.transform = build_audio_train_transform(1, seed=0)

        def __len__(self):
            return 16

        def __getitem__(self, index):
            return self.transform(torch.full((1600,), 0.1))

    def batches(worker_init_fn):
        loader = DataLoader(
            Constant(),
            batch_size=1,
            num_workers=2,
            worker_init_fn=worker_init_fn,
            generator=torch.Generator().manual_seed(0),
        )
        out = [b[0] for b in loader]
        return out[0::2], out[1::2]  # what worker 0 and worker 1 produced, in order

    def same(first, second):
        return all(torch.equal(a, b) for a, b in zip(first, second))

    assert same(*batches(None))  # the failure this guards against: every worker repeats the same draws
    worker0, worker1 = batches(seed_worker)
    assert not same(worker0, worker1)
    assert same(worker0, batches(seed_worker)[0])  # still reproducible
