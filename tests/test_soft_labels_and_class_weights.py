"""Soft labels (a teacher's p(fake) per file, ``score_column``) and class weights (``loss.pos_weight``,
``loss.class_weights``): losses held to independent computations, ``pos_weight: auto`` to the
split's counts, the manifest column, the imbalance warning."""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F


def _soft_focal_brier_reference(margins, q, gamma, brier_weight, w_real, w_fake):
    """Plain-Python per-sample loss, written from the definition (not from the library code)."""
    out = []
    for z, t in zip(margins, q):
        p = 1 / (1 + math.exp(-z))
        ce = -(w_fake * t * (1 - p) ** gamma * math.log(p) + w_real * (1 - t) * p**gamma * math.log(1 - p))
        out.append(ce + brier_weight * (w_fake * t + w_real * (1 - t)) * (p - t) ** 2)
    return sum(out) / len(out)


@pytest.mark.parametrize(
    "gamma,brier_weight,class_weight", [(0.0, 0.0, None), (2.0, 1.0, None), (1.5, 0.5, [1.0, 6.0])]
)
def test_soft_label_loss_matches_an_independent_computation(gamma, brier_weight, class_weight):
    from calibration.losses import FocalBrierLoss

    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(16, 2, generator=generator, dtype=torch.float64) * 2
    q = torch.rand(16, generator=generator, dtype=torch.float64)
    loss = FocalBrierLoss(gamma=gamma, brier_weight=brier_weight, class_weight=class_weight)(logits, q)
    w_real, w_fake = class_weight or (1.0, 1.0)
    margins = (logits[:, 1] - logits[:, 0]).tolist()
    expected = _soft_focal_brier_reference(margins, q.tolist(), gamma, brier_weight, w_real, w_fake)
    assert float(loss) == pytest.approx(expected, rel=1e-9)


def test_soft_bce_with_pos_weight_is_torchs_bce_with_logits():
    from calibration.losses import FocalBrierLoss

    generator = torch.Generator().manual_seed(1)
    logits = torch.randn(32, 2, generator=generator)
    q = torch.rand(32, generator=generator)
    ours = FocalBrierLoss(gamma=0, brier_weight=0, class_weight=[1.0, 6.0])(logits, q)
    torchs = torch.nn.BCEWithLogitsLoss(pos_weight=torch.tensor(6.0))(logits[:, 1] - logits[:, 0], q)
    torch.testing.assert_close(ours, torchs)


def test_class_weights_on_hard_labels_weigh_each_sample_by_its_class():
    from calibration.losses import FocalBrierLoss

    generator = torch.Generator().manual_seed(2)
    logits = torch.randn(20, 3, generator=generator)
    target = torch.randint(0, 3, (20,), generator=generator)
    weights = torch.tensor([1.0, 4.0, 2.0])
    ours = FocalBrierLoss(gamma=0, brier_weight=0, class_weight=weights)(logits, target)
    expected = (F.cross_entropy(logits, target, reduction="none") * weights[target]).mean()
    torch.testing.assert_close(ours, expected)
    hard = FocalBrierLoss(gamma=2, brier_weight=1, class_weight=[1.0, 3.0])
    two = torch.randn(10, 2, generator=generator)
    labels = torch.randint(0, 2, (10,), generator=generator)
    torch.testing.assert_close(hard(two, labels), hard(two, labels.float()))  # soft path at q in {0, 1}


def test_pos_weight_auto_is_negatives_over_positives_of_the_training_split(tmp_path):
    from image_fixtures import write_image_set

    from detectors.data.catalog import assign_splits, load_items
    from detectors.registry import create_detector
    from detectors.training.module import DetectorModule

    items = assign_splits(load_items(write_image_set(tmp_path / "set", n_per_class=12)), seed=0)
    train = [item for item in items if item.split == "train"]
    # drop fakes from the training split so the classes are unbalanced
    train = [item for item in train if item.label == 0] + [item for item in train if item.label == 1][:3]
    negatives, positives = sum(i.label == 0 for i in train), sum(i.label == 1 for i in train)
    detector = create_detector("spectral", {"image_size": 32, "bins": 8})
    module = DetectorModule(detector, loss={"name": "cross_entropy", "pos_weight": "auto"})
    module.weigh_classes([item.label for item in train], balanced_sampling=False)
    assert module.class_weight == [1.0, negatives / positives]
    assert module.criterion.class_weight.tolist() == pytest.approx([1.0, negatives / positives])
    fixed = DetectorModule(detector, loss={"name": "focal_brier", "pos_weight": 4})
    assert fixed.class_weight == [1.0, 4.0]


def test_rare_fakes_without_weighting_warn_once(caplog):
    from detectors.registry import create_detector
    from detectors.training import module as module_file
    from detectors.training.module import DetectorModule

    module_file._warned_imbalance.clear()
    detector = create_detector("spectral", {"image_size": 32, "bins": 8})
    labels = [0] * 90 + [1] * 10
    with caplog.at_level(logging.WARNING, logger="detectors.training.module"):
        DetectorModule(detector).weigh_classes(labels, balanced_sampling=True)
        DetectorModule(detector, loss={"pos_weight": "auto"}).weigh_classes(labels, balanced_sampling=False)
        assert not caplog.records  # balanced sampling or a loss weight handles it
        DetectorModule(detector).weigh_classes(labels, balanced_sampling=False)
        DetectorModule(detector).weigh_classes(labels, balanced_sampling=False)
    assert len(caplog.records) == 1 and "10.0% of the training samples are fake" in caplog.records[0].getMessage()


def _write_scored_manifest(root, scores):
    from PIL import Image

    root.mkdir(parents=True, exist_ok=True)
    rows = ["path,teacher"]
    rng = np.random.default_rng(0)
    for index, score in enumerate(scores):
        Image.fromarray(rng.integers(0, 255, (20, 20, 3), dtype=np.uint8)).save(root / f"{index}.png")
        rows.append(f"{index}.png,{score}")
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    return root / "labels.csv"


def test_score_column_gives_soft_labels_binarised_at_the_threshold(tmp_path):
    from detectors.data.catalog import label_distribution, load_items, read_split, write_split
    from detectors.data.dataset import MediaDataset, collate_skip
    from detectors.errors import ConfigError

    _write_scored_manifest(tmp_path / "set", [0.02, 0.05, 0.3, 0.55, 0.9, 0.6])
    yaml_path = tmp_path / "data.yaml"
    yaml_path.write_text(
        "datasets:\n  - {name: scored, path: set/labels.csv, modality: image, media_type: synthetic,"
        " score_column: teacher, score_threshold: 0.58}\n"
    )
    items = load_items(yaml_path)
    assert [(item.score, item.label) for item in items] == [
        (0.02, 0),
        (0.05, 0),
        (0.3, 0),
        (0.55, 0),
        (0.9, 1),
        (0.6, 1),
    ]
    distribution = label_distribution(items)
    assert distribution["share_below_0.1"] == pytest.approx(2 / 6)
    assert distribution["share_at_least_0.5"] == pytest.approx(3 / 6) and distribution["fake_share"] == pytest.approx(
        2 / 6
    )
    write_split(items, tmp_path / "split.csv")
    assert [item.score for item in read_split(tmp_path / "split.csv")] == [item.score for item in items]
    batch = collate_skip([MediaDataset(items, load=lambda path: torch.zeros(1))[i] for i in range(len(items))])
    torch.testing.assert_close(batch["score"], torch.tensor([0.02, 0.05, 0.3, 0.55, 0.9, 0.6]))

    bad = _write_scored_manifest(tmp_path / "bad", [0.2, 1.5])
    yaml_path.write_text(
        f"datasets:\n  - {{name: bad, path: {bad}, modality: image, media_type: real, score_column: teacher}}\n"
    )
    with pytest.raises(ConfigError, match=r"labels\.csv row 3\.teacher.*\[0, 1\], got '1\.5'"):
        load_items(yaml_path)
    yaml_path.write_text(
        f"datasets:\n  - {{name: bad, path: {bad}, modality: image, media_type: real, score_column: missing}}\n"
    )
    with pytest.raises(ConfigError, match="no 'missing' column"):
        load_items(yaml_path)


def test_the_module_trains_against_soft_labels():
    from detectors.registry import create_detector
    from detectors.training.module import DetectorModule

    detector = create_detector("spectral", {"image_size": 32, "bins": 8})
    module = DetectorModule(detector, loss={"name": "cross_entropy"})
    features = torch.randn(4, 8)
    batch = {
        "features": features,
        "label": torch.tensor([0, 0, 1, 1]),
        "class_index": torch.tensor([0, 0, 1, 1]),
        "score": torch.tensor([0.1, 0.4, 0.6, 0.95]),
    }
    _, logits = detector.forward_batch(batch)
    target = module.training_target(batch, logits)
    torch.testing.assert_close(target, batch["score"])
    loss = module.training_step(batch, 0)
    margin = (logits[:, 1] - logits[:, 0]).detach()
    torch.testing.assert_close(loss.detach(), F.binary_cross_entropy_with_logits(margin, batch["score"]))
