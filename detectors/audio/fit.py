"""``python -m detectors.audio.fit``: train, calibrate and evaluate an audio detector (BreathNet).

Without ``--data`` it runs the built-in synthetic demo end to end (demo audio -> train -> calibrate
-> export -> export.check -> evaluate). Offline, the default XLS-R backbone cannot be downloaded:
the demo then falls back to a small randomly initialised wav2vec2 (``configs/audio/breathnet_demo.yaml``)
with a loud warning, and summary.json records ``backbone_weights: random``.
"""

from __future__ import annotations

from pathlib import Path

from detectors.training.fit import ModalitySupport, main


def write_demo(root: Path) -> Path:
    from detectors.audio.demo import write_demo_audio

    return write_demo_audio(root)


AUDIO = ModalitySupport(name="audio", write_demo=write_demo)

if __name__ == "__main__":
    main("audio", AUDIO)
