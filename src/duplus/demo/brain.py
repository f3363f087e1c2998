"""The demo's brain section: a packaged brain-tissue model on the real MNI152 T1 (issue 28).

The model is trained only on synthetic heads (``make-phantoms --anatomy mni152``); the MNI152 T1's
own intensities were never seen, and its reference labels come from nilearn's GM/WM maps by the
generator's rule (:mod:`duplus.data.phantoms.real_head`). When no model named
:data:`BRAIN_MODEL` is installed or packaged, the section says so and nothing is measured.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from duplus.demo.wording_experiment import dice_score
from duplus.errors import ConfigError

logger = logging.getLogger(__name__)

BRAIN_MODEL = "brain-tissue"
"""The name ``duplus import`` installs the brain bundle under (``-c brain-tissue``)."""
BRAIN_TARGETS = ["grey matter", "white matter", "cerebrospinal fluid"]


def brain_experiment(figures: Path, name: str = BRAIN_MODEL) -> dict[str, Any]:
    """Segment the real MNI152 T1 (2 mm) with the installed or packaged model ``name``.

    Returns:
        ``{"model", "available": False, "reason"}`` when the model or nilearn is missing, else also
        ``dice`` per target, ``outside_outline`` (mask voxels outside the brain outline), the
        model card's ``card`` and the overlay's file name ``figure`` (written into ``figures``).
    """
    from duplus.bundles.store import list_models

    models = {m.name: m for m in list_models()}
    if name not in models:
        return {
            "model": name,
            "available": False,
            "reason": f"no model named {name!r} is installed or packaged",
        }
    from duplus.data.phantoms.real_head import load_mni152_reference

    try:
        head = load_mni152_reference(2)
    except ConfigError as exc:
        return {"model": name, "available": False, "reason": str(exc)}
    return {"model": name, "available": True, "card": models[name].card, **_measure(name, head, figures)}


def _measure(name: str, head: Any, figures: Path) -> dict[str, Any]:
    """Dice, voxels outside the outline and an overlay of one model on one reference head."""
    from duplus.api.segmentation import load_predictor, segment
    from duplus.reporting.overlays import save_overlay

    predictor = load_predictor(name, device="cpu")
    result = segment(head.nifti(), BRAIN_TARGETS, modality="MRI", region="head", predictor=predictor)
    masks = np.stack([np.asarray(result.masks[t].dataobj) > 0 for t in BRAIN_TARGETS])
    reference = np.stack([head.target_mask(t) for t in BRAIN_TARGETS])
    figure = "brain_mni152.png"
    save_overlay(head.image, head.affine, masks, BRAIN_TARGETS, figures / figure,
                 title="real MNI152 T1: predicted (fill), reference (contours)", reference=reference)  # fmt: skip
    return {
        "dice": {t: dice_score(m, r) for t, m, r in zip(BRAIN_TARGETS, masks, reference, strict=True)},
        "outside_outline": int((masks.any(axis=0) & ~head.outline).sum()),
        "mask_voxels": int(masks.any(axis=0).sum()),
        "figure": figure,
    }
