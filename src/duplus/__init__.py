"""DuPLUS: dual-prompt, text-driven universal 3D medical image segmentation and prognosis.

The public API (imported lazily, so ``import duplus`` stays light)::

    import duplus

    result = duplus.segment("ct.nii.gz", ["liver", "spleen"], modality="CT", region="abdomen",
                            checkpoint="model.pt")
    duplus.segment_files("scans/", "seg/", ["liver"], modality="CT", region="abdomen",
                         checkpoint="model.pt")
    duplus.train("configs/demo.yaml", "runs/train")
    duplus.evaluate("seg/", "labels/", out="eval/", labels="dataset.json")
    duplus.adapt_checkpoint("model.pt", "configs/adapt_pancreas.yaml", "runs/adapt")
"""

from __future__ import annotations

from typing import Any

from duplus.errors import CheckpointError, ConfigError, DuplusError, InputError

__version__ = "0.1.0"

_LAZY = {
    "segment": ("duplus.api.segmentation", "segment"),
    "segment_files": ("duplus.api.segmentation", "segment_files"),
    "load_predictor": ("duplus.api.segmentation", "load_predictor"),
    "Segmentation": ("duplus.api.segmentation", "Segmentation"),
    "train": ("duplus.training.api", "train"),
    "evaluate": ("duplus.metrics.api", "evaluate"),
    "adapt_checkpoint": ("duplus.adapt.api", "adapt_checkpoint"),
}

__all__ = ["CheckpointError", "ConfigError", "DuplusError", "InputError", "__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'duplus' has no attribute {name!r}")
