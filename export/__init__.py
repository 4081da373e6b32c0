"""Export detectors as benchmark submissions (model_config.yaml + model.py + model.safetensors).

- ``export.spec.ExportSpec``: what a detector's ``export_spec()`` returns.
- ``export.convert.convert_backbone``: HF/timm DINOv2/DINOv3 backbone -> plain-torch ViT weights.
- ``export.writer.write_submission``: writes the submission directory (and zip) atomically.
- ``export.check`` (``python -m export.check DIR_OR_ZIP``): static rules + a load in a fresh interpreter.
- ``export/benchmark_loader.py``: stand-alone copy of the benchmark's loading rules.
- ``export.bundle``: model.py from the network class a detector trains (its source and what it uses).
"""
