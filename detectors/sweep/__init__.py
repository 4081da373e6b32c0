"""Hyperparameter search for every detector: ``python -m detectors.sweep SPACE.yaml --data YAML --trials N
--output DIR``.

A search space (:mod:`detectors.sweep.space`) names the detector, fixed settings and searched
settings by the same dotted keys as ``--set``; it is validated against the arch's typed
configuration before the first trial. Each trial is an ordinary fit run in ``DIR/trial-NNNN``
(:mod:`detectors.sweep.trial`); Optuna (:mod:`detectors.sweep.study`) samples (seeded TPE) and
prunes (median / Hyperband on the per-epoch validation score), or a one-knob coordinate sweep walks
the parameters one at a time. Results (:mod:`detectors.sweep.results`): ``trials.csv``,
``best.yaml`` (``fit --config best.yaml``), plots, and the study in ``DIR/study.db`` (or any Optuna
storage URL), which several processes or machines can work on together.
"""
