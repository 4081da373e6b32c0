"""The demo's last steps: export the trained detector, check it, evaluate it like the benchmark."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import yaml

from detectors.atomic import atomic_open, write_text
from detectors.data.catalog import MediaItem
from detectors.training.run import RunDir


def write_split_dataset_yaml(items: list[MediaItem], split: str, path: Path, relative_to: Path | None = None) -> Path:
    """A dataset YAML (one CSV manifest per dataset) holding only the items of ``split``. Files under
    ``relative_to`` (the run directory, for the demo's own data) are written relative to the
    manifest, so the run directory can be moved or renamed; other files keep absolute paths."""
    entries = []
    by_dataset: dict[str, list[MediaItem]] = {}
    for item in items:
        if item.split == split:
            by_dataset.setdefault(item.dataset, []).append(item)
    for name, members in sorted(by_dataset.items()):
        manifest = path.parent / f"{path.stem}_{name}.csv"
        with atomic_open(manifest, "w") as handle:
            writer = csv.writer(handle)
            writer.writerow(["path", "label", "media_type"])
            for item in members:
                file = Path(item.path)
                if relative_to is not None and file.resolve().is_relative_to(Path(relative_to).resolve()):
                    file = Path(os.path.relpath(file.resolve(), manifest.parent.resolve()))
                writer.writerow([file.as_posix(), item.label, item.media_type])
        entries.append(
            {"name": name, "path": manifest.name, "modality": members[0].modality, "media_type": members[0].media_type}
        )
    write_text(path, yaml.safe_dump({"datasets": entries}, sort_keys=False))
    return path


def export_and_evaluate_demo(run: RunDir, items: list[MediaItem]) -> Path:
    from detectors.evaluate import evaluate_submission
    from export.__main__ import export_run
    from export.check import check_submission

    submission = run.demo_submission
    report = export_run(run.root, submission)
    problems = check_submission(submission)
    if problems:
        raise RuntimeError("the exported demo submission fails export.check:\n" + "\n".join(problems))
    data = write_split_dataset_yaml(items, "val", run.root / "evaluation" / "val.yaml", relative_to=run.root)
    results = evaluate_submission(submission, data, run.root / "evaluation", num_workers=0)
    print(
        f"\nDemo finished. Submission (passes export.check, max |logit diff| "
        f"{report.get('max_abs_logit_difference', float('nan')):.1e}): {submission}"
    )
    print(
        f"Benchmark-style evaluation on the validation split: score {results['score']:.4f}, "
        f"accuracy {results['accuracy']:.4f} -> {run.root / 'evaluation'}"
    )
    return submission
